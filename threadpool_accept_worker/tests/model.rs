//! What is particular to "every worker accepts": the kernel spreads connections over the
//! sleeping workers, and with every worker busy, new connections wait in the kernel's accept
//! queue — there is no queue in the server to wait in.

use std::time::{Duration, Instant};

use conformance::client::{Conn, GET, probe};
use conformance::server::{STEP, Server, run_to_exit};
use conformance::summary::counts;
use nix::sys::signal::Signal;
use server_common::responses::OK_KEEP_ALIVE;

const BIN: &str = env!("CARGO_BIN_EXE_threadpool_accept_worker");

/// The accept queue's length on the listener at `port`: for a socket in LISTEN state (0A),
/// the rx_queue column of /proc/net/tcp is its backlog of accepted-by-the-kernel connections
/// (what `ss -ltn` shows as Recv-Q).
fn accept_queue_len(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1] == local && f[3] == "0A")
        .and_then(|f| u64::from_str_radix(f[4].split_once(':')?.1, 16).ok())
        .unwrap_or_else(|| panic!("no listener on 127.0.0.1:{port} in /proc/net/tcp"))
}

#[test]
fn the_kernel_spreads_accepts_over_every_sleeping_worker() {
    let s = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "4"]);
    // One connection at a time: each new one wakes the worker that has slept longest in accept
    // (blocking accept wakes exclusive waiters in FIFO order), so the four share the work.
    for _ in 0..200 {
        assert_eq!(probe(s.addr).status, 200);
    }
    let out = s.stop(Signal::SIGTERM).stdout;
    let per_worker = counts(&out, "accepts per worker");
    eprintln!("accepts per worker over 200 sequential connections: {per_worker:?}");
    assert_eq!(per_worker.len(), 4, "{out}");
    assert_eq!(per_worker.iter().sum::<u64>(), 200, "{out}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker accepted:\n{out}"
    );
}

#[test]
fn with_every_worker_busy_new_connections_wait_in_the_kernel_queue() {
    let s = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "2"]);
    let mut held: Vec<Conn> = (0..2).map(|_| Conn::new(s.connect())).collect();
    for c in &mut held {
        c.send(GET);
        assert_eq!(
            c.response(false).expect("a worker serves it").raw,
            OK_KEEP_ALIVE
        );
    }
    // Both workers sit in recv on their clients; nobody is in accept. Three more clients
    // complete their handshakes with the kernel and wait in the listener's queue.
    let mut waiting: Vec<Conn> = (0..3).map(|_| Conn::new(s.connect())).collect();
    for c in &mut waiting {
        c.send(GET);
    }
    let t0 = Instant::now();
    while accept_queue_len(s.addr.port()) < 3 {
        assert!(
            t0.elapsed() < STEP,
            "three connections in the kernel's accept queue"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !waiting[0].answered_within(Duration::from_millis(300)),
        "no worker is free"
    );

    // One client leaves: its worker goes back to accept and takes the oldest waiting one.
    held.pop();
    assert_eq!(
        waiting[0].response(false).expect("served next").raw,
        OK_KEEP_ALIVE
    );
    assert_eq!(
        accept_queue_len(s.addr.port()),
        2,
        "the rest still wait in the kernel"
    );

    let out = s.stop(Signal::SIGTERM).stdout;
    assert_eq!(
        counts(&out, "connections accepted"),
        [3],
        "never more than taken:\n{out}"
    );
    assert_eq!(
        counts(&out, "peak concurrent connections"),
        [2],
        "one per worker:\n{out}"
    );
    drop((held, waiting));
}

#[test]
fn a_worker_the_system_refuses_is_a_one_line_setup_error() {
    // A stack larger than the address space: the first spawn fails with EAGAIN.
    let (status, _out, err) = run_to_exit(
        BIN,
        &["--addr", "127.0.0.1:0", "--stack-size", "1125899906842624"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "exactly one line: {err:?}");
    assert!(
        err.starts_with("threadpool_accept_worker: cannot spawn worker thread 0 "),
        "{err}"
    );
    assert!(err.contains("os error 11"), "the OS error: {err}");
}
