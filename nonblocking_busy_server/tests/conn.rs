//! The connection of lesson 7 (`src/conn.rs`) and its table (`src/lib.rs`), driven directly:
//! a socketpair stands in for a client, and each test calls the handler as a loop would.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::socket::{AddressFamily, MsgFlags, Shutdown, SockFlag, SockType};
use nix::sys::socket::{recv, send, shutdown, socketpair};
use nonblocking_busy_server::conn::{ConnState, OUT_LIMIT, Ready, SCRATCH, Want};
use nonblocking_busy_server::{Conns, millis};
use server_common::cli::CommonArgs;
use server_common::net::LINGER;
use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};
use server_common::stats::Stats;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn table(proto: &str, idle: &str) -> Conns {
    let args = Args::parse_from(["t", "--proto", proto, "--idle-timeout", idle]);
    Conns::new("conn_test", &args.common, Stats::new_shared(None))
}

/// A connected pair of non-blocking stream sockets, the first for the table, the second
/// the client. Unix sockets behave like TCP here (partial writes, EAGAIN, EOF, shutdown);
/// TCP_NODELAY just fails on them, with one warning on stderr.
fn pair(conns: &mut Conns, now: Instant) -> (RawFd, OwnedFd) {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let (server, client) =
        socketpair(AddressFamily::Unix, SockType::Stream, None, flags).expect("socketpair");
    (conns.insert(server, now), client)
}

fn send_all(fd: &OwnedFd, data: &[u8]) {
    assert_eq!(
        send(fd.as_raw_fd(), data, MsgFlags::empty()),
        Ok(data.len())
    );
}

/// Whatever the client can read right now; `None` at EOF.
fn recv_now(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0; 1 << 20];
    match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(0) => None,
        Ok(n) => Some(buf[..n].to_vec()),
        Err(Errno::EAGAIN) => Some(Vec::new()),
        Err(e) => panic!("recv: {e}"),
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

#[test]
fn an_idle_connection_is_one_small_slot_and_no_heap() {
    let size = size_of::<Option<ConnState>>();
    println!("bytes per connection slot: {size}");
    assert!(size <= 256, "{size}");
    let now = Instant::now();
    let mut conns = table("http", "60");
    let (fd, client) = pair(&mut conns, now);
    assert_eq!(conns.get(fd).map(ConnState::heap_bytes), Some(0), "fresh");
    send_all(&client, GET);
    assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
    assert_eq!(recv_now(&client).as_deref(), Some(OK_KEEP_ALIVE));
    let c = conns.get(fd).expect("still open");
    assert_eq!(c.heap_bytes(), 0, "served, idle again, and no buffer kept");
    assert!(!c.input_pending(), "a short read means the socket is empty");
}

#[test]
fn a_table_for_worker_i_counts_into_slot_i() {
    let args = Args::parse_from(["t"]);
    let stats = Stats::new_shared(Some(3));
    let mut conns = Conns::new("conn_test", &args.common, stats).for_worker(2);
    let now = Instant::now();
    let (fd, client) = pair(&mut conns, now);
    send_all(&client, GET);
    assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
    assert_eq!(stats.per_worker(|c| &c.accepted), Some(vec![0, 0, 1]));
    assert_eq!(stats.per_worker(|c| &c.requests), Some(vec![0, 0, 1]));
}

#[test]
fn echo_stops_reading_over_the_limit_and_resumes_when_drained() {
    let now = Instant::now();
    let mut conns = table("echo", "60");
    let (fd, client) = pair(&mut conns, now);
    // The client writes until its socket is full and reads nothing.
    let chunk = vec![7u8; 16 * 1024];
    let mut written = 0;
    while send(client.as_raw_fd(), &chunk, MsgFlags::empty()).is_ok_and(|n| {
        written += n;
        n > 0
    }) {
        let want = conns.on_ready(fd, Ready::ALL, now);
        if want == Want::Write {
            break;
        }
        assert_ne!(want, Want::Close);
    }
    let c = conns.get(fd).expect("open");
    assert_eq!(c.want(), Want::Write, "over the limit: write interest only");
    assert!(
        c.owed() >= OUT_LIMIT && c.owed() < OUT_LIMIT + SCRATCH,
        "{}",
        c.owed()
    );
    // The client reads everything; the server drains and reads again.
    let mut back = 0;
    for _ in 0..10_000 {
        back += recv_now(&client).expect("no EOF").len();
        conns.on_ready(fd, Ready::ALL, now);
        let left = recv_now(&client).expect("no EOF").len();
        back += left;
        if back == written && conns.get(fd).is_some_and(|c| c.owed() == 0) {
            break;
        }
    }
    assert_eq!(back, written, "every byte came back");
    assert_eq!(conns.get(fd).map(ConnState::want), Some(Want::Read));
    assert_eq!(conns.get(fd).map(ConnState::heap_bytes), Some(0));
}

