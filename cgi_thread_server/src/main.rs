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
//! - The thread is made with pthread_create(3) itself, as in the C original. `std::thread`
//!   would do the same underneath, plus a handle, a result slot and the boxed closure on the
//!   heap and a signal stack for every thread; here a connection waiting in recv costs the two
//!   stack pages it touched and the few hundred bytes glibc allocates per thread, nothing else
//!   (the README shows where every page goes). The price: the thread is not a Rust `Thread`, so
//!   the entry function catches panics itself.
//! - pthread_create returns an error when the system refuses a thread. A refused thread costs
//!   one connection, never the server.
//! - The stack is 64 KiB, not the 8 MiB glibc would take from `ulimit -s` (`--stack-size`):
//!   10,000 threads reserve 640 MiB of address space instead of 80 GiB. Only the pages a thread
//!   touches become resident.
//! - The descriptor is the thread's one argument: the thread owns it, and its end closes it and
//!   uncounts it — no bookkeeping in `main`.
//! - `--idle-timeout` now protects a thread rather than the whole server: a silent client holds
//!   a thread and its stack until SO_RCVTIMEO fires.
//! - "Unbounded" still has a ceiling: `thread_ceiling` stops accepting short of the system's
//!   limits (memory mappings, descriptors), so clients wait in the queue instead of being
//!   refused.
//!
//! ## Where it breaks
//! Every connection pays for a thread's creation and destruction (with `Connection: close`, every
//! *request* does), and only the system bounds the number of threads: a flood of clients meets
//! `RLIMIT_NOFILE` (a descriptor per thread), `vm.max_map_count` (65,530 mappings: about 28,000
//! threads after the reserve) and `kernel.pid_max` (thread ids, shared by every thread on the
//! machine) before it meets the CPU. Lesson 5 (`threadpool_accept_main`) creates a fixed
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
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::socket::{SockFlag, accept4};
use server_common::cli::{CommonArgs, StackArgs};
use server_common::error::Context;
use server_common::net::{self, Blocking};
use server_common::proto::{Config, Session};
use server_common::stats::Stats;
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

/// The most connection threads this process may hold: the smaller of two system limits, so the
/// server stops accepting before it meets either. Each thread costs two memory mappings (its
/// stack, and the guard page glibc protects below it) of the `vm.max_map_count` (65,530 by
/// default) a process may have, and one descriptor of its `RLIMIT_NOFILE`. The reserves leave
/// room for everything else: binary, libraries, malloc's arenas, the stacks glibc caches for
/// reuse; the listener, the standard streams, threads that have finished counting but not yet
/// closed.
fn thread_ceiling() -> u64 {
    const MAPS_PER_THREAD: u64 = 2;
    const MAP_RESERVE: u64 = 8192;
    const FD_RESERVE: u64 = 32;
    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530); // no /proc: assume Linux's default
    let by_maps = max_map_count.saturating_sub(MAP_RESERVE) / MAPS_PER_THREAD;
    let by_fds = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    by_maps.min(by_fds.saturating_sub(FD_RESERVE)).max(1)
}

