//! The connection half of every event loop (lessons 7–10): a **non-blocking** socket, what its
//! client is still owed, and a small state machine whose handler answers *want read / want
//! write*. The lessons keep only their model — how they learn that a socket is ready (not at
//! all, select(2), poll(2), epoll(7)) and how they turn the answer into interest for the kernel.
//! Everything below is the same for all four, so it is written once: a diff between the select,
//! poll and epoll lessons shows only the readiness call. Eli Bendersky's event-loop servers keep
//! this per-peer state machine too, but copied it into each loop, and the copies drifted into a
//! bug; here there is one copy.
//!
//! ```text
//!   the loop (a lesson)                     this module
//!   ───────────────────                     ───────────
//!   readiness ──► Ready{read, write, hup} ─► Conns::on_ready(fd, ..)
//!                                              send(2) what is still owed, until EAGAIN
//!                                              recv(2) into ONE scratch buffer (all conns)
//!                                                └─► Session::feed ─► send(2) at once
//!                                              └─► Want::{Read, ReadWrite, Write, Close}
//!   interest   ◄── Read / ReadWrite / Write ◄──┘            (Close: drop it = close(2))
//! ```
//!
//! The rules it keeps, each explained where it is kept:
//!
//! - **Non-blocking I/O** (accept4(2) with `SOCK_NONBLOCK`): a call that would wait returns
//!   `EAGAIN` instead, which means "not now — ask the readiness call". Never a reason to close.
//! - **Partial writes**: send(2) may take part of the buffer; the rest stays owed, and write
//!   interest is asked for *only while something is owed* — an idle connection is watched for
//!   reading only, so the readiness call never wakes up for it in vain.
//! - **Backpressure**: a connection owing [`OUT_LIMIT`] or more is not read until it drains.
//!   A client that sends without reading is held back by TCP itself, and our memory stays
//!   bounded (`docs/contract.md` §4).
//! - **Fairness**: one call reads at most [`READS_PER_TURN`] times, so one fast client cannot keep
//!   the loop to itself; the loop comes back to it (see `input_pending`).
//! - **Lazy buffers**: reads go into one scratch buffer shared by every connection (the
//!   `Session` keeps the few bytes of a split request itself), and responses are sent straight
//!   from a shared scratch too. A connection gets a buffer of its own only while the kernel will
//!   not take all it is owed, and gives it back once drained — so an idle connection is this
//!   struct and nothing else (`size_of::<Option<ConnState>>()`, printed by this module's tests).
//! - **Lingering close** (`docs/contract.md` §5) as a state the loop sweeps, never a blocking
//!   wait; the **idle timeout** likewise. The readiness call's timeout is the next deadline.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::socket::sockopt;
use nix::sys::socket::{MsgFlags, Shutdown, SockFlag, accept4, recv, send, setsockopt, shutdown};

use crate::cli::CommonArgs;
use crate::net::LINGER;
use crate::proto::{Config, Flow, Session};
use crate::stats::{LiveConn, Stats};
use crate::warn_throttled;

/// One recv(2) reads at most this much, into the scratch buffer all connections share.
pub const SCRATCH: usize = 64 * 1024;
/// A connection owing this much is not read until the client has taken enough of it. Kernel
/// socket buffers hold far more (megabytes on loopback); this bounds *our* memory: a connection
/// never owes more than this plus what one read can produce (one echoed read: `SCRATCH`).
pub const OUT_LIMIT: usize = 64 * 1024;
/// The fairness budget: reads per connection per turn of the loop.
pub const READS_PER_TURN: usize = 4;
/// How long accepting pauses after the process ran out of descriptors (see [`Conns::accept`]).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The least time between two sweeps for timeouts, so that deadlines spread over many
/// connections do not turn into a sweep of all of them on every turn.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

// ─── the answer: want read / want write ─────────────────────────────────────────────────────

