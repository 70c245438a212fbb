//! # Lesson 7 — non-blocking sockets and a busy loop
//!
//! One thread serves every connection at once, without asking the kernel which socket is
//! ready: every socket is non-blocking (`O_NONBLOCK`), so a call that would wait fails at once
//! with `EAGAIN`, and the loop simply tries everything, forever — accept on the listener, then
//! write and read on every connection, then again. It is concurrent (no client waits for
//! another) and it is correct. It is also at 100% of a core when nobody is connected at all,
//! and each turn costs one syscall per open connection, busy or not.
//!
//! ```text
//!   loop {                                   (never sleeps)
//!     accept4(listener)  → EAGAIN most turns
//!     for every conn:
//!       send(what it owes) → EAGAIN if the client's window is full
//!       recv(conn)         → EAGAIN if the client sent nothing   ◄── almost always
//!     sched_yield()      → other tasks on this CPU go first
//!   }
//! ```
//!
//! ## What to notice
//! - `O_NONBLOCK`, set with fcntl(2) on the listener, and with accept4's `SOCK_NONBLOCK` on each
//!   connection: on Linux an accepted socket does **not** inherit it from the listener
//!   (accept(2)). Forget it, and one recv on a client with nothing to say blocks the whole
//!   server: a "non-blocking" server that serves its clients one silence at a time.
//! - `EAGAIN` is not an error: it is "nothing now". This lesson's second file, `conn.rs` (the
//!   connection; read it next), treats it so, and handles partial writes, a bounded output per
//!   connection and the lingering close without ever blocking. Lessons 8–10 reuse it and the
//!   table of connections in `lib.rs`; only the loop below changes.
//! - The loop never sleeps: `top` shows a core at ~100% with no client connected.
//!   `sched_yield(2)` after each turn lets other tasks on this CPU run first (step 4 says how)
//!   without making the spin any cheaper.
//! - The idle timeout needs no timer: every turn checks the clock.
//!
//! ## Where it breaks
//! CPU: a core burnt on `EAGAIN`s, idle or not, and per turn one recv per connection — with
//! 1,000 idle clients, 1,000 failing syscalls before the busy one is looked at again. Lesson 8
//! (`select_server`) asks the kernel which sockets are ready and sleeps until one is.
//!
//! ## Try it
//! ```text
//! cargo run --release -p nonblocking_busy_server
//! top -p $(pgrep nonblocking_busy)                       # ~100% CPU with no client at all
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! strace -c -f -p $(pgrep nonblocking_busy)              # recv: mostly EAGAIN
//! ```
//!
//! ## Compare with
//! Eli Bendersky's `nonblocking-listener.c`, one non-blocking socket retried after each EAGAIN
//! (<https://github.com/eliben/code-for-blog/tree/HEAD/2017/async-socket-server>); lesson 8,
//! `select_server`, which keeps this lesson's connection code and adds the readiness call.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sched::sched_yield;
use nonblocking_busy_server::{Conns, Ready, Want}; // this lesson's lib.rs and conn.rs
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::stats::Stats;
use server_common::{Context, SetupError, shutdown};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 7, non-blocking sockets and a busy loop: one thread puts every socket in O_NONBLOCK
/// mode and, without any readiness call, tries accept, write and read on everything in turn,
/// forever. Concurrent and correct, and a whole core spent even when nobody is connected.
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

/// The listener of lesson 1, then O_NONBLOCK on it: accept4 returns EAGAIN instead of waiting
/// when no client is queued. (Later lessons ask `net::listener` for `Blocking::No`, which
/// creates the socket with `SOCK_NONBLOCK` and saves these two syscalls.)
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned here
    // fcntl(2) F_GETFL/F_SETFL: read the file status flags, add O_NONBLOCK. (Read first: a
    // plain F_SETFL with O_NONBLOCK alone would clear any other flag.)
    let flags = fcntl(listener.as_fd(), FcntlArg::F_GETFL).context("cannot read socket flags")?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(listener.as_fd(), FcntlArg::F_SETFL(flags)).context("cannot set O_NONBLOCK")?;
    Ok(listener) // owned by the caller
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?;
    let listener = listen(&args.common)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (nonblocking_busy_server, pid N)"
    // Every connection, indexed by descriptor (lib.rs; each one a `ConnState`, conn.rs).
    let mut conns = Conns::new(NAME, &args.common, stats);

    loop {
        // One clock read per turn: the idle timeouts below are measured against it.
        let now = Instant::now();

        // 1. Accept — whether or not anyone is queued: EAGAIN says nobody is. `accept`
        //    (lib.rs) calls accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC, retries the errors
        //    that concern one client, and pauses for 100 ms when out of descriptors.
        if conns.accepting(now) {
            while let Some(conn) = conns.accept(&listener, now) {
                conns.insert(conn, now); // conn: owned by `conns` now
            }
        }

        // 2. Every connection, ready or not: "readiness" is simply "try it". `Ready::ALL` lets
        //    the handler write what is owed and read what has come; both end in EAGAIN when
        //    there is nothing to do, which is nearly always.
        for fd in conns.fd_range() {
            if conns.get(fd).is_some() {
                handle_conn(&mut conns, fd, now);
            }
        }

        // 3. Idle timeouts and lingering closes that are due: dropped, so closed (close(2)).
        drop(conns.sweep(now));

        // 4. sched_yield(2). Under the default policy, SCHED_OTHER, there is no "back of the
        //    run queue" to go to (that is SCHED_FIFO/RR). The fair scheduler (EEVDF on this
        //    kernel) runs the eligible task with the earliest virtual deadline, and its
        //    `yield_task_fair` (kernel/sched/fair.c) makes us forfeit the rest of our slice,
        //    unless we already ran ahead of our fair share: our virtual runtime jumps to our
        //    virtual deadline, which moves a slice on. So any other runnable task on this CPU
        //    (wrk, the test runner, your shell) goes first.
        //    Alone on this CPU's run queue, it returns at once: the spin goes on, and `top`
        //    still says 100%. It cannot fail on Linux.
        let _ = sched_yield();
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Tries to write and read one connection (conn.rs: `ConnState::on_ready`); closes it when it
/// is finished. What it
/// *wants* does not matter here: without a readiness call, everything is tried every turn.
fn handle_conn(conns: &mut Conns, fd: RawFd, now: Instant) {
    if conns.on_ready(fd, Ready::ALL, now) == Want::Close {
        drop(conns.remove(fd)); // close(2): its ConnState owned it
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1).
/// The busy loop has no stop flag: process exit closes every descriptor.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
