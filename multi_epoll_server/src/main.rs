//! # Lesson 11 — N epoll loops, each with its own SO_REUSEPORT listener
//!
//! Lesson 10's loop uses one core. Here it runs `--loops N` times, each loop owning all it
//! touches: a listener, an epoll instance, connections, buffers. The N listeners share one port
//! through `SO_REUSEPORT`, which makes them a group: the kernel hashes each new connection, by
//! its addresses and ports, to one listener's accept queue — the loops share no queue, lock or
//! wake-up. Threads of one process, or processes under a supervisor (`--processes`, lesson 4).
//!
//! ```text
//!     kernel: one port, a reuseport group      loops: threads, or processes (--processes)
//!  SYN ─► hash(4-tuple) ─┬─► listener 0 [queue] ─► loop 0: epoll 0 + its connections
//!    (picks a listener,  ├─► listener 1 [queue] ─► loop 1: epoll 1 + its connections
//!     blind to load)     └─► listener 2 [queue] ─► loop 2: epoll 2 + its connections
//!  each loop is lesson 10's `event_loop`, unchanged; a connection stays with its loop for life
//!  --processes: a supervisor (sigwait) holds every listener; forks, reaps, replaces the loops
//! ```
//!
//! ## What to notice
//! - No event loop in this file: `event_loop` is lesson 10's, from its crate (`epoll_et_server`
//!   in `Cargo.toml`), and drives lesson 7's connections. The model adds only "N times, each
//!   with its own listener".
//! - `SO_REUSEPORT` goes on before bind(2), on every listener. The first bind resolves port 0;
//!   the others bind the port it got.
//! - `--processes` runs the loops under lesson 4's supervisor (`prefork_server`'s library), not
//!   a second design: it keeps a copy of every listener, so a loop process that dies leaves its
//!   queue open for its replacement instead of resetting the clients waiting in it.
//!
//! ## Where it breaks
//! The hash is blind to load: a loop stalled by a slow request (`--delay-ms`) or holding the
//! busiest keep-alive clients keeps getting its share, and its queue waits while another loop
//! idles. Nothing moves work between loops; lesson 12 (`tokio_server`) steals it.
//!
//! ## Try it
//! ```text
//! cargo run --release -p multi_epoll_server -- --loops 2     # add --processes for processes
//! ss -ltnp 'sport = :8080'                     # two listening sockets, one port
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/   # then Ctrl-C: see "accepts per worker"
//! ```
//!
//! ## Compare with
//! nginx's `listen … reuseport`; lesson 6 (N threads, one shared listener); lesson 4 (the
//! supervisor); lesson 10 (the loop); the README (one shared queue, EPOLLEXCLUSIVE).

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

use clap::Parser;
use epoll_et_server::{event_loop, new_epoll}; // lesson 10: the loop
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::socket::{bind, setsockopt, socket, sockopt};
use nonblocking_busy_server::Conns; // lesson 7: the connection and its table
use prefork_server::Supervisor; // lesson 4: the supervisor of worker processes
use server_common::cli::CommonArgs;
use server_common::stats::{MAX_WORKERS, Stats};
use server_common::{Context, SetupError, net, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 11, N event loops: lesson 10's edge-triggered epoll loop runs `--loops` times, each
/// loop with its own epoll instance and its own SO_REUSEPORT listener on the same port, and the
/// kernel hashes each new connection to one of the listeners. Threads of one process by
/// default; `--processes` runs each loop in a process of its own under a supervisor.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Event loops, each with its own listener and epoll; the default is one per CPU.
    #[arg(long, visible_alias = "loops", value_name = "N", default_value_t = one_per_cpu(),
          value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    workers: u32,
    /// Run each loop in a process of its own (a descriptor table each), under a supervisor.
    #[arg(long)]
    processes: bool,
}

