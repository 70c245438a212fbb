//! # Lesson 14 — one epoll loop for the sockets, a pool of threads for the work
//!
//! Lesson 10's loop answers every request itself, so one costly request stalls every connection
//! it holds; lesson 11 runs more loops, and a stalled loop still stalls its own. Here the loop
//! keeps doing all the socket I/O — every accept4, recv and send stays in one thread, lesson 10's
//! `event_loop` — but it never runs a request's work: the connection's session stops at a costly
//! request, the loop puts its work on a queue, and one of `--workers` threads runs it. When it is
//! done, the worker says so through a second queue and an eventfd(2) the loop watches; the loop
//! writes the answer. Cheap requests never touch the pool (libuv's rule); `--all-to-pool` sends
//! every request through it, as the Go benchmark's worker-pool server does. This is the
//! half-sync/half-async pattern: the async half owns the sockets, the sync half owns the waits.
//!
//! ```text
//!                  ┌──────────── the loop (lesson 10, one thread) ─────────────┐
//!  sockets ─ edges ─► epoll_wait ─► recv ─► session: cheap? answer now ─► send │
//!                  │      ▲                  costly ─► Job{fd, id, work} ─┐    │
//!                  │      └─ eventfd ◄── Done{fd, id} ◄─┐                 │    │
//!                  └────────────────────────────────────┼─────────────────┼────┘
//!                                    done queue + write(eventfd, 1)       ▼ job queue
//!                                  worker 1 … worker N: take the oldest job, run its work
//! ```
//!
//! ## What to notice
//! - The workers never touch a socket, a session or the table: a job is three numbers (which
//!   connection, which job, how much work). Everything a connection owns stays in the loop's
//!   thread, so nothing needs a lock but the two queues.
//! - A connection whose work is out reads nothing more (lesson 7's `may_read`): its answers must
//!   leave in order, and it has at most one job out, so the job queue never holds more jobs
//!   than there are connections.
//! - The eventfd is the loop's doorbell: a worker cannot call into epoll_wait, but it can make a
//!   descriptor the loop watches readable. One read of the counter answers any number of rings.
//! - The job id: while a job runs, its client may vanish and the kernel may give the same
//!   descriptor number to a new client. The loop remembers which job each number waits for and
//!   drops a late answer that no longer belongs to anyone.
//!
//! ## Where it breaks
//! The loop is still one thread: its own I/O stops at one core (lesson 11 has N loops). The
//! pool is as many jobs at once as it has workers; beyond that, costly requests queue — but
//! behind each other only, never in front of the cheap ones.
//!
//! ## Try it
//! ```text
//! cargo run --release -p epoll_pool_server -- --workers 2
//! cargo run --release -p echo_client -- --http --conns 100 --duration 10 --mix 10:/work/500
//! cargo run --release -p epoll_pool_server -- --workers 2 --all-to-pool   # then the same
//! ```
//!
//! ## Compare with
//! libuv's thread pool (`uv_queue_work`, its completions through an eventfd); the Go 1M
//! benchmark's `8_server_workerpool`; lesson 5 (a pool that serves whole connections); lesson
//! 10 (the loop it reuses); lesson 12 (`tokio`'s `spawn_blocking`, the same split).

use std::os::fd::{OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use epoll_et_server::{EXTENSION, Extension, event_loop_with, new_epoll}; // lesson 10: the loop
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nonblocking_busy_server::{ConnState, Conns, Want}; // lesson 7: the connection and its table
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::proto::{Defer, Work};
use server_common::stats::{MAX_WORKERS, Stats};
use server_common::{Context, SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 14, a reactor with a worker pool: one thread runs lesson 10's epoll loop and does all
/// the socket I/O; `--workers` threads run the work of costly requests (`--work`, `--delay-ms`,
/// `/work/U`) and hand the result back through a queue and an eventfd.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Threads in the pool that runs the requests' work (default: one per CPU — the work is
    /// CPU, and more threads than cores only take turns).
    #[arg(long, value_name = "N", default_value_t = cpus(),
          value_parser = clap::value_parser!(u32).range(1..=MAX_WORKERS as i64))]
    workers: u32,
    /// Send every request through the pool, even one that costs nothing (the Go benchmark's
    /// worker pool); by default the loop answers those itself.
    #[arg(long)]
    all_to_pool: bool,
}

fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)) as u32
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// A non-blocking listener and the epoll instance that watches it, as in lesson 10.
fn listen(args: &CommonArgs) -> Result<(OwnedFd, Epoll), SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::No)?; // owned here
    let epoll = new_epoll(&listener)?; // (lesson 10)
    Ok((listener, epoll)) // both owned by the caller
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// One costly request's work, for the pool. Only numbers cross to the workers.
struct Job {
    fd: RawFd,
    id: u64,
    work: Work,
}

/// A job is done: which connection, and which of its jobs.
type Done = (RawFd, u64);

/// Jobs each worker has run, for the summary's `jobs per worker`.
static JOBS: [AtomicU64; MAX_WORKERS] = [const { AtomicU64::new(0) }; MAX_WORKERS];

fn run(args: Args) -> Result<(), SetupError> {
    let workers = args.workers as usize;
    let stats = Stats::new_shared(None); // the loop accepts every connection: no per-loop line
    // First, while this is the only thread: the workers inherit the blocked SIGINT/SIGTERM.
    stop_on_signal(stats, workers)?;
    let (listener, epoll) = listen(&args.common)?;

    // eventfd(2): a descriptor whose only content is a 64-bit counter. write(2) adds to it,
    // read(2) takes it back to 0, and it is readable while it is not 0 — so epoll can watch it
    // like a socket. Non-blocking: the loop's read of a counter already at 0 must not wait.
    let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
    let bell = Arc::new(EventFd::from_value_and_flags(0, flags).context("cannot create eventfd")?);
    // Level-triggered (no EPOLLET): the loop resets the counter on each event, and anything a
    // worker rings later makes it readable again, however the two interleave.
    let ev = EpollEvent::new(EpollFlags::EPOLLIN, EXTENSION);
    epoll.add(&*bell, ev).context("cannot watch the eventfd")?;

    // The two queues: std's mpsc channels, unbounded (at most one job per connection is out).
    let (jobs, job_queue) = channel::<Job>();
    let (done_tx, done) = channel::<Done>();
    // The job queue has one receiving end; the workers share it behind a mutex, so one idle
    // worker waits in recv while the others wait for the mutex: the oldest job goes first.
    let job_queue = Arc::new(Mutex::new(job_queue));
    for i in 0..workers {
        let (queue, done_tx, bell) = (job_queue.clone(), done_tx.clone(), bell.clone());
        std::thread::Builder::new()
            .name("worker".into()) // what `top -H` shows
            .stack_size(64 * 1024) // the work needs a few frames; no big buffers live here
            .spawn(move || worker(i, &queue, &done_tx, &bell))
            .context(format!("cannot start {workers} worker threads"))?;
    }

    net::announce(NAME, &listener)?; // "listening on IP:PORT (epoll_pool_server, pid N)"
    let defer = if args.all_to_pool {
        Defer::Every
    } else {
        Defer::Costly
    };
    // Sessions stop at each request the pool must run (server_common's `Config::defer`).
    let conns = Conns::new(NAME, &args.common, stats).deferring(defer); // lesson 7's table
    let pool = Pool {
        jobs,
        done,
        bell,
        out: Vec::new(),
        next_id: 0,
    };
    event_loop_with(&listener, &epoll, conns, pool) // lesson 10's loop, the pool hung on it
}

