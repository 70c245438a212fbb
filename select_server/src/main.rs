//! # Lesson 8 — select(2) and its FD_SETSIZE
//!
//! One thread, and for the first time the kernel tells us *which* sockets are ready. Each turn
//! the loop rebuilds two bitmaps — "tell me when these can be read", "… written" — with one
//! bit per descriptor number, hands them to `select`, sleeps until at least one socket is ready,
//! and finds the ready ones in the bitmaps the kernel rewrote. No more burning a core while
//! idle (lesson 7). But a bitmap is `FD_SETSIZE` = 1024 bits: a descriptor numbered 1024 or
//! more cannot be watched at all, so this server serves about a thousand clients, at most.
//!
//! ```text
//!   every turn:  readfds  = { listener, c1, c2, c4 }      (bit i = descriptor i, i < 1024)
//!                writefds = { c3 }                        (only c3 owes output)
//!                      │ select(2): sleeps until one is ready, rewrites both sets
//!                      ▼
//!                readfds  = { c2 }      writefds = { c3 }
//!                      │ test every connection's bit
//!                      ▼
//!   c2, c3: Conns::on_ready (lesson 7) → Want → the bits of the next turn
//!
//!   accept4 → descriptor 1024?  → cannot be a bit: close it at once, count it
//! ```
//!
//! ## What to notice
//! - The sets are rebuilt every turn, because `select` overwrites them with its answer — and
//!   nix ties an `FdSet` to the sockets it borrows, so it cannot outlive a turn anyway.
//! - Write interest only while output is owed; no read interest while backpressure pauses
//!   reading. Level-triggered: asking for what we do not want wakes us at once, for ever.
//! - FD_SETSIZE: `FD_SET` on descriptor 1024 writes past the bitmap in C; nix's `FdSet` panics
//!   instead. We check first: such a connection is accepted and closed at once (the client
//!   sees EOF), counted in the summary (`refused over FD_SETSIZE`), and logged at most once a
//!   second — and the first thousand clients go on being served.
//!
//! ## Where it breaks
//! At 1,024 descriptors: no select server holds 10,000 clients. This one refuses about 9,000
//! of 10,000, on purpose and without falling over. And each turn costs O(highest descriptor) in
//! the kernel and in our scan. Lesson 9 (`poll_server`) drops the bitmap for an array.
//!
//! ## Try it
//! ```text
//! cargo run --release -p select_server -- --idle-timeout 600
//! cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:8080 10000 10
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! ## Compare with
//! Eli Bendersky's `select-server.c`
//! (<https://github.com/eliben/code-for-blog/tree/HEAD/2017/async-socket-server>); lesson 7
//! (`nonblocking_busy_server`), whose connection code this loop drives; lesson 9,
//! `poll_server`, line by line.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::sys::select::{FD_SETSIZE, FdSet, select};
use nix::sys::time::TimeVal;
use nonblocking_busy_server::{Conns, Ready, Want}; // lesson 7: the connection and its table
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::stats::Stats;
use server_common::{SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

/// Connections closed at accept because their descriptor was ≥ FD_SETSIZE (read by the
/// signal thread for the summary, hence an atomic).
static REFUSED: AtomicU64 = AtomicU64::new(0);

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 8, select(2): one thread rebuilds two descriptor bitmaps each turn and sleeps in
/// select until a socket is ready. The bitmaps hold descriptors below FD_SETSIZE (1024) only:
/// a connection numbered higher is accepted and closed at once, and counted.
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

/// A non-blocking listener (see lesson 7).
fn listen(args: &CommonArgs) -> Result<OwnedFd, SetupError> {
    net::listener(args.addr, args.backlog, Blocking::No) // owned by the caller
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?;
    let listener = listen(&args.common)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (select_server, pid N)"
    let mut conns = Conns::new(NAME, &args.common, stats); // lesson 7's table
    let mut ready_fds: Vec<(RawFd, Ready)> = Vec::new(); // this turn's answer, reused

    loop {
        // Rebuild both sets from what each connection wants. Every descriptor in `conns` is
        // below FD_SETSIZE (checked at accept), so `insert` cannot panic.
        let now = Instant::now();
        let (mut readfds, mut writefds) = (FdSet::new(), FdSet::new());
        if conns.accepting(now) {
            readfds.insert(listener.as_fd()); // not while paused on EMFILE: it would spin
        }
        // Requests a session held back (lesson 7's per-call budget) are in no socket any more:
        // select cannot report them, so the loop must not sleep while any wait.
        let mut again = false;
        for (_, conn) in conns.iter() {
            again |= conn.needs_revisit();
            let want = conn.want();
            if want.read() {
                readfds.insert(conn.as_fd());
            }
            if want.write() {
                writefds.insert(conn.as_fd());
            }
        }

        // select(2): nfds = highest descriptor + 1 (nix computes it); sleeps until a socket
        // is ready or the next deadline. The timeout is a `timeval` it may modify, so a fresh
        // one each turn.
        let mut timeout = match again {
            true => Some(TimeVal::new(0, 0)),
            false => conns.timeout(now).map(timeval),
        };
        match select(None, &mut readfds, &mut writefds, None, timeout.as_mut()) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue, // a signal (ours are blocked; a debugger's are not)
            Err(e) => {
                // EBADF/EINVAL would be bugs, ENOMEM a moment's: say so, don't spin.
                warn_throttled!("{NAME}: select: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let now = Instant::now(); // one clock read per turn: every deadline below uses it

        // The answer is the sets themselves: test each connection's bits. Collected first,
        // because the sets borrow the sockets that handling may close.
        ready_fds.clear();
        for (fd, conn) in conns.iter() {
            let (r, w) = (
                readfds.contains(conn.as_fd()) || conn.needs_revisit(),
                writefds.contains(conn.as_fd()),
            );
            if r || w {
                // select has no "hang-up" bit: a closed peer just reads as readable (EOF).
                ready_fds.push((
                    fd,
                    Ready {
                        read: r,
                        write: w,
                        hup: false,
                    },
                ));
            }
        }
        let listener_ready = readfds.contains(listener.as_fd());

        for &(fd, ready) in &ready_fds {
            handle_conn(&mut conns, fd, ready, now);
        }
        if listener_ready {
            while let Some(conn) = conns.accept(&listener, now) {
                admit(&mut conns, conn, now);
            }
        }
        // Idle timeouts and lingering closes that are due: dropped, so closed (close(2)).
        drop(conns.sweep(now));
    }
}

/// Takes a new connection into the table — unless select cannot watch it.
fn admit(conns: &mut Conns, conn: OwnedFd, now: Instant) {
    if conn.as_raw_fd() as usize >= FD_SETSIZE {
        // The kernel gives the lowest free number, so this happens only with ~1,020 clients
        // connected. Closed at once: the client reads EOF rather than hang unwatched.
        drop(conn); // close(2): nobody owns it any more
        let n = REFUSED.fetch_add(1, Relaxed) + 1;
        warn_throttled!("{NAME}: descriptor over FD_SETSIZE ({FD_SETSIZE}): refused {n} so far");
        return;
    }
    conns.insert(conn, now); // conn: owned by `conns` now
}

/// A `Duration` as select's `timeval`, rounded up to the microsecond so that it never turns a
/// deadline a few hundred nanoseconds away into a 0 timeout (a spin until the deadline).
fn timeval(d: Duration) -> TimeVal {
    let micros = d.as_nanos().div_ceil(1_000);
    TimeVal::new((micros / 1_000_000) as _, (micros % 1_000_000) as _)
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Runs the connection's handler (lesson 7: write what is owed, read within the budget); its
/// wants become next turn's bits. A finished connection is closed here.
fn handle_conn(conns: &mut Conns, fd: RawFd, ready: Ready, now: Instant) {
    if conns.on_ready(fd, ready, now) == Want::Close {
        drop(conns.remove(fd)); // close(2): its ConnState owned it
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1).
/// The summary adds this model's own line: how many clients FD_SETSIZE turned away.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, || {
        let refused = REFUSED.load(Relaxed).to_string();
        vec![("refused over FD_SETSIZE".to_string(), refused)]
    })
}
