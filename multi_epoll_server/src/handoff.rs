//! `--distribute acceptor`: the model's two extra roles. One acceptor owns the only listener,
//! accepts, and hands each connection to a loop over a socketpair of its own; the loop takes
//! it from there as if it had accepted it. The same code runs in threads and in processes: a
//! descriptor sent with SCM_RIGHTS lands in the receiver's descriptor table, whichever it is.
//!
//! ```text
//!  listener ─► acceptor: accept4 ─► pick a loop ─► sendmsg(SCM_RIGHTS) ─► close our copy
//!                                  (shortest queue,   │ socketpair i (SOCK_SEQPACKET):
//!                                   ties in turn)     ▼ one message = 1 byte + 1 descriptor
//!                    loop i: epoll says readable ─► recvmsg until EAGAIN ─► insert (lesson 7)
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use epoll_et_server::Arrivals; // lesson 10: what its loop takes connections from
use nix::cmsg_space;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag};
use nix::sys::socket::{SockType, accept4, recvmsg, sendmsg, socketpair};
use nonblocking_busy_server::{ACCEPT_BACKOFF, Conns}; // lesson 7: the table and its EMFILE pause
use server_common::net::RETRY_ACCEPT;
use server_common::{Context, SetupError, warn_throttled};

/// One socketpair(2) per loop: the acceptor's ends and the loops' ends, in loop order.
/// SOCK_SEQPACKET (unix(7)): connected like a stream, but it keeps message boundaries, so each
/// message carries exactly one descriptor and no byte stream has to be split back into them.
/// Both ends non-blocking: neither side may ever wait on the other.
pub fn socketpairs(n: usize) -> Result<(Vec<OwnedFd>, Vec<OwnedFd>), SetupError> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let mut pairs = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)
            .context("cannot create a hand-off socketpair")?;
        pairs.0.push(ours); // the acceptor's end
        pairs.1.push(theirs); // the loop's end
    }
    Ok(pairs)
}

// ─── the acceptor ───────────────────────────────────────────────────────────────────────────

/// The only listener and one end of every loop's socketpair.
pub struct Acceptor {
    name: &'static str,
    /// Blocking: accepting is all the acceptor does, so it sleeps in accept4 until a client comes.
    listener: OwnedFd,
    /// Our end of loop i's socketpair; `None` once that loop is gone (threads mode only).
    loops: Vec<Option<OwnedFd>>,
    /// Round robin among equals: the loop to try first when the queues tie.
    next: usize,
}

/// Why one loop did not take a connection.
enum Refused {
    /// EAGAIN: its socket buffer is full, the loop is behind. Another may have room.
    Full,
    /// Not this loop's doing (ETOOMANYREFS: too many descriptors in flight for our user; ENOBUFS,
    /// ENOMEM): every loop would refuse alike, and POLLOUT would not tell us when it ends.
    Later,
}

impl Acceptor {
    pub fn new(name: &'static str, listener: OwnedFd, ends: Vec<OwnedFd>) -> Acceptor {
        let loops = ends.into_iter().map(Some).collect(); // owned here now
        Acceptor {
            name,
            listener,
            loops,
            next: 0,
        }
    }

    /// Accept, hand off, for ever — or until every loop is gone (a panicked loop thread closes its
    /// end). Returning drops the listener, so new clients are refused, as in `reuseport` mode
    /// when every loop has panicked and closed its listener.
    pub fn run(mut self) {
        loop {
            let conn = self.accept();
            if !self.hand_off(conn) {
                warn_throttled!(
                    "{}: acceptor: every loop is gone; closing the listener",
                    self.name
                );
                return;
            }
        }
    }

