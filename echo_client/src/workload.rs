//! What a connection sends and how it checks what comes back: the two workloads, echo and
//! HTTP, behind one small trait so the event loop (`engine.rs`) is written once for both.
//!
//! Neither allocates per message. An echo message is *virtual*: a 24-byte header kept in the
//! connection plus a slice of one pattern shared by the whole process, so it costs no copy to
//! send and no stored copy to check — the reply is compared in place, chunk by chunk, against
//! the same two pieces.

use crate::cli::Mix;
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
    /// Bytes in the current message (the request, for HTTP), once [`begin`](Self::begin) has
    /// prepared it.
    fn len(&self, st: &Self::State) -> usize;
    /// Prepares message `seq` of connection `id`, stamped with send time `t` (ns).
    fn begin(&self, st: &mut Self::State, id: u64, seq: u64, t: u64);
    /// The bytes of the current message from offset `from` on, as two slices (either may be
    /// empty), ready for one sendmsg(2).
    fn unsent<'a>(&'a self, st: &'a Self::State, from: usize) -> [&'a [u8]; 2];
    /// Checks `input`, the next bytes of the reply; `sent` bytes of the message are out so far.
    fn receive(&self, st: &mut Self::State, sent: usize, input: &[u8]) -> Reply;
    /// Whether the current message is one of `--mix`'s expensive requests.
    fn expensive(&self, _st: &Self::State) -> bool {
        false
    }
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

    fn len(&self, _st: &EchoState) -> usize {
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

/// `GET / HTTP/1.1` requests, one in flight per connection (no pipelining, as wrk) — and with
/// `--mix EVERY:PATH`, `GET PATH HTTP/1.1` as every EVERY-th request of each connection slot.
/// Both requests are built once; a connection only remembers which one is in flight.
pub struct Http {
    request: Vec<u8>,
    /// `--mix`: the expensive request, and which requests are expensive.
    mix: Option<(Mix, Vec<u8>)>,
}

/// An HTTP connection's request in flight: the response parser, and which request it answers.
#[derive(Default)]
pub struct HttpState {
    response: Response,
    expensive: bool,
}

impl Http {
    /// `close`: ask the server to close after each response (`Connection: close`). `mix`: send
    /// every EVERY-th request of a connection to its path instead of `/`.
    pub fn new(host: &str, close: bool, mix: Option<&Mix>) -> Http {
        let connection = if close { "Connection: close\r\n" } else { "" };
        let request = |target: &str| {
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n").into_bytes()
        };
        Http {
            request: request("/"),
            mix: mix.map(|m| (m.clone(), request(&m.path))),
        }
    }

    fn request(&self, st: &HttpState) -> &[u8] {
        match &self.mix {
            Some((_, expensive)) if st.expensive => expensive,
            _ => &self.request,
        }
    }
}

impl Workload for Http {
    type State = HttpState;
    const UNEXPECTED: Failure = Failure::BadHttp;

    fn len(&self, st: &HttpState) -> usize {
        self.request(st).len()
    }

    fn begin(&self, st: &mut HttpState, _id: u64, seq: u64, _t: u64) {
        st.response.reset();
        st.expensive = self.mix.as_ref().is_some_and(|(m, _)| m.is_expensive(seq));
    }

    fn unsent<'a>(&'a self, st: &'a HttpState, from: usize) -> [&'a [u8]; 2] {
        [&self.request(st)[from..], &[]]
    }

    fn expensive(&self, st: &HttpState) -> bool {
        st.expensive
    }

    fn receive(&self, st: &mut HttpState, _sent: usize, input: &[u8]) -> Reply {
        let st = &mut st.response;
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
        let w = Http::new("127.0.0.1:8080", false, None);
        let mut st = HttpState::default();
        w.begin(&mut st, 0, 0, 0);
        let len = w.len(&st);
        assert_eq!(
            w.unsent(&st, 0)[0],
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
        let ok = server_common::responses::OK_KEEP_ALIVE;
        assert_eq!(w.receive(&mut st, len, ok), Reply::Done { close: false });
        w.begin(&mut st, 0, 1, 0);
        let mut two = ok.to_vec();
        two.extend_from_slice(ok);
        assert_eq!(
            w.receive(&mut st, len, &two),
            Reply::Failed(Failure::BadHttp)
        );
        w.begin(&mut st, 0, 2, 0);
        let nf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            w.receive(&mut st, len, nf),
            Reply::Failed(Failure::HttpStatus)
        );
        let close = Http::new("h", true, None);
        assert!(close.unsent(&st, 0)[0].ends_with(b"Connection: close\r\n\r\n"));
    }

    #[test]
    fn mixed_http_sends_every_nth_request_of_a_connection_to_the_path() {
        let mix = crate::cli::parse_mix("3:/work/5").unwrap();
        let w = Http::new("h:1", false, Some(&mix));
        let ok = server_common::responses::OK_KEEP_ALIVE;
        let cheap = b"GET / HTTP/1.1\r\nHost: h:1\r\n\r\n";
        let dear = b"GET /work/5 HTTP/1.1\r\nHost: h:1\r\n\r\n";
        // Two connections, each with its own state and its own count.
        let (mut a, mut b) = (HttpState::default(), HttpState::default());
        let mut sent = Vec::new();
        for seq in 0..6 {
            for (id, st) in [(0, &mut a), (1, &mut b)] {
                w.begin(st, id, seq, 0);
                let req = w.unsent(st, 0)[0].to_vec();
                assert_eq!(w.len(st), req.len());
                assert_eq!(w.expensive(st), req == dear);
                // The same response verifies both kinds, exactly.
                assert_eq!(w.receive(st, req.len(), ok), Reply::Done { close: false });
                sent.push((id, seq, req == dear));
                assert!(req == cheap || req == dear);
            }
        }
        let expensive: Vec<(u64, u64)> = sent
            .iter()
            .filter(|s| s.2)
            .map(|&(id, seq, _)| (id, seq))
            .collect();
        assert_eq!(expensive, [(0, 2), (1, 2), (0, 5), (1, 5)]);
        // A partial send continues in the expensive request.
        w.begin(&mut a, 0, 8, 0);
        assert_eq!(w.unsent(&a, 4)[0], &dear[4..]);
        // With --close both requests ask for the close.
        let w = Http::new("h", true, Some(&mix));
        w.begin(&mut a, 0, 2, 0);
        assert!(w.unsent(&a, 0)[0].starts_with(b"GET /work/5 HTTP/1.1\r\n"));
        assert!(w.unsent(&a, 0)[0].ends_with(b"Connection: close\r\n\r\n"));
        // Without --mix nothing is expensive.
        let plain = Http::new("h", false, None);
        for seq in 0..10 {
            plain.begin(&mut a, 0, seq, 0);
            assert!(!plain.expensive(&a));
        }
    }
}
