//! The state lesson 13 keeps beside its ring: the pool of buffers every recv reads into, and
//! the connections — what each owes, which of its operations the kernel holds, and what to
//! submit next. The connection half is the completion-side counterpart of lessons 7–10's
//! `server_common/src/conn.rs`, and never touches the ring: `main.rs` reports each completion
//! to it (`on_recv`, `on_send`) and submits whatever [`Conns::drive`] answers.
//!
//! The rules it keeps, each explained where it is kept:
//!
//! - **Recv buffers belong to a pool, not to connections** ([`Pool`]): the kernel picks one
//!   only when data has arrived, so an idle connection holds none.
//! - **One recv and one send in flight at most**, per connection. Two sends in flight on one
//!   socket may each complete partially, and their bytes could interleave; one at a time keeps
//!   the byte stream in order.
//! - **Two output buffers**: `sending`, which the kernel reads while a send is in flight and
//!   nobody else touches, and `pending`, where the session appends meanwhile. Appending to the
//!   buffer the kernel reads could reallocate it under the kernel's feet.
//! - **Partial sends**: a completion for fewer bytes than asked submits the rest.
//! - **Backpressure**: a connection owing [`OUT_LIMIT`] or more gets no new recv until it drains.
//! - **Closing waits for the kernel**: a connection is freed — socket closed, buffers dropped —
//!   only once none of its operations is in flight; to get there it cancels them.
//! - **Slots with generations**: a completion names its connection by slot *and* generation, so
//!   a late one can never be applied to a newer connection that got the same slot.

use std::alloc::{Layout, alloc_zeroed};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::IoUring;
use nix::errno::Errno;
use nix::sys::socket::{Shutdown, setsockopt, shutdown, sockopt};
use server_common::cli::CommonArgs;
use server_common::net::LINGER;
use server_common::proto::{Config, Flow, Session};
use server_common::stats::{LiveConn, Stats};
use server_common::{Context, SetupError, warn_throttled};

use crate::NAME;

/// The recv buffer pool: BUFS buffers (a power of two) of BUF_SIZE bytes, 4 MiB in all.
pub const BUFS: u16 = 1024;
pub const BUF_SIZE: usize = 4096;
/// The pool's buffer group id, named by every recv.
pub const BGID: u16 = 0;
/// IORING_RECVSEND_POLL_FIRST, for every recv: wait for data before trying. Just after we have
/// answered, the next request is rarely there yet, and a first try would only fail, then wait.
pub const POLL_FIRST: u16 = 1;
/// A connection owing this much gets no new recv until the client has taken enough of it, so
/// our memory per connection stays bounded: this plus what one read can produce.
pub const OUT_LIMIT: usize = 64 * 1024;
/// An output buffer the kernel is done with is kept for the next answer if it holds at most this
/// much (an HTTP answer: no malloc per request), and freed if larger (after an echo burst).
const KEEP: usize = 1024;
/// The least time between two sweeps for timeouts (as in lesson 10).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

// ─── the recv buffer pool ────────────────────────────────────────────────────────────────────

/// `struct io_uring_buf`: one entry of the provided-buffer ring (io_uring_register_buf_ring(3)).
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The pool every recv takes its buffer from: a ring of entries we fill and the kernel empties.
/// A buffer in the ring is the kernel's — it may write into it at any moment; a completion hands
/// one to us, with the bytes received, until `give_back`. The memory is a function of the
/// pool's size, not of the number of connections: a recv waiting on an idle connection holds no
/// buffer (were it to bring its own, 19,000 idle clients would pin 76 MiB).
pub struct Pool {
    entries: *mut BufEntry,
    /// The ring's tail, which we advance and the kernel reads: it overlays entry 0's `resv`.
    tail: &'static AtomicU16,
    next_tail: u16,
    bufs: *mut u8,
}

