//! A minimal, strict HTTP/1.1 request reader and fixed responder (`docs/contract.md` §5).
//!
//! It answers every request `200 OK` with a fixed body, so what differs between servers is the
//! concurrency model and never the protocol. What it gets right, unlike the seeds' servers:
//! keep-alive, pipelining split at any byte, `Content-Length` and chunked bodies read and
//! discarded (with limits), `Expect: 100-continue`, `HEAD` without a body, a clean
//! error-then-close for malformed, oversized, smuggling-prone or non-1.x requests, and a bounded
//! amount of work per call, so one pipelining client cannot keep a loop to itself.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::proto::{Config, Flow, Work};
use crate::stats::Counters;

/// The largest head (request line + headers + the empty line) we accept, as nginx's default
/// `large_client_header_buffers` is 8 KiB. Beyond it: 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// Empty lines tolerated before a request line (RFC 9112 §2.2: "SHOULD ignore at least one");
/// one more is a client sending nothing but line ends: 400.
pub const MAX_BLANK_LINES: u8 = 2;

/// Requests answered per call of `feed` at most. The rest of the input waits in the session
/// until the caller calls again (`Session::backlog`): one read of minimal pipelined requests
/// (some 4,600 in 64 KiB) would otherwise be answered whole in one turn of an event loop, with
/// `--work` seconds of stall for every other connection.
pub const ANSWERS_PER_FEED: usize = 16;

/// A chunk-size line's extensions (`;name=value`) may take this many bytes; trailers, in all,
/// `MAX_HEAD`. Beyond them: 400, as nginx does for oversized chunk lines.
pub const MAX_CHUNK_EXT: usize = 1024;

/// The body every `200 OK` carries.
pub const BODY: &[u8] = b"Hello, world!\n";

macro_rules! ok_response {
    ($connection:literal, $body:literal) => {
        concat!(
            "HTTP/1.1 200 OK\r\n",
            "Content-Type: text/plain\r\n",
            "Content-Length: 14\r\n",
            $connection,
            "\r\n",
            $body
        )
        .as_bytes()
    };
}

/// `200 OK` to a request after which the connection stays open (HTTP/1.1 default).
pub const OK_KEEP_ALIVE: &[u8] = ok_response!("", "Hello, world!\n");
/// `200 OK` keeping an HTTP/1.0 connection open: 1.0 closes unless told otherwise.
pub const OK_KEEP_ALIVE_10: &[u8] = ok_response!("Connection: keep-alive\r\n", "Hello, world!\n");
/// `200 OK` after which the server closes.
pub const OK_CLOSE: &[u8] = ok_response!("Connection: close\r\n", "Hello, world!\n");
/// The same three for `HEAD`: same header block, no body.
pub const HEAD_KEEP_ALIVE: &[u8] = ok_response!("", "");
pub const HEAD_KEEP_ALIVE_10: &[u8] = ok_response!("Connection: keep-alive\r\n", "");
pub const HEAD_CLOSE: &[u8] = ok_response!("Connection: close\r\n", "");

/// Sent before reading a body the client offered to hold back (`Expect: 100-continue`).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The error responses; each is followed by a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    /// The head did not arrive whole within `--head-timeout` of its first byte.
    RequestTimeout,
    HeadTooLarge,
    NotImplemented,
    VersionNotSupported,
}

impl Refusal {
    fn status(self) -> (u16, &'static str, &'static str) {
        match self {
            Refusal::BadRequest => (400, "Bad Request", "bad request\n"),
            Refusal::RequestTimeout => (408, "Request Timeout", "request head too slow\n"),
            Refusal::HeadTooLarge => (
                431,
                "Request Header Fields Too Large",
                "request head over 8 KiB\n",
            ),
            Refusal::NotImplemented => (501, "Not Implemented", "transfer coding not supported\n"),
            Refusal::VersionNotSupported => (505, "HTTP Version Not Supported", "HTTP/1.x only\n"),
        }
    }

    /// Appends this refusal's full response to `out`.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let (code, reason, body) = self.status();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Whether the connection stays open after a response, and how the response must say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// HTTP/1.1 without `Connection: close`.
    Alive,
    /// HTTP/1.0 with `Connection: keep-alive`.
    Alive10,
    Close,
}

/// The response owed for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Answer {
    keep: Keep,
    head_only: bool,
    /// The CPU work the request asked for with a `/work/U` target (docs/contract.md §5, a
    /// mixed workload); [`SERVER_WORK`] for any other target: the server's `--work`.
    work: u32,
}

/// [`Answer::work`] of a request that asked for nothing: it costs `--work`.
const SERVER_WORK: u32 = u32::MAX;

impl Work {
    /// A request's cost: what its `/work/U` target asked for, or else the server's `--work`;
    /// `--delay-ms` either way.
    fn of(target: u32, config: &Config) -> Work {
        match target {
            SERVER_WORK => config.work(),
            units => Work {
                units,
                ..config.work()
            },
        }
    }
}

/// The most CPU units a `/work/U` target may ask for (docs/contract.md §5).
pub const MAX_TARGET_WORK: u32 = 1_000_000;

