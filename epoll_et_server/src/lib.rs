//! Lesson 10's event loop, as a library item: `main.rs` runs it once; lesson 11
//! (`multi_epoll_server`) runs it once per core, each time with its own listener, epoll instance
//! and table — the same function, not a copy. What epoll changes, and why, is the lesson's text
//! in `main.rs`; the connection it drives is lesson 7's (`nonblocking_busy_server`). Lesson 14
//! (`epoll_pool_server`) runs it with a pool of workers hung on it ([`Extension`]).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nonblocking_busy_server::{ConnState, Conns, Ready, Want, millis}; // lesson 7: the connection
use server_common::{Context, SetupError, warn_throttled};

/// The listener's token. A connection's token is its descriptor, which is never this.
const LISTENER: u64 = u64::MAX;
/// The token of an [`Extension`]'s own descriptor (lesson 14: the pool's eventfd).
pub const EXTENSION: u64 = u64::MAX - 1;
/// How many events one epoll_wait may return; more simply wait for the next turn.
const EVENTS: usize = 1024;

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// Where the loop's new connections come from. Here, the listener: accept4 (lesson 7's
/// `Conns::accept`). Lesson 11 can stand something else in its place — a socket on which an
/// acceptor hands it connections — and the loop treats it the same: one edge-triggered
/// descriptor, drained until `take` says `None`.
pub trait Arrivals {
    /// The next new connection, or `None`: none left (EAGAIN, so this edge is drained), or none
    /// may be taken for now (out of descriptors: `accepting` is false for a while).
    fn take(&mut self, conns: &mut Conns, now: Instant) -> Option<OwnedFd>;
    /// Whether to take connections now: false during a pause after EMFILE.
    fn accepting(&self, conns: &Conns, now: Instant) -> bool {
        conns.accepting(now) // the pause `Conns::accept` keeps (lesson 7)
    }
    /// How long epoll_wait may sleep: until the next deadline of the table, or the end of a
    /// pause (edge-triggered, nothing else would wake us to retry).
    fn timeout(&self, conns: &Conns, now: Instant) -> Option<Duration> {
        conns.timeout(now) // it includes `Conns::accept`'s pause
    }
}

/// This lesson's arrivals: the non-blocking listener, drained with lesson 7's accept4.
impl Arrivals for &OwnedFd {
    fn take(&mut self, conns: &mut Conns, now: Instant) -> Option<OwnedFd> {
        conns.accept(*self, now)
    }
}

/// What a later lesson hangs on this loop besides the connections: lesson 14's pool of workers,
/// whose finished work comes back through a descriptor the extension registers in the epoll
/// instance under [`EXTENSION`]. Lessons 10 and 11 hang nothing on it: `()`.
pub trait Extension {
    /// The extension's descriptor is ready: it changes connections (`Conns::work_done`, lesson
    /// 7) and hands each back with its handler's answer in `changed`, for the loop to act on.
    fn on_event(&mut self, conns: &mut Conns, now: Instant, changed: &mut Vec<(RawFd, Want)>);
    /// The handler just ran for `conn` (descriptor `fd`), which stays open.
    fn after(&mut self, fd: RawFd, conn: &ConnState);
    /// `fd` is a new connection (its number may have served a closed one before).
    fn accepted(&mut self, fd: RawFd);
}

/// Lessons 10 and 11: nothing hung on the loop.
impl Extension for () {
    fn on_event(&mut self, _: &mut Conns, _: Instant, _: &mut Vec<(RawFd, Want)>) {}
    fn after(&mut self, _: RawFd, _: &ConnState) {}
    fn accepted(&mut self, _: RawFd) {}
}

/// A new epoll instance, watching `listener` (lesson 11 makes one per loop).
pub fn new_epoll(listener: &impl AsFd) -> Result<Epoll, SetupError> {
    watching(listener, EpollFlags::empty())
}

/// The same, for a listener that several loops' epoll instances watch (lesson 11's
/// `--distribute exclusive`): EPOLLEXCLUSIVE asks the kernel to wake "one or more" of the
/// instances waiting in epoll_wait for a new connection, not all of them (epoll_ctl(2), 4.5).
pub fn new_epoll_exclusive(listener: &impl AsFd) -> Result<Epoll, SetupError> {
    watching(listener, EpollFlags::EPOLLEXCLUSIVE)
}

