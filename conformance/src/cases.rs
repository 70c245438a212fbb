//! One function per case of `docs/contract.md`. Each starts its own server (port 0, its own
//! process group), so cases run in parallel and a failure names exactly one contract bullet.
//! What a case expects depends on the server's declared capabilities (`rungs.rs`), never on
//! its name.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use server_common::responses::{BODY, CONTINUE, OK_CLOSE, OK_KEEP_ALIVE, OK_KEEP_ALIVE_10};

use crate::Target;
use crate::client::{Conn, End, GET, GET_CLOSE, echo_probe, pattern, probe, reset};
use crate::rungs::Concurrency;
use crate::server::{Server, Stopped, live_processes_in_group, run_to_exit};
use crate::summary::value as summary_value;

// The defences against slow, greedy and tricky clients: their own file, one suite.
pub use crate::hardening::*;

/// `HEAD` gets the header block of `OK_KEEP_ALIVE` and no body.
fn head_keep_alive() -> Vec<u8> {
    OK_KEEP_ALIVE[..OK_KEEP_ALIVE.len() - BODY.len()].to_vec()
}

fn echo(t: &Target) -> Server {
    t.start(&["--proto", "echo"])
}

fn status_of(raw: &[u8]) -> u16 {
    let s = String::from_utf8_lossy(raw);
    s.strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ─── §1–2: command line and start-up ────────────────────────────────────────────────────────

pub fn startup_line_names_address_crate_and_pid(t: &Target) {
    let s = t.start(&[]);
    let (addr, krate, pid) =
        crate::server::parse_listening_line(&s.first_line).expect("start-up line");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0, "port 0 must be resolved to the real port");
    assert_eq!(krate, t.rung.krate);
    assert_eq!(pid, s.pid, "the pid printed is the server's own");
}

pub fn version_flag_prints_crate_and_version(t: &Target) {
    let (status, out, _) = run_to_exit(t.bin, &t.args(&["--version"]));
    assert!(status.success());
    let mut words = out.split_whitespace();
    assert_eq!(words.next(), Some(t.rung.krate));
    assert!(
        words
            .next()
            .is_some_and(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit())),
        "{out}"
    );
}

pub fn help_opens_with_the_model_and_lists_the_flags(t: &Target) {
    let (status, out, _) = run_to_exit(t.bin, &t.args(&["--help"]));
    assert!(status.success());
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("Lesson {}", t.rung.order)) && first.len() > 60,
        "--help must open with a paragraph on the model, starting 'Lesson {}': {first:?}",
        t.rung.order
    );
    for flag in [
        "--addr",
        "--proto",
        "--backlog",
        "--work",
        "--delay-ms",
        "--idle-timeout",
        "--head-timeout",
        "--version",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
    assert_eq!(
        out.contains("--workers"),
        t.caps.workers,
        "--workers iff the model has workers"
    );
    assert_eq!(
        out.contains("--stack-size"),
        t.caps.threads,
        "--stack-size iff the model spawns threads"
    );
}

pub fn bad_flags_exit_2_with_clap_message(t: &Target) {
    for args in [
        &["--no-such-flag"][..],
        &["--proto", "gopher"],
        &["--addr", "nowhere"],
        &["--backlog", "0"],
    ] {
        let (status, out, err) = run_to_exit(t.bin, &t.args(args));
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("error:"),
            "{args:?}: clap's message expected, got {err:?}"
        );
        assert!(out.is_empty(), "nothing on stdout for a bad flag: {out:?}");
    }
}

pub fn busy_port_exits_1_with_one_line(t: &Target) {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let addr = taken.local_addr().expect("local_addr").to_string();
    let (status, out, err) = run_to_exit(t.bin, &t.args(&["--addr", &addr]));
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(out.is_empty(), "no start-up line when bind fails: {out:?}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {err:?}");
    assert!(
        lines[0].starts_with(&format!("{}: ", t.rung.krate)),
        "{err}"
    );
    assert!(
        lines[0].contains(&addr) && lines[0].contains("Address already in use"),
        "{err}"
    );
}

