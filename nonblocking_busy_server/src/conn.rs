//! Lesson 7's second role, **the connection**: a non-blocking socket, what its client is still
//! owed, and a state machine whose handler does all the I/O it can without waiting, then answers
//! *want read / want write*. The other role is the loop (`main.rs`; its table: [`crate::Conns`]).
//! Lessons 8–10 replace only the loop and take this file from this crate: one copy — Eli
//! Bendersky's event-loop servers (<https://github.com/eliben/code-for-blog>, 2017) copied
//! theirs into each loop, and the copies drifted into a bug.
//!
//! ```text
//!   the loop (main.rs; lessons 8–10)          this file
//!   readiness ──► Ready{read, write, hup} ──► ConnState::on_ready (via Conns::on_ready)
//!                                               send(2) what is still owed, until EAGAIN
//!                                               recv(2) into ONE scratch buffer (all conns)
//!                                                 └─► Session::feed ─► send(2) at once
//!   interest  ◄── Want::{Read, ReadWrite, Write, Close} ◄──┘   (Close: drop it = close(2))
//! ```
//!
//! What it keeps, each explained where it is kept: `EAGAIN` means "not now", never "close";
//! a partial write leaves the rest owed, and write interest is wanted only while something is
//! owed; a connection owing [`OUT_LIMIT`] is not read (backpressure, `docs/contract.md` §4); one
//! turn reads at most [`READS_PER_TURN`] times (fairness); buffers are lazy; the lingering close,
//! the idle timeout and the head deadline (§5) are deadlines the table sweeps, never a wait.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, shutdown};
use server_common::net::LINGER;
use server_common::proto::{Flow, Session, Work};
use server_common::stats::LiveConn;
use server_common::warn_throttled;

pub use crate::{Ready, Want};

/// One recv(2) reads at most this much, into the scratch buffer all connections share.
pub const SCRATCH: usize = 64 * 1024;
/// A connection owing this much is not read until the client has taken enough of it: *our*
/// memory per connection stays under this plus what one read can produce (one echoed read).
pub const OUT_LIMIT: usize = 64 * 1024;
/// The fairness budget: reads per connection per turn of the loop.
pub const READS_PER_TURN: usize = 4;

// ─── one connection ─────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading requests, writing answers.
    Open,
    /// The session said Close (or the client sent EOF): send what is owed, then close — or,
    /// with `linger`, half-close and linger.
    Flushing { linger: bool },
    /// Our side is shut (SHUT_WR): read and discard until the client's EOF or `until`, so the
    /// close cannot become an RST that destroys the answer (lesson 1 does it blocking).
    Lingering { until: Instant },
    /// A reset, a vanished client, or a socket error: close without further ado.
    Closed,
}

/// One connection of an event loop: its socket, its protocol session and what it still owes —
/// only what every loop needs; a loop's own bookkeeping stays in that loop (lesson 10's).
/// Dropping it closes the socket — its only descriptor, so that also takes it out of any epoll
/// interest list.
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
    /// When the first byte of a still incomplete request head came (`--head-timeout`).
    head_since: Option<Instant>,
    /// Counts the connection as live in the summary until it is dropped.
    _live: LiveConn,
}