/// What a connection waits for next; the loop turns it into interest for its readiness call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Nothing owed: wait for the client. An idle connection is always here.
    Read,
    /// Something owed, and room for more input.
    ReadWrite,
    /// Something owed and no more input taken for now: over [`OUT_LIMIT`], or closing.
    Write,
    /// Finished: remove the connection (dropping it closes the socket).
    Close,
}

impl Want {
    pub fn read(self) -> bool {
        matches!(self, Want::Read | Want::ReadWrite)
    }
    pub fn write(self) -> bool {
        matches!(self, Want::ReadWrite | Want::Write)
    }
}

/// What the readiness call said about one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub read: bool,
    pub write: bool,
    /// The peer has closed its side, or the socket has an error (EPOLLRDHUP, EPOLLHUP,
    /// POLLHUP, POLLERR): read on to the end even after a short read (see `ConnState::read`).
    pub hup: bool,
}

impl Ready {
    /// "Try everything": the busy loop's readiness, which is no readiness at all.
    pub const ALL: Ready = Ready {
        read: true,
        write: true,
        hup: false,
    };
    /// Revisiting a connection whose input was left unread by the fairness budget.
    pub const READ: Ready = Ready {
        read: true,
        write: false,
        hup: false,
    };
}

// ─── one connection ─────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading requests, writing answers.
    Open,
    /// The session said Close (or the client sent EOF): send what is owed, then close — or,
    /// with `linger`, half-close and linger.
    Flushing { linger: bool },
    /// Our side is shut (shutdown(2) SHUT_WR, the client got our FIN after the last answer):
    /// read and discard until the client's EOF or `until`, so that the close cannot become an
    /// RST that destroys the answer in the client's kernel (`net::linger_close` is the
    /// blocking version).
    Lingering { until: Instant },
    /// A reset, a vanished client, or a socket error: close without further ado.
    Closed,
}

/// One connection of an event loop: its socket, its protocol session and what it still owes.
/// Dropping it closes the socket (and, for epoll, removes it from the interest list: the
/// kernel does that when the last descriptor of an open file is closed).
#[derive(Debug)]
pub struct ConnState {
    fd: OwnedFd,
    session: Session,
    /// Bytes owed to the client that the kernel would not take yet; `out[sent..]` is unsent.
    /// Empty, with no allocation, whenever nothing is owed.
    out: Vec<u8>,
    sent: usize,
    phase: Phase,
    /// Last time a byte moved either way: the idle timeout counts from here.
    last_active: Instant,
    /// Readiness said "readable" and we have not since seen EAGAIN, a short read or EOF: the
    /// socket may still hold input. An edge-triggered loop must come back to such a connection
    /// by itself (lesson 10's ready list): the kernel will not report it again.
    input_pending: bool,
    /// The peer closed its side or the socket erred (sticky; see [`Ready::hup`]).
    hup: bool,
    /// Bookkeeping the *loop* owns, never the handlers: the interest it last gave the kernel
    /// (lesson 10 calls epoll_ctl only when it changes) …
    pub registered: Want,
    /// … and whether the connection is on the loop's ready list (lesson 10).
    pub queued: bool,
    /// Counts the connection as live in the summary until it is dropped.
    _live: LiveConn,
}

impl AsFd for ConnState {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The buffers every connection of one loop shares: one thread serves one connection at a
/// time, so one of each is enough, however many connections there are.
#[derive(Debug)]
struct Scratch {
    input: Box<[u8]>,
    output: Vec<u8>,
}

impl ConnState {
    /// What to watch this connection for, from its state alone.
    pub fn want(&self) -> Want {
        let owed = self.owed();
        match self.phase {
            Phase::Open if owed >= OUT_LIMIT => Want::Write, // backpressure: stop reading
            Phase::Open if owed > 0 => Want::ReadWrite,
            Phase::Open => Want::Read,
            Phase::Flushing { .. } if owed > 0 => Want::Write,
            Phase::Lingering { .. } => Want::Read,
            Phase::Flushing { .. } | Phase::Closed => Want::Close,
        }
    }

    /// Whether the socket may still hold input we have not read (see the field).
    pub fn input_pending(&self) -> bool {
        self.input_pending
    }

