//! What lesson 4 adds to the contract: a dead worker is replaced (and a crash loop is slowed
//! down), the per-worker counts survive a worker's death, blocking accept spreads connections
//! over every idle worker, and no worker outlives the supervisor.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use conformance::client::{Conn, GET_CLOSE, connect, probe};
use conformance::server::{Server, live_processes_in_group};
use conformance::summary::value as summary_value;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use server_common::responses::OK_CLOSE;

const BIN: &str = env!("CARGO_BIN_EXE_prefork_server");

fn start(workers: &str) -> Server {
    Server::start(BIN, &["--addr", "127.0.0.1:0", "--workers", workers])
}

/// The supervisor's live workers (its process group minus itself), once there are `n` of them,
/// none of them in `gone`, and each asleep — a fresh worker sleeps only in accept. Panics
/// after 10 s.
fn workers_asleep(s: &Server, n: usize, gone: &[i32]) -> Vec<i32> {
    let t0 = Instant::now();
    loop {
        let mut pids = live_processes_in_group(s.pid);
        pids.retain(|p| *p != s.pid && !gone.contains(p));
        let asleep = pids.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|st| {
                st.rsplit_once(") ")
                    .is_some_and(|(_, f)| f.starts_with('S'))
            })
        });
        if pids.len() == n && asleep {
            return pids;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "workers: {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn accepts_per_worker(out: &str) -> Vec<u64> {
    summary_value(out, "accepts per worker")
        .split_whitespace()
        .map(|n| n.parse().expect("a number per worker"))
        .collect()
}

#[test]
fn a_killed_worker_is_replaced_under_load_and_its_counts_survive() {
    let s = start("2");
    let before = workers_asleep(&s, 2, &[]);
    // Light load all along: one client after another, each asking to close.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, stop) = (s.addr, stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut lost) = (0u64, 0u64);
            while !stop.load(Relaxed) {
                let mut c = Conn::new(connect(addr));
                let served = c.stream.write_all(GET_CLOSE).is_ok()
                    && c.response(false).is_ok_and(|r| r.raw == OK_CLOSE);
                *(if served { &mut ok } else { &mut lost }) += 1;
            }
            (ok, lost)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(before[0]), Signal::SIGKILL).expect("kill a worker");
    // Two workers again, the killed one not among them: its replacement (≤ 1 s of back-off).
    let after = workers_asleep(&s, 2, &before[..1]);
    assert!(
        after.contains(&before[1]),
        "the other worker was left alone"
    );
    std::thread::sleep(Duration::from_millis(200)); // the replacement serves too
    stop.store(true, Relaxed);
    let (ok, lost) = load.join().expect("the load thread");
    assert!(
        ok > 0 && lost <= 1,
        "only the killed worker's connection may be lost: {lost}"
    );

    let out = s.stop(Signal::SIGTERM).stdout;
    // Every connection served is counted, the dead worker's too: they live in the shared page.
    let accepted: u64 = summary_value(&out, "connections accepted")
        .parse()
        .expect("a number");
    assert!(
        ok <= accepted && accepted <= ok + lost,
        "{ok} + {lost} lost:\n{out}"
    );
    assert_eq!(
        accepts_per_worker(&out).iter().sum::<u64>(),
        accepted,
        "{out}"
    );
    assert_eq!(summary_value(&out, "workers respawned"), "1", "{out}");
}

#[test]
fn a_worker_that_keeps_dying_is_replaced_at_most_once_a_second() {
    let s = start("1");
    let first = workers_asleep(&s, 1, &[])[0];
    kill(Pid::from_raw(first), Signal::SIGKILL).expect("kill the worker");
    let second = workers_asleep(&s, 1, &[first])[0];
    let t_second = Instant::now(); // at or after the second worker's fork
    kill(Pid::from_raw(second), Signal::SIGKILL).expect("kill its replacement");
    workers_asleep(&s, 1, &[first, second]);
    // Lower bound only: the back-off is 1 s after the previous fork; polling may see it late.
    assert!(
        t_second.elapsed() >= Duration::from_millis(500),
        "replaced again after only {:?}: a crash loop would spin",
        t_second.elapsed()
    );
    assert_eq!(probe(s.addr).raw, OK_CLOSE);
}

#[test]
fn blocking_accept_spreads_connections_over_every_idle_worker() {
    // Forty clients one after another, each arriving when all four workers are asleep in
    // accept. Linux wakes one waiter per connection, the one that has waited longest, so they
    // take turns: ten each. Waiting in epoll would not spread them: with EPOLLEXCLUSIVE the
    // first-registered idle epoll instance always wins, and threads sharing one epoll instance
    // are woken LIFO — either way one worker would take all forty. (Without the wait, a busy machine blurs
    // the turns: a worker that comes back to accept while a connection is queued takes it
    // without sleeping, ahead of the waiter already woken for it.)
    let s = start("4");
    for _ in 0..40 {
        workers_asleep(&s, 4, &[]);
        assert_eq!(probe(s.addr).raw, OK_CLOSE);
    }
    let out = s.stop(Signal::SIGTERM).stdout;
    let per = accepts_per_worker(&out);
    assert_eq!(per.len(), 4, "{out}");
    assert_eq!(per.iter().sum::<u64>(), 40, "{out}");
    assert!(per.iter().all(|&n| n >= 5), "uneven spread: {per:?}");
}

#[test]
fn no_worker_outlives_a_supervisor_killed_without_warning() {
    // SIGKILL gives the supervisor no chance to forward anything: PR_SET_PDEATHSIG must end the
    // workers, or they would go on accepting on the orphaned listener.
    let s = start("3");
    workers_asleep(&s, 3, &[]);
    // Not `Server::stop`: its drop guard kills the whole process group, workers included.
    let pgid = s.pid;
    kill(Pid::from_raw(pgid), Signal::SIGKILL).expect("kill the supervisor");
    let t0 = Instant::now();
    while !live_processes_in_group(pgid).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "workers outlived the supervisor: {:?}",
            live_processes_in_group(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s); // reaps the supervisor
}
