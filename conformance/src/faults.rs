//! The faults of issue 8, each written once as a probe that starts its own server, injects the
//! fault and says what it saw. The conformance suite runs every probe against every server and
//! fails on [`Outcome::Fail`]; `bench --reliability` runs them all and writes the table in
//! `docs/reliability.md` from the same outcomes, so the table is never typed by hand.
//!
//! What a probe expects depends on the server's declared capabilities: an iterative server or a
//! fixed pool *may* stall under slow clients — that is its documented limit
//! ([`Outcome::Limit`]) — but must recover when `--head-timeout` frees it, though they keep
//! dribbling; an event loop must keep serving.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use server_common::responses::OK_CLOSE;

use crate::Target;
use crate::client::{Conn, GET, connect, echo_probe, pattern, reset};
use crate::rungs::Concurrency;
use crate::server::{Server, group_pss_kib, live_processes_in_group};

/// What a probe saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The server did what the contract asks.
    Ok(String),
    /// The model's documented limit showed, and the server recovered as the contract asks.
    Limit(String),
    /// The fault does not apply to this model.
    NotApplicable(String),
    /// A contract violation.
    Fail(String),
}

impl Outcome {
    /// A table cell: a mark and the detail.
    pub fn cell(&self) -> String {
        match self {
            Outcome::Ok(s) => format!("✅ {s}"),
            Outcome::Limit(s) => format!("⚠️ {s}"),
            Outcome::NotApplicable(s) => format!("– {s}"),
            Outcome::Fail(s) => format!("❌ {s}"),
        }
    }
}

/// A fault's probe.
pub type Probe = fn(&Target) -> Outcome;

/// The faults, in table order: (id, title, probe).
pub const FAULTS: &[(&str, &str, Probe)] = &[
    (
        "emfile",
        "EMFILE: 150 connections at RLIMIT_NOFILE 64",
        emfile,
    ),
    (
        "slow-clients",
        "500 clients dribbling a head, 1 byte per 0.5 s, for ever",
        slow_clients,
    ),
    (
        "never-reads-echo",
        "echo client that never reads",
        never_reading_echo,
    ),
    (
        "never-reads-http",
        "pipelining client that never reads",
        never_reading_http,
    ),
    (
        "reset-storm",
        "100 clients reset while the server writes",
        reset_storm,
    ),
    (
        "killed-worker",
        "SIGKILL one worker under load",
        killed_worker,
    ),
    (
        "sigterm-under-load",
        "SIGTERM under load",
        sigterm_under_load,
    ),
];

fn extra_args(t: &Target) -> Vec<&'static str> {
    if t.caps.concurrency == Concurrency::Workers {
        vec!["--workers", "2"]
    } else {
        vec![]
    }
}

fn start(t: &Target, args: &[&str], nofile: Option<u64>) -> Server {
    let mut all = vec!["--addr", "127.0.0.1:0"];
    all.extend(extra_args(t));
    all.extend(t.args(args));
    Server::start_limited(t.bin, &all, nofile)
}

/// A probe request that fails softly (for faults, a failed probe is an outcome, not a panic).
fn try_probe(s: &Server, wait: Duration) -> Result<(), String> {
    try_get(s.addr, wait)
}

/// One `Connection: close` request to `addr`; Err says what went wrong.
fn try_get(addr: std::net::SocketAddr, wait: Duration) -> Result<(), String> {
    let mut c = TcpStream::connect_timeout(&addr, wait).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut got = Vec::new();
    c.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    if got == OK_CLOSE {
        Ok(())
    } else {
        Err(format!("got {:?}", String::from_utf8_lossy(&got)))
    }
}

/// Out of descriptors: the server must stay up, not spin, and serve once descriptors free.
pub fn emfile(t: &Target) -> Outcome {
    let mut s = start(t, &[], Some(64));
    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| {
            let mut c = TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)).ok()?;
            let _ = c.write_all(GET);
            Some(c)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy = s.busy_fraction(Duration::from_secs(1));
    let opened = flood.len();
    drop(flood);
    if !s.is_running() {
        return Outcome::Fail(format!(
            "died during the flood: {}",
            s.stderr().lines().last().unwrap_or("")
        ));
    }
    let served = try_probe(&s, Duration::from_secs(10));
    let hit = s.stderr().contains("EMFILE") || s.stderr().contains("Too many open files");
    let what = if hit {
        "hit EMFILE"
    } else {
        "never hit EMFILE"
    };
    match served {
        Err(e) => Outcome::Fail(format!("{what}; not serving after the flood: {e}")),
        Ok(()) if busy > 0.5 && !t.caps.busy_loop => {
            Outcome::Fail(format!("{what}; spun at {:.0}% of a core", busy * 100.0))
        }
        Ok(()) => Outcome::Ok(format!(
            "{opened} opened, {what}, {:.0}% CPU meanwhile{}, served after",
            busy * 100.0,
            if t.caps.busy_loop {
                " (spins by design)"
            } else {
                ""
            }
        )),
    }
}

