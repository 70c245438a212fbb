//! What lesson 11 adds to the contract: one listener per loop on one port, connections spread
//! over the loops by the kernel, and — with `--processes` — loop processes that count into the
//! shared page, are replaced when they die (their queue waiting for the replacement), at most
//! once a second when they keep dying, and never outlive the supervisor.

use std::time::{Duration, Instant};

use conformance::client::{Conn, GET, probe};
use conformance::server::{STEP, Server, live_processes_in_group, run_to_exit};
use conformance::summary::value as summary_value;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

const BIN: &str = env!("CARGO_BIN_EXE_multi_epoll_server");

fn start(args: &[&str]) -> Server {
    let mut all = vec!["--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Server::start(BIN, &all)
}

/// Listening TCP sockets on `port`, from /proc/net/tcp: what `ss -ltn 'sport = :PORT'` lists.
/// A listener shared by several processes (supervisor and loop) is one socket, one line.
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // f[1] = local address IP:PORT in hex, f[3] = state, 0A = LISTEN
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

fn accepts_per_worker(out: &str) -> Vec<u64> {
    summary_value(out, "accepts per worker")
        .split_whitespace()
        .map(|n| n.parse().expect("a number per loop"))
        .collect()
}

fn number(out: &str, label: &str) -> u64 {
    summary_value(out, label).parse().expect("a number")
}

/// The loop processes of a `--processes` server (its process group minus the supervisor),
/// once there are `n` of them and none is in `gone`. Panics after `STEP`.
fn loop_processes(s: &Server, n: usize, gone: &[i32]) -> Vec<i32> {
    let t0 = Instant::now();
    loop {
        let mut pids = live_processes_in_group(s.pid);
        pids.retain(|p| *p != s.pid && !gone.contains(p));
        if pids.len() == n {
            return pids;
        }
        assert!(t0.elapsed() < STEP, "loop processes: {pids:?}, want {n}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn help_names_loops_and_processes() {
    let (status, out, _) = run_to_exit(BIN, &["--help"]);
    assert!(status.success());
    for flag in ["--workers", "--loops", "--processes"] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
}

#[test]
fn each_loop_has_its_own_listener_on_the_one_port() {
    for args in [&["--loops", "3"][..], &["--loops", "2", "--processes"]] {
        let s = start(args);
        let want: usize = args[1].parse().expect("a count");
        // All bound before the start-up line: no waiting, in either mode.
        assert_eq!(listeners_on(s.addr.port()), want, "{args:?}");
        assert_eq!(probe(s.addr).raw, OK_CLOSE);
    }
}

/// `n` clients one after another, each on a new connection (so a new 4-tuple, a new hash):
/// every loop must get a fair share.
fn spread(args: &[&str], loops: usize) {
    let s = start(args);
    let n = 200;
    for _ in 0..n {
        assert_eq!(probe(s.addr).raw, OK_CLOSE);
    }
    let out = s.stop(Signal::SIGTERM).stdout;
    let per = accepts_per_worker(&out);
    assert_eq!(per.len(), loops, "{out}");
    assert_eq!(per.iter().sum::<u64>(), n, "{out}");
    assert_eq!(number(&out, "requests served"), n, "{out}");
    // The hash is uniform: 50 ± 6 each. Below 20 is five standard deviations off.
    assert!(per.iter().all(|&k| k >= 20), "uneven spread: {per:?}");
}

#[test]
fn the_kernel_spreads_connections_over_every_loop() {
    spread(&["--loops", "4"], 4);
}

#[test]
fn the_kernel_spreads_connections_over_every_loop_process() {
    spread(&["--workers", "4", "--processes"], 4);
}

#[test]
fn processes_serve_count_per_loop_and_leave_nothing_behind() {
    let s = start(&["--loops", "2", "--processes", "--proto", "echo"]);
    let pids = loop_processes(&s, 2, &[]);
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let ppid = stat.rsplit_once(") ").map(|(_, f)| f.split(' ').nth(1));
        assert_eq!(
            ppid,
            Some(Some(s.pid.to_string().as_str())),
            "forked by the supervisor"
        );
    }
    for _ in 0..20 {
        conformance::client::echo_probe(s.addr, 1000);
    }
    let pgid = s.pid;
    let stopped = s.stop(Signal::SIGTERM);
    assert!(stopped.status.success(), "{stopped:?}");
    let out = &stopped.stdout;
    assert_eq!(number(out, "connections accepted"), 20, "{out}");
    assert_eq!(accepts_per_worker(out).iter().sum::<u64>(), 20, "{out}");
    assert_eq!(number(out, "bytes echoed"), 20_000, "{out}");
    assert_eq!(number(out, "loops respawned"), 0, "{out}");
    // The loops' CPU time is in the summary: they were reaped before it was printed.
    assert!(
        summary_value(out, "CPU seconds").contains("children"),
        "{out}"
    );
    let t0 = Instant::now();
    while !live_processes_in_group(pgid).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "loops outlived the supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn no_loop_process_outlives_a_supervisor_killed_without_warning() {
    // SIGKILL gives the supervisor no chance to stop anything: PR_SET_PDEATHSIG must end the
    // loops, or they would go on serving on their listeners with nobody to report them.
    let s = start(&["--loops", "3", "--processes"]);
    loop_processes(&s, 3, &[]);
    let pgid = s.pid;
    kill(Pid::from_raw(pgid), Signal::SIGKILL).expect("kill the supervisor");
    let t0 = Instant::now();
    while !live_processes_in_group(pgid).is_empty() {
        assert!(
            t0.elapsed() < STEP,
            "loops outlived the supervisor: {:?}",
            live_processes_in_group(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s); // reaps the supervisor
}

#[test]
fn a_dead_loop_is_replaced_and_the_clients_queued_for_it_are_served() {
    let s = start(&["--loops", "2", "--processes"]);
    let before = loop_processes(&s, 2, &[]);
    // Older than a second, so its death is not "young" (lower bound only).
    std::thread::sleep(Duration::from_millis(1200));
    // Loop A stops accepting: clients hashed to its listener wait in its queue.
    let a = Pid::from_raw(before[0]);
    kill(a, Signal::SIGSTOP).expect("stop loop A");
    let mut clients: Vec<Conn> = (0..20).map(|_| Conn::new(s.connect())).collect();
    for c in &mut clients {
        c.send(GET);
    }
    // A dies with them queued. Its listener stays open (the supervisor holds it), so they are
    // not reset: A's replacement accepts and serves them. (2^-20: that none was A's.)
    kill(a, Signal::SIGKILL).expect("kill loop A");
    for c in &mut clients {
        assert_eq!(c.response(false).expect("served").raw, OK_KEEP_ALIVE);
    }
    let after = loop_processes(&s, 2, &before[..1]);
    assert!(after.contains(&before[1]), "loop B was left alone");
    assert_eq!(listeners_on(s.addr.port()), 2);
    let out = s.stop(Signal::SIGTERM).stdout;
    assert_eq!(number(&out, "loops respawned"), 1, "{out}");
    assert_eq!(number(&out, "connections accepted"), 20, "{out}");
}

#[test]
fn a_loop_that_keeps_dying_is_replaced_at_most_once_a_second() {
    let s = start(&["--loops", "2", "--processes"]);
    let first = loop_processes(&s, 2, &[]);
    std::thread::sleep(Duration::from_millis(1200)); // older than a second: replaced at once
    kill(Pid::from_raw(first[0]), Signal::SIGKILL).expect("kill loop A");
    let t_first = Instant::now(); // its replacement is forked after this
    let second = loop_processes(&s, 2, &first[..1]);
    let young = *second
        .iter()
        .find(|p| **p != first[1])
        .expect("A's replacement");
    kill(Pid::from_raw(young), Signal::SIGKILL).expect("kill A's replacement");
    let t_young = Instant::now();
    // While loop A has no process, clients hashed to its listener wait in its queue.
    let mut clients: Vec<Conn> = (0..20).map(|_| Conn::new(s.connect())).collect();
    for c in &mut clients {
        c.send(GET);
    }
    loop_processes(&s, 2, &[first[0], young]);
    // Lower bound only. Surely young if killed within a second of the kill that preceded its fork;
    // on a machine too busy for that, it may have lived longer and been replaced at once.
    let lived_less_than_a_second = t_young.duration_since(t_first) < Duration::from_secs(1);
    if lived_less_than_a_second {
        assert!(
            t_young.elapsed() >= Duration::from_millis(800),
            "a loop that died young was replaced after only {:?}",
            t_young.elapsed()
        );
    }
    for c in &mut clients {
        assert_eq!(c.response(false).expect("served, late").raw, OK_KEEP_ALIVE);
    }
    let out = s.stop(Signal::SIGTERM).stdout;
    assert_eq!(number(&out, "loops respawned"), 2, "{out}");
    assert_eq!(number(&out, "connections accepted"), 20, "{out}");
}

#[test]
fn loop_processes_together_pass_one_process_descriptor_limit() {
    // 64 descriptors per process: `sh` lowers the limit, then execs the server in its own place
    // (same pid, same process group). 80 clients, each sending a request and staying.
    let script = r#"ulimit -n 64 && exec "$0" "$@""#;
    let served = |mode: &[&str]| {
        let mut args = vec!["-c", script, BIN, "--addr", "127.0.0.1:0", "--loops", "2"];
        args.extend_from_slice(mode);
        let s = Server::start("/bin/sh", &args);
        let mut conns: Vec<Conn> = (0..80).map(|_| Conn::new(s.connect())).collect();
        for c in &mut conns {
            c.send(GET);
        }
        std::thread::sleep(Duration::from_millis(500));
        let wait = Duration::from_millis(50);
        let n = conns
            .iter_mut()
            .filter_map(|c| c.answered_within(wait).then_some(()))
            .count();
        (s, conns, n)
    };
    // Threads: one descriptor table for both loops; the clients beyond it wait in the queues.
    let (_s, _conns, n) = served(&[]);
    assert!(n < 80, "80 connections served under 64 descriptors?");
    // Processes: a table each, so about 40 each — all served. (A loop would need more than 59 of
    // the 80 to run out: five standard deviations off an even split.)
    let (_s, mut conns, _) = served(&["--processes"]);
    for c in &mut conns {
        assert_eq!(c.response(false).expect("served").raw, OK_KEEP_ALIVE);
    }
}