/// What every connection thread needs besides its socket, set once before the first accept. A
/// thread made by pthread_create(3) gets one pointer-sized argument, and the descriptor is
/// passed in it: nothing is allocated per connection on the way into the thread.
struct Shared {
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
}
static SHARED: OnceLock<Shared> = OnceLock::new();

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None); // no workers: every connection counts in slot 0
    let ceiling = thread_ceiling();
    // First, while this is the only thread: the stop signals get blocked here, and every thread
    // spawned below inherits that mask, so no connection thread is ever interrupted by them.
    stop_on_signal(stats, ceiling, args.stack.stack_size)?;
    let listener = listen(&args.common)?;
    let shared = Shared {
        config: args.common.session_config(),
        idle: args.common.idle_timeout(),
        stats,
    };
    let _ = SHARED.set(shared); // the only set: run is called once
    let attr = ThreadAttr::new(args.stack.stack_size)?;

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
            // Retry at once, or back off when out of descriptors (lesson 1's policy).
            Err(e) => {
                simple_server::after_accept_error(NAME, e); // (lesson 1)
                continue;
            }
        };
        // Counted before the spawn, so the ceiling check above also sees threads still starting.
        let threads = THREADS_LIVE.fetch_add(1, Relaxed) + 1;
        THREADS_PEAK.fetch_max(threads, Relaxed);

        // THE MODEL: a new thread for this one connection. pthread_create(3): mmap(2) a stack of
        // `--stack-size` bytes with a guard page below it, put the thread's descriptor and TLS at
        // its top, then clone(2). From here on the main thread never sees this connection again.
        let mut tid: libc::pthread_t = 0;
        let arg = fd as usize as *mut libc::c_void; // the descriptor itself, not a pointer
        // SAFETY: `tid` and `attr` are valid for the call; `conn_thread` is an extern "C" fn of
        // the signature pthread_create wants, and it takes ownership of `fd` only if the thread
        // was created (rc 0); otherwise nothing else refers to `fd` and we close it below.
        let rc = unsafe { libc::pthread_create(&mut tid, attr.as_ptr(), conn_thread, arg) };
        if rc != 0 {
            // Nearly always EAGAIN: a thread limit (kernel.threads-max, pid_max — shared by every
            // thread on the machine) or no memory for another stack. This client's connection
            // ends unanswered (a reset if its request had arrived); retrying at once would only
            // meet the same limit, so back off: the next clients wait in the accept queue.
            // SAFETY: the thread was not created, so `fd` is still ours alone: close it once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            drop(stats.accepted(0)); // accepted, and closed at once
            THREADS_LIVE.fetch_sub(1, Relaxed);
            SPAWN_FAILED.fetch_add(1, Relaxed);
            let e = Errno::from_raw(rc);
            warn_throttled!("{NAME}: cannot create a connection thread: {e}; closed that one");
            std::thread::sleep(Duration::from_millis(10));
        } // created detached: nobody joins it, its stack goes back to glibc when it returns
    }
}

/// The attributes every connection thread is created with: `--stack-size`, detached.
struct ThreadAttr(libc::pthread_attr_t);

impl ThreadAttr {
    fn new(stack: u64) -> Result<ThreadAttr, SetupError> {
        // SAFETY: pthread_attr_init initialises the zeroed struct before any other use; the
        // setters below take a pointer to that initialised struct.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            let mut rc = libc::pthread_attr_init(&mut attr);
            // Detached: the thread frees its own stack when it ends, no pthread_join(3) needed.
            if rc == 0 {
                rc = libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            }
            // glibc rounds the size up to whole pages; EINVAL below PTHREAD_STACK_MIN (the
            // argument parser already refuses anything below `MIN_STACK`).
            if rc == 0 {
                let size = usize::try_from(stack).unwrap_or(usize::MAX);
                rc = libc::pthread_attr_setstacksize(&mut attr, size);
            }
            match rc {
                0 => Ok(ThreadAttr(attr)),
                rc => Err(Errno::from_raw(rc)).context("pthread_attr_setstacksize (--stack-size)"),
            }
        }
    }

    fn as_ptr(&self) -> *const libc::pthread_attr_t {
        &self.0
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// The whole life of a connection thread: serve one connection to its end, then return (which
/// ends the thread). `arg` is the accepted descriptor. No `std::thread` here on purpose: its
/// spawn allocates a handle, a result slot and the boxed closure for every thread, and the
/// runtime gives each a signal stack (two more mappings); this thread allocates nothing while
/// it waits, which is what makes it as cheap as the C original (README: where the pages go).
extern "C" fn conn_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `run` passed a descriptor accept4 just returned and never touches it again: this
    // thread owns it, and OwnedFd closes it exactly once, when `handle_conn` drops it.
    let conn = unsafe { OwnedFd::from_raw_fd(arg as usize as i32) };
    // A panic must not unwind out of an extern "C" function (the process would abort): catch it
    // here, so a bug hit by one connection ends that connection only. The default hook prints it.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handle_conn(conn)));
    THREADS_LIVE.fetch_sub(1, Relaxed);
    std::ptr::null_mut()
}

fn handle_conn(conn: OwnedFd) {
    // Set before the first accept, so always there; were it not, this connection just closes.
    let Some(sh) = SHARED.get() else { return };
    let live = sh.stats.accepted(0); // "live" until this thread drops it
    // Idle timeout, then recv → session → send until the end. Even the socket options are set
    // here, not in the accept loop: the main thread is the one serial part of this model, so it
    // does as little as possible.
    let session = Session::new(sh.config, sh.stats.worker(0));
    simple_server::handle_conn(NAME, conn, sh.idle, session); // (lesson 1) conn: closed inside
    drop(live); // the connection is closed: no longer live
}

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
