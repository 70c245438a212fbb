//! Threads and processes: who runs which connections, the start barrier, the status line,
//! Ctrl-C, and collecting every thread's tally into one.
//!
//! ```text
//!  top process ── supervise(): posts "go" once every thread is ready, prints the status line,
//!  │                           turns Ctrl-C into "stop", waits until every thread is done
//!  ├─ (--processes N) fork ─► child 0: threads 0..T ─┐  each child merges its threads' tallies
//!  │                          child 1: threads 0..T ─┤  and writes them to its pipe (text)
//!  │                          …                      │
//!  └─ (one process) threads 0..T                     └─► the parent merges all of them
//!             all of them post progress on the shared board (board.rs)
//! ```

use std::io::{IsTerminal, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe};

use crate::board::{Board, DoneOnDrop};
use crate::cli::{Plan, Proto, Until};
use crate::clock;
use crate::engine;
use crate::stats::Tally;
use crate::workload::{Echo, Http};

/// What a run produced.
pub struct Outcome {
    pub tally: Tally,
    /// CPU seconds of every client process: (user, system).
    pub cpu: (f64, f64),
    /// Ctrl-C (or SIGTERM) stopped the run early.
    pub interrupted: bool,
}

/// Set by SIGINT/SIGTERM in the top process; `supervise` passes it on through the board.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Relaxed); // an atomic store: async-signal-safe
}

/// Runs the whole plan and merges every thread's tally.
pub fn run(plan: &Plan) -> Result<Outcome, String> {
    let board = Board::new((plan.processes * plan.threads) as usize)
        .map_err(|e| format!("cannot map the shared board: {e}"))?;
    // SA_RESETHAND: the first Ctrl-C stops the run and prints the report; a second one, if the
    // run is stuck, kills as usual.
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler does one atomic store, which is async-signal-safe, and touches
        // no other state.
        unsafe { sigaction(sig, &action) }.map_err(|e| format!("sigaction: {e}"))?;
    }

    let tally = if plan.processes == 1 {
        std::thread::scope(|scope| {
            let threads = spawn_threads(scope, plan, 0, &board);
            supervise(plan, &board, &mut []);
            merge(threads.into_iter().map(|h| {
                // A panicking thread is a bug; say so, and count what the others did.
                h.join().unwrap_or_else(|_| {
                    eprintln!("echo_client: an event-loop thread panicked");
                    Tally::default()
                })
            }))
        })
    } else {
        run_processes(plan, &board)?
    };
    let me = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| format!("getrusage: {e}"))?;
    // RUSAGE_CHILDREN covers the children reaped so far: all of them, by now.
    let kids = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(|e| format!("getrusage: {e}"))?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Ok(Outcome {
        tally,
        cpu: (
            secs(me.user_time()) + secs(kids.user_time()),
            secs(me.system_time()) + secs(kids.system_time()),
        ),
        interrupted: SIGNALLED.load(Relaxed),
    })
}

fn merge(tallies: impl IntoIterator<Item = Tally>) -> Tally {
    let mut all = Tally::default();
    for t in tallies {
        all.merge(&t);
    }
    all
}

/// Starts process `p`'s event-loop threads, each on its share of the process's connections.
fn spawn_threads<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    plan: &'env Plan,
    p: u32,
    board: &'env Board,
) -> Vec<std::thread::ScopedJoinHandle<'scope, Tally>> {
    let ids = plan.process_ids(p);
    (0..plan.threads)
        .map(|t| {
            let ids = plan.thread_ids(ids.clone(), t);
            let slot = &board.slots[(p * plan.threads + t) as usize];
            std::thread::Builder::new()
                .name(format!("loop-{p}.{t}"))
                .spawn_scoped(scope, move || {
                    let _done = DoneOnDrop(slot);
                    // One workload per thread: the echo pattern is small, and no thread
                    // shares a cache line it writes with another.
                    match plan.proto {
                        Proto::Echo => engine::run(&Echo::new(plan.size), plan, ids, board, slot),
                        Proto::Http => {
                            let w =
                                Http::new(&plan.addr.to_string(), plan.close, plan.mix.as_ref());
                            engine::run(&w, plan, ids, board, slot)
                        }
                    }
                })
                // Failing to start a thread at all leaves nothing sensible to do.
                .unwrap_or_else(|e| {
                    eprintln!("echo_client: cannot start a thread: {e}");
                    std::process::exit(1)
                })
        })
        .collect()
}

// ─── processes ──────────────────────────────────────────────────────────────────────────────

/// A forked client process, as the parent sees it.
struct Child {
    pid: Pid,
    /// The read end of the pipe its report comes through.
    report: std::fs::File,
    reaped: bool,
}

