//! # Lesson 2 — a process per connection
//!
//! The parent accepts; every connection gets a child process of its own, made with fork(2), which
//! serves it with lesson 1's blocking loop and exits when the connection ends. A client that keeps
//! its connection open holds one child and nobody else. This is inetd, the first CGI web servers
//! and UNP's `serv01`: isolation for free (a crashing child loses one connection), paid for with a
//! fork per connection and a process per client.
//!
//! ```text
//!   kernel                         parent (main thread)                  one child per connection
//!  [ accept queue: c4 c5 … ]     ┌─────────────────────────────┐        ┌► serve(c1) … _exit
//!            │                   │ loop {                      │ fork(2)│
//!            └─── accept4(2) ───►│   conn = accept4()          │────────┼► serve(c2) … _exit
//!                                │   fork(); close(conn)       │        │
//!                                │ }                           │        └► serve(c3) … _exit
//!                                └─────────────────────────────┘             │ exits
//!                                  "reaper" thread: sigwait(SIGCHLD) → waitpid(WNOHANG) ◄┘
//! ```
//!
//! ## What to notice
//! - After `fork` there are two copies of every descriptor: the parent closes its copy of the
//!   connection at once, the child its copy of the listener.
//! - A child that has exited stays a zombie until its parent waits for it. One SIGCHLD may stand
//!   for many exits (signals do not queue), so the reaper calls `waitpid(WNOHANG)` until none is
//!   left — on a thread of its own with sigwait(2), not in a signal handler.
//! - `--max-children N`: at the cap the parent stops calling `accept`; new clients complete their
//!   handshake in the kernel and wait in the accept queue until a child exits.
//! - On SIGINT/SIGTERM the parent stops every child and reaps it *before* the summary, so the
//!   summary's "children" CPU seconds (RUSAGE_CHILDREN) include them.
//!
//! ## Where it breaks
//! Every connection pays for a fork — page tables and descriptor table copied, then every page
//! either side writes copied again (copy-on-write) — and with `Connection: close` every request
//! does. Nothing bounds the number of processes but `--max-children` and the system's limits.
//! Lesson 3 (`cgi_thread_server`) gives each connection a thread; lesson 4 (`prefork_server`)
//! forks a fixed set of processes once.
//!
//! ## Try it
//! ```text
//! cargo run --release -p cgi_process_server
//! wrk -t2 -c100 -d5s http://127.0.0.1:8080/          # 100 keep-alive clients, 100 children
//! ps --forest -o pid,ppid,nlwp,stat,rss,cmd -C cgi_process_server   # parent: 3 threads
//! ```
//!
//! ## Compare with
//! UNP's `serv01.c`; inetd(8), which forks (and execs) a server per connection the same way;
//! lesson 3, `cgi_thread_server` (a thread each); lesson 4, `prefork_server`.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clap::Parser;
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::socket::{SockFlag, accept4};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, getppid};
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::proto::Session;
use server_common::stats::{LiveConn, Stats};
use server_common::{Context, SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 2, a process per connection: the parent accepts each connection and fork(2)s a child
/// that serves it to the end and exits, as inetd and CGI servers did. Unbounded unless
/// `--max-children` caps it; at the cap new clients wait in the kernel's accept queue.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Most children serving at once; at the cap the parent stops accepting until one exits
    /// (default: no cap).
    #[arg(long = "max-children", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_children: Option<u32>,
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// A blocking listener, exactly lesson 1's (socket, SO_REUSEADDR, bind, listen: see there). Only
/// the parent accepts on it; each child closes its copy first thing.
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned by run
    net::announce(NAME, &listener)?;
    Ok(listener)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// The children serving now, each holding its connection's place in the live count: the main
/// thread adds a child after forking it, the reaper removes it (dropping its `LiveConn`) once
/// waitpid has collected it. A pid in here is not reaped yet, so not reused: `kill` is safe.
struct Children {
    running: BTreeMap<Pid, LiveConn>,
    stopping: bool, // set by the signal thread: fork no more
}

static CHILDREN: Mutex<Children> = Mutex::new(Children {
    running: BTreeMap::new(),
    stopping: false,
});
/// Notified by the reaper whenever children were removed (a slot under the cap is free).
static CHILD_EXITED: Condvar = Condvar::new();

/// Poisoning only says a thread panicked while holding the lock; every update of the table is a
/// single insert or remove, so what it holds is still consistent.
fn children() -> MutexGuard<'static, Children> {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None); // MAP_SHARED: the children count into the parent's page
    // SIGCHLD is blocked first, while this is the only thread, so every thread inherits the
    // block: it then stays pending until the reaper's sigwait takes it, and no blocking call
    // anywhere is interrupted by it (no EINTR in accept4, no handler to write).
    SigSet::from(Signal::SIGCHLD)
        .thread_block()
        .context("cannot block SIGCHLD")?;
    stop_on_signal(stats)?;
    std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(64 * 1024) // it only waits and reaps
        .spawn(reap_forever)
        .context("cannot spawn the reaper thread")?;
    let listener = listen(&args.common)?;
    let cap = args.max_children.map_or(usize::MAX, |n| n as usize);
    let parent = getpid();

    loop {
        // At the cap, stop accepting until the reaper reports an exit. Meanwhile the kernel
        // completes new clients' handshakes and queues them (up to --backlog): they wait, they
        // are not refused. Only this thread adds children, so we stay under until our next fork.
        drop(
            CHILD_EXITED
                .wait_while(children(), |c| c.running.len() >= cap)
                .unwrap_or_else(PoisonError::into_inner),
        );

        // accept4(2), see lesson 1. EMFILE hardly happens here: the parent closes every
        // connection right after the fork.
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // Retry at once, or back off when out of descriptors (lesson 1's policy).
            Err(e) => {
                simple_server::after_accept_error(NAME, e); // (lesson 1)
                continue;
            }
        };
        // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns; OwnedFd takes
        // sole ownership and closes it exactly once, when dropped.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned here until the fork

        // The table stays locked from before the fork until the child is in it: the reaper
        // cannot remove a child that is not there yet (a child may exit before fork returns
        // here), and the signal thread cannot miss a child forked while it stops the others.
        let mut table = children();
        if table.stopping {
            continue; // the server is stopping: conn dropped (close(2)), nobody serves it
        }
        let live = stats.accepted(0); // counted now; the table owns it once the child exists

        // THE MODEL. fork(2): the kernel copies this process — memory copy-on-write, descriptor
        // table outright — and both return from the call: the child with `Child`, we with a pid.
        //
        // SAFETY: only this thread is copied into the child, so the child must not need a lock
        // another thread held at this instant. The reaper and the signal thread are parked in
        // sigwait(2) or waiting for the table lock *we* hold (the reaper works only under it;
        // the signal thread writes the summary only after setting `stopping`, and then we never
        // fork), so neither holds a lock of std, stdio or malloc — and glibc resets malloc's
        // locks in the child anyway, so the child may allocate. The child runs only this
        // thread's code and ends in _exit(2), never returning into the parent's frames.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // The parent's table owns this connection's count: the child's copy of the
                // guard must never run its Drop, or the count would fall twice.
                std::mem::forget(live);
                drop(listener); // close(2) the child's copy: only the parent accepts
                handle_conn(conn, parent, &args.common, stats)
            }
            Ok(ForkResult::Parent { child }) => {
                table.running.insert(child, live);
                drop(table);
                // Without this close(2) the parent would leak a descriptor per connection, and
                // the client would never see EOF: a socket closes when its last copy does.
                drop(conn); // the parent's copy closed: the child alone owns the connection
            }
            // EAGAIN: a process limit (RLIMIT_NPROC, pid_max, the cgroup's pids.max); ENOMEM.
            // The connection is closed unserved and the parent pauses, as for EMFILE in
            // lesson 1: retrying at once would only hit the same limit again.
            Err(e) => {
                drop((table, conn, live)); // close(2): the client sees its connection end
                warn_throttled!("{NAME}: fork: {e}; closed that connection unserved");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Collects every child that exits, so that no zombie ever stays — also while the main thread
/// sleeps in accept4 and no client comes. A zombie is a dead process kept only for its exit
/// status and resource usage; wait(2) hands both to the parent (RUSAGE_CHILDREN adds them up).
fn reap_forever() {
    let sigchld = SigSet::from(Signal::SIGCHLD);
    loop {
        // sigwait(2): sleep until SIGCHLD is pending, and take it. (It fails only for an
        // invalid set, and ours is fixed: reaping once too often is harmless anyway.)
        let _ = sigchld.wait();
        let mut table = children();
        // waitpid(2) with WNOHANG: collect one exited child, or return StillAlive at once if
        // none has exited. Loop: ten children exiting together may raise a single SIGCHLD.
        // (Err is ECHILD, no child at all: WNOHANG never sleeps, so never EINTR.)
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let Some(pid) = status.pid() else { break }; // StillAlive: none left to reap
            if !matches!(status, WaitStatus::Exited(_, 0)) && !table.stopping {
                // A crash (a panic, SIGSEGV, an OOM kill) costs one connection only.
                warn_throttled!("{NAME}: a child ended abnormally: {status:?}");
            }
            table.running.remove(&pid); // drops its LiveConn: the connection is over
        }
        drop(table);
        CHILD_EXITED.notify_all();
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// The whole life of a child: serve one connection, then _exit. Never returns.
fn handle_conn(conn: OwnedFd, parent: Pid, args: &CommonArgs, stats: &'static Stats) -> ! {
    // SIGINT/SIGTERM back to their default action (they are blocked and waited for only in the
    // parent), so the parent's SIGTERM at shutdown — or Ctrl-C on the terminal — ends us.
    // prctl(2) PR_SET_PDEATHSIG: and if the parent dies without stopping us (kill -9), the
    // kernel sends SIGTERM. It fires when the *thread* that forked us ends; that is the parent's
    // main thread, which ends only with the whole process. A parent that died before the prctl
    // took effect is caught by getppid(2): we would have been re-parented already.
    if shutdown::default_signals_in_child().is_err()
        || prctl::set_pdeathsig(Signal::SIGTERM).is_err()
        || getppid() != parent
    {
        // SAFETY: _exit(2) ends this process at once, running no destructors of the parent's
        // state copied into us; nothing needs flushing.
        unsafe { libc::_exit(1) }
    }

    // Idle timeout (a silent client holds this child for --idle-timeout at most), then recv →
    // session → send until the end. The session's counters are in the MAP_SHARED page, so the
    // parent sees every request this child serves.
    let session = Session::new(args.session_config(), stats.worker(0));
    simple_server::handle_conn(NAME, conn, args.idle_timeout(), session); // (lesson 1) closes conn
    // SAFETY: as above. The connection is closed; exiting makes the parent's reaper collect us.
    unsafe { libc::_exit(0) }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → stop the children → reap them → summary → exit 0. The shared signal thread
/// (lesson 1) runs the closure first. Children blocked in recv on idle clients would otherwise
/// keep serving after the parent is gone, and RUSAGE_CHILDREN counts only reaped children.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, || {
        let mut table = children();
        table.stopping = true; // under the lock: the main thread forks no child after this
        let stopped = table.running.len();
        // kill(2) each child, then let the reaper collect them. SIGTERM ends a child at once
        // (default action); SIGKILL is the bound if one somehow did not end.
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            for &pid in table.running.keys() {
                let _ = kill(pid, sig); // cannot fail: pid is our child, not yet reaped
            }
            table = CHILD_EXITED
                .wait_timeout_while(table, Duration::from_millis(700), |c| !c.running.is_empty())
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if table.running.is_empty() {
                break;
            }
        }
        vec![("children stopped at shutdown".into(), stopped.to_string())]
    })
}
