//! What every server of the ladder shares and none of them teaches.
//!
//! The lessons differ only in their concurrency model; everything else is here, written once:
//!
//! - [`cli`]: the flags of `docs/contract.md` §1, flattened into each lesson's clap `Args`;
//! - [`net`]: listener setup (lesson 1 spells it out), timeouts, the lingering close;
//! - [`proto`] and its HTTP half: the **sans-IO** protocol session — bytes in, bytes out, a
//!   keep/close verdict — shared by every model;
//! - [`blocking`]: the recv → session → send loop of the blocking models (lessons 1–6);
//! - [`conn`]: the non-blocking connection state machine and connection table of the event
//!   loops (lessons 7–10), answering *want read / want write*;
//! - [`work`]: `--work` and `--delay-ms`, the simulated cost of a request;
//! - [`stats`], [`report`], [`shutdown`]: the counters, the summary, and how SIGINT/SIGTERM
//!   print it;
//! - [`error`], [`log`]: one-line setup errors and throttled diagnostics.
//!
//! The rule for what goes here (`STYLE.md`): if deleting a call would change *which model a
//! lesson is*, it stays in the lesson.

pub mod blocking;
pub mod cli;
pub mod conn;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod log;
pub mod net;
pub mod proto;
pub mod report;
pub mod shutdown;
pub mod stats;
pub mod work;

/// The HTTP response bytes, for tests and clients that check exact bytes.
pub mod responses {
    pub use crate::http::{
        BODY, CONTINUE, HEAD_CLOSE, HEAD_KEEP_ALIVE, HEAD_KEEP_ALIVE_10, MAX_HEAD, OK_CLOSE,
        OK_KEEP_ALIVE, OK_KEEP_ALIVE_10,
    };
}

pub use error::{Context, SetupError, exit_with};