/// `U` of a `/work/U` target: 1 to 7 decimal digits, at most [`MAX_TARGET_WORK`]. Anything else
/// is an ordinary target, which costs the server's `--work`.
fn work_of(target: &[u8]) -> u32 {
    let Some(digits) = target.strip_prefix(b"/work/") else {
        return SERVER_WORK;
    };
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
        return SERVER_WORK;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0')); // < 10^7: no overflow
    if n <= MAX_TARGET_WORK { n } else { SERVER_WORK }
}

impl Answer {
    fn bytes(self) -> &'static [u8] {
        match (self.keep, self.head_only) {
            (Keep::Alive, false) => OK_KEEP_ALIVE,
            (Keep::Alive10, false) => OK_KEEP_ALIVE_10,
            (Keep::Close, false) => OK_CLOSE,
            (Keep::Alive, true) => HEAD_KEEP_ALIVE,
            (Keep::Alive10, true) => HEAD_KEEP_ALIVE_10,
            (Keep::Close, true) => HEAD_CLOSE,
        }
    }
}

/// How the body of a request is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body: neither header.
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head: only what decides the response.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    answer: Answer,
    framing: Framing,
    expect_continue: bool,
}

/// Where a chunked body's reader stands (RFC 9112 §7.1), kept between reads. Every byte of
/// framing is looked at once; chunk data is skipped in bulk and never copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far and how many hex digits it had.
    Size { size: u64, digits: u8 },
    /// In a chunk-size line's extensions (after `;` or whitespace): how many bytes so far.
    Ext { size: u64, len: usize },
    /// After the chunk-size line's CR: its LF.
    SizeLf { size: u64 },
    /// In chunk data: bytes still to skip.
    Data(u64),
    /// After chunk data: its CR (or a bare LF).
    DataCr,
    /// After chunk data's CR: its LF.
    DataLf,
    /// At the start of a trailer line, or of the empty line that ends the body; the trailer
    /// bytes so far.
    TrailerStart { total: usize },
    /// Inside a trailer field line.
    Trailer { total: usize },
    /// After the final empty line's CR: its LF.
    EndLf,
}

/// What a body's reader says after a slice of input.
enum BodyRead {
    /// Still in the body: every byte was used.
    More,
    /// The body ended after `n` bytes of this slice.
    Done(usize),
    /// The framing is broken (bad hex, an overflowing size, oversized extensions or trailers).
    Bad,
}

impl Chunk {
    const START: Chunk = Chunk::Size { size: 0, digits: 0 };

    /// Reads as much of `data` as belongs to the body.
    fn read(&mut self, data: &[u8]) -> BodyRead {
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(left) = *self {
                // Chunk data, skipped in bulk.
                let n = left.min((data.len() - i) as u64);
                i += n as usize;
                *self = if left == n {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - n)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            *self = match (*self, b) {
                (Chunk::Size { size, digits }, _) if b.is_ascii_hexdigit() => {
                    // 16 hex digits fill a u64; a 17th can only overflow it.
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0)); // a hex digit
                    match size.checked_mul(16).and_then(|s| s.checked_add(d)) {
                        Some(size) if digits < 16 => Chunk::Size {
                            size,
                            digits: digits + 1,
                        },
                        _ => return BodyRead::Bad,
                    }
                }
                (Chunk::Size { digits: 0, .. }, _) => return BodyRead::Bad, // no size at all
                (Chunk::Size { size, .. }, b';' | b' ' | b'\t') => Chunk::Ext { size, len: 1 },
                (Chunk::Size { size, .. } | Chunk::Ext { size, .. }, b'\r') => {
                    Chunk::SizeLf { size }
                }
                (
                    Chunk::Size { size, .. } | Chunk::Ext { size, .. } | Chunk::SizeLf { size },
                    b'\n',
                ) => {
                    if size == 0 {
                        Chunk::TrailerStart { total: 0 }
                    } else {
                        Chunk::Data(size)
                    }
                }
                (Chunk::Ext { size, len }, _) if len < MAX_CHUNK_EXT && !is_ctl(b) => {
                    Chunk::Ext { size, len: len + 1 }
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::START,
                (Chunk::TrailerStart { .. }, b'\r') => Chunk::EndLf,
                (Chunk::TrailerStart { .. } | Chunk::EndLf, b'\n') => return BodyRead::Done(i),
                (Chunk::Trailer { total }, b'\n') => Chunk::TrailerStart { total: total + 1 },
                (Chunk::TrailerStart { total } | Chunk::Trailer { total }, _)
                    if total < MAX_HEAD && (!is_ctl(b) || b == b'\r') =>
                {
                    Chunk::Trailer { total: total + 1 }
                }
                _ => return BodyRead::Bad,
            };
        }
        BodyRead::More
    }
}

/// A control byte other than tab: never allowed in a header value or chunk extension.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// The body being read and discarded, between reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Body {
    #[default]
    None,
    /// A `Content-Length` body: bytes still to come.
    Length(u64),
    Chunked(Chunk),
}

