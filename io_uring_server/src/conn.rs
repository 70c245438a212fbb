//! The connections: the second role of lesson 13's model, beside the loop in `main.rs`, and the
//! completion-side counterpart of lesson 7's conn.rs (`nonblocking_busy_server/src/conn.rs`).
//! A [`ConnState`] never touches the ring: `main.rs` reports each completion to it (`on_recv`,
//! `on_send`) and submits whatever [`Conns::drive`] answers. The rules it keeps:
//!
//! - **One recv and one send in flight at most**, per connection (two sends may each complete
//!   partially and interleave), and **two output buffers**: the session appends to `pending`
//!   while the kernel reads `sending` (appending to it could reallocate it under the kernel).
//! - **Partial sends**: a completion for fewer bytes than asked submits the rest.
//! - **Backpressure**: owing [`OUT_LIMIT`], or holding requests the session's per-call budget
//!   left unanswered, a connection gets no new recv; its sends' completions work them off.
//! - **Closing waits for the kernel**: a connection is freed — socket closed, buffers dropped —
//!   only once none of its operations is in flight; to get there it cancels them.
//! - **Slots with generations**: a completion names its connection by slot *and* generation, so
//!   a late one can never be applied to a newer connection that got the same slot.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{Shutdown, setsockopt, shutdown, sockopt};
use server_common::cli::CommonArgs;
use server_common::net::LINGER;
use server_common::proto::{Config, Flow, Session};
use server_common::stats::{LiveConn, Stats};
use server_common::warn_throttled;

use crate::NAME;
use crate::token::Op;

/// A connection owing this much gets no new recv until the client has taken enough of it, so
/// our memory per connection stays bounded: this plus what one read can produce.
pub const OUT_LIMIT: usize = 64 * 1024;
/// An output buffer the kernel is done with is kept for the next answer if it holds at most this
/// much (an HTTP answer: no malloc per request), and freed if larger (after an echo burst).
const KEEP: usize = 1024;
/// The least time between two sweeps for timeouts (as in lesson 10).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

// ─── one connection ─────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading requests, sending answers.
    Open,
    /// The session said Close, or the client sent EOF: send what is owed, then close — or,
    /// with `linger`, half-close and linger.
    Flushing { linger: bool },
    /// Our side is shut: read and discard until the client's EOF or `until`, so our close cannot
    /// become an RST that destroys the answer (`docs/contract.md` §5, as in lesson 10).
    Lingering { until: Instant },
    /// Finished: nothing new is submitted; what is in flight is cancelled (once), and the
    /// connection is freed when the last completion is in.
    Closing { cancelled: bool },
}

/// What the loop must submit for a connection now (each already marked in flight): a send of
/// bytes in the connection's `sending` buffer, frozen until its completion; a recv into a
/// buffer of the pool; cancels of operations in flight. `done`: nothing in flight, nothing to
/// do — free the connection.
#[derive(Debug, Default)]
pub struct Next {
    pub fd: RawFd,
    pub send: Option<(*const u8, u32)>,
    pub recv: bool,
    pub cancel: [Option<Op>; 2],
    done: bool,
}

/// One connection: its socket, its protocol session, what it owes, and what the kernel holds.
pub struct ConnState {
    /// The socket, closed (dropped) only when none of its operations is in flight. Not for our
    /// memory's sake alone: the kernel holds its own reference to a socket with operations in
    /// flight, so close(2) would neither end a pending recv nor send our FIN.
    fd: OwnedFd,
    session: Session,
    phase: Phase,
    /// A recv is in flight. It names no memory of ours: the kernel takes a buffer from the pool
    /// only once data has arrived ([`Pool`](crate::buf_ring::Pool)).
    recv_armed: bool,
    /// A send is in flight, and the kernel reads `sending[sent..]` from its heap block: until
    /// its completion nothing may push to, shrink, swap or drop `sending` (moving the
    /// `ConnState` is fine: the heap block stays put).
    send_armed: bool,
    sending: Vec<u8>,
    sent: usize,
    /// Bytes the session produced while `sending` was the kernel's, queued behind it.
    pending: Vec<u8>,
    /// Last time a byte moved either way: the idle timeout counts from here.
    last_active: Instant,
    /// When the first byte of a still incomplete request head came (`--head-timeout`).
    head_since: Option<Instant>,
    /// Counts the connection as live in the summary until it is dropped.
    _live: LiveConn,
}

