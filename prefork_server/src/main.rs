//! # Lesson 4 — pre-forked workers blocking in accept
//!
//! The listener is made once; then `--workers N` processes are forked, and each of them loops
//! `accept` → serve → `accept` on its inherited copy of that one listener. Nobody forks per
//! connection any more: the fork of lesson 2 is paid N times at start-up. The parent becomes a
//! supervisor that serves nothing: it sleeps in sigwait(2), replaces a worker that dies, and on
//! SIGINT/SIGTERM stops them all and prints the summary. This is Apache's prefork MPM and UNP's
//! `serv02`: at most N connections are served at once, each by a process of its own. The model
//! has two roles, in two files: the workers here, the supervisor in `src/lib.rs` (lesson 11
//! runs its loop processes under it too).
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
//! - The supervisor (`src/lib.rs`) is single-threaded and has no signal handler: it blocks its
//!   three signals and takes them one at a time with sigwait(2). Reaping, respawning and
//!   stopping are ordinary code with no race against a handler.
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
//! UNP's `serv02.c`; Apache's prefork MPM (<https://httpd.apache.org/docs/2.4/mod/prefork.html>);
//! lesson 2, `cgi_process_server` (a fork per connection); lesson 6, `threadpool_accept_worker`
//! (the same model with threads); lesson 11, `multi_epoll_server --processes` (this supervisor).

use std::convert::Infallible;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::socket::{SockFlag, accept4};
use prefork_server::Supervisor;
use server_common::SetupError;
use server_common::cli::{CommonArgs, WorkerArgs};
use server_common::net::{self, Blocking};
use server_common::proto::{Config, Session};
use server_common::stats::{Counters, Stats};

const NAME: &str = env!("CARGO_PKG_NAME");

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
    workers: WorkerArgs,
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

fn run(args: Args) -> Result<(), SetupError> {
    let workers = args.workers.workers as usize;
    let stats = Stats::new_shared(Some(workers)); // MAP_SHARED: one slot of counters per worker
    // Before the start-up line and any fork: SIGCHLD, SIGINT and SIGTERM blocked, to be taken by
    // the supervisor's sigwait (src/lib.rs). Workers inherit the mask; the supervisor restores
    // their SIGINT/SIGTERM.
    let supervisor = Supervisor::new(NAME)?;
    let listener = listen(&args.common)?; // the supervisor's copy, open until it returns
    let (config, idle) = (args.common.session_config(), args.common.idle_timeout());

    // THE MODEL, the parent's half (src/lib.rs): fork `workers` processes, each running `worker`
    // below on its inherited copy of the listener; replace any that dies; on SIGINT/SIGTERM stop
    // and reap them all and print the summary, with this model's own line.
    supervisor.supervise(workers, stats, "workers respawned", |i| {
        worker(i, &listener, config, idle, stats)
    });
    Ok(()) // the summary is out: exit 0
}

/// The life of worker process `i`: accept → serve, forever, until a signal ends it (so it never
/// returns: no value of `Infallible` exists).
fn worker(
    i: usize,
    listener: &OwnedFd,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
) -> Infallible {
    loop {
        // THE MODEL: every idle worker sleeps right here, in accept4(2) on the same listener —
        // on one wait queue in the kernel. A new connection wakes one waiter, the oldest
        // (exclusive, FIFO wake-up), and only that worker returns with it. Nobody decides the
        // balance in user space.
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
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned here, moved to handle_conn
        let live = stats.accepted(i); // an atomic add in the shared page, seen by the supervisor
        // This worker is busy until the client leaves: --workers keep-alive clients hold them all.
        handle_conn(conn, config, idle, stats.worker(i));
        drop(live); // (a worker killed mid-connection never gets here: "live" stays 1 high)
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Serves one connection to its end, inside a worker. Every failure ends this connection only.
fn handle_conn(conn: OwnedFd, config: Config, idle: Option<Duration>, counters: &'static Counters) {
    // Idle timeout (without it, N silent clients would hold all N workers forever), then
    // recv → session → send until the end; requests count into this worker's slot.
    let session = Session::new(config, counters);
    simple_server::handle_conn(NAME, conn, idle, session); // (lesson 1) conn: moved, closed inside
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

// SIGINT/SIGTERM is taken by the supervisor's sigwait, not by lesson 1's signal thread: this
// process must stay single-threaded to fork safely (lesson 2, which forks from a parent with two
// more threads, has to argue why its fork is safe). `Supervisor::stop` (src/lib.rs) forwards
// the signal to every worker, reaps them all so RUSAGE_CHILDREN holds their CPU time, and prints
// the summary with `workers respawned`. No worker outlives the supervisor: SIGKILL after 1 s,
// and PR_SET_PDEATHSIG should the supervisor itself be killed.
