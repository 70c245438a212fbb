//! What only the completion model can get wrong: completions that outlive their connection
//! (connections churned, reset and timed out while their operations are in flight), buffers
//! that an idle connection must not hold, a client that never reads, and a multishot accept
//! that ends on EMFILE and must be re-armed without spinning.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conformance::client::{Conn, End, GET, connect, echo_probe, pattern, reset};
use conformance::server::{STEP, Server};
use conformance::summary::value;
use nix::sys::signal::Signal;
use server_common::responses::OK_KEEP_ALIVE;

const BIN: &str = env!("CARGO_BIN_EXE_io_uring_server");

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Descriptors the process has open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Makes the pool's pages resident: the kernel takes its 1,024 buffers in turn, so memory
/// measured before ~1,024 reads would count the pool as the connections' cost.
fn warm_the_pool(server: &Server, http: bool) {
    let mut c = Conn::new(server.connect());
    for _ in 0..1100 {
        if http {
            c.send(GET);
            assert_eq!(c.response(false).expect("warm-up").raw, OK_KEEP_ALIVE);
        } else {
            echo_probe(server.addr, 100);
        }
    }
}

#[test]
fn an_idle_connection_holds_no_buffer() {
    let server = Server::start(BIN, &["--addr", "127.0.0.1:0"]);
    warm_the_pool(&server, true);
    let before = status_kib(server.pid, "VmRSS");
    // 4,000 connections, each served one request (so each has had a buffer), then idle.
    let idle: Vec<Conn> = (0..4000)
        .map(|_| {
            let mut c = Conn::new(server.connect());
            c.send(GET);
            assert_eq!(c.response(false).expect("served").raw, OK_KEEP_ALIVE);
            c
        })
        .collect();
    let per_conn = (status_kib(server.pid, "VmRSS").saturating_sub(before) * 1024) / 4000;
    println!("server RSS per idle connection: {per_conn} bytes");
    // A recv that brought its own 4 KiB buffer would cost more than 4,096 bytes here.
    assert!(
        per_conn < 1024,
        "{per_conn} bytes of RSS per idle connection"
    );
    let stopped = server.stop(Signal::SIGTERM);
    let peak: u64 = value(&stopped.stdout, "peak concurrent connections")
        .parse()
        .expect("a number");
    assert!(peak >= 4000, "all were open at once: {}", stopped.stdout);
    drop(idle);
}

/// One short life of a connection, chosen by `i`, checking every byte that comes back.
/// Returns the bytes echoed back to it.
fn churn_one(addr: SocketAddr, i: u64) -> u64 {
    let mut s = connect(addr);
    let msg = pattern(1 + (i as usize * 7919) % 20_000, i);
    s.write_all(&msg).expect("write");
    let mut back = vec![0u8; msg.len() / 2];
    s.read_exact(&mut back).expect("read half");
    assert!(
        back == msg[..back.len()],
        "connection {i} got bytes of another one"
    );
    match i % 4 {
        // Reset with its echo in flight: the recv and maybe a send are cancelled.
        0 => reset(s),
        // Close while the server still sends to it.
        1 => drop(s),
        // Half-close, then read the rest to EOF.
        2 => {
            s.shutdown(Shutdown::Write).expect("half-close");
            let (rest, end) = Conn::new(s).read_to_end();
            assert_eq!(end, End::Eof);
            assert!(
                rest == msg[back.len()..],
                "connection {i}: the rest differs"
            );
            return msg.len() as u64;
        }
        // Go silent: the idle timeout cancels its recv and closes it.
        _ => {
            let mut rest = vec![0u8; msg.len() - back.len()];
            s.read_exact(&mut rest).expect("read the rest");
            assert!(
                rest == msg[back.len()..],
                "connection {i}: the rest differs"
            );
            let mut byte = [0u8; 1];
            assert_eq!(s.read(&mut byte).expect("closed by the idle timeout"), 0);
            return msg.len() as u64;
        }
    }
    back.len() as u64
}