fn watching(listener: &impl AsFd, extra: EpollFlags) -> Result<Epoll, SetupError> {
    // epoll_create1(2): a kernel object holding an interest list (what we watch) and a ready
    // list (what changed). CLOEXEC as for every descriptor of ours.
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("cannot create an epoll")?;
    // epoll_ctl(2) EPOLL_CTL_ADD: watch the listener for new connections, edge-triggered.
    // (EPOLLEXCLUSIVE allows only EPOLLIN, EPOLLOUT, EPOLLET and EPOLLWAKEUP beside it.)
    let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET | extra, LISTENER);
    epoll
        .add(listener, ev)
        .context("cannot watch the listener")?;
    Ok(epoll)
}

/// The model: one thread serving every connection of `listener`, for ever. Everything that
/// could differ comes in as an argument, so lesson 11 runs N of these loops side by side, each
/// with its own listener (or what stands in for it, see [`Arrivals`]), epoll instance and
/// worker slot (`Conns::for_worker`). It never returns: the process's exit ends it.
pub fn event_loop(listener: impl Arrivals, epoll: &Epoll, conns: Conns) -> ! {
    event_loop_with(listener, epoll, conns, ())
}

/// The same loop with `ext` hung on it (lesson 14): its descriptor's events go to it, and it
/// sees every connection after the handler ran.
pub fn event_loop_with(
    mut listener: impl Arrivals,
    epoll: &Epoll,
    mut conns: Conns,
    mut ext: impl Extension,
) -> ! {
    let mut events = vec![EpollEvent::empty(); EVENTS];
    let mut changed = Vec::new(); // what `ext` hands back
    // What this loop remembers per connection beside lesson 7's ConnState (see `Mark`).
    let mut marks: Vec<Mark> = Vec::new();
    // Connections whose fairness budget ran out with input unread: no edge will announce that
    // input again, so the loop serves them itself next turn. `last_round` is last turn's list.
    let (mut ready_list, mut last_round) = (Vec::<RawFd>::new(), Vec::<RawFd>::new());
    // An edge on the listener that accept4 has not drained yet (after an EMFILE pause).
    let mut listener_ready = false;

    loop {
        // Sleep until news or the next deadline — unless work is already waiting.
        let now = Instant::now();
        let idle = ready_list.is_empty() && !(listener_ready && listener.accepting(&conns, now));
        let timeout = if idle {
            millis(listener.timeout(&conns, now)) // whole milliseconds, rounded up (lesson 7)
        } else {
            PollTimeout::ZERO
        };

        // epoll_wait(2): the ready list, at most EVENTS at a time.
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0, // a signal (ours are blocked; a debugger's are not)
            Err(e) => {
                // Not expected (EBADF, EFAULT, EINVAL are bugs): say so, don't spin.
                warn_throttled!("{}: epoll_wait: {e}", conns.name());
                std::thread::sleep(Duration::from_millis(10));
                0
            }
        };
        let now = Instant::now(); // one clock read per turn: every deadline below uses it
        std::mem::swap(&mut ready_list, &mut last_round);

        for ev in &events[..n] {
            if ev.data() == LISTENER {
                listener_ready = true;
                continue;
            }
            if ev.data() == EXTENSION {
                ext.on_event(&mut conns, now, &mut changed);
                for (fd, want) in changed.drain(..) {
                    let (marks, list) = (&mut marks, &mut ready_list);
                    handle_conn(epoll, &mut conns, marks, list, &mut ext, fd, want);
                }
                continue;
            }
            let fd = ev.data() as RawFd; // the token we registered: the descriptor
            let want = conns.on_ready(fd, ready_from(ev.events()), now); // lesson 7's handler
            handle_conn(
                epoll,
                &mut conns,
                &mut marks,
                &mut ready_list,
                &mut ext,
                fd,
                want,
            );
        }
        // Last turn's leftovers, after this turn's news: nobody waits more than one turn.
        for fd in last_round.drain(..) {
            // `queued` is false if the connection closed since (and was replaced at accept).
            let mark = mark_of(&mut marks, fd);
            if mark.queued && conns.get(fd).is_some() {
                mark.queued = false;
                let want = conns.on_ready(fd, Ready::READ, now);
                handle_conn(
                    epoll,
                    &mut conns,
                    &mut marks,
                    &mut ready_list,
                    &mut ext,
                    fd,
                    want,
                );
            }
        }

        if listener_ready && listener.accepting(&conns, now) {
            // Drain the accept queue (accept4 until EAGAIN, lesson 7): this edge will not be
            // reported again.
            while let Some(conn) = listener.take(&mut conns, now) {
                // Registered once, for reading; the token is the descriptor itself.
                let fd = conn.as_raw_fd();
                let ev = EpollEvent::new(interest(Want::Read), fd as u64);
                match epoll.add(&conn, ev) {
                    Ok(()) => {
                        *mark_of(&mut marks, fd) = Mark::default(); // a new connection's: fresh
                        conns.insert(conn, now); // conn: owned by `conns` now
                        ext.accepted(fd);
                    }
                    // Unwatchable (ENOMEM, or max_user_watches reached): refuse this client.
                    // `conn` is dropped here: closed.
                    Err(e) => warn_throttled!("{}: epoll_ctl ADD: {e}", conns.name()),
                }
            }
            // Drained to EAGAIN — unless accepting paused on EMFILE: then retry after it.
            listener_ready = !listener.accepting(&conns, now);
        }

        // Idle timeouts and lingering closes that are due: dropped, so closed (close(2) also
        // takes a descriptor out of every epoll interest list).
        drop(conns.sweep(now));
    }
}

