//! What lesson 2 adds to the contract: the `--max-children` cap, children's CPU time in the
//! summary, a crashed child costing one connection only, and no child outliving its parent.

use std::time::{Duration, Instant};

use conformance::client::{Conn, GET, probe};
use conformance::server::{Server, live_processes_in_group};
use conformance::summary::value as summary_value;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

const BIN: &str = env!("CARGO_BIN_EXE_cgi_process_server");

fn start(args: &[&str]) -> Server {
    Server::start(BIN, &[&["--addr", "127.0.0.1:0"], args].concat())
}

/// The server's children that are running (not zombies): its process group minus itself.
fn children(s: &Server) -> Vec<i32> {
    let mut pids = live_processes_in_group(s.pid);
    pids.retain(|&p| p != s.pid);
    pids
}

/// Polls `done` every 20 ms for at most `limit`; whether it came true.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn at_the_cap_a_new_client_waits_in_the_queue_then_is_served() {
    let s = start(&["--max-children", "2"]);
    let mut held: Vec<Conn> = (0..2).map(|_| Conn::new(s.connect())).collect();
    for c in &mut held {
        c.send(GET);
        assert_eq!(
            c.response(false).expect("served under the cap").raw,
            OK_KEEP_ALIVE
        );
    }
    assert_eq!(children(&s).len(), 2, "one child per held connection");

    let mut third = Conn::new(s.connect()); // connects: the kernel queues it
    third.send(GET);
    assert!(
        !third.answered_within(Duration::from_millis(500)),
        "two children at a cap of 2: the third client must wait"
    );
    assert_eq!(children(&s).len(), 2, "no third child at the cap");

    held.pop(); // its child sees EOF and exits; the reaper frees a place under the cap
    assert_eq!(
        third
            .response(false)
            .expect("served once a child exits")
            .raw,
        OK_KEEP_ALIVE
    );
    drop(held);
    let out = s.stop(Signal::SIGTERM).stdout;
    assert_eq!(summary_value(&out, "connections accepted"), "3", "{out}");
    assert_eq!(
        summary_value(&out, "peak concurrent connections"),
        "2",
        "{out}"
    );
}

#[test]
fn the_summary_counts_the_cpu_of_children_stopped_at_shutdown() {
    // One costly request in a child that is still connected when SIGTERM comes: its CPU time
    // reaches RUSAGE_CHILDREN only if the parent stops *and reaps* it before the summary.
    let s = start(&["--work", "20000"]);
    let mut c = Conn::new(s.connect());
    c.send(GET);
    assert_eq!(c.response(false).expect("response").raw, OK_KEEP_ALIVE);
    let out = s.stop(Signal::SIGTERM).stdout;
    let cpu = summary_value(&out, "CPU seconds");
    let children = cpu.split_once("children").expect("children's CPU").1;
    let secs: f64 = children
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .sum();
    assert!(secs >= 0.01, "the child's work is missing: {cpu}");
    assert_eq!(
        summary_value(&out, "children stopped at shutdown"),
        "1",
        "{out}"
    );
    drop(c);
}

#[test]
fn a_crashed_child_costs_its_own_connection_only() {
    let s = start(&[]);
    let mut victim = Conn::new(s.connect());
    victim.send(GET);
    victim.response(false).expect("response");
    let kids = children(&s);
    assert_eq!(kids.len(), 1, "{kids:?}");
    kill(Pid::from_raw(kids[0]), Signal::SIGKILL).expect("kill the child");

    let _ = victim.read_to_end(); // EOF or reset: that client's connection is gone
    assert_eq!(probe(s.addr).raw, OK_CLOSE, "the server goes on serving");
    let stat = format!("/proc/{}/stat", kids[0]);
    assert!(
        within(Duration::from_secs(2), || std::fs::metadata(&stat).is_err()),
        "the killed child was not reaped"
    );
    assert!(
        within(Duration::from_secs(2), || s
            .stderr()
            .contains("ended abnormally")),
        "the crash is reported on stderr: {:?}",
        s.stderr()
    );
}

#[test]
fn no_child_outlives_a_parent_killed_without_warning() {
    // SIGKILL gives the parent no chance to stop its children: PR_SET_PDEATHSIG must. Without
    // it, this child would sit in recv on its idle client for the whole --idle-timeout.
    let s = start(&[]);
    let mut idle = Conn::new(s.connect());
    idle.send(GET);
    idle.response(false).expect("response");
    assert_eq!(children(&s).len(), 1);
    // Not `Server::stop`: its drop guard kills the whole process group, children included.
    let pgid = s.pid;
    kill(Pid::from_raw(pgid), Signal::SIGKILL).expect("kill the parent");
    assert!(
        within(Duration::from_secs(2), || live_processes_in_group(pgid)
            .is_empty()),
        "children outlived their parent: {:?}",
        live_processes_in_group(pgid)
    );
    drop(s); // reaps the parent (and would kill a survivor)
}
