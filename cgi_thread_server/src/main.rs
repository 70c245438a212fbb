//! # Lesson 3 — a thread per connection
//!
//! The main thread accepts; every connection gets a new thread of its own, which serves it with
//! lesson 1's blocking loop and ends when the connection ends. A thread is lesson 2's process
//! without the fork: the same independent flow of control that may block as long as it likes,
//! but in the same address space, so creating one costs a clone(2) and a stack mapping instead
//! of a copy of the page tables, and nothing has to be shared through special memory. There is
//! no pool and no limit: the server holds as many clients at once as the system lets it create
//! threads.
//!
//! ```text
//!   kernel                        main thread                       one thread per connection
//!  [ accept queue: c4 c5 … ]     ┌──────────────────────────┐      ┌► conn: serve(c1) … exit
//!            │                   │ loop {                   │      │
//!            └─── accept4(2) ───►│   conn = accept4()       │──────┼► conn: serve(c2) … exit
//!                                │   spawn(move || serve)   │      │
//!                                │ }                        │      └► conn: serve(c3) … exit
//!                                └──────────────────────────┘
//! ```
//!
//! ## What to notice
//! - `std::thread::Builder::spawn` returns an error when the system refuses a thread;
//!   `std::thread::spawn` would panic. A refused thread costs one connection, never the server.
//! - The stack is 64 KiB, not std's 2 MiB (`--stack-size`): 10,000 threads reserve 640 MiB of
//!   address space instead of 20 GiB. Only the pages a thread touches become resident.
//! - The connection (`OwnedFd`) and its place in the counts (`LiveConn`) *move* into the thread,
//!   so the thread's end closes the one and uncounts the other — no bookkeeping in `main`.
//! - `--idle-timeout` now protects a thread rather than the whole server: a silent client holds
//!   a thread and its stack until SO_RCVTIMEO fires.
//! - "Unbounded" still has a ceiling: each thread costs four memory mappings, and a thread that
//!   cannot map its signal stack makes Rust's runtime abort the process. `thread_ceiling` stops
//!   accepting short of `vm.max_map_count`, so clients wait instead of the server dying.
//!
//! ## Where it breaks
//! Every connection pays for a thread's creation and destruction (with `Connection: close`, every
//! *request* does), and only the system bounds the number of threads: a flood of clients meets
//! `vm.max_map_count` (65,530 mappings: about 14,000 threads after the reserve),
//! `kernel.pid_max` (32,768 ids here, shared by every thread on the machine) and
//! `RLIMIT_NOFILE` before it meets the CPU. Lesson 5 (`threadpool_accept_main`) creates a fixed
//! number of threads, once.
//!
//! ## Try it
//! ```text
//! cargo run --release -p cgi_thread_server
//! wrk -t2 -c1000 -d10s http://127.0.0.1:8080/          # 1,000 keep-alive clients, 1,000 threads
//! top -H -p $(pgrep cgi_thread_serv)                   # one "conn" thread per connection
//! ```
//!
//! ## Compare with
//! UNP's `serv06.c`; the Rust Book's final project before its thread pool (a thread spawned per
//! connection); lesson 2, `cgi_process_server` (a process each); lesson 5,
//! `threadpool_accept_main`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use clap::Parser;
use nix::sys::socket::{SockFlag, accept4};
use server_common::cli::{CommonArgs, StackArgs};
use server_common::net::{self, Blocking};
use server_common::proto::{Config, Session};
use server_common::stats::{LiveConn, Stats};
use server_common::{SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 3, a thread per connection: the main thread accepts, and every connection gets a new
/// thread that serves it to the end and exits. No pool, no limit: as many clients at once as the
/// system lets the server create threads, each with a `--stack-size` stack.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    stack: StackArgs,
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// A blocking listener, exactly lesson 1's (socket, SO_REUSEADDR, bind, listen: see there). Only
/// the main thread ever accepts on it; the connection threads never touch it.
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned by run
    net::announce(NAME, &listener)?;
    Ok(listener)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// Connection threads spawned and not yet finished, the most at once, and the spawns the system
/// refused. Plain statics: every thread shares this address space (a forked child's writes, in
/// lesson 2, would land in its own copy).
static THREADS_LIVE: AtomicU64 = AtomicU64::new(0);
static THREADS_PEAK: AtomicU64 = AtomicU64::new(0);
static SPAWN_FAILED: AtomicU64 = AtomicU64::new(0);

/// The most connection threads this process may hold. Each thread costs four memory mappings —
/// its stack and guard page, and the signal stack and guard page Rust's runtime gives every
/// thread to report a stack overflow — and Linux allows `vm.max_map_count` (65,530 by default)
/// per process. A thread that gets its stack but not its signal stack makes Rust's runtime
/// *abort the process*, so the server must stop short of the limit by itself. The reserve
/// leaves room for everything else: binary, libraries, malloc's arenas, the stacks glibc caches
/// for reuse, and threads that have finished counting but not yet unmapped.
fn thread_ceiling() -> u64 {
    const MAPS_PER_THREAD: u64 = 4;
    const RESERVE: u64 = 8192;
    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530); // no /proc: assume Linux's default
    (max_map_count.saturating_sub(RESERVE) / MAPS_PER_THREAD).max(1)
}

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None); // no workers: every connection counts in slot 0
    let ceiling = thread_ceiling();
    // First, while this is the only thread: the stop signals get blocked here, and every thread
    // spawned below inherits that mask, so no connection thread is ever interrupted by them.
    stop_on_signal(stats, ceiling, args.stack.stack_size)?;
    let listener = listen(&args.common)?;
    let config = args.common.session_config();
    let idle = args.common.idle_timeout();
    // The address space can't hold a stack anywhere near usize::MAX, so saturating is honest:
    // such a value fails in the spawn below, which is handled there.
    let stack = usize::try_from(args.stack.stack_size).unwrap_or(usize::MAX);

    loop {
        // At the ceiling, don't accept at all: new clients wait in the kernel's accept queue
        // (their handshake done, their requests buffered) until a connection thread finishes.
        if THREADS_LIVE.load(Relaxed) >= ceiling {
            warn_throttled!("{NAME}: {ceiling} connection threads, the ceiling; new clients wait");
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // accept4(2), see lesson 1.
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // Retry at once, or back off when out of descriptors (lesson 1's policy). EMFILE
            // comes sooner here, as each live thread holds one: the client stays queued until a
            // connection thread ends and frees its descriptor.
            Err(e) => {
                simple_server::after_accept_error(NAME, e); // (lesson 1)
                continue;
            }
        };
        // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns; OwnedFd takes
        // sole ownership and closes it exactly once, when dropped.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned here, moved into the thread
        let live = stats.accepted(0); // counted now; "live" until the thread drops it
        // Counted before the spawn, so the ceiling check above also sees threads still starting.
        let threads = THREADS_LIVE.fetch_add(1, Relaxed) + 1;
        THREADS_PEAK.fetch_max(threads, Relaxed);

        // THE MODEL: a new thread for this one connection. pthread_create(3) underneath: mmap(2)
        // a stack of `stack` bytes plus a guard page, then clone(2). The closure takes `conn` and
        // `live` with it; from here on the main thread never sees this connection again.
        let spawned = std::thread::Builder::new()
            .name("conn".into()) // what `top -H` and `ps -L` show
            .stack_size(stack)
            .spawn(move || handle_conn(conn, live, config, idle, stats));
        match spawned {
            // Dropping the JoinHandle detaches the thread: nobody joins it, it cleans up itself.
            Ok(_detached) => {}
            // pthread_create failed, nearly always EAGAIN: a thread limit (RLIMIT_NPROC,
            // kernel.threads-max, pid_max — shared by every thread on the machine), or no memory
            // for another stack. std dropped the closure, and with it `live` and `conn`
            // (close(2): this client's connection ends unanswered — with a reset if its request
            // had arrived). Retrying at once would only meet the same limit, so back off
            // briefly: the next clients wait in the accept queue until some thread has ended.
            Err(e) => {
                THREADS_LIVE.fetch_sub(1, Relaxed);
                SPAWN_FAILED.fetch_add(1, Relaxed);
                warn_throttled!("{NAME}: cannot spawn a connection thread: {e}; closed that one");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// The whole life of a connection thread: serve one connection to its end, then exit. Every
/// failure ends this connection (and thread) only.
fn handle_conn(
    conn: OwnedFd,
    live: LiveConn,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
) {
    // Idle timeout, then recv → session → send until the end. Even the socket options are set
    // here, not in the accept loop: the main thread is the one serial part of this model, so it
    // does as little as possible.
    let session = Session::new(config, stats.worker(0));
    simple_server::handle_conn(NAME, conn, idle, session); // (lesson 1) conn: moved, closed inside
    drop(live); // the connection is closed: no longer live
    THREADS_LIVE.fetch_sub(1, Relaxed);
} // the thread ends: the runtime unmaps its signal stack, glibc unmaps (or caches) its stack

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, as in lesson 1: the shared signal thread prints the
/// summary and ends the process, so connection threads blocked in recv on idle clients need no
/// "stop" flag. This model adds one line: its threads, which are its cost.
fn stop_on_signal(stats: &'static Stats, ceiling: u64, stack: u64) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, move || {
        let line = format!(
            "peak {}, live {}, failed spawns {}, ceiling {ceiling}, stack {} KiB",
            THREADS_PEAK.load(Relaxed),
            THREADS_LIVE.load(Relaxed),
            SPAWN_FAILED.load(Relaxed),
            stack / 1024
        );
        vec![("connection threads".into(), line)]
    })
}
