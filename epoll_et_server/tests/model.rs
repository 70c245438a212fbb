//! What only the epoll lesson promises: thousands of idle connections cost it nothing per turn,
//! and running out of descriptors pauses accepting instead of spinning or dropping clients.

use std::net::TcpStream;
use std::time::Duration;

use conformance::client::{Conn, GET, probe};
use conformance::server::Server;
use nix::sys::signal::Signal;
use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

const BIN: &str = env!("CARGO_BIN_EXE_epoll_et_server");

fn summary_number(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(": ")?.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{out}"))
}

#[test]
fn thousands_of_idle_connections_and_a_new_client_is_still_served() {
    let server = Server::start(BIN, &["--addr", "127.0.0.1:0"]);
    let idle: Vec<TcpStream> = (0..5000).map(|_| server.connect()).collect();
    // A newcomer is served, and so are the first and the last of the idle ones.
    assert_eq!(probe(server.addr).raw, OK_CLOSE);
    for s in [&idle[0], &idle[4999]] {
        let mut c = Conn::new(s.try_clone().expect("clone"));
        c.send(GET);
        assert_eq!(c.response(false).expect("an idle one").raw, OK_KEEP_ALIVE);
    }
    let stopped = server.stop(Signal::SIGTERM);
    let peak = summary_number(&stopped.stdout, "peak concurrent connections");
    assert!(peak >= 5001, "all were open at once: {}", stopped.stdout);
    drop(idle);
}

#[test]
fn out_of_descriptors_it_pauses_accepting_then_serves_the_queue() {
    // 64 descriptors: stdio, the listener and the epoll leave room for 59 connections. `sh`
    // lowers the limit and execs the server in its own place (same pid, same process group).
    let script = r#"ulimit -n 64 && exec "$0" "$@""#;
    let server = Server::start("/bin/sh", &["-c", script, BIN, "--addr", "127.0.0.1:0"]);
    let mut conns: Vec<Conn> = (0..80).map(|_| Conn::new(server.connect())).collect();
    let mut served = 0;
    for c in &mut conns {
        c.send(GET);
    }
    for c in &mut conns[..50] {
        assert_eq!(
            c.response(false).expect("within the limit").raw,
            OK_KEEP_ALIVE
        );
        served += 1;
    }
    // The last ones wait in the accept queue: no descriptor to accept them with.
    assert!(
        !conns[79].answered_within(Duration::from_millis(300)),
        "served beyond 64 descriptors?"
    );
    // … logged, and not spinning: 100 ms pauses between attempts cost next to nothing.
    server.wait_for_log("Too many open files", "EMFILE not logged");
    let busy = server.busy_fraction(Duration::from_secs(1));
    assert!(
        busy < 0.5,
        "spinning on EMFILE: {:.0}% of a core",
        busy * 100.0
    );

    // Free 30 descriptors: every waiting client is served, without reconnecting.
    conns.drain(..30);
    for c in &mut conns[20..] {
        let r = c
            .response(false)
            .unwrap_or_else(|e| panic!("after {served}: {e}"));
        assert_eq!(r.raw, OK_KEEP_ALIVE);
        served += 1;
    }
    assert_eq!(served, 80);
}