/// The HTTP state of one connection, between reads.
#[derive(Debug, Default)]
pub(crate) struct Http {
    /// Input not yet answered: the start of a head that has not fully arrived, or — when the
    /// last call's budget ran out (`backlog`) — whole requests waiting their turn. Empty most of
    /// the time: a whole request in one read is parsed in place, without a copy.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no end-of-head, so a head dribbled one byte at a
    /// time is scanned once in all, not once per byte.
    scanned: usize,
    /// The body being read and discarded.
    body: Body,
    /// The response owed once that body has arrived.
    after_body: Option<Answer>,
    /// Empty lines since the last request (see [`MAX_BLANK_LINES`]).
    blank_lines: u8,
    /// The last call stopped at [`ANSWERS_PER_FEED`] with input left in `pending`.
    backlog: bool,
    /// `Config::defer`: the request in `after_body` has arrived whole and its work is the
    /// caller's to run ([`Http::pending_work`]); nothing more is parsed until it is done.
    deferred: bool,
}

impl Http {
    pub(crate) fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Whether part of a request head has arrived — an empty line before it counts — and the
    /// rest has not: the time a server gives it is `--head-timeout`, counted from here.
    pub(crate) fn head_pending(&self) -> bool {
        !self.backlog
            && !self.deferred
            && self.body == Body::None
            && (!self.pending.is_empty() || self.blank_lines > 0)
    }

    /// Whether input is waiting in the session because the last call's budget ran out.
    pub(crate) fn backlog(&self) -> bool {
        self.backlog
    }

    /// The work of a request held back for the caller (`Config::defer`), if any.
    pub(crate) fn pending_work(&self, config: &Config) -> Option<Work> {
        let answer = self.after_body.filter(|_| self.deferred)?;
        Some(Work::of(answer.work, config))
    }

    /// The caller ran [`Http::pending_work`]: answer that request, then go on with the input
    /// waiting behind it (which may stop at the next costly request).
    pub(crate) fn work_done(
        &mut self,
        out: &mut Vec<u8>,
        config: &Config,
        counters: &Counters,
    ) -> Flow {
        let Some(answer) = self.after_body.take().filter(|_| self.deferred) else {
            return Flow::Continue; // nothing was held back: a caller's slip, and harmless
        };
        self.deferred = false;
        if let Some(flow) = answer_with(answer, out, counters) {
            return flow;
        }
        self.feed(&[], out, config, counters)
    }

    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        config: &Config,
        counters: &Counters,
    ) -> Flow {
        if self.deferred {
            // The caller should not read while work is out (`Session::waiting`); if it did,
            // keep the bytes for later rather than answer out of order.
            self.pending.extend_from_slice(input);
            return Flow::Continue;
        }
        if self.pending.is_empty() {
            let (flow, used) = self.run(input, out, config, counters);
            if flow == Flow::Continue {
                self.pending.extend_from_slice(&input[used..]);
            }
            flow
        } else {
            // Part of a head, or a backlog, is waiting: glue the new bytes on and parse from its
            // start. The carried part is under MAX_HEAD, or one read's backlog (and then the
            // caller, told by `backlog`, calls with no new bytes until it is worked off).
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(input);
            let (flow, used) = self.run(&data, out, config, counters);
            if flow == Flow::Continue {
                data.drain(..used);
                self.pending = data; // keeps the allocation for the next dribble
            }
            flow
        }
    }

    /// Serves the complete requests in `data`, [`ANSWERS_PER_FEED`] at most. Returns the
    /// verdict and how many bytes were used; on `Continue` the rest is the start of a head, or
    /// requests left for the next call (`backlog`), which the caller keeps.
    fn run(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        config: &Config,
        counters: &Counters,
    ) -> (Flow, usize) {
        let mut pos = 0;
        let mut scan_from = std::mem::take(&mut self.scanned);
        let mut answered = 0;
        self.backlog = false;
        loop {
            // 1. A body still owed: discard what has arrived of it.
            match &mut self.body {
                Body::None => {}
                Body::Length(left) => {
                    let n = (*left).min((data.len() - pos) as u64);
                    pos += n as usize;
                    *left -= n;
                    if *left > 0 {
                        return (Flow::Continue, pos);
                    }
                    self.body = Body::None;
                }
                Body::Chunked(chunk) => match chunk.read(&data[pos..]) {
                    BodyRead::More => return (Flow::Continue, data.len()),
                    BodyRead::Done(n) => {
                        pos += n;
                        self.body = Body::None;
                    }
                    BodyRead::Bad => {
                        self.after_body = None;
                        return refuse(Refusal::BadRequest, data.len(), out, counters);
                    }
                },
            }
            if let Some(answer) = self.after_body.take() {
                if config.defers(Work::of(answer.work, config)) {
                    self.after_body = Some(answer); // the caller runs its work: stop here
                    self.deferred = true;
                    return (Flow::Continue, pos);
                }
                answered += 1;
                if let Some(flow) = respond(answer, out, config, counters) {
                    return (flow, data.len());
                }
            }

            // 2. The turn's budget: what is left waits for the next call.
            if answered >= ANSWERS_PER_FEED && pos < data.len() {
                self.backlog = true;
                return (Flow::Continue, pos);
            }

            // 3. RFC 9112 §2.2: ignore an empty line or two before a request line; a client
            //    sending nothing but line ends is refused, not waited for.
            while let Some(n) = empty_line_at(&data[pos..]) {
                pos += n;
                self.blank_lines += 1;
                if self.blank_lines > MAX_BLANK_LINES {
                    return refuse(Refusal::BadRequest, data.len(), out, counters);
                }
            }
            if pos == data.len() {
                return (Flow::Continue, pos);
            }

            // 4. Find the end of the head; without it, wait for more bytes — unless it is
            //    already too long to be acceptable.
            let Some(end) = find_head_end(&data[pos..], scan_from) else {
                if data.len() - pos > MAX_HEAD {
                    return refuse(Refusal::HeadTooLarge, data.len(), out, counters);
                }
                self.scanned = data.len() - pos;
                return (Flow::Continue, pos);
            };
            scan_from = 0;
            if end > MAX_HEAD {
                return refuse(Refusal::HeadTooLarge, data.len(), out, counters);
            }
            let head = match parse_head(&data[pos..pos + end]) {
                Ok(head) => head,
                Err(refusal) => return refuse(refusal, data.len(), out, counters),
            };
            pos += end;
            self.blank_lines = 0;

            // 5. Answer now, or once the body has been read.
            self.body = match head.framing {
                Framing::None | Framing::Length(0) => Body::None,
                Framing::Length(n) => Body::Length(n),
                Framing::Chunked => Body::Chunked(Chunk::START),
            };
            if self.body == Body::None {
                if config.defers(Work::of(head.answer.work, config)) {
                    self.after_body = Some(head.answer); // the caller runs its work: stop here
                    self.deferred = true;
                    return (Flow::Continue, pos);
                }
                answered += 1;
                if let Some(flow) = respond(head.answer, out, config, counters) {
                    return (flow, data.len());
                }
            } else {
                if head.expect_continue {
                    out.extend_from_slice(CONTINUE);
                }
                self.after_body = Some(head.answer);
            }
        }
    }

    /// `--head-timeout` expired with a head incomplete: 408, and the close lingers (the client
    /// may still be sending the rest).
    pub(crate) fn head_timeout(&mut self, out: &mut Vec<u8>, counters: &Counters) -> Flow {
        self.pending = Vec::new();
        refuse(Refusal::RequestTimeout, 0, out, counters).0
    }
}

