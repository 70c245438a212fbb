//! # Lesson 12 — tokio, the production reference
//!
//! Lesson 3's code on lesson 10's engine, on every core. Each connection is a *task*: an
//! `async fn`, written like the blocking loop of lessons 1–6, that the compiler turns into a
//! state machine of a few hundred bytes. Where the loop would block, the task returns to the
//! scheduler and its thread runs another. What lessons 7–11 wrote by hand — non-blocking
//! sockets, epoll, EAGAIN, the ready list, the per-connection state machine, the timeouts — is
//! underneath, in tokio and mio; this file is what is left.
//!
//! ```text
//!              kernel                         this process: a tokio runtime, one worker per CPU
//!   c1 ─► socket ─┐                 ┌─────────────────────────────────────────────────────────┐
//!   c2 ─► socket ─┼─► epoll ───────►│ I/O driver: epoll_wait by an idle worker; each event    │
//!   SYN ► listener┘   instance      │   wakes the task waiting on that socket (its waker)     │
//!                     (mio, ET)     │ worker 1: LIFO slot + run queue ◄─ steal ─► worker 2 …  │
//!                                   │   task accept_loop: accept().await → spawn(handle_conn) │
//!                                   │   task handle_conn(c1): read.await → feed → write.await │
//!                                   │ timer wheel: idle timeouts, the lingering close's limit │
//!                                   └─────────────────────────────────────────────────────────┘
//! ```
//!
//! ## What to notice
//! - `handle_conn` reads like lesson 1's, yet no thread blocks in it: each `.await` on a socket
//!   is a non-blocking syscall, and on EAGAIN the task parks and its thread moves on. Compare
//!   it with lesson 7's `ConnState` (`nonblocking_busy_server/src/conn.rs`), which tokio replaces.
//! - Backpressure is free: the next read waits for the last write (`docs/contract.md` §4). So
//!   is fairness: tokio's coop budget makes a task yield after 128 ready operations (lesson
//!   10's `READS_PER_TURN`).
//! - Not `#[tokio::main]`: its runtime, and its threads, would exist before our first line, and
//!   the signal mask must be set before any thread is spawned (see lesson 1).
//! - What a runtime makes cheap, and what it does not: a waiting task holds no buffer — it
//!   awaits *readability*, then reads into its worker thread's one scratch buffer, borrowed
//!   only until the bytes are fed to the session (lesson 10 does the same with its loop's).
//!   What stays is the task itself, its timer and its socket's slot in the I/O driver; a task
//!   that awaited `read(&mut buf)` would keep `buf` for as long as it waits. `src/conn_io.rs`
//!   holds the socket calls, each written so that a waiting task stays small.
//!
//! ## Where it breaks
//! `--delay-ms` blocks a worker thread and the tasks queued behind it (tokio's answer is
//! `spawn_blocking`); the coop budget does not preempt CPU-bound code (`--work`). Tasks move
//! between threads, so whatever they share must be `Send + Sync`; lesson 11 keeps each
//! connection on one loop and shares nothing. Lesson 13 (`io_uring_server`) drops readiness.
//!
//! ## Try it
//! ```text
//! cargo run --release -p tokio_server
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/                    # and `top -H`: the workers
//! cargo run --release -p tokio_server -- --proto echo --addr 127.0.0.1:9000
//! cargo run --release -p echo_client -- --addr 127.0.0.1:9000 -c 100 -n 5000
//! ```
//!
//! ## Compare with
//! mini-redis's `server.rs` (the same accept loop, a task per connection); axum's `serve`
//! (accept errors); lesson 10, `epoll_et_server`, for what tokio does; lesson 11,
//! `multi_epoll_server`, for a loop per core without work stealing.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nonblocking_busy_server::ACCEPT_BACKOFF; // (lesson 7) the pause after EMFILE
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::proto::{Flow, Session};
use server_common::stats::{LiveConn, Stats};
use server_common::{Context, SetupError, shutdown, warn_throttled};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

mod conn_io; // the connection's syscalls, sized so that a waiting task stays small
use conn_io::{linger_close, read_once, send_all, timed_out, within};

const NAME: &str = env!("CARGO_PKG_NAME");