    /// Bytes owed to the client and not yet taken by the kernel.
    pub fn owed(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Bytes this connection holds on the heap: its output buffer and any partial request.
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity() + self.session.buffered()
    }

    /// When the loop must act on this connection if nothing happens: the idle timeout, or
    /// the end of a lingering close.
    fn deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until } => Some(until),
            Phase::Closed => Some(self.last_active),
            Phase::Open | Phase::Flushing { .. } => idle.map(|d| self.last_active + d),
        }
    }

    /// The handler: the readiness call said `ready`; do all the I/O that can be done now
    /// without blocking, and answer what to wait for next.
    fn on_ready(&mut self, ready: Ready, now: Instant, scratch: &mut Scratch, name: &str) -> Want {
        self.input_pending |= ready.read;
        self.hup |= ready.hup;
        // Write first: sending what is owed may take the connection back under OUT_LIMIT,
        // which allows reading again in the same turn.
        if ready.write && self.owed() > 0 {
            self.flush(now, name);
        }
        if self.input_pending && self.may_read() {
            self.read(now, scratch, name);
        }
        self.settle(now)
    }

    fn may_read(&self) -> bool {
        match self.phase {
            Phase::Open => self.owed() < OUT_LIMIT,
            Phase::Lingering { .. } => true,
            Phase::Flushing { .. } | Phase::Closed => false,
        }
    }

    /// recv(2) (see lesson 1) until the socket is empty, the budget is spent, the session ends
    /// the connection, or the connection owes too much to take more.
    fn read(&mut self, now: Instant, scratch: &mut Scratch, name: &str) {
        for _ in 0..READS_PER_TURN {
            if !self.may_read() {
                return; // over OUT_LIMIT or closing: `input_pending` stays set, to come back
            }
            let n = match recv(self.fd.as_raw_fd(), &mut scratch.input, MsgFlags::empty()) {
                Ok(0) => {
                    // EOF: the client half-closed (or closed). Echo owes what it has queued;
                    // HTTP drops a request cut off half-way. Either way: flush, then close.
                    self.input_pending = false;
                    self.phase = match self.phase {
                        Phase::Open => match self.session.eof() {
                            Flow::Close { linger } => Phase::Flushing { linger },
                            Flow::Continue => Phase::Flushing { linger: false },
                        },
                        _ => Phase::Closed, // a lingering close got its EOF: done
                    };
                    return;
                }
                Ok(n) => n,
                // EAGAIN: the socket is empty. The normal end of every read; not an error.
                Err(Errno::EAGAIN) => {
                    self.input_pending = false;
                    return;
                }
                // A signal interrupted the call (cannot really happen without blocking).
                Err(Errno::EINTR) => continue,
                // The client reset the connection: its problem, and the end of this one only.
                Err(Errno::ECONNRESET) => {
                    self.phase = Phase::Closed;
                    return;
                }
                Err(e) => {
                    warn_throttled!("{name}: recv: {e}");
                    self.phase = Phase::Closed;
                    return;
                }
            };
            if let Phase::Open = self.phase {
                self.last_active = now;
                let flow = self.session.feed(&scratch.input[..n], &mut scratch.output);
                self.queue(&mut scratch.output, now, name);
                if let (Flow::Close { linger }, Phase::Open) = (flow, self.phase) {
                    // The rest of this read is discarded; the session knew about it when it
                    // chose `linger`. `input_pending` stays as it is: there may be more.
                    self.phase = Phase::Flushing { linger };
                    return;
                }
            } // Lingering: the bytes are read only to be discarded.

            // A short read: recv(2) returned less than it could, so the kernel's receive queue
            // was empty at that moment, and reading again would only return EAGAIN. Anything
            // that arrives later raises a new readiness event — for epoll, a new edge: each
            // arrival wakes the socket's wait queue, which requeues it on the ready list. One
            // exception: recv(2) returns the data *before* a FIN without reporting the FIN, and
            // if the FIN had already arrived, its wake-up is spent. The readiness call told us
            // (`hup`: EPOLLRDHUP/POLLHUP), and then we read on to the EOF.
            if n < scratch.input.len() && !self.hup {
                self.input_pending = false;
                return;
            }
        } // budget spent: `input_pending` stays set, and the loop comes back
    }

    /// Takes the bytes the session just produced (in the shared scratch) and sends them, after
    /// whatever is already owed. Only what the kernel refuses is copied into this connection's
    /// own buffer: most answers never touch it.
    fn queue(&mut self, new: &mut Vec<u8>, now: Instant, name: &str) {
        if new.is_empty() {
            return;
        }
        if self.owed() == 0 {
            match send_some(&self.fd, new, name) {
                Some(taken) => {
                    self.last_active = now;
                    self.out.clear();
                    self.out.extend_from_slice(&new[taken..]); // allocates only if any is left
                    self.sent = 0;
                }
                None => self.phase = Phase::Closed,
            }
        } else {
            // Keep the order: behind what is owed. Drop the sent head first (a memmove of at
            // most OUT_LIMIT plus one read), so the buffer never grows with bytes already sent.
            self.out.drain(..self.sent);
            self.sent = 0;
            self.out.extend_from_slice(new);
            self.flush(now, name);
        }
        new.clear();
    }

    /// Sends what is owed until done or the kernel's send buffer is full (EAGAIN).
    fn flush(&mut self, now: Instant, name: &str) {
        let Some(taken) = send_some(&self.fd, &self.out[self.sent..], name) else {
            self.phase = Phase::Closed;
            return;
        };
        if taken > 0 {
            self.last_active = now;
        }
        self.sent += taken;
        if self.sent == self.out.len() {
            // Drained: give the buffer back, so an idle connection holds no heap at all.
            self.out = Vec::new();
            self.sent = 0;
        }
    }

    /// After the I/O: move on from a finished flush, and answer what to wait for.
    fn settle(&mut self, now: Instant) -> Want {
        if let (Phase::Flushing { linger: true }, 0) = (self.phase, self.owed()) {
            // Everything is sent. shutdown(2) SHUT_WR: our FIN follows the last answer, and the
            // client's reads end cleanly. Then linger — read and discard — until it closes.
            self.phase = match shutdown(self.fd.as_raw_fd(), Shutdown::Write) {
                Ok(()) => Phase::Lingering {
                    until: now + LINGER,
                },
                Err(_) => Phase::Closed, // the client is already gone: nothing to wait for
            };
        }
        self.want()
    }
}

