//! A fast echo server for measuring `echo_client` itself — not a lesson (lessons 7–11 build the
//! real event-loop servers). One edge-triggered epoll loop per thread, each with its own
//! `SO_REUSEPORT` listener on the same port, so the kernel spreads connections over threads and
//! nothing is shared. Start it several times on one port to hold more connections than one
//! process's RLIMIT_NOFILE allows.
//!
//! ```text
//! cargo run --release -p echo_client --example echo_server -- --addr 127.0.0.1:9000 --threads 1
//! ```
//!
//! Correct where it matters for a measurement: partial writes are kept and retried, and a
//! connection whose output is backed up is not read until it drains (bounded memory, no lost
//! bytes), as `docs/contract.md` §4 asks.
//!
//! `--http` answers every request (whatever ends at a blank line) with the lessons' keep-alive
//! `200 OK`, and does nothing else: no parsing, no `Connection: close`, no timeouts. With
//! `--threads 2` this is *the floor* `bench --targets` sets beside the lessons: no server can
//! do less per message or request (docs/method.md, "The floor").

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use clap::Parser;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage, accept4, bind, recv, send,
    setsockopt, socket, sockopt,
};

/// A multi-threaded epoll echo server for measuring echo_client.
#[derive(Parser)]
struct Args {
    /// Where to listen; port 0 picks one (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Event-loop threads, each with its own SO_REUSEPORT listener.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Answer HTTP/1.1 keep-alive requests (each ends at a blank line) instead of echoing.
    #[arg(long)]
    http: bool,
}

/// Token of the listener in each thread's epoll set; connections use their descriptor.
const LISTENER: u64 = u64::MAX;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // As many descriptors as the hard limit allows: this server exists to hold many.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;

    // The first listener resolves port 0; the others bind the same port.
    let first = listener(args.addr)?;
    let addr = server_common::net::local_addr(&first)?;
    let mut listeners = vec![first];
    for _ in 1..args.threads {
        listeners.push(listener(addr)?);
    }
    println!(
        "listening on {addr} (echo_server, pid {})",
        std::process::id()
    );
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || event_loop(l, args.http)))
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("echo_server: {e}");
        }
    }
    Ok(())
}

fn listener(addr: SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    server_common::net::listen_backlog(&fd, 65_535)?;
    Ok(fd)
}

/// One connection: its socket and the bytes received but not yet echoed (or answered).
struct Conn {
    fd: OwnedFd,
    pending: Vec<u8>,
    /// `--http`: how many bytes of a request's final "\r\n\r\n" the last read ended with.
    matched: u8,
}

fn event_loop(listener: OwnedFd, http: bool) -> nix::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        &listener,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, LISTENER),
    )?;
    let mut conns: Vec<Option<Conn>> = Vec::new(); // indexed by descriptor
    let mut events = vec![EpollEvent::empty(); 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut answers = Vec::new(); // `--http`: one read's answers, reused
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            if ev.data() == LISTENER {
                accept_all(&listener, &epoll, &mut conns);
                continue;
            }
            let fd = ev.data() as usize;
            let open = match conns.get_mut(fd).and_then(Option::as_mut) {
                Some(c) => serve(c, ev.events(), &mut buf, http.then_some(&mut answers)),
                None => continue,
            };
            if !open {
                conns[fd] = None; // close(2), which also leaves the epoll set
            }
        }
    }
}

/// Edge-triggered: accept until EAGAIN.
fn accept_all(listener: &OwnedFd, epoll: &Epoll, conns: &mut Vec<Option<Conn>>) {
    loop {
        let raw: RawFd = match accept4(
            listener.as_raw_fd(),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        ) {
            Ok(fd) => fd,
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(Errno::EAGAIN) => return,
            Err(e) => {
                // EMFILE and friends: the client's connect stays queued; say so and move on.
                eprintln!("echo_server: accept: {e}");
                return;
            }
        };
        // SAFETY: accept4 just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = setsockopt(&fd, sockopt::TcpNoDelay, &true);
        let interest = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if epoll
            .add(&fd, EpollEvent::new(interest, raw as u64))
            .is_err()
        {
            continue; // fd dropped: closed
        }
        let i = raw as usize;
        if conns.len() <= i {
            conns.resize_with(i + 1, || None);
        }
        conns[i] = Some(Conn {
            fd,
            pending: Vec::new(),
            matched: 0,
        });
    }
}

/// Echoes what can be echoed now — or, given `answers` (`--http`), answers every request that
/// ended. Returns false when the connection is over.
fn serve(
    c: &mut Conn,
    flags: EpollFlags,
    buf: &mut [u8],
    mut answers: Option<&mut Vec<u8>>,
) -> bool {
    // With the client's FIN in this event, a short read does not mean "nothing left": the EOF
    // is still to be read, and no new edge would announce it.
    let eof_pending =
        flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
    loop {
        // Output first: while some is pending, reading more would only grow memory.
        while !c.pending.is_empty() {
            match send(c.fd.as_raw_fd(), &c.pending, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => {
                    c.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return true, // EPOLLOUT will bring us back
                Err(Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        let n = match recv(c.fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(0) => return false, // the client closed (we owe nothing: pending is empty)
            Ok(n) => n,
            Err(Errno::EAGAIN) => return true,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        };
        let reply: &[u8] = match answers.as_deref_mut() {
            None => &buf[..n],
            Some(out) => {
                out.clear();
                for _ in 0..requests_ended(&mut c.matched, &buf[..n]) {
                    out.extend_from_slice(server_common::responses::OK_KEEP_ALIVE);
                }
                out
            }
        };
        let sent = if reply.is_empty() {
            0 // `--http`: no request has ended yet
        } else {
            match send(c.fd.as_raw_fd(), reply, MsgFlags::MSG_NOSIGNAL) {
                Ok(k) => k,
                Err(Errno::EAGAIN | Errno::EINTR) => 0, // kept in `pending`, sent next
                Err(_) => return false,
            }
        };
        c.pending.extend_from_slice(&reply[sent..]);
        if n < buf.len() && c.pending.is_empty() && !eof_pending {
            return true; // a short read drained the socket (epoll(7))
        }
    }
}

/// `--http`: how many requests end in `data`, each at its blank line ("\r\n\r\n"); `matched`
/// carries a line end split between two reads.
fn requests_ended(matched: &mut u8, data: &[u8]) -> usize {
    const END: &[u8; 4] = b"\r\n\r\n";
    let mut ended = 0;
    for &b in data {
        *matched = match b {
            _ if b == END[usize::from(*matched)] => *matched + 1,
            b'\r' => 1, // a mismatch that can still start a line end
            _ => 0,
        };
        if usize::from(*matched) == END.len() {
            ended += 1;
            *matched = 0;
        }
    }
    ended
}
