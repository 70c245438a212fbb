//! Lesson 12's second file: the few calls a connection task makes on its socket, each written
//! so that a task *waiting* holds as little as possible. The compiler sizes a task's state for
//! its largest `.await`, and every idle connection carries that state: lesson 10 keeps an idle
//! connection in one slot of its table, and this is what keeps a tokio task close to it.

use std::io;
use std::time::Duration;

use server_common::net::LINGER;
use server_common::proto::{Flow, Session};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

thread_local! {
    /// Each worker thread's read buffer, shared by every task it runs: borrowed by `read_once`
    /// and returned before the task can await again.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// One recv(2) (`try_read`: no waiting) into this thread's scratch buffer, fed to the session
/// at once. None: EAGAIN, the readiness was stale. Echo appends what it read to `out` for the
/// next write, so `out`, not the scratch buffer, carries bytes across an `.await`.
pub fn read_once(
    conn: &TcpStream,
    session: &mut Session,
    out: &mut Vec<u8>,
) -> io::Result<Option<Flow>> {
    SCRATCH.with_borrow_mut(|buf| match conn.try_read(buf) {
        Ok(0) => Ok(Some(session.eof())), // the client half-closed; all we owed is sent: close
        Ok(n) => Ok(Some(session.feed(&buf[..n], out))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    })
}

/// write(2) until all is sent. Nearly always the socket takes it all at once (`try_write`: no
/// waiting, no timer). Only a full send buffer (EAGAIN, or part written) makes the task wait,
/// and that part is boxed: the state of waiting costs memory only while it lasts, instead of
/// widening every task (the compiler sizes a future for its largest `.await`).
pub async fn send_all(conn: &TcpStream, data: &[u8], idle: Option<Duration>) -> io::Result<()> {
    let n = match conn.try_write(data) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e), // EPIPE, ECONNRESET: this connection only
    };
    if n == data.len() {
        return Ok(());
    }
    Box::pin(send_rest(conn, &data[n..], idle)).await
}

/// The rest of `data`, waiting for writability between writes, with the idle timeout *per
/// wait*, restarted whenever the client takes a byte: one timeout over the whole send would cut
/// off a client that reads slowly but steadily. std sends with MSG_NOSIGNAL: a vanished client
/// is an EPIPE for this task only.
async fn send_rest(conn: &TcpStream, mut data: &[u8], idle: Option<Duration>) -> io::Result<()> {
    while !data.is_empty() {
        let writable = std::future::poll_fn(|cx| conn.poll_write_ready(cx));
        timed_out(within(idle, writable).await)?;
        match conn.try_write(data) {
            Ok(n) => data = &data[n..], // all of it, or part: then the rest
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {} // stale readiness: wait again
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `io` under a timeout of `idle` (no limit: a deadline that never comes); the timer enters
/// tokio's wheel only if `io` is not ready. Every waiting task carries this future, so it is
/// the bare `Timeout` (a 112-byte `Sleep` beside `io`); an `async fn` wrapper would keep both
/// its argument and the Timeout made of it in its state. [`timed_out`] reads the result.
pub fn within<F: Future>(idle: Option<Duration>, io: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(idle.unwrap_or(Duration::MAX), io)
}

/// `within`'s result as one io::Result: the time limit passing is ErrorKind::TimedOut.
pub fn timed_out<T>(r: Result<io::Result<T>, tokio::time::error::Elapsed>) -> io::Result<T> {
    r.unwrap_or_else(|elapsed| Err(elapsed.into()))
}

/// The lingering close (`docs/contract.md` §5) as a plain sequence, not conn.rs's `Lingering`
/// state: shutdown(2) SHUT_WR, then discard input until EOF, an error, or LINGER has passed.
pub async fn linger_close(mut conn: TcpStream) {
    if conn.shutdown().await.is_ok() {
        let drain = async {
            while conn.readable().await.is_ok() {
                // recv(2) into the scratch buffer and drop it; stop at EOF or an error.
                let more = SCRATCH.with_borrow_mut(|buf| match conn.try_read(buf) {
                    Ok(n) => n > 0,
                    Err(e) => e.kind() == io::ErrorKind::WouldBlock,
                });
                if !more {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await; // timed out: close all the same
    }
} // conn dropped: close(2)
