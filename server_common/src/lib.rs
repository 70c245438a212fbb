//! What every server of the ladder shares and none of them teaches.
//!
//! The lessons differ only in their concurrency model; everything else is here, written once:
//!
//! - [`cli`]: the flags of `docs/contract.md` §1, flattened into each lesson's clap `Args`;
//! - [`net`]: listener setup (lesson 1 spells it out), the accept errors to retry, the
//!   lingering close's time limit;
//! - [`proto`] and its HTTP half: the **sans-IO** protocol session — bytes in, bytes out, a
//!   keep/close verdict — shared by every model;
//! - [`work`]: `--work` and `--delay-ms`, the simulated cost of a request;
//! - [`stats`], [`report`], [`shutdown`]: the counters, the summary, and how SIGINT/SIGTERM
//!   print it;
//! - [`error`], [`log`]: one-line setup errors and throttled diagnostics.
//!
//! The rule for what goes here: if deleting a call would change *which model a lesson is*, it
//! stays in the lesson. No recv/send loop lives here: lesson 1 (`simple_server`) spells out the
//! blocking connection that lessons 2–6 reuse, lesson 7 (`nonblocking_busy_server`) the
//! non-blocking one that lessons 8–11 reuse.

pub mod cli;
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
