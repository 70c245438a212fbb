//! Idle connections held open beside a load: the idle side of the C10K picture, and the
//! connections of the memory sweep.
//!
//! The harness opens them itself, before the load starts and before the server's CPU is read,
//! so that what the busy connections cost is measured with the idle ones *already there*: a
//! readiness loop that scans every connection (select, poll) pays for them on every turn, one
//! that is told only about the busy ones (epoll) does not. They are non-blocking sockets that
//! never send a byte; each is closed with an RST (SO_LINGER 0) so thousands of them leave no
//! TIME_WAIT behind between runs.
//!
//! "Held" means the *server* has the connection: connected, taken off the accept queue, and not
//! closed by the server. The accept queue is read from /proc/net/tcp (a listener's `rx_queue`
//! is its accept-queue length), so a rung that stops accepting (a full worker pool, lesson 1)
//! or refuses what it cannot watch (select's FD_SETSIZE) shows as holding fewer than asked.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage, connect, getsockopt, recv,
    setsockopt, socket, sockopt,
};

/// Connections attempted at once: each batch is connected before the next starts, so a server
/// that stops accepting is noticed within a batch, not after every attempt has timed out.
const BATCH: usize = 512;
/// How long one batch may take to connect. A loopback handshake takes microseconds; a SYN that
/// met a full queue is sent again after 1 s, so this waits for one retransmission.
const BATCH_WAIT: Duration = Duration::from_secs(3);
/// The accept queue is kept under this many before a batch starts (the servers listen with a
/// backlog of 4,096): a server that forks or spawns per connection takes its time, and SYNs
/// that meet a full queue are dropped.
const QUEUE_ROOM: u64 = 2_048;

/// What became of the idle connections asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub asked: u64,
    /// Completed the handshake (the kernel's doing: the server need not have accepted yet).
    pub connected: u64,
    /// Still waiting in the server's accept queue when measured.
    pub queued: u64,
    /// Closed or reset by the server.
    pub dropped: u64,
}

impl Held {
    /// Connections the server itself holds: connected, accepted, and not closed.
    pub fn held(&self) -> u64 {
        self.connected.saturating_sub(self.queued + self.dropped)
    }
}

/// Idle connections to one server; dropping them closes each with an RST.
pub struct IdleConns {
    socks: Vec<OwnedFd>,
    addr: SocketAddr,
    asked: u64,
}

impl IdleConns {
    /// Opens `n` idle connections to `addr`, then waits (at most `settle`) for the server to
    /// take them off its accept queue. Stops early when a whole batch fails to connect: the
    /// accept queue is full and the server is not emptying it.
    pub fn open(addr: SocketAddr, n: u64, settle: Duration) -> IdleConns {
        let mut conns = IdleConns {
            socks: Vec::with_capacity(n as usize),
            addr,
            asked: n,
        };
        let t0 = Instant::now();
        let mut left = n as usize;
        while left > 0 {
            let batch = left.min(BATCH);
            left -= batch;
            // Room in the accept queue first, unless the server has stopped taking from it.
            conns.wait_queue(QUEUE_ROOM, settle.saturating_sub(t0.elapsed()));
            let connected = connect_batch(addr, batch);
            // Most of a batch failing means the queue is full and stays full: a pool whose
            // every worker is taken, lesson 1. More would only time out too.
            let stalled = connected.len() < batch / 2;
            conns.socks.extend(connected);
            if stalled {
                break;
            }
        }
        conns.wait_queue(0, settle.saturating_sub(t0.elapsed()));
        conns
    }