#[test]
fn echo_half_close_flushes_then_closes() {
    let now = Instant::now();
    let mut conns = table("echo", "60");
    let (fd, client) = pair(&mut conns, now);
    send_all(&client, b"bye");
    shutdown(client.as_raw_fd(), Shutdown::Write).expect("half-close");
    let ready = Ready {
        hup: true,
        ..Ready::READ
    };
    assert_eq!(conns.on_ready(fd, ready, now), Want::Close);
    assert_eq!(recv_now(&client).as_deref(), Some(&b"bye"[..]));
}

#[test]
fn a_close_with_unread_bytes_lingers_then_ends_at_eof_or_deadline() {
    let now = Instant::now();
    let mut conns = table("http", "60");
    let (fd, client) = pair(&mut conns, now);
    let mut req = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 1000]);
    send_all(&client, &req);
    assert_eq!(
        conns.on_ready(fd, Ready::READ, now),
        Want::Read,
        "lingering"
    );
    // The client gets the answer, then EOF (our FIN), not a reset.
    assert_eq!(recv_now(&client).as_deref(), Some(OK_CLOSE));
    assert_eq!(recv_now(&client), None);
    // More junk is discarded; the client's EOF ends the linger.
    send_all(&client, &[b'y'; 500]);
    assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
    drop(client);
    assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Close);
    drop(conns.remove(fd));

    // A client that never closes: the sweep ends the linger after LINGER.
    let (fd, _client) = pair(&mut conns, now);
    send_all(&_client, &req);
    assert_eq!(conns.on_ready(fd, Ready::READ, now), Want::Read);
    assert!(conns.timeout(now).is_some_and(|t| t <= LINGER));
    assert!(conns.sweep(now + LINGER / 2).is_empty());
    let gone = conns.sweep(now + LINGER);
    assert_eq!(gone.len(), 1);
    assert!(conns.get(fd).is_none());
}

#[test]
fn the_sweep_closes_silent_connections_only() {
    let now = Instant::now();
    let mut conns = table("http", "1");
    let (quiet, _c1) = pair(&mut conns, now);
    let (busy, c2) = pair(&mut conns, now);
    assert_eq!(conns.timeout(now), Some(Duration::from_secs(1)));
    let later = now + Duration::from_millis(700);
    send_all(&c2, GET);
    conns.on_ready(busy, Ready::READ, later);
    let gone = conns.sweep(now + Duration::from_secs(1));
    assert_eq!(gone.len(), 1);
    assert!(conns.get(quiet).is_none() && conns.get(busy).is_some());
    assert_eq!(conns.len(), 1);
    // The next sweep is due when the busy one has been silent for a second.
    assert_eq!(conns.timeout(later), Some(Duration::from_secs(1)));
}

#[test]
fn no_idle_timeout_and_nothing_lingering_means_no_timeout() {
    let now = Instant::now();
    let mut conns = table("http", "0");
    let (_fd, _client) = pair(&mut conns, now);
    assert_eq!(conns.timeout(now), None);
    assert_eq!(millis(None), PollTimeout::NONE);
    assert_eq!(
        millis(Some(Duration::from_micros(1))),
        PollTimeout::from(1u8)
    );
}

#[test]
fn a_reset_client_closes_its_connection() {
    let now = Instant::now();
    let mut conns = table("echo", "60");
    let (fd, client) = pair(&mut conns, now);
    send_all(&client, b"x");
    drop(client); // unread "x" echoed into a closed socket: EPIPE / ECONNRESET
    let mut want = Want::Read;
    for _ in 0..3 {
        want = conns.on_ready(fd, Ready::ALL, now);
    }
    assert_eq!(want, Want::Close);
}
