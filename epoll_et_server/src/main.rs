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
//!                           edges only,               │   c1, c7: on_ready (conn.rs) ─┐   │
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
//!   stream of clients the queue grows until it reaches the backlog, and then the kernel refuses
//!   new handshakes (the c10k seed's note 1: "the entire connection queue must be consumed").
//! - The fairness trap: "read until EAGAIN" lets one client that sends faster than we read keep
//!   the loop to itself; stopping early forgets its unread input, which no edge will announce
//!   again. So each event reads at most `READS_PER_TURN` times, and a connection left with input
//!   goes on a ready list that the next turn serves, with a zero timeout.
//! - Out of descriptors (EMFILE), accepting pauses for 100 ms and the clients wait in the queue:
//!   `Conns::accept` in `server_common/src/conn.rs` explains why this and not the reserve
//!   descriptor trick. Edge-triggered, the loop must retry by itself: `listener_ready` stays set.
//!
//! ## Where it breaks
//! One thread is one core: `--work 100` saturates it, and one `--delay-ms` request stalls every
//! client. Lesson 11 (`multi_epoll_server`) runs one such loop per core.
//!
//! ## Try it
//! ```text
//! cargo run --release -p epoll_et_server -- --idle-timeout 600
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! cargo run --release -p epoll_et_server --example idle_clients -- 127.0.0.1:8080 19000 30
//! ```
//!
//! ## Compare with
//! nginx's `ngx_epoll_module.c` and `ngx_event_accept.c`; mio; Eli Bendersky's `epoll-server.c`;
//! lesson 9, `poll_server` (the same loop, level-triggered, scanning); `server_common/src/conn.rs`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use server_common::cli::CommonArgs;
use server_common::conn::{self, Conns, Ready, Want};
use server_common::net::{self, Blocking};
use server_common::stats::Stats;
use server_common::{Context, SetupError, shutdown, warn_throttled};

const NAME: &str = env!("CARGO_PKG_NAME");

/// The listener's token. A connection's token is its descriptor, which is never this.
const LISTENER: u64 = u64::MAX;
/// How many events one epoll_wait may return; more simply wait for the next turn.
const EVENTS: usize = 1024;

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

/// A non-blocking listener (see lesson 7), and the epoll instance that watches it.
fn listen(args: &CommonArgs) -> Result<(OwnedFd, Epoll), SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::No)?; // owned here
    let epoll = watch(&listener)?;
    Ok((listener, epoll))
}

/// A new epoll instance, watching `listener`. (`pub`: lesson 11 makes one per loop.)
pub fn watch(listener: &OwnedFd) -> Result<Epoll, SetupError> {
    // epoll_create1(2): a kernel object holding an interest list (what we watch) and a ready
    // list (what changed). CLOEXEC as for every descriptor of ours.
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("cannot create an epoll")?;
    // epoll_ctl(2) EPOLL_CTL_ADD: watch the listener for new connections, edge-triggered.
    let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, LISTENER);
    epoll
        .add(listener, ev)
        .context("cannot watch the listener")?;
    Ok(epoll)
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?;
    let (listener, epoll) = listen(&args.common)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (epoll_et_server, pid N)"
    event_loop(&listener, &epoll, Conns::new(NAME, &args.common, stats))
}

