//! # Lesson 4 — pre-forked workers blocking in accept
//!
//! The listener is made once; then `--workers N` processes are forked, and each of them loops
//! `accept` → serve → `accept` on its inherited copy of that one listener. Nobody forks per
//! connection any more: the fork of lesson 2 is paid N times at start-up. The parent becomes a
//! supervisor that serves nothing: it sleeps in sigwait(2), replaces a worker that dies, and on
//! SIGINT/SIGTERM stops them all and prints the summary. This is Apache's prefork MPM and UNP's
//! `serv02`: at most N connections are served at once, each by a process of its own.
//!
//! ```text
//!   kernel: one listener, one accept queue          workers (forked once, at start-up)
//!  [ accept queue: c4 c5 … ]──┬─ accept4(2) ───────► worker 0: loop { accept; serve(c1) }
//!    wait queue: w2 → w3 …    ├─ accept4(2) ───────► worker 1: loop { accept; serve(c2) }
//!    (one waiter woken per    ├─ accept4(2) ◄─ asleep ─ worker 2 ┐ idle: blocked in accept
//!     connection, oldest 1st) └─ accept4(2) ◄─ asleep ─ worker 3 ┘
//!                        supervisor: sigwait {SIGCHLD, SIGINT, SIGTERM}
//!                          SIGCHLD → waitpid, fork a replacement   SIGTERM → forward, reap, report
//! ```
//!
//! ## What to notice
//! - The workers share one socket, not N: fork(2) copies the descriptor, both copies refer to
//!   the same listener, the same accept queue and the same wait queue in the kernel.
//! - Which worker gets a connection is the kernel's choice. Idle workers sleep on the listener's
//!   wait queue; a new connection wakes exactly *one* of them (an exclusive wake-up: no
//!   thundering herd since Linux 2.4), the one that has waited longest. So blocking accept
//!   spreads connections round-robin: watch `accepts per worker` in the summary.
//! - The supervisor is single-threaded and has no signal handler: it blocks its three signals
//!   and takes them one at a time with sigwait(2). Reaping, respawning and stopping are ordinary
//!   code with no race against a handler.
//! - The per-worker counts live in the shared page of `Stats`, written by the workers with an
//!   atomic add per accept and read by the supervisor at the end. A pipe would need a message
//!   per accept (a syscall) or a report at exit, which a worker killed by SIGKILL — or by the
//!   SIGTERM that stops it — never sends. Shared memory survives its writer's death.
//!
//! ## Where it breaks
//! A worker is held for the whole life of its connection: `--workers` keep-alive clients occupy
//! every worker, and client N+1 waits in the accept queue however idle the CPU is. A slow
//! client or `--delay-ms` holds a whole process. Lessons 5 and 6 trade the processes for
//! threads (cheaper, but no longer isolated); lessons 7–10 stop giving a connection a worker.
//!
//! ## Try it
//! ```text
//! cargo run --release -p prefork_server -- --workers 4
//! wrk -t2 -c4 -d5s http://127.0.0.1:8080/            # four keep-alive clients, four workers
//! wrk -t2 -c8 -d5s http://127.0.0.1:8080/            # eight: four of them never get served
//! ps --forest -o pid,ppid,stat,wchan:16,cmd -C prefork_server   # idle: inet_csk_accept
//! ```
//!
//! ## Compare with
//! UNP's `serv02.c`; LearnServer's `prefork_server.py`; Apache's prefork MPM; lesson 2,
//! `cgi_process_server` (a fork per connection); lesson 6, `threadpool_accept_worker` (the same
//! model with threads).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::socket::{SockFlag, accept4};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use server_common::cli::{CommonArgs, WorkerArgs};
use server_common::net::{self, Blocking};
use server_common::proto::{Config, Session};
use server_common::stats::{Counters, Stats};
use server_common::{Context, SetupError, blocking, report, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

/// A slot is forked at most once per interval: a worker that dies at once (a crash loop) is
/// replaced once a second, not as fast as fork(2) goes; one that ran longer is replaced at once.
const RESPAWN_INTERVAL: Duration = Duration::from_secs(1);

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 4, pre-forked workers: the listener is made once, then `--workers` processes each loop
/// accept → serve on it, and a supervisor replaces any that dies. At most `--workers` clients are
/// served at once; the others wait in the kernel's accept queue.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    pool: WorkerArgs,
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// A blocking listener, exactly lesson 1's (socket, SO_REUSEADDR, bind, listen: see there),
/// made *before* any fork so that every worker inherits it. The supervisor keeps its copy open
/// although it never accepts: replacements inherit it from there.
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned by run
    net::announce(NAME, &listener)?;
    Ok(listener)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// What the supervisor knows of one worker slot.
#[derive(Default)]
struct Slot {
    pid: Option<Pid>,           // the worker serving this slot, until it is reaped
    last_fork: Option<Instant>, // the last attempt to fork one
    forks: u64,                 // successful forks: more than one means respawns
}

impl Slot {
    /// When to fork a worker for this slot: never while it has one; otherwise RESPAWN_INTERVAL
    /// after the last attempt — the back-off that keeps a crash loop from spinning.
    fn due(&self) -> Option<Instant> {
        let after_last = |t: Instant| t + RESPAWN_INTERVAL;
        self.pid
            .is_none()
            .then(|| self.last_fork.map_or_else(Instant::now, after_last))
    }
}

/// What a worker needs, copied into it by fork.
struct Job {
    listener: OwnedFd,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
    supervisor: Pid,
}

fn run(args: Args) -> Result<(), SetupError> {
    let workers = args.pool.workers as usize;
    let stats = Stats::new_shared(Some(workers)); // MAP_SHARED: one slot of counters per worker
    // The supervisor's three signals are blocked before anything else, so each stays pending
    // until sigwait takes it: no handler ever runs, nothing is interrupted, nothing is lost
    // between two waits. Workers inherit the mask and restore their own (see `worker`).
    let signals = shutdown::stop_signals() | Signal::SIGCHLD;
    signals.thread_block().context("cannot block signals")?;
    shutdown::ignore_sigpipe().context("cannot ignore SIGPIPE")?;
    let job = Job {
        listener: listen(&args.common)?,
        config: args.common.session_config(),
        idle: args.common.idle_timeout(),
        stats,
        supervisor: getpid(),
    };
    let mut slots: Vec<Slot> = (0..workers).map(|_| Slot::default()).collect();

    loop {
        // Fork every worker whose time has come: all of them at start-up, then replacements.
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.due().is_some_and(|due| due <= Instant::now()) {
                spawn(i, slot, &job);
            }
        }
        // Sleep until a signal comes, or until the next replacement is due.
        let next_due = slots.iter().filter_map(Slot::due).min();
        match wait_for(&signals, next_due) {
            Some(Signal::SIGCHLD) => reap(&mut slots, false),
            Some(sig) => return stop(sig, &mut slots, stats), // SIGINT or SIGTERM
            None => {}                                        // a replacement is due
        }
    }
}

