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
//! - No event loop in this file: `lesson10::event_loop` is lesson 10's, compiled into this
//!   crate (`mod lesson10`). The model adds only "N times, each with its own listener".
//! - `SO_REUSEPORT` goes on before bind(2), on every listener. The first bind resolves port 0;
//!   the others bind the port it got.
//! - The supervisor keeps a copy of every listener, so a loop process that dies leaves its
//!   queue open for its replacement instead of resetting the clients waiting in it.
//! - The supervisor's only timer is alarm(2): SIGALRM is one more signal it takes in sigwait.
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
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::socket::{bind, setsockopt, socket, sockopt};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{ForkResult, Pid, alarm, fork, getpid, getppid};
use server_common::cli::CommonArgs;
use server_common::conn::Conns;
use server_common::stats::{MAX_WORKERS, Stats};
use server_common::{Context, SetupError, net, report, shutdown, warn_throttled};

/// Lesson 10's whole `main.rs` as a module: its `watch` and `event_loop` are our loop, not a
/// copy, and lesson 10 stays one file. Its `main`, `Args`, `run` go unused; its `NAME` is
/// `env!("CARGO_PKG_NAME")`, expanded here, so its warnings say `multi_epoll_server`.
#[allow(dead_code)]
#[path = "../../epoll_et_server/src/main.rs"]
mod lesson10;

const NAME: &str = env!("CARGO_PKG_NAME");

/// A loop process that dies sooner than this after its fork is replaced only this much later.
const YOUNG: Duration = Duration::from_secs(1);

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
    let model = if args.processes { supervise } else { threads };
    model(&args.common, args.workers as usize, stats)
}

/// N loops, one thread each, in one process: one descriptor table (20,000 here) for all.
fn threads(common: &CommonArgs, n: usize, stats: &'static Stats) -> Result<(), SetupError> {
    stop_on_signal(stats)?; // first, while this is the only thread (see lesson 6)
    for (i, listener) in listen(common, n)?.into_iter().enumerate() {
        let epoll = lesson10::watch(&listener)?;
        let conns = Conns::new(NAME, common, stats).for_worker(i);
        // THE MODEL: lesson 10's loop, once per listener. A loop that panicked (a bug) drops its
        // listener as it unwinds: closed, it leaves the group, and new clients go to the others.
        std::thread::Builder::new()
            .name(format!("loop-{i}")) // what `top -H` shows
            .spawn(move || lesson10::event_loop(&listener, &epoll, conns)) // both: loop i's now
            .context(format!("cannot spawn loop thread {i} of {n}"))?;
    }
    loop {
        std::thread::park(); // nothing left to do here; the signal thread ends the process
    }
}

/// `--processes`: lesson 4's single-threaded supervisor, taking its signals with sigwait(2).
struct Supervisor<'a> {
    listeners: Vec<OwnedFd>, // loop i's listener, kept open here for its replacements
    pids: Vec<Option<(Pid, Instant)>>, // loop i's process and when it was forked, until reaped
    common: &'a CommonArgs,
    stats: &'static Stats,
    forks: usize, // successful ones: more than one per loop means replacements
}

fn supervise(common: &CommonArgs, n: usize, stats: &'static Stats) -> Result<(), SetupError> {
    // No signal thread (unlike `threads`): every fork below is of a single-threaded process.
    // SIGALRM is the supervisor's only timer (see `reap`).
    let signals = shutdown::stop_signals() | Signal::SIGCHLD | Signal::SIGALRM;
    signals.thread_block().context("cannot block signals")?;
    shutdown::ignore_sigpipe().context("cannot ignore SIGPIPE")?;
    let mut sup = Supervisor {
        listeners: listen(common, n)?, // the supervisor's; each loop process inherits copies
        pids: vec![None; n],
        common,
        stats,
        forks: 0,
    };
    (0..n).for_each(|i| sup.start(i));
    loop {
        // (sigwait fails only for an invalid set; ours is constant)
        match signals.wait().unwrap_or(Signal::SIGTERM) {
            Signal::SIGCHLD => sup.reap(),
            Signal::SIGALRM => sup.restart(),
            sig => return sup.stop(sig.as_str()), // SIGINT or SIGTERM: exit 0
        }
    }
}

