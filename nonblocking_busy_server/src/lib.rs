//! What lessons 8–10 take from lesson 7: the non-blocking connection ([`conn`], the model's
//! second role) and the table of connections every event loop keeps ([`Conns`]: accept4 with
//! its pause when out of descriptors, the handler's dispatch, the sweep of idle and lingering
//! connections, the readiness call's timeout). Only the loop itself differs from lesson to
//! lesson, so it stays in each lesson's `main.rs`: here, the busy loop, which tries every socket.
//! A later lesson names this crate in its `Cargo.toml` and says "(lesson 7)" where it calls it.

pub mod conn;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::socket::{SockFlag, accept4, setsockopt, sockopt};
use server_common::cli::CommonArgs;
use server_common::net::RETRY_ACCEPT;
use server_common::proto::{Config, Defer, Session};
use server_common::stats::{MAX_WORKERS, Stats};
use server_common::warn_throttled;

pub use conn::ConnState;
use conn::Scratch;

/// How long accepting pauses after the process ran out of descriptors (see [`Conns::accept`]).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The least time between two sweeps for timeouts, so that deadlines spread over many
/// connections do not turn into a sweep of all of them on every turn.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

// ─── the connection's answer: want read / want write ─────────────────────────────────────────────────────

/// What a connection waits for next; the loop turns it into interest for its readiness call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Nothing owed: wait for the client. An idle connection is always here.
    Read,
    /// Something owed, and room for more input.
    ReadWrite,
    /// Something owed and no more input taken for now: over [`conn::OUT_LIMIT`], or closing.
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

// ─── the loop's news: what readiness said ───────────────────────────────────────────────────

/// What the readiness call said about one socket. `hup`: the peer closed its side, or the
/// socket erred (EPOLLRDHUP, EPOLLHUP, POLLHUP, POLLERR): read on to the end (`ConnState::read`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub read: bool,
    pub write: bool,
    pub hup: bool,
}

impl Ready {
    /// "Try everything": the busy loop's readiness, which is no readiness at all.
    pub const ALL: Ready = Ready::new(true, true);
    /// Revisiting a connection whose input was left unread by the fairness budget.
    pub const READ: Ready = Ready::new(true, false);

    pub(crate) const fn new(read: bool, write: bool) -> Ready {
        Ready {
            read,
            write,
            hup: false,
        }
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
            scratch: (vec![0; conn::SCRATCH].into_boxed_slice(), Vec::new()),
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
        assert!(i < MAX_WORKERS, "worker {i} has no slot in Stats");
        Conns { worker: i, ..self }
    }

    /// The same table, its sessions handing the work of requests to the caller as `defer`
    /// says, instead of running it (lesson 14's pool; [`Config::defer`]).
    pub fn deferring(self, defer: Defer) -> Conns {
        let config = Config {
            defer,
            ..self.config
        };
        Conns { config, ..self }
    }

    /// The server's name, for its diagnostics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// accept4(2) one connection from the non-blocking `listener`, or `None` when there is
    /// none to take now. `SOCK_NONBLOCK` makes the new socket non-blocking from birth (it does
    /// not inherit O_NONBLOCK from the listener); `SOCK_CLOEXEC` as in lesson 1.
    ///
    /// **Out of descriptors** (EMFILE: ours, ENFILE: the system's) the listener stays readable
    /// — the client is still queued — so a level-triggered loop would spin on the same error
    /// at 100% CPU. We pause accepting for [`ACCEPT_BACKOFF`] (nginx's choice, and lessons
    /// 1–6's): the clients wait in the queue and are served as soon as a descriptor frees up.
    /// libuv's alternative, closing a reserve descriptor to accept and at once close the
    /// client, turns away a client we could have served a moment later, and another thread can
    /// take the freed descriptor first.
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
                // EINTR, ECONNABORTED (the client reset while queued), or a queued
                // connection's network error, to be retried as accept(2) says (see lesson 1).
                Err(e) if RETRY_ACCEPT.contains(&e) => continue,
                // Out of descriptors or kernel memory: the client stays queued; pause, retry.
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
        let session = Session::new(self.config, self.stats.worker(self.worker));
        let live = self.stats.accepted(self.worker); // counted as accepted, live until dropped
        let state = ConnState::new(conn, session, live, now); // conn: owned by the ConnState
        self.note_deadline(state.deadline(self.idle));
        if self.slots[i].replace(state).is_none() {
            self.open += 1;
        } // (a replaced entry cannot exist: the kernel does not hand out an open descriptor)
        fd
    }

    pub fn get(&self, fd: RawFd) -> Option<&ConnState> {
        self.slots.get(usize::try_from(fd).ok()?)?.as_ref()
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
        // A lingering close, and a head that started arriving, must end on time, however long
        // the idle timeout.
        let deadline = conn.deadline(None);
        self.note_deadline(deadline);
        want
    }

    /// Lesson 14: the pool ran this connection's [`ConnState::pending_work`]; its answer goes
    /// out and the connection carries on. An unknown `fd` answers `Close`.
    pub fn work_done(&mut self, fd: RawFd, now: Instant) -> Want {
        let Some(Some(conn)) = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)) else {
            return Want::Close;
        };
        let want = conn.work_done(now, &mut self.scratch, self.name);
        // Its idle clock runs again (a connection waiting for the pool has none: the sweep
        // forgot it), so note the idle deadline too.
        let deadline = conn.deadline(self.idle);
        self.note_deadline(deadline);
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
    /// lingering for [`LINGER`](server_common::net::LINGER) — out of the table and hands it
    /// back; dropping it closes the socket. A request head past `--head-timeout` gets its 408
    /// and a lingering close instead, and stays. O(connections), so it runs only when the
    /// earliest deadline is due, and at most once per [`SWEEP_EVERY`].
    pub fn sweep(&mut self, now: Instant) -> Vec<ConnState> {
        let mut expired = Vec::new();
        if self.next_sweep.is_none_or(|t| now < t) {
            return expired;
        }
        let mut next: Option<Instant> = None;
        for slot in &mut self.slots {
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            if conn.head_deadline().is_some_and(|h| h <= now) {
                conn.expire_head(now, &mut self.scratch, self.name); // now lingering
            }
            let Some(deadline) = conn.deadline(self.idle) else {
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

/// A readiness timeout for poll(2) and epoll_wait(2), in whole milliseconds **rounded up**:
/// rounded down, a deadline 0.4 ms away would become a 0 ms timeout, and the loop would spin
/// until the deadline passed. `None` waits for ever.
pub fn millis(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX) // over ~24 days: wait the most
        }
    }
}
