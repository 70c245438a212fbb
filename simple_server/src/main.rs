//! # Lesson 1 — the iterative server
//!
//! One thread, one loop: accept a connection, serve it until it ends, accept the next. There is
//! no concurrency at all — while one client is being served, every other client waits in the
//! kernel's accept queue. It is the baseline every later rung is measured against, and the one
//! place where every syscall of a TCP server is spelled out.
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
//! - Every way `accept` can fail is handled on purpose; none of them stops the server.
//! - The per-connection loop (`server_common::blocking::serve`, read it next) loops on partial
//!   writes and treats a reset client as that client's problem.
//!
//! ## Where it breaks
//! A keep-alive client is served until *it* decides to leave: `wrk -c10` with keep-alive gets
//! one connection served and nine starving. With `Connection: close` they take turns, which is
//! all LearnServer's benchmark ever measured. One slow client (`--delay-ms`) stalls everyone.
//! Lesson 2 (`cgi_process_server`) serves each connection in its own process.
//!
//! ## Try it
//! ```text
//! cargo run --release -p simple_server
//! wrk -t2 -c10 -d5s -H 'Connection: close' http://127.0.0.1:8080/   # they take turns
//! wrk -t2 -c10 -d5s http://127.0.0.1:8080/                           # one served, nine starve
//! ```
//!
//! ## Compare with
//! UNP's `serv00.c`; LearnServer's `simple_server.py`; lesson 2, `cgi_process_server`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, accept4, bind, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use server_common::blocking;
use server_common::cli::CommonArgs;
use server_common::proto::{Config, Session};
use server_common::stats::{Counters, Stats};
use server_common::{Context, SetupError, net, shutdown, warn_throttled};

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
        // is one. SOCK_CLOEXEC as for the listener. Each error below is a *client's* or a
        // *moment's* problem, never a reason to stop serving.
        let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // A signal handler interrupted the wait. (Ours are blocked; a debugger's are not.)
            Err(Errno::EINTR) => continue,
            // The client reset its connection while it sat in the queue: nothing to serve.
            Err(Errno::ECONNABORTED) => continue,
            // accept(2), "Error handling": Linux reports a queued connection's network errors
            // here; the man page says to treat them like EAGAIN and accept again.
            Err(
                Errno::ENETDOWN
                | Errno::EPROTO
                | Errno::ENOPROTOOPT
                | Errno::EHOSTDOWN
                | Errno::ENONET
                | Errno::EHOSTUNREACH
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH,
            ) => continue,
            // Out of descriptors (EMFILE: ours, ENFILE: the system's) or of kernel memory.
            // Retrying at once would spin at 100% CPU on the same error, so back off. The client
            // stays queued and is served as soon as a descriptor frees up.
            Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                warn_throttled!("{NAME}: accept: {e}; backing off");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                warn_throttled!("{NAME}: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
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
    // setsockopt(2) SO_RCVTIMEO/SO_SNDTIMEO: a recv or send that waits longer than the idle
    // timeout fails with EAGAIN. Without them a silent client would hold this server — its one
    // and only thread — forever. Later lessons call `net::set_io_timeouts` (these lines).
    if let Some(t) = idle {
        let tv = TimeVal::new(t.as_secs() as _, 0);
        let set = setsockopt(&conn, sockopt::ReceiveTimeout, &tv)
            .and_then(|()| setsockopt(&conn, sockopt::SendTimeout, &tv));
        if let Err(e) = set {
            warn_throttled!("{NAME}: setsockopt on a new connection: {e}");
            return; // conn dropped: close(2)
        }
    }
    // TCP_NODELAY: send each response at once. With Nagle's algorithm on, a small write that
    // follows an unacknowledged one waits for the client's (possibly delayed) ACK.
    if let Err(e) = setsockopt(&conn, sockopt::TcpNoDelay, &true) {
        warn_throttled!("{NAME}: TCP_NODELAY: {e}");
    }

    // recv(2) → session → send(2) until the end, then close(2): the loop every blocking lesson
    // shares (server_common/src/blocking.rs). It retries EINTR, sends partial writes until
    // done, turns SO_RCVTIMEO's EAGAIN into an idle close, and treats ECONNRESET/EPIPE as the
    // client's departure. The session (sans-IO, server_common/src/proto.rs) decides what to
    // answer and when to close.
    let _end = blocking::serve(conn, Session::new(config, counters)); // conn: moved, closed inside
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0. The shared crate blocks both signals in this thread (so
/// `accept4` and `recv` above are never interrupted by them) and waits for them in a thread of
/// its own, which prints the summary and ends the process; the kernel then closes the listener
/// and any connection still open. Nothing in the model has to poll a "stop" flag.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