impl Pool {
    pub fn new(ring: &IoUring) -> Result<Pool, SetupError> {
        // The entries must be page aligned. Leaked with the buffers: neither is ever freed.
        let layout = Layout::from_size_align(usize::from(BUFS) * size_of::<BufEntry>(), 4096)
            .expect("a constant layout: non-zero size, power-of-two alignment");
        // SAFETY: the layout's size is not zero.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufEntry>();
        let bufs = Box::leak(vec![0u8; usize::from(BUFS) * BUF_SIZE].into_boxed_slice());
        if entries.is_null() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory))
                .context("cannot allocate the buffer ring");
        }
        // SAFETY: `entries` is page aligned, zeroed and BUFS entries long, and it is leaked, as
        // are the buffers: both stay valid until the process exits, longer than the ring.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, BUFS, BGID, 0)
        }
        .context("cannot register the buffer ring")?;
        // SAFETY: entry 0 lives as long as the process; u16 and AtomicU16 have the same size
        // and alignment, and from now on the tail is only ever written with atomic stores.
        let tail = unsafe { &*std::ptr::addr_of!((*entries).resv).cast::<AtomicU16>() };
        let mut pool = Pool {
            entries,
            tail,
            next_tail: 0,
            bufs: bufs.as_mut_ptr(),
        };
        (0..BUFS).for_each(|bid| pool.give_back(Some(bid)));
        Ok(pool)
    }

    /// Hands buffer `bid` — if a completion brought one — back to the kernel: from the store
    /// below on, any recv may write into it.
    pub fn give_back(&mut self, bid: Option<u16>) {
        let Some(bid) = bid else { return };
        assert!(bid < BUFS, "the kernel names only buffers we gave it");
        let i = usize::from(self.next_tail % BUFS);
        // SAFETY: i < BUFS, inside the array. The kernel reads only entries between its head and
        // the published tail; entry i lies past the tail (the ring holds at most BUFS buffers
        // and `bid` is out of it), so nobody else touches it. Writing fields through the raw
        // pointer makes no reference, and leaves `resv` — the tail, in entry 0 — alone.
        unsafe {
            let e = self.entries.add(i);
            (*e).addr = self.bufs.add(usize::from(bid) * BUF_SIZE) as u64;
            (*e).len = BUF_SIZE as u32;
            (*e).bid = bid;
        }
        self.next_tail = self.next_tail.wrapping_add(1);
        // Release: the kernel sees the entry's fields before it sees the tail that covers them.
        self.tail.store(self.next_tail, Ordering::Release);
    }

    /// What a recv completion brought: the bytes the kernel put in buffer `bid` (empty at EOF),
    /// or its error.
    ///
    /// # Safety
    /// `res` and `bid` come from one recv completion, and `bid` has not been given back since.
    pub unsafe fn received(&self, res: i32, bid: Option<u16>) -> Result<&[u8], Errno> {
        let (len, bid) = match (usize::try_from(res), bid) {
            (Ok(0), _) => return Ok(&[]),
            (Ok(len), Some(bid)) => (len, bid),
            (Ok(_), None) => return Err(Errno::EIO), // cannot be: BUFFER_SELECT names the buffer
            (Err(_), _) => return Err(Errno::from_raw(-res)),
        };
        assert!(
            bid < BUFS && len <= BUF_SIZE,
            "a completion within its buffer"
        );
        // SAFETY: the kernel wrote these bytes and then let go of the buffer: it cannot pick it
        // again before `give_back`, which needs `&mut self` and so waits for this borrow to end.
        Ok(unsafe { std::slice::from_raw_parts(self.bufs.add(usize::from(bid) * BUF_SIZE), len) })
    }
}

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
    let op = match user_data & 0xff {
        1 => Op::Recv,
        2 => Op::Send,
        3 => Op::Cancel,
        _ => Op::Accept,
    };
    (
        op,
        (user_data >> 8) as u32 & 0xff_ffff,
        (user_data >> 32) as u32,
    )
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
    /// completion (see [`Conn`]).
    pub send: Option<(*const u8, u32)>,
    /// Receive into a buffer of the pool.
    pub recv: bool,
    /// Cancel these operations of the connection, which are in flight.
    pub cancel: [Option<Op>; 2],
    /// Nothing in flight and nothing to do: free the connection.
    done: bool,
}