/// Slowloris: clients that send a head one byte at a time, never finishing it. Models that
/// serve every connection at once face 500 of them and must keep serving. A fixed pool (or the
/// iterative server) is held by as many as it has workers — its documented limit — so it faces
/// two more than that, and must recover once they fall silent: `--idle-timeout` frees a worker
/// after each slow client, one at a time, which is why a long queue of them is so costly.
pub fn slow_clients(t: &Target) -> Outcome {
    let workers = match t.caps.concurrency {
        Concurrency::Unbounded => None,
        Concurrency::Workers => Some(2),
        Concurrency::One => Some(1),
    };
    let deadline = 2; // --head-timeout, seconds
    let s = start(t, &["--head-timeout", "2"], None);
    let dribblers: Vec<TcpStream> = (0..workers.map_or(500, |w| w + 2))
        .filter_map(|_| TcpStream::connect_timeout(&s.addr, Duration::from_secs(5)).ok())
        .collect();
    let n = dribblers.len();
    // They dribble for the whole probe, through the measurement: a pool is not given the
    // reprieve of clients that fall silent.
    let stop = Arc::new(AtomicBool::new(false));
    let dribble = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let head = b"GET / HTTP/1.1\r\nX-Slow: ";
            let mut i = 0;
            while !stop.load(Relaxed) {
                for mut c in &dribblers {
                    let _ = c.write(&[if i < head.len() { head[i] } else { b'a' }]);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let mut normal = Conn::new(connect(s.addr));
    normal.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let t0 = Instant::now();
    let served_while = normal.answered_within(Duration::from_millis(2500));
    let outcome = match workers {
        _ if served_while => Outcome::Ok(format!(
            "a normal client was served while {n} clients dribbled"
        )),
        None => Outcome::Fail(format!(
            "a normal client was not served while {n} clients dribbled"
        )),
        // Each dribbler a worker holds gets its 408 at the head deadline, then a lingering
        // close that lasts its full LINGER (the dribbler never stops sending), which frees the
        // worker for the next in the queue: about ceil(n / w) rounds, then our turn.
        Some(w) => {
            let rounds = n.div_ceil(w) as u64;
            let linger = server_common::net::LINGER.as_secs();
            let plural = if w == 1 { "" } else { "s" };
            if normal.answered_within(Duration::from_secs(rounds * (deadline + linger) + 4)) {
                Outcome::Limit(format!(
                    "held by {w} slow client{plural} ({n} dribbling); --head-timeout {deadline} s \
                     answered each a 408 while they kept dribbling, and a {linger} s lingering \
                     close later freed the worker{plural} one at a time: served after {:.1} s \
                     (about {rounds} × ({deadline} s + {linger} s), less the second they had \
                     been dribbling before we came)",
                    t0.elapsed().as_secs_f64()
                ))
            } else {
                Outcome::Fail("stalled, and --head-timeout did not free it".into())
            }
        }
    };
    stop.store(true, Relaxed);
    let _ = dribble.join();
    outcome
}

/// Writes to `c` as fast as the kernel takes it for `secs`, never reading; returns the bytes
/// written and the server's peak memory growth (KiB) meanwhile.
fn push_without_reading(s: &Server, c: &mut TcpStream, chunk: &[u8], secs: u64) -> (u64, u64) {
    let base = group_pss_kib(s.pid);
    c.set_nonblocking(true).expect("nonblocking");
    let (mut sent, mut peak) = (0u64, base);
    let t0 = Instant::now();
    let mut last_sample = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        match c.write(chunk) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => break,
        }
        if last_sample.elapsed() > Duration::from_millis(100) {
            peak = peak.max(group_pss_kib(s.pid));
            last_sample = Instant::now();
        }
    }
    (sent, peak.max(group_pss_kib(s.pid)).saturating_sub(base))
}

fn never_reading(t: &Target, proto: &str, chunk: &[u8]) -> Outcome {
    let s = start(t, &["--proto", proto], None);
    let mut c = connect(s.addr);
    let (sent, growth_kib) = push_without_reading(&s, &mut c, chunk, 2);
    let summary = format!(
        "client pushed {:.1} MiB in 2 s; server memory +{:.1} MiB",
        sent as f64 / 1048576.0,
        growth_kib as f64 / 1024.0
    );
    drop(c);
    if growth_kib > 32 * 1024 {
        return Outcome::Fail(format!("unbounded: {summary}"));
    }
    match try_probe_proto(&s, proto) {
        Ok(()) => Outcome::Ok(summary),
        Err(e) => Outcome::Fail(format!("{summary}; then not serving: {e}")),
    }
}