impl Supervisor<'_> {
    /// Forks the process of loop `i`. If fork(2) fails (EAGAIN, ENOMEM), retries in a second.
    fn start(&mut self, i: usize) {
        let supervisor = getpid();
        // SAFETY: the supervisor is single-threaded (see `supervise`), so the child is a
        // consistent copy of the whole process; it runs `loop_process`, which never returns.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => self.loop_process(i, supervisor),
            Ok(ForkResult::Parent { child }) => {
                self.pids[i] = Some((child, Instant::now()));
                self.forks += 1;
            }
            Err(e) => {
                warn_throttled!("{NAME}: cannot fork loop {i}: {e}; retrying in a second");
                alarm::set(1);
            }
        }
    }

    /// waitpid(2) with WNOHANG until no dead loop is left (see lesson 4). Its listener stays
    /// open here, so its clients queue up for its replacement, forked at once — unless it died
    /// within a second of its fork, like a loop that crashes at start-up and would again: then
    /// alarm(2) brings SIGALRM a second later, and a crash loop costs one fork a second.
    fn reap(&mut self) {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            let dead = |p: &Option<(Pid, _)>| p.is_some_and(|(pid, _)| Some(pid) == status.pid());
            let Some(i) = self.pids.iter().position(dead) else {
                return; // StillAlive (no pid): no other loop has died (all our children are loops)
            };
            let forked = self.pids[i].take().map(|(_, t)| t);
            if forked.is_some_and(|t| t.elapsed() < YOUNG) {
                warn_throttled!("{NAME}: loop {i} ended young ({status:?}); replacing it in 1 s");
                alarm::set(1); // (re)arms the one alarm: every loop still missing goes then
            } else {
                warn_throttled!("{NAME}: loop {i} ended ({status:?}); forking a replacement");
                self.start(i);
            }
        }
    }

    /// SIGALRM: forks a process for every loop that has none.
    fn restart(&mut self) {
        for i in 0..self.pids.len() {
            if self.pids[i].is_none() {
                self.start(i);
            }
        }
    }

    /// The life of loop process `i`: lesson 10's loop on its own listener, until a signal.
    fn loop_process(&mut self, i: usize, supervisor: Pid) -> ! {
        // As lesson 4's workers: default SIGINT/SIGTERM, and SIGTERM when the supervisor dies.
        if shutdown::default_signals_in_child().is_err()
            || prctl::set_pdeathsig(Signal::SIGTERM).is_err()
            || getppid() != supervisor
        {
            exit_child();
        }
        // Keep our listener, close our copies of the other loops' (in this process only): each
        // loop process owns just its own, and a listener closes once its loop and the
        // supervisor have closed it (see the README, "When a loop dies").
        let listener = self.listeners.swap_remove(i); // owned by this process now
        self.listeners.clear();
        // A fresh epoll, not one inherited: its EPOLL_CTL_ADD reports connections already queued.
        let Ok(epoll) = lesson10::watch(&listener).inspect_err(|e| warn_throttled!("{NAME}: {e}"))
        else {
            exit_child(); // a young death: the supervisor tries again in a second
        };
        let conns = Conns::new(NAME, self.common, self.stats).for_worker(i);
        lesson10::event_loop(&listener, &epoll, conns) // a panic unwinds to main: exit 101
    }
}

/// _exit(2): ends a loop process at once, with nothing to flush and no supervisor code run.
fn exit_child() -> ! {
    // SAFETY: _exit ends the process immediately and touches no memory of ours.
    unsafe { libc::_exit(1) }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

// Lesson 10's `handle_conn` and `Conns::on_ready` (server_common/src/conn.rs), unchanged; only
// the table's worker slot differs (`Conns::for_worker(i)`): requests and accepts count per loop.

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// Threads: SIGINT/SIGTERM → summary → exit 0, from the shared signal thread (see lesson 1).
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}

impl Supervisor<'_> {
    /// Processes: stop every loop, reap it (so RUSAGE_CHILDREN has its CPU time), report. SIGKILL,
    /// not a forwarded SIGTERM: a loop has nothing to save (its counts are in the shared page),
    /// and SIGKILL ends even a stopped process, so each blocking wait is bounded without a timer.
    fn stop(&mut self, cause: &str) -> Result<(), SetupError> {
        for (pid, _) in self.pids.iter_mut().filter_map(Option::take) {
            let _ = kill(pid, Signal::SIGKILL); // not reaped yet, so still ours: no stranger
            let _ = waitpid(pid, None); // our signals are blocked: no EINTR
        }
        let respawned = self.forks.saturating_sub(self.pids.len());
        let extra = [("loops respawned".to_string(), respawned.to_string())];
        // Nobody to tell if stdout is gone: carry on all the same, as the signal thread does.
        let mut out = std::io::stdout().lock();
        let _ = report::write_summary(&mut out, NAME, self.stats, cause, &extra);
        Ok(())
    }
}