/// Forks the worker of slot `i`. On failure the slot is retried after the respawn interval.
fn spawn(i: usize, slot: &mut Slot, job: &Job) {
    slot.last_fork = Some(Instant::now());
    // fork(2), see lesson 2. SAFETY: the supervisor is single-threaded — it never spawns a
    // thread — so the child is a consistent copy of the whole process; it runs `worker` and
    // ends in _exit(2), never returning into the supervisor's frames.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => worker(i, job), // the child owns its copy of the listener
        Ok(ForkResult::Parent { child }) => {
            slot.pid = Some(child);
            slot.forks += 1;
        }
        // EAGAIN (a process limit) or ENOMEM: the slot stays empty for a while; the others
        // keep serving, so the server runs short of one worker instead of stopping.
        Err(e) => warn_throttled!("{NAME}: cannot fork worker {i}: {e}; retrying"),
    }
}

/// sigwait(2), or sigtimedwait(2) when something is due at `until`: the signal taken, or `None`
/// once the time has come.
fn wait_for(set: &SigSet, until: Option<Instant>) -> Option<Signal> {
    let Some(until) = until else {
        return set.wait().ok(); // fails only for an invalid set; ours is fixed
    };
    let timeout = TimeSpec::from_duration(until.saturating_duration_since(Instant::now()));
    // SAFETY: `set` and `timeout` are live for the whole call; a null siginfo pointer is
    // allowed. (libc: nix 0.31 has no sigtimedwait.)
    let signo = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), timeout.as_ref()) };
    Signal::try_from(signo).ok() // -1 with EAGAIN: the time came first
}