// ─── the loop's table of connections ────────────────────────────────────────────────────────

/// Every connection of one event loop, **indexed by descriptor number**. The kernel gives each
/// new descriptor the lowest free number, so the table stays dense, and a descriptor is its
/// own key: the token lesson 10 registers with epoll is the descriptor itself.
#[derive(Debug)]
pub struct Conns {
    slots: Vec<Option<ConnState>>,
    open: usize,
    scratch: Scratch,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
    /// The worker slot this table counts into: 0, or the loop's index in lesson 11.
    worker: usize,
    name: &'static str,
    /// When the next sweep for timeouts is due (`None`: no deadline anywhere).
    next_sweep: Option<Instant>,
    /// Accepting is paused until then after running out of descriptors.
    accept_paused_until: Option<Instant>,
}

impl Conns {
    /// An empty table for the server `name`, with the flags' protocol and idle timeout.
    pub fn new(name: &'static str, args: &CommonArgs, stats: &'static Stats) -> Conns {
        Conns {
            slots: Vec::new(),
            open: 0,
            scratch: Scratch {
                input: vec![0; SCRATCH].into_boxed_slice(),
                output: Vec::new(),
            },
            config: args.session_config(),
            idle: args.idle_timeout(),
            stats,
            worker: 0,
            name,
            next_sweep: None,
            accept_paused_until: None,
        }
    }

