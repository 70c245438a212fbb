//! The protocol's properties, as checks a fuzzer (`fuzz/`, cargo-fuzz) and `cargo test` (the
//! corpus replay in `tests/corpus.rs`) both run. Each takes arbitrary bytes and panics when a
//! property fails:
//!
//! - **never panics**, whatever the bytes;
//! - **chunking-invariant**: the stream fed in one read, or cut into reads anywhere (the cuts
//!   come from the input's first two bytes), gives the same output, counts and verdict;
//! - **framing consistent** (HTTP): the output is a sequence of whole responses from the known
//!   set, one `200` per counted request, at most one refusal and nothing after it or after a
//!   closing response;
//! - **bounded**: a session never holds more than `MAX_HEAD` bytes of an unfinished head;
//! - **echo is the identity**.

use std::sync::atomic::Ordering::Relaxed;

use crate::cli::Proto;
use crate::http::{
    CONTINUE, HEAD_CLOSE, HEAD_KEEP_ALIVE, HEAD_KEEP_ALIVE_10, MAX_HEAD, OK_CLOSE, OK_KEEP_ALIVE,
    OK_KEEP_ALIVE_10, Refusal,
};
use crate::proto::{Config, Flow, Session};
use crate::stats::Counters;

/// Read sizes derived from two seed bytes: a small xorshift, sizes 1 to 64 (mostly small, to
/// split heads and terminators everywhere).
fn cuts(seed: u16, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed) | 0x1_0000;
    let mut at = 0;
    let mut cuts = Vec::new();
    while at < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        at += 1 + (x % 64) as usize;
        cuts.push(at.min(len));
    }
    cuts
}

/// What feeding a stream produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    requests: u64,
    errors: u64,
    bytes: u64,
    closed: bool,
}

/// One set of counters per thread, reset before each feed: `Counters::detached` leaks one per
/// call (sessions hold a `&'static`), which a fuzzer's millions of runs must not do.
fn counters() -> &'static Counters {
    thread_local! {
        static COUNTERS: &'static Counters = Counters::detached();
    }
    let c = COUNTERS.with(|c| *c);
    for field in [&c.accepted, &c.requests, &c.errors, &c.bytes] {
        field.store(0, Relaxed);
    }
    c
}

fn feed(proto: Proto, stream: &[u8], cuts: &[usize]) -> Outcome {
    let counters = counters();
    let mut session = Session::new(Config::new(proto), counters);
    let mut out = Vec::new();
    let mut closed = false;
    let mut start = 0;
    for &end in cuts {
        // As a server does: feed the read, then work off any backlog before reading again.
        let mut flow = session.feed(&stream[start..end], &mut out);
        while flow == Flow::Continue && session.backlog() {
            flow = session.feed(&[], &mut out);
        }
        if let Flow::Close { .. } = flow {
            closed = true;
            break;
        }
        assert!(
            session.buffered() <= MAX_HEAD,
            "a session held {} bytes of a head",
            session.buffered()
        );
        start = end;
    }
    Outcome {
        out,
        requests: counters.requests.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        bytes: counters.bytes.load(Relaxed),
        closed,
    }
}

/// Every response a session can produce, built once.
fn known() -> &'static [Vec<u8>] {
    static KNOWN: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut all: Vec<Vec<u8>> = [
            OK_KEEP_ALIVE,
            OK_KEEP_ALIVE_10,
            OK_CLOSE,
            HEAD_KEEP_ALIVE,
            HEAD_KEEP_ALIVE_10,
            HEAD_CLOSE,
            CONTINUE,
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        for r in [
            Refusal::BadRequest,
            Refusal::RequestTimeout,
            Refusal::HeadTooLarge,
            Refusal::NotImplemented,
            Refusal::VersionNotSupported,
        ] {
            let mut v = Vec::new();
            r.write_to(&mut v);
            all.push(v);
        }
        all
    })
}

/// Splits HTTP output into responses from the known set; panics on anything else.
fn responses(mut out: &[u8]) -> Vec<&'static [u8]> {
    let known = known();
    let mut found = Vec::new();
    while !out.is_empty() {
        // Longest match first: a HEAD response is a prefix of the matching GET response.
        let r = known
            .iter()
            .map(Vec::as_slice)
            .filter(|k| out.starts_with(k))
            .max_by_key(|k| k.len())
            .unwrap_or_else(|| {
                panic!(
                    "output is not a known response: {:?}",
                    String::from_utf8_lossy(&out[..out.len().min(120)])
                )
            });
        found.push(r);
        out = &out[r.len()..];
    }
    found
}

/// The HTTP properties. `data[..2]` seeds the read sizes; the rest is the client's stream.
pub fn http_properties(data: &[u8]) {
    let (seed, stream) = split(data);
    let whole = feed(Proto::Http, stream, &[stream.len()]);
    let chunked = feed(Proto::Http, stream, &cuts(seed, stream.len()));
    assert_eq!(
        whole, chunked,
        "the answer depends on how the bytes were split into reads"
    );

    let rs = responses(&whole.out);
    let oks = rs.iter().filter(|r| r.starts_with(b"HTTP/1.1 200")).count() as u64;
    let refused = rs
        .iter()
        .filter(|r| r.starts_with(b"HTTP/1.1 4") || r.starts_with(b"HTTP/1.1 5"))
        .count() as u64;
    assert_eq!(oks, whole.requests, "one 200 per counted request");
    assert_eq!(refused, whole.errors, "one refusal per counted error");
    assert!(
        refused <= 1,
        "at most one refusal: it closes the connection"
    );
    // A closing response or a refusal ends the output, and the connection.
    if let Some(i) = rs.iter().position(|r| {
        *r == OK_CLOSE
            || *r == HEAD_CLOSE
            || r.starts_with(b"HTTP/1.1 4")
            || r.starts_with(b"HTTP/1.1 5")
    }) {
        assert_eq!(i, rs.len() - 1, "nothing may follow a closing response");
        assert!(whole.closed, "a closing response closes");
    } else {
        assert!(!whole.closed, "closed without saying so");
    }
}

/// The echo properties: the output is the input, whatever the reads.
pub fn echo_properties(data: &[u8]) {
    let (seed, stream) = split(data);
    let chunked = feed(Proto::Echo, stream, &cuts(seed, stream.len()));
    assert_eq!(chunked.out, stream);
    assert_eq!(chunked.bytes, stream.len() as u64);
    assert!(!chunked.closed);
}

fn split(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_hold_for_ordinary_traffic() {
        http_properties(b"\x07\x01GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.0\r\n\r\n");
        http_properties(b"\x00\x00POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n");
        http_properties(b"\xff\xffBAD\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        echo_properties(b"\x01\x02any bytes \x00\xff at all");
    }

    #[test]
    #[should_panic(expected = "not a known response")]
    fn the_framing_check_rejects_foreign_bytes() {
        responses(b"HTTP/1.1 200 OK\r\n\r\n");
    }
}