impl ConnState {
    /// Bytes owed to the client that the kernel has not taken yet.
    pub fn owed(&self) -> usize {
        self.sending.len() - self.sent + self.pending.len()
    }

    /// The recv completed: the bytes the kernel put in a pool buffer (empty: EOF), or its error.
    pub fn on_recv(&mut self, got: Result<&[u8], Errno>, now: Instant) {
        self.recv_armed = false;
        match got {
            // EOF: the client half-closed or closed. Echo flushes what it owes; HTTP drops a
            // request cut off half-way; then close. While lingering: the EOF we waited for.
            Ok([]) => {
                self.phase = match self.phase {
                    Phase::Open => match self.session.eof() {
                        Flow::Close { linger } => Phase::Flushing { linger },
                        Flow::Continue => Phase::Flushing { linger: false },
                    },
                    Phase::Lingering { .. } => Phase::Closing { cancelled: false },
                    other => other,
                }
            }
            Ok(data) => {
                self.last_active = now;
                if self.phase == Phase::Open {
                    // The session appends its answers to `pending`, never to `sending`.
                    if let Flow::Close { linger } = self.session.feed(data, &mut self.pending) {
                        self.phase = Phase::Flushing { linger };
                    }
                    // A head's clock starts at its first byte, and stops when it is whole.
                    let started = self.head_since.unwrap_or(now);
                    self.head_since = self.session.head_pending().then_some(started);
                } // Lingering: read only to be discarded. Closing: too late to matter.
            }
            // The pool was empty when the data arrived (more connections had data than the pool
            // has buffers): `next` submits the recv again, after this turn gave buffers back.
            Err(Errno::ENOBUFS) => {}
            // EINTR, EAGAIN: not expected (io_uring polls and retries until data comes); if one
            // comes anyway, `next` submits the recv again. ECANCELED: we cancelled it (closing).
            Err(Errno::EINTR | Errno::EAGAIN | Errno::ECANCELED) => {}
            // The client reset the connection: its problem, and the end of this one only.
            Err(Errno::ECONNRESET) => self.close(),
            Err(e) => {
                warn_throttled!("{NAME}: recv: {e}");
                self.close();
            }
        }
    }

    /// The send completed: `res` is how many bytes the kernel took, or minus its errno.
    pub fn on_send(&mut self, res: i32, now: Instant) {
        self.send_armed = false;
        match usize::try_from(res).map_err(|_| Errno::from_raw(-res)) {
            // Possibly fewer bytes than asked — a partial write: `next` submits the rest.
            Ok(n) => {
                self.sent += n;
                self.last_active = if n > 0 { now } else { self.last_active };
            }
            // As for recv: `next` submits the rest again, unless we cancelled it (closing).
            Err(Errno::EINTR | Errno::EAGAIN | Errno::ECANCELED) => {}
            // The client is gone (reset, or closed while we still had things to say). The send
            // carries MSG_NOSIGNAL, so this is EPIPE for this connection, not a SIGPIPE.
            Err(Errno::EPIPE | Errno::ECONNRESET) => self.close(),
            Err(e) => {
                warn_throttled!("{NAME}: send: {e}");
                self.close();
            }
        }
    }

    /// Ends the connection as soon as the kernel lets go of it (see [`Phase::Closing`]).
    pub fn close(&mut self) {
        if !matches!(self.phase, Phase::Closing { .. }) {
            self.phase = Phase::Closing { cancelled: false };
        }
    }

    /// `--head-timeout` passed with a head incomplete: a 408 queued, then the lingering close.
    fn expire_head(&mut self) {
        self.head_since = None;
        self.session.head_timeout(&mut self.pending);
        self.phase = Phase::Flushing { linger: true };
    }