#[test]
fn churned_connections_never_receive_another_ones_bytes() {
    // Echo, so a completion applied to the wrong connection would show as wrong bytes.
    let server = Server::start(
        BIN,
        &[
            "--addr",
            "127.0.0.1:0",
            "--proto",
            "echo",
            "--idle-timeout",
            "1",
        ],
    );
    let baseline = open_fds(server.pid);
    let (echoed, lives) = (AtomicU64::new(0), AtomicU64::new(0));
    let start = Barrier::new(4);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (addr, echoed, lives, start) = (server.addr, &echoed, &lives, &start);
            scope.spawn(move || {
                start.wait();
                let t0 = Instant::now();
                let mut i = t;
                while t0.elapsed() < Duration::from_secs(2) {
                    echoed.fetch_add(churn_one(addr, i), Ordering::Relaxed);
                    lives.fetch_add(1, Ordering::Relaxed);
                    i += 4;
                }
            });
        }
    });
    echo_probe(server.addr, 100_000);
    // Every connection ends — none is stuck waiting for a completion that never comes: the
    // server is back to its own descriptors (lingering and idle closes take a few seconds).
    let t0 = Instant::now();
    while open_fds(server.pid) > baseline {
        assert!(
            t0.elapsed() < STEP,
            "descriptors left open: {}",
            open_fds(server.pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = server.stop(Signal::SIGTERM);
    let out = &stopped.stdout;
    let accepted: u64 = value(out, "connections accepted")
        .parse()
        .expect("a number");
    assert_eq!(accepted, lives.load(Ordering::Relaxed) + 1, "{out}");
    let bytes: u64 = value(out, "bytes echoed").parse().expect("a number");
    assert!(bytes >= echoed.load(Ordering::Relaxed) + 100_000, "{out}");
    println!("{out}");
    let _stale: u64 = value(out, "stale completions ignored")
        .parse()
        .expect("a number");
}

#[test]
fn clients_that_never_read_cost_bounded_memory_and_stall_nobody() {
    let server = Server::start(BIN, &["--addr", "127.0.0.1:0", "--proto", "echo"]);
    warm_the_pool(&server, false);
    let before = status_kib(server.pid, "VmRSS");
    const CHUNK: usize = 64 * 1024;
    let clients: Vec<TcpStream> = (0..8).map(|_| server.connect()).collect();
    let written: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Eight clients write without reading: they fill the kernel's buffers both ways, the
        // server stops reading them (backpressure), and their writes stall.
        for (c, n) in clients.iter().zip(&written) {
            let (mut w, stop) = (c.try_clone().expect("clone"), &stop);
            scope.spawn(move || {
                for k in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    w.write_all(&pattern(CHUNK, k)).expect("writer");
                    n.fetch_add(CHUNK as u64, Ordering::Relaxed);
                }
                w.shutdown(Shutdown::Write).expect("half-close");
            });
        }
        let sum = || {
            written
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let (mut last, mut still_since) = (0, Instant::now());
        while last == 0 || still_since.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(50));
            if sum() != last {
                (last, still_since) = (sum(), Instant::now());
            }
            // Kernel buffers hold a few MiB per connection; past this the server reads on.
            if last > 1 << 30 {
                stop.store(true, Ordering::Relaxed);
                panic!("the server never stopped reading: {last} bytes taken");
            }
        }
        let grown = status_kib(server.pid, "VmRSS").saturating_sub(before);
        println!("server RSS grew {grown} KiB; 8 clients wrote {last} bytes, then stalled");
        // Each owes at most 64 KiB plus one read, in two buffers: well under 512 KiB each.
        assert!(grown < 8 * 512, "{grown} KiB");
        echo_probe(server.addr, 10_000); // meanwhile, everybody else is served
        stop.store(true, Ordering::Relaxed);
        // They read at last: every byte comes back, in order, then EOF after their half-close.
        for (c, n) in clients.iter().zip(&written) {
            let (back, end) = Conn::new(c.try_clone().expect("clone")).read_to_end();
            assert_eq!(end, End::Eof);
            assert_eq!(
                back.len() as u64,
                n.load(Ordering::Relaxed),
                "every byte comes back"
            );
            for (k, chunk) in back.chunks(CHUNK).enumerate() {
                assert!(chunk == pattern(CHUNK, k as u64), "chunk {k} differs");
            }
        }
    });
}

#[test]
fn out_of_descriptors_the_accept_pauses_and_is_rearmed() {
    // 64 descriptors: stdio, the listener and the ring leave room for 59 connections. `sh`
    // lowers the limit and execs the server in its own place (same pid, same process group).
    let script = r#"ulimit -n 64 && exec "$0" "$@""#;
    let server = Server::start("/bin/sh", &["-c", script, BIN, "--addr", "127.0.0.1:0"]);
    let mut conns: Vec<Conn> = (0..80).map(|_| Conn::new(server.connect())).collect();
    for c in &mut conns {
        c.send(GET);
    }
    for c in &mut conns[..50] {
        assert_eq!(
            c.response(false).expect("within the limit").raw,
            OK_KEEP_ALIVE
        );
    }
    assert!(
        !conns[79].answered_within(Duration::from_millis(300)),
        "served beyond 64 descriptors?"
    );
    // The multishot accept ended with EMFILE: logged, and re-armed every 100 ms, not at once.
    let t0 = Instant::now();
    server.wait_for_log("Too many open files", "EMFILE not logged");
    let busy = server.busy_fraction(Duration::from_millis(2500));
    assert!(
        busy < 0.5,
        "spinning on EMFILE: {:.0}% of a core",
        busy * 100.0
    );
    // On a busy machine a spinning server may get less than half a core, so count the failed
    // accepts too: one per 100 ms pause, against hundreds of thousands a second re-armed at
    // once. The throttled log counts the lines it suppressed: "(and N more like it)".
    let (log, secs) = (server.stderr(), t0.elapsed().as_secs_f64());
    let accepts: f64 = log
        .lines()
        .filter(|l| l.contains("accept: EMFILE"))
        .map(|l| {
            1.0 + l
                .split("(and ")
                .nth(1)
                .and_then(|r| r.split(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        })
        .sum();
    assert!(
        accepts / secs < 50.0,
        "{accepts} failed accepts in {secs:.1} s: no pause\n{log}"
    );
    // Free 30 descriptors: every waiting client is served, without reconnecting.
    conns.drain(..30);
    for (i, c) in conns[20..].iter_mut().enumerate() {
        let r = c
            .response(false)
            .unwrap_or_else(|e| panic!("waiting client {i}: {e}"));
        assert_eq!(r.raw, OK_KEEP_ALIVE);
    }
}