pub fn ipv6_loopback_works(t: &Target) {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no ::1");
        return;
    }
    let s = t.start(&["--addr", "[::1]:0"]);
    assert!(
        s.first_line.starts_with("listening on [::1]:"),
        "{}",
        s.first_line
    );
    assert_eq!(probe(s.addr).raw, OK_CLOSE);
}

// ─── §5: HTTP ───────────────────────────────────────────────────────────────────────────────

pub fn http_get_gets_the_exact_response(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(GET);
    assert_eq!(c.response(false).expect("response").raw, OK_KEEP_ALIVE);
}

pub fn http_keep_alive_serves_many_requests_on_one_connection(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    for i in 0..200 {
        c.send(GET);
        assert_eq!(
            c.response(false)
                .unwrap_or_else(|e| panic!("request {i}: {e}"))
                .raw,
            OK_KEEP_ALIVE
        );
    }
}

pub fn http_connection_close_is_honoured(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(GET_CLOSE);
    assert_eq!(c.read_to_end(), (OK_CLOSE.to_vec(), End::Eof));
}

pub fn http_10_closes_unless_keep_alive(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_to_end(), (OK_CLOSE.to_vec(), End::Eof));

    let mut c = Conn::new(s.connect());
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(
            c.response(false).expect("1.0 keep-alive response").raw,
            OK_KEEP_ALIVE_10
        );
    }
}

pub fn http_pipelined_requests_are_answered_in_order(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /4 HTTP/1.1\r\nConnection: close\r\n\r\n");
    let want = [OK_KEEP_ALIVE, &head_keep_alive(), OK_KEEP_ALIVE, OK_CLOSE].concat();
    assert_eq!(c.read_to_end(), (want, End::Eof));
}

pub fn http_head_gets_no_body(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(b"HEAD / HTTP/1.1\r\n\r\n");
    let r = c.response(true).expect("HEAD response");
    assert_eq!(r.raw, head_keep_alive());
    assert_eq!(r.header("Content-Length"), Some("14"));
    // The next response must start right after the head: no stray body bytes in between.
    c.send(GET);
    assert_eq!(
        c.response(false).expect("GET after HEAD").raw,
        OK_KEEP_ALIVE
    );
}

pub fn http_body_is_read_and_discarded(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    let body = pattern(1 << 20, 7); // 1 MiB: several reads, more than the socket buffers hold at once
    c.send(
        format!(
            "POST /upload HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    assert_eq!(
        c.response(false).expect("response to the POST").raw,
        OK_KEEP_ALIVE
    );
    c.send(GET);
    assert_eq!(
        c.response(false).expect("GET after the body").raw,
        OK_KEEP_ALIVE
    );
}

pub fn http_expect_100_continue(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(c.response(false).expect("interim response").raw, CONTINUE);
    c.send(b"hello");
    assert_eq!(
        c.response(false).expect("final response").raw,
        OK_KEEP_ALIVE
    );
}

pub fn http_requests_dribbled_one_byte_at_a_time(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    let stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    for b in stream {
        c.send(std::slice::from_ref(b));
    }
    assert_eq!(
        c.read_to_end(),
        ([OK_KEEP_ALIVE, OK_KEEP_ALIVE, OK_CLOSE].concat(), End::Eof)
    );
}

fn refused_with(t: &Target, request: &[u8], status: u16) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    c.send(request);
    let (bytes, end) = c.read_to_end();
    assert_eq!(
        status_of(&bytes),
        status,
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        end,
        End::Eof,
        "an error response ends with a clean close, not a reset"
    );
    assert_eq!(
        probe(s.addr).status,
        200,
        "still serving after a bad request"
    );
}

pub fn http_malformed_request_gets_400_then_close(t: &Target) {
    refused_with(t, b"GET /\r\nHost: x\r\n\r\n", 400);
}

pub fn http_garbage_gets_400_then_close(t: &Target) {
    let mut junk = pattern(300, 3);
    junk.retain(|&b| b != b'\n'); // so the head ends exactly where we say
    junk.extend_from_slice(b"\r\n\r\n");
    refused_with(t, &junk, 400);
}

