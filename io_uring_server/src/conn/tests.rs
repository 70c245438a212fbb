//! Unit tests of the connections (`conn.rs`), with no ring: the fixture below plays the kernel.

use super::*;
use crate::buf_ring::BUF_SIZE;
use crate::token::{token, untoken};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use server_common::cli::Proto;
use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

/// A table with one connection on one end of a Unix socket pair (only shutdown(2) touches
/// the socket here; TCP_NODELAY fails on it, with one warning), driven by hand: the test
/// plays the kernel, completing what `drive` asked to submit.
struct Fixture {
    conns: Conns,
    slot: u32,
    generation: u32,
    client: OwnedFd,
    now: Instant,
}

impl Fixture {
    /// The connection, with its first recv already asked for.
    fn new(proto: Proto, idle_timeout: u64) -> Fixture {
        let args = CommonArgs {
            addr: ([127, 0, 0, 1], 0).into(),
            proto,
            backlog: 1,
            work: 0,
            delay_ms: 0,
            idle_timeout,
            head_timeout: 10,
        };
        let mut conns = Conns::new(&args, Stats::new_shared(None));
        let (client, now) = (Fixture::insert(&mut conns), Instant::now());
        let mut f = Fixture {
            conns,
            slot: client.1,
            generation: client.2,
            client: client.0,
            now,
        };
        assert!(f.drive().recv, "a new connection starts with a recv");
        f
    }

    /// Inserts one more connection: its client end, slot and generation.
    fn insert(conns: &mut Conns) -> (OwnedFd, u32, u32) {
        let flags = SockFlag::SOCK_CLOEXEC;
        let (server, client) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, flags).expect("socketpair");
        let (slot, generation) = conns.insert(server, Instant::now());
        (client, slot, generation)
    }

    fn conn(&mut self) -> &mut ConnState {
        self.conns
            .get_mut(self.slot, self.generation)
            .expect("still open")
    }

    fn drive(&mut self) -> Next {
        self.conns.drive(self.slot, self.generation, self.now)
    }

    /// The recv completes with `got`; then what to submit next.
    fn recv(&mut self, got: Result<&[u8], Errno>) -> Next {
        let now = self.now;
        self.conn().on_recv(got, now);
        self.drive()
    }

    /// The send completes, the kernel having taken `n` bytes; then what to submit next.
    fn sent(&mut self, n: usize) -> Next {
        let now = self.now;
        self.conn().on_send(n as i32, now);
        self.drive()
    }

    fn is_freed(&mut self) -> bool {
        self.conns.get_mut(self.slot, self.generation).is_none()
    }
}