    /// When a head that started arriving must be whole (while reading requests only).
    fn head_deadline(&self) -> Option<Instant> {
        (self.phase == Phase::Open).then_some(self.head_since? + self.session.head_limit()?)
    }

    fn may_read(&self) -> bool {
        match self.phase {
            // Backpressure: no recv while owing too much, or holding requests (`backlog`).
            Phase::Open => self.owed() < OUT_LIMIT && !self.session.backlog(),
            Phase::Lingering { .. } => true,
            Phase::Flushing { .. } | Phase::Closing { .. } => false,
        }
    }

    /// When the loop must act on this connection if nothing happens.
    fn deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until } => Some(until),
            Phase::Closing { .. } => None,
            Phase::Open => (idle.map(|d| self.last_active + d).into_iter())
                .chain(self.head_deadline())
                .min(),
            Phase::Flushing { .. } => idle.map(|d| self.last_active + d),
        }
    }

    /// What to submit now, decided from the state alone; what it returns is marked in flight.
    fn next(&mut self, now: Instant) -> Next {
        let mut next = Next {
            fd: self.fd.as_raw_fd(),
            ..Next::default()
        };
        // Requests the session held back (its per-call budget): a batch more per completion.
        if self.phase == Phase::Open
            && self.session.backlog()
            && self.owed() < OUT_LIMIT
            && let Flow::Close { linger } = self.session.feed(&[], &mut self.pending)
        {
            self.phase = Phase::Flushing { linger };
        }
        // The kernel has taken all of `sending` and no send is in flight: the buffer is ours
        // again. Recycle it, and the bytes queued behind it become the next send.
        if !self.send_armed && self.sent == self.sending.len() {
            self.sending.clear();
            if self.sending.capacity() > KEEP {
                self.sending = Vec::new(); // after an echo burst: give the memory back
            }
            self.sent = 0;
            std::mem::swap(&mut self.sending, &mut self.pending);
        }
        if let (Phase::Flushing { linger }, 0) = (self.phase, self.owed()) {
            // Everything is sent: shutdown(2) SHUT_WR (a plain syscall, never blocking, once per
            // connection at most) puts our FIN after the last answer; then linger.
            self.phase = if linger && shutdown(self.fd.as_raw_fd(), Shutdown::Write).is_ok() {
                Phase::Lingering {
                    until: now + LINGER,
                }
            } else {
                Phase::Closing { cancelled: false } // or the client is gone already
            };
        }
        if let Phase::Closing { cancelled: false } = self.phase {
            // Cancel by token, not by descriptor: the cancel runs at the next submission, and by
            // then the connection may be gone and its descriptor's number reused; its token,
            // with the slot's generation, names this connection's operations and nothing else.
            let armed = [(self.recv_armed, Op::Recv), (self.send_armed, Op::Send)];
            next.cancel = armed.map(|(armed, op)| armed.then_some(op));
            self.phase = Phase::Closing { cancelled: true };
        }
        if let Phase::Closing { .. } = self.phase {
            next.done = !self.recv_armed && !self.send_armed; // the kernel holds nothing
            return next;
        }
        if !self.send_armed && self.sent < self.sending.len() {
            let rest = &self.sending[self.sent..];
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX); // the rest goes next time
            next.send = Some((rest.as_ptr(), len));
            self.send_armed = true;
        }
        if !self.recv_armed && self.may_read() {
            next.recv = true;
            self.recv_armed = true;
        }
        next
    }
}

// ─── the loop's table of connections ────────────────────────────────────────────────────────

#[derive(Default)]
struct Slot {
    /// Bumped each time the slot is freed, so that tokens of its previous connections go stale.
    generation: u32,
    conn: Option<ConnState>,
}

/// Every connection of the loop, in slots addressed by the tokens. Lesson 10's token was the
/// descriptor number, which the kernel reuses once it is closed: a late completion would hit a
/// stranger. Here the generation tells them apart.
pub struct Conns {
    slots: Vec<Slot>,
    /// Free slots, the most recently freed on top: reused first — when a stale completion is
    /// likeliest to hit a newcomer, and the generation most needed.
    free: Vec<u32>,
    config: Config,
    idle: Option<Duration>,
    stats: &'static Stats,
    /// When the next sweep for timeouts is due (`None`: no deadline anywhere).
    next_sweep: Option<Instant>,
}

