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
    /// Which requests' work to hand to the caller instead of running it inside `feed`: the
    /// session stops at such a request ([`Session::pending_work`]) until the caller has run it
    /// ([`Session::work_done`]) — a reactor that passes work to a pool of threads (lesson 14).
    pub defer: Defer,
}

/// Which requests' work a session hands to its caller ([`Config::defer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defer {
    /// None: `feed` runs every request's work itself (every model but lesson 14).
    Never,
    /// Those whose work costs anything; the rest are answered at once (libuv's rule).
    Costly,
    /// Every request, even one that costs nothing (lesson 14's `--all-to-pool`).
    Every,
}

impl Config {
    pub fn new(proto: Proto) -> Config {
        Config {
            proto,
            work_units: 0,
            delay: Duration::ZERO,
            head_timeout: None,
            defer: Defer::Never,
        }
    }

    /// Whether a request costing `work` is handed to the caller ([`Config::defer`]).
    pub(crate) fn defers(&self, work: Work) -> bool {
        match self.defer {
            Defer::Never => false,
            Defer::Costly => work.costs(),
            Defer::Every => true,
        }
    }

    /// What one request costs when it asks for nothing itself: `--work` and `--delay-ms`.
    pub(crate) fn work(&self) -> Work {
        Work {
            units: self.work_units,
            delay: self.delay,
        }
    }
}

/// The simulated cost of one request (or echoed read): CPU units, then a blocking sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    pub units: u32,
    pub delay: Duration,
}

impl Work {
    /// Whether running it takes any time at all.
    pub fn costs(self) -> bool {
        self.units > 0 || !self.delay.is_zero()
    }

    /// Runs it on the calling thread (`work::simulate`).
    pub fn run(self) {
        work::simulate(self.units, self.delay);
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
    /// `held`: with `Config::defer`, the read whose work is out, echoed once it is done.
    Echo {
        held: Option<Vec<u8>>,
    },
    Http(Http),
    /// A `Close` verdict was given: further input is ignored.
    Done,
}

impl Session {
    /// A fresh session; requests and echoed bytes are counted into `counters` (the worker's
    /// slot in the server's `Stats`).
    pub fn new(config: Config, counters: &'static Counters) -> Session {
        let state = match config.proto {
            Proto::Echo => State::Echo { held: None },
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
            State::Echo { held: Some(held) } => {
                held.extend_from_slice(input); // work is out: kept, echoed once it is done
                Flow::Continue
            }
            State::Echo { held } => {
                // The echo "request" is one read: its simulated cost, then every byte goes back.
                let work = self.config.work();
                if self.config.defers(work) && !input.is_empty() {
                    *held = Some(input.to_vec());
                    return Flow::Continue;
                }
                work.run();
                echo(input, out, self.counters);
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

    /// With `Config::defer`: the work of the request the session stopped at, for the caller to
    /// run (on another thread, say) before it calls [`Session::work_done`]. Until then the
    /// session answers nothing more, and the caller should read nothing more from the
    /// connection ([`Session::waiting`]).
    pub fn pending_work(&self) -> Option<Work> {
        match &self.state {
            State::Echo { held: Some(_) } => Some(self.config.work()),
            State::Http(h) => h.pending_work(&self.config),
            _ => None,
        }
    }

    /// Whether a request's work is out with the caller.
    pub fn waiting(&self) -> bool {
        self.pending_work().is_some()
    }

    /// The caller has run [`Session::pending_work`]: appends that request's answer to `out`,
    /// and goes on with whatever input waited behind it (possibly stopping at the next costly
    /// request).
    pub fn work_done(&mut self, out: &mut Vec<u8>) -> Flow {
        let flow = match &mut self.state {
            State::Echo { held } => {
                if let Some(bytes) = held.take() {
                    echo(&bytes, out, self.counters);
                }
                Flow::Continue
            }
            State::Http(h) => h.work_done(out, &self.config, self.counters),
            State::Done => Flow::Close { linger: false },
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

/// Echo's answer: every byte back, counted.
fn echo(input: &[u8], out: &mut Vec<u8>, counters: &Counters) {
    out.extend_from_slice(input);
    counters
        .bytes
        .fetch_add(input.len() as u64, std::sync::atomic::Ordering::Relaxed);
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
    fn deferred_echo_holds_the_read_until_its_work_is_done() {
        let mut cfg = Config::new(Proto::Echo);
        (cfg.defer, cfg.work_units) = (Defer::Costly, 1);
        let counters = Counters::detached();
        let mut s = Session::new(cfg, counters);
        let mut out = Vec::new();
        assert_eq!(s.feed(b"ab", &mut out), Flow::Continue);
        assert!(out.is_empty());
        assert_eq!(s.pending_work().map(|w| w.units), Some(1));
        assert_eq!(s.feed(b"c", &mut out), Flow::Continue); // arrived meanwhile: held too
        assert_eq!(s.work_done(&mut out), Flow::Continue);
        assert_eq!(out, b"abc");
        assert!(!s.waiting());
        assert_eq!(counters.bytes.load(std::sync::atomic::Ordering::Relaxed), 3);
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