pub fn http_head_over_8k_gets_431_without_reset(t: &Target) {
    // 64 KiB of headers: the server must refuse after 8 KiB, yet drain the rest so that its
    // close does not reset the connection under our unread-by-it bytes.
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..1024 {
        req.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "x".repeat(44)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    refused_with(t, &req, 431);
}

pub fn http_other_version_gets_505_then_close(t: &Target) {
    refused_with(t, b"GET / HTTP/2.0\r\n\r\n", 505);
}

pub fn http_close_with_unread_bytes_is_not_a_reset(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    // A closing request followed by 256 KiB the server will never parse: without a lingering
    // close, those unread bytes turn its close(2) into an RST that can eat the response.
    let mut bytes = GET_CLOSE.to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 256 * 1024));
    c.send(&bytes);
    assert_eq!(c.read_to_end(), (OK_CLOSE.to_vec(), End::Eof));
}

// ─── §4: echo ───────────────────────────────────────────────────────────────────────────────

pub fn echo_round_trips_messages_of_every_size(t: &Target) {
    let s = echo(t);
    let mut c = s.connect();
    for (i, n) in [1usize, 2, 63, 64, 1000, 4096, 65_536, 200_000]
        .into_iter()
        .enumerate()
    {
        let msg = pattern(n, i as u64);
        c.write_all(&msg).expect("write");
        let mut back = vec![0u8; n];
        c.read_exact(&mut back).expect("read the echo");
        assert!(back == msg, "message of {n} bytes came back different");
    }
}

pub fn echo_one_byte_writes(t: &Target) {
    let s = echo(t);
    let mut c = s.connect();
    let msg = pattern(500, 5);
    for b in &msg {
        c.write_all(std::slice::from_ref(b))
            .expect("write one byte");
    }
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).expect("read");
    assert_eq!(back, msg);
}

