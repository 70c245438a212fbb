//! # Lesson 4, the supervisor — fork N workers, replace the dead, stop them all
//!
//! `main.rs` is what a worker does: accept → serve on the listener it inherited. This file is
//! the other role of the model, the parent: it forks the workers, sleeps in sigwait(2), reaps a
//! worker that dies and forks its replacement, and on SIGINT/SIGTERM stops them all, reaps them
//! and prints the summary. It serves nothing and runs no handler. Lesson 11 (`--processes`)
//! runs its event loops under this same supervisor, so it lives in a library.
//!
//! ```text
//!   Supervisor::new      block SIGCHLD, SIGINT, SIGTERM (before the start-up line)
//!   supervise(N, …) ──► fork ×N ──► child i: default signals, PR_SET_PDEATHSIG, worker(i)
//!     loop: sigwait / sigtimedwait (until the next replacement is due)
//!       SIGCHLD          waitpid(WNOHANG) until none is left; the slot is due again
//!       time's up        fork the replacement (a slot is forked at most once a RESPAWN_INTERVAL)
//!       SIGINT/SIGTERM   forward it, SIGKILL after 1 s, reap all, summary, return
//! ```
//!
//! ## How to use it
//! ```ignore
//! let supervisor = Supervisor::new(NAME)?; // first, while the process has one thread
//! let listener = listen(&args)?;           // prints the start-up line; workers inherit it
//! supervisor.supervise(workers, stats, "workers respawned", |i| worker(i, &listener));
//! // returns after SIGINT/SIGTERM, the summary printed: exit 0
//! ```
//! The process must stay single-threaded: fork(2) copies only the calling thread. `worker(i)`
//! runs in the child and never returns — it ends by a signal, or with `_exit` — which its type
//! says: it returns [`Infallible`], a type with no values (stable Rust has no `-> !` closures).
//! It may consume what it captured: in its own copy of the process only. Keep open in the
//! supervisor whatever a replacement must inherit (the listener): the closure borrows it.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use server_common::stats::Stats;
use server_common::{Context, SetupError, report, shutdown, warn_throttled};

/// A slot is forked at most once per interval: a worker that dies at once (a crash loop) is
/// replaced once a second, not as fast as fork(2) goes; one that ran longer is replaced at once.
pub const RESPAWN_INTERVAL: Duration = Duration::from_secs(1);

/// The parent of the worker processes. Made by [`Supervisor::new`], run by
/// [`Supervisor::supervise`].
pub struct Supervisor {
    name: &'static str, // the crate, for diagnostics and the summary
    signals: SigSet,    // SIGCHLD, SIGINT, SIGTERM: blocked, taken only by sigwait
    pid: Pid,           // ours: a worker whose parent is no longer this exits at once
}

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

impl Supervisor {
    /// Blocks SIGCHLD, SIGINT and SIGTERM and ignores SIGPIPE. Call it first, while this is the
    /// only thread, and before the start-up line: from then on each of the three stays pending
    /// until sigwait takes it — no handler runs, nothing is interrupted, nothing is lost between
    /// two waits, and a SIGTERM sent as soon as the line appears gets its summary.
    pub fn new(name: &'static str) -> Result<Supervisor, SetupError> {
        let signals = shutdown::stop_signals() | Signal::SIGCHLD;
        signals.thread_block().context("cannot block signals")?;
        shutdown::ignore_sigpipe().context("cannot ignore SIGPIPE")?;
        Ok(Supervisor {
            name,
            signals,
            pid: getpid(),
        })
    }

