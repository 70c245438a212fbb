//! # Lesson 11 — N epoll loops, and three ways for a connection to reach one
//!
//! Lesson 10's loop uses one core. Here it runs `--loops N` times, each loop owning all it
//! touches: an epoll instance, connections, buffers. `--distribute` chooses who decides which
//! loop gets a new connection: the kernel, hashing it to one of N `SO_REUSEPORT` listeners
//! (`reuseport`, the default: blind to load); the kernel, waking one of the loops that wait in
//! `epoll_wait` on one shared listener (`exclusive`: `EPOLLEXCLUSIVE`); or an acceptor, handing
//! it to the loop with the shortest queue (`acceptor`: `handoff.rs`). Threads of one process,
//! or processes under a supervisor (`--processes`, lesson 4).
//!
//! ```text
//!  reuseport  SYN ─► hash(4-tuple) ─┬─► listener 0 [queue] ─► loop 0: epoll 0 + its connections
//!             (blind to load)       └─► listener 1 [queue] ─► loop 1: epoll 1 + its connections
//!  exclusive  SYN ─► one listener [one queue] ─► wakes one loop waiting in epoll_wait: accept4
//!  acceptor   SYN ─► one listener ─► acceptor: accept4, pick a loop ─► socketpair i ─► loop i
//!  each loop is lesson 10's `event_loop`; a connection stays with its loop for life
//!  --processes: a supervisor (sigwait) holds every listener and socketpair; forks, replaces
//! ```
//!
//! ## What to notice
//! - No event loop in this file: `event_loop` is lesson 10's (`epoll_et_server` in `Cargo.toml`),
//!   and drives lesson 7's connections. It takes them from a listener or a hand-off socket.
//! - `SO_REUSEPORT` goes on before bind(2), on every listener. The first bind resolves port 0;
//!   the others bind the port it got. The other two modes have one listener.
//! - `--processes` runs the loops (and the acceptor) under lesson 4's supervisor: it keeps a
//!   copy of every listener and socketpair, so a dead process's queue waits for its replacement.
//!
//! ## Where it breaks
//! Whoever picks the loop, a connection stays there: a loop stalled by a slow request
//! (`--delay-ms`) stalls every connection it already has, and with `reuseport` also the new ones
//! hashed to it. Nothing moves work between loops; lesson 12 (`tokio_server`) steals it.
//!
//! ## Try it
//! ```text
//! cargo run --release -p multi_epoll_server -- --loops 2   # --distribute exclusive|acceptor
//! ss -ltnp 'sport = :8080'                     # reuseport: two listening sockets, one port
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/   # then Ctrl-C: see "accepts per worker"
//! ```
//!
//! ## Compare with
//! nginx (`listen … reuseport`, or EPOLLEXCLUSIVE); lesson 6 (N threads, one listener);
//! lesson 4 (the supervisor); lesson 10 (the loop); the README (the three designs side by side).

