//! # echo_client — the course's load generator
//!
//! A verified, high-rate client for the ladder's two protocols, echo and HTTP/1.1. It is an
//! epoll client (read `engine.rs`: it is the event-loop lessons seen from the other side), it
//! checks every byte that comes back, measures latency into hdrhistogram (merged across
//! threads and processes, never averaged), and reports fairness across connections, which
//! wrk hides.
//!
//! ```text
//!   main ─► cli::Plan ─► limits::prepare ─► run::run ─┬─ thread ─► engine::run (epoll loop)
//!                                                     ├─ thread ─► engine::run
//!                                                     └─ (--processes) fork ─► threads …
//!        ◄─ report::Summary (human | --json) ◄─ merged stats::Tally ◄──────┘
//! ```
//!
//! Modules: [`cli`] flags and the plan; [`limits`] RLIMIT_NOFILE and ports; [`run`] threads,
//! processes, the start barrier and the status line; [`board`] the shared page they post on;
//! [`engine`] the epoll loop; [`workload`] echo and HTTP messages; [`http`] the response
//! parser; [`stats`] counters, histograms, merging; [`report`] the output; [`clock`] time.
//!
//! Exit status: 0 when every message was verified and no error happened; 1 on any error
//! (network errors are excused by `--allow-errors`, wrong bytes never), on a setup failure, or
//! when the server cannot be reached at all; 2 for bad flags; 130 when interrupted.

mod board;
mod cli;
mod clock;
mod engine;
mod http;
mod limits;
mod report;
mod run;
mod stats;
mod workload;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use nix::errno::Errno;

use crate::cli::{Args, Plan};
use crate::stats::Failure;

fn main() -> ExitCode {
    clock::start(); // before any fork or thread: every process shares this origin
    let command: Vec<String> = std::env::args().collect();
    let started_at = clock::utc_now_rfc3339();
    let plan = Plan::from_args(Args::parse()); // bad flags: clap's message, exit 2

    if let Err(line) = limits::prepare(&plan) {
        eprintln!("echo_client: {line}");
        return ExitCode::FAILURE;
    }
    let outcome = match run::run(&plan) {
        Ok(o) => o,
        Err(line) => {
            eprintln!("echo_client: {line}");
            return ExitCode::FAILURE;
        }
    };
    let t = &outcome.tally;
    if t.n.connects_ok == 0 && t.n.connects_attempted > 0 && !outcome.interrupted {
        // Not one connection: the server is down or unreachable. One line, no report.
        let cause = match i32::try_from(t.n.connect_errno) {
            Ok(e) if e != 0 => std::io::Error::from_raw_os_error(e).to_string(),
            _ => format!(
                "{} connect timeout(s)",
                t.errors_of(Failure::ConnectTimeout)
            ),
        };
        eprintln!("echo_client: cannot connect to {}: {cause}", plan.addr);
        return ExitCode::FAILURE;
    }

    let wrong = Failure::ALL
        .iter()
        .any(|&f| f.is_verification() && t.errors_of(f) > 0);
    let code: u8 = if outcome.interrupted {
        130
    } else if wrong || (t.errors_total() > 0 && !plan.allow_errors) {
        1
    } else {
        0
    };
    let summary = report::Summary::new(&plan, &outcome, code == 0);
    let text = if plan.json {
        let mut j = summary.json(&command, &started_at).to_string();
        j.push('\n');
        j
    } else {
        summary.human()
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) must not turn a finished run into a panic.
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.raw_os_error() != Some(Errno::EPIPE as i32)
    {
        eprintln!("echo_client: cannot write the report: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::from(code)
}
