//! What a connection sends and how it checks what comes back: the two workloads, echo and
//! HTTP, behind one small trait so the event loop (`engine.rs`) is written once for both.
//!
//! Neither allocates per message. An echo message is *virtual*: a 24-byte header kept in the
//! connection plus a slice of one pattern shared by the whole process, so it costs no copy to
//! send and no stored copy to check — the reply is compared in place, chunk by chunk, against
//! the same two pieces.

use crate::http::{Parsed, Response};
use crate::stats::Failure;

/// What the bytes received so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The reply is not complete yet.
    More,
    /// The reply is complete and correct. `close`: the server said it closes now.
    Done { close: bool },
    /// The reply is wrong.
    Failed(Failure),
}

/// One protocol's messages. `State` is the per-connection part, kept between reads.
pub trait Workload {
    type State: Default;
    /// What bytes arriving while no reply is expected count as.
    const UNEXPECTED: Failure;
    /// Bytes in every message (the request, for HTTP).
    fn len(&self) -> usize;
    /// Prepares message `seq` of connection `id`, stamped with send time `t` (ns).
    fn begin(&self, st: &mut Self::State, id: u64, seq: u64, t: u64);
    /// The bytes of the current message from offset `from` on, as two slices (either may be
    /// empty), ready for one sendmsg(2).
    fn unsent<'a>(&'a self, st: &'a Self::State, from: usize) -> [&'a [u8]; 2];
    /// Checks `input`, the next bytes of the reply; `sent` bytes of the message are out so far.
    fn receive(&self, st: &mut Self::State, sent: usize, input: &[u8]) -> Reply;
}

// ─── echo ───────────────────────────────────────────────────────────────────────────────────

/// Header bytes: connection id, sequence number, send time; little-endian u64 each.
pub const HEADER: usize = 24;

/// The pattern's period, a prime, so body offsets of consecutive messages do not line up.
const PERIOD: usize = 4093;

/// Echo messages of a fixed size:
///
/// ```text
///  0       8       16      24                                   size
///  ┌───────┬───────┬───────┬──────────────────────────────────────┐
///  │conn id│  seq  │ t (ns)│ pattern[rot .. rot + size - 24]      │   rot = mix(id, seq) % 4093
///  └───────┴───────┴───────┴──────────────────────────────────────┘
/// ```
///
/// Messages shorter than 24 bytes are the header's first bytes. A server that mixes up
/// connections, repeats an old message, drops, adds or flips a byte, fails the comparison.
pub struct Echo {
    size: usize,
    pattern: Vec<u8>,
}

/// An echo connection's message in flight.
#[derive(Default)]
pub struct EchoState {
    header: [u8; HEADER],
    rot: u32,
    /// Bytes of the reply verified so far.
    got: usize,
}

impl Echo {
    pub fn new(size: usize) -> Echo {
        // xorshift64: a fixed, incompressible-looking pattern, the same in every process.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let pattern = (0..size.saturating_sub(HEADER) + PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Echo { size, pattern }
    }

    fn body(&self, st: &EchoState) -> &[u8] {
        let rot = st.rot as usize;
        &self.pattern[rot..rot + self.size.saturating_sub(HEADER)]
    }

    fn header<'a>(&self, st: &'a EchoState) -> &'a [u8] {
        &st.header[..self.size.min(HEADER)]
    }
}

impl Workload for Echo {
    type State = EchoState;
    const UNEXPECTED: Failure = Failure::Mismatch;

    fn len(&self) -> usize {
        self.size
    }

    fn begin(&self, st: &mut EchoState, id: u64, seq: u64, t: u64) {
        st.header[0..8].copy_from_slice(&id.to_le_bytes());
        st.header[8..16].copy_from_slice(&seq.to_le_bytes());
        st.header[16..24].copy_from_slice(&t.to_le_bytes());
        // A cheap mix (splitmix64's finaliser) so neighbouring messages start at unrelated
        // offsets of the pattern.
        let mut z = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        st.rot = ((z ^ (z >> 31)) % PERIOD as u64) as u32;
        st.got = 0;
    }

    fn unsent<'a>(&'a self, st: &'a EchoState, from: usize) -> [&'a [u8]; 2] {
        let (header, body) = (self.header(st), self.body(st));
        if from < header.len() {
            [&header[from..], body]
        } else {
            [&body[from - header.len()..], &[]]
        }
    }

    fn receive(&self, st: &mut EchoState, sent: usize, input: &[u8]) -> Reply {
        let (start, end) = (st.got, st.got + input.len());
        // The server cannot echo what we have not sent yet.
        if end > sent {
            return Reply::Failed(Failure::Mismatch);
        }
        let (header, body) = (self.header(st), self.body(st));
        // The part of `input` that falls on the header, then the part on the body: two memcmp.
        let split = header.len().saturating_sub(start).min(input.len());
        let (on_header, on_body) = input.split_at(split);
        let body_from = start.max(header.len()) - header.len();
        if on_header != &header[start.min(header.len())..][..split]
            || on_body != &body[body_from..body_from + on_body.len()]
        {
            return Reply::Failed(Failure::Mismatch);
        }
        st.got = end;
        if end == self.size {
            Reply::Done { close: false }
        } else {
            Reply::More
        }
    }
}