pub fn echo_4mib_while_the_client_writes_before_reading(t: &Target) {
    let s = echo(t);
    let c = s.connect();
    let total = 4 << 20;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (mut w, written) = (c.try_clone().expect("clone"), written.clone());
        std::thread::spawn(move || {
            let data = pattern(total, 11);
            for chunk in data.chunks(64 * 1024) {
                w.write_all(chunk)
                    .expect("writer: the server stopped reading for good");
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            w.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    // Read nothing until the writer has stalled (every buffer between us is full and the
    // server has had to stop reading) or finished.
    let (mut last, mut still_since) = (0, Instant::now());
    while !writer.is_finished() && still_since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    let mut r = Conn::new(c);
    let (back, end) = r.read_to_end();
    writer.join().expect("writer thread");
    assert_eq!(end, End::Eof);
    assert_eq!(back.len(), total, "every byte comes back");
    assert!(back == pattern(total, 11), "in order and unchanged");
}

pub fn echo_half_close_flushes_then_closes(t: &Target) {
    let s = echo(t);
    let c = s.connect();
    let msg = pattern(100_000, 13);
    let mut w = c.try_clone().expect("clone");
    w.write_all(&msg).expect("write");
    w.shutdown(Shutdown::Write).expect("half-close");
    let mut r = Conn::new(c);
    assert_eq!(r.read_to_end(), (msg, End::Eof));
}

pub fn http_half_close_still_gets_its_answer(t: &Target) {
    // The client sends a request and shuts down its sending side at once (as `nc -N` does):
    // the request is complete, so it is answered, then the server closes.
    let s = t.start(&[]);
    let c = s.connect();
    (&c).write_all(GET).expect("request");
    c.shutdown(Shutdown::Write).expect("half-close");
    let (bytes, end) = Conn::new(c).read_to_end();
    assert_eq!(end, End::Eof);
    assert_eq!(bytes, OK_KEEP_ALIVE, "the answer, then EOF");
}

// ─── §7: robustness ─────────────────────────────────────────────────────────────────────────

pub fn reset_mid_request_leaves_the_server_serving(t: &Target) {
    let s = t.start(&[]);
    let mut c = s.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: hal")
        .expect("half a request");
    std::thread::sleep(Duration::from_millis(50));
    reset(c);
    assert_eq!(probe(s.addr).raw, OK_CLOSE);
}

pub fn reset_mid_response_leaves_the_server_serving(t: &Target) {
    // HTTP: 20,000 pipelined requests owe ~1.5 MB of responses; we read a little and reset.
    let s = t.start(&[]);
    let mut c = s.connect();
    let requests = GET.repeat(20_000);
    let w = {
        let mut w = c.try_clone().expect("clone");
        std::thread::spawn(move || {
            let _ = w.write_all(&requests); // fails once we reset: expected
        })
    };
    let mut first = [0u8; 1000];
    c.read_exact(&mut first).expect("the first responses");
    reset(c);
    let _ = w.join();
    assert_eq!(
        probe(s.addr).raw,
        OK_CLOSE,
        "a write to a reset client must not kill the server (SIGPIPE)"
    );

    // Echo: 2 MiB owed back, the client resets after reading 1 KiB.
    let s = echo(t);
    let mut c = s.connect();
    let w = {
        let mut w = c.try_clone().expect("clone");
        std::thread::spawn(move || {
            let _ = w.write_all(&pattern(2 << 20, 1));
        })
    };
    let mut first = [0u8; 1024];
    c.read_exact(&mut first).expect("the first echoed bytes");
    reset(c);
    let _ = w.join();
    echo_probe(s.addr, 10_000);
}

pub fn sigpipe_never_kills_the_server(t: &Target) {
    // The one sequence that makes send(2) fail with EPIPE (and raise SIGPIPE) rather than
    // ECONNRESET: the client half-closes (the server's socket enters CLOSE_WAIT), then resets
    // (Linux records EPIPE for a reset in CLOSE_WAIT) while the server is still busy with the
    // request (--delay-ms), so its next send hits the error.
    let s = t.start(&["--delay-ms", "300"]);
    let c = s.connect();
    (&c).write_all(GET).expect("request");
    c.shutdown(Shutdown::Write).expect("half-close");
    std::thread::sleep(Duration::from_millis(50));
    reset(c);
    std::thread::sleep(Duration::from_millis(500)); // the server has written by now
    assert_eq!(
        probe(s.addr).raw,
        OK_CLOSE,
        "the server died writing to a gone client (SIGPIPE?)"
    );
}

pub fn idle_connections_are_closed_after_idle_timeout(t: &Target) {
    let s = t.start(&["--idle-timeout", "1"]);
    // A connection that never sends, and one that stops in the middle of a head.
    let silent = s.connect();
    let mut halfway = s.connect();
    halfway.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    let t0 = Instant::now();
    for (name, c) in [("silent", silent), ("half a request", halfway)] {
        let (bytes, end) = Conn::new(c).read_to_end();
        assert!(bytes.is_empty(), "{name}: closed without a response");
        assert_eq!(end, End::Eof, "{name}: closed cleanly");
    }
    // Lower bound only (robust on a loaded machine): not closed before it was idle long enough.
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "closed after only {:?}",
        t0.elapsed()
    );
    assert_eq!(probe(s.addr).status, 200);
}

pub fn delay_ms_delays_every_request(t: &Target) {
    let s = t.start(&["--delay-ms", "150"]);
    let mut c = Conn::new(s.connect());
    let t0 = Instant::now();
    for _ in 0..2 {
        c.send(GET);
        assert_eq!(c.response(false).expect("slow response").raw, OK_KEEP_ALIVE);
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "two requests took only {:?}",
        t0.elapsed()
    );
}

pub fn work_flag_keeps_answers_correct(t: &Target) {
    let s = t.start(&["--work", "300"]);
    assert_eq!(probe(s.addr).raw, OK_CLOSE);
    let s = t.start(&["--work", "300", "--proto", "echo"]);
    echo_probe(s.addr, 5000);
}

/// How many connections are served at once, against the declared capability.
pub fn concurrency_matches_the_model(t: &Target) {
    let wait = Duration::from_millis(500);
    match t.caps.concurrency {
        Concurrency::One => {
            let s = t.start(&[]);
            let mut a = Conn::new(s.connect());
            a.send(GET);
            a.response(false).expect("a is served"); // a now holds the server
            let mut b = Conn::new(s.connect());
            b.send(GET);
            assert!(
                !b.answered_within(wait),
                "an iterative server must not answer b while a is connected"
            );
            drop(a);
            assert_eq!(
                b.response(false).expect("b is served once a leaves").raw,
                OK_KEEP_ALIVE
            );
        }
        Concurrency::Workers => {
            let s = t.start(&["--workers", "2"]);
            let mut held: Vec<Conn> = (0..2).map(|_| Conn::new(s.connect())).collect();
            for c in &mut held {
                c.send(GET);
                c.response(false).expect("each worker serves one");
            }
            let mut extra = Conn::new(s.connect());
            extra.send(GET);
            assert!(
                !extra.answered_within(wait),
                "both workers are held: the third client must wait"
            );
            held.pop();
            assert_eq!(
                extra
                    .response(false)
                    .expect("served once a worker frees")
                    .raw,
                OK_KEEP_ALIVE
            );
            // More clients than workers, each asking to close: all are served in turn.
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let addr = s.addr;
                    std::thread::spawn(move || (0..5).all(|_| probe(addr).raw == OK_CLOSE))
                })
                .collect();
            drop(held);
            drop(extra);
            assert!(handles.into_iter().all(|h| h.join().unwrap_or(false)));
        }
        Concurrency::Unbounded => {
            let s = t.start(&[]);
            let mut conns: Vec<Conn> = (0..50).map(|_| Conn::new(s.connect())).collect();
            for c in &mut conns {
                c.send(GET); // all 50 connections are open and idle before any is answered
            }
            for c in &mut conns {
                assert_eq!(
                    c.response(false).expect("served concurrently").raw,
                    OK_KEEP_ALIVE
                );
            }
        }
    }
}

