//! Listener setup and small socket helpers. Lesson 1 spells every one of these syscalls out
//! with its man page; later lessons call these helpers so their files show only their model.

use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, getsockname, listen,
    setsockopt, socket, sockopt,
};

use crate::error::{Context, SetupError};

/// accept(2) errors that concern one queued client or a signal, never the server: retried at
/// once by every accept loop. EINTR: a signal handler ran. ECONNABORTED: the client reset its
/// connection while it waited in the queue. The rest: accept(2), "Error handling" — Linux
/// passes a queued connection's pending network error to accept, to be treated like EAGAIN.
/// Lesson 1 spells each out in its own `match`.
pub const RETRY_ACCEPT: [Errno; 10] = [
    Errno::EINTR,
    Errno::ECONNABORTED,
    Errno::ENETDOWN,
    Errno::EPROTO,
    Errno::ENOPROTOOPT,
    Errno::EHOSTDOWN,
    Errno::ENONET,
    Errno::EHOSTUNREACH,
    Errno::EOPNOTSUPP,
    Errno::ENETUNREACH,
];

/// Whether the listener (and so, by the model's choice, its connections) blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// `accept` waits for a connection: the blocking models, lessons 1–6.
    Yes,
    /// `accept` returns `EAGAIN` when the queue is empty: the event loops, lessons 7 on.
    No,
}

/// socket(2) → SO_REUSEADDR → bind(2) → listen(2), as lesson 1 does by hand, plus O_NONBLOCK
/// for event loops. The descriptor is close-on-exec and owned by the caller.
pub fn listener(addr: SocketAddr, backlog: i32, blocking: Blocking) -> Result<OwnedFd, SetupError> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if blocking == Blocking::No {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket(family, SockType::Stream, flags, None).context("cannot create a socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("cannot set SO_REUSEADDR")?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).context(format!("cannot bind {addr}"))?;
    listen_backlog(&fd, backlog).context(format!("cannot listen on {addr}"))?;
    Ok(fd)
}

/// listen(2). nix's `Backlog` refuses values above `SOMAXCONN` (4096) although Linux accepts any
/// value and clamps it to the `net.core.somaxconn` sysctl, which the C1M run raises. So large
/// values go to libc directly.
pub fn listen_backlog(fd: &OwnedFd, backlog: i32) -> nix::Result<()> {
    match Backlog::new(backlog) {
        Ok(b) => listen(fd, b),
        Err(_) => {
            // SAFETY: `fd` is a valid, open socket for the whole call (we hold a borrow of the
            // OwnedFd); listen(2) reads no memory of ours.
            let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
            Errno::result(rc).map(drop)
        }
    }
}

/// The address a socket is bound to, via getsockname(2): resolves port 0 to the real port.
pub fn local_addr(fd: &impl AsFd) -> nix::Result<SocketAddr> {
    let ss: SockaddrStorage = getsockname(fd.as_fd().as_raw_fd())?;
    if let Some(v4) = ss.as_sockaddr_in() {
        Ok(SocketAddr::V4(SocketAddrV4::from(*v4)))
    } else if let Some(v6) = ss.as_sockaddr_in6() {
        Ok(SocketAddr::V6(SocketAddrV6::from(*v6)))
    } else {
        Err(Errno::EAFNOSUPPORT)
    }
}

/// Prints the contract's start-up line (`docs/contract.md` §2) and flushes it, so whoever
/// started us can read the real port before we accept anything.
pub fn announce(crate_name: &str, listener: &impl AsFd) -> Result<SocketAddr, SetupError> {
    let addr = local_addr(listener).context("cannot read the bound address")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "listening on {addr} ({crate_name}, pid {})",
        std::process::id()
    )
    .and_then(|()| out.flush())
    .context("cannot write to stdout")?;
    Ok(addr)
}

/// How long a lingering close waits for the client to close its side (`docs/contract.md` §5):
/// lesson 1's blocking `linger_close` and lesson 7's lingering state both use it.
pub const LINGER: Duration = Duration::from_secs(2);