// ─── http ───────────────────────────────────────────────────────────────────────────────────

/// `GET / HTTP/1.1` requests, one in flight per connection (no pipelining, as wrk).
pub struct Http {
    request: Vec<u8>,
}

impl Http {
    /// `close`: ask the server to close after each response (`Connection: close`).
    pub fn new(host: &str, close: bool) -> Http {
        let connection = if close { "Connection: close\r\n" } else { "" };
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n").into_bytes();
        Http { request }
    }
}

impl Workload for Http {
    type State = Response;
    const UNEXPECTED: Failure = Failure::BadHttp;

    fn len(&self) -> usize {
        self.request.len()
    }

    fn begin(&self, st: &mut Response, _id: u64, _seq: u64, _t: u64) {
        st.reset();
    }

    fn unsent<'a>(&'a self, _st: &'a Response, from: usize) -> [&'a [u8]; 2] {
        [&self.request[from..], &[]]
    }

    fn receive(&self, st: &mut Response, _sent: usize, input: &[u8]) -> Reply {
        match st.feed(input) {
            Ok(Parsed::More) => Reply::More,
            // Bytes after the response: we never pipeline, so nothing else may come.
            Ok(Parsed::Done { used }) if used < input.len() => Reply::Failed(Failure::BadHttp),
            Ok(Parsed::Done { .. }) if !(200..300).contains(&st.status) => {
                Reply::Failed(Failure::HttpStatus)
            }
            Ok(Parsed::Done { .. }) => Reply::Done { close: st.close },
            Err(_) => Reply::Failed(Failure::BadHttp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(w: &Echo, st: &EchoState) -> Vec<u8> {
        w.unsent(st, 0).concat()
    }

    #[test]
    fn echo_messages_verify_in_any_split_and_differ_by_id_and_seq() {
        for size in [1, 5, 24, 25, 64, 5000] {
            let w = Echo::new(size);
            let mut st = EchoState::default();
            w.begin(&mut st, 7, 3, 123_456);
            let m = message(&w, &st);
            assert_eq!(m.len(), size);
            // unsent from every offset is the message's tail.
            for from in 0..size {
                assert_eq!(w.unsent(&st, from).concat(), m[from..]);
            }
            // Any split into two reads verifies.
            for cut in 0..=size {
                w.begin(&mut st, 7, 3, 123_456);
                let first = w.receive(&mut st, size, &m[..cut]);
                let second = w.receive(&mut st, size, &m[cut..]);
                assert_eq!(
                    second,
                    Reply::Done { close: false },
                    "size {size} cut {cut}"
                );
                assert!(cut == size || first == Reply::More);
            }
            // A flipped byte anywhere fails.
            for at in 0..size {
                w.begin(&mut st, 7, 3, 123_456);
                let mut bad = m.clone();
                bad[at] ^= 0x20;
                assert_eq!(
                    w.receive(&mut st, size, &bad),
                    Reply::Failed(Failure::Mismatch)
                );
            }
            // Bytes beyond what was sent fail.
            w.begin(&mut st, 7, 3, 123_456);
            assert_eq!(
                w.receive(&mut st, size - 1, &m),
                Reply::Failed(Failure::Mismatch)
            );
        }
        let w = Echo::new(64);
        let mut a = EchoState::default();
        let mut b = EchoState::default();
        w.begin(&mut a, 1, 2, 0);
        w.begin(&mut b, 1, 3, 0);
        assert_ne!(message(&w, &a)[HEADER..], message(&w, &b)[HEADER..]);
        w.begin(&mut b, 2, 2, 0);
        assert_ne!(message(&w, &a)[..8], message(&w, &b)[..8]);
    }

    #[test]
    fn http_requests_and_replies() {
        let w = Http::new("127.0.0.1:8080", false);
        let mut st = Response::default();
        w.begin(&mut st, 0, 0, 0);
        assert_eq!(
            w.unsent(&st, 0)[0],
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
        let ok = server_common::responses::OK_KEEP_ALIVE;
        assert_eq!(
            w.receive(&mut st, w.len(), ok),
            Reply::Done { close: false }
        );
        w.begin(&mut st, 0, 1, 0);
        let mut two = ok.to_vec();
        two.extend_from_slice(ok);
        assert_eq!(
            w.receive(&mut st, w.len(), &two),
            Reply::Failed(Failure::BadHttp)
        );
        w.begin(&mut st, 0, 2, 0);
        let nf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            w.receive(&mut st, w.len(), nf),
            Reply::Failed(Failure::HttpStatus)
        );
        let close = Http::new("h", true);
        assert!(close.unsent(&st, 0)[0].ends_with(b"Connection: close\r\n\r\n"));
    }
}
