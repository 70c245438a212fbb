//! What lesson 11 adds to the contract: one listener per loop on one port, connections spread
//! over the loops by the kernel, and — with `--processes` — loop processes that count into the
//! shared page, are replaced when they die (their queue waiting for the replacement), at most
//! once a second when they keep dying, and never outlive the supervisor. Then `--distribute`:
//! where new connections go while one loop is busy, the acceptor's turns, its hand-off queues
//! surviving a dead loop, and running out of descriptors on the receiving side.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
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
    for flag in ["--workers", "--loops", "--processes", "--distribute"] {
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
    // The other two designs share one listener, whatever the number of loops.
    for how in ["exclusive", "acceptor"] {
        for mode in [&["--loops", "3"][..], &["--loops", "3", "--processes"]] {
            let s = start(&[mode, &["--distribute", how]].concat());
            assert_eq!(listeners_on(s.addr.port()), 1, "{how} {mode:?}");
            assert_eq!(probe(s.addr).raw, OK_CLOSE);
        }
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

// ─── --distribute ───────────────────────────────────────────────────────────────────────────

/// The loop processes of an `--processes` server, split into (acceptor, loops) by their name:
/// the acceptor process calls itself `acceptor` (PR_SET_NAME).
fn acceptor_and_loops(s: &Server, loops: usize) -> (i32, Vec<i32>) {
    let mut pids = loop_processes(s, loops + 1, &[]);
    let comm = |p: &i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let at = pids.iter().position(|p| comm(p).trim() == "acceptor");
    let acceptor = pids.swap_remove(at.expect("a process named acceptor"));
    (acceptor, pids)
}

/// What happens to new clients while one loop is busy. One client holds its loop (A) in a 5 s
/// `--delay-ms` sleep; then 16 new clients connect, 50 ms apart, and send nothing (so no other
/// request sleeps). The summary, taken while A still sleeps, says which loop accepted them.
/// Timing: everything below takes about 1.5 s; A sleeps until 5 s after its request was read.
fn accepts_while_a_loop_sleeps(mode: &[&str]) -> Vec<u64> {
    let s = start(&[&["--loops", "2", "--delay-ms", "5000"], mode].concat());
    let mut busy = Conn::new(s.connect());
    busy.send(GET);
    let t0 = Instant::now(); // A's sleep starts after this
    std::thread::sleep(Duration::from_millis(300)); // A has read the request and sleeps
    let clients: Vec<TcpStream> = (0..16)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            s.connect()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // taken by now, if their loop is awake
    // A guard, not a measure: only while A sleeps do the counts say anything.
    assert!(t0.elapsed() < Duration::from_secs(4), "too slow to tell");
    let out = s.stop(Signal::SIGTERM).stdout;
    drop((busy, clients));
    let mut per = accepts_per_worker(&out);
    per.sort_unstable(); // [A, the other]: A accepted one, the client that holds it
    per
}

#[test]
fn reuseport_hashes_new_clients_to_a_busy_loop_too() {
    for mode in [&[][..], &["--processes"]] {
        let per = accepts_while_a_loop_sleeps(mode);
        // About half of the 16 hashed to A's listener and wait in its queue: not accepted.
        // (All 16 hashed to the other loop: 2^-16.)
        assert!(per.iter().sum::<u64>() < 17, "{mode:?}: {per:?}");
    }
}

#[test]
fn exclusive_wakes_only_a_loop_that_waits() {
    for mode in [
        &["--distribute", "exclusive"][..],
        &["--distribute", "exclusive", "--processes"],
    ] {
        let per = accepts_while_a_loop_sleeps(mode);
        // A is not in epoll_wait, so it is never the one woken: the other loop took all 16.
        assert_eq!(per, [1, 16], "{mode:?}");
    }
}

#[test]
fn the_acceptor_stops_handing_clients_to_a_busy_loop() {
    for mode in [
        &["--distribute", "acceptor"][..],
        &["--distribute", "acceptor", "--processes"],
    ] {
        let per = accepts_while_a_loop_sleeps(mode);
        // The acceptor cannot see that A sleeps, only that A stops taking what it is sent: the
        // first client handed to A (in turn, both queues empty) waits in A's socketpair; from
        // then on A's queue is the longer and A is skipped. A second one may follow only if the
        // other loop had not yet taken the previous client. Round robin would send A eight.
        assert_eq!(per[0], 1, "{mode:?}: {per:?}");
        assert!(per[1] >= 14, "{mode:?}: {per:?}");
    }
}

#[test]
fn the_acceptor_takes_the_loops_in_turn() {
    for mode in [&["--loops", "4"][..], &["--loops", "4", "--processes"]] {
        let s = start(&[mode, &["--distribute", "acceptor"]].concat());
        for _ in 0..200 {
            assert_eq!(probe(s.addr).raw, OK_CLOSE);
        }
        let out = s.stop(Signal::SIGTERM).stdout;
        // Each client is answered before the next connects, so every queue is empty at each
        // choice: all tie, and the loops take turns exactly.
        assert_eq!(accepts_per_worker(&out), [50, 50, 50, 50], "{mode:?}");
    }
}

#[test]
fn a_dead_loop_process_leaves_its_hand_off_queue_to_its_replacement() {
    let s = start(&["--loops", "2", "--processes", "--distribute", "acceptor"]);
    let (acceptor, loops) = acceptor_and_loops(&s, 2);
    std::thread::sleep(Duration::from_millis(1200)); // older than a second: replaced at once
    // Loop A stops receiving: what the acceptor hands it waits in its socketpair.
    let a = Pid::from_raw(loops[0]);
    kill(a, Signal::SIGSTOP).expect("stop loop A");
    let mut clients: Vec<Conn> = (0..20).map(|_| Conn::new(s.connect())).collect();
    for c in &mut clients {
        c.send(GET);
    }
    std::thread::sleep(Duration::from_millis(300)); // handed off by now
    // A dies with connections queued for it. The supervisor holds its end of the socketpair,
    // so they are not closed: A's replacement inherits the end and receives them.
    kill(a, Signal::SIGKILL).expect("kill loop A");
    for c in &mut clients {
        assert_eq!(c.response(false).expect("served").raw, OK_KEEP_ALIVE);
    }
    let (acceptor_after, _) = acceptor_and_loops(&s, 2);
    assert_eq!(acceptor_after, acceptor, "the acceptor was left alone");
    let out = s.stop(Signal::SIGTERM).stdout;
    assert_eq!(number(&out, "loops respawned"), 1, "{out}");
    assert_eq!(number(&out, "connections accepted"), 20, "{out}");
}

/// One client's state, without waiting long: answered, still waiting, or closed unanswered.
#[derive(Debug, PartialEq)]
enum Seen {
    Answered,
    Waiting,
    Closed,
}

fn seen(c: &mut TcpStream, wait: Duration) -> Seen {
    c.set_read_timeout(Some(wait)).expect("set_read_timeout");
    let mut buf = [0u8; 256];
    match c.read(&mut buf) {
        Ok(0) => Seen::Closed,
        Ok(_) => Seen::Answered,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Seen::Waiting,
        Err(_) => Seen::Closed, // reset
    }
}

#[test]
fn a_loop_out_of_descriptors_loses_one_client_and_keeps_the_rest_queued() {
    // 40 descriptors per process: each loop process holds about 35 clients. 100 connect and
    // send a request; the loops fill up, and the rest wait in their hand-off queues.
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--loops",
        "2",
        "--processes",
        "--distribute",
        "acceptor",
    ];
    let s = Server::start_limited(BIN, &args, Some(40));
    let mut clients: Vec<TcpStream> = (0..100).map(|_| s.connect()).collect();
    for c in &mut clients {
        std::io::Write::write_all(c, GET).expect("send");
    }
    std::thread::sleep(Duration::from_millis(1000));
    let first: Vec<Seen> = clients
        .iter_mut()
        .map(|c| seen(c, Duration::from_millis(20)))
        .collect();
    let served = first.iter().filter(|&x| *x == Seen::Answered).count();
    assert!((40..100).contains(&served), "served at first: {served}");
    // Those served leave: the loops get descriptors back, and take the queued clients.
    let mut rest: Vec<TcpStream> = clients
        .into_iter()
        .zip(&first)
        .filter_map(|(c, x)| (*x != Seen::Answered).then_some(c))
        .collect();
    let lost = rest
        .iter_mut()
        .map(|c| seen(c, Duration::from_secs(5)))
        .filter(|x| *x != Seen::Answered)
        .count();
    // At most one per loop process: the message recvmsg took when the table was full. After
    // that, each loop peeks first and leaves the clients queued until it has room.
    assert!(lost <= 2, "{lost} of {} not served", rest.len());
    assert!(s.stderr().contains("out of descriptors"), "{}", s.stderr());
}