    /// The same table, counting its connections and requests into worker slot `i` of the
    /// summary (`accepts per worker`) instead of slot 0: lesson 11 runs one loop per worker.
    pub fn for_worker(self, i: usize) -> Conns {
        assert!(
            i < crate::stats::MAX_WORKERS,
            "worker {i} has no slot in Stats"
        );
        Conns { worker: i, ..self }
    }

    /// accept4(2) one connection from the non-blocking `listener`, or `None` when there is
    /// none to take now. `SOCK_NONBLOCK` makes the new socket non-blocking from birth (no
    /// fcntl(2) round trip); `SOCK_CLOEXEC` as in lesson 1. The caller owns the descriptor.
    ///
    /// **Out of descriptors** (EMFILE: ours, ENFILE: the system's) the listener stays readable
    /// — the client is still queued — so a level-triggered loop would spin on the same error
    /// at 100% CPU. We pause accepting for [`ACCEPT_BACKOFF`] (nginx's choice, and lessons
    /// 1–6's): the clients wait in the queue and are served as soon as a descriptor frees up.
    /// libuv's alternative, closing a reserve descriptor to accept and at once close the
    /// client, turns away a client we could have served a moment later, and another thread
    /// can take the freed descriptor first.
    pub fn accept(&mut self, listener: &impl AsFd, now: Instant) -> Option<OwnedFd> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        loop {
            match accept4(listener.as_fd().as_raw_fd(), flags) {
                Ok(fd) => {
                    // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns;
                    // OwnedFd takes sole ownership and closes it once, when dropped.
                    return Some(unsafe { OwnedFd::from_raw_fd(fd) }); // owned by the caller
                }
                // The queue is empty: wait for the listener's next readiness.
                Err(Errno::EAGAIN) => return None,
                // A signal; or the client reset while queued; or, per accept(2) "Error
                // handling", a queued connection's network error, to be treated like EAGAIN
                // and retried (lesson 1 lists them).
                Err(e) if crate::net::RETRY_ACCEPT.contains(&e) => continue,
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    warn_throttled!("{}: accept: {e}; pausing accept for 100 ms", self.name);
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
                // Unexpected: pause too, rather than spin on it.
                Err(e) => {
                    warn_throttled!("{}: accept: {e}", self.name);
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
            }
        }
    }

    /// Whether to accept now (false during a pause after EMFILE).
    pub fn accepting(&self, now: Instant) -> bool {
        self.accept_paused_until.is_none_or(|t| now >= t)
    }

    /// Takes `conn` into the table (counted as accepted and live) and returns its descriptor,
    /// which is also its key. It starts idle, wanting to read.
    pub fn insert(&mut self, conn: OwnedFd, now: Instant) -> RawFd {
        // TCP_NODELAY: each answer leaves at once rather than wait behind Nagle (lesson 1).
        if let Err(e) = setsockopt(&conn, sockopt::TcpNoDelay, &true) {
            warn_throttled!("{}: TCP_NODELAY: {e}", self.name);
        }
        let fd = conn.as_raw_fd();
        let i = fd as usize; // descriptors from accept4 are never negative
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let state = ConnState {
            fd: conn, // owned by the ConnState from here on
            session: Session::new(self.config, self.stats.worker(self.worker)),
            out: Vec::new(),
            sent: 0,
            phase: Phase::Open,
            last_active: now,
            input_pending: false,
            hup: false,
            registered: Want::Read,
            queued: false,
            _live: self.stats.accepted(self.worker),
        };
        self.note_deadline(state.deadline(self.idle));
        if self.slots[i].replace(state).is_none() {
            self.open += 1;
        } // (a replaced entry cannot exist: the kernel does not hand out an open descriptor)
        fd
    }

