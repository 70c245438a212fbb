//! # Lesson 13 — completion-based I/O with io_uring
//!
//! Lessons 7–10 ask the kernel which sockets are *ready*, then make every call themselves.
//! io_uring(7) turns this around: we hand it the operations — "accept on the listener", "receive
//! from c1", "send these 80 bytes to c7" — in a *submission queue*, and it reports each one
//! done, with its result, in a *completion queue*. Both are memory shared with the kernel, so
//! one `io_uring_enter(2)` per turn submits all that is queued and sleeps until something
//! completes. The price is ownership: memory an operation names is the kernel's until it ends.
//!
//! ```text
//!   this process (one thread)                            kernel
//!  ┌──────────────────────────────────────┐ submission queue
//!  │ loop {                               │─► accept(listener), multishot ─┐ each runs when
//!  │   io_uring_enter: submit all, wait ──┼─► recv(c1, any pool buffer)    │ it can; the
//!  │   for each completion (user_data):   │─► send(c7, c7.sending[0..80])  │ memory it names
//!  │     recv: session.feed, buffer back ─┼─► pool [0][1]…[1023]           │ is the kernel's
//!  │     send: partial? send the rest     │◄─ c1: 38 bytes in buffer 5 ◄───┤ until then
//!  │ }                                    │◄─ c7: 80 bytes sent ◄──────────┘
//!  └──────────────────────────────────────┘ completion queue
//! ```
//!
//! ## What to notice
//! - One syscall per turn, however many operations: `strace -c` shows `io_uring_enter`, no
//!   `recvfrom`, `sendto`, `accept4` or `epoll_wait` — and no O_NONBLOCK or EAGAIN loop.
//! - One multishot accept serves every client; a completion without the MORE flag means it has
//!   ended (EMFILE, say) and must be submitted again (`on_accept`).
//! - Buffer ownership: recv buffers come from a pool the kernel draws on only once data has
//!   arrived, so an idle connection holds none; answers wait in a per-connection buffer frozen
//!   while its send is in flight (`conn.rs`). Each `// SAFETY:` below says why.
//! - close(2) cancels nothing, and completions can outlive their connection: a connection
//!   cancels its operations and waits for them before closing, and tokens carry a generation.
//!
//! ## Where it breaks
//! One thread, one core: `--work 100` saturates it and `--delay-ms` stalls every client, as in
//! lesson 10; lesson 11 runs one loop (here: one ring) per core. Idle connections park recvs in
//! kernel memory our RSS does not show. And io_uring is often disabled (a sysctl, container
//! seccomp profiles): portable servers keep an epoll fallback.
//!
//! ## Try it
//! ```text
//! cargo run --release -p io_uring_server
//! wrk -t2 -c100 -d10s http://127.0.0.1:8080/
//! strace -c -f -p $(pgrep io_uring_server)     # during wrk; Ctrl-C prints the table
//! ```
//!
//! ## Compare with
//! Lesson 10; lesson 7's conn.rs; liburing's io_uring_prep_multishot_accept(3); tokio-uring's
//! `read(buf) -> (result, buf)`: ownership passed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use nix::errno::Errno;
use server_common::cli::CommonArgs;
use server_common::net::{self, Blocking};
use server_common::stats::Stats;
use server_common::{Context, SetupError, shutdown, warn_throttled};

mod buf_ring; // support code: the recv buffer pool's plumbing
mod conn; // the model's second role: the connections
mod token; // support code: what a completion's user_data names
use buf_ring::{BGID, BUF_SIZE, Pool};
use conn::Conns;
use token::{Op, token, untoken};

const NAME: &str = env!("CARGO_PKG_NAME");
const SQ_ENTRIES: u32 = 1024; // submission queue: a turn that queues more submits early (`push`)
const CQ_ENTRIES: u32 = 8192; // completion queue; past that the kernel keeps the rest aside
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100); // out of descriptors: pause accept
static STALE: AtomicU64 = AtomicU64::new(0); // completions for connections gone (`handle_conn`)
const POLL_FIRST: u16 = 1; // IORING_RECVSEND_POLL_FIRST: a recv waits for data before trying

// ─── args ───────────────────────────────────────────────────────────────────────────────────

/// Lesson 13, completion-based I/O with io_uring: one thread submits accepts, reads and writes
/// to the kernel through a shared queue and collects their results from another, one syscall
/// per batch. A buffer belongs to the kernel while its operation is in flight.
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

