//! The protocol every server speaks, **sans-IO**: bytes in → bytes out plus a verdict
//! (keep the connection, or close it). No socket, no syscall, no clock inside — only the
//! simulated work of `--work`/`--delay-ms` — so the same code serves a blocking thread, an
//! event loop and a completion ring alike, and the tests drive it with plain byte slices.
//!
//! How a server uses it, whatever its model:
//!
//! ```text
//!   bytes read from the socket ──► Session::feed(input, &mut out) ──► Flow
//!                                                  │                    │
//!        write `out` to the socket ◄───────────────┘     Continue: read more
//!                                                         Close:   write `out`, then close
//!   read returned 0 (peer half-closed) ──► Session::eof(&mut out) ──► Close
//! ```
//!
//! A session keeps whatever part of a request has not arrived yet (an HTTP head split across
//! reads) inside itself, so the caller may read into one scratch buffer shared by all its
//! connections and never keeps input per connection.
//!
//! Backpressure is the caller's: `feed` appends everything it owes to `out`; a caller whose `out`
//! for a connection is over its limit must stop reading that connection until it drains.

use std::time::Duration;

use crate::cli::Proto;
use crate::http::Http;
use crate::stats::Counters;
use crate::work;

/// Everything a session needs to know from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub proto: Proto,
    /// `--work`: CPU units per HTTP request or per echoed read.
    pub work_units: u32,
    /// `--delay-ms`: blocking sleep per HTTP request or per echoed read.
    pub delay: Duration,
    /// `--head-timeout`: how long a request head may take from its first byte (`None`: no
    /// limit). The session keeps no clock: the server measures it ([`Session::head_pending`]).
    pub head_timeout: Option<Duration>,
}

impl Config {
    pub fn new(proto: Proto) -> Config {
        Config {
            proto,
            work_units: 0,
            delay: Duration::ZERO,
            head_timeout: None,
        }
    }

    /// Runs the simulated cost of one request.
    pub(crate) fn simulate(&self) {
        work::simulate(self.work_units, self.delay);
    }
}

/// What the caller does next with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Write `out` (if anything is in it) and keep reading.
    Continue,
    /// Write `out`, then close the connection. With `linger`, the client may still be sending
    /// bytes nobody will read: half-close and drain before closing, or the close becomes an RST
    /// that can destroy the response (lesson 1's `linger_close`, `docs/contract.md` §5).
    Close { linger: bool },
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    config: Config,
    counters: &'static Counters,
    state: State,
}

#[derive(Debug)]
enum State {
    Echo,
    Http(Http),
    /// A `Close` verdict was given: further input is ignored.
    Done,
}

impl Session {
    /// A fresh session; requests and echoed bytes are counted into `counters` (the worker's
    /// slot in the server's `Stats`).
    pub fn new(config: Config, counters: &'static Counters) -> Session {
        let state = match config.proto {
            Proto::Echo => State::Echo,
            Proto::Http => State::Http(Http::default()),
        };
        Session {
            config,
            counters,
            state,
        }
    }

    /// Feeds bytes just read from the connection; appends the bytes owed to the client to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow {
        let flow = match &mut self.state {
            State::Echo => {
                // The echo "request" is one read: its simulated cost, then every byte goes back.
                self.config.simulate();
                out.extend_from_slice(input);
                self.counters
                    .bytes
                    .fetch_add(input.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Flow::Continue
            }
            State::Http(http) => http.feed(input, out, &self.config, self.counters),
            State::Done => {
                return Flow::Close {
                    linger: !input.is_empty(),
                };
            }
        };
        if let Flow::Close { .. } = flow {
            self.state = State::Done;
        }
        flow
    }

    /// The client half-closed (read returned 0). Echo has already queued everything it owes;
    /// an HTTP request cut off mid-way is dropped, as no complete request can follow.
    pub fn eof(&mut self) -> Flow {
        self.state = State::Done;
        Flow::Close { linger: false }
    }

    /// Whether part of an HTTP request head has arrived and the rest has not. A server gives a
    /// head `--head-timeout` from its first byte (nginx's `client_header_timeout`), then calls
    /// [`Session::head_timeout`]: every model keeps the clock, since only it knows the time.
    pub fn head_pending(&self) -> bool {
        matches!(&self.state, State::Http(h) if h.head_pending())
    }

    /// `--head-timeout`, for the server's clock.
    pub fn head_limit(&self) -> Option<Duration> {
        self.config.head_timeout
    }

    /// The head deadline passed while [`Session::head_pending`]: appends `408 Request Timeout`
    /// to `out`; the connection closes, lingering (the client may be sending still).
    pub fn head_timeout(&mut self, out: &mut Vec<u8>) -> Flow {
        let flow = match &mut self.state {
            State::Http(h) => h.head_timeout(out, self.counters),
            _ => Flow::Close { linger: false },
        };
        self.state = State::Done;
        flow
    }

    /// Whether input is waiting inside the session because the last `feed` answered as many
    /// requests as one call may (`http::ANSWERS_PER_FEED`). The caller calls `feed` again with
    /// no new bytes — an event loop on its next turn, after the other connections had theirs
    /// — and reads nothing from the socket until this is false: the input held here stays
    /// bounded by one read.
    pub fn backlog(&self) -> bool {
        matches!(&self.state, State::Http(h) if h.backlog())
    }

    /// Whether the session has given its `Close` verdict.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes held between reads: an incomplete head, or a backlog (0 for echo).
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Http(h) => h.buffered(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Session {
        Session::new(Config::new(Proto::Echo), Counters::detached())
    }

    #[test]
    fn echo_returns_every_byte_and_counts_them() {
        let counters = Counters::detached();
        let mut s = Session::new(Config::new(Proto::Echo), counters);
        let mut out = Vec::new();
        assert_eq!(s.feed(b"hello", &mut out), Flow::Continue);
        assert_eq!(s.feed(b"", &mut out), Flow::Continue);
        assert_eq!(s.feed(&[0, 255, 10], &mut out), Flow::Continue);
        assert_eq!(out, b"hello\x00\xff\n");
        assert_eq!(counters.bytes.load(std::sync::atomic::Ordering::Relaxed), 8);
    }

    #[test]
    fn echo_closes_without_linger_on_eof_and_ignores_later_input() {
        let mut s = echo();
        let mut out = Vec::new();
        assert_eq!(s.eof(), Flow::Close { linger: false });
        assert!(s.is_done());
        assert_eq!(s.feed(b"late", &mut out), Flow::Close { linger: true });
        assert!(out.is_empty());
    }

    #[test]
    fn delay_is_applied_per_echoed_read() {
        let mut cfg = Config::new(Proto::Echo);
        cfg.delay = Duration::from_millis(30);
        let mut s = Session::new(cfg, Counters::detached());
        let t = std::time::Instant::now();
        s.feed(b"x", &mut Vec::new());
        s.feed(b"y", &mut Vec::new());
        // A lower bound only: sleeping can take longer on a busy machine, never shorter.
        assert!(t.elapsed() >= Duration::from_millis(60));
    }
}
