//! # Lesson 1, second half — serving one connection with blocking calls
//!
//! `main.rs` is lesson 1's model: one thread that accepts a connection and serves it to its end.
//! This file is how it serves it — and how every blocking lesson does: lessons 2–6 differ only in
//! *who* calls [`handle_conn`] (the accept loop itself, a forked child, a new thread, a pool
//! worker), so they depend on this crate (`simple_server.workspace = true` in their Cargo.toml)
//! and say "(lesson 1)" where they call it. Every error a client can cause ends its own
//! connection and nothing else.
//!
//! ```text
//!   handle_conn(conn):  SO_RCVTIMEO + SO_SNDTIMEO (--idle-timeout), TCP_NODELAY
//!     loop {
//!       recv(2) ──► n bytes ──► session.feed ──┐          0 bytes (EOF) ──► session.eof
//!                                              ▼
//!       send_all(out): send(2) until every byte is out (a send may take only part of it)
//!       the session said Close? ──► close(2), or a lingering close if input may be unread
//!     }
//! ```
//!
//! The session (`server_common::proto`) is sans-IO: it turns bytes in into bytes out and a
//! keep/close verdict, and knows nothing of sockets. Everything that touches the socket is here.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, Shutdown, recv, send, setsockopt, shutdown, sockopt};
use nix::sys::time::TimeVal;
use server_common::net::{self, LINGER};
use server_common::proto::{Flow, Session};
use server_common::warn_throttled;

/// How much one recv(2) may bring: 2 KiB, on the thread's stack. Small on purpose — in lesson 3
/// every connection has a thread, and every stack page a waiting thread has touched is memory
/// that connection costs for its whole life. glibc puts the thread's descriptor and TLS at the
/// top of its stack, so a thread blocked in recv has touched two pages at least; 2 KiB of buffer
/// plus the frames down to recv still fit in the second (lesson 3's README shows the pages, and
/// what an 8 KiB zeroed buffer cost: two more per connection). A request bigger than one read is
/// no problem: the session keeps a partial head until the rest arrives.
pub const READ_BUF: usize = 2 * 1024;

