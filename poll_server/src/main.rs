//! # Lesson 9 — poll(2)
//!
//! One thread, one array. Each connection has an entry in a `Vec` of `pollfd`s — descriptor,
//! the events we want, the events that happened — kept in step with the connections: pushed at
//! accept, edited when a connection's wants change, removed when it closes. One `poll` call
//! sleeps until any entry is ready, then the loop scans the whole array for the ready ones.
//! No FD_SETSIZE any more (lesson 8's wall): the array is as long as we like. But every call
//! copies the whole array into the kernel, which checks every socket, and the scan afterwards
//! visits every entry — O(open connections) per turn, however few of them are busy.
//!
//! ```text
//!   pollfds: [ listener | c1 IN | c2 IN | c3 IN|OUT | … | c15000 IN ]
//!                 │  poll(2): copied in, every socket checked, copied out
//!                 ▼
//!   revents: [    -     |   -   |  IN   |    -      | … |    -      ]
//!                 │  the scan: visit ALL entries to find the few with revents
//!                 ▼
//!   c2: Conns::on_ready (lesson 7) → Want → set_events (IN, IN|OUT, OUT) or remove
//! ```
//!
//! ## What to notice
//! - Interest lives in *our* memory and travels to the kernel on every call; lesson 10 keeps
//!   it in the kernel instead.
//! - Level-triggered: a socket with unread input is reported on every call, so the handler may
//!   stop reading when its budget is spent and nothing is lost. The price: a connection must
//!   not ask for what it does not want — write interest only while output is owed, and no read
//!   interest while backpressure pauses reading — or poll returns at once, for ever.
//! - Out of descriptors, the listener's entry asks for nothing until the pause ends, or it
//!   would stay readable and spin the loop (see `Conns::accept`, lesson 7's `lib.rs`).
//! - The idle timeout and lingering closes come from poll's timeout (`conns.timeout`).
//!
//! ## Where it breaks
//! With 15,000 idle connections beside 100 busy ones, every turn still copies and checks 15,100
//! entries: each turn costs more as idle connections grow, however little they do (see the
//! README's numbers). Lesson 10 (`epoll_et_server`) asks the kernel to remember the interest
//! and report only what changed.
//!
//! ## Try it
//! ```text
//! cargo run --release -p poll_server -- --idle-timeout 600
//! cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:8080 15000 40 &
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! ## Compare with
//! Eli Bendersky's servers (the select and epoll ones; poll sits between them:
//! <https://github.com/eliben/code-for-blog/tree/HEAD/2017/async-socket-server>); libevent's
//! `poll.c`; lesson 8, `select_server`, and lesson 10, `epoll_et_server`, line by line.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nonblocking_busy_server::{Conns, Ready, Want, millis}; // lesson 7: the connection and its table
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::stats::Stats;
use server_common::{SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 9, poll(2): one thread keeps an array of pollfds, one per connection, and sleeps in
/// poll until any is ready. No descriptor limit, but every call hands the kernel the whole
/// array and every turn scans it: the cost grows with the open connections, busy or not.
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
    net::announce(NAME, &listener)?; // "listening on IP:PORT (poll_server, pid N)"
    let mut conns = Conns::new(NAME, &args.common, stats); // lesson 7's table
    // pollfds[0] is the listener; pollfds[1..] are the connections, in no particular order.
    let mut pollfds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];

    loop {
        // The listener asks for nothing while accepting is paused (EMFILE), or poll would
        // return at once for a queue we will not take from.
        let now = Instant::now();
        let accept = if conns.accepting(now) {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        pollfds[0].set_events(accept);

        // poll(2): copies the array in, checks every socket, sleeps until one is ready or the
        // next deadline (in whole milliseconds, rounded up: lesson 7), writes `revents` back.
        // Requests a session held back (lesson 7's per-call budget) are in no socket any more:
        // poll cannot report them, so it must not sleep while any wait.
        let again = conns.iter().any(|(_, c)| c.needs_revisit());
        let timeout = match again {
            true => PollTimeout::ZERO,
            false => millis(conns.timeout(now)),
        };
        match poll(&mut pollfds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue, // a signal (ours are blocked; a debugger's are not)
            Err(e) => {
                // EINVAL/ENOMEM: not expected below RLIMIT_NOFILE. Say so, don't spin.
                warn_throttled!("{NAME}: poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let now = Instant::now(); // one clock read per turn: every deadline below uses it

        // THE SCAN: every entry, to find the few that are ready. Closing swaps the last entry
        // into slot `i`, which is then looked at next.
        let mut i = 1;
        while i < pollfds.len() {
            // `None`: flags nix does not know; treat them as "try everything".
            let mut revents = pollfds[i].revents().unwrap_or(PollFlags::all());
            let fd = pollfds[i].as_fd().as_raw_fd();
            if again && conns.get(fd).is_some_and(|c| c.needs_revisit()) {
                revents |= PollFlags::POLLIN; // its held-back requests, as if readable
            }
            if revents.is_empty() {
                i += 1;
                continue;
            }
            let ready = ready_from(revents);
            match handle_conn(&mut conns, fd, ready, now) {
                Some(events) => {
                    pollfds[i].set_events(events);
                    i += 1;
                }
                None => {
                    pollfds.swap_remove(i); // forget the descriptor first …
                    drop(conns.remove(fd)); // … then close(2) it: owned by its ConnState
                }
            }
        }

        if pollfds[0].any().unwrap_or(true) && conns.accepting(now) {
            // Level-triggered: draining is not required, but one call per connection would
            // cost one poll round trip per client of a burst.
            while let Some(conn) = conns.accept(&listener, now) {
                let fd = conns.insert(conn, now); // conn: owned by `conns` now
                pollfds.push(pollfd(fd, Want::Read));
            }
        }

        // Idle timeouts and lingering closes that are due: forget their entries, then drop
        // them (close(2)).
        let expired = conns.sweep(now);
        if !expired.is_empty() {
            pollfds.retain(|p| {
                let fd = p.as_fd().as_raw_fd();
                fd == listener.as_raw_fd() || conns.get(fd).is_some()
            });
        }
        drop(expired);
    }
}

/// A pollfd entry for connection `fd`, asking for what it wants.
fn pollfd(fd: RawFd, want: Want) -> PollFd<'static> {
    // SAFETY: nix's PollFd borrows the descriptor so that it cannot close while polled. Our
    // entries outlive any one borrow (they stay in `pollfds` across turns while `conns` owns the
    // sockets), so we vouch instead: an entry is removed before its connection is dropped
    // (swap_remove above, retain after the sweep), so `fd` is open for as long as it exists.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    PollFd::new(fd, interest(want))
}

/// What `revents` say about the socket. POLLHUP, POLLERR: the client is gone or the socket
/// erred — read and write to find out which (recv/send return the error); POLLNVAL would be our
/// bug (a closed descriptor), and ends the connection the same way.
fn ready_from(revents: PollFlags) -> Ready {
    let error = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
    Ready {
        read: revents.intersects(PollFlags::POLLIN | error),
        write: revents.intersects(PollFlags::POLLOUT | error),
        hup: revents.intersects(error),
    }
}

/// What to ask poll for, given what the connection wants.
fn interest(want: Want) -> PollFlags {
    let mut flags = PollFlags::empty();
    flags.set(PollFlags::POLLIN, want.read());
    flags.set(PollFlags::POLLOUT, want.write());
    flags
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Runs the connection's handler (lesson 7: write what is owed, read within the budget) and
/// returns the events its entry should ask for next — `None` when it is finished.
fn handle_conn(conns: &mut Conns, fd: RawFd, ready: Ready, now: Instant) -> Option<PollFlags> {
    match conns.on_ready(fd, ready, now) {
        Want::Close => None,
        want => Some(interest(want)),
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1).
/// The loop has no stop flag: process exit closes every descriptor.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