/// The model: one thread serving every connection of `listener`, for ever. Everything that
/// could differ comes in as an argument, so lesson 11 runs N of these loops side by side —
/// each with its own listener, epoll instance and worker slot (`Conns::for_worker`) — without
/// a copy of this function (`pub` for that). It never returns: the process's exit ends it.
pub fn event_loop(listener: &OwnedFd, epoll: &Epoll, mut conns: Conns) -> ! {
    let mut events = vec![EpollEvent::empty(); EVENTS];
    // Connections whose fairness budget ran out with input unread: no edge will announce that
    // input again, so the loop serves them itself next turn. `round` is last turn's list.
    let (mut ready, mut round) = (Vec::<RawFd>::new(), Vec::<RawFd>::new());
    // An edge on the listener that accept4 has not drained yet (after an EMFILE pause).
    let mut listener_ready = false;

    loop {
        // Sleep until news or the next deadline — unless work is already waiting.
        let now = Instant::now();
        let idle = ready.is_empty() && !(listener_ready && conns.accepting(now));
        let timeout = if idle {
            conn::millis(conns.timeout(now))
        } else {
            PollTimeout::ZERO
        };

        // epoll_wait(2): the ready list, at most EVENTS at a time.
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0, // a signal (ours are blocked; a debugger's are not)
            Err(e) => {
                // Not expected (EBADF, EFAULT, EINVAL are bugs): say so, don't spin.
                warn_throttled!("{NAME}: epoll_wait: {e}");
                std::thread::sleep(Duration::from_millis(10));
                0
            }
        };
        let now = Instant::now(); // one clock read per turn: every deadline below uses it
        std::mem::swap(&mut ready, &mut round);

        for ev in &events[..n] {
            if ev.data() == LISTENER {
                listener_ready = true;
                continue;
            }
            let fd = ev.data() as RawFd; // the token we registered: the descriptor
            handle_conn(epoll, &mut conns, &mut ready, fd, seen(ev.events()), now);
        }
        // Last turn's leftovers, after this turn's news: nobody waits more than one turn.
        for fd in round.drain(..) {
            // `queued` is false if the connection closed (and its descriptor was reused) since.
            if let Some(c) = conns.get_mut(fd).filter(|c| c.queued) {
                c.queued = false;
                handle_conn(epoll, &mut conns, &mut ready, fd, Ready::READ, now);
            }
        }

        if listener_ready && conns.accepting(now) {
            // Drain the accept queue: this edge will not be reported again.
            while let Some(conn) = conns.accept(listener, now) {
                // Registered once, for reading; the token is the descriptor itself.
                let ev = EpollEvent::new(interest(Want::Read), conn.as_raw_fd() as u64);
                match epoll.add(&conn, ev) {
                    Ok(()) => _ = conns.insert(conn, now), // conn: owned by `conns` now
                    // Unwatchable (ENOMEM, or max_user_watches reached): refuse this client.
                    Err(e) => warn_throttled!("{NAME}: epoll_ctl ADD: {e}"), // conn dropped: closed
                }
            }
            // Drained to EAGAIN — unless accepting paused on EMFILE: then retry after it.
            listener_ready = !conns.accepting(now);
        }

        // Idle timeouts and lingering closes that are due: dropped, so closed (close(2) also
        // takes a descriptor out of every epoll interest list).
        drop(conns.sweep(now));
    }
}

/// What an event's flags say about the socket. EPOLLRDHUP: the client sent its FIN; EPOLLHUP,
/// EPOLLERR: reset or error — read and write to find out which (recv/send return the error).
fn seen(flags: EpollFlags) -> Ready {
    let error = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
    Ready {
        read: flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | error),
        write: flags.intersects(EpollFlags::EPOLLOUT | error),
        hup: flags.intersects(EpollFlags::EPOLLRDHUP | error),
    }
}

/// What to ask epoll for, given what the connection wants. EPOLLIN stays on even while
/// backpressure pauses reading: an edge then only marks input as pending, and costs nothing
/// when nobody sends. EPOLLRDHUP reports the client's FIN as such (see conn.rs, short reads).
fn interest(want: Want) -> EpollFlags {
    let base = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    if want.write() {
        base | EpollFlags::EPOLLOUT
    } else {
        base
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// Runs the connection's handler (conn.rs: write what is owed, read within the budget), then
/// turns its answer into epoll interest and the ready list.
fn handle_conn(
    epoll: &Epoll,
    conns: &mut Conns,
    ready: &mut Vec<RawFd>,
    fd: RawFd,
    seen: Ready,
    now: Instant,
) {
    let want = conns.on_ready(fd, seen, now);
    if want == Want::Close {
        // Dropped: close(2). No EPOLL_CTL_DEL needed: closing the last descriptor of a socket
        // removes it from the interest list (we never dup(2) one).
        drop(conns.remove(fd));
        return;
    }
    let Some(conn) = conns.get_mut(fd) else {
        return;
    };
    // epoll_ctl(2) EPOLL_CTL_MOD only when write interest changes: a write hit EAGAIN (add
    // EPOLLOUT), or the output drained (drop it). Re-arming also reports at once what is
    // already true, so no readiness is lost in between.
    if want.write() != conn.registered.write() {
        let mut ev = EpollEvent::new(interest(want), fd as u64);
        if let Err(e) = epoll.modify(&*conn, &mut ev) {
            warn_throttled!("{NAME}: epoll_ctl MOD: {e}");
            drop(conns.remove(fd)); // closed: we could no longer hear from it
            return;
        }
        conn.registered = want;
    }
    // Input left unread by the budget (or by backpressure, now lifted): come back next turn.
    if want.read() && conn.input_pending() && !conn.queued {
        conn.queued = true;
        ready.push(fd);
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1).
/// The loop has no stop flag: process exit closes the listener, the epoll instance and every
/// connection.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, Vec::new)
}