/// One connection: its socket, its protocol session, what it owes, and what the kernel holds.
#[derive(Debug)]
pub struct Conn {
    /// The socket, closed (dropped) only when none of its operations is in flight. Not for our
    /// memory's sake alone: the kernel holds its own reference to a socket with operations in
    /// flight, so close(2) would neither end a pending recv nor send our FIN.
    fd: OwnedFd,
    session: Session,
    phase: Phase,
    /// A recv is in flight. It names no memory of ours: the kernel takes a buffer from the pool
    /// only once data has arrived ([`Pool`]).
    recv_armed: bool,
    /// A send is in flight, and the kernel reads `sending[sent..]` from its heap block. Until
    /// its completion nothing may push to, shrink, swap or drop `sending`. (Moving the `Conn`
    /// is fine: the heap block stays where it is.)
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

impl Conn {
    /// Bytes owed to the client that the kernel has not taken yet.
    pub fn owed(&self) -> usize {
        self.sending.len() - self.sent + self.pending.len()
    }

    fn in_flight(&self) -> bool {
        self.recv_armed || self.send_armed
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
            // Interrupted; or we cancelled it (closing). Nothing to do.
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
            if self.sending.capacity() > KEEP {
                self.sending = Vec::new();
            } else {
                self.sending.clear();
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
            next.done = !self.in_flight();
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

#[derive(Debug)]
struct Slot {
    /// Bumped each time the slot is freed, so that tokens of its previous connections go stale.
    generation: u32,
    conn: Option<Conn>,
}

/// Every connection of the loop, in slots addressed by the tokens. Lesson 10's token was the
/// descriptor number, which the kernel hands out again as soon as it is closed; a completion
/// that arrives late would then be applied to a stranger. Here the generation tells them apart.
#[derive(Debug)]
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
        let conn = Conn {
            fd, // owned by the Conn from here on
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
        self.note(conn.deadline(self.idle));
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                generation: 0,
                conn: None,
            });
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
    pub fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Conn> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        s.conn.as_mut()
    }

    /// What to submit for this connection now. A finished connection is freed here: its socket
    /// is closed and its slot's generation moves on.
    pub fn drive(&mut self, slot: u32, generation: u32, now: Instant) -> Next {
        let Some(conn) = self.get_mut(slot, generation) else {
            return Next::default();
        };
        let next = conn.next(now);
        let lingering = match conn.phase {
            Phase::Lingering { until } => Some(until),
            _ => None,
        };
        if next.done {
            let s = &mut self.slots[slot as usize];
            drop(s.conn.take()); // the Conn, its buffers and its socket (close(2)): nothing in flight
            s.generation = s.generation.wrapping_add(1);
            self.free.push(slot);
        } else {
            self.note(lingering); // lingering must end on time, whatever the idle timeout
        }
        next
    }

    fn note(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.next_sweep = Some(self.next_sweep.map_or(d, |s| s.min(d)));
        }
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
            let Some(conn) = s.conn.as_mut() else {
                continue;
            };
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
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use server_common::cli::Proto;
    use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

    /// A table with one connection on one end of a Unix socket pair (only shutdown(2) touches
    /// the socket here; TCP_NODELAY fails on it, with one warning), driven by hand: the test
    /// plays the kernel, completing what `drive` asked to submit.
    struct Fixture {
        conns: Conns,
        slot: u32,
        generation: u32,
        client: OwnedFd,
        now: Instant,
    }

    impl Fixture {
        /// The connection, with its first recv already asked for.
        fn new(proto: Proto, idle_timeout: u64) -> Fixture {
            let args = CommonArgs {
                addr: ([127, 0, 0, 1], 0).into(),
                proto,
                backlog: 1,
                work: 0,
                delay_ms: 0,
                idle_timeout,
            };
            let mut conns = Conns::new(&args, Stats::new_shared(None));
            let (client, now) = (Fixture::insert(&mut conns), Instant::now());
            let mut f = Fixture {
                conns,
                slot: client.1,
                generation: client.2,
                client: client.0,
                now,
            };
            assert!(f.drive().recv, "a new connection starts with a recv");
            f
        }