    /// accept4(2) on the blocking listener (see lesson 1). SOCK_NONBLOCK: the loop that gets the
    /// connection expects a non-blocking socket, and O_NONBLOCK belongs to the socket, so it
    /// travels with it. SOCK_CLOEXEC is our descriptor's alone: the receiver asks for its own.
    fn accept(&self) -> OwnedFd {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        loop {
            match accept4(self.listener.as_raw_fd(), flags) {
                // SAFETY: accept4 just returned `fd`, a new descriptor nothing else owns.
                Ok(fd) => return unsafe { OwnedFd::from_raw_fd(fd) }, // ours until sent
                // EINTR, ECONNABORTED (the client reset while queued), a queued connection's
                // network error: retry at once, as every accept loop of the course does.
                Err(e) if RETRY_ACCEPT.contains(&e) => continue,
                // EMFILE/ENFILE (out of descriptors), ENOBUFS/ENOMEM: the client stays queued.
                // Pause as lesson 7 does, asleep: the acceptor has nothing else to do.
                Err(e) => {
                    warn_throttled!("{}: acceptor: accept: {e}; pausing 100 ms", self.name);
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Sends `conn` to one loop; false if no loop is left. Our copy closes when `conn` drops,
    /// here: the kernel keeps the socket open through the descriptor in flight.
    fn hand_off(&mut self, conn: OwnedFd) -> bool {
        loop {
            let mut later = false;
            // THE POLICY: least loaded first — shortest hand-off queue, ties in turn.
            for i in self.by_queue() {
                let Some(end) = &self.loops[i] else { continue };
                match send_conn(end, &conn) {
                    Ok(()) => {
                        self.next = (i + 1) % self.loops.len();
                        return true;
                    }
                    // Behind: never wait on one loop while another may have room.
                    Err(Errno::EAGAIN) => {}
                    // The loop's end is closed: a loop thread panicked (in --processes the
                    // supervisor holds every end open, so this cannot happen there). Its queued
                    // connections went with it; forget it and try the next.
                    Err(e @ (Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)) => {
                        warn_throttled!("{}: acceptor: loop {i}: {e}; skipping it", self.name);
                        self.loops[i] = None; // closed: dropped
                    }
                    // ETOOMANYREFS, ENOBUFS, ENOMEM: see `Refused::Later`. (EINTR cannot come
                    // from a non-blocking send; if it did, waiting a little is harmless.)
                    Err(e) => {
                        warn_throttled!("{}: acceptor: sendmsg: {e}", self.name);
                        later = true;
                    }
                }
            }
            if self.loops.iter().all(Option::is_none) {
                return false; // `conn` drops: closed
            }
            // Every loop refused. We hold this one connection and accept no more: new clients
            // wait in the listener's queue (the kernel's, up to --backlog) until a loop has
            // room — the same backpressure as a worker pool that is all busy.
            self.wait_for_room(if later { Refused::Later } else { Refused::Full });
        }
    }

    /// The live loops, shortest queue first; among equal queues, starting after the last loop
    /// chosen (round robin). The queue is what the kernel still holds for the loop: SIOCOUTQ
    /// (ioctl(2) on our end) gives the buffer memory of the messages it has not received yet,
    /// the same for every message (768 bytes here), so it orders loops by their backlog. A loop
    /// stalled in a slow request stops receiving: after one connection waits for it, it is
    /// longer than the others' and is skipped until it catches up.
    fn by_queue(&self) -> Vec<usize> {
        let n = self.loops.len();
        let mut order: Vec<(i32, usize, usize)> = (self.loops.iter().enumerate())
            .filter_map(|(i, end)| Some((queued(end.as_ref()?), (i + n - self.next) % n, i)))
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, _, i)| i).collect()
    }

    /// Sleeps until some loop may have room: poll(2) for POLLOUT on the live ends (a full end
    /// turns writable once its loop has drained a quarter of it), or a fixed pause when the
    /// refusal was not a full buffer. Bounded either way, so nothing is waited on for ever.
    fn wait_for_room(&self, why: Refused) {
        if let Refused::Later = why {
            return std::thread::sleep(ACCEPT_BACKOFF);
        }
        let mut fds: Vec<PollFd> = (self.loops.iter().flatten())
            .map(|end| PollFd::new(end.as_fd(), PollFlags::POLLOUT))
            .collect();
        // EINTR or a poll failure: the caller tries every loop again, which is what we want.
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
    }
}

/// sendmsg(2): one byte of data (unix(7): some real data should go with ancillary data) and
/// one descriptor as SCM_RIGHTS. MSG_DONTWAIT: EAGAIN instead of waiting for room; MSG_NOSIGNAL:
/// EPIPE instead of SIGPIPE if the loop's end is closed. A seqpacket message is sent whole or
/// not at all: no partial send to finish.
fn send_conn(end: &OwnedFd, conn: &OwnedFd) -> nix::Result<()> {
    let fds = [conn.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    sendmsg::<()>(end.as_raw_fd(), &[IoSlice::new(b"c")], &cmsg, flags, None).map(drop)
}

/// Bytes queued for the loop at the other end of `end` and not yet received (SIOCOUTQ).
fn queued(end: &OwnedFd) -> i32 {
    let mut bytes: libc::c_int = 0;
    // SAFETY: `end` is an open socket for the whole call; SIOCOUTQ (linux/sockios.h, the same
    // number as TIOCOUTQ) writes one int into `bytes`, which lives on our stack throughout.
    let rc = unsafe { libc::ioctl(end.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) };
    // Cannot fail on a socket; if it did, count the queue as empty: the loop still gets its turn.
    if rc == 0 { bytes } else { 0 }
}

// ─── the loop's side ────────────────────────────────────────────────────────────────────────

/// A loop's end of its socketpair, in the place of a listener: lesson 10's loop registers it
/// in its epoll (edge-triggered) and, when it is readable, takes connections from it until
/// `None` — the same drain as accept4 until EAGAIN.
pub struct Handoff {
    end: OwnedFd,
    /// Room for one SCM_RIGHTS control message, kept from call to call.
    cmsg: Vec<u8>,
    /// Receiving pauses after running out of descriptors, as lesson 7's accept does.
    paused_until: Option<Instant>,
    /// After running out, peek before each receive until the queue is empty: see `take`.
    careful: bool,
}

impl Handoff {
    /// Takes `end`, the loop's end of its socketpair: owned by the loop from now on.
    pub fn new(end: OwnedFd) -> Handoff {
        let cmsg = cmsg_space!(RawFd);
        Handoff {
            end,
            cmsg,
            paused_until: None,
            careful: false,
        }
    }
}

/// What one recvmsg brought.
enum Received {
    Conn(OwnedFd),
    /// A message whose descriptor could not be installed: we are out of descriptors.
    NoRoom,
    /// End of file: the acceptor's end is closed (threads mode, the acceptor thread panicked).
    Closed,
    /// A message without a descriptor: nobody sends one, so there is nothing to take from it.
    Nothing,
}

impl Arrivals for Handoff {
    fn take(&mut self, conns: &mut Conns, now: Instant) -> Option<OwnedFd> {
        let name = conns.name();
        let mut peeked = false; // careful: the message ahead has been peeked, with success
        loop {
            let peek = self.careful && !peeked;
            match recv_conn(&self.end, &mut self.cmsg, peek) {
                // A peeked copy: a descriptor was free. Close it, then receive the message.
                Ok(Received::Conn(copy)) if peek => {
                    drop(copy);
                    peeked = true;
                }
                Ok(Received::Conn(conn)) => return Some(conn), // the loop inserts it (lesson 7)
                // Out of descriptors (EMFILE/ENFILE). Unlike accept4, which leaves the client
                // queued, recvmsg has taken the message: the kernel closed the descriptor it
                // could not install, and that client is gone (unix(7), SCM_RIGHTS). So pause
                // for ACCEPT_BACKOFF like lesson 7, and from now on until the queue is empty,
                // *peek* first (MSG_PEEK installs a copy and leaves the message queued): while
                // we are short, the peek fails and the clients keep waiting in the queue. One
                // client lost per shortage, not one per pause; two recvmsg per connection only
                // while we are careful. (In threads mode another thread may take the descriptor
                // freed between peek and receive: then one more is lost.)
                Ok(Received::NoRoom) => {
                    if !peek {
                        warn_throttled!(
                            "{name}: hand-off: out of descriptors (EMFILE): one client lost"
                        );
                    }
                    self.careful = true;
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
                // Peeked, it is still queued: receive it for real, which discards it.
                Ok(Received::Nothing) => peeked = peek,
                Ok(Received::Closed) => {
                    warn_throttled!("{name}: hand-off: the acceptor is gone");
                    return None; // edge-triggered: reported once, so no spin
                }
                // Drained: wait for the next edge. Nothing waits for a descriptor any more.
                Err(Errno::EAGAIN) => {
                    self.careful = false;
                    return None;
                }
                Err(Errno::EINTR) => continue, // a signal (ours are blocked): retry
                // Unexpected: pause rather than spin on it.
                Err(e) => {
                    warn_throttled!("{name}: hand-off: recvmsg: {e}");
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    return None;
                }
            }
        }
    }

    fn accepting(&self, _conns: &Conns, now: Instant) -> bool {
        self.paused_until.is_none_or(|t| now >= t)
    }

    fn timeout(&self, conns: &Conns, now: Instant) -> Option<Duration> {
        let pause = self.paused_until.filter(|&t| t > now).map(|t| t - now);
        match (conns.timeout(now), pause) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// recvmsg(2) of one message. MSG_CMSG_CLOEXEC: the new descriptor is close-on-exec like every
/// accepted connection of the course (docs/contract.md §3).
fn recv_conn(end: &OwnedFd, cmsg: &mut [u8], peek: bool) -> nix::Result<Received> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
    if peek {
        flags |= MsgFlags::MSG_PEEK;
    }
    let msg = recvmsg::<()>(end.as_raw_fd(), &mut iov, Some(cmsg), flags)?;
    // MSG_CTRUNC: the descriptor did not fit in our table. nix's `cmsgs` refuses to iterate then.
    let Ok(cmsgs) = msg.cmsgs() else {
        return Ok(Received::NoRoom);
    };
    // Wrap every descriptor received, so none can leak; the acceptor sends exactly one.
    let fds = cmsgs.flat_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds,
        _ => Vec::new(),
    });
    // SAFETY: recvmsg just installed these descriptors in our table; nothing else owns them.
    let mut owned: Vec<OwnedFd> = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    match owned.pop() {
        Some(conn) => Ok(Received::Conn(conn)), // any others drop with `owned`: closed
        None if msg.bytes == 0 => Ok(Received::Closed),
        None => Ok(Received::Nothing),
    }
}