impl Conns {
    pub fn new(args: &CommonArgs, stats: &'static Stats) -> Conns {
        Conns {
            slots: Vec::new(),
            free: Vec::new(),
            config: args.session_config(),
            idle: args.idle_timeout(),
            stats,
            next_sweep: None,
        }
    }

    /// Takes a freshly accepted socket (counted accepted and live): its slot and generation.
    pub fn insert(&mut self, fd: OwnedFd, now: Instant) -> (u32, u32) {
        // TCP_NODELAY: each answer leaves at once rather than wait behind Nagle (lesson 1).
        if let Err(e) = setsockopt(&fd, sockopt::TcpNoDelay, &true) {
            warn_throttled!("{NAME}: TCP_NODELAY: {e}");
        }
        let conn = ConnState {
            fd, // owned by the ConnState from here on
            session: Session::new(self.config, self.stats.worker(0)),
            phase: Phase::Open,
            recv_armed: false,
            send_armed: false,
            sending: Vec::new(),
            sent: 0,
            pending: Vec::new(),
            last_active: now,
            head_since: None,
            _live: self.stats.accepted(0),
        };
        let deadline = conn.deadline(self.idle); // the sweep is due by its idle timeout, if any
        self.next_sweep = self.next_sweep.into_iter().chain(deadline).min();
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default()); // generation 0, empty
            (self.slots.len() - 1) as u32
        });
        // One slot per open descriptor, and RLIMIT_NOFILE is far below 2^24 (a token's field).
        assert!(slot < 1 << 24, "more connections than a token can name");
        let s = &mut self.slots[slot as usize];
        s.conn = Some(conn);
        (slot, s.generation)
    }

    /// The connection in `slot` if it is still the one of `generation` (else a late completion).
    pub fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut ConnState> {
        let s = self
            .slots
            .get_mut(slot as usize)
            .filter(|s| s.generation == generation)?;
        s.conn.as_mut()
    }

    /// What to submit for this connection now; a finished one is freed (socket closed, slot's
    /// generation moved on).
    pub fn drive(&mut self, slot: u32, generation: u32, now: Instant) -> Next {
        let Some(conn) = self.get_mut(slot, generation) else {
            return Next::default();
        };
        let next = conn.next(now);
        let lingering = conn.deadline(None); // (no idle timeout: a linger or a head deadline)
        if next.done {
            let s = &mut self.slots[slot as usize];
            drop(s.conn.take()); // its buffers, and its socket: close(2); nothing in flight
            s.generation = s.generation.wrapping_add(1);
            self.free.push(slot);
        } else {
            // Lingering must end on time, whatever the idle timeout: the earlier deadline wins.
            self.next_sweep = self.next_sweep.into_iter().chain(lingering).min();
        }
        next
    }

    /// When the next sweep is due, if any deadline is pending.
    pub fn next_sweep(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// The sweep, as in lesson 10: ends every connection past its deadline (idle, lingering, or
    /// a head past `--head-timeout`: a 408 first) and returns them for the loop to drive;
    /// O(connections), so only when the earliest deadline is due, at most every [`SWEEP_EVERY`].
    pub fn sweep(&mut self, now: Instant) -> Vec<(u32, u32)> {
        let mut expired = Vec::new();
        if self.next_sweep.is_none_or(|t| now < t) {
            return expired;
        }
        let mut next: Option<Instant> = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(conn) = &mut s.conn else { continue };
            match conn.deadline(self.idle) {
                // Past --head-timeout: a 408 and a lingering close; else silent: closed.
                Some(d) if d <= now => {
                    match conn.head_deadline().is_some_and(|h| h <= now) {
                        true => conn.expire_head(),
                        false => conn.close(),
                    }
                    expired.push((i as u32, s.generation)); // driven next: submits it all
                }
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        self.next_sweep = next.map(|n| n.max(now + SWEEP_EVERY));
        expired
    }
}

#[cfg(test)]
mod tests;