/// waitpid(2) with WNOHANG (see lesson 2) until no dead worker is left: one SIGCHLD may stand for
/// several deaths. Each emptied slot is due for a replacement (unless the server is stopping).
fn reap(slots: &mut [Slot], stopping: bool) {
    loop {
        // Err: ECHILD, no child at all (WNOHANG never sleeps, so never EINTR).
        let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => status,
        };
        let Some(i) = slots.iter().position(|s| s.pid == status.pid()) else {
            continue; // cannot happen: every child of ours is a worker
        };
        slots[i].pid = None; // due again: see Slot::due
        if !stopping {
            warn_throttled!("{NAME}: worker {i} ended ({status:?}); forking a replacement");
        }
    }
}

/// The life of a worker process: accept → serve, forever, until a signal ends it.
fn worker(i: usize, job: &Job) -> ! {
    // Default SIGINT/SIGTERM and a parent-death signal, exactly as lesson 2's children: the
    // supervisor's forwarded SIGTERM, Ctrl-C on the terminal, or the supervisor's own death
    // (kill -9) ends this worker. The supervisor is single-threaded, so the thread that forked
    // us is the whole process.
    if shutdown::default_signals_in_child().is_err()
        || prctl::set_pdeathsig(Signal::SIGTERM).is_err()
        || getppid() != job.supervisor
    {
        // SAFETY: _exit(2) ends this process at once, with nothing to flush or unwind.
        unsafe { libc::_exit(1) }
    }
    let counters = job.stats.worker(i); // this worker's slot in the shared page
    loop {
        // THE MODEL: every idle worker sleeps right here, in accept4(2) on the same listener —
        // on one wait queue in the kernel. A new connection wakes one waiter, the oldest
        // (exclusive, FIFO wake-up), and only that worker returns with it; accept errors get
        // lesson 1's policy. Nobody decides the balance in user space.
        let fd = match accept4(job.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(e) => {
                blocking::after_accept_error(NAME, e);
                continue;
            }
        };
        // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns; OwnedFd takes
        // sole ownership and closes it exactly once, when dropped.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned here, moved to handle_conn
        let live = job.stats.accepted(i); // an atomic add in the shared page, seen by the supervisor
        // This worker is busy until the client leaves: --workers keep-alive clients hold them all.
        handle_conn(conn, job.config, job.idle, counters);
        drop(live); // (a worker killed mid-connection never gets here: "live" stays 1 high)
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Serves one connection to its end, inside a worker. Every failure ends this connection only.
fn handle_conn(conn: OwnedFd, config: Config, idle: Option<Duration>, counters: &'static Counters) {
    // SO_RCVTIMEO/SO_SNDTIMEO and TCP_NODELAY, see lesson 1: without the idle timeout, N silent
    // clients would hold all N workers forever.
    if let Err(e) = net::prepare_conn(&conn, idle) {
        warn_throttled!("{NAME}: setsockopt on a new connection: {e}");
        return; // conn dropped: close(2)
    }
    // recv → session → send until the end (lesson 1, server_common/src/blocking.rs).
    let _end = blocking::serve(conn, Session::new(config, counters)); // conn: moved, closed inside
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM: forward it to every worker, reap them all (so RUSAGE_CHILDREN holds their CPU
/// time), print the summary with the per-worker accepts, and return: exit 0. No worker outlives
/// the supervisor. If a worker has not ended after a second, SIGKILL bounds the wait.
fn stop(sig: Signal, slots: &mut [Slot], stats: &Stats) -> Result<(), SetupError> {
    let sigchld = SigSet::from(Signal::SIGCHLD);
    for (send, grace) in [(sig, 1000), (Signal::SIGKILL, 500)] {
        // kill(2) cannot hit a stranger: a pid in a slot has not been reaped, and only this
        // thread reaps. (After Ctrl-C the workers got SIGINT from the terminal already.)
        for pid in slots.iter().filter_map(|s| s.pid) {
            let _ = kill(pid, send);
        }
        let deadline = Instant::now() + Duration::from_millis(grace);
        loop {
            reap(slots, true);
            if slots.iter().all(|s| s.pid.is_none()) || Instant::now() >= deadline {
                break;
            }
            wait_for(&sigchld, Some(deadline));
        }
    }
    let respawns: u64 = slots.iter().map(|s| s.forks.saturating_sub(1)).sum();
    let extra = [("workers respawned".to_string(), respawns.to_string())];
    // Nobody to tell if stdout is gone: exit 0 all the same, as the shared signal thread does.
    let mut out = std::io::stdout().lock();
    let _ = report::write_summary(&mut out, NAME, stats, sig.as_str(), &extra);
    Ok(())
}