fn run_processes(plan: &Plan, board: &Board) -> Result<Tally, String> {
    let parent = nix::unistd::getpid();
    let mut children = Vec::new();
    for p in 0..plan.processes {
        let (read_end, write_end) = pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: this process is single-threaded here — no thread has been spawned yet (the
        // event loops start in the children, the supervisor is this thread) — so the child
        // gets a consistent copy of every lock and allocator state and may run normal code.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop(read_end); // the parent's
                child_main(plan, p, board, parent, write_end) // never returns
            }
            ForkResult::Parent { child } => {
                drop(write_end); // the child's: its EOF then means the child is gone
                children.push(Child {
                    pid: child,
                    report: std::fs::File::from(read_end),
                    reaped: false,
                });
            }
        }
    }
    supervise(plan, board, &mut children);
    let mut all = Tally::default();
    let mut lost = 0;
    for c in &mut children {
        let mut text = String::new();
        let got = c
            .report
            .read_to_string(&mut text)
            .map_err(|e| e.to_string());
        match got.and_then(|_| Tally::from_wire(&text)) {
            Ok(t) => all.merge(&t),
            Err(e) => {
                eprintln!("echo_client: no report from process {}: {e}", c.pid);
                lost += 1;
            }
        }
        if !c.reaped {
            let _ = waitpid(c.pid, None);
            c.reaped = true;
        }
    }
    if lost > 0 {
        return Err(format!("{lost} client process(es) died without a report"));
    }
    Ok(all)
}

/// A child: runs its share, sends its merged tally, exits. Never returns.
fn child_main(plan: &Plan, p: u32, board: &Board, parent: Pid, report: OwnedFd) -> ! {
    // Die with the parent: a client left running after its parent died would load the server
    // with nobody to report to. (The check after it closes the race with an early death.)
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer argument and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        std::process::exit(1);
    }
    // Ctrl-C reaches the whole process group; only the parent acts on it (through the board).
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: SIG_IGN installs no handler code at all.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) };
    }
    let tally = std::thread::scope(|scope| {
        let threads = spawn_threads(scope, plan, p, board);
        merge(threads.into_iter().map(|h| h.join().unwrap_or_default()))
    });
    let mut out = std::fs::File::from(report);
    let code = match out.write_all(tally.to_wire().as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code)
}

// ─── supervision ────────────────────────────────────────────────────────────────────────────

/// The top process's loop until every thread is done: releases the start barrier, relays
/// Ctrl-C, notices children that died, prints the status line.
fn supervise(plan: &Plan, board: &Board, children: &mut [Child]) {
    let mut status = Status::new(plan);
    loop {
        if SIGNALLED.load(Relaxed) {
            board.stop();
        }
        reap_dead(plan, board, children);
        if board.all(|s| &s.done) {
            break;
        }
        if board.go().is_none()
            && board
                .slots
                .iter()
                .all(|s| s.ready.load(Relaxed) != 0 || s.done.load(Relaxed) != 0)
        {
            // Every connection is settled. If none is established the server is unreachable:
            // stop at once (main says so in one line) instead of retrying for the whole run.
            if board.sum(|s| &s.established) == 0 {
                board.stop();
            }
            board.header.go.store(clock::now().max(1), Relaxed);
        }
        status.tick(board);
        // Fine-grained while the barrier may be about to open, so all threads start within a
        // millisecond; coarse afterwards, since only the status line and Ctrl-C need us.
        let nap = if board.go().is_none() { 1 } else { 20 };
        std::thread::sleep(Duration::from_millis(nap));
    }
    status.clear();
}

/// A child that exited before all its threads posted `done` crashed: mark its slots done so
/// the run can end, and stop the others (the report would be partial).
fn reap_dead(plan: &Plan, board: &Board, children: &mut [Child]) {
    for (p, c) in children.iter_mut().enumerate() {
        if c.reaped {
            continue;
        }
        match waitpid(c.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(_) => {
                c.reaped = true;
                let slots = &board.slots[p * plan.threads as usize..][..plan.threads as usize];
                if slots.iter().any(|s| s.done.load(Relaxed) == 0) {
                    board.stop();
                    for s in slots {
                        s.done.store(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// The one-line status, rewritten in place once a second — only when stdout is a terminal,
/// and only after the run's first 2 seconds.
struct Status {
    on: bool,
    printed: bool,
    last_at: u64,
    last_messages: u64,
    total: u64,
    unit: &'static str,
}

impl Status {
    fn new(plan: &Plan) -> Status {
        Status {
            on: std::io::stdout().is_terminal() && !plan.json,
            printed: false,
            last_at: 0,
            last_messages: 0,
            total: plan.connections,
            unit: match plan.proto {
                Proto::Echo => "msg",
                Proto::Http => "req",
            },
        }
        .with_run_length(plan)
    }

    /// Runs known to last under 2 s never show it.
    fn with_run_length(mut self, plan: &Plan) -> Status {
        if let Until::Duration(d) = plan.until
            && d + plan.hold.unwrap_or_default() < Duration::from_secs(2)
        {
            self.on = false;
        }
        self
    }

    fn tick(&mut self, board: &Board) {
        let now = clock::now();
        if !self.on || now < 2 * clock::NS_PER_SEC || now < self.last_at + clock::NS_PER_SEC {
            return;
        }
        let messages = board.sum(|s| &s.messages);
        let rate = (messages - self.last_messages.min(messages)) as f64
            / clock::secs(now - self.last_at.min(now)).max(1e-9);
        let what = match board.go() {
            None => format!(
                "connecting: {} of {} established",
                board.sum(|s| &s.established),
                self.total
            ),
            Some(_) => format!(
                "{} established  {:.0} {}/s  {} {}s  {} errors",
                board.sum(|s| &s.established),
                rate,
                self.unit,
                messages,
                self.unit,
                board.sum(|s| &s.errors),
            ),
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K[{:>4.0} s] {what}", clock::secs(now));
        let _ = out.flush();
        self.printed = true;
        self.last_at = now;
        self.last_messages = messages;
    }

    fn clear(&self) {
        if self.printed {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}