/// The listener (lesson 1's, left blocking: io_uring never blocks on it) and the ring.
fn listen(args: &CommonArgs) -> Result<(OwnedFd, IoUring), SetupError> {
    let listener = net::listener(args.addr, args.backlog, Blocking::Yes)?; // owned for good
    // io_uring_setup(2): both queues, mapped into our memory. Only this thread submits, and the
    // kernel completes operations inside our io_uring_enter, in a batch, rather than interrupt
    // us for each packet (SINGLE_ISSUER, DEFER_TASKRUN: liburing's advice for servers).
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
        .context("cannot create an io_uring (is kernel.io_uring_disabled set?)")?;
    Ok((listener, ring))
}

// ─── the model ──────────────────────────────────────────────────────────────────────────────

/// The loop's state: the ring, the buffers the kernel reads into, and the connections.
struct Server {
    ring: IoUring,
    pool: Pool,
    conns: Conns,
}

fn run(args: Args) -> Result<(), SetupError> {
    let stats = Stats::new_shared(None);
    stop_on_signal(stats)?;
    let (listener, ring) = listen(&args.common)?;
    let pool = Pool::new(&ring)?;
    net::announce(NAME, &listener)?; // "listening on IP:PORT (io_uring_server, pid N)"
    let conns = Conns::new(&args.common, stats);
    let mut s = Server { ring, pool, conns };
    let mut accept_at = Some(Instant::now()); // when to (re)submit the accept; None: it is armed
    let mut completions = Vec::with_capacity(CQ_ENTRIES as usize);

    loop {
        if accept_at.is_some_and(|t| Instant::now() >= t) {
            let sqe = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(token(Op::Accept, 0, 0));
            // SAFETY: multishot accept takes no address buffer; the listener stays open for the
            // life of the process (this loop never ends).
            unsafe { push(&mut s.ring, &sqe) };
            accept_at = None;
        }
        let now = Instant::now();
        let deadline = s.conns.next_sweep().into_iter().chain(accept_at).min();
        submit_and_wait(&s.ring, deadline.map(|d| d.saturating_duration_since(now)));

        // Copy them out (16 bytes each): the queue is free for the kernel, the ring for us.
        let now = Instant::now(); // one clock read per turn: every deadline below uses it
        completions.clear();
        completions.extend(s.ring.completion());
        for cqe in &completions {
            match untoken(cqe.user_data()).0 {
                Op::Accept => accept_at = s.on_accept(cqe, now).or(accept_at),
                Op::Recv | Op::Send | Op::Cancel => s.handle_conn(cqe, now),
            }
        }
        // Idle timeouts and lingering closes that are due: cancel what they have in flight.
        for (slot, generation) in s.conns.sweep(now) {
            s.drive(slot, generation, now);
        }
    }
}

/// io_uring_enter(2): submits everything queued this turn and sleeps until one completion at
/// least, or `timeout` (the next sweep, or the end of an accept pause).
fn submit_and_wait(ring: &IoUring, timeout: Option<Duration>) {
    // The timeout rides along with the call (IORING_ENTER_EXT_ARG): no timer submission.
    let ts = timeout.map(Timespec::from);
    let result = match ts.as_ref().map(|ts| SubmitArgs::new().timespec(ts)) {
        Some(args) => ring.submitter().submit_with_args(1, &args),
        None => ring.submit_and_wait(1),
    };
    match result.map_err(|e| e.raw_os_error().map(Errno::from_raw)) {
        // Done; or the deadline came first; or a signal (ours are blocked, a debugger's are
        // not); or the completion queue is backed up (EBUSY) or kernel memory short (EAGAIN)
        // for a moment: drain the completions, then come back.
        Ok(_) | Err(Some(Errno::ETIME | Errno::EINTR | Errno::EBUSY | Errno::EAGAIN)) => {}
        Err(e) => {
            warn_throttled!("{NAME}: io_uring_enter: {e:?}");
            std::thread::sleep(Duration::from_millis(10)); // never spin on a persistent error
        }
    }
}

impl Server {
    /// A completion of the multishot accept; without MORE it ended: when to submit it again.
    fn on_accept(&mut self, cqe: &cqueue::Entry, now: Instant) -> Option<Instant> {
        let mut again = now;
        match cqe.result() {
            fd @ 0.. => {
                // SAFETY: the kernel has just installed descriptor `fd` for us, as accept4(2)
                // would, with SOCK_CLOEXEC; nothing else owns it; OwnedFd closes it once.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let (slot, generation) = self.conns.insert(fd, now); // fd: owned by `conns` now
                self.drive(slot, generation, now); // its first recv
            }
            // A signal, or a client that reset while queued: accept again at once.
            e if [libc::EINTR, libc::ECONNABORTED].contains(&-e) => {}
            // Out of descriptors or memory, the client queued: re-arming at once would spin.
            e => {
                let e = Errno::from_raw(-e); // (a negative errno, as from every operation)
                warn_throttled!("{NAME}: accept: {e}; pausing accept for 100 ms");
                again = now + ACCEPT_BACKOFF;
            }
        }
        (!cqueue::more(cqe.flags())).then_some(again)
    }

