//! # Lesson 6 — every worker accepts
//!
//! Lesson 5's main thread accepted every connection and queued it for a worker. Here the main
//! thread starts `--workers N` threads and steps aside; each worker runs lesson 1's whole loop —
//! accept a connection, serve it to its end, accept the next — on the *same* listening socket.
//! N threads sleep in accept4(2) at once, and the kernel gives each new connection to one of
//! them. It is lesson 4's prefork with threads instead of processes.
//!
//! ```text
//!                                     ┌─ worker 0: loop { accept4 → serve(c1) … }
//!   kernel                            │
//!  [ accept queue: c4 c5 … ] ─────────┼─ worker 1: loop { accept4 → serve(c2) … }
//!   the one queue, bounded by         │
//!   --backlog; full: SYNs dropped     └─ worker 2: loop { accept4 → serve(c3) … }
//! ```
//!
//! ## What to notice
//! - **No queue of our own.** The kernel's accept queue *is* the hand-off: accept4 moves a
//!   connection from it straight to the thread that will serve it. No channel, no second
//!   thread to wake, no mutex — and the queue keeps its bound: with every worker busy, new
//!   clients wait in the kernel's queue (`ss -ltn` Recv-Q), and when that is full the kernel
//!   stops completing handshakes, so clients feel the back-pressure lesson 5 swallowed.
//! - **No thundering herd.** A blocking accept sleeps on the listener as an *exclusive* waiter:
//!   one new connection wakes one sleeping worker, the one that has waited longest — not all N.
//!   (The herd belongs to select/poll/epoll on a shared listener: lesson 11.)
//! - **SO_REUSEPORT would do nothing here.** It lets *several sockets* bind one port, each with
//!   its own accept queue, and the kernel spreads connections across the sockets (lesson 11).
//!   On a single socket shared by threads there is one queue whatever the option says: set on
//!   the one listener, it changes nothing.
//!
//! ## Where it breaks
//! Concurrency is still N: a keep-alive or slow client holds its worker, and client N+1 waits in
//! the accept queue until one leaves or idles out (`--idle-timeout`). A thread that blocks can
//! serve only one connection. Lesson 7 (`nonblocking_busy_server`) stops blocking.
//!
//! ## Try it
//! ```text
//! cargo run --release -p threadpool_accept_worker -- --workers 4
//! wrk -t2 -c100 -d5s -H 'Connection: close' http://127.0.0.1:8080/   # then Ctrl-C:
//!                                                       # "accepts per worker" in the summary
//! ```
//!
//! ## Compare with
//! UNP's `serv07.c` (prethreaded, each thread accepts); lesson 4, `prefork_server` (the same
//! with processes); lesson 5, `threadpool_accept_main`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::socket::{SockFlag, accept4};
use server_common::cli::{CommonArgs, StackArgs, WorkerArgs};
use server_common::net::{self, Blocking};
use server_common::proto::{Config, Session};
use server_common::stats::{Counters, Stats};
use server_common::{Context, SetupError, shutdown};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 6, every worker accepts: `--workers` threads each block in accept on the one shared
/// listener and serve the connection they get to its end. The kernel's accept queue is the only
/// queue; there is no hand-off between threads.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    workers: WorkerArgs,
    #[command(flatten)]
    stack: StackArgs,
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// One blocking listener, as in lesson 1, for all the workers. No SO_REUSEPORT: with one socket
/// it changes nothing (see the header); its use is one socket *per* worker, in lesson 11.
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned by run
    net::announce(NAME, &listener)?;
    Ok(listener)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    let workers = args.workers.workers as usize;
    let stats = Stats::new_shared(Some(workers));
    // First, while this is the only thread: the workers inherit the blocked SIGINT/SIGTERM.
    stop_on_signal(stats)?;
    let listener = listen(&args.common)?;
    // Every worker borrows the listener for the rest of the process's life, so give it that
    // life: leaked, it is closed by the process's exit, never by a thread (listener: the process).
    let listener: &'static OwnedFd = Box::leak(Box::new(listener));
    let (config, idle) = (args.common.session_config(), args.common.idle_timeout());
    let stack = usize::try_from(args.stack.stack_size).unwrap_or(usize::MAX);

    // THE MODEL: N threads, each its own accept loop. A thread the system refuses at start-up
    // is a setup error (exit 1), not something to limp on without.
    for i in 0..workers {
        std::thread::Builder::new()
            .name(format!("worker-{i}")) // what `top -H` and `ps -L` show
            .stack_size(stack)
            .spawn(move || worker(i, listener, config, idle, stats))
            .context(format!("cannot spawn worker thread {i} of {workers}"))?;
        // The JoinHandle is dropped: a worker never returns, so there is nothing to join.
    }
    // The main thread has no part left in the model: the kernel hands out connections and the
    // signal thread ends the process. It sleeps for good (park may wake spuriously: loop).
    loop {
        std::thread::park();
    }
}

/// One worker: lesson 1's accept-and-serve loop, run by N threads on one listener at once.
fn worker(
    i: usize,
    listener: &OwnedFd,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
) {
    loop {
        // accept4(2), see lesson 1. Several threads may sleep here: the kernel wakes one per
        // connection.
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // Retry at once, or back off when out of descriptors (lesson 1's policy). An error
            // is this worker's moment only: EMFILE backs off this worker while the others carry
            // on, and every worker holds at most one connection's descriptor.
            Err(e) => {
                simple_server::after_accept_error(NAME, e); // (lesson 1)
                continue;
            }
        };
        // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns; OwnedFd takes
        // sole ownership and closes it exactly once, when dropped.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned by this worker
        let live = stats.accepted(i); // this worker's accept count; live until dropped
        handle_conn(conn, config, idle, stats.worker(i)); // conn: moved, closed inside
        drop(live);
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Serves one connection on the worker that accepted it: no other thread ever sees it. While
/// this runs, this worker is out of accept — one fewer for the kernel to hand connections to.
fn handle_conn(conn: OwnedFd, config: Config, idle: Option<Duration>, counters: &'static Counters) {
    // Idle timeout (without it, N silent clients would keep all N workers out of accept
    // forever), then recv → session → send until the end; requests count into this worker's slot.
    let session = Session::new(config, counters);
    simple_server::handle_conn(NAME, conn, idle, session); // (lesson 1) conn: moved, closed inside
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, as in lesson 1. The summary's `accepts per worker` is
/// this model's own line: each worker counts what it accepted, so it shows how the kernel
/// spread the connections over the sleeping workers.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