mod handoff;

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use epoll_et_server::{event_loop, new_epoll, new_epoll_exclusive}; // lesson 10: the loop
use handoff::{Acceptor, Handoff};
use nix::sys::epoll::Epoll;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::socket::{bind, setsockopt, socket, sockopt};
use nonblocking_busy_server::Conns; // lesson 7: the connection and its table
use prefork_server::Supervisor; // lesson 4: the supervisor of worker processes
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::stats::{MAX_WORKERS, Stats};
use server_common::{Context, SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 11, N event loops: lesson 10's edge-triggered epoll loop runs `--loops` times, each
/// loop with its own epoll instance; `--distribute` says how new connections reach the loops:
/// a SO_REUSEPORT listener per loop (the kernel hashes), one listener watched with
/// EPOLLEXCLUSIVE (the kernel wakes one idle loop), or an acceptor that hands each connection
/// to a loop. Threads of one process by default; `--processes` runs each loop in a process of
/// its own under a supervisor.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Event loops, each with its own epoll; the default is one per CPU.
    #[arg(long, visible_alias = "loops", value_name = "N", default_value_t = one_per_cpu(),
          value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    workers: u32,
    /// Run each loop in a process of its own (a descriptor table each), under a supervisor.
    #[arg(long)]
    processes: bool,
    /// How a new connection reaches a loop.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Distribute::Reuseport)]
    distribute: Distribute,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Distribute {
    /// A listener per loop, one port (SO_REUSEPORT): the kernel hashes each connection to one.
    Reuseport,
    /// One listener in every loop's epoll (EPOLLEXCLUSIVE): the kernel wakes one waiting loop.
    Exclusive,
    /// One acceptor hands each connection to the loop with the shortest queue (SCM_RIGHTS).
    Acceptor,
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

/// Every descriptor of the model, made before the start-up line — and, with `--processes`,
/// before the forks, so the supervisor keeps a copy of each for the replacements.
struct Plan {
    /// What loop i takes its connections from, in loop order.
    loops: Vec<Source>,
    /// `acceptor` only: the listener and the acceptor's end of every loop's socketpair.
    acceptor: Option<Acceptor>,
}

enum Source {
    /// `reuseport`: the loop's own listener, one of the group.
    Own(OwnedFd),
    /// `exclusive`: a descriptor of the one listener, shared by every loop.
    Shared(OwnedFd),
    /// `acceptor`: the loop's end of its socketpair with the acceptor.
    Handoff(OwnedFd),
}

fn listen(args: &Args) -> Result<Plan, SetupError> {
    let (common, n) = (&args.common, args.workers as usize);
    let (loops, acceptor) = match args.distribute {
        Distribute::Reuseport => {
            let group = reuseport_group(common, n)?;
            (group.into_iter().map(Source::Own).collect(), None)
        }
        Distribute::Exclusive => {
            let listener = net::listener(common.addr, common.backlog, Blocking::No)?; // lesson 7
            net::announce(NAME, &listener)?;
            // dup(2), one descriptor per loop, all of one socket: each loop owns its own, and
            // the socket closes when the last of them does.
            let dup = |_| listener.try_clone().map(Source::Shared);
            let loops = (0..n).map(dup).collect::<Result<_, _>>();
            (loops.context("cannot dup the listener")?, None)
        }
        Distribute::Acceptor => {
            // Blocking: the acceptor sleeps in accept4; the loops never touch the listener.
            let listener = net::listener(common.addr, common.backlog, Blocking::Yes)?;
            net::announce(NAME, &listener)?;
            let (ours, theirs) = handoff::socketpairs(n)?; // theirs: one end per loop
            let acceptor = Acceptor::new(NAME, listener, ours); // owns the listener now
            (
                theirs.into_iter().map(Source::Handoff).collect(),
                Some(acceptor),
            )
        }
    };
    Ok(Plan { loops, acceptor })
}

/// `n` non-blocking listeners on one address: lesson 1's four calls plus SO_REUSEPORT, each
/// time. All are bound before the start-up line, so the first client already meets the group.
fn reuseport_group(args: &CommonArgs, n: usize) -> Result<Vec<OwnedFd>, SetupError> {
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
    model(&args, stats)
}

impl Source {
    /// A fresh epoll instance watching the source (lesson 10); EPOLLEXCLUSIVE for the shared
    /// listener, so that a new connection wakes one waiting loop, not every one.
    fn epoll(&self) -> Result<Epoll, SetupError> {
        match self {
            Source::Own(fd) | Source::Handoff(fd) => new_epoll(fd),
            Source::Shared(fd) => new_epoll_exclusive(fd),
        }
    }

    /// THE MODEL: lesson 10's loop, taking connections from this source, for ever.
    fn serve(self, epoll: &Epoll, conns: Conns) -> ! {
        match self {
            Source::Own(listener) | Source::Shared(listener) => event_loop(&listener, epoll, conns),
            Source::Handoff(end) => event_loop(Handoff::new(end), epoll, conns), // handoff.rs
        }
    }
}

/// N loops, one thread each, in one process: one descriptor table (20,000 here) for all.
fn threads(args: &Args, stats: &'static Stats) -> Result<(), SetupError> {
    stop_on_signal(stats)?; // first, while this is the only thread (see lesson 6)
    let plan = listen(args)?;
    for (i, source) in plan.loops.into_iter().enumerate() {
        let epoll = source.epoll()?;
        let conns = Conns::new(NAME, &args.common, stats).for_worker(i);
        // A loop that panicked (a bug) drops its source as it unwinds: its own listener leaves
        // the group; a shared listener stays with the others; a hand-off end tells the acceptor.
        std::thread::Builder::new()
            .name(format!("loop-{i}")) // what `top -H` shows
            .spawn(move || source.serve(&epoll, conns)) // both: loop i's now
            .context(format!("cannot spawn loop thread {i}"))?;
    }
    if let Some(acceptor) = plan.acceptor {
        std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || acceptor.run()) // handoff.rs; the listener: the acceptor's now
            .context("cannot spawn the acceptor thread")?;
    }
    loop {
        std::thread::park(); // nothing left to do here; the signal thread ends the process
    }
}

/// `--processes`: N loops, one process each (a descriptor table each), and with `acceptor` one
/// more process for it, under lesson 4's supervisor: it forks them, replaces one that dies (at
/// most once a second per slot, so a crash loop does not spin), and on SIGINT/SIGTERM stops and
/// reaps them and prints the summary. (`loops respawned` counts the acceptor's replacements too.)
fn processes(args: &Args, stats: &'static Stats) -> Result<(), SetupError> {
    // First, while this is the only thread: SIGCHLD, SIGINT, SIGTERM blocked for its sigwait.
    // No signal thread here (unlike `threads`): every fork is of a single-threaded process.
    let supervisor = Supervisor::new(NAME)?; // (lesson 4)
    // The supervisor's copies of everything: a replacement inherits its predecessor's queue —
    // the listener's, or the socketpair's with the connections handed off and not yet taken.
    let mut plan = listen(args)?;
    let n = plan.loops.len();
    let slots = n + usize::from(plan.acceptor.is_some()); // the acceptor is slot n
    supervisor.supervise(slots, stats, "loops respawned", |i| {
        // In child i only (this closure runs after fork): keep what slot i needs and close our
        // copies of the rest, so each process owns just its own.
        let source = (i < n).then(|| plan.loops.swap_remove(i));
        let acceptor = plan.acceptor.take(); // dropped (closed) below unless we are it
        plan.loops.clear(); // our copies of the other loops' sources: closed
        let Some(source) = source else {
            let _ = nix::sys::prctl::set_name(c"acceptor"); // prctl(2): what `ps` shows
            if let Some(acceptor) = acceptor {
                acceptor.run(); // returns only once every loop is gone: never, here
            }
            exit_child();
        };
        drop(acceptor);
        // A fresh epoll, not one inherited: its EPOLL_CTL_ADD reports what is already queued.
        let epoll = source.epoll().unwrap_or_else(|e| {
            warn_throttled!("{NAME}: {e}");
            exit_child() // the supervisor replaces it, a second later at the soonest
        });
        let conns = Conns::new(NAME, &args.common, stats).for_worker(i);
        source.serve(&epoll, conns) // a panic unwinds to main: exit 101
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
// every child, reaps them all (their CPU time in RUSAGE_CHILDREN), prints `loops respawned`.
