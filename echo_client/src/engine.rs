//! One event-loop thread: an epoll(7) instance, its share of the connections, and a timer heap.
//!
//! This is an epoll *client*, the mirror image of the event-loop servers of lessons 7–11:
//! instead of accepting, it connects; instead of answering, it sends and waits. Read it with
//! the diagram in docs/echo_client.md next to it.
//!
//! ```text
//!              ┌──────────────────────────── one thread ─────────────────────────────┐
//!              │ loop {                                                               │
//!  timers ────►│   fire due timers: scheduled connects, open-loop sends, reconnects   │
//!  (heap)      │   sweep deadlines every 100 ms: connect and read timeouts            │
//!              │   epoll_pwait2(until the next timer)                                 │
//!  kernel ────►│   for each ready connection:                                         │
//!  (ready list)│     Connecting → SO_ERROR → established                              │
//!              │     Busy       → recv → verify in place → complete? → send the next  │
//!              │ }                                                                    │
//!              └──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Design choices, each for speed (this client shares two cores with the server it measures):
//!
//! - **Edge-triggered, registered once.** Each socket is added with
//!   `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET` when it is created and never modified: no
//!   epoll_ctl(2) per message (wrk calls it twice per request to toggle write interest).
//!   The edge-triggered rule — read until the kernel has nothing more — is kept cheaply:
//!   epoll(7) notes that a *short* read or write on a stream socket means the buffer is
//!   exhausted, so a `recv` that returns less than asked is the last one, without the extra
//!   `recv` that would only say EAGAIN.
//! - **Send at once.** When a reply completes, the next message is sent in the same call,
//!   not on a later writable event: two syscalls per message (send, recv) plus a share of one
//!   epoll_pwait2.
//! - **Nothing allocated per message.** Connections live in one `Vec`, indexed by the epoll
//!   token; replies are checked in place in one receive buffer per thread.
//! - **Timers in a heap, deadlines by sweep.** Only events that must happen at a given time
//!   (open-loop sends, ramped connects, reconnect back-off) go in the heap; timeouts are found
//!   by a sweep over the connections every 100 ms, which costs nothing per message.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage, bind, connect, getsockopt, recv,
    send, sendmsg, setsockopt, socket, sockopt,
};

use crate::board::{Board, Slot};
use crate::cli::{Plan, Until};
use crate::clock::{self, NS_PER_SEC};
use crate::stats::{Failure, Tally, record};
use crate::workload::{Reply, Workload};

/// How often deadlines are checked: timeouts are found within this much of expiring.
const SWEEP: u64 = 100_000_000;
/// After a failure, a connection waits this long before reconnecting (in `-d` runs), so a
/// server that refuses everything costs 20 attempts per second per connection, not a spin.
const RETRY: u64 = 50_000_000;
/// While waiting for the start signal, look at the board this often.
const WAIT_POLL: u64 = 1_000_000;
/// Events taken per epoll_pwait2. More only means fewer calls under a flood.
const EVENTS: usize = 1024;
/// The per-thread receive buffer: one recv takes at most this much.
const RECV_BUF: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No socket. A timer may open one (connect ramp, or reconnect after a failure).
    Closed,
    /// connect(2) in progress.
    Connecting,
    /// Established, no message in flight (before the start, during a hold, or waiting for
    /// the open loop's next send time).
    Idle,
    /// A message is in flight: `sent` bytes written, its reply partly checked.
    Busy,
    /// The server said `Connection: close`: reading until its EOF, then reconnecting.
    Closing,
    /// Its work is over.
    Finished,
}

/// One connection slot. A slot keeps its id and counts across reconnects.
struct Conn<S> {
    fd: Option<OwnedFd>,
    /// Global connection id, 0..connections.
    id: u64,
    /// Bumped at every new socket and carried in its epoll token, so an event that belongs to
    /// a socket already closed is recognised and ignored.
    generation: u32,
    phase: Phase,
    /// Messages completed on this slot; also the sequence number of the next one.
    seq: u64,
    /// Bytes of the current message sent.
    sent: usize,
    /// The latency origin: connect start, or the message's (intended) send time.
    since: u64,
    /// When the current wait times out (`u64::MAX`: never).
    deadline: u64,
    /// The time of this slot's one live timer (0: none); heap entries that disagree are stale.
    timer_at: u64,
    /// Whether its initial connect has been settled (established or failed).
    settled: bool,
    failures: u32,
    /// The workload's part: the message in flight, the parser's state.
    st: S,
}

