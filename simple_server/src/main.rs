//! # Lesson 1 — the iterative server
//!
//! One thread, one loop: accept a connection, serve it until it ends, accept the next. There is
//! no concurrency at all — while one client is being served, every other client waits in the
//! kernel's accept queue. It is the baseline every later rung is measured against, and the one
//! place where every syscall of a TCP server is spelled out: the accept side in this file, the
//! per-connection side (recv, send, shutdown, close) in `src/lib.rs`.
//!
//! ```text
//!            kernel                                   this process (one thread)
//!   SYN ──► [ accept queue: c2 c3 c4 … ]      ┌──────────────────────────────────┐
//!                        │                    │ loop {                           │
//!                        └── accept4(2) ─────►│   conn = accept4(listener)       │
//!                                             │   handle_conn(conn):             │
//!   c1 ◄──── send(2) ◄── session ◄── recv(2) ─│     recv → session → send …      │
//!                                             │     … until c1 closes            │
//!                                             │ }                                │
//!                                             └──────────────────────────────────┘
//! ```
//!
//! ## What to notice
//! - The four syscalls of every TCP server: `socket`, `bind`, `listen`, `accept4` (section
//!   "listen" and "the model").
//! - `listen`'s backlog is a queue the *kernel* fills: clients complete their handshake and
//!   wait there although nobody is serving them yet.
//! - Every way `accept` can fail is handled on purpose; none of them stops the server
//!   (`after_accept_error` in `src/lib.rs`).
//! - The per-connection loop, `handle_conn` in `src/lib.rs` (read it next: it is the second half
//!   of this lesson, and lessons 2–6 call it): recv → session → send, looping on partial writes,
//!   treating a reset or silent client as that client's problem only.
//!
//! ## Where it breaks
//! A keep-alive client is served until *it* decides to leave: `wrk -c10` with keep-alive gets
//! one connection served and nine starving. With `Connection: close` they take turns — which is
//! all a benchmark that closes after every request ever sees of this model. One slow client
//! (`--delay-ms`) stalls everyone. Lesson 2 (`cgi_process_server`) serves each connection in its
//! own process.
//!
//! ## Try it
//! ```text
//! cargo run --release -p simple_server
//! wrk -t2 -c10 -d5s -H 'Connection: close' http://127.0.0.1:8080/   # they take turns
//! wrk -t2 -c10 -d5s http://127.0.0.1:8080/                           # one served, nine starve
//! ```
//!
//! ## Compare with
//! UNP's `serv00.c` (W. R. Stevens, *Unix Network Programming*, vol. 1, 3rd ed., whose server
//! chapter has one file per model; source at <http://www.unpbook.com/src.html>); lesson 2,
//! `cgi_process_server`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, accept4, bind, setsockopt, socket, sockopt,
};
use server_common::cli::CommonArgs;
use server_common::proto::{Config, Session};
use server_common::stats::{Counters, Stats};
use server_common::{Context, SetupError, net, shutdown};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 1, the iterative server: one thread accepts a connection and serves it to completion
/// before it accepts the next. While one client keeps its connection open, every other client
/// waits in the kernel's accept queue.
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

/// socket → setsockopt → bind → listen. Later lessons call `server_common::net::listener`,
/// which is these same lines.
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let addr = args.addr;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };

    // socket(2): a TCP endpoint, bound to nothing yet. SOCK_CLOEXEC closes it in any program
    // we might exec, so no descriptor of ours ever leaks into a child.
    let listener = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .context("cannot create a socket")?; // listener: owned here, closed on drop

    // setsockopt(2) SO_REUSEADDR: without it, restarting the server fails with EADDRINUSE
    // while connections of the previous run sit in TIME_WAIT for a minute.
    setsockopt(&listener, sockopt::ReuseAddr, &true).context("cannot set SO_REUSEADDR")?;

    // bind(2): claim IP:PORT. Port 0 asks the kernel to pick a free one.
    bind(listener.as_raw_fd(), &SockaddrStorage::from(addr))
        .context(format!("cannot bind {addr}"))?;

    // listen(2): from now on the kernel completes handshakes by itself and queues the new
    // connections — up to `backlog`, clamped to net.core.somaxconn — until we accept them.
    // (A two-line helper: nix's `Backlog` type refuses values above 4096 that Linux accepts.)
    net::listen_backlog(&listener, args.backlog).context(format!("cannot listen on {addr}"))?;
    Ok(listener)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    // Counters for the summary; no workers in this model.
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?;
    let listener = listen(&args.common)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (simple_server, pid N)"
    let config = args.common.session_config();
    let idle = args.common.idle_timeout();

    loop {
        // accept4(2): take the oldest completed connection off the queue, or sleep until there
        // is one. SOCK_CLOEXEC as for the listener.
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // Each way accept can fail is a *client's* or a *moment's* problem, never a reason to
            // stop serving: `after_accept_error` (src/lib.rs) matches every case — retry at
            // once, or back off when out of descriptors — and lessons 2–6 call it too.
            Err(e) => {
                simple_server::after_accept_error(NAME, e);
                continue;
            }
        };
        // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns; OwnedFd takes
        // sole ownership and closes it exactly once, when dropped.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) }; // conn: owned here, moved to handle_conn

        let live = stats.accepted(0); // counts it; "live" until dropped
        // THE MODEL: nothing else happens until this connection is finished. The next client
        // waits in the accept queue for as long as this one keeps its connection open.
        handle_conn(conn, config, idle, stats.worker(0));
        drop(live);
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Serves one connection to its end: the client closes, asks to close, errs, or goes silent
/// for `--idle-timeout`. Every failure ends this connection only.
fn handle_conn(conn: OwnedFd, config: Config, idle: Option<Duration>, counters: &'static Counters) {
    // A fresh protocol session per connection: sans-IO (server_common::proto), it decides what
    // to answer and when to close, and counts requests into `counters`.
    let session = Session::new(config, counters);
    // The blocking loop, in src/lib.rs — read it next: SO_RCVTIMEO/SO_SNDTIMEO for the idle
    // timeout, then recv(2) → session → send(2) everything owed (partial writes too), EINTR
    // retried, EOF, ECONNRESET/EPIPE as the client's departure, and a lingering close when the
    // client may still be sending. Lessons 2–6 call this same function, "(lesson 1)".
    simple_server::handle_conn(NAME, conn, idle, session); // conn: moved, closed inside
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0. The shared crate blocks both signals in this thread (so
/// `accept4` and `recv` above are never interrupted by them) and waits for them in a thread of
/// its own, which prints the summary and ends the process; the kernel then closes the listener
/// and any connection still open. Nothing in the model has to poll a "stop" flag.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
