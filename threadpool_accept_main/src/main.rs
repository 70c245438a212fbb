//! # Lesson 5 — the main thread accepts, a pool serves
//!
//! Lesson 3 created a thread for every connection and let their number grow without bound. Here
//! `--workers N` threads are created once, at start-up, and serve for the whole run. The main
//! thread accepts, stamps the time, and hands the connection to the pool (`threadpool`'s job
//! queue); a free worker takes the oldest job, serves that connection to its end with lesson 1's
//! loop, and takes the next. At most N connections are *served* at once. The rest wait in a
//! second queue — after the kernel's — accepted, but with nobody reading them.
//!
//! ```text
//!   kernel accept queue      main thread                pool queue             N workers
//!  [ c9 c10 … ] ─accept4(2)─► stamp, execute(job) ─► [ c6 c7 c8 ] ─ oldest ─► serve(c1) …
//!   bounded (--backlog);      never waits for           unbounded: grows       serve(c2) …
//!   full: SYNs are dropped    a worker                  until EMFILE           serve(c3) …
//! ```
//!
//! ## What to notice
//! - **Two queues in series.** The kernel's accept queue is bounded: when it is full the kernel
//!   stops completing handshakes, and clients notice (their `connect` slows down). The main
//!   thread empties it as fast as it can into the pool's queue, which is an unbounded channel:
//!   connections beyond N pile up there, already connected, possibly with a request sent, and
//!   the back-pressure is gone. Only running out of descriptors (EMFILE) stops the pile.
//! - **No timeout in the queue.** SO_RCVTIMEO only runs while a worker waits in recv(2); a queued
//!   connection waits as long as the workers stay busy. N keep-alive clients hold every worker;
//!   client N+1 waits until one of them leaves or goes idle for `--idle-timeout`.
//! - **The summary measures the wait**: `queue wait ms` from accept to the moment a worker
//!   starts the connection. With idle workers it is the price of the hand-off itself (a channel
//!   send and a futex wake-up); with busy workers it is the queue.
//!
//! ## Where it breaks
//! Concurrency is N: keep-alive or slow clients beyond N wait, unseen, in a queue that never
//! says no. And every connection crosses threads once: accept in one, serve in another.
//! Lesson 6 (`threadpool_accept_worker`) lets every worker accept for itself.
//!
//! ## Try it
//! ```text
//! cargo run --release -p threadpool_accept_main -- --workers 4
//! wrk -t2 -c4 -d5s http://127.0.0.1:8080/    # 4 keep-alive clients, 4 workers: no wait
//! wrk -t2 -c8 -d5s http://127.0.0.1:8080/    # 4 clients served, 4 queued for the whole run
//! ```
//!
//! ## Compare with
//! UNP's `serv08.c` (main thread accepts, prethreaded pool); the Rust Book's final project
//! (its `ThreadPool`, fed by the main thread's accept loop, is this model); lesson 3,
//! `cgi_thread_server` (a thread per connection); lesson 6, `threadpool_accept_worker`.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::socket::{SockFlag, accept4};
use server_common::cli::{CommonArgs, StackArgs, WorkerArgs};
use server_common::net::{self, Blocking};
use server_common::proto::{Config, Session};
use server_common::stats::{LiveConn, Stats};
use server_common::{Context, SetupError, shutdown};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 5, the main thread accepts and a pool serves: `--workers` threads are created once;
/// the main thread accepts every connection and queues it for the pool, where the next free
/// worker serves it to the end. Connections beyond the pool's size wait in that queue.
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

/// A blocking listener, as in lesson 1. Its `--backlog` is the first of this model's two queues:
/// the only bounded one.
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned by run
    net::announce(NAME, &listener)?;
    Ok(listener)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// Connections in the pool's queue now, and the most ever waiting there at once.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static QUEUE_PEAK: AtomicU64 = AtomicU64::new(0);

fn run(args: Args) -> Result<(), SetupError> {
    let workers = args.workers.workers as usize;
    let stats = Stats::new_shared(Some(workers));
    // First, while this is the only thread: the pool's threads, created below, inherit the
    // blocked SIGINT/SIGTERM, so no worker is ever interrupted by them.
    stop_on_signal(stats)?;
    let (config, idle) = (args.common.session_config(), args.common.idle_timeout());

    // The pool: N threads, each looping "take the oldest job, run it". threadpool 1.8's queue is
    // an unbounded std mpsc channel; idle workers take turns holding a mutex around its
    // receiving end, so exactly one of them sleeps in recv and the others sleep on the mutex.
    let builder = threadpool::Builder::new()
        .num_threads(workers) // ≥ 1: clap's range for --workers (num_threads(0) panics)
        .thread_stack_size(usize::try_from(args.stack.stack_size).unwrap_or(usize::MAX))
        .thread_name("worker".into()); // what `top -H` and `ps -L` show
    let pool = build_pool(builder).context(format!("cannot start {workers} worker threads"))?;
    // Listen only now, so the start-up line means "ready": the workers are waiting.
    let listener = listen(&args.common)?;

    loop {
        // accept4(2), see lesson 1.
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // Retry at once, or back off when out of descriptors (lesson 1's policy). EMFILE is
            // where the unbounded queue ends: every queued connection holds a descriptor.
            Err(e) => {
                simple_server::after_accept_error(NAME, e); // (lesson 1)
                continue;
            }
        };
        // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns; OwnedFd takes
        // sole ownership and closes it exactly once, when dropped.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned here, moved into the job
        // Live from now on: a queued connection is open and counts in "peak concurrent
        // connections". Its accept is parked in slot 0 until a worker claims it (handle_conn).
        let live = stats.accepted(0);

        // THE MODEL: hand the connection over and go straight back to accept. This path is the
        // server's one serial part, so it does the minimum: a clock read (vDSO, no syscall), a
        // boxed closure and a channel send that wakes an idle worker if there is one.
        let queued_at = Instant::now();
        let waiting = QUEUED.fetch_add(1, Relaxed) + 1;
        QUEUE_PEAK.fetch_max(waiting, Relaxed);
        // `execute` panics only if the channel's receiver is gone; the pool keeps it in its own
        // shared state for as long as `pool` lives, which is forever.
        pool.execute(move || handle_conn(conn, live, queued_at, config, idle, stats, workers));
    }
}

