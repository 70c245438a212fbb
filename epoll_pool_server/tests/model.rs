//! What only lesson 14 promises: a costly request runs on a worker while the loop goes on
//! answering everyone else; `--all-to-pool` sends every request through the pool; a client that
//! leaves while its job runs harms nobody.

use std::time::Duration;

use conformance::client::{Conn, GET, reset};
use conformance::server::Server;
use nix::sys::signal::Signal;
use server_common::responses::OK_KEEP_ALIVE;

const BIN: &str = env!("CARGO_BIN_EXE_epoll_pool_server");
/// A costly request: about a second of CPU in a debug build (a fifth of that in release).
const COSTLY: &[u8] = b"GET /work/300000 HTTP/1.1\r\n\r\n";

fn summary_value<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{out}"))
}

fn jobs(out: &str) -> u64 {
    summary_value(out, "jobs per worker")
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("a number"))
        .sum()
}

#[test]
fn a_cheap_request_is_answered_while_a_costly_one_runs() {
    let server = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "1"]);
    let mut costly = Conn::new(server.connect());
    costly.send(COSTLY);
    // The loop has the costly request (a worker runs it) and goes on: a cheap one on another
    // connection, sent after it, is answered first. Lesson 10 would answer it only after.
    let mut cheap = Conn::new(server.connect());
    for _ in 0..3 {
        cheap.send(GET);
        assert_eq!(cheap.response(false).expect("cheap").raw, OK_KEEP_ALIVE);
    }
    assert!(
        !costly.answered_within(Duration::from_millis(1)),
        "the costly request was answered before three cheap ones behind it?"
    );
    assert_eq!(costly.response(false).expect("costly").raw, OK_KEEP_ALIVE);
    let out = server.stop(Signal::SIGTERM).stdout;
    assert_eq!(
        jobs(&out),
        1,
        "only the costly request went to the pool:\n{out}"
    );
    assert_eq!(summary_value(&out, "requests served"), "4", "{out}");
}

#[test]
fn with_all_to_pool_every_request_goes_through_a_worker() {
    let args = ["--addr", "127.0.0.1:0", "--workers", "2", "--all-to-pool"];
    let server = Server::start(BIN, &args);
    let mut c = Conn::new(server.connect());
    // Pipelined: each waits for the one before it to come back from the pool, in order.
    c.send(&GET.repeat(5));
    for _ in 0..5 {
        assert_eq!(c.response(false).expect("answer").raw, OK_KEEP_ALIVE);
    }
    let out = server.stop(Signal::SIGTERM).stdout;
    assert_eq!(jobs(&out), 5, "{out}");
    assert_eq!(summary_value(&out, "jobs per worker").split(' ').count(), 2);
}

#[test]
fn a_client_that_leaves_mid_job_harms_nobody() {
    let server = Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", "1"]);
    let mut gone = Conn::new(server.connect());
    gone.send(COSTLY);
    // Make sure the loop has read it (and queued its job) before the client resets.
    let mut probe = Conn::new(server.connect());
    probe.send(GET);
    assert_eq!(probe.response(false).expect("probe").raw, OK_KEEP_ALIVE);
    drop(probe);
    reset(gone.stream);
    // The loop reads nothing from a connection whose work is out, so it learns of the reset
    // only when the job is done and the answer meets ECONNRESET: that connection closes, no
    // other. A newcomer queues behind the leaver's job: its answers come in order, once each.
    let mut next = Conn::new(server.connect());
    next.send(&[b"GET /work/1 HTTP/1.1\r\n\r\n".as_slice(), GET].concat());
    for _ in 0..2 {
        assert_eq!(next.response(false).expect("newcomer").raw, OK_KEEP_ALIVE);
    }
    assert!(
        !next.answered_within(Duration::from_millis(200)),
        "an extra answer"
    );
    let out = server.stop(Signal::SIGTERM).stdout;
    assert_eq!(
        jobs(&out),
        2,
        "the leaver's job ran, then the newcomer's:\n{out}"
    );
    // The probe's, the leaver's (answered into a reset socket) and the newcomer's two.
    assert_eq!(summary_value(&out, "requests served"), "4", "{out}");
}