    // ─── per-connection work ────────────────────────────────────────────────────────────────

    /// A completion of a connection's recv, send or cancel: report it to the connection
    /// (conn.rs), give its buffer back to the pool, and submit what the connection wants next.
    fn handle_conn(&mut self, cqe: &cqueue::Entry, now: Instant) {
        let (op, slot, generation) = untoken(cqe.user_data());
        let buffer = cqueue::buffer_select(cqe.flags());
        let Some(conn) = self.conns.get_mut(slot, generation) else {
            // Stale: its connection is gone; the slot may serve another one by now. Only a
            // cancel's completion can be this late (conn.rs); any other would be dropped too.
            STALE.fetch_add(1, Ordering::Relaxed);
            self.pool.give_back(buffer);
            return;
        };
        match op {
            Op::Recv => {
                // SAFETY: `res` and `buffer` are this recv completion's, and the buffer goes
                // back to the kernel only below, once the session has copied what it keeps.
                conn.on_recv(unsafe { self.pool.received(cqe.result(), buffer) }, now);
                self.pool.give_back(buffer);
            }
            Op::Send => conn.on_send(cqe.result(), now),
            // A cancel's own result: nothing to do; what it cancelled completes by itself.
            Op::Cancel | Op::Accept => return,
        }
        self.drive(slot, generation, now);
    }

    /// Submits what conn.rs asks for next; each SAFETY says why its memory and socket outlive it.
    fn drive(&mut self, slot: u32, generation: u32, now: Instant) {
        let next = self.conns.drive(slot, generation, now);
        let fd = Fd(next.fd);
        if let Some((bytes, len)) = next.send {
            let sqe = opcode::Send::new(fd, bytes, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(token(Op::Send, slot, generation));
            // SAFETY: the bytes lie in the connection's `sending` buffer, which conn.rs leaves
            // untouched — not grown, shrunk, swapped or dropped — until this send's completion;
            // the connection and its socket are not freed while a send is in flight. The table
            // of connections may grow and move the `Vec` header, never its heap block.
            unsafe { push(&mut self.ring, &sqe) };
        }
        if next.recv {
            let sqe = opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                .ioprio(POLL_FIRST) // right after our answer the next request is rarely there yet
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(token(Op::Recv, slot, generation));
            // SAFETY: names no buffer of ours: BUFFER_SELECT makes the kernel take one from
            // the pool once data has arrived, and the pool lives until the process exits. The
            // socket stays open until this recv completes (conn.rs).
            unsafe { push(&mut self.ring, &sqe) };
        }
        for op in next.cancel.into_iter().flatten() {
            // IORING_OP_ASYNC_CANCEL of the operation with this token: close(2) cancels none.
            let sqe = opcode::AsyncCancel::new(token(op, slot, generation))
                .build()
                .user_data(token(Op::Cancel, slot, generation));
            // SAFETY: names no memory and no descriptor, only a token.
            unsafe { push(&mut self.ring, &sqe) };
        }
    }
}

/// Queues one submission (no syscall); if the queue is full, submits what it holds first.
/// # Safety
/// Every buffer and descriptor `sqe` names must stay valid until its completion has arrived:
/// from here on they are the kernel's.
unsafe fn push(ring: &mut IoUring, sqe: &squeue::Entry) {
    // SAFETY: the caller's promise, passed on.
    while unsafe { ring.submission().push(sqe) }.is_err() {
        // Full: this turn's completions asked for more than SQ_ENTRIES submissions. Hand these
        // to the kernel now (io_uring_enter without waiting) to make room.
        if let Err(e) = ring.submit() {
            warn_throttled!("{NAME}: io_uring_enter: {e}");
            std::thread::sleep(Duration::from_millis(1)); // never spin on a persistent error
        }
    }
}

// ─── shutdown & report ──────────────────────────────────────────────────────────────────────

/// SIGINT/SIGTERM → summary → exit 0, from the shared crate's signal thread (see lesson 1),
/// with one line of this model's own. Process exit makes the kernel cancel every operation in
/// flight before it releases our memory, then closes the ring, the listener and every socket.
fn stop_on_signal(stats: &'static Stats) -> Result<(), SetupError> {
    shutdown::exit_on_signal(NAME, stats, || {
        let stale = STALE.load(Ordering::Relaxed);
        vec![("stale completions ignored".into(), stale.to_string())]
    })
}