/// threadpool 1.8's `build()` unwraps every thread spawn, so a system that refuses N threads at
/// start-up makes it panic. Turn that into the contract's one-line setup error (exit 1): catch
/// the unwind, with the default "thread panicked" message silenced meanwhile.
fn build_pool(builder: threadpool::Builder) -> std::io::Result<threadpool::ThreadPool> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let pool = std::panic::catch_unwind(move || builder.build());
    std::panic::set_hook(hook);
    pool.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map_or("thread spawn failed", |s| s);
        std::io::Error::other(why.to_string())
    })
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

thread_local! {
    /// This pool thread's worker number, given on its first job (threadpool doesn't number its
    /// threads). Only the thread itself reads it, so a thread-local needs no synchronisation.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_WORKER: AtomicUsize = AtomicUsize::new(0);

/// One job of the pool: one connection, served to its end on a worker thread.
fn handle_conn(
    conn: OwnedFd,
    live: LiveConn,
    queued_at: Instant,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
    workers: usize,
) {
    WAITS.record(queued_at.elapsed());
    QUEUED.fetch_sub(1, Relaxed);

    // "accepts per worker" in this model: the main thread accepts everything, so a slot counts
    // the connections that worker *served*, which is what shows how the pool shared the load.
    // The accept was parked in slot 0; move it to ours (adding first, so the total never dips).
    // The modulo only matters if threadpool replaced a panicked thread with a new one.
    let me = WORKER.with(|w| {
        let i = w
            .get()
            .unwrap_or_else(|| NEXT_WORKER.fetch_add(1, Relaxed) % workers);
        w.set(Some(i));
        i
    });
    if me != 0 {
        stats.worker(me).accepted.fetch_add(1, Relaxed);
        stats.worker(0).accepted.fetch_sub(1, Relaxed);
    }

    // Idle timeout, then recv → session → send until the end. The socket options are set by
    // the worker, off the accept path, so the idle clock starts only now: it never ran while the
    // connection sat in the queue.
    let session = Session::new(config, stats.worker(me));
    simple_server::handle_conn(NAME, conn, idle, session); // (lesson 1) conn: moved, closed inside
    drop(live); // closed: no longer live. The worker returns to the queue for the next job.
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, as in lesson 1; queued and served connections alike are
/// closed by the process's exit. The model adds its queue: how long connections waited in it,
/// and how long it grew.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, || {
        let queue = format!(
            "peak {}, waiting at stop {}",
            QUEUE_PEAK.load(Relaxed),
            QUEUED.load(Relaxed)
        );
        vec![
            ("queue wait ms".into(), WAITS.summary()),
            ("queue length".into(), queue),
        ]
    })
}

/// Queue waits, in microseconds: `queue wait ms` in the summary.
static WAITS: WaitHistogram = WaitHistogram::new();

/// A lock-free histogram: 8 buckets per power of two of microseconds (each within 12.5% of its
/// values, as HdrHistogram with one significant digit), so recording is two relaxed atomic adds
/// and percentiles come out without keeping every sample.
struct WaitHistogram {
    buckets: [AtomicU64; 8 * 40], // up to 2^42 µs, 50 days
    max_us: AtomicU64,
    sum_us: AtomicU64,
}

impl WaitHistogram {
    const fn new() -> Self {
        WaitHistogram {
            buckets: [const { AtomicU64::new(0) }; 8 * 40],
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn record(&self, wait: Duration) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        // Values under 8 get a bucket each; above, the highest bit picks the octave and the
        // next three bits one of its 8 sub-buckets.
        let i = match 63 - us.max(1).leading_zeros() {
            0..=2 => us as usize,
            top => ((top - 2) * 8) as usize + ((us >> (top - 3)) & 7) as usize,
        };
        self.buckets[i.min(8 * 40 - 1)].fetch_add(1, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The largest value bucket `i` holds (capped by the true maximum).
    fn upper_us(&self, i: usize) -> u64 {
        let top = match i {
            0..8 => return i as u64,
            _ => i as u32 / 8 + 2,
        };
        let lower = (8 + i as u64 % 8) << (top - 3);
        (lower + (1 << (top - 3)) - 1).min(self.max_us.load(Relaxed))
    }

    /// `p50 … p99 … max … mean …` in milliseconds, and how many connections were measured.
    fn summary(&self) -> String {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let n: u64 = counts.iter().sum();
        let ms = |us: u64| us as f64 / 1000.0;
        let quantile = |q: f64| {
            let rank = ((q * n as f64).ceil() as u64).max(1);
            let mut seen = 0;
            let i = counts.iter().position(|&c| {
                seen += c;
                seen >= rank
            });
            ms(i.map_or(0, |i| self.upper_us(i)))
        };
        let mean = ms(self.sum_us.load(Relaxed)) / n.max(1) as f64;
        let max = ms(self.max_us.load(Relaxed));
        let (p50, p99) = (quantile(0.50), quantile(0.99));
        format!("p50 {p50:.3} p99 {p99:.3} max {max:.3} mean {mean:.3} over {n} connections")
    }
}