    /// Waits until the server's accept queue holds at most `room`, or stops shrinking for a
    /// second, or `limit` has passed.
    fn wait_queue(&self, room: u64, limit: Duration) {
        let t0 = Instant::now();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let q = accept_queue(self.addr.port());
            if q <= room || t0.elapsed() > limit {
                return;
            }
            if q < last.0 {
                last = (q, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(1) {
                return; // not moving: a pool whose every worker is taken, or lesson 1
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server holds right now.
    pub fn held(&self) -> Held {
        let dropped = self.socks.iter().filter(|s| closed_by_peer(s)).count() as u64;
        Held {
            asked: self.asked,
            connected: self.socks.len() as u64,
            queued: accept_queue(self.addr.port()).min(self.socks.len() as u64),
            dropped,
        }
    }
}

impl Drop for IdleConns {
    fn drop(&mut self) {
        for s in &self.socks {
            // SO_LINGER 0: close sends an RST and the socket is gone at once, no TIME_WAIT.
            let _ = setsockopt(
                s,
                sockopt::Linger,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            );
        }
        self.socks.clear(); // close(2) each
    }
}

/// Starts `n` non-blocking connects and waits for them together; returns the connected ones.
fn connect_batch(addr: SocketAddr, n: usize) -> Vec<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let to = SockaddrStorage::from(addr);
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let mut pending: Vec<OwnedFd> = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(s) = socket(family, SockType::Stream, flags, None) else {
            break; // out of descriptors: hold what we have
        };
        match connect(s.as_raw_fd(), &to) {
            Ok(()) | Err(Errno::EINPROGRESS) => pending.push(s),
            Err(_) => {} // refused or out of ports: not connected
        }
    }
    let deadline = Instant::now() + BATCH_WAIT;
    let mut done: Vec<OwnedFd> = Vec::with_capacity(n);
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break; // still pending: SYNs dropped by a full accept queue
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX).max(1);
        let mut fds: Vec<PollFd> = pending
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLOUT))
            .collect();
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) == 0 {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut still = Vec::with_capacity(pending.len());
        for (s, r) in pending.into_iter().zip(ready) {
            if !r {
                still.push(s);
            } else if getsockopt(&s, sockopt::SocketError) == Ok(0) {
                done.push(s);
            } // else: the connect failed (refused, reset): dropped, closed
        }
        pending = still;
    }
    done
}

/// Whether the server closed (FIN) or reset this connection: a peek that returns 0 bytes or an
/// error. An open, silent connection says EAGAIN.
fn closed_by_peer(s: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    !matches!(
        recv(
            s.as_raw_fd(),
            &mut b,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
        ),
        Err(Errno::EAGAIN) | Ok(1..)
    )
}

/// The accept-queue length of every listening socket on `port` (all of a SO_REUSEPORT group),
/// from /proc/net/tcp and tcp6: for a socket in LISTEN, `rx_queue` is the number of
/// connections waiting to be accepted.
pub fn accept_queue(port: u16) -> u64 {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| listen_queue_in(&t, port))
        .sum()
}

/// The parsing half of [`accept_queue`], for tests.
fn listen_queue_in(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue …
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let listening = *f.get(3)? == "0A";
            let rx = u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()?;
            (listening && local_port == port).then_some(rx)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_the_accept_queue_of_listeners_on_a_port() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 2 1\n\
   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000009 00:00000000 00000000     0        0 3 1\n\
   3: 0100007F:1F91 00000000:0000 0A 00000000:00000007 00:00000000 00000000     0        0 4 1\n";
        assert_eq!(
            listen_queue_in(t, 0x1F90),
            5,
            "both listeners, not the connection"
        );
        assert_eq!(listen_queue_in(t, 0x1F91), 7);
        assert_eq!(listen_queue_in(t, 80), 0);
    }

    /// A listener nobody accepts from: every connection is connected (the kernel's handshake)
    /// and queued, none held; once accepted they are held; once closed by the peer, dropped.
    #[test]
    fn counts_what_the_server_holds() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let idle = IdleConns::open(addr, 5, Duration::from_millis(300));
        let h = idle.held();
        assert_eq!((h.asked, h.connected, h.queued, h.held()), (5, 5, 5, 0));
        let mut accepted: Vec<_> = (0..5).map(|_| l.accept().expect("accept").0).collect();
        assert_eq!(idle.held().held(), 5);
        accepted.truncate(3); // the server closes two of them
        let t0 = Instant::now();
        while idle.held().dropped < 2 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(idle.held().dropped, 2);
        assert_eq!(idle.held().held(), 3);
    }
}