fn try_probe_proto(s: &Server, proto: &str) -> Result<(), String> {
    if proto == "echo" {
        std::panic::catch_unwind(|| echo_probe(s.addr, 1000))
            .map_err(|_| "echo probe failed".to_string())
    } else {
        try_probe(s, Duration::from_secs(10))
    }
}

/// An echo client that writes and never reads: the output bound must keep memory flat.
pub fn never_reading_echo(t: &Target) -> Outcome {
    never_reading(t, "echo", &pattern(64 * 1024, 5))
}

/// An HTTP client that pipelines requests and never reads the responses.
pub fn never_reading_http(t: &Target) -> Outcome {
    never_reading(t, "http", &GET.repeat(2000))
}

/// Clients that reset while the server is writing to them.
pub fn reset_storm(t: &Target) -> Outcome {
    let s = start(t, &["--proto", "echo"], None);
    let data = pattern(256 * 1024, 9);
    let mut done = 0;
    for _ in 0..100 {
        let Ok(mut c) = TcpStream::connect_timeout(&s.addr, Duration::from_secs(5)) else {
            continue;
        };
        let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = c.write(&data); // as much as fits; the server starts echoing
        reset(c);
        done += 1;
    }
    match try_probe_proto(&s, "echo") {
        Ok(()) => Outcome::Ok(format!("{done} resets, still serving")),
        Err(e) => Outcome::Fail(format!("after {done} resets: {e}")),
    }
}

/// SIGKILL one worker process while clients are served: only its own connections may fail;
/// the supervisor replaces it.
pub fn killed_worker(t: &Target) -> Outcome {
    if !(t.caps.forks && t.caps.workers) {
        return Outcome::NotApplicable("no worker processes".into());
    }
    let s = start(t, &[], None);
    let workers = || {
        let mut w = live_processes_in_group(s.pid);
        w.retain(|&p| p != s.pid);
        w.sort_unstable();
        w
    };
    let t0 = Instant::now();
    while workers().len() < 2 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = workers();
    let Some(&victim) = before.first() else {
        return Outcome::Fail("no worker process found".into());
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Clients, each with one request in flight at a time.
    const LOAD: u64 = 4;
    let load: Vec<_> = (0..LOAD)
        .map(|_| {
            let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), s.addr);
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let counter = if try_get(addr, Duration::from_secs(5)).is_ok() {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let _ = kill(Pid::from_raw(victim), Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Relaxed);
    for h in load {
        let _ = h.join();
    }
    let after = workers();
    let respawned = after.len() >= before.len() && !after.contains(&victim);
    let (ok, failed) = (ok.load(Relaxed), failed.load(Relaxed));
    let detail = format!(
        "{ok} requests served, {failed} failed; worker {}",
        if respawned {
            "replaced"
        } else {
            "not replaced"
        }
    );
    // At most the requests the victim held when it died: one per client whose request it had
    // accepted. A prefork worker holds one; an event-loop worker (lesson 11's --processes) may
    // hold every client's, so the bound is LOAD. Clients queued on its listener are not among
    // them: the supervisor keeps that open for the replacement.
    if respawned && failed <= LOAD && try_probe(&s, Duration::from_secs(10)).is_ok() {
        Outcome::Ok(detail)
    } else {
        Outcome::Fail(detail)
    }
}

/// SIGTERM while clients hammer the server: exit 0 within 2 s, with the summary, and no
/// process of the server's group left.
pub fn sigterm_under_load(t: &Target) -> Outcome {
    let s = start(t, &[], None);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (stop, served, addr) = (stop.clone(), served.clone(), s.addr);
            std::thread::spawn(move || {
                let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                    return;
                };
                let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = [0u8; 4096];
                while !stop.load(Relaxed) {
                    if c.write_all(GET).is_err() || matches!(c.read(&mut buf), Ok(0) | Err(_)) {
                        return;
                    }
                    served.fetch_add(1, Relaxed);
                }
                let _ = c.shutdown(Shutdown::Both);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let pgid = s.pid;
    let stopped = s.stop(Signal::SIGTERM);
    stop.store(true, Relaxed);
    for h in load {
        let _ = h.join();
    }
    let t0 = Instant::now();
    while !live_processes_in_group(pgid).is_empty() && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = live_processes_in_group(pgid);
    let detail = format!(
        "exit {} after {:.2} s with {} requests served",
        stopped
            .status
            .code()
            .map_or("by signal".into(), |c| c.to_string()),
        stopped.elapsed.as_secs_f64(),
        served.load(Relaxed)
    );
    if !stopped.status.success() || stopped.elapsed > Duration::from_secs(2) {
        Outcome::Fail(detail)
    } else if !stopped.stdout.contains("summary: ") {
        Outcome::Fail(format!("{detail}, but no summary"))
    } else if !left.is_empty() {
        Outcome::Fail(format!("{detail}, but processes outlived it: {left:?}"))
    } else {
        Outcome::Ok(detail)
    }
}
