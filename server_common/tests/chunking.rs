//! Property: a session's answers do not depend on how the client's bytes were split into
//! reads. Any stream — valid requests, or valid requests followed by garbage — fed in one piece
//! or in arbitrary chunks (down to one byte) gives the same output bytes, the same counts and
//! the same open/closed outcome.

use proptest::prelude::*;
use server_common::cli::Proto;
use server_common::proto::{Config, Defer, Flow, Session};
use server_common::stats::Counters;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    minor: u8,
    connection: Option<&'static str>,
    body: Vec<u8>,
    expect: bool,
    lf_only: bool,
    /// Send the body chunked (HTTP/1.1 only), in chunks of this size.
    chunked: Option<usize>,
}

fn req() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "OPTIONS"]),
        prop_oneof![
            "/[a-z0-9/?=&.%-]{0,30}",
            "/work/[0-9]{1,2}", // a mixed workload's costly request (docs/contract.md §5)
        ],
        prop::sample::select(vec![0u8, 1]),
        prop::option::weighted(
            0.2,
            prop::sample::select(vec!["close", "keep-alive", "Keep-Alive, foo"]),
        ),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.3, 1usize..20),
    )
        .prop_map(
            |(method, path, minor, connection, body, expect, lf_only, chunked)| Req {
                method,
                path,
                minor,
                connection,
                body,
                expect,
                lf_only,
                // Transfer codings are refused in HTTP/1.0 (RFC 9112 §6.1).
                chunked: chunked.filter(|_| minor == 1),
            },
        )
}

fn encode(r: &Req) -> Vec<u8> {
    let nl = if r.lf_only { "\n" } else { "\r\n" };
    let mut s = format!(
        "{} {} HTTP/1.{}{nl}Host: test{nl}",
        r.method, r.path, r.minor
    );
    if let Some(c) = r.connection {
        s += &format!("Connection: {c}{nl}");
    }
    if let Some(size) = r.chunked {
        s += &format!("Transfer-Encoding: chunked{nl}{nl}");
        let mut bytes = s.into_bytes();
        for chunk in r.body.chunks(size) {
            bytes.extend_from_slice(format!("{:x}{nl}", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(nl.as_bytes());
        }
        bytes.extend_from_slice(format!("0{nl}{nl}").as_bytes());
        return bytes;
    }
    if !r.body.is_empty() {
        s += &format!("Content-Length: {}{nl}", r.body.len());
        if r.expect {
            s += &format!("Expect: 100-continue{nl}");
        }
    }
    s += nl;
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(&r.body);
    bytes
}

/// Feeds `stream` cut at `cuts`; returns output, requests, errors, and whether it closed.
fn run(proto: Proto, stream: &[u8], cuts: &[usize]) -> (Vec<u8>, u64, u64, bool) {
    run_with(Config::new(proto), stream, cuts)
}

/// As [`run`], with any config; work a session hands out (`defer`) is done at once, as a
/// reactor's pool would do it, before anything more is read.
fn run_with(config: Config, stream: &[u8], cuts: &[usize]) -> (Vec<u8>, u64, u64, bool) {
    let counters = Counters::detached();
    let mut session = Session::new(config, counters);
    let mut out = Vec::new();
    let mut closed = false;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let end = end.clamp(start, stream.len());
        // As a server does: feed the read, then work off any backlog before reading again.
        let mut flow = session.feed(&stream[start..end], &mut out);
        while flow == Flow::Continue && (session.backlog() || session.waiting()) {
            flow = match session.waiting() {
                true => session.work_done(&mut out), // (its work would run here)
                false => session.feed(&[], &mut out),
            };
        }
        if let Flow::Close { .. } = flow {
            closed = true;
            break;
        }
        start = end;
    }
    (
        out,
        counters.requests.load(Relaxed),
        counters.errors.load(Relaxed),
        closed,
    )
}

fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..=len, 0..60).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn http_answers_do_not_depend_on_read_boundaries(
        (stream, cuts) in (prop::collection::vec(req(), 1..8), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(reqs, junk)| {
                let mut s: Vec<u8> = reqs.iter().flat_map(encode).collect();
                s.extend_from_slice(&junk);
                s
            })
            .prop_flat_map(|s| { let n = s.len(); (Just(s), cuts(n)) })
    ) {
        let whole = run(Proto::Http, &stream, &[]);
        let chunked = run(Proto::Http, &stream, &cuts);
        prop_assert_eq!(&whole, &chunked);
    }

    /// A reactor that hands costly requests (or every request) to a pool (`defer`) answers
    /// exactly what a server that runs them inline answers, however the bytes were split.
    #[test]
    fn deferred_work_changes_no_answer(
        (stream, cuts) in prop::collection::vec(req(), 1..8)
            .prop_map(|reqs| reqs.iter().flat_map(encode).collect::<Vec<u8>>())
            .prop_flat_map(|s| { let n = s.len(); (Just(s), cuts(n)) }),
        server_work in prop::sample::select(vec![0u32, 1]),
        defer in prop::sample::select(vec![Defer::Costly, Defer::Every]),
    ) {
        let mut config = Config::new(Proto::Http);
        config.work_units = server_work;
        let inline = run_with(config, &stream, &[]);
        config.defer = defer;
        prop_assert_eq!(&inline, &run_with(config, &stream, &cuts));
    }

    #[test]
    fn one_byte_reads_match_one_big_read(reqs in prop::collection::vec(req(), 1..5)) {
        let stream: Vec<u8> = reqs.iter().flat_map(encode).collect();
        let every_byte: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(run(Proto::Http, &stream, &[]), run(Proto::Http, &stream, &every_byte));
    }

    #[test]
    fn valid_requests_are_all_answered_until_a_close(reqs in prop::collection::vec(req(), 1..8)) {
        let stream: Vec<u8> = reqs.iter().flat_map(encode).collect();
        let (_, requests, errors, closed) = run(Proto::Http, &stream, &[]);
        // Requests up to and including the first one that closes are answered; none refused.
        let closes = |r: &Req| match r.connection {
            Some("close") => true,
            Some(_) => false,
            None => r.minor == 0,
        };
        let expected = reqs.iter().position(closes).map_or(reqs.len(), |i| i + 1);
        prop_assert_eq!(errors, 0);
        prop_assert_eq!(requests, expected as u64);
        prop_assert_eq!(closed, expected < reqs.len() || reqs.iter().any(closes));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_chunking_invariant(
        (stream, cuts) in prop::collection::vec(any::<u8>(), 0..600)
            .prop_flat_map(|s| { let n = s.len(); (Just(s), cuts(n)) })
    ) {
        prop_assert_eq!(run(Proto::Http, &stream, &[]), run(Proto::Http, &stream, &cuts));
    }

    #[test]
    fn echo_returns_the_stream_whatever_the_chunks(
        (stream, cuts) in prop::collection::vec(any::<u8>(), 0..2000)
            .prop_flat_map(|s| { let n = s.len(); (Just(s), cuts(n)) })
    ) {
        let (out, _, _, closed) = run(Proto::Echo, &stream, &cuts);
        prop_assert_eq!(out, stream);
        prop_assert!(!closed);
    }
}