/// A worker: take the oldest job, run its work, report it done, ring the loop's bell. It never
/// sees a socket; the loop writes the answer.
fn worker(i: usize, queue: &Mutex<Receiver<Job>>, done: &Sender<Done>, bell: &EventFd) {
    loop {
        // The guard is a temporary: the mutex is released as soon as recv returns a job. A
        // poisoned mutex (a worker panicked holding it, which recv cannot do) still holds a
        // usable queue.
        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = job else {
            return; // the loop dropped its sender: the process is ending
        };
        job.work.run(); // CPU (`--work`, `/work/U`), then `--delay-ms` of blocking sleep
        JOBS[i].fetch_add(1, Relaxed);
        // Queue first, bell second: when the loop wakes and reads the queue, the result is in
        // it. (If the loop drains the queue between the two, the bell only wakes it once more
        // for nothing.)
        if done.send((job.fd, job.id)).is_err() {
            return; // the loop is gone
        }
        // write(2) 8 bytes: counter += 1. Fails only if the counter would overflow 2^64 − 2.
        if let Err(e) = bell.write(1) {
            warn_throttled!("{NAME}: eventfd write: {e}");
        }
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// What this lesson hangs on lesson 10's loop: the job queue's sending end, the done queue's
/// receiving end and the bell — and, per descriptor, which job it waits for.
struct Pool {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    bell: Arc<EventFd>,
    /// Per descriptor number: the id of the job its connection waits for, 0 for none.
    out: Vec<u64>,
    next_id: u64,
}

impl Pool {
    /// The job slot of descriptor `fd`, growing the table as the kernel hands out higher numbers.
    fn slot(&mut self, fd: RawFd) -> &mut u64 {
        let i = fd as usize; // descriptors of connections are never negative
        if self.out.len() <= i {
            self.out.resize(i + 1, 0);
        }
        &mut self.out[i]
    }
}

impl Extension for Pool {
    /// The bell rang: take the counter back to 0 *before* draining the done queue, so a job
    /// that finishes meanwhile rings a bell that is heard. Each result goes to its connection
    /// (lesson 7's `Conns::work_done`: queue the answer, send, read on), unless it is stale.
    fn on_event(&mut self, conns: &mut Conns, now: Instant, changed: &mut Vec<(RawFd, Want)>) {
        match self.bell.read() {
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => {} // already 0: a second wake for the same news
            Err(e) => warn_throttled!("{NAME}: eventfd read: {e}"),
        }
        while let Ok((fd, id)) = self.done.try_recv() {
            let slot = self.slot(fd);
            if *slot != id {
                continue; // its client left, and the number may be someone else's by now
            }
            *slot = 0;
            changed.push((fd, conns.work_done(fd, now))); // the loop acts on the answer
        }
    }

    /// After the handler: if the session stopped at a costly request and its work is not out
    /// yet, send it to the pool. Nothing is read from this connection until it comes back.
    fn after(&mut self, fd: RawFd, conn: &ConnState) {
        let Some(work) = conn.pending_work() else {
            return;
        };
        if *self.slot(fd) != 0 {
            return; // already with a worker
        }
        self.next_id += 1; // ids start at 1; u64 never wraps
        *self.slot(fd) = self.next_id;
        let job = Job {
            fd,
            id: self.next_id,
            work,
        };
        // Fails only if every worker has exited, which only the process's end does.
        if self.jobs.send(job).is_err() {
            warn_throttled!("{NAME}: no worker left to run a job");
        }
    }

    /// A new connection on this number waits for no job, whatever an old one waited for.
    fn accepted(&mut self, fd: RawFd) {
        *self.slot(fd) = 0;
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary (with `jobs per worker`) → exit 0, from the shared crate's signal
/// thread (see lesson 1). Process exit ends the loop and the workers mid-job.
fn stop_on_signal(stats: &'static Stats, workers: usize) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, move || {
        let jobs: Vec<String> = JOBS[..workers]
            .iter()
            .map(|n| n.load(Relaxed).to_string())
            .collect();
        vec![("jobs per worker".into(), jobs.join(" "))]
    })
}