/// jemalloc instead of glibc's malloc, as many tokio servers in production run. An idle
/// connection is two heap blocks tokio aligns to 128 bytes (the task, the socket's I/O
/// registration). glibc carves an aligned block out of a larger one and frees the pieces it cut
/// off: holes an idle server has nothing to fill with. jemalloc's slots of those sizes are
/// aligned already (640 = 5 × 128). README: "What the allocator costs".
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 12, tokio: a task per connection, written like blocking code, on a work-stealing
/// runtime with one worker thread per CPU. tokio's epoll driver, scheduler and timer wheel do
/// what lessons 7–11 did by hand.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    server_common::exit_with(NAME, run(Args::parse()))
}

// ─── listen ─────────────────────────────────────────────────────────────────────────────────

/// The contract's listener (lesson 1's syscalls; non-blocking, lesson 7), handed to tokio.
/// Not tokio's `TcpListener::bind`: it listens with std's fixed backlog of 128, and `--backlog`
/// is ours to honour. `from_std` registers it with the runtime's epoll (epoll_ctl ADD, once).
fn listen(args: &CommonArgs) -> Result<TcpListener, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::No)?; // owned here
    let listener = std::net::TcpListener::from(listener); // owned by std's type now
    TcpListener::from_std(listener).context("cannot register the listener with tokio") // tokio's
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?; // first: every thread the runtime spawns inherits the signal mask
    // One worker thread per CPU (tokio's default), each with its own run queue; an idle worker
    // steals half of a busy one's. Whichever worker runs out of work sleeps in epoll_wait for
    // all (lesson 10's loop), and a busy one checks it every 61 tasks. Lesson 11 has a loop per
    // core too, but a connection stays on its loop for life; here it goes where a thread is free.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all() // the I/O driver (epoll) and the timer wheel
        .build()
        .context("cannot start the tokio runtime")?;
    let _inside = runtime.enter(); // `from_std` needs the runtime's epoll instance
    let listener = listen(&args.common)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (tokio_server, pid N)"
    // The accept loop is a task on a worker, not `block_on`'s future on this thread: a task
    // spawned by a worker goes into that worker's LIFO slot and runs next, no thread woken.
    let accepting = runtime.spawn(accept_loop(listener, args.common, stats));
    runtime.block_on(accepting).context("the accept loop ended") // never: it loops for ever
}

async fn accept_loop(listener: TcpListener, args: CommonArgs, stats: &'static Stats) {
    let (config, idle) = (args.session_config(), args.idle_timeout());
    loop {
        // accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC (mio). The listener counts as readable
        // until accept4 says EAGAIN, so this loop drains a burst (lesson 10's rule); then the
        // task sleeps until epoll reports the listener again.
        let conn = match listener.accept().await {
            Ok((conn, _peer)) => conn, // owned here, moved into its task below
            Err(e) => {
                after_accept_error(e).await;
                continue;
            }
        };
        let session = Session::new(config, stats.worker(0));
        // A task: one heap allocation of a few hundred bytes, instead of a thread and its stack.
        tokio::spawn(handle_conn(conn, session, idle, stats.accepted(0)));
    }
}