/// Runs the request's simulated work, counts it, appends the response. Returns the `Close`
/// verdict if the connection ends here. That close always lingers: more pipelined bytes may
/// be in the socket or still on their way — a request that ends exactly where a read ended
/// says nothing of what follows — and a close with unread bytes becomes an RST that can destroy
/// this very response in the client's kernel.
fn respond(
    answer: Answer,
    out: &mut Vec<u8>,
    config: &Config,
    counters: &Counters,
) -> Option<Flow> {
    Work::of(answer.work, config).run();
    answer_with(answer, out, counters)
}

/// The answer to a request whose work is done: counted, then appended to `out`.
fn answer_with(answer: Answer, out: &mut Vec<u8>, counters: &Counters) -> Option<Flow> {
    // Counted before the response is written, so a client holding its response can trust the
    // summary's count (docs/contract.md §6).
    counters.requests.fetch_add(1, Relaxed);
    out.extend_from_slice(answer.bytes());
    (answer.keep == Keep::Close).then_some(Flow::Close { linger: true })
}

fn refuse(refusal: Refusal, used: usize, out: &mut Vec<u8>, counters: &Counters) -> (Flow, usize) {
    counters.errors.fetch_add(1, Relaxed);
    refusal.write_to(out);
    // The client may well still be sending (the rest of an oversized head, a chunked body).
    (Flow::Close { linger: true }, used)
}

/// The length of an empty line (`\r\n` or `\n`) at the start of `data`, if there is one.
fn empty_line_at(data: &[u8]) -> Option<usize> {
    match data {
        [b'\n', ..] => Some(1),
        [b'\r', b'\n', ..] => Some(2),
        _ => None,
    }
}