    pub fn get(&self, fd: RawFd) -> Option<&ConnState> {
        self.slots.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut ConnState> {
        self.slots.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }

    /// Takes the connection out of the table; dropping what this returns closes the socket.
    pub fn remove(&mut self, fd: RawFd) -> Option<ConnState> {
        let conn = self.slots.get_mut(usize::try_from(fd).ok()?)?.take();
        self.open -= usize::from(conn.is_some());
        conn
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.open
    }

    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// Every descriptor number a connection may have: to visit them all while changing the
    /// table (`for fd in conns.fd_range() { conns.on_ready(fd, ..) }`).
    pub fn fd_range(&self) -> std::ops::Range<RawFd> {
        0..self.slots.len() as RawFd
    }

    /// The open connections and their descriptors, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (RawFd, &ConnState)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(fd, c)| Some((fd as RawFd, c.as_ref()?)))
    }

    /// Runs the connection's handler for the readiness `ready`. A `Close` answer leaves the
    /// connection in the table: the loop removes (and so closes) it after forgetting its own
    /// references to the descriptor. An unknown `fd` answers `Close`.
    pub fn on_ready(&mut self, fd: RawFd, ready: Ready, now: Instant) -> Want {
        let Some(Some(conn)) = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)) else {
            return Want::Close;
        };
        let want = conn.on_ready(ready, now, &mut self.scratch, self.name);
        if let Phase::Lingering { until } = conn.phase {
            self.note_deadline(Some(until)); // lingering must end on time, whatever the idle timeout
        }
        want
    }

    fn note_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.next_sweep = Some(self.next_sweep.map_or(d, |s| s.min(d)));
        }
    }

    /// How long the readiness call may sleep: until the next timeout is due or accepting
    /// resumes, or `None` (for ever) when no deadline is pending.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let paused = self.accept_paused_until.filter(|&t| t > now);
        let next = match (self.next_sweep, paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|t| t.saturating_duration_since(now))
    }

    /// The sweep: takes every connection past its deadline — silent for `--idle-timeout`, or
    /// lingering for [`LINGER`] — out of the table and hands it back; dropping it closes the
    /// socket. O(connections), so it runs only when the earliest deadline is due, and at most
    /// once per [`SWEEP_EVERY`].
    pub fn sweep(&mut self, now: Instant) -> Vec<ConnState> {
        let mut expired = Vec::new();
        if self.next_sweep.is_none_or(|t| now < t) {
            return expired;
        }
        let mut next: Option<Instant> = None;
        for slot in &mut self.slots {
            let Some(deadline) = slot.as_ref().and_then(|c| c.deadline(self.idle)) else {
                continue;
            };
            if deadline <= now {
                expired.extend(slot.take()); // the ConnState (and socket): the caller's now
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        self.open -= expired.len();
        self.next_sweep = next.map(|n| n.max(now + SWEEP_EVERY));
        expired
    }
}

/// send(2) (see lesson 1) in a loop: a non-blocking send takes what fits in the socket's send
/// buffer and returns that count — a *partial write* — so we go on from there until everything
/// is taken or EAGAIN says the buffer is full (then the loop waits for writability). Returns how
/// many bytes the kernel took, or `None` if the client is gone.
fn send_some(fd: &OwnedFd, data: &[u8], name: &str) -> Option<usize> {
    let mut taken = 0;
    while taken < data.len() {
        // MSG_NOSIGNAL: a vanished client gives EPIPE, not a process-killing SIGPIPE.
        match send(fd.as_raw_fd(), &data[taken..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => taken += n,
            Err(Errno::EAGAIN) => break, // full: the rest stays owed
            Err(Errno::EINTR) => continue,
            // The client is gone (reset, or closed while we still had things to say).
            Err(Errno::EPIPE | Errno::ECONNRESET) => return None,
            Err(e) => {
                warn_throttled!("{name}: send: {e}");
                return None;
            }
        }
    }
    Some(taken)
}

/// A readiness timeout for poll(2) and epoll_wait(2), in whole milliseconds **rounded up**:
/// rounded down, a deadline 0.4 ms away would become a 0 ms timeout, and the loop would spin
/// until the deadline passed. `None` waits for ever.
pub fn millis(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use nix::sys::socket::{AddressFamily, SockType, socketpair};

    use crate::responses::{OK_CLOSE, OK_KEEP_ALIVE};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn table(proto: &str, idle: &str) -> Conns {
        let args = Args::parse_from(["t", "--proto", proto, "--idle-timeout", idle]);
        Conns::new("conn_test", &args.common, Stats::new_shared(None))
    }

    /// A connected pair of non-blocking stream sockets, the first for the table, the second
    /// the client. Unix sockets behave like TCP here (partial writes, EAGAIN, EOF, shutdown);
    /// TCP_NODELAY just fails on them, with one warning on stderr.
    fn pair(conns: &mut Conns, now: Instant) -> (RawFd, OwnedFd) {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let (server, client) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, flags).expect("socketpair");
        (conns.insert(server, now), client)
    }

    fn send_all(fd: &OwnedFd, data: &[u8]) {
        assert_eq!(
            send(fd.as_raw_fd(), data, MsgFlags::empty()),
            Ok(data.len())
        );
    }

    /// Whatever the client can read right now; `None` at EOF.
    fn recv_now(fd: &OwnedFd) -> Option<Vec<u8>> {
        let mut buf = vec![0; 1 << 20];
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => None,
            Ok(n) => Some(buf[..n].to_vec()),
            Err(Errno::EAGAIN) => Some(Vec::new()),
            Err(e) => panic!("recv: {e}"),
        }
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[test]
    fn an_idle_connection_is_one_small_slot_and_no_heap() {
        let size = size_of::<Option<ConnState>>();
        println!("bytes per connection slot: {size}");
        assert!(size <= 256, "{size}");
        let now = Instant::now();
        let mut conns = table("http", "60");
        let (fd, client) = pair(&mut conns, now);
        assert_eq!(conns.get(fd).map(ConnState::heap_bytes), Some(0), "fresh");
        send_all(&client, GET);
        assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
        assert_eq!(recv_now(&client).as_deref(), Some(OK_KEEP_ALIVE));
        let c = conns.get(fd).expect("still open");
        assert_eq!(c.heap_bytes(), 0, "served, idle again, and no buffer kept");
        assert!(!c.input_pending(), "a short read means the socket is empty");
    }

    #[test]
    fn a_table_for_worker_i_counts_into_slot_i() {
        let args = Args::parse_from(["t"]);
        let stats = Stats::new_shared(Some(3));
        let mut conns = Conns::new("conn_test", &args.common, stats).for_worker(2);
        let now = Instant::now();
        let (fd, client) = pair(&mut conns, now);
        send_all(&client, GET);
        assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
        assert_eq!(stats.per_worker(|c| &c.accepted), Some(vec![0, 0, 1]));
        assert_eq!(stats.per_worker(|c| &c.requests), Some(vec![0, 0, 1]));
    }

    #[test]
    fn echo_stops_reading_over_the_limit_and_resumes_when_drained() {
        let now = Instant::now();
        let mut conns = table("echo", "60");
        let (fd, client) = pair(&mut conns, now);
        // The client writes until its socket is full and reads nothing.
        let chunk = vec![7u8; 16 * 1024];
        let mut written = 0;
        while send(client.as_raw_fd(), &chunk, MsgFlags::empty()).is_ok_and(|n| {
            written += n;
            n > 0
        }) {
            let want = conns.on_ready(fd, Ready::ALL, now);
            if want == Want::Write {
                break;
            }
            assert_ne!(want, Want::Close);
        }
        let c = conns.get(fd).expect("open");
        assert_eq!(c.want(), Want::Write, "over the limit: write interest only");
        assert!(
            c.owed() >= OUT_LIMIT && c.owed() < OUT_LIMIT + SCRATCH,
            "{}",
            c.owed()
        );
        // The client reads everything; the server drains and reads again.
        let mut back = 0;
        for _ in 0..10_000 {
            back += recv_now(&client).expect("no EOF").len();
            conns.on_ready(fd, Ready::ALL, now);
            let left = recv_now(&client).expect("no EOF").len();
            back += left;
            if back == written && conns.get(fd).is_some_and(|c| c.owed() == 0) {
                break;
            }
        }
        assert_eq!(back, written, "every byte came back");
        assert_eq!(conns.get(fd).map(ConnState::want), Some(Want::Read));
        assert_eq!(conns.get(fd).map(ConnState::heap_bytes), Some(0));
    }

    #[test]
    fn echo_half_close_flushes_then_closes() {
        let now = Instant::now();
        let mut conns = table("echo", "60");
        let (fd, client) = pair(&mut conns, now);
        send_all(&client, b"bye");
        shutdown(client.as_raw_fd(), Shutdown::Write).expect("half-close");
        let ready = Ready {
            hup: true,
            ..Ready::READ
        };
        assert_eq!(conns.on_ready(fd, ready, now), Want::Close);
        assert_eq!(recv_now(&client).as_deref(), Some(&b"bye"[..]));
    }

    #[test]
    fn a_close_with_unread_bytes_lingers_then_ends_at_eof_or_deadline() {
        let now = Instant::now();
        let mut conns = table("http", "60");
        let (fd, client) = pair(&mut conns, now);
        let mut req = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
        req.extend_from_slice(&[b'x'; 1000]);
        send_all(&client, &req);
        assert_eq!(
            conns.on_ready(fd, Ready::READ, now),
            Want::Read,
            "lingering"
        );
        // The client gets the answer, then EOF (our FIN), not a reset.
        assert_eq!(recv_now(&client).as_deref(), Some(OK_CLOSE));
        assert_eq!(recv_now(&client), None);
        // More junk is discarded; the client's EOF ends the linger.
        send_all(&client, &[b'y'; 500]);
        assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
        drop(client);
        assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Close);
        drop(conns.remove(fd));

        // A client that never closes: the sweep ends the linger after LINGER.
        let (fd, _client) = pair(&mut conns, now);
        send_all(&_client, &req);
        assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
        assert!(conns.timeout(now).is_some_and(|t| t <= LINGER));
        assert!(conns.sweep(now + LINGER / 2).is_empty());
        let gone = conns.sweep(now + LINGER);
        assert_eq!(gone.len(), 1);
        assert!(conns.get(fd).is_none());
    }

    #[test]
    fn the_sweep_closes_silent_connections_only() {
        let now = Instant::now();
        let mut conns = table("http", "1");
        let (quiet, _c1) = pair(&mut conns, now);
        let (busy, c2) = pair(&mut conns, now);
        assert_eq!(conns.timeout(now), Some(Duration::from_secs(1)));
        let later = now + Duration::from_millis(700);
        send_all(&c2, GET);
        conns.on_ready(busy, Ready::READ, later);
        let gone = conns.sweep(now + Duration::from_secs(1));
        assert_eq!(gone.len(), 1);
        assert!(conns.get(quiet).is_none() && conns.get(busy).is_some());
        assert_eq!(conns.len(), 1);
        // The next sweep is due when the busy one has been silent for a second.
        assert_eq!(conns.timeout(later), Some(Duration::from_secs(1)));
    }

    #[test]
    fn no_idle_timeout_and_nothing_lingering_means_no_timeout() {
        let now = Instant::now();
        let mut conns = table("http", "0");
        let (_fd, _client) = pair(&mut conns, now);
        assert_eq!(conns.timeout(now), None);
        assert_eq!(millis(None), PollTimeout::NONE);
        assert_eq!(
            millis(Some(Duration::from_micros(1))),
            PollTimeout::from(1u8)
        );
    }

    #[test]
    fn a_reset_client_closes_its_connection() {
        let now = Instant::now();
        let mut conns = table("echo", "60");
        let (fd, client) = pair(&mut conns, now);
        send_all(&client, b"x");
        drop(client); // unread "x" echoed into a closed socket: EPIPE / ECONNRESET
        let mut want = Want::Read;
        for _ in 0..3 {
            want = conns.on_ready(fd, Ready::ALL, now);
        }
        assert_eq!(want, Want::Close);
    }
}