/// A loop never blocks (but for `--delay-ms`): one per CPU we may use (`available_parallelism`
/// honours affinity and cgroup quotas). More only take turns on the cores; fewer leave some idle.
fn one_per_cpu() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)) as u32
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// `n` non-blocking listeners on one address: lesson 1's four calls plus SO_REUSEPORT, each
/// time. All are bound before the start-up line, so the first client already meets the group.
fn listen(args: &CommonArgs, n: usize) -> Result<Vec<OwnedFd>, SetupError> {
    let family = if args.addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC; // lessons 7 and 1
    let mut addr = args.addr;
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let fd = socket(family, SockType::Stream, flags, None).context("cannot create a socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("cannot set SO_REUSEADDR")?;
        // SO_REUSEPORT (socket(7)): sockets that all set it before bind, under one user id, may
        // bind one address and port (else EADDRINUSE). TCP listeners so bound form a group; the
        // kernel picks the listener of each new connection by a hash of its 4-tuple.
        setsockopt(&fd, sockopt::ReusePort, &true).context("cannot set SO_REUSEPORT")?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .context(format!("cannot bind {addr}"))?;
        net::listen_backlog(&fd, args.backlog).context(format!("cannot listen on {addr}"))?;
        // Port 0 is resolved by the first bind; the others must join *that* port.
        addr = net::local_addr(&fd).context("cannot read the bound address")?;
        listeners.push(fd); // owned by the caller, one per loop
    }
    net::announce(NAME, &listeners[0])?; // all have one address; n >= 1 by clap's range
    Ok(listeners)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    // MAP_SHARED (lesson 4): loop i counts into slot i, from a thread or a forked process alike.
    let stats = Stats::new_shared(Some(args.workers as usize));
    let model = if args.processes { processes } else { threads };
    model(&args.common, args.workers as usize, stats)
}

/// N loops, one thread each, in one process: one descriptor table (20,000 here) for all.
fn threads(common: &CommonArgs, n: usize, stats: &'static Stats) -> Result<(), SetupError> {
    stop_on_signal(stats)?; // first, while this is the only thread (see lesson 6)
    for (i, listener) in listen(common, n)?.into_iter().enumerate() {
        let epoll = new_epoll(&listener)?; // lesson 10
        let conns = Conns::new(NAME, common, stats).for_worker(i);
        // THE MODEL: lesson 10's loop, once per listener. A loop that panicked (a bug) drops its
        // listener as it unwinds: closed, it leaves the group, and new clients go to the others.
        std::thread::Builder::new()
            .name(format!("loop-{i}")) // what `top -H` shows
            .spawn(move || event_loop(&listener, &epoll, conns)) // lesson 10; both: loop i's now
            .context(format!("cannot spawn loop thread {i} of {n}"))?;
    }
    loop {
        std::thread::park(); // nothing left to do here; the signal thread ends the process
    }
}

/// `--processes`: N loops, one process each (a descriptor table each), under lesson 4's
/// supervisor: it forks them, replaces one that dies (at most once a second per loop, so a
/// crash loop does not spin), and on SIGINT/SIGTERM stops and reaps them and prints the summary.
fn processes(common: &CommonArgs, n: usize, stats: &'static Stats) -> Result<(), SetupError> {
    // First, while this is the only thread: SIGCHLD, SIGINT, SIGTERM blocked for its sigwait.
    // No signal thread here (unlike `threads`): every fork is of a single-threaded process.
    let supervisor = Supervisor::new(NAME)?; // (lesson 4)
    // The supervisor's listeners: kept open here, so a replacement inherits its loop's queue.
    let mut listeners = listen(common, n)?;
    supervisor.supervise(n, stats, "loops respawned", |i| {
        // In loop process i only (this closure runs after fork): keep our listener and close
        // our copies of the other loops', so each loop process owns just its own; a listener
        // closes once its loop and the supervisor have both closed it.
        let listener = listeners.swap_remove(i); // owned by this process now
        listeners.clear();
        // A fresh epoll, not one inherited: its EPOLL_CTL_ADD reports connections already queued.
        let Ok(epoll) = new_epoll(&listener).inspect_err(|e| warn_throttled!("{NAME}: {e}")) else {
            exit_child(); // the supervisor replaces it, a second later at the soonest
        };
        let conns = Conns::new(NAME, common, stats).for_worker(i);
        event_loop(&listener, &epoll, conns) // lesson 10's; a panic unwinds to main: exit 101
    });
    Ok(()) // the summary is out: exit 0
}

/// _exit(2): ends a loop process at once, with nothing to flush and no supervisor code run.
fn exit_child() -> ! {
    // SAFETY: _exit ends the process immediately and touches no memory of ours.
    unsafe { libc::_exit(1) }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

// Lesson 10's `handle_conn` (its lib.rs) around lesson 7's `Conns::on_ready`, unchanged; only
// the table's worker slot differs (`Conns::for_worker(i)`): requests and accepts count per loop.

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// Threads: SIGINT/SIGTERM → summary → exit 0, from the shared signal thread (see lesson 1).
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}

// Processes: lesson 4's `Supervisor::stop` (prefork_server/src/lib.rs) forwards the signal to
// every loop, reaps them all so RUSAGE_CHILDREN holds their CPU time, and prints the summary
// with `loops respawned`.