/// What an event's flags say about the socket. EPOLLRDHUP: the client sent its FIN; EPOLLHUP,
/// EPOLLERR: reset or error — read and write to find out which (recv/send return the error).
fn ready_from(flags: EpollFlags) -> Ready {
    let error = EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
    Ready {
        read: flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | error),
        write: flags.intersects(EpollFlags::EPOLLOUT | error),
        hup: flags.intersects(EpollFlags::EPOLLRDHUP | error),
    }
}

/// What to ask epoll for, given what the connection wants. EPOLLIN stays on even while
/// backpressure pauses reading: an edge then only marks input as pending, and costs nothing
/// when nobody sends. EPOLLRDHUP reports the client's FIN as such (see lesson 7, short reads).
fn interest(want: Want) -> EpollFlags {
    let base = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    if want.write() {
        base | EpollFlags::EPOLLOUT
    } else {
        base
    }
}

// ─── per-connection work ────────────────────────────────────────────────────────────────────

/// What this loop keeps per connection beside lesson 7's `ConnState`, indexed by descriptor
/// like the table: its own bookkeeping, which no other loop needs.
#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    /// EPOLLOUT is in the interest epoll holds: epoll_ctl is called only when that must change.
    epollout: bool,
    /// The connection is on the ready list, to be served next turn.
    queued: bool,
}

/// The mark of descriptor `fd`, growing the side table as the kernel hands out higher numbers.
fn mark_of(marks: &mut Vec<Mark>, fd: RawFd) -> &mut Mark {
    let i = fd as usize; // descriptors of open connections are never negative
    if marks.len() <= i {
        marks.resize(i + 1, Mark::default());
    }
    &mut marks[i]
}

/// After the connection's handler ran (lesson 7: write what is owed, read within the budget):
/// turns its answer into epoll interest and the ready list.
fn handle_conn(
    epoll: &Epoll,
    conns: &mut Conns,
    marks: &mut Vec<Mark>,
    ready_list: &mut Vec<RawFd>,
    ext: &mut impl Extension,
    fd: RawFd,
    want: Want,
) {
    if want == Want::Close {
        // Dropped: close(2). No EPOLL_CTL_DEL needed: closing the last descriptor of a socket
        // removes it from the interest list (we never dup(2) one).
        drop(conns.remove(fd));
        return;
    }
    let Some(conn) = conns.get(fd) else {
        return;
    };
    let mark = mark_of(marks, fd);
    // epoll_ctl(2) EPOLL_CTL_MOD only when write interest changes: a write hit EAGAIN (add
    // EPOLLOUT), or the output drained (drop it). Re-arming also reports at once what is
    // already true, so no readiness is lost in between.
    if want.write() != mark.epollout {
        let mut ev = EpollEvent::new(interest(want), fd as u64);
        if let Err(e) = epoll.modify(conn, &mut ev) {
            warn_throttled!("{}: epoll_ctl MOD: {e}", conns.name());
            drop(conns.remove(fd)); // closed: we could no longer hear from it
            return;
        }
        mark.epollout = want.write();
    }
    // Input left unread by the budget (or by backpressure, now lifted): come back next turn.
    if conn.needs_revisit() && !mark.queued {
        mark.queued = true;
        ready_list.push(fd);
    }
    ext.after(fd, conn);
}
