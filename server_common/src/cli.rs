//! The flags every server shares (`docs/contract.md` §1), as clap structs that each lesson
//! flattens into its own `Args`. One definition means one spelling and one default everywhere.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::proto;

/// The protocol spoken on every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// A minimal HTTP/1.1 server: `200 OK` to any request, keep-alive, pipelining.
    Http,
    /// Every byte received is sent back.
    Echo,
}

/// The flags of `docs/contract.md` §1 that every server has.
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    /// Address to listen on; port 0 picks a free port (the start-up line says which).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    pub addr: SocketAddr,

    /// Protocol spoken on every connection.
    #[arg(long, value_enum, default_value_t = Proto::Http)]
    pub proto: Proto,

    /// listen(2) backlog; the kernel clamps it to net.core.somaxconn.
    #[arg(long, default_value_t = 4096, value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,

    /// CPU work per HTTP request or per echoed read, in units of 1,000 xorshift rounds.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub work: u32,

    /// Blocking sleep per HTTP request or per echoed read, in milliseconds (a slow backend).
    #[arg(long = "delay-ms", default_value_t = 0, value_name = "N")]
    pub delay_ms: u64,

    /// Close a connection silent for this many seconds (0: never).
    #[arg(long = "idle-timeout", default_value_t = 60, value_name = "SECS")]
    pub idle_timeout: u64,

    /// A request head must arrive whole within this many seconds of its first byte, or the
    /// server answers 408 and closes (0: no limit).
    #[arg(long = "head-timeout", default_value_t = 10, value_name = "SECS")]
    pub head_timeout: u64,
}

impl CommonArgs {
    /// The protocol settings every `Session` of this server is built from.
    pub fn session_config(&self) -> proto::Config {
        proto::Config {
            proto: self.proto,
            work_units: self.work,
            delay: Duration::from_millis(self.delay_ms),
            head_timeout: self.head_timeout(),
            defer: proto::Defer::Never, // a model that runs work elsewhere sets it (lesson 14)
        }
    }

    /// `--idle-timeout` as a `Duration`, or `None` when it is disabled.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout))
    }

    /// `--head-timeout` as a `Duration`, or `None` when it is disabled.
    pub fn head_timeout(&self) -> Option<Duration> {
        (self.head_timeout > 0).then(|| Duration::from_secs(self.head_timeout))
    }
}

/// `--workers N`, for models with a fixed pool. The default is the model's own choice, so each
/// lesson passes it in its doc comment and `default_value_t`; this struct only fixes the
/// spelling and the range.
#[derive(Clone, Debug, Args)]
pub struct WorkerArgs {
    /// Number of workers in the pool (threads or processes).
    #[arg(long, value_name = "N", default_value_t = default_workers(),
          value_parser = clap::value_parser!(u32).range(1..=crate::stats::MAX_WORKERS as i64))]
    pub workers: u32,
}

/// The default pool size: two workers per CPU, a common rule of thumb for blocking pools.
pub fn default_workers() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).min(crate::stats::MAX_WORKERS) as u32
}

/// `--stack-size BYTES`, for models that spawn threads.
#[derive(Clone, Debug, Args)]
pub struct StackArgs {
    /// Stack reserved for each connection thread, in bytes (rounded up to whole pages).
    #[arg(long = "stack-size", value_name = "BYTES", default_value_t = DEFAULT_STACK,
          value_parser = clap::value_parser!(u64).range(MIN_STACK as u64..))]
    pub stack_size: u64,
}

/// 64 KiB: a connection thread's deepest path is lesson 1's `handle_conn` (a 2 KiB read buffer
/// on the stack) plus the HTTP parser and a few frames of formatting, well under 32 KiB; 64 KiB leaves
/// room and lets 10,000 threads reserve 640 MiB of address space instead of 20 GiB with std's
/// 2 MiB default. Only touched pages ever become resident.
pub const DEFAULT_STACK: u64 = 64 * 1024;

/// Below this, glibc refuses the thread (PTHREAD_STACK_MIN plus guard and TLS) or our own frames
/// would overflow it.
pub const MIN_STACK: usize = 32 * 1024;