impl AsFd for ConnState {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The buffers every connection of one loop shares (one thread serves one connection at a
/// time): reads land in `input`, answers are made in `output`. The table owns them.
pub(crate) type Scratch = (Box<[u8]>, Vec<u8>);

impl ConnState {
    /// A new connection (the table's `insert`): idle, owing nothing, wanting to read.
    pub(crate) fn new(fd: OwnedFd, session: Session, live: LiveConn, now: Instant) -> ConnState {
        ConnState {
            fd, // owned by the ConnState from here on
            session,
            out: Vec::new(),
            sent: 0,
            phase: Phase::Open,
            last_active: now,
            input_pending: false,
            hup: false,
            head_since: None,
            _live: live,
        }
    }

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

    /// Whether input may wait: in the socket (see the field), or in the session, held back by
    /// its per-call budget (`Session::backlog`), which no readiness call can report.
    pub fn input_pending(&self) -> bool {
        self.input_pending || self.session.backlog()
    }

    /// Whether the loop must come back to this connection by itself, with no readiness event:
    /// input may be waiting, and it may read.
    pub fn needs_revisit(&self) -> bool {
        self.want().read() && self.input_pending() && !self.session.waiting()
    }

    /// Lesson 14 (`Config::defer`): the work of the request the session stopped at, for the
    /// loop's pool. While it is out, nothing more is read from this connection.
    pub fn pending_work(&self) -> Option<Work> {
        self.session.pending_work()
    }

    /// Lesson 14: the pool has run [`ConnState::pending_work`]. The request's answer is queued
    /// and the connection carries on as after a readiness event: it sends, and reads again
    /// (first the input that waited in the session behind the request).
    pub(crate) fn work_done(&mut self, now: Instant, scratch: &mut Scratch, name: &str) -> Want {
        if self.phase == Phase::Open {
            let flow = self.session.work_done(&mut scratch.1);
            self.queue(&mut scratch.1, now, name);
            if let Flow::Close { linger } = flow {
                self.phase = Phase::Flushing { linger };
            }
        }
        self.input_pending |= self.session.backlog();
        self.on_ready(Ready::new(false, true), now, scratch, name) // send; read if input waits
    }

    /// Bytes owed to the client and not yet taken by the kernel.
    pub fn owed(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Bytes on the heap: the output buffer and any partial request.
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity() + self.session.buffered()
    }

    /// When the loop must act if nothing happens: the idle timeout, a head's deadline, or the
    /// end of a linger (`deadline(None)`: those that must be met whatever the idle timeout).
    pub(crate) fn deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        let idle = idle.map(|d| self.last_active + d);
        match self.phase {
            Phase::Lingering { until } => Some(until),
            Phase::Closed => Some(self.last_active),
            // Work out with lesson 14's pool: the client waits for us, so no idle timeout.
            Phase::Open if self.session.waiting() => None,
            Phase::Open => match (idle, self.head_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            Phase::Flushing { .. } => idle,
        }
    }

    /// When a request head that started arriving must be whole (`--head-timeout`).
    pub(crate) fn head_deadline(&self) -> Option<Instant> {
        Some(self.head_since? + self.session.head_limit()?)
    }

    /// The head's deadline passed: a `408`, as much of it as the socket takes now (the client
    /// is dribbling, not reading), then the lingering close.
    pub(crate) fn expire_head(&mut self, now: Instant, scratch: &mut Scratch, name: &str) {
        self.head_since = None;
        self.session.head_timeout(&mut scratch.1);
        self.queue(&mut scratch.1, now, name);
        (self.out, self.sent) = (Vec::new(), 0); // what it would not take now: dropped
        if self.phase == Phase::Open {
            self.phase = Phase::Flushing { linger: true };
        }
        self.settle(now);
    }

    /// The handler: the readiness call said `ready`; do all the I/O that can be done now
    /// without blocking, and answer what to wait for next.
    pub(crate) fn on_ready(
        &mut self,
        ready: Ready,
        now: Instant,
        scratch: &mut Scratch,
        name: &str,
    ) -> Want {
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
            // Nor while a request's work is out with lesson 14's pool: answers stay in order.
            Phase::Open => self.owed() < OUT_LIMIT && !self.session.waiting(),
            Phase::Lingering { .. } => true,
            Phase::Flushing { .. } | Phase::Closed => false,
        }
    }

    /// recv(2) (see lesson 1) until the socket is empty, the budget is spent, the session ends
    /// the connection, or the connection owes too much to take more. Requests the session held
    /// back (its per-call budget, `Session::backlog`) go first: nothing new is read until then.
    fn read(&mut self, now: Instant, scratch: &mut Scratch, name: &str) {
        for _ in 0..READS_PER_TURN {
            if !self.may_read() {
                return; // over OUT_LIMIT or closing: `input_pending` stays set, to come back
            }
            // The session's held-back requests go first: no recv until they are answered.
            let backlog = self.session.backlog() && self.phase == Phase::Open;
            let n = match backlog {
                true => 0,
                false => match self.receive(&mut scratch.0, name) {
                    Some(n) => n,
                    None => return, // empty (EAGAIN), EOF, or failed
                },
            };
            if let Phase::Open = self.phase {
                self.last_active = now;
                let flow = self.session.feed(&scratch.0[..n], &mut scratch.1);
                self.queue(&mut scratch.1, now, name);
                // A head's clock starts at its first byte, and stops when it is whole.
                let started = self.head_since.unwrap_or(now);
                self.head_since = self.session.head_pending().then_some(started);
                if self.session.backlog() || self.session.waiting() {
                    return; // held back by the session's budget (the rest next turn), or work out
                }
                if let (Flow::Close { linger }, Phase::Open) = (flow, self.phase) {
                    // The rest of this read is discarded; the session knew about it when it
                    // chose `linger`. `input_pending` stays as it is: there may be more.
                    self.phase = Phase::Flushing { linger };
                    return;
                }
            } // Lingering: the bytes are read only to be discarded.

            // A short read: the kernel's receive queue was empty at that moment, and reading
            // again would only return EAGAIN. Whatever arrives later raises a new readiness
            // event (for epoll, a new edge). One exception: recv(2) returns the data *before* a
            // FIN without reporting the FIN, whose wake-up is then spent — the readiness call
            // told us (`hup`: EPOLLRDHUP/POLLHUP), and we read on to the EOF.
            if backlog && !self.input_pending && !self.session.backlog() {
                return; // worked off, and the socket was already empty
            }
            if !backlog && n < scratch.0.len() && !self.hup {
                self.input_pending = false;
                return;
            }
        } // budget spent: `input_pending` stays set, and the loop comes back
    }

    /// recv(2) once: the bytes read, or `None` when there is nothing more to read this turn —
    /// the socket is empty, the client sent EOF, or the connection failed.
    fn receive(&mut self, buf: &mut [u8], name: &str) -> Option<usize> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(0) => {
                    // EOF: the client half-closed (or closed). Echo owes what it has queued;
                    // HTTP drops a request cut off half-way. Flush, then close.
                    self.input_pending = false;
                    self.phase = match self.phase {
                        Phase::Open => match self.session.eof() {
                            Flow::Close { linger } => Phase::Flushing { linger },
                            Flow::Continue => Phase::Flushing { linger: false },
                        },
                        _ => Phase::Closed, // a lingering close got its EOF: done
                    };
                }
                Ok(n) => return Some(n),
                // EAGAIN: the socket is empty. The normal end of every read; not an error.
                Err(Errno::EAGAIN) => self.input_pending = false,
                // A signal interrupted the call (cannot really happen without blocking).
                Err(Errno::EINTR) => continue,
                // The client reset the connection: the end of this one only.
                Err(Errno::ECONNRESET) => self.phase = Phase::Closed,
                Err(e) => {
                    warn_throttled!("{name}: recv: {e}");
                    self.phase = Phase::Closed;
                }
            }
            return None;
        }
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
        self.last_active = if taken > 0 { now } else { self.last_active };
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

/// send(2) (see lesson 1) in a loop: a non-blocking send takes what fits in the socket's send
/// buffer and returns that count — a *partial write* — so we go on from there until everything
/// is taken or EAGAIN says the buffer is full (then the loop waits for writability). Returns how
/// many bytes the kernel took, or `None` if the client is gone.
fn send_some(fd: &OwnedFd, data: &[u8], name: &str) -> Option<usize> {
    let mut taken = 0;
    while taken < data.len() {
        // MSG_NOSIGNAL: a vanished client gives EPIPE, not a process-killing SIGPIPE.
        match send(fd.as_raw_fd(), &data[taken..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => taken += n,         // maybe less than asked: the loop sends the rest
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