/// Serves `conn` until it ends — the session closes it, the client closes or resets it, or it
/// stays silent for `idle` — then closes it. `name` prefixes the one diagnostic it may print.
pub fn handle_conn(name: &str, conn: OwnedFd, idle: Option<Duration>, mut session: Session) {
    // setsockopt(2) SO_RCVTIMEO/SO_SNDTIMEO: a recv or send that waits longer than the idle
    // timeout fails with EAGAIN. Without them a silent client would hold whoever serves it — in
    // lesson 1 the server's one and only thread — forever.
    if let Some(t) = idle {
        let set = setsockopt(&conn, sockopt::ReceiveTimeout, &timeval(t))
            .and_then(|()| setsockopt(&conn, sockopt::SendTimeout, &timeval(t)));
        if let Err(e) = set {
            warn_throttled!("{name}: setsockopt on a new connection: {e}; closed it");
            return; // conn dropped: close(2). Unbounded, it could hold its server forever.
        }
    }
    // TCP_NODELAY (tcp(7)): send each response at once. With Nagle's algorithm on, a small write
    // that follows an unacknowledged one waits for the client's (possibly delayed) ACK. Without
    // it we are slower, not wrong: serve all the same.
    let _ = setsockopt(&conn, sockopt::TcpNoDelay, &true);

    let fd = conn.as_raw_fd(); // borrowed for the loop; `conn` still owns (and closes) it
    let mut buf = [0u8; READ_BUF];
    // What we owe the client. Echo puts at most one read's worth in it before we send it all
    // back, so a client that sends without reading is held back by TCP itself: our send blocks,
    // we stop reading, its send blocks. Memory stays at one buffer per connection.
    let mut out = Vec::new();
    // When the first byte of a head that has not arrived whole came (--head-timeout): a client
    // dribbling a head one byte at a time restarts no timer, and gets a 408 at this deadline.
    let mut head_since: Option<Instant> = None;
    let mut timeout = idle; // what SO_RCVTIMEO is set to now
    loop {
        // While part of a head waits, recv may sleep only until the head's deadline.
        let wait = match (head_since, session.head_limit()) {
            (Some(t0), Some(limit)) => {
                let left = (t0 + limit).saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return head_timeout(conn, &mut session, &mut buf);
                }
                Some(idle.map_or(left, |i| i.min(left)))
            }
            _ => idle,
        };
        if wait != timeout {
            // setsockopt(2) again only when the limit changes: while a head is split over reads.
            let tv = timeval(wait.unwrap_or(Duration::ZERO)); // all-zero: no timeout
            if setsockopt(&conn, sockopt::ReceiveTimeout, &tv).is_err() {
                return; // conn dropped: close(2)
            }
            timeout = wait;
        }
        // recv(2): sleeps until bytes arrive, the client closes (0), or SO_RCVTIMEO expires.
        let flow = match recv(fd, &mut buf, MsgFlags::empty()) {
            // EOF: the client shut down its sending side (or closed). Echo has sent all it owed
            // already; half an HTTP request can never be completed. The session says Close.
            Ok(0) => session.eof(),
            Ok(n) => session.feed(&buf[..n], &mut out),
            // Interrupted before any byte came. Our stop signals are blocked in every thread, but
            // signal(7): a socket with SO_RCVTIMEO returns EINTR after the process was stopped
            // (SIGSTOP, Ctrl-Z) and continued, even with no handler. Nothing was read: again.
            Err(Errno::EINTR) => continue,
            // EAGAIN on a blocking socket: SO_RCVTIMEO expired — the head's deadline (the loop's
            // top answers 408), or --idle-timeout with nothing sent (close, as for any silence).
            Err(Errno::EAGAIN) if head_late(head_since, &session) => continue,
            Err(Errno::EAGAIN) => return, // conn dropped: close(2)
            // The client reset the connection (it crashed, or closed with our data unread).
            Err(Errno::ECONNRESET) => return, // conn dropped: close(2)
            // Anything else (ETIMEDOUT: its host stopped acknowledging) ends it too — this
            // connection only, never the server.
            Err(_) => return, // conn dropped: close(2)
        };
        // Everything owed goes out before we read again — also what the session held back:
        // one call answers a bounded number of pipelined requests (`Session::backlog`).
        let mut flow = flow;
        loop {
            if send_all(fd, &out).is_err() {
                return; // conn dropped: close(2)
            }
            out.clear();
            if flow != Flow::Continue || !session.backlog() {
                break;
            }
            flow = session.feed(&[], &mut out);
        }
        head_since = match session.head_pending() {
            true => head_since.or_else(|| Some(Instant::now())),
            false => None,
        };
        match flow {
            Flow::Continue => {}
            // The client may still be sending bytes nobody will read (a `Connection: close`
            // request with more behind it, a bad request): close gently.
            Flow::Close { linger: true } => return linger_close(conn, &mut buf),
            Flow::Close { linger: false } => return, // conn dropped: close(2)
        }
    }
}

/// Whether the head that started arriving at `since` is past --head-timeout.
fn head_late(since: Option<Instant>, session: &Session) -> bool {
    since
        .zip(session.head_limit())
        .is_some_and(|(t0, limit)| t0.elapsed() >= limit)
}

/// --head-timeout expired with a head still incomplete: 408 Request Timeout, then a lingering
/// close (the client is likely still dribbling). Best effort: a client too slow to take 100
/// bytes gets the close alone.
fn head_timeout(conn: OwnedFd, session: &mut Session, buf: &mut [u8]) {
    let mut out = Vec::new();
    session.head_timeout(&mut out);
    if send_all(conn.as_raw_fd(), &out).is_ok() {
        linger_close(conn, buf);
    } // else conn dropped: close(2)
}