/// The offset just past the empty line that ends a head (`\n\n` or `\n\r\n`), searching from
/// about `from` — two bytes earlier, in case the terminator straddles the previous read.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from.saturating_sub(2);
    while let Some(nl) = data[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl;
        match &data[at + 1..] {
            [b'\n', ..] => return Some(at + 2),
            [b'\r', b'\n', ..] => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

/// RFC 9110 §5.6.2 `tchar`: what a method or header name may contain.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Parses a complete head (ending in its empty line) into what decides the response.
fn parse_head(head: &[u8]) -> Result<Head, Refusal> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    // `split` yields at least one item, and the head holds at least the request line.
    let request_line = lines.next().unwrap_or_default();

    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3), single spaces.
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if !is_token(method) || target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b))
    {
        return Err(Refusal::BadRequest);
    }
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major != b'1' {
                return Err(Refusal::VersionNotSupported);
            }
            minor - b'0'
        }
        _ => return Err(Refusal::BadRequest),
    };

    let mut content_length: Option<u64> = None;
    // Transfer codings, in the order applied, over every Transfer-Encoding line.
    let mut codings: Vec<&[u8]> = Vec::new();
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    for line in lines {
        if line.is_empty() {
            break; // the empty line that ends the head
        }
        // Obsolete line folding (a continuation line) is a classic smuggling vector: refuse.
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Refusal::BadRequest);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Refusal::BadRequest)?;
        let name = &line[..colon];
        // A bare CR or any other control byte in a value is refused (RFC 9112 §2.2), as is
        // whitespace between name and colon (§5.1), which `is_token` rejects.
        let value = trim_ows(&line[colon + 1..]);
        if !is_token(name) || value.iter().any(|&b| is_ctl(b)) {
            return Err(Refusal::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value).ok_or(Refusal::BadRequest)?;
            // Two different lengths mean two parsers could disagree on where the body ends.
            if content_length.is_some_and(|m| m != n) {
                return Err(Refusal::BadRequest);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.extend(value.split(|&b| b == b',').map(trim_ows));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim_ows) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 §6.1–6.3. Both headers: a front end and this server could disagree on where
    // the body ends (request smuggling): refused. So is a list with an empty member, chunked
    // anywhere but last (the body's end could not be found), or transfer coding in HTTP/1.0.
    // A coding other than chunked is one we do not implement: 501.
    let framing = match (codings.as_slice(), content_length) {
        ([], None) => Framing::None,
        ([], Some(n)) => Framing::Length(n),
        (_, Some(_)) => return Err(Refusal::BadRequest),
        _ if minor == 0 || codings.iter().any(|c| c.is_empty()) => {
            return Err(Refusal::BadRequest);
        }
        ([.., last], None) if !last.eq_ignore_ascii_case(b"chunked") => {
            if codings.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) {
                return Err(Refusal::BadRequest);
            }
            return Err(Refusal::NotImplemented);
        }
        ([_, _, ..], None) => return Err(Refusal::NotImplemented), // e.g. gzip, chunked
        ([_], None) => Framing::Chunked,
    };
    let keep = match (close, minor, keep_alive) {
        (true, _, _) => Keep::Close,
        (false, 1.., _) => Keep::Alive,
        (false, 0, true) => Keep::Alive10,
        (false, 0, false) => Keep::Close,
    };
    Ok(Head {
        answer: Answer {
            keep,
            head_only: method == b"HEAD",
            work: work_of(target),
        },
        framing,
        // A 100 response must not be sent to an HTTP/1.0 client (RFC 9110 §10.1.1).
        expect_continue: expect_continue && minor >= 1,
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `Content-Length = 1*DIGIT`, refusing signs, spaces, lists and overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Proto;
    use crate::proto::{Defer, Session};
    use std::sync::atomic::Ordering::Relaxed;

    /// Feeds `input` in one piece; returns the output and the verdict.
    fn serve(input: &[u8]) -> (Vec<u8>, Flow) {
        let mut s = Session::new(Config::new(Proto::Http), Counters::detached());
        let mut out = Vec::new();
        let flow = s.feed(input, &mut out);
        (out, flow)
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn the_fixed_responses_have_correct_lengths() {
        for r in [OK_KEEP_ALIVE, OK_KEEP_ALIVE_10, OK_CLOSE] {
            assert!(r.ends_with(BODY));
            assert!(text(r).contains(&format!("Content-Length: {}\r\n", BODY.len())));
        }
        for r in [HEAD_KEEP_ALIVE, HEAD_KEEP_ALIVE_10, HEAD_CLOSE] {
            assert!(r.ends_with(b"\r\n\r\n"));
        }
        for refusal in [
            Refusal::BadRequest,
            Refusal::RequestTimeout,
            Refusal::HeadTooLarge,
            Refusal::NotImplemented,
            Refusal::VersionNotSupported,
        ] {
            let mut out = Vec::new();
            refusal.write_to(&mut out);
            let t = text(&out);
            let (head, body) = t.split_once("\r\n\r\n").unwrap(); // write_to always writes one
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{t}"
            );
            assert!(head.contains("Connection: close"));
        }
    }

    #[test]
    fn get_gets_the_exact_keep_alive_response() {
        let (out, flow) = serve(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(out, OK_KEEP_ALIVE);
        assert_eq!(flow, Flow::Continue);
    }

    #[test]
    fn any_method_and_target_is_ok() {
        for req in [
            "POST /a/b?c=d HTTP/1.1\r\n\r\n",
            "DELETE * HTTP/1.1\r\n\r\n",
            "BREW /pot HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(serve(req.as_bytes()).0, OK_KEEP_ALIVE, "{req}");
        }
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        assert_eq!(serve(b"GET / HTTP/1.1\nHost: x\n\n").0, OK_KEEP_ALIVE);
    }

    #[test]
    fn connection_close_closes_with_a_linger() {
        // Lingering whether or not bytes follow in this read: more may still be on their way.
        let (out, flow) = serve(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(out, OK_CLOSE);
        assert_eq!(flow, Flow::Close { linger: true });
    }

    #[test]
    fn connection_options_are_a_case_insensitive_list() {
        let (out, flow) = serve(b"GET / HTTP/1.1\r\nConnection: Upgrade ,  CLOSE\r\n\r\n");
        assert_eq!(
            (out.as_slice(), flow),
            (OK_CLOSE, Flow::Close { linger: true })
        );
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        let (out, flow) = serve(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(
            (out.as_slice(), flow),
            (OK_CLOSE, Flow::Close { linger: true })
        );
        let (out, flow) = serve(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!((out.as_slice(), flow), (OK_KEEP_ALIVE_10, Flow::Continue));
    }

    #[test]
    fn head_gets_no_body() {
        let (out, _) = serve(b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(out, HEAD_KEEP_ALIVE);
        assert!(text(&out).contains("Content-Length: 14"));
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (out, flow) = serve(b"GET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(out, [OK_KEEP_ALIVE, HEAD_KEEP_ALIVE, OK_CLOSE].concat());
        assert_eq!(flow, Flow::Close { linger: true });
    }

    #[test]
    fn bytes_behind_a_closing_request_make_the_close_linger() {
        let (out, flow) =
            serve(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            out, OK_CLOSE,
            "nothing after the closing request is answered"
        );
        assert_eq!(flow, Flow::Close { linger: true });
    }

    #[test]
    fn a_body_is_read_and_discarded_before_the_answer() {
        let mut s = Session::new(Config::new(Proto::Http), Counters::detached());
        let mut out = Vec::new();
        assert_eq!(
            s.feed(
                b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234",
                &mut out
            ),
            Flow::Continue
        );
        assert!(out.is_empty(), "no answer before the body has arrived");
        assert_eq!(
            s.feed(b"56789GET / HTTP/1.1\r\n\r\n", &mut out),
            Flow::Continue
        );
        assert_eq!(out, [OK_KEEP_ALIVE, OK_KEEP_ALIVE].concat());
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_one() {
        let body = b"GET / HTTP/1.1\r\n\r\n";
        let req = [
            format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            body,
        ]
        .concat();
        assert_eq!(serve(&req).0, OK_KEEP_ALIVE);
    }

    #[test]
    fn expect_100_continue_is_honoured_for_11_only() {
        let (out, _) =
            serve(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(out, CONTINUE);
        let (out, _) =
            serve(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(out, [CONTINUE, OK_KEEP_ALIVE].concat());
        let (out, _) =
            serve(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(out.is_empty());
        let (out, _) = serve(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(out, OK_KEEP_ALIVE, "no body, no 100");
    }

    #[test]
    fn an_empty_line_or_two_before_a_request_is_ignored_and_a_third_refused() {
        assert_eq!(serve(b"\r\n\nGET / HTTP/1.1\r\n\r\n").0, OK_KEEP_ALIVE);
        assert_eq!(refused(b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n"), 400);
        // Counted across reads, and afresh after each request.
        let mut s = Session::new(Config::new(Proto::Http), Counters::detached());
        let mut out = Vec::new();
        assert_eq!(s.feed(b"\r\n", &mut out), Flow::Continue);
        assert_eq!(
            s.feed(b"\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n", &mut out),
            Flow::Continue
        );
        assert_eq!(s.feed(b"\r\n", &mut out), Flow::Close { linger: true });
        assert_eq!(out[..OK_KEEP_ALIVE.len()], *OK_KEEP_ALIVE);
        assert!(text(&out[OK_KEEP_ALIVE.len()..]).starts_with("HTTP/1.1 400"));
    }

    fn refused(input: &[u8]) -> u16 {
        let (out, flow) = serve(input);
        assert_eq!(flow, Flow::Close { linger: true }, "{}", text(input));
        text(&out)[9..12].parse().unwrap() // every refusal starts "HTTP/1.1 NNN"
    }

    #[test]
    fn malformed_requests_get_400() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nName : v\r\n\r\n",
            b"GET / HTTP/1.1\r\n: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/x.1\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        ] {
            assert_eq!(refused(bad), 400, "{}", text(bad));
        }
    }

    #[test]
    fn repeated_equal_content_lengths_are_fine() {
        assert_eq!(
            serve(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx").0,
            OK_KEEP_ALIVE
        );
    }

    #[test]
    fn other_versions_get_505_and_other_transfer_codings_501() {
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 505);
        for te in ["gzip", "gzip, chunked", "identity"] {
            let req = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(refused(req.as_bytes()), 501, "{te}");
        }
    }

    const CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n1A;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";

    #[test]
    fn a_chunked_body_is_read_and_discarded_split_at_every_byte() {
        let stream = [CHUNKED, b"GET / HTTP/1.1\r\n\r\n"].concat();
        for cut in 0..=stream.len() {
            let mut s = Session::new(Config::new(Proto::Http), Counters::detached());
            let mut out = Vec::new();
            assert_eq!(
                s.feed(&stream[..cut], &mut out),
                Flow::Continue,
                "cut at {cut}"
            );
            assert_eq!(
                s.feed(&stream[cut..], &mut out),
                Flow::Continue,
                "cut at {cut}"
            );
            assert_eq!(out, [OK_KEEP_ALIVE, OK_KEEP_ALIVE].concat(), "cut at {cut}");
            assert_eq!(s.buffered(), 0);
        }
        // Bare LF framing, upper-case hex, no trailers, a chunked HEAD's answer has no body.
        assert_eq!(
            serve(b"PUT / HTTP/1.1\nTransfer-Encoding: Chunked\n\nA\n0123456789\n0\n\n").0,
            OK_KEEP_ALIVE
        );
        assert_eq!(
            serve(b"HEAD / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").0,
            HEAD_KEEP_ALIVE
        );
    }

    #[test]
    fn chunked_framing_that_could_be_misread_gets_400() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_EXT));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "t".repeat(MAX_HEAD));
        for body in [
            "g\r\n",                    // not hex
            "\r\n",                     // no size at all
            "10000000000000000\r\n",    // 17 hex digits: over u64
            "5\r\nhelloX\r\n",          // data longer than its size
            "5\rhello\r\n",             // CR without LF
            "1;a\0b\r\nx\r\n0\r\n\r\n", // a control byte in an extension
            long_ext.as_str(),
            long_trailer.as_str(),
        ] {
            let req = format!("{head}{body}");
            assert_eq!(refused(req.as_bytes()), 400, "{body:?}");
        }
        // Smuggling-prone heads.
        for bad in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(refused(bad.as_bytes()), 400, "{bad:?}");
        }
        // The largest size that fits is only a size; the body then simply goes on.
        let mut s = Session::new(Config::new(Proto::Http), Counters::detached());
        let req = format!("{head}FFFFFFFFFFFFFFFF\r\n");
        assert_eq!(s.feed(req.as_bytes(), &mut Vec::new()), Flow::Continue);
    }

    #[test]
    fn a_work_target_asks_for_units_and_anything_else_is_ordinary() {
        assert_eq!(work_of(b"/work/0"), 0);
        assert_eq!(work_of(b"/work/1000"), 1000);
        assert_eq!(work_of(b"/work/1000000"), MAX_TARGET_WORK);
        for ordinary in [
            &b"/"[..],
            b"/work",
            b"/work/",
            b"/work/12x",
            b"/work/-1",
            b"/work/1000001",
            b"/work/99999999",
            b"/works/5",
            b"/x/work/5",
        ] {
            assert_eq!(work_of(ordinary), SERVER_WORK, "{ordinary:?}");
        }
        // The response does not depend on the target.
        assert_eq!(serve(b"GET /work/3 HTTP/1.1\r\n\r\n").0, OK_KEEP_ALIVE);
    }

    /// With `defer`, the session stops at each costly request and hands its work out; cheap
    /// ones before it are answered at once, and the order of answers never changes.
    #[test]
    fn deferred_work_is_handed_out_one_request_at_a_time_in_order() {
        let mut config = Config::new(Proto::Http);
        config.defer = Defer::Costly;
        let counters = Counters::detached();
        let mut s = Session::new(config, counters);
        let mut out = Vec::new();
        let input = b"GET / HTTP/1.1\r\n\r\nGET /work/7 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n\
                      POST /work/2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        assert_eq!(s.feed(input, &mut out), Flow::Continue);
        assert_eq!(
            out, OK_KEEP_ALIVE,
            "the cheap request before the costly one"
        );
        let work = s.pending_work().expect("the /work/7 request waits");
        assert_eq!((work.units, work.delay), (7, std::time::Duration::ZERO));
        assert!(s.waiting() && !s.head_pending() && !s.backlog());
        // Input that arrives meanwhile (a caller should not read, but may have) waits too.
        assert_eq!(s.feed(b"", &mut out), Flow::Continue);
        assert_eq!(out, OK_KEEP_ALIVE);
        out.clear();
        assert_eq!(s.work_done(&mut out), Flow::Continue);
        assert_eq!(
            out,
            OK_KEEP_ALIVE.repeat(2),
            "its answer, then the cheap one behind it"
        );
        assert_eq!(
            s.pending_work().map(|w| w.units),
            Some(2),
            "a body's request too"
        );
        out.clear();
        assert_eq!(s.work_done(&mut out), Flow::Continue);
        assert_eq!(out, OK_KEEP_ALIVE.repeat(2));
        assert!(!s.waiting() && s.buffered() == 0);
        assert_eq!(counters.requests.load(Relaxed), 5);
    }

    #[test]
    fn with_defer_and_server_work_every_request_is_handed_out() {
        let mut config = Config::new(Proto::Http);
        (config.defer, config.work_units) = (Defer::Costly, 3);
        let mut s = Session::new(config, Counters::detached());
        let mut out = Vec::new();
        let two = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert_eq!(s.feed(two, &mut out), Flow::Continue);
        assert!(out.is_empty());
        assert_eq!(s.pending_work().map(|w| w.units), Some(3));
        assert_eq!(s.work_done(&mut out), Flow::Continue);
        assert_eq!(s.pending_work().map(|w| w.units), Some(3));
        assert_eq!(s.work_done(&mut out), Flow::Close { linger: true });
        assert_eq!(out, [OK_KEEP_ALIVE, OK_CLOSE].concat());
        assert!(s.is_done() && !s.waiting());
        // A cheap request asks for nothing even when --work is set: /work/0.
        let mut s = Session::new(config, Counters::detached());
        out.clear();
        assert_eq!(
            s.feed(b"GET /work/0 HTTP/1.1\r\n\r\n", &mut out),
            Flow::Continue
        );
        assert_eq!(out, OK_KEEP_ALIVE);
        assert!(!s.waiting());
    }

    /// `Defer::Every` (lesson 14's `--all-to-pool`) hands out even a request that costs nothing.
    #[test]
    fn defer_every_hands_out_free_requests_too() {
        let mut config = Config::new(Proto::Http);
        config.defer = Defer::Every;
        let mut s = Session::new(config, Counters::detached());
        let mut out = Vec::new();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out), Flow::Continue);
        assert!(out.is_empty(), "nothing answered before the pool ran it");
        assert_eq!(s.pending_work().map(|w| w.costs()), Some(false));
        assert_eq!(s.work_done(&mut out), Flow::Continue);
        assert_eq!(out, OK_KEEP_ALIVE);
        assert!(!s.waiting());
    }

    #[test]
    fn one_call_answers_a_bounded_number_of_pipelined_requests() {
        let n = 2 * ANSWERS_PER_FEED + 3;
        let stream = b"GET / HTTP/1.1\r\n\r\n".repeat(n);
        let mut s = Session::new(Config::new(Proto::Http), Counters::detached());
        let mut out = Vec::new();
        assert_eq!(s.feed(&stream, &mut out), Flow::Continue);
        assert_eq!(out, OK_KEEP_ALIVE.repeat(ANSWERS_PER_FEED));
        assert!(
            s.backlog() && !s.head_pending(),
            "a backlog is not a slow head"
        );
        assert_eq!(s.buffered(), stream.len() - ANSWERS_PER_FEED * 18);
        out.clear();
        assert_eq!(s.feed(&[], &mut out), Flow::Continue);
        assert_eq!(out, OK_KEEP_ALIVE.repeat(ANSWERS_PER_FEED));
        out.clear();
        assert_eq!(s.feed(&[], &mut out), Flow::Continue);
        assert_eq!(out, OK_KEEP_ALIVE.repeat(3));
        assert!(!s.backlog());
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn a_partial_head_is_pending_until_complete_or_timed_out() {
        let counters = Counters::detached();
        let mut s = Session::new(Config::new(Proto::Http), counters);
        let mut out = Vec::new();
        assert!(!s.head_pending(), "nothing yet");
        s.feed(b"\r\n", &mut out);
        assert!(
            s.head_pending(),
            "an empty line before a request starts its clock"
        );
        s.feed(b"GET / HT", &mut out);
        assert!(s.head_pending());
        s.feed(b"TP/1.1\r\n\r\n", &mut out);
        assert!(!s.head_pending());
        s.feed(
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nbody",
            &mut out,
        );
        assert!(!s.head_pending(), "a body on its way is not a head");
        s.feed(b"more!GET", &mut out);
        assert!(s.head_pending());
        out.clear();
        assert_eq!(s.head_timeout(&mut out), Flow::Close { linger: true });
        assert!(
            text(&out).starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{}",
            text(&out)
        );
        assert_eq!(counters.errors.load(Relaxed), 1);
        assert!(s.is_done());
    }

    #[test]
    fn heads_over_8k_get_431_whether_or_not_they_ended() {
        let filler = format!("X-Filler: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            refused(format!("GET / HTTP/1.1\r\n{filler}\r\n").as_bytes()),
            431
        );
        assert_eq!(
            refused(format!("GET / HTTP/1.1\r\n{filler}").as_bytes()),
            431
        );
        // Exactly at the limit is still fine.
        let line = "GET / HTTP/1.1\r\n";
        let pad = MAX_HEAD - line.len() - "X: \r\n\r\n".len();
        let exact = format!("{line}X: {}\r\n\r\n", "a".repeat(pad));
        assert_eq!(exact.len(), MAX_HEAD);
        assert_eq!(serve(exact.as_bytes()).0, OK_KEEP_ALIVE);
    }

    #[test]
    fn counters_count_answers_and_refusals() {
        let counters = Counters::detached();
        let mut s = Session::new(Config::new(Proto::Http), counters);
        s.feed(
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nBAD\r\n\r\n",
            &mut Vec::new(),
        );
        assert_eq!(counters.requests.load(Relaxed), 2);
        assert_eq!(counters.errors.load(Relaxed), 1);
    }

    #[test]
    fn a_dribbled_head_is_scanned_once() {
        // One byte at a time through a long head. After each byte the whole carried part must be
        // marked as scanned, so the next byte costs a look at three bytes, not a rescan of up to
        // 8 KiB (which would make a dribbling client quadratic).
        let req = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD - 40));
        let (config, counters) = (Config::new(Proto::Http), Counters::detached());
        let mut http = Http::default();
        let mut out = Vec::new();
        for b in req.as_bytes() {
            assert_eq!(
                http.feed(std::slice::from_ref(b), &mut out, &config, counters),
                Flow::Continue
            );
            assert_eq!(http.scanned, http.pending.len());
        }
        assert_eq!(out, OK_KEEP_ALIVE);
        assert_eq!(http.buffered(), 0);
    }
}