/// The bytes a `Next` asks to send.
fn to_send(next: &Next) -> Vec<u8> {
    let (ptr, len) = next.send.expect("a send");
    // SAFETY: the connection is alive and, by the rule under test, leaves its `sending`
    // buffer untouched while the send is in flight — which the tests below also check.
    unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

#[test]
fn tokens_carry_operation_slot_and_generation() {
    for (op, slot, generation) in [(Op::Send, 0xab_cdef, u32::MAX), (Op::Recv, 0, 0)] {
        assert_eq!(untoken(token(op, slot, generation)), (op, slot, generation));
    }
    assert_eq!(untoken(token(Op::Cancel, 7, 3)).0, Op::Cancel);
}

#[test]
fn an_idle_connection_is_one_small_slot_and_no_buffer() {
    let size = size_of::<Slot>();
    println!("bytes per connection slot: {size}");
    assert!(size <= 256, "{size}");
    let mut f = Fixture::new(Proto::Http, 60);
    let (_client, slot, generation) = Fixture::insert(&mut f.conns);
    let next = f.conns.drive(slot, generation, f.now);
    assert!(
        next.recv && next.send.is_none(),
        "a recv, which names no buffer"
    );
    assert_eq!(next.cancel, [None, None]);
}

#[test]
fn answers_wait_behind_a_send_in_flight_and_partial_sends_resume() {
    let mut f = Fixture::new(Proto::Http, 60);
    let first = f.recv(Ok(GET));
    assert_eq!(to_send(&first), OK_KEEP_ALIVE);
    assert!(
        first.recv,
        "room for more input while the answer is in flight"
    );

    // Two more requests arrive while the kernel still reads the first answer.
    let next = f.recv(Ok(&GET.repeat(2)));
    assert!(next.send.is_none(), "one send in flight at a time");
    assert_eq!(
        to_send(&first),
        OK_KEEP_ALIVE,
        "the in-flight bytes were not touched"
    );

    // The kernel took 10 bytes: the rest of the same buffer goes next.
    let rest = f.sent(10);
    let moved = first.send.map(|(p, _)| p.wrapping_add(10));
    assert_eq!(
        rest.send.map(|(p, _)| p),
        moved,
        "the same buffer, 10 bytes on"
    );
    assert_eq!(to_send(&rest), &OK_KEEP_ALIVE[10..]);
    // Then both queued answers, in one send.
    let queued = f.sent(OK_KEEP_ALIVE.len() - 10);
    assert_eq!(to_send(&queued), OK_KEEP_ALIVE.repeat(2));
}

#[test]
fn owing_the_limit_stops_recv_until_the_client_takes_it() {
    let mut f = Fixture::new(Proto::Echo, 60);
    let chunk = vec![7u8; BUF_SIZE];
    let mut reads = 1; // (the first chunk's echo goes in flight at once)
    while f.recv(Ok(&chunk)).recv {
        reads += 1;
    }
    assert_eq!(reads, OUT_LIMIT / BUF_SIZE, "no recv once owing the limit");
    assert_eq!(f.conn().owed(), OUT_LIMIT);
    let next = f.sent(BUF_SIZE); // the client took the first chunk
    assert!(next.recv, "under the limit again: a recv");
    assert_eq!(
        to_send(&next).len(),
        OUT_LIMIT - BUF_SIZE,
        "the rest, in one send"
    );
}

#[test]
fn echo_half_close_flushes_then_frees() {
    let mut f = Fixture::new(Proto::Echo, 60);
    assert_eq!(to_send(&f.recv(Ok(b"bye"))), b"bye");
    let next = f.recv(Ok(b"")); // the client's EOF
    assert!(
        !next.recv && next.send.is_none(),
        "flushing: wait for the send"
    );
    assert!(!f.is_freed(), "not freed: a send in flight");
    f.sent(3);
    assert!(f.is_freed(), "flushed: freed");
}

#[test]
fn closing_cancels_once_frees_after_the_last_completion_and_stales_old_tokens() {
    let mut f = Fixture::new(Proto::Http, 60); // a recv in flight
    f.conn().close();
    assert_eq!(
        f.drive().cancel,
        [Some(Op::Recv), None],
        "cancel what is in flight"
    );
    assert_eq!(f.drive().cancel, [None, None], "once");
    assert!(!f.is_freed(), "the kernel still holds a recv");
    f.recv(Err(Errno::ECANCELED));
    assert!(f.is_freed(), "freed");

    // The slot is reused at once, under a new generation: the old tokens are stale.
    let (_c2, slot, newer) = Fixture::insert(&mut f.conns);
    assert_eq!((slot, newer), (f.slot, f.generation + 1));
    assert!(
        f.is_freed() && f.drive().send.is_none(),
        "the old token finds nothing"
    );
    assert!(f.conns.get_mut(slot, newer).is_some());
}

#[test]
fn a_close_with_unread_bytes_half_closes_then_lingers_until_eof_or_deadline() {
    let mut f = Fixture::new(Proto::Http, 60);
    let mut req = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 100]);
    let next = f.recv(Ok(&req));
    assert_eq!(to_send(&next), OK_CLOSE);
    assert!(!next.recv, "flushing: no more input taken");
    assert!(f.sent(OK_CLOSE.len()).recv, "lingering: read and discard");
    let n = nix::unistd::read(&f.client, &mut [0u8; 8]).expect("read");
    assert_eq!(n, 0, "the client sees our FIN (shutdown SHUT_WR)");
    let now = f.now;
    assert!(f.conns.next_sweep().is_some_and(|t| t <= now + LINGER));
    assert!(f.conns.sweep(now + LINGER / 2).is_empty());
    assert_eq!(f.conns.sweep(now + LINGER), vec![(f.slot, f.generation)]);
    assert_eq!(
        f.drive().cancel,
        [Some(Op::Recv), None],
        "its recv is cancelled"
    );
}

#[test]
fn the_sweep_closes_silent_connections_only() {
    let mut f = Fixture::new(Proto::Http, 1); // the quiet one
    let (_c2, busy, g2) = Fixture::insert(&mut f.conns);
    let start = f.now;
    f.conns.drive(busy, g2, start);
    let deadline = f.conns.next_sweep().expect("a deadline");
    assert!(deadline <= Instant::now() + Duration::from_secs(1));
    let later = start + Duration::from_millis(700);
    f.conns
        .get_mut(busy, g2)
        .expect("open")
        .on_recv(Ok(GET), later);
    let swept = f.conns.sweep(deadline + Duration::from_millis(1));
    assert_eq!(swept, vec![(f.slot, f.generation)], "only the quiet one");
    assert!(
        f.conns
            .next_sweep()
            .is_some_and(|t| t >= later + Duration::from_secs(1))
    );
}