/// accept(2) failed. Nothing here stops the server (`docs/contract.md` §7).
async fn after_accept_error(e: io::Error) {
    match e.raw_os_error().map(Errno::from_raw) {
        // A signal, or one queued client's problem (net::RETRY_ACCEPT, lesson 1): at once.
        Some(e) if net::RETRY_ACCEPT.contains(&e) => {}
        // Out of descriptors or memory: the listener stays readable, so retrying at once would
        // spin. Pause — an async sleep: this worker serves on — and leave clients queued.
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
            warn_throttled!("{NAME}: accept: {e}; pausing accept for 100 ms");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
        // Anything else is unexpected: say so, and pause rather than spin on it.
        _ => {
            warn_throttled!("{NAME}: accept: {e}");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Serves one connection to its end, like lesson 1's `handle_conn` — but each `.await` is
/// where lesson 10 returns to its loop. `poll_read_ready` returns Pending until epoll has
/// reported the socket readable, keeping this task's *waker*; epoll's next event calls it, which
/// queues the task again. `try_read` then calls recv(2); on EAGAIN tokio clears the readiness.
///
/// A plain fn returning an `async move` block, not an `async fn`: an async fn's state keeps each
/// argument twice (the argument, and the local it is moved into), here 168 bytes per task.
#[allow(clippy::manual_async_fn)] // on purpose: see just above
fn handle_conn(
    conn: TcpStream,
    mut session: Session,
    idle: Option<Duration>,
    live: LiveConn, // counted open until this task ends
) -> impl Future<Output = ()> {
    async move {
        let _live = &live; // held (not moved) by the task: dropped when it ends
        // TCP_NODELAY: each answer leaves at once (lesson 1).
        if let Err(e) = conn.set_nodelay(true) {
            warn_throttled!("{NAME}: TCP_NODELAY: {e}");
        }
        let mut out = Vec::new(); // what is owed: all written before reading on
        // When a head that started arriving must be whole (--head-timeout from its first byte):
        // while part of a head waits, a read may wait only until then.
        let mut head_by: Option<Instant> = None;
        loop {
            let left = head_by.map(|t| t.saturating_duration_since(Instant::now()));
            // Wait for readability (epoll said so), holding no buffer; then one recv(2). poll_fn
            // over poll_read_ready, not `readable()`: the waker waits in the socket's own reader
            // slot, where `readable()` would keep a 152-byte waiter node in this task.
            let readable = std::future::poll_fn(|cx| conn.poll_read_ready(cx));
            let ready = timed_out(within(idle.into_iter().chain(left).min(), readable).await);
            let mut flow = match ready.and_then(|()| read_once(&conn, &mut session, &mut out)) {
                Ok(Some(flow)) => flow,
                Ok(None) => continue, // EAGAIN after all: tokio cleared the readiness, wait again
                // Past the head's deadline: 408, then a lingering close (best effort).
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        && head_by.is_some_and(|t| t <= Instant::now()) =>
                {
                    session.head_timeout(&mut out);
                    if send_all(&conn, &out, idle).await.is_ok() {
                        Box::pin(linger_close(conn)).await; // boxed: see linger_close
                    }
                    return;
                }
                Err(e) => return gone(e), // reset, or silent for --idle-timeout
            };
            // All owed goes out before reading on, and the requests the session held back after it.
            loop {
                if let Err(e) = send_all(&conn, &out, idle).await {
                    return gone(e);
                }
                out.clear(); // keeps its capacity
                if flow != Flow::Continue || !session.backlog() {
                    break;
                }
                // A write that did not wait used none of tokio's coop budget (try_write is not
                // a tokio operation): count each batch of answers here, so that a client
                // pipelining thousands of requests yields this worker every 128 batches, as
                // `write().await` would (docs/contract.md §4, fairness).
                tokio::task::consume_budget().await;
                flow = session.feed(&[], &mut out);
            }
            let by = head_by.or_else(|| Some(Instant::now() + session.head_limit()?));
            head_by = session.head_pending().then_some(by).flatten();
            match flow {
                Flow::Continue => {}
                Flow::Close { linger: true } => return Box::pin(linger_close(conn)).await,
                Flow::Close { linger: false } => return, // dropped: epoll_ctl DEL, close(2)
            }
        }
    }
}

/// A connection's error ends that connection only. The usual ones are not news.
fn gone(e: io::Error) {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | BrokenPipe | TimedOut | ConnectionAborted => {}
        _ => warn_throttled!("{NAME}: connection: {e}"),
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1).
/// The runtime is never shut down: `_exit(2)` ends its threads, and the kernel closes every
/// socket, idle or not.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use server_common::cli::Proto;
    use server_common::proto::Config;

    /// What an idle connection costs besides its socket: this future (in its task, on the
    /// heap) and its `out` (empty until the first answer); no read buffer. Lesson 10: a slot of
    /// its table. (In a test, a failing `expect` is a failing test.)
    #[test]
    fn a_connection_task_is_a_few_hundred_bytes_and_holds_no_buffer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            let conn = TcpStream::connect(addr).await.expect("connect");
            let stats = Stats::new_shared(None);
            let session = Session::new(Config::new(Proto::Http), stats.worker(0));
            let idle = Some(Duration::from_secs(60));
            let task = handle_conn(conn, session, idle, stats.accepted(0));
            let size = size_of_val(&task);
            println!("bytes per connection future: {size}, and no read buffer");
            assert!(size <= 512, "{size}");
        });
    }
}