        /// Inserts one more connection: its client end, slot and generation.
        fn insert(conns: &mut Conns) -> (OwnedFd, u32, u32) {
            let flags = SockFlag::SOCK_CLOEXEC;
            let (server, client) =
                socketpair(AddressFamily::Unix, SockType::Stream, None, flags).expect("socketpair");
            let (slot, generation) = conns.insert(server, Instant::now());
            (client, slot, generation)
        }

        fn conn(&mut self) -> &mut Conn {
            self.conns
                .get_mut(self.slot, self.generation)
                .expect("still open")
        }

        fn drive(&mut self) -> Next {
            self.conns.drive(self.slot, self.generation, self.now)
        }

        /// The recv completes with `got`; then what to submit next.
        fn recv(&mut self, got: Result<&[u8], Errno>) -> Next {
            let now = self.now;
            self.conn().on_recv(got, now);
            self.drive()
        }

        /// The send completes, the kernel having taken `n` bytes; then what to submit next.
        fn sent(&mut self, n: usize) -> Next {
            let now = self.now;
            self.conn().on_send(n as i32, now);
            self.drive()
        }

        fn is_freed(&mut self) -> bool {
            self.conns.get_mut(self.slot, self.generation).is_none()
        }
    }

    /// The bytes a `Next` asks to send.
    fn to_send(next: &Next) -> Vec<u8> {
        let (ptr, len) = next.send.expect("a send");
        // SAFETY: the connection is alive and, by the rule under test, leaves its `sending`
        // buffer untouched while the send is in flight — which the tests below also check.
        unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[test]
    fn tokens_carry_operation_slot_and_generation() {
        for (op, slot, generation) in [(Op::Send, 0xab_cdef, u32::MAX), (Op::Recv, 0, 0)] {
            assert_eq!(untoken(token(op, slot, generation)), (op, slot, generation));
        }
        assert_eq!(untoken(token(Op::Cancel, 7, 3)).0, Op::Cancel);
    }

    #[test]
    fn an_idle_connection_is_one_small_slot_and_no_buffer() {
        let size = size_of::<Slot>();
        println!("bytes per connection slot: {size}");
        assert!(size <= 256, "{size}");
        let mut f = Fixture::new(Proto::Http, 60);
        let (_client, slot, generation) = Fixture::insert(&mut f.conns);
        let next = f.conns.drive(slot, generation, f.now);
        assert!(
            next.recv && next.send.is_none(),
            "a recv, which names no buffer"
        );
        assert_eq!(next.cancel, [None, None]);
    }

    #[test]
    fn answers_wait_behind_a_send_in_flight_and_partial_sends_resume() {
        let mut f = Fixture::new(Proto::Http, 60);
        let first = f.recv(Ok(GET));
        assert_eq!(to_send(&first), OK_KEEP_ALIVE);
        assert!(
            first.recv,
            "room for more input while the answer is in flight"
        );

        // Two more requests arrive while the kernel still reads the first answer.
        let next = f.recv(Ok(&GET.repeat(2)));
        assert!(next.send.is_none(), "one send in flight at a time");
        assert_eq!(
            to_send(&first),
            OK_KEEP_ALIVE,
            "the in-flight bytes were not touched"
        );

        // The kernel took 10 bytes: the rest of the same buffer goes next.
        let rest = f.sent(10);
        let moved = first.send.map(|(p, _)| p.wrapping_add(10));
        assert_eq!(
            rest.send.map(|(p, _)| p),
            moved,
            "the same buffer, 10 bytes on"
        );
        assert_eq!(to_send(&rest), &OK_KEEP_ALIVE[10..]);
        // Then both queued answers, in one send.
        let queued = f.sent(OK_KEEP_ALIVE.len() - 10);
        assert_eq!(to_send(&queued), OK_KEEP_ALIVE.repeat(2));
    }

    #[test]
    fn owing_the_limit_stops_recv_until_the_client_takes_it() {
        let mut f = Fixture::new(Proto::Echo, 60);
        let chunk = vec![7u8; BUF_SIZE];
        let mut reads = 1; // (the first chunk's echo goes in flight at once)
        while f.recv(Ok(&chunk)).recv {
            reads += 1;
        }
        assert_eq!(reads, OUT_LIMIT / BUF_SIZE, "no recv once owing the limit");
        assert_eq!(f.conn().owed(), OUT_LIMIT);
        let next = f.sent(BUF_SIZE); // the client took the first chunk
        assert!(next.recv, "under the limit again: a recv");
        assert_eq!(
            to_send(&next).len(),
            OUT_LIMIT - BUF_SIZE,
            "the rest, in one send"
        );
    }

    #[test]
    fn echo_half_close_flushes_then_frees() {
        let mut f = Fixture::new(Proto::Echo, 60);
        assert_eq!(to_send(&f.recv(Ok(b"bye"))), b"bye");
        let next = f.recv(Ok(b"")); // the client's EOF
        assert!(
            !next.recv && next.send.is_none(),
            "flushing: wait for the send"
        );
        assert!(!f.is_freed(), "not freed: a send in flight");
        f.sent(3);
        assert!(f.is_freed(), "flushed: freed");
    }

    #[test]
    fn closing_cancels_once_frees_after_the_last_completion_and_stales_old_tokens() {
        let mut f = Fixture::new(Proto::Http, 60); // a recv in flight
        f.conn().close();
        assert_eq!(
            f.drive().cancel,
            [Some(Op::Recv), None],
            "cancel what is in flight"
        );
        assert_eq!(f.drive().cancel, [None, None], "once");
        assert!(!f.is_freed(), "the kernel still holds a recv");
        f.recv(Err(Errno::ECANCELED));
        assert!(f.is_freed(), "freed");

        // The slot is reused at once, under a new generation: the old tokens are stale.
        let (_c2, slot, newer) = Fixture::insert(&mut f.conns);
        assert_eq!((slot, newer), (f.slot, f.generation + 1));
        assert!(
            f.is_freed() && f.drive().send.is_none(),
            "the old token finds nothing"
        );
        assert!(f.conns.get_mut(slot, newer).is_some());
    }

    #[test]
    fn a_close_with_unread_bytes_half_closes_then_lingers_until_eof_or_deadline() {
        let mut f = Fixture::new(Proto::Http, 60);
        let mut req = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
        req.extend_from_slice(&[b'x'; 100]);
        let next = f.recv(Ok(&req));
        assert_eq!(to_send(&next), OK_CLOSE);
        assert!(!next.recv, "flushing: no more input taken");
        assert!(f.sent(OK_CLOSE.len()).recv, "lingering: read and discard");
        let n = nix::unistd::read(&f.client, &mut [0u8; 8]).expect("read");
        assert_eq!(n, 0, "the client sees our FIN (shutdown SHUT_WR)");
        let now = f.now;
        assert!(f.conns.next_sweep().is_some_and(|t| t <= now + LINGER));
        assert!(f.conns.sweep(now + LINGER / 2).is_empty());
        assert_eq!(f.conns.sweep(now + LINGER), vec![(f.slot, f.generation)]);
        assert_eq!(
            f.drive().cancel,
            [Some(Op::Recv), None],
            "its recv is cancelled"
        );
    }

    #[test]
    fn the_sweep_closes_silent_connections_only() {
        let mut f = Fixture::new(Proto::Http, 1); // the quiet one
        let (_c2, busy, g2) = Fixture::insert(&mut f.conns);
        let start = f.now;
        f.conns.drive(busy, g2, start);
        let deadline = f.conns.next_sweep().expect("a deadline");
        assert!(deadline <= Instant::now() + Duration::from_secs(1));
        let later = start + Duration::from_millis(700);
        f.conns
            .get_mut(busy, g2)
            .expect("open")
            .on_recv(Ok(GET), later);
        let swept = f.conns.sweep(deadline + Duration::from_millis(1));
        assert_eq!(swept, vec![(f.slot, f.generation)], "only the quiet one");
        assert!(
            f.conns
                .next_sweep()
                .is_some_and(|t| t >= later + Duration::from_secs(1))
        );
    }
}
