//! What is particular to "the main thread accepts, a pool serves": connections beyond the pool
//! are accepted at once and wait in the pool's queue, and the summary says how long they waited.

use std::time::{Duration, Instant};

use conformance::client::{Conn, GET, probe};
use conformance::server::{STEP, Server, run_to_exit};
use conformance::summary::numbers;
use nix::sys::signal::Signal;
use server_common::responses::OK_KEEP_ALIVE;

const BIN: &str = env!("CARGO_BIN_EXE_threadpool_accept_main");

/// `workers` keep-alive connections, each answered once: every worker is now blocked on one.
fn occupy_every_worker(s: &Server, workers: usize) -> Vec<Conn> {
    let mut held: Vec<Conn> = (0..workers).map(|_| Conn::new(s.connect())).collect();
    for c in &mut held {
        c.send(GET);
        assert_eq!(
            c.response(false).expect("a worker serves it").raw,
            OK_KEEP_ALIVE
        );
    }
    held
}

/// Descriptors the server has open (stdio, listener, connections), from /proc.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits until the server holds at least `n` descriptors: it has accepted what we expect.
fn wait_for_fds(pid: i32, n: usize) {
    let t0 = Instant::now();
    while open_fds(pid) < n {
        assert!(
            t0.elapsed() < STEP,
            "the main thread accepts without waiting for a worker"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn queue_wait_is_measured_and_grows_while_every_worker_is_busy() {
    let s = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "2"]);
    let mut held = occupy_every_worker(&s, 2);
    let base = open_fds(s.pid);

    let mut queued = Conn::new(s.connect());
    queued.send(GET);
    // Once its descriptor shows in the server, the main thread has accepted it (and started
    // its clock): from here on, every moment until a worker frees is queue wait.
    wait_for_fds(s.pid, base + 1);
    let accepted = Instant::now();
    assert!(
        !queued.answered_within(Duration::from_millis(400)),
        "both workers are busy: the third connection must wait in the queue"
    );
    let waited_ms = accepted.elapsed().as_secs_f64() * 1000.0;
    held.pop(); // one worker is freed and takes the queued connection
    assert_eq!(
        queued
            .response(false)
            .expect("served once a worker frees")
            .raw,
        OK_KEEP_ALIVE
    );

    let out = s.stop(Signal::SIGTERM).stdout;
    // p50 p99 max mean, in ms, then the number of connections measured.
    let wait = numbers(&out, "queue wait ms");
    assert_eq!(wait.len(), 5, "{out}");
    assert_eq!(
        wait[4], 3.0,
        "every served connection is measured once:\n{out}"
    );
    assert!(
        wait[2] + 0.01 >= waited_ms, // + rounding to 3 decimals
        "the max is the queued one's wait, at least {waited_ms} ms:\n{out}"
    );
    assert!(
        wait[0] <= wait[1] && wait[1] <= wait[2],
        "p50 ≤ p99 ≤ max:\n{out}"
    );
    assert!(
        numbers(&out, "queue length")[0] >= 1.0,
        "the third one queued:\n{out}"
    );
    assert_eq!(
        numbers(&out, "peak concurrent connections"),
        [3.0],
        "queued counts:\n{out}"
    );
    let per_worker = numbers(&out, "accepts per worker");
    assert_eq!(per_worker.len(), 2, "{out}");
    assert_eq!(per_worker.iter().sum::<f64>(), 3.0, "{out}");
    eprintln!("{out}");
}

#[test]
fn connections_beyond_the_pool_are_accepted_at_once_and_wait_in_user_space() {
    let s = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "1"]);
    let held = occupy_every_worker(&s, 1);
    let base = open_fds(s.pid); // stdio, listener, the held connection (and nothing in flux)

    // Three silent clients. The only worker is busy, yet the main thread accepts them: their
    // descriptors appear in the server, where the kernel's accept queue would have kept them.
    let silent: Vec<_> = (0..3).map(|_| s.connect()).collect();
    wait_for_fds(s.pid, base + 3);
    let out = s.stop(Signal::SIGTERM).stdout;
    assert_eq!(numbers(&out, "connections accepted"), [4.0], "{out}");
    assert_eq!(numbers(&out, "peak concurrent connections"), [4.0], "{out}");
    assert_eq!(
        numbers(&out, "queue length"),
        [3.0, 3.0],
        "peak, waiting at stop:\n{out}"
    );
    drop((held, silent));
}

#[test]
fn every_served_connection_counts_for_the_worker_that_served_it() {
    let s = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "3"]);
    for _ in 0..60 {
        assert_eq!(probe(s.addr).status, 200);
    }
    let out = s.stop(Signal::SIGTERM).stdout;
    let per_worker = numbers(&out, "accepts per worker");
    assert_eq!(per_worker.len(), 3, "{out}");
    assert_eq!(per_worker.iter().sum::<f64>(), 60.0, "{out}");
    assert_eq!(numbers(&out, "queue wait ms")[4], 60.0, "{out}");
    eprintln!("accepts per worker over 60 sequential connections: {per_worker:?}");
}

#[test]
fn a_pool_the_system_refuses_is_a_one_line_setup_error() {
    // A stack larger than the address space: every thread spawn fails (EAGAIN), and threadpool
    // panics on it inside `build()`.
    let (status, out, err) = run_to_exit(
        BIN,
        &["--addr", "127.0.0.1:0", "--stack-size", "1125899906842624"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        out.is_empty(),
        "no start-up line before the pool exists: {out:?}"
    );
    assert_eq!(err.lines().count(), 1, "exactly one line: {err:?}");
    assert!(
        err.starts_with("threadpool_accept_main: cannot start "),
        "{err}"
    );
    assert!(
        err.contains("Resource temporarily unavailable"),
        "the OS error: {err}"
    );
}