/// The thread's stage in the run. Every thread goes through all of them in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Opening the initial connections.
    Connect,
    /// All settled; waiting for the top process's "go".
    Wait,
    /// `--hold`: every connection idle until `run_start`.
    Hold,
    /// Sending messages.
    Run,
}

/// Runs one event-loop thread over connections `ids` and returns what it counted.
pub fn run<W: Workload>(
    w: &W,
    plan: &Plan,
    ids: std::ops::Range<u64>,
    board: &Board,
    slot: &Slot,
) -> Tally {
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => {
            // Nothing can run without it; say so once and report this thread's connections as
            // failed.
            eprintln!("echo_client: epoll_create1: {e}");
            let mut t = thread_tally(plan);
            t.errors[Failure::Other as usize] = ids.end - ids.start;
            t.per_conn = vec![0; (ids.end - ids.start) as usize];
            return t;
        }
    };
    let conns: Vec<Conn<W::State>> = ids
        .map(|id| Conn {
            fd: None,
            id,
            generation: 0,
            phase: Phase::Closed,
            seq: 0,
            sent: 0,
            since: 0,
            deadline: u64::MAX,
            timer_at: 0,
            settled: false,
            failures: 0,
            st: W::State::default(),
        })
        .collect();
    let mut worker = Worker {
        unsettled: conns.len(),
        // One live timer per connection at most, plus room for stale entries.
        timers: BinaryHeap::with_capacity(conns.len() * 2),
        conns,
        w,
        plan,
        epoll,
        board,
        slot,
        tally: thread_tally(plan),
        stage: Stage::Connect,
        run_start: u64::MAX,
        run_end: u64::MAX,
        last_done: 0,
        established: 0,
        active: 0,
        timeout: plan.timeout.as_nanos() as u64,
    };
    worker.event_loop();
    worker.finish()
}

/// A thread's empty tally: with the `--mix` histograms only when `--mix` was given (they are
/// as big as the main one, and most runs never fill them).
fn thread_tally(plan: &Plan) -> Tally {
    Tally::new(plan.mix.is_some())
}

struct Worker<'a, W: Workload> {
    w: &'a W,
    plan: &'a Plan,
    epoll: Epoll,
    conns: Vec<Conn<W::State>>,
    /// (when, connection index), earliest first.
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    board: &'a Board,
    slot: &'a Slot,
    tally: Tally,
    stage: Stage,
    /// When messages may start: the common "go" plus `--hold`.
    run_start: u64,
    /// When a `-d` run ends.
    run_end: u64,
    last_done: u64,
    /// Connections established right now.
    established: u64,
    /// Initial connects not yet settled.
    unsettled: usize,
    /// Connections not yet `Finished`, once running.
    active: usize,
    timeout: u64,
}

/// An epoll token: the connection's index and its socket's generation.
fn token(idx: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | idx as u64
}