/// Children of the server that have exited but were not reaped (zombies), from /proc.
fn zombie_children(ppid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, after)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = after.split_whitespace().collect();
            // f[0] = state, f[1] = parent pid
            f.len() > 1 && f[0] == "Z" && f[1].parse() == Ok(ppid)
        })
        .collect()
}

pub fn finished_children_are_reaped(t: &Target) {
    // For forking models: every child that served a connection and exited is waited for, so
    // no zombie stays. (For the others it holds trivially: they have no children.)
    let s = t.start(&[]);
    for _ in 0..20 {
        assert_eq!(probe(s.addr).raw, OK_CLOSE);
    }
    let t0 = Instant::now();
    loop {
        let zombies = zombie_children(s.pid);
        if zombies.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "zombie children stay: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ─── §6: shutdown ───────────────────────────────────────────────────────────────────────────

fn stop_with_idle_clients(t: &Target, sig: Signal) -> Stopped {
    let s = t.start(&[]);
    let mut c = Conn::new(s.connect());
    for _ in 0..3 {
        c.send(GET);
        c.response(false).expect("response");
    }
    let _idle = s.connect(); // connected, silent: must not delay the exit
    let pgid = s.pid;
    let stopped = s.stop(sig);
    assert!(stopped.status.success(), "exit 0 on {sig}: {stopped:?}");
    assert!(
        stopped.elapsed < Duration::from_secs(2),
        "exit within 2 s; took {:?}",
        stopped.elapsed
    );
    let t0 = Instant::now();
    while !live_processes_in_group(pgid).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "processes outlived the server: {:?}",
            live_processes_in_group(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    stopped
}

pub fn sigterm_prints_the_summary_and_exits_0(t: &Target) {
    let stopped = stop_with_idle_clients(t, Signal::SIGTERM);
    let out = &stopped.stdout;
    let labels: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect();
    let want = [
        "summary",
        "connections accepted",
        "peak concurrent connections",
        "requests served",
        "error responses",
        "bytes echoed",
        "peak RSS KiB",
        "CPU seconds",
        "context switches",
    ];
    assert_eq!(
        &labels[..want.len()],
        want,
        "the contract's labels, in order:\n{out}"
    );
    assert!(summary_value(out, "summary").contains(&format!("{} pid ", t.rung.krate)));
    assert!(summary_value(out, "summary").contains("stopped by SIGTERM"));
    assert_eq!(summary_value(out, "requests served"), "3", "{out}");
    let accepted: u64 = summary_value(out, "connections accepted")
        .parse()
        .expect("a number");
    assert!(accepted >= 1, "{out}");
    let peak: u64 = summary_value(out, "peak concurrent connections")
        .parse()
        .expect("a number");
    assert!(peak >= 1 && peak <= accepted, "{out}");
    if t.caps.job_pool {
        // Lesson 14: the loop accepts; its workers run jobs, one count each (default: a CPU each).
        let per = summary_value(out, "jobs per worker");
        let jobs: Vec<u64> = per
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert!(!jobs.is_empty(), "{out}");
        assert!(!out.contains("accepts per worker"), "{out}");
    } else if t.caps.workers {
        let per: Vec<u64> = summary_value(out, "accepts per worker")
            .split_whitespace()
            .map(|n| n.parse().expect("a number per worker"))
            .collect();
        assert!(
            !per.is_empty() && per.iter().sum::<u64>() == accepted,
            "{out}"
        );
    } else {
        assert!(
            !out.contains("accepts per worker"),
            "no per-worker line without workers:\n{out}"
        );
    }
}

pub fn sigint_also_stops_cleanly(t: &Target) {
    let stopped = stop_with_idle_clients(t, Signal::SIGINT);
    assert!(summary_value(&stopped.stdout, "summary").contains("stopped by SIGINT"));
}

pub fn summary_counts_echoed_bytes(t: &Target) {
    let s = echo(t);
    echo_probe(s.addr, 12_345);
    let stopped = s.stop(Signal::SIGTERM);
    assert_eq!(
        summary_value(&stopped.stdout, "bytes echoed"),
        "12345",
        "{}",
        stopped.stdout
    );
}

pub fn errors_are_logged_on_stderr_not_stdout(t: &Target) {
    // A burst of faults must not write anything but the summary to stdout.
    let s = t.start(&["--idle-timeout", "1"]);
    for _ in 0..20 {
        let mut c = s.connect();
        let _ = c.write_all(b"\x00\x01garbage\r\n\r\n");
        reset(c);
    }
    assert_eq!(probe(s.addr).status, 200);
    let stopped = s.stop(Signal::SIGTERM);
    assert!(
        stopped.stdout.starts_with("summary: "),
        "stdout holds only the summary: {:?}",
        stopped.stdout
    );
}

// ─── issue 8: faults (conformance/src/faults.rs), failing only on a contract violation ──────

fn no_fail(what: &str, o: crate::faults::Outcome) {
    eprintln!("{what}: {}", o.cell());
    if let crate::faults::Outcome::Fail(why) = o {
        panic!("{what}: {why}");
    }
}

pub fn fault_emfile(t: &Target) {
    no_fail("EMFILE", crate::faults::emfile(t));
}

pub fn fault_slow_clients(t: &Target) {
    no_fail("slow clients", crate::faults::slow_clients(t));
}

pub fn fault_never_reading_echo_client(t: &Target) {
    no_fail(
        "never-reading echo client",
        crate::faults::never_reading_echo(t),
    );
}

pub fn fault_never_reading_http_client(t: &Target) {
    no_fail(
        "never-reading HTTP client",
        crate::faults::never_reading_http(t),
    );
}

pub fn fault_reset_storm(t: &Target) {
    no_fail("reset storm", crate::faults::reset_storm(t));
}

pub fn fault_killed_worker(t: &Target) {
    no_fail("killed worker", crate::faults::killed_worker(t));
}

pub fn fault_sigterm_under_load(t: &Target) {
    no_fail("SIGTERM under load", crate::faults::sigterm_under_load(t));
}