/// send(2) until every byte of `data` is out. A blocking send may still write *part* of the
/// buffer — a signal, or SO_SNDTIMEO expiring after some bytes went — and returns the count it
/// wrote, so we loop on it. Calling send once and hoping is the classic bug of teaching servers.
/// Err: the client is gone (EPIPE, ECONNRESET) or stopped reading for --idle-timeout (EAGAIN).
fn send_all(fd: RawFd, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        // MSG_NOSIGNAL: a vanished client gives EPIPE here instead of SIGPIPE for the process.
        match send(fd, data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..], // all of it, or part: then send the rest
            // Interrupted before any byte went (see the recv above): nothing sent, try again.
            Err(Errno::EINTR) => continue,
            // EAGAIN: SO_SNDTIMEO expired, the client read nothing for --idle-timeout.
            // EPIPE: the client closed and the kernel knows it; ECONNRESET: it reset.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A lingering close (`docs/contract.md` §5): shutdown(2) our sending side, so the client reads
/// our last response and then EOF; read and discard until it closes its side too, for at most
/// [`LINGER`]; only then close(2).
///
/// Why: close(2) on a socket whose receive buffer still holds unread bytes makes Linux send an
/// RST instead of a FIN, and an RST can make the client's kernel discard our response before
/// the client has read it. nginx calls this `lingering_close`.
fn linger_close(conn: OwnedFd, sink: &mut [u8]) {
    // Errors below only mean the peer is gone already — which is what we are waiting for.
    if shutdown(conn.as_raw_fd(), Shutdown::Write).is_err() {
        return; // conn dropped: close(2)
    }
    let deadline = Instant::now() + LINGER;
    loop {
        // SO_RCVTIMEO to the time left, so the recv below cannot outlast the deadline. At least
        // 1 ms: an all-zero timeval means "no timeout at all" (socket(7)).
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = timeval(left.max(Duration::from_millis(1)));
        if left.is_zero() || setsockopt(&conn, sockopt::ReceiveTimeout, &wait).is_err() {
            return; // conn dropped: close(2)
        }
        match recv(conn.as_raw_fd(), sink, MsgFlags::empty()) {
            Ok(0) => return,                // the client closed: now close quietly
            Ok(_) | Err(Errno::EINTR) => {} // discard, keep waiting
            Err(_) => return,               // EAGAIN: time is up; ECONNRESET: gone
        }
    } // `conn` is dropped on every return: close(2)
}

/// A `Duration` as the timeval SO_RCVTIMEO/SO_SNDTIMEO take (microsecond resolution).
fn timeval(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

/// What every *blocking* accept loop (lessons 1–6) does after accept4(2) failed. Each error is
/// a client's or a moment's problem, never a reason to stop serving: accept again at once, or,
/// when that would only meet the same error again, after a pause.
pub fn after_accept_error(name: &str, e: Errno) {
    match e {
        // A signal handler interrupted the wait. We install none and block our stop signals, so
        // Linux would restart accept by itself; a library's handler might not: accept again.
        Errno::EINTR => {}
        // The client reset its connection while it sat in the queue: nothing left to serve.
        Errno::ECONNABORTED => {}
        // accept(2), "Error handling": Linux passes a queued connection's pending network error
        // (ENETDOWN, EPROTO, EHOSTUNREACH, …: net::RETRY_ACCEPT lists them) to accept, and the
        // man page says to treat it like EAGAIN: accept again.
        e if net::RETRY_ACCEPT.contains(&e) => {}
        // Out of descriptors (EMFILE: ours, ENFILE: the system's) or of kernel memory. Retrying
        // at once would spin at 100% CPU on the same error, so back off. The client stays
        // queued and is served as soon as a descriptor frees up.
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM => {
            warn_throttled!("{name}: accept: {e}; backing off");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Anything else is unexpected (EAGAIN cannot happen: the listener blocks, with no
        // SO_RCVTIMEO). Say so, pause briefly so a persistent error cannot spin, and go on.
        _ => {
            warn_throttled!("{name}: accept: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
