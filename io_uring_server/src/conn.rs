//! The connections: the second role of lesson 13's model, beside the loop in `main.rs`, and the
//! completion-side counterpart of lesson 7's conn.rs (`nonblocking_busy_server/src/conn.rs`).
//! A [`ConnState`] never touches the ring: `main.rs` reports each completion to it (`on_recv`,
//! `on_send`) and submits whatever [`Conns::drive`] answers. The rules it keeps:
//!
//! - **One recv and one send in flight at most**, per connection: two sends in flight on one
//!   socket may each complete partially, and their bytes could interleave.
//! - **Two output buffers**: the kernel reads `sending` while a send is in flight, so the session
//!   appends to `pending` meanwhile (appending to `sending` could reallocate it under the kernel).
//! - **Partial sends**: a completion for fewer bytes than asked submits the rest.
//! - **Backpressure**: a connection owing [`OUT_LIMIT`] or more gets no new recv until it drains.
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

/// A connection owing this much gets no new recv until the client has taken enough of it, so
/// our memory per connection stays bounded: this plus what one read can produce.
pub const OUT_LIMIT: usize = 64 * 1024;
/// An output buffer the kernel is done with is kept for the next answer if it holds at most this
/// much (an HTTP answer: no malloc per request), and freed if larger (after an echo burst).
const KEEP: usize = 1024;
/// The least time between two sweeps for timeouts (as in lesson 10).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

// ─── tokens: which operation of which connection ────────────────────────────────────────────

/// The operation a completion reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Accept = 0,
    Recv = 1,
    Send = 2,
    Cancel = 3,
}

/// The `user_data` of a submission, returned untouched in its completion: bits 0–7 the
/// operation, 8–31 the connection's slot, 32–63 the slot's generation.
pub fn token(op: Op, slot: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(slot) << 8 | op as u64
}

/// The operation, slot and generation of a `user_data`.
pub fn untoken(user_data: u64) -> (Op, u32, u32) {
    let slot = (user_data >> 8) as u32 & 0xff_ffff;
    let generation = (user_data >> 32) as u32;
    // Bits 2–7 are zero in every token: `token` writes an `Op`, 0 to 3.
    let op = [Op::Accept, Op::Recv, Op::Send, Op::Cancel][(user_data & 0b11) as usize];
    (op, slot, generation)
}

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

/// What the loop must submit for a connection now (all of it: each is already marked in flight).
#[derive(Debug, Default)]
pub struct Next {
    pub fd: RawFd,
    /// Send these bytes: they lie in the connection's `sending` buffer, frozen until the send's
    /// completion (see [`ConnState`]).
    pub send: Option<(*const u8, u32)>,
    /// Receive into a buffer of the pool.
    pub recv: bool,
    /// Cancel these operations of the connection, which are in flight.
    pub cancel: [Option<Op>; 2],
    /// Nothing in flight and nothing to do: free the connection.
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
    /// A send is in flight, and the kernel reads `sending[sent..]` from its heap block. Until
    /// its completion nothing may push to, shrink, swap or drop `sending`. (Moving the
    /// `ConnState` is fine: the heap block stays where it is.)
    send_armed: bool,
    sending: Vec<u8>,
    sent: usize,
    /// Bytes the session produced while `sending` was the kernel's, queued behind it.
    pending: Vec<u8>,
    /// Last time a byte moved either way: the idle timeout counts from here.
    last_active: Instant,
    /// Counts the connection as live in the summary until it is dropped.
    _live: LiveConn,
}

impl ConnState {
    /// Bytes owed to the client that the kernel has not taken yet.
    pub fn owed(&self) -> usize {
        self.sending.len() - self.sent + self.pending.len()
    }

    /// The recv completed: `got` holds the bytes the kernel put in a pool buffer (empty: EOF),
    /// or its error.
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
                } // Lingering: read only to be discarded. Closing: too late to matter.
            }
            // The pool was empty when the data arrived: more connections had data at that
            // moment than the pool has buffers. Not this client's fault: `next` submits the recv
            // again, and it reaches the kernel after this turn has given its buffers back.
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
                if n > 0 {
                    self.last_active = now;
                }
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

    fn may_read(&self) -> bool {
        match self.phase {
            Phase::Open => self.owed() < OUT_LIMIT, // backpressure: no recv while owing too much
            Phase::Lingering { .. } => true,
            Phase::Flushing { .. } | Phase::Closing { .. } => false,
        }
    }

    /// When the loop must act on this connection if nothing happens.
    fn deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until } => Some(until),
            Phase::Closing { .. } => None,
            Phase::Open | Phase::Flushing { .. } => idle.map(|d| self.last_active + d),
        }
    }

    /// What to submit now, decided from the state alone; what it returns is marked in flight.
    fn next(&mut self, now: Instant) -> Next {
        let mut next = Next {
            fd: self.fd.as_raw_fd(),
            ..Next::default()
        };
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
            // Everything is sent. shutdown(2) SHUT_WR puts our FIN after the last answer; then
            // linger. (A plain syscall: it never blocks, and runs once per connection at most.)
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
/// descriptor number, which the kernel hands out again as soon as it is closed; a completion
/// that arrives late would then be applied to a stranger. Here the generation tells them apart.
pub struct Conns {
    slots: Vec<Slot>,
    /// Free slots, the most recently freed on top: reused first, which is exactly when a stale
    /// completion would be most likely to hit a newcomer — and the generation most needed.
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

    /// Takes a freshly accepted socket (counted as accepted and live) and returns its slot and
    /// generation, for its tokens.
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
            _live: self.stats.accepted(0),
        };
        let deadline = conn.deadline(self.idle); // its idle timeout, if any: the sweep is due by then
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

    /// The connection in `slot` if it is still the one of `generation`: `None` for a completion
    /// that arrives after its connection was freed (and perhaps its slot reused).
    pub fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut ConnState> {
        let s = self
            .slots
            .get_mut(slot as usize)
            .filter(|s| s.generation == generation)?;
        s.conn.as_mut()
    }

    /// What to submit for this connection now. A finished connection is freed here: its socket
    /// is closed and its slot's generation moves on.
    pub fn drive(&mut self, slot: u32, generation: u32, now: Instant) -> Next {
        let Some(conn) = self.get_mut(slot, generation) else {
            return Next::default();
        };
        let next = conn.next(now);
        let lingering = conn.deadline(None); // (no idle timeout: a lingering one's end, if any)
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

    /// The sweep, as in lesson 10: closes every connection past its deadline — silent for
    /// `--idle-timeout`, or lingering for [`LINGER`] — and returns them, for the loop to submit
    /// their cancels. O(connections), so it runs only when the earliest deadline is due, and at
    /// most once per [`SWEEP_EVERY`].
    pub fn sweep(&mut self, now: Instant) -> Vec<(u32, u32)> {
        let mut expired = Vec::new();
        if self.next_sweep.is_none_or(|t| now < t) {
            return expired;
        }
        let mut next: Option<Instant> = None;
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(conn) = &mut s.conn else { continue };
            match conn.deadline(self.idle) {
                Some(d) if d <= now => {
                    conn.close();
                    expired.push((i as u32, s.generation));
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
