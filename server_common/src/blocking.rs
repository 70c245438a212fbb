//! The per-connection loop of every **blocking** model (lessons 1–6): recv(2) → session →
//! send(2) everything → repeat, until the session or the client ends it.
//!
//! It lives here, once, because it is the same in all six lessons — they differ only in *who*
//! calls it (the accept loop itself, a forked child, a new thread, a pool worker). Read it as
//! the second half of lesson 1. Every error a client can cause ends this one connection and
//! nothing else.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};

use crate::net::linger_close;
use crate::proto::{Flow, Session};
use crate::warn_throttled;

/// How much one recv(2) may bring. 8 KiB on the stack: it holds a whole HTTP head of ours
/// (`MAX_HEAD`) and keeps the thread-per-connection lesson's 64 KiB stacks safe.
pub const READ_BUF: usize = 8 * 1024;

/// Why a connection ended: the lessons count these, the tests don't need to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The session decided (`Connection: close`, HTTP/1.0, an error response).
    Done,
    /// The client half-closed or closed; we sent what we owed.
    ClientClosed,
    /// Nothing moved for `--idle-timeout` (SO_RCVTIMEO/SO_SNDTIMEO expired).
    IdleTimeout,
    /// The client reset the connection, or vanished while we wrote (ECONNRESET, EPIPE).
    Reset,
    /// Any other socket error.
    Error(Errno),
}

/// Serves `conn` until it ends, then closes it (a lingering close when the session asks).
/// The socket must be blocking; set its idle timeout (SO_RCVTIMEO/SO_SNDTIMEO) first.
pub fn serve(conn: OwnedFd, mut session: Session) -> End {
    let fd = conn.as_raw_fd();
    let mut buf = [0u8; READ_BUF];
    // What we owe the client. Echo fills it with at most one read's worth before we write it
    // all back, so a client that sends without reading is held back by TCP itself: our send
    // blocks, we stop reading, its send blocks. Memory stays at one buffer.
    let mut out = Vec::new();
    loop {
        // recv(2): blocks until bytes arrive, the client closes (0), or the idle timeout.
        let (flow, client_closed) = match recv(fd, &mut buf, MsgFlags::empty()) {
            Ok(0) => (session.eof(), true),
            Ok(n) => (session.feed(&buf[..n], &mut out), false),
            // A signal handler ran while we waited. Our stop signals are blocked in every
            // thread (see shutdown.rs), so this is rare — but retrying is always right.
            Err(Errno::EINTR) => continue,
            // SO_RCVTIMEO expired: the client sent nothing for --idle-timeout.
            Err(Errno::EAGAIN) => return End::IdleTimeout,
            Err(Errno::ECONNRESET) => return End::Reset,
            Err(e) => return End::Error(e),
        };
        if let Err(end) = send_all(fd, &out) {
            return end;
        }
        out.clear();
        match flow {
            Flow::Continue => {}
            Flow::Close { linger: true } => {
                linger_close(conn);
                return End::Done;
            }
            Flow::Close { linger: false } if client_closed => return End::ClientClosed,
            Flow::Close { linger: false } => return End::Done,
        }
    } // `conn` dropped on every return: close(2)
}

/// send(2) until every byte of `data` is out. A blocking send may still write *part* of the
/// buffer (a signal, or SO_SNDTIMEO expiring mid-way), so we loop on the count it returns —
/// the bug of every seed that called `send` once and hoped.
pub fn send_all(fd: RawFd, mut data: &[u8]) -> Result<(), End> {
    while !data.is_empty() {
        // MSG_NOSIGNAL: a vanished client gives EPIPE here instead of SIGPIPE for the process.
        match send(fd, data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => continue,
            // SO_SNDTIMEO expired: the client stopped reading for --idle-timeout.
            Err(Errno::EAGAIN) => return Err(End::IdleTimeout),
            Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(End::Reset),
            Err(e) => return Err(End::Error(e)),
        }
    }
    Ok(())
}

/// What a *blocking* accept loop does after accept4(2) failed; lesson 1 spells out each case in
/// its own `match`. Retries at once when the error was the client's or a signal's; sleeps
/// briefly when retrying at once would only spin on the same error (out of descriptors or
/// memory: the client stays queued and is served once resources free up). Never gives up:
/// no accept error stops a server.
pub fn after_accept_error(crate_name: &str, e: Errno) {
    match e {
        // A signal, or one queued client's problem (net::RETRY_ACCEPT): accept again at once.
        e if crate::net::RETRY_ACCEPT.contains(&e) => {}
        // Out of descriptors (ours or the system's) or kernel memory.
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM => {
            warn_throttled!("{crate_name}: accept: {e}; backing off");
            std::thread::sleep(Duration::from_millis(50));
        }
        _ => {
            warn_throttled!("{crate_name}: accept: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