    /// Forks `workers` processes, child `i` running `worker(i)`, and keeps that many alive until
    /// SIGINT or SIGTERM; then stops and reaps them and writes the summary, ending with
    /// `respawned: N` (how many replacements were forked). Returns once the summary is out.
    pub fn supervise(
        self,
        workers: usize,
        stats: &Stats,
        respawned: &str,
        mut worker: impl FnMut(usize) -> Infallible,
    ) {
        let mut slots: Vec<Slot> = (0..workers).map(|_| Slot::default()).collect();
        loop {
            // Fork every worker whose time has come: all of them at start-up, then replacements.
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.due().is_some_and(|due| due <= Instant::now()) {
                    self.spawn(i, slot, &mut worker);
                }
            }
            // Sleep until a signal comes, or until the next replacement is due.
            let next_due = slots.iter().filter_map(Slot::due).min();
            match wait_for(&self.signals, next_due) {
                Some(Signal::SIGCHLD) => self.reap(&mut slots, false),
                Some(sig) => return self.stop(sig, &mut slots, stats, respawned), // INT or TERM
                None => {} // a replacement is due
            }
        }
    }

    /// Forks the worker of slot `i`. On failure the slot is retried after the respawn interval.
    fn spawn(&self, i: usize, slot: &mut Slot, worker: &mut impl FnMut(usize) -> Infallible) {
        slot.last_fork = Some(Instant::now());
        // fork(2), see lesson 2. SAFETY: the supervisor is single-threaded — it never spawns a
        // thread (see "How to use it") — so the child is a consistent copy of the whole process;
        // it runs `worker`, which never returns into the supervisor's frames.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Default SIGINT/SIGTERM, unblocked, as lesson 2's children: the supervisor's
                // forwarded SIGTERM or Ctrl-C on the terminal ends this worker. PR_SET_PDEATHSIG
                // (prctl(2)): so does the supervisor's own death (kill -9). It fires when the
                // thread that forked us ends — the supervisor's only thread, so the process.
                // Had the supervisor died before the prctl took effect, getppid(2) would already
                // name another process. (SIGCHLD stays blocked: a worker has no children.)
                if shutdown::default_signals_in_child().is_err()
                    || prctl::set_pdeathsig(Signal::SIGTERM).is_err()
                    || getppid() != self.pid
                {
                    // SAFETY: _exit(2) ends this process at once, with nothing to flush or
                    // unwind; no supervisor code runs in the child.
                    unsafe { libc::_exit(1) }
                }
                worker(i); // never returns: no value of Infallible exists
            }
            Ok(ForkResult::Parent { child }) => {
                slot.pid = Some(child);
                slot.forks += 1;
            }
            // EAGAIN (a process limit) or ENOMEM: the slot stays empty for a while; the others
            // keep serving, so the server runs short of one worker instead of stopping.
            Err(e) => warn_throttled!("{}: cannot fork worker {i}: {e}; retrying", self.name),
        }
    }

    /// waitpid(2) with WNOHANG (see lesson 2) until no dead worker is left: one SIGCHLD may
    /// stand for several deaths. Each emptied slot is due for a replacement (unless stopping).
    fn reap(&self, slots: &mut [Slot], stopping: bool) {
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
                let name = self.name;
                warn_throttled!("{name}: worker {i} ended ({status:?}); forking a replacement");
            }
        }
    }

    /// SIGINT/SIGTERM: forward it to every worker, reap them all (so RUSAGE_CHILDREN holds their
    /// CPU time), write the summary. No worker outlives the supervisor: one that has not ended
    /// after a second gets SIGKILL, which nothing can catch or block.
    fn stop(&self, sig: Signal, slots: &mut [Slot], stats: &Stats, respawned: &str) {
        let sigchld = SigSet::from(Signal::SIGCHLD);
        for (send, grace) in [(sig, 1000), (Signal::SIGKILL, 500)] {
            // kill(2) cannot hit a stranger: a pid in a slot has not been reaped, and only this
            // thread reaps. (After Ctrl-C the workers got SIGINT from the terminal already.)
            for pid in slots.iter().filter_map(|s| s.pid) {
                let _ = kill(pid, send);
            }
            let deadline = Instant::now() + Duration::from_millis(grace);
            loop {
                self.reap(slots, true);
                if slots.iter().all(|s| s.pid.is_none()) || Instant::now() >= deadline {
                    break;
                }
                wait_for(&sigchld, Some(deadline));
            }
        }
        let respawns: u64 = slots.iter().map(|s| s.forks.saturating_sub(1)).sum();
        let extra = [(respawned.to_string(), respawns.to_string())];
        // Nobody to tell if stdout is gone: exit 0 all the same, as the shared signal thread does.
        let mut out = std::io::stdout().lock();
        let _ = report::write_summary(&mut out, self.name, stats, sig.as_str(), &extra);
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