impl<W: Workload> Worker<'_, W> {
    // ─── the loop ───────────────────────────────────────────────────────────────────────────

    fn event_loop(&mut self) {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut buf = vec![0u8; RECV_BUF];
        self.start_connects();
        let mut next_sweep = clock::now() + SWEEP;
        loop {
            let now = clock::now();
            self.fire_timers(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
            if !self.advance(now) {
                break;
            }
            self.publish();
            let wake = self.next_wake(now).min(next_sweep);
            let n = match epoll_wait(&self.epoll, &mut events, wake.saturating_sub(now)) {
                Ok(n) => n,
                // A signal landed on this thread (Ctrl-C): the board says what to do.
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    eprintln!("echo_client: epoll_wait: {e}");
                    self.board.stop();
                    0
                }
            };
            for ev in &events[..n] {
                let idx = (ev.data() & 0xffff_ffff) as usize;
                let generation = (ev.data() >> 32) as u32;
                self.on_event(idx, generation, ev.events(), &mut buf);
            }
        }
    }

    /// Moves the thread through its stages. Returns false when the run is over for it.
    fn advance(&mut self, now: u64) -> bool {
        if self.board.stopped() {
            return false;
        }
        if self.stage == Stage::Connect && self.unsettled == 0 {
            self.stage = Stage::Wait;
            self.tally.n.connect_done_ns = now;
            self.slot.ready.store(1, Relaxed);
        }
        if self.stage == Stage::Wait
            && let Some(go) = self.board.go()
        {
            self.tally.n.established_at_start = self.established;
            self.run_start = go + self.plan.hold.map_or(0, |h| h.as_nanos() as u64);
            self.stage = Stage::Hold;
        }
        if self.stage == Stage::Hold && now >= self.run_start {
            if self.plan.hold.is_some() {
                self.tally.n.held_after_hold = self.established;
            }
            self.start_run(now);
        }
        if self.stage == Stage::Run {
            let all_done = matches!(self.plan.until, Until::Messages(_)) && self.active == 0;
            return !all_done && now < self.run_end;
        }
        true
    }

    /// When the loop must wake up next, at the latest.
    fn next_wake(&self, now: u64) -> u64 {
        let timer = self.timers.peek().map_or(u64::MAX, |Reverse((t, _))| *t);
        let stage = match self.stage {
            Stage::Connect => u64::MAX,
            Stage::Wait => now + WAIT_POLL,
            Stage::Hold => self.run_start,
            Stage::Run => self.run_end,
        };
        timer.min(stage)
    }

    /// Posts this thread's progress on the board (for the status line and the barrier).
    fn publish(&self) {
        let n = &self.tally.n;
        self.slot.established.store(self.established, Relaxed);
        self.slot.connects.store(n.connects_ok, Relaxed);
        self.slot.messages.store(n.messages, Relaxed);
        self.slot.errors.store(self.tally.errors_total(), Relaxed);
    }

    fn on_event(&mut self, idx: usize, generation: u32, flags: EpollFlags, buf: &mut [u8]) {
        let c = &self.conns[idx];
        if c.generation != generation || c.fd.is_none() {
            return; // an event for a socket already closed
        }
        let readable = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLHUP
            | EpollFlags::EPOLLERR;
        match c.phase {
            Phase::Connecting => self.on_connect_event(idx, flags, buf),
            Phase::Idle | Phase::Busy | Phase::Closing => {
                if flags.intersects(readable) {
                    self.read(idx, flags, buf);
                }
                // Still the same socket, still sending, and the kernel has room again.
                let c = &self.conns[idx];
                if c.generation == generation
                    && c.phase == Phase::Busy
                    && c.sent < self.w.len(&c.st)
                    && flags.contains(EpollFlags::EPOLLOUT)
                {
                    self.write(idx);
                }
            }
            Phase::Closed | Phase::Finished => {}
        }
    }

    // ─── timers and deadlines ───────────────────────────────────────────────────────────────

    fn schedule(&mut self, idx: usize, at: u64) {
        self.conns[idx].timer_at = at;
        self.timers.push(Reverse((at, idx as u32)));
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((at, idx))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let idx = idx as usize;
            if self.conns[idx].timer_at != at {
                continue; // superseded: the connection failed or moved on since
            }
            self.conns[idx].timer_at = 0;
            match self.conns[idx].phase {
                Phase::Closed => self.connect(idx),
                // An open-loop send: the latency clock starts at `at`, the intended time,
                // however late this loop got round to it.
                Phase::Idle if self.stage == Stage::Run => self.begin(idx, at),
                _ => {}
            }
        }
    }

    /// Times out every connection whose deadline has passed.
    fn sweep(&mut self, now: u64) {
        for idx in 0..self.conns.len() {
            let c = &self.conns[idx];
            if c.deadline > now {
                continue;
            }
            match c.phase {
                Phase::Connecting => self.fail(idx, Failure::ConnectTimeout),
                Phase::Busy | Phase::Closing => self.fail(idx, Failure::ReadTimeout),
                _ => {}
            }
        }
    }

    // ─── connecting ─────────────────────────────────────────────────────────────────────────

    /// The initial connects: all at once (a SYN storm, as the seeds' clients do), or ramped at
    /// `--connect-rate` in total, connection `id` at `id / rate` seconds after the start.
    fn start_connects(&mut self) {
        for idx in 0..self.conns.len() {
            match self.plan.connect_rate {
                Some(rate) => {
                    let at = (u128::from(self.conns[idx].id) * u128::from(NS_PER_SEC)
                        / u128::from(rate)) as u64;
                    self.schedule(idx, at.max(1));
                }
                None => self.connect(idx),
            }
        }
    }

    /// socket(2) → (bind to a source address) → epoll_ctl(2) ADD → connect(2), non-blocking.
    fn connect(&mut self, idx: usize) {
        let plan = self.plan;
        let family = if plan.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let fd = match socket(family, SockType::Stream, flags, None) {
            Ok(fd) => fd,
            Err(e) => return self.fail_connect(idx, e),
        };
        if let Some(ip) = plan.source_of(self.conns[idx].id) {
            // IP_BIND_ADDRESS_NO_PORT: bind the address now but choose the port at connect
            // time, per destination — without it bind(2) would reserve a port for any
            // destination and run out after ~28k sockets whatever the destinations.
            let bound = setsockopt(&fd, sockopt::IpBindAddressNoPort, &true).and_then(|()| {
                bind(
                    fd.as_raw_fd(),
                    &SockaddrStorage::from(SocketAddr::new(ip, 0)),
                )
            });
            if let Err(e) = bound {
                return self.fail_connect(idx, e);
            }
        }
        let c = &mut self.conns[idx];
        c.generation = c.generation.wrapping_add(1);
        let interest = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(e) = self
            .epoll
            .add(&fd, EpollEvent::new(interest, token(idx, c.generation)))
        {
            return self.fail_connect(idx, e);
        }
        let now = clock::now();
        c.since = now;
        c.deadline = now + self.timeout;
        c.phase = Phase::Connecting;
        let raw = fd.as_raw_fd();
        c.fd = Some(fd); // owned by the slot from here on; dropping it closes it
        self.tally.n.connects_attempted += 1;
        match connect(raw, &SockaddrStorage::from(plan.addr)) {
            // Loopback connects usually say EINPROGRESS and finish a moment later.
            Err(Errno::EINPROGRESS) => {}
            Ok(()) => self.on_connected(idx),
            Err(e) => self.fail_connect(idx, e),
        }
    }

    /// A connecting socket got an event: SO_ERROR says how the connect ended.
    fn on_connect_event(&mut self, idx: usize, flags: EpollFlags, buf: &mut [u8]) {
        let Some(fd) = &self.conns[idx].fd else {
            return;
        };
        match getsockopt(fd, sockopt::SocketError) {
            Ok(0) if flags.contains(EpollFlags::EPOLLOUT) => {
                self.on_connected(idx);
                // Bytes may already be waiting, and their edge was this event.
                if flags.contains(EpollFlags::EPOLLIN) {
                    self.read(idx, flags, buf);
                }
            }
            Ok(0) => {} // not finished yet
            Ok(errno) => self.fail_connect(idx, Errno::from_raw(errno)),
            Err(e) => self.fail_connect(idx, e),
        }
    }

    fn on_connected(&mut self, idx: usize) {
        let now = clock::now();
        let c = &mut self.conns[idx];
        record(&mut self.tally.connect_latency, now - c.since);
        self.tally.n.connects_ok += 1;
        self.established += 1;
        self.tally.n.peak_established = self.tally.n.peak_established.max(self.established);
        c.phase = Phase::Idle;
        c.deadline = u64::MAX;
        if !c.settled {
            c.settled = true;
            self.unsettled -= 1;
        }
        // TCP_NODELAY: each message leaves at once instead of waiting behind Nagle's algorithm
        // for the ACK of the previous one.
        if let Some(fd) = &c.fd
            && let Err(e) = setsockopt(fd, sockopt::TcpNoDelay, &true)
        {
            return self.fail(idx, Failure::of_io(e));
        }
        if self.stage == Stage::Run {
            self.next_message(idx, now);
        }
    }

    fn fail_connect(&mut self, idx: usize, e: Errno) {
        if self.tally.n.connect_errno == 0 {
            self.tally.n.connect_errno = e as u64;
        }
        self.fail(idx, Failure::of_connect(e));
    }

    // ─── messages ───────────────────────────────────────────────────────────────────────────

    /// The run starts: every idle connection sends its first message (or schedules it), and in
    /// a `-d` run every connection that failed so far tries again.
    fn start_run(&mut self, now: u64) {
        self.stage = Stage::Run;
        if let Until::Duration(d) = self.plan.until {
            self.run_end = self.run_start + d.as_nanos() as u64;
        }
        self.tally.n.transfer_start_ns = self.run_start;
        for idx in 0..self.conns.len() {
            match self.conns[idx].phase {
                Phase::Idle => {
                    self.active += 1;
                    self.next_message(idx, now);
                }
                // -n runs do not retry: the failure is counted, the slot's messages are lost.
                Phase::Closed if matches!(self.plan.until, Until::Messages(_)) => {
                    self.conns[idx].phase = Phase::Finished;
                }
                Phase::Closed => {
                    self.active += 1;
                    self.schedule(idx, now);
                }
                _ => self.active += 1,
            }
        }
    }

    /// After a completed message (or a fresh connection during the run): finish, wait for the
    /// open loop's schedule, or send the next message now.
    fn next_message(&mut self, idx: usize, now: u64) {
        let seq = self.conns[idx].seq;
        if let Until::Messages(n) = self.plan.until
            && seq >= n
        {
            return self.finish_conn(idx);
        }
        match self.plan.rate {
            Some(_) => {
                let at = self.intended(self.conns[idx].id, seq);
                if at > now {
                    self.conns[idx].phase = Phase::Idle;
                    self.schedule(idx, at);
                } else {
                    // Late (the server was slow): send now, but the latency clock started at
                    // the intended time — the stall is charged to the server (wrk2's fix for
                    // coordinated omission).
                    self.begin(idx, at);
                }
            }
            None => self.begin(idx, now),
        }
    }

    /// The open loop's schedule: `rate` messages per second in total, connection `id`'s
    /// message `seq` at `(id + seq·connections) / rate` seconds after the start, so sends are
    /// evenly spaced across all connections of all threads and processes.
    fn intended(&self, id: u64, seq: u64) -> u64 {
        let rate = u128::from(self.plan.rate.unwrap_or(1));
        let slot = u128::from(id) + u128::from(seq) * u128::from(self.plan.connections);
        self.run_start + (slot * u128::from(NS_PER_SEC) / rate) as u64
    }

    /// Starts message `seq` with its latency clock at `since`, and sends it.
    fn begin(&mut self, idx: usize, since: u64) {
        let c = &mut self.conns[idx];
        self.w.begin(&mut c.st, c.id, c.seq, since);
        c.since = since;
        c.sent = 0;
        c.phase = Phase::Busy;
        c.deadline = clock::now() + self.timeout;
        self.write(idx);
    }

    /// send(2) (or sendmsg(2) with two pieces) until the message is out or the socket is full.
    fn write(&mut self, idx: usize) {
        loop {
            let c = &self.conns[idx];
            let Some(fd) = &c.fd else { return };
            if c.sent >= self.w.len(&c.st) {
                return;
            }
            let [a, b] = self.w.unsent(&c.st, c.sent);
            // MSG_NOSIGNAL: a vanished server is an EPIPE for this connection, not SIGPIPE.
            let r = if b.is_empty() {
                send(fd.as_raw_fd(), a, MsgFlags::MSG_NOSIGNAL)
            } else {
                let iov = [IoSlice::new(a), IoSlice::new(b)];
                sendmsg::<SockaddrStorage>(fd.as_raw_fd(), &iov, &[], MsgFlags::MSG_NOSIGNAL, None)
            };
            let want = a.len() + b.len();
            match r {
                Ok(n) => {
                    self.conns[idx].sent += n;
                    self.tally.n.bytes_sent += n as u64;
                    if n < want {
                        return; // short write: the socket buffer is full; EPOLLOUT will say when
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(e) => return self.fail(idx, Failure::of_io(e)),
            }
        }
    }

    /// recv(2) until the socket is drained, checking every byte as it comes.
    fn read(&mut self, idx: usize, flags: EpollFlags, buf: &mut [u8]) {
        let generation = self.conns[idx].generation;
        // The short-read shortcut is about data only: when the peer's FIN (or an error) came
        // with this event, a short read can still leave the EOF to be read, and no new edge
        // would announce it. Then read until recv says 0 or EAGAIN.
        let eof_pending =
            flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
        loop {
            let c = &self.conns[idx];
            let Some(fd) = &c.fd else { return };
            if c.generation != generation {
                return; // closed and reopened while handling what came before
            }
            match recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(0) => return self.on_eof(idx),
                Ok(n) => {
                    self.tally.n.bytes_received += n as u64;
                    self.consume(idx, &buf[..n]);
                    if n < buf.len() && !eof_pending {
                        return; // a short read: drained (epoll(7)); the next edge brings more
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(e) => return self.fail(idx, Failure::of_io(e)),
            }
        }
    }

    /// Bytes arrived: check them against the message in flight.
    fn consume(&mut self, idx: usize, bytes: &[u8]) {
        let c = &mut self.conns[idx];
        if c.phase != Phase::Busy {
            // Nothing was asked: idle during a hold, or after a response that announced a close.
            return self.fail(idx, W::UNEXPECTED);
        }
        match self.w.receive(&mut c.st, c.sent, bytes) {
            Reply::More => {}
            Reply::Done { close } => self.complete(idx, close),
            Reply::Failed(f) => self.fail(idx, f),
        }
    }

    /// A reply is complete and verified.
    fn complete(&mut self, idx: usize, close: bool) {
        let now = clock::now();
        if now >= self.run_end {
            // Past the end of a -d run: the reply came too late to count; the message stays
            // in flight, as if the run had stopped a moment earlier (it has, for the report).
            return;
        }
        let c = &mut self.conns[idx];
        let latency = now.saturating_sub(c.since);
        record(&mut self.tally.latency, latency);
        if let Some(m) = &mut self.tally.mix {
            // --mix (the only case with these histograms): each request's latency also goes
            // to its kind's histogram.
            let kind = if self.w.expensive(&c.st) {
                &mut m.expensive
            } else {
                &mut m.cheap
            };
            record(kind, latency);
        }
        self.tally.n.messages += 1;
        self.last_done = now;
        c.seq += 1;
        if close || self.plan.close {
            // The server closes after this response: wait for its FIN, so the close (and the
            // TIME_WAIT that goes with it) is the server's, as the contract says.
            c.phase = Phase::Closing;
            c.deadline = now + self.timeout;
            return;
        }
        self.next_message(idx, now);
    }

    fn on_eof(&mut self, idx: usize) {
        if self.conns[idx].phase != Phase::Closing {
            return self.fail(idx, Failure::EarlyEof);
        }
        // The announced close: reconnect for the next request, unless there is none.
        self.drop_socket(idx);
        self.conns[idx].phase = Phase::Closed;
        let done = match self.plan.until {
            Until::Messages(n) => self.conns[idx].seq >= n,
            Until::Duration(_) => false,
        };
        if done {
            self.finish_conn(idx);
        } else {
            self.connect(idx);
        }
    }

    // ─── endings ────────────────────────────────────────────────────────────────────────────

    /// Closes the socket (close(2) also removes it from the epoll set).
    fn drop_socket(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if c.fd.take().is_some() && matches!(c.phase, Phase::Idle | Phase::Busy | Phase::Closing) {
            self.established -= 1;
        }
        c.deadline = u64::MAX;
    }

    /// Counts a failure and closes the connection. A `-d` run retries after [`RETRY`]; a `-n`
    /// run gives the slot up.
    fn fail(&mut self, idx: usize, f: Failure) {
        if self.stage == Stage::Run && clock::now() >= self.run_end {
            // The -d run is over; what happens after its end is not part of it (a reply that
            // came too late is followed by the server's FIN, say). The connection stays as it
            // was — in flight — and is closed with the others.
            return;
        }
        self.tally.error(f);
        self.drop_socket(idx);
        let c = &mut self.conns[idx];
        c.failures += 1;
        c.phase = Phase::Closed;
        c.timer_at = 0;
        if !c.settled {
            c.settled = true;
            self.unsettled -= 1;
        }
        match (self.stage, self.plan.until) {
            (Stage::Run, Until::Messages(_)) => {
                self.conns[idx].phase = Phase::Finished;
                self.active -= 1;
            }
            (Stage::Run, Until::Duration(_)) => self.schedule(idx, clock::now() + RETRY),
            // Before the run: stay closed; start_run decides.
            _ => {}
        }
    }

    /// This slot has done all its messages.
    fn finish_conn(&mut self, idx: usize) {
        self.drop_socket(idx);
        self.conns[idx].phase = Phase::Finished;
        self.active -= 1;
    }

    /// The thread's report. Connections still waiting for a reply are counted as in flight
    /// (and, if they never completed anything nor failed, as starved) — not as errors.
    fn finish(mut self) -> Tally {
        let now = clock::now();
        let n = &mut self.tally.n;
        n.transfer_done_ns = match (self.stage, self.plan.until) {
            (Stage::Run, Until::Messages(_)) if self.active == 0 => {
                self.last_done.max(self.run_start)
            }
            (Stage::Run, _) => now.min(self.run_end),
            _ => now,
        };
        if self.stage < Stage::Wait {
            n.connect_done_ns = now;
        }
        if self.stage == Stage::Run {
            for c in &self.conns {
                // A message sent, its reply incomplete: in flight.
                n.in_flight_at_end += u64::from(c.phase == Phase::Busy);
                // Waiting for its first reply (or, behind a full accept queue, for its
                // connect) the whole run, without ever failing: starved by the server.
                let waiting = matches!(c.phase, Phase::Busy | Phase::Connecting);
                n.starved += u64::from(waiting && c.seq == 0 && c.failures == 0);
            }
        }
        self.tally.per_conn = self.conns.iter().map(|c| c.seq).collect();
        self.publish();
        self.tally
        // `self.conns` drops here: every socket still open is closed.
    }
}

/// epoll_pwait2(2): epoll_wait(2) with a nanosecond timeout (Linux 5.11+).
///
/// Why not epoll_wait: its timeout is in milliseconds, so an open-loop send due in 300 µs
/// would go out up to 700 µs late — and since latency counts from the intended send time, the
/// client's own lateness would be charged to the server. Falls back to epoll_wait, rounding up,
/// on kernels without it.
fn epoll_wait(epoll: &Epoll, events: &mut [EpollEvent], timeout_ns: u64) -> nix::Result<usize> {
    static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
    if !NO_PWAIT2.load(Relaxed) {
        let ts = libc::timespec {
            tv_sec: (timeout_ns / NS_PER_SEC).min(i32::MAX as u64) as libc::time_t,
            tv_nsec: (timeout_ns % NS_PER_SEC) as libc::c_long,
        };
        // SAFETY: `events` is a live, writable buffer of `events.len()` epoll_event structs
        // (nix's EpollEvent is a transparent wrapper of libc::epoll_event); `ts` outlives the
        // call; a null sigmask with size 0 means "leave the signal mask alone", which makes
        // this exactly epoll_wait with a finer timeout. The epoll descriptor is open (borrowed).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epoll.0.as_raw_fd(),
                events.as_mut_ptr().cast::<libc::epoll_event>(),
                events.len() as libc::c_int,
                &raw const ts,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        match Errno::result(rc) {
            Ok(n) => return Ok(n as usize),
            Err(Errno::ENOSYS) => NO_PWAIT2.store(true, Relaxed),
            Err(e) => return Err(e),
        }
    }
    let ms = Duration::from_nanos(timeout_ns)
        .as_millis()
        .saturating_add(u128::from(!timeout_ns.is_multiple_of(1_000_000)));
    let timeout = EpollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(EpollTimeout::MAX);
    epoll.wait(events, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's whole user-space state is one small struct (no buffers): what lets one
    /// process hold tens of thousands of idle connections in a few MB.
    #[test]
    fn a_connection_is_a_small_struct() {
        let echo = size_of::<Conn<crate::workload::EchoState>>();
        let http = size_of::<Conn<crate::workload::HttpState>>();
        assert!(echo <= 128, "echo connection: {echo} bytes");
        assert!(http <= 160, "http connection: {http} bytes");
    }

    /// Each thread's tally carries the two `--mix` histograms only when `--mix` is given:
    /// without it they would cost every thread two histograms as big as its main one, unused.
    #[test]
    fn a_thread_tally_has_mix_histograms_only_with_mix() {
        use clap::Parser as _;
        let plan = |args: &[&str]| {
            let argv = ["echo_client", "--proto", "http"].iter().chain(args);
            crate::cli::Plan::from_args(crate::cli::Args::parse_from(argv))
        };
        assert!(thread_tally(&plan(&[])).mix.is_none(), "without --mix");
        assert!(
            thread_tally(&plan(&["--close"])).mix.is_none(),
            "without --mix"
        );
        assert!(
            thread_tally(&plan(&["--mix", "10:/work/1000"]))
                .mix
                .is_some()
        );
    }
}
