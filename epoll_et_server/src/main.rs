//! # Lesson 10 — edge-triggered epoll
//!
//! One thread and one epoll(7) instance. Each socket is registered once, when it is accepted;
//! from then on the *kernel* keeps the list of what we watch, and `epoll_wait` hands back only
//! the sockets whose state changed. A turn of the loop costs what the busy connections cost,
//! not what the open ones do: 19,000 idle clients are free. Edge-triggered (`EPOLLET`) means the
//! kernel reports each change once — so whoever is told "readable" must read until the socket is
//! empty, or remember to come back by itself. That rule shapes everything below.
//!
//! ```text
//!                       kernel                          this process (one thread)
//!   c1 ─ data ─► socket ─┐  epoll instance            ┌───────────────────────────────────┐
//!   c2 ─ data ─► socket ─┼─► interest list ─► ready ──►│ epoll_wait → [c1, c7, listener]   │
//!   SYN ──► listener ────┘  (all sockets)    list     │   listener: accept4 until EAGAIN  │
//!                           edges only,               │   c1, c7: on_ready (lesson 7) ┐   │
//!                           once each                 │   budget spent → ready list ◄─┘   │
//!                                                     │   (served next turn, timeout 0)   │
//!                                                     └───────────────────────────────────┘
//! ```
//!
//! ## What to notice
//! - Three syscalls: `epoll_create1(2)` once, `epoll_ctl(2)` once per connection (plus two per
//!   backpressure episode, for `EPOLLOUT`), `epoll_wait(2)` once per turn. Nothing per idle
//!   connection per turn: compare lesson 9's scan of every pollfd.
//! - `EPOLLOUT` is asked for only when a write hit EAGAIN and dropped once the output drained —
//!   never on an idle connection, which would wake the loop for nothing.
//! - The listener is drained with accept4 until EAGAIN. Accept one per event instead and the
//!   rest of a burst stays in the accept queue with no new edge to announce it; under a steady
//!   stream of clients the queue grows until it reaches the backlog, and then the kernel drops
//!   new clients' SYNs: each waits a second or more to send its SYN again.
//! - The fairness trap: "read until EAGAIN" lets one client that sends faster than we read keep
//!   the loop to itself; stopping early forgets its unread input, which no edge will announce
//!   again. So each event reads at most `READS_PER_TURN` times, and a connection left with input
//!   goes on a ready list that the next turn serves, with a zero timeout.
//! - Out of descriptors (EMFILE), accepting pauses for 100 ms and the clients wait in the queue:
//!   `Conns::accept` in lesson 7's `lib.rs` explains why this and not the reserve descriptor
//!   trick. Edge-triggered, the loop must retry by itself: `listener_ready` stays set.
//! - The loop is `event_loop` in this crate's `lib.rs`, a library item so that lesson 11 can run
//!   it N times; this file sets it up. The connection it drives is lesson 7's, unchanged; what
//!   only this loop needs per connection (is EPOLLOUT registered? is it on the ready list?)
//!   stays in a side table of its own.
//!
//! ## Where it breaks
//! One thread is one core: `--work 100` saturates it, and one `--delay-ms` request stalls every
//! client. Lesson 11 (`multi_epoll_server`) runs one such loop per core; lesson 14
//! (`epoll_pool_server`) keeps one loop and hands the costly work to a pool of threads.
//!
//! ## Try it
//! ```text
//! cargo run --release -p epoll_et_server -- --idle-timeout 600
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:8080 19000 30
//! ```
//!
//! ## Compare with
//! nginx's `ngx_epoll_module.c` and `ngx_event_accept.c`; mio; Eli Bendersky's `epoll-server.c`
//! (<https://github.com/eliben/code-for-blog/tree/HEAD/2017/async-socket-server>); lesson 9,
//! `poll_server` (the same loop, level-triggered, scanning); lesson 7's `conn.rs`.

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use clap::Parser;
use epoll_et_server::{event_loop, new_epoll}; // this lesson's lib.rs: the loop
use nix::sys::epoll::Epoll;
use nonblocking_busy_server::Conns; // lesson 7: the connection and its table
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::stats::Stats;
use server_common::{SetupError, shutdown};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 10, edge-triggered epoll: one thread registers every socket once with epoll(7) and
/// sleeps in epoll_wait(2), which returns only the sockets whose state changed. Idle connections
/// cost nothing per turn; each report must be drained, since it will not be repeated.
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

/// A non-blocking listener (see lesson 7), and the epoll instance that watches it (lib.rs).
fn listen(args: &CommonArgs) -> Result<(OwnedFd, Epoll), SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::No)?; // owned here
    let epoll = new_epoll(&listener)?;
    Ok((listener, epoll)) // both owned by the caller
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// One loop, on this thread, for ever: `event_loop` (lib.rs) with lesson 7's table of
/// connections, counting into worker slot 0.
fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?;
    let (listener, epoll) = listen(&args.common)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (epoll_et_server, pid N)"
    event_loop(&listener, &epoll, Conns::new(NAME, &args.common, stats)) // lesson 7's table
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

// `handle_conn` in lib.rs: lesson 7's handler, then what its answer means for epoll — interest
// changed with epoll_ctl only when EPOLLOUT must come or go, and the ready list.

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1).
/// The loop has no stop flag: process exit closes the listener, the epoll instance and every
/// connection.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
