//! The sweeps: every rung measured along the axes where models break — idle connections
//! beside busy ones, concurrency, CPU work per request, a slow backend, offered load (open
//! loop), and connections held — each point run in several rounds, each cell the median with
//! its min–max. Tables, line charts and README rows are made from the cells (report.rs).
//!
//! Every run is HTTP keep-alive with echo_client against a fresh server (`--idle-timeout 600`
//! so no idle sweep closes a connection the harness holds), so the sweeps differ from one
//! another in exactly one variable. Runs with the same setup (100 busy connections, nothing
//! else, appears in four sweeps) are measured once per round and shared.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client;
use crate::idle::{Held, IdleConns};
use crate::procs;
use crate::run::{Running, Subject};
use crate::scenarios::{Load, Mode, Proto};
use crate::spread::Spread;

/// The axis a sweep moves along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Idle connections held beside [`BUSY`] busy ones.
    Idle,
    /// Busy keep-alive connections.
    Conns,
    /// `--work` units per request, at [`BUSY`] connections.
    Work,
    /// `--delay-ms` per request, at [`BUSY`] connections.
    Delay,
    /// Offered requests per second (open loop), as fractions of the rung's own closed-loop
    /// rate at [`BUSY`] connections.
    Rate,
    /// Idle connections held, nothing else: memory and threads per connection.
    Held,
}

/// The busy connections of every sweep but Conns and Held (2 in the smoke run).
pub const BUSY: u32 = 100;

/// A sweep: its id (file names, `--scenario`), what it shows, and its points.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub id: &'static str,
    pub title: &'static str,
    /// The workload in words, for the table's heading.
    pub about: String,
    pub axis: Axis,
    pub x_label: &'static str,
    pub points: Vec<f64>,
    /// Only these rungs (the offered-load sweep), or every rung.
    pub only: Option<&'static [&'static str]>,
    /// nginx rows too (the sweeps nginx can take part in: no --work or --delay-ms there).
    pub anchors: bool,
}

/// The rungs of the offered-load sweep: a blocking model of each kind and every event loop.
pub const RATE_RUNGS: &[&str] = &[
    "cgi_thread_server",
    "threadpool_accept_main",
    "poll_server",
    "epoll_et_server",
    "multi_epoll_server",
    "tokio_server",
    "io_uring_server",
];

/// The ids, in run order (`rate` last: it reads the closed-loop rates measured before it).
pub const IDS: &[&str] = &["idle", "conns", "work", "delay", "held", "rate"];

/// How long the load of one run lasts.
pub fn run_time(mode: Mode) -> Duration {
    match mode {
        Mode::Smoke => Duration::from_millis(300),
        Mode::Quick => Duration::from_secs(1),
        Mode::Full => Duration::from_secs(3),
    }
}

/// Rounds per cell: the full run takes the median of three.
pub fn rounds(mode: Mode) -> u32 {
    match mode {
        Mode::Smoke | Mode::Quick => 1,
        Mode::Full => 3,
    }
}

fn busy(mode: Mode) -> u32 {
    if mode == Mode::Smoke { 2 } else { BUSY }
}

/// The sweeps of a mode. Quick keeps the points that show each model's break; full adds the
/// far ends.
pub fn sweeps(mode: Mode) -> Vec<Sweep> {
    let pick = |smoke: &[f64], quick: &[f64], full: &[f64]| -> Vec<f64> {
        match mode {
            Mode::Smoke => smoke.to_vec(),
            Mode::Quick => quick.to_vec(),
            Mode::Full => full.to_vec(),
        }
    };
    let b = busy(mode);
    vec![
        Sweep {
            id: "idle",
            title: "Busy beside idle",
            about: format!(
                "{b} busy keep-alive HTTP connections (closed loop) beside N idle connections the \
                 server holds; server CPU per request over the busy run"
            ),
            axis: Axis::Idle,
            x_label: "idle connections",
            points: pick(
                &[0.0, 20.0],
                &[0.0, 1_000.0, 5_000.0],
                &[0.0, 1_000.0, 5_000.0, 10_000.0, 18_000.0],
            ),
            only: None,
            anchors: true,
        },
        Sweep {
            id: "conns",
            title: "Concurrency",
            about: "N busy keep-alive HTTP connections, closed loop".into(),
            axis: Axis::Conns,
            x_label: "busy connections",
            points: pick(
                &[1.0, 2.0],
                &[1.0, 10.0, 100.0, 1_000.0],
                &[1.0, 10.0, 100.0, 1_000.0, 10_000.0],
            ),
            only: None,
            anchors: true,
        },
        Sweep {
            id: "work",
            title: "CPU work per request",
            about: format!(
                "{b} busy keep-alive HTTP connections, `--work N` units of CPU per request (a unit \
                 is 1,000 rounds of xorshift-multiply)"
            ),
            axis: Axis::Work,
            x_label: "--work units per request",
            points: pick(&[0.0, 10.0], &[0.0, 100.0], &[0.0, 10.0, 100.0, 1_000.0]),
            only: None,
            anchors: false,
        },
        Sweep {
            id: "delay",
            title: "Slow backend",
            about: format!(
                "{b} busy keep-alive HTTP connections, `--delay-ms N`: a blocking sleep per request"
            ),
            axis: Axis::Delay,
            x_label: "--delay-ms per request",
            points: pick(&[0.0, 1.0], &[0.0, 10.0], &[0.0, 1.0, 10.0]),
            only: None,
            anchors: false,
        },
        Sweep {
            id: "held",
            title: "Memory per connection",
            about: "N idle connections held, nothing else: server PSS (children included) and \
                    threads, over the idle server's own"
                .into(),
            axis: Axis::Held,
            x_label: "connections held",
            points: pick(
                &[20.0],
                &[100.0, 1_000.0],
                &[100.0, 1_000.0, 5_000.0, 10_000.0],
            ),
            only: None,
            anchors: false,
        },
        Sweep {
            id: "rate",
            title: "Offered load, open loop",
            about: format!(
                "{b} keep-alive HTTP connections sending at a fixed total rate (echo_client \
                 `--rate`, latency from each request's intended send time), from below to past \
                 each rung's own closed-loop rate at {b} connections; a pool runs with \
                 `--workers {b}` here, so that every connection has a worker and the latency of \
                 every request is measured"
            ),
            axis: Axis::Rate,
            x_label: "offered requests per second",
            points: pick(
                &[0.5],
                &[0.5, 0.9, 1.25],
                &[0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5],
            ),
            only: Some(RATE_RUNGS),
            anchors: false,
        },
    ]
}

/// One run's workload. Equal setups are measured once per round and shared between sweeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Setup {
    pub busy: u32,
    pub idle: u64,
    pub work: u32,
    pub delay_ms: u64,
    /// Open loop at this many requests per second in total.
    pub rate: Option<u64>,
    /// Hold `idle` connections and measure memory; no load.
    pub hold: bool,
    /// `--workers N` for a pool rung (the offered-load sweep sizes pools to the connections).
    pub workers: Option<u32>,
}

impl Setup {
    fn plain(busy: u32) -> Setup {
        Setup {
            busy,
            idle: 0,
            work: 0,
            delay_ms: 0,
            rate: None,
            hold: false,
            workers: None,
        }
    }
}

/// One run of one setup.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Completed requests per second.
    pub rate: Option<f64>,
    /// Server CPU (user + system, the whole process group, from /proc) per completed request.
    pub cpu_us: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub completed: Option<u64>,
    pub errors: u64,
    pub error_text: String,
    /// Busy connections that completed at least one request, of those opened.
    pub served: Option<(u64, u64)>,
    /// The idle connections: what the server held of those asked for (the fewest seen, before
    /// or after the load).
    pub idle: Option<Held>,
    pub pss_kib: Option<u64>,
    pub threads: Option<u64>,
    /// Held sweep: PSS and threads over the idle server's, per connection held.
    pub bytes_per_conn: Option<f64>,
    pub threads_per_conn: Option<f64>,
    /// Held sweep: where the memory per connection goes, in bytes per connection held, the same
    /// difference as `bytes_per_conn` (procfs::Breakdown). Thread stacks, other anonymous and
    /// file-backed mappings split the PSS (they add up to `bytes_per_conn` within rounding);
    /// page tables and kernel stacks are kernel memory outside PSS, kernel stacks machine-wide.
    pub stack_bytes_per_conn: Option<f64>,
    pub anon_bytes_per_conn: Option<f64>,
    pub file_bytes_per_conn: Option<f64>,
    pub page_table_bytes_per_conn: Option<f64>,
    pub kernel_stack_bytes_per_conn: Option<f64>,
    /// Crashed, timed out, could not start: in words. Empty when the run went through.
    pub trouble: String,
}

impl Sample {
    /// Whether the rung served only part of what was asked (busy or idle connections).
    pub fn partial(&self) -> bool {
        self.served.is_some_and(|(s, t)| s < t) || self.idle.is_some_and(|h| h.held() < h.asked)
    }

    pub fn json(&self) -> Value {
        json!({
            "rate": self.rate, "cpu_us": self.cpu_us, "p50_us": self.p50_us,
            "p99_us": self.p99_us, "p999_us": self.p999_us, "max_us": self.max_us,
            "completed": self.completed, "errors": self.errors, "error_text": self.error_text,
            "served": self.served.map(|(a, b)| json!([a, b])),
            "idle": self.idle.map(|h| json!({"asked": h.asked, "connected": h.connected,
                                              "queued": h.queued, "dropped": h.dropped})),
            "pss_kib": self.pss_kib, "threads": self.threads,
            "bytes_per_conn": self.bytes_per_conn, "threads_per_conn": self.threads_per_conn,
            "stack_bytes_per_conn": self.stack_bytes_per_conn,
            "anon_bytes_per_conn": self.anon_bytes_per_conn,
            "file_bytes_per_conn": self.file_bytes_per_conn,
            "page_table_bytes_per_conn": self.page_table_bytes_per_conn,
            "kernel_stack_bytes_per_conn": self.kernel_stack_bytes_per_conn,
            "trouble": self.trouble,
        })
    }

    pub fn from_json(v: &Value) -> Sample {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Sample {
            rate: f("rate"),
            cpu_us: f("cpu_us"),
            p50_us: f("p50_us"),
            p99_us: f("p99_us"),
            p999_us: f("p999_us"),
            max_us: f("max_us"),
            completed: u("completed"),
            errors: u("errors").unwrap_or(0),
            error_text: s("error_text"),
            served: v
                .get("served")
                .and_then(Value::as_array)
                .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))),
            idle: v.get("idle").filter(|i| i.is_object()).map(|i| Held {
                asked: i["asked"].as_u64().unwrap_or(0),
                connected: i["connected"].as_u64().unwrap_or(0),
                queued: i["queued"].as_u64().unwrap_or(0),
                dropped: i["dropped"].as_u64().unwrap_or(0),
            }),
            pss_kib: u("pss_kib"),
            threads: u("threads"),
            bytes_per_conn: f("bytes_per_conn"),
            threads_per_conn: f("threads_per_conn"),
            // Absent from results of schema 2 and older: None, and their cells say "–".
            stack_bytes_per_conn: f("stack_bytes_per_conn"),
            anon_bytes_per_conn: f("anon_bytes_per_conn"),
            file_bytes_per_conn: f("file_bytes_per_conn"),
            page_table_bytes_per_conn: f("page_table_bytes_per_conn"),
            kernel_stack_bytes_per_conn: f("kernel_stack_bytes_per_conn"),
            trouble: s("trouble"),
        }
    }
}

/// One rung at one point of one sweep: its rounds.
#[derive(Clone, Debug)]
pub struct Cell {
    pub sweep: String,
    pub rung: String,
    pub anchor: bool,
    /// The point: idle connections, busy connections, work units, delay ms, connections held —
    /// or, in the offered-load sweep, the offered rate in requests per second.
    pub x: f64,
    /// Offered-load sweep: the fraction of the rung's closed-loop rate this point offers.
    pub fraction: Option<f64>,
    pub samples: Vec<Sample>,
    /// The stamp line of the run that measured it.
    pub measured: String,
}

impl Cell {
    /// The spread of one metric over the rounds that have it.
    pub fn spread(&self, metric: Metric) -> Option<Spread> {
        Spread::of(self.samples.iter().filter_map(|s| metric.of(s)))
    }

    pub fn partial(&self) -> bool {
        self.samples.iter().any(Sample::partial)
    }

    /// What went wrong or was left unserved, in words ("" when nothing).
    pub fn notes(&self) -> String {
        let mut notes: Vec<String> = Vec::new();
        let mut add = |n: String| {
            if !n.is_empty() && !notes.contains(&n) {
                notes.push(n);
            }
        };
        for s in &self.samples {
            add(s.trouble.clone());
            if let Some((served, total)) = s.served.filter(|(a, b)| a < b) {
                add(format!("served {} of {}", th(served), th(total)));
            }
            if let Some(h) = s.idle.filter(|h| h.held() < h.asked) {
                add(format!("held {} of {}", th(h.held()), th(h.asked)));
            }
            if s.errors > 0 {
                add(s.error_text.clone());
            }
        }
        notes.join("; ")
    }

    pub fn json(&self) -> Value {
        json!({
            "sweep": self.sweep, "rung": self.rung, "anchor": self.anchor, "x": self.x,
            "fraction": self.fraction, "measured": self.measured,
            "samples": self.samples.iter().map(Sample::json).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Value) -> Cell {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Cell {
            sweep: s("sweep"),
            rung: s("rung"),
            anchor: v.get("anchor").and_then(Value::as_bool).unwrap_or(false),
            x: v.get("x").and_then(Value::as_f64).unwrap_or(0.0),
            fraction: v.get("fraction").and_then(Value::as_f64),
            samples: v
                .get("samples")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Sample::from_json).collect())
                .unwrap_or_default(),
            measured: s("measured"),
        }
    }
}

fn th(n: u64) -> String {
    crate::results::thousands(n as f64)
}

/// What a table or chart shows of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Rate,
    CpuUs,
    P50,
    P99,
    P999,
    PssMib,
    BytesPerConn,
    ThreadsPerConn,
    /// Where the memory per connection goes (the held sweep): thread stacks, other anonymous
    /// mappings, file mappings, page tables, kernel stacks.
    StackBytes,
    AnonBytes,
    FileBytes,
    PageTableBytes,
    KernelStackBytes,
}

impl Metric {
    pub fn of(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::Rate => s.rate,
            Metric::CpuUs => s.cpu_us,
            Metric::P50 => s.p50_us,
            Metric::P99 => s.p99_us,
            Metric::P999 => s.p999_us,
            Metric::PssMib => s.pss_kib.map(|k| k as f64 / 1024.0),
            Metric::BytesPerConn => s.bytes_per_conn,
            Metric::ThreadsPerConn => s.threads_per_conn,
            Metric::StackBytes => s.stack_bytes_per_conn,
            Metric::AnonBytes => s.anon_bytes_per_conn,
            Metric::FileBytes => s.file_bytes_per_conn,
            Metric::PageTableBytes => s.page_table_bytes_per_conn,
            Metric::KernelStackBytes => s.kernel_stack_bytes_per_conn,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Rate => "requests per second",
            Metric::CpuUs => "server CPU per request",
            Metric::P50 => "p50 latency",
            Metric::P99 => "p99 latency",
            Metric::P999 => "p99.9 latency",
            Metric::PssMib => "server memory (PSS)",
            Metric::BytesPerConn => "memory per connection",
            Metric::ThreadsPerConn => "threads per connection",
            Metric::StackBytes => "stacks per connection",
            Metric::AnonBytes => "other anonymous memory per connection",
            Metric::FileBytes => "file-backed memory per connection",
            Metric::PageTableBytes => "page tables per connection",
            Metric::KernelStackBytes => "kernel stacks per connection",
        }
    }

    /// The unit on a chart's axis (values are plotted in it).
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Rate => "req/s",
            Metric::CpuUs => "µs",
            Metric::P50 | Metric::P99 | Metric::P999 => "ms",
            Metric::PssMib => "MiB",
            Metric::BytesPerConn
            | Metric::StackBytes
            | Metric::AnonBytes
            | Metric::FileBytes
            | Metric::PageTableBytes
            | Metric::KernelStackBytes => "B",
            Metric::ThreadsPerConn => "",
        }
    }

    /// The value in the chart's unit.
    pub fn plotted(self, v: f64) -> f64 {
        match self {
            Metric::P50 | Metric::P99 | Metric::P999 => v / 1000.0,
            _ => v,
        }
    }

    /// A value as a table shows it.
    pub fn show(self, v: f64) -> String {
        match self {
            Metric::Rate => crate::results::thousands(v),
            Metric::CpuUs if v >= 100.0 => format!("{v:.0} µs"),
            Metric::CpuUs => format!("{v:.1} µs"),
            Metric::P50 | Metric::P99 | Metric::P999 => crate::results::latency(v),
            Metric::PssMib => format!("{v:.1} MiB"),
            Metric::ThreadsPerConn => format!("{v:.2}"),
            Metric::BytesPerConn
            | Metric::StackBytes
            | Metric::AnonBytes
            | Metric::FileBytes
            | Metric::PageTableBytes
            | Metric::KernelStackBytes => {
                // The breakdown's differences may be negative (a heap that shrank, another
                // process's threads gone from KernelStack).
                if v.abs() >= 10_240.0 {
                    format!("{:.1} KiB", v / 1024.0)
                } else {
                    format!("{} B", crate::results::thousands(v))
                }
            }
        }
    }
}

/// What each sweep tabulates (the first is also its chart, with the second where listed in
/// [`charts`]).
pub fn metrics(axis: Axis) -> &'static [Metric] {
    match axis {
        Axis::Idle => &[Metric::CpuUs, Metric::Rate, Metric::P99],
        Axis::Conns => &[Metric::Rate, Metric::P99, Metric::CpuUs],
        Axis::Work | Axis::Delay => &[Metric::Rate, Metric::P99],
        Axis::Rate => &[Metric::P99, Metric::P50, Metric::P999, Metric::Rate],
        Axis::Held => &[Metric::BytesPerConn, Metric::PssMib, Metric::ThreadsPerConn],
    }
}

/// The charts of a sweep: (metric, log-scale y).
pub fn charts(axis: Axis) -> &'static [(Metric, bool)] {
    match axis {
        Axis::Idle => &[(Metric::CpuUs, true), (Metric::Rate, false)],
        Axis::Conns => &[(Metric::Rate, false), (Metric::P99, true)],
        Axis::Work | Axis::Delay => &[(Metric::Rate, true)],
        Axis::Rate => &[(Metric::P99, true)],
        Axis::Held => &[(Metric::PssMib, true)],
    }
}

/// A subject of the sweeps: a rung, or nginx.
pub struct Who<'a> {
    pub subject: Subject<'a>,
    pub name: String,
    pub anchor: bool,
}

/// Runs every sweep in `sweeps` for every subject, `rounds` times, and returns the cells.
/// `progress` is told before each run, `checkpoint` after each sweep (with every cell so far).
pub fn run(
    sweeps: &[Sweep],
    who: &[Who],
    mode: Mode,
    echo_client: &Path,
    progress: &dyn Fn(&str),
    checkpoint: &dyn Fn(&[Cell]),
) -> Vec<Cell> {
    let mut cache: HashMap<(String, Setup), Vec<Sample>> = HashMap::new();
    let mut cells = Vec::new();
    let rounds = rounds(mode);
    for sweep in sweeps {
        let whom: Vec<&Who> = who
            .iter()
            .filter(|w| if w.anchor { sweep.anchors } else { true })
            .filter(|w| sweep.only.is_none_or(|o| o.contains(&w.name.as_str())))
            .collect();
        // Rounds outside, rungs inside: a slow minute on the shared machine lands on one
        // round of many rungs, not on every round of one.
        let mut these: Vec<Cell> = Vec::new();
        if sweep.axis == Axis::Rate {
            // Each rung's closed-loop rate, all its rounds first (the other sweeps measured it
            // for most rungs): every round then offers the same rates, fractions of its median.
            for w in &whom {
                let key = (w.name.clone(), calibration(w, mode));
                while cache.get(&key).map_or(0, Vec::len) < rounds as usize {
                    progress(&format!("{} · {} closed loop", w.name, sweep.id));
                    let s = sample(&w.subject, &key.1, mode, echo_client);
                    cache.entry(key.clone()).or_default().push(s);
                }
            }
        }
        for round in 0..rounds as usize {
            for w in &whom {
                for &x in &sweep.points {
                    let Some((setup, value)) = setup_of(sweep, x, w, mode, &cache) else {
                        continue;
                    };
                    // More idle connections than a rung held at a smaller point would only be
                    // refused or queued too (a pool, lesson 1, select's FD_SETSIZE): the cell
                    // says so instead of waiting for connects that cannot complete.
                    if let Some(why) = short_of(&cache, &w.name, sweep, x, mode) {
                        push_cell(
                            &mut these,
                            sweep,
                            w,
                            x,
                            value,
                            Sample {
                                trouble: why,
                                ..Sample::default()
                            },
                        );
                        continue;
                    }
                    let key = (w.name.clone(), setup);
                    let runs = cache.entry(key).or_default();
                    if runs.len() <= round {
                        progress(&format!("{} · {} {}", w.name, sweep.id, x));
                        runs.push(sample(&w.subject, &setup, mode, echo_client));
                    }
                    // This round's run of the setup (shared with other sweeps that contain it).
                    let sample = runs[round.min(runs.len() - 1)].clone();
                    push_cell(&mut these, sweep, w, x, value, sample);
                }
            }
        }
        cells.extend(these);
        checkpoint(&cells);
    }
    cells
}

/// Adds a round's sample to the cell of (`w`, point `x`), making the cell on its first round.
fn push_cell(cells: &mut Vec<Cell>, sweep: &Sweep, w: &Who, x: f64, value: f64, sample: Sample) {
    let here = |c: &&mut Cell| {
        c.rung == w.name
            && match fraction(sweep, x) {
                Some(f) => c.fraction == Some(f),
                None => c.x == value,
            }
    };
    match cells.iter_mut().find(here) {
        Some(c) => c.samples.push(sample),
        None => cells.push(Cell {
            sweep: sweep.id.to_string(),
            rung: w.name.clone(),
            anchor: w.anchor,
            x: value,
            fraction: fraction(sweep, x),
            samples: vec![sample],
            measured: String::new(),
        }),
    }
}

/// For the sweeps that add idle connections: why point `x` need not run for `rung` — a smaller
/// point of the same sweep already found it holding fewer connections than asked.
fn short_of(
    cache: &HashMap<(String, Setup), Vec<Sample>>,
    rung: &str,
    sweep: &Sweep,
    x: f64,
    mode: Mode,
) -> Option<String> {
    if !matches!(sweep.axis, Axis::Idle | Axis::Held) {
        return None;
    }
    sweep
        .points
        .iter()
        .filter(|&&p| p < x)
        .filter_map(|&p| {
            let (setup, _) = setup_of_plain(sweep, p, mode);
            let held = cache
                .get(&(rung.to_string(), setup))?
                .iter()
                .filter_map(|s| s.idle)
                // Less than half: a model's wall (a pool's workers, lesson 1, FD_SETSIZE), not
                // a slow moment; a rung that held most of them is asked for more all the same.
                .find(|h| h.held() < h.asked / 2)?;
            Some(format!(
                "not run: held only {} of {} at the smaller point",
                th(held.held()),
                th(held.asked)
            ))
        })
        .next()
}

/// [`setup_of`] for the sweeps that need no calibration.
fn setup_of_plain(sweep: &Sweep, x: f64, mode: Mode) -> (Setup, f64) {
    let who = Who {
        subject: Subject::Nginx { workers: 0 },
        name: String::new(),
        anchor: false,
    };
    setup_of(sweep, x, &who, mode, &HashMap::new()).unwrap_or((Setup::plain(busy(mode)), x))
}

fn fraction(sweep: &Sweep, x: f64) -> Option<f64> {
    (sweep.axis == Axis::Rate).then_some(x)
}

/// Whether `rung` is a pool (a fixed number of workers: lessons 4–6).
pub fn is_pool(rung: &str) -> bool {
    conformance::rungs::RUNGS
        .iter()
        .any(|r| r.krate == rung && r.caps.concurrency == conformance::rungs::Concurrency::Workers)
}

/// The closed-loop run the offered-load sweep calibrates `w` against: [`BUSY`] connections,
/// nothing else — with a pool sized to them (`--workers`): a pool of fewer workers than
/// connections leaves the rest unserved, and an open loop records latency only for requests
/// that complete, so the pool would look fast.
fn calibration(w: &Who, mode: Mode) -> Setup {
    let b = busy(mode);
    Setup {
        workers: is_pool(&w.name).then_some(b),
        ..Setup::plain(b)
    }
}

/// The setup of point `x` of `sweep` for `w`, and the x value to record. The offered-load
/// sweep offers a fraction of the rung's closed-loop rate ([`calibration`]): the median of the
/// cache's runs of it, or `None` if there are none or the rung served nothing.
fn setup_of(
    sweep: &Sweep,
    x: f64,
    w: &Who,
    mode: Mode,
    cache: &HashMap<(String, Setup), Vec<Sample>>,
) -> Option<(Setup, f64)> {
    let b = busy(mode);
    let mut s = Setup::plain(b);
    match sweep.axis {
        Axis::Idle => s.idle = x as u64,
        Axis::Conns => s.busy = x as u32,
        Axis::Work => s.work = x as u32,
        Axis::Delay => s.delay_ms = x as u64,
        Axis::Held => {
            s = Setup {
                busy: 0,
                idle: x as u64,
                hold: true,
                ..s
            }
        }
        Axis::Rate => {
            let calibration = calibration(w, mode);
            let closed = cache
                .get(&(w.name.clone(), calibration))
                .and_then(|v| Spread::of(v.iter().filter_map(|s| s.rate)))?;
            let rate = (closed.median * x).round().max(1.0) as u64;
            return Some((
                Setup {
                    rate: Some(rate),
                    ..calibration
                },
                rate as f64,
            ));
        }
    }
    Some((s, x))
}

/// One run: a fresh server, the idle connections if any, the load (or the hold), the server's
/// CPU over the load and its peak memory and threads.
pub fn sample(subject: &Subject, setup: &Setup, mode: Mode, echo_client: &Path) -> Sample {
    let mut args: Vec<String> = Vec::new();
    if setup.work > 0 {
        args.extend(["--work".into(), setup.work.to_string()]);
    }
    if setup.delay_ms > 0 {
        args.extend(["--delay-ms".into(), setup.delay_ms.to_string()]);
    }
    if let Some(n) = setup.workers {
        args.extend(["--workers".into(), n.to_string()]);
    }
    let running = match Running::start(subject, &args) {
        Ok(r) => r,
        Err(e) => {
            return Sample {
                trouble: e,
                ..Sample::default()
            };
        }
    };
    std::thread::sleep(Duration::from_millis(150)); // start-up done: the baseline is idle
    let addr = running.addr();
    let pgid = running.pgid();
    // Forking and spawning rungs take a while to accept thousands; give them time.
    let settle = Duration::from_secs(10 + setup.idle / 500);
    let mut s = Sample::default();
    if setup.hold {
        let before = crate::procfs::sample(pgid);
        let split_before = crate::procfs::breakdown(pgid);
        let idle = IdleConns::open(addr, setup.idle, settle);
        std::thread::sleep(Duration::from_millis(300)); // threads reach their first recv
        let after = crate::procfs::sample(pgid);
        let split_after = crate::procfs::breakdown(pgid);
        let held = idle.held();
        let stopped = running.stop();
        drop(idle);
        s.idle = Some(held);
        s.pss_kib = Some(after.pss_kib);
        s.threads = Some(after.threads);
        // Per connection only where the rung holds every one itself: a division by the 4
        // connections a pool serves out of 10,000 asked for would mean nothing.
        if held.held() == held.asked && held.asked > 0 {
            let n = held.asked as f64;
            s.bytes_per_conn =
                Some(after.pss_kib.saturating_sub(before.pss_kib) as f64 * 1024.0 / n);
            s.threads_per_conn = Some(after.threads.saturating_sub(before.threads) as f64 / n);
            // Signed: the three parts of PSS then add up to the total even where one shrank.
            let per_conn = |f: fn(&crate::procfs::Breakdown) -> Option<u64>| {
                Some((f(&split_after)? as f64 - f(&split_before)? as f64) * 1024.0 / n)
            };
            s.stack_bytes_per_conn = per_conn(|b| Some(b.stacks_kib));
            s.anon_bytes_per_conn = per_conn(|b| Some(b.anon_kib));
            s.file_bytes_per_conn = per_conn(|b| Some(b.file_kib));
            s.page_table_bytes_per_conn = per_conn(|b| Some(b.page_tables_kib));
            s.kernel_stack_bytes_per_conn = per_conn(|b| b.kernel_stack_kib);
        }
        s.trouble = trouble(&stopped, false);
        return s;
    }
    let idle = (setup.idle > 0).then(|| IdleConns::open(addr, setup.idle, settle));
    let held_before = idle.as_ref().map(IdleConns::held);
    let d = run_time(mode);
    let load = Load::Closed {
        proto: Proto::Http,
        conns: setup.busy,
        messages: None,
        duration: Some(d),
        close: false,
        mix: None,
    };
    // A connect or reply that takes a second longer than the run is a starved connection (a
    // full pool, an accept queue full of idle ones): counted, not waited for.
    let timeout = format!("{}ms", (d + Duration::from_secs(1)).as_millis());
    let rate = setup.rate.map(|r| r.to_string());
    let mut extra = vec!["--timeout", timeout.as_str()];
    if let Some(r) = &rate {
        extra.extend(["--rate", r.as_str()]);
    }
    let cpu0 = procs::group_cpu(pgid);
    let c = client::echo_client_with(
        echo_client,
        addr,
        &load,
        d + Duration::from_secs(60),
        &extra,
    );
    let cpu = procs::group_cpu(pgid) - cpu0;
    let held_after = idle.as_ref().map(IdleConns::held);
    let stopped = running.stop();
    drop(idle);
    // The accept queue is read before the load: after it, the busy connections a starved
    // server never accepted wait there too. Closures by the server count whenever seen.
    s.idle = held_before.map(|a| Held {
        dropped: held_after.map_or(a.dropped, |b| a.dropped.max(b.dropped)),
        ..a
    });
    s.rate = c.rate;
    s.completed = c.completed;
    s.cpu_us = c.completed.filter(|&n| n > 0).map(|n| cpu * 1e6 / n as f64);
    s.p50_us = c.p50_us;
    s.p99_us = c.p99_us;
    s.p999_us = c
        .json
        .as_ref()
        .and_then(|j| j.pointer("/latency_us/p99_9"))
        .and_then(Value::as_f64);
    s.max_us = c.max_us;
    s.errors = c.errors;
    s.error_text = c.error_text.clone();
    s.served = c.served_conns;
    s.pss_kib = Some(stopped.peak.pss_kib);
    s.threads = Some(stopped.peak.threads);
    s.trouble = trouble(&stopped, c.timed_out);
    if let Some(f) = c.failure.filter(|_| s.trouble.is_empty()) {
        s.trouble = f.trim_start_matches("echo_client: ").to_string();
    }
    s
}

fn trouble(stopped: &procs::Stopped, timed_out: bool) -> String {
    match (&stopped.crashed, timed_out) {
        (Some(status), _) => format!("crashed ({status})"),
        (None, true) => "timed out".into(),
        (None, false) => String::new(),
    }
}

/// Merges freshly measured cells into stored ones: a re-measured (sweep, rung, point) replaces
/// the stored one; the rest keep their own stamps.
pub fn merge(stored: Vec<Cell>, fresh: Vec<Cell>) -> Vec<Cell> {
    let same = |a: &Cell, b: &Cell| {
        a.sweep == b.sweep
            && a.rung == b.rung
            && match (a.fraction, b.fraction) {
                (Some(p), Some(q)) => p == q,
                _ => a.x == b.x,
            }
    };
    let mut out: Vec<Cell> = stored
        .into_iter()
        .filter(|o| !fresh.iter().any(|n| same(o, n)))
        .collect();
    out.extend(fresh);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64, cpu: f64) -> Sample {
        Sample {
            rate: Some(rate),
            cpu_us: Some(cpu),
            served: Some((100, 100)),
            ..Sample::default()
        }
    }

    #[test]
    fn a_cell_is_the_median_of_its_rounds() {
        let c = Cell {
            sweep: "idle".into(),
            rung: "poll_server".into(),
            anchor: false,
            x: 5000.0,
            fraction: None,
            samples: vec![sample(100.0, 9.0), sample(300.0, 30.0), sample(200.0, 10.0)],
            measured: String::new(),
        };
        let r = c.spread(Metric::Rate).expect("rates");
        assert_eq!((r.median, r.min, r.max), (200.0, 100.0, 300.0));
        let cpu = c.spread(Metric::CpuUs).expect("cpu");
        assert_eq!(cpu.median, 10.0);
        assert!(!c.partial());
        assert_eq!(c.notes(), "");
    }

    #[test]
    fn partial_service_is_noted_not_averaged_away() {
        let mut s = sample(50.0, 20.0);
        s.served = Some((4, 100));
        s.idle = Some(Held {
            asked: 5_000,
            connected: 5_000,
            queued: 3_976,
            dropped: 0,
        });
        let c = Cell {
            sweep: "idle".into(),
            rung: "prefork_server".into(),
            anchor: false,
            x: 5000.0,
            fraction: None,
            samples: vec![s.clone(), s],
            measured: String::new(),
        };
        assert!(c.partial());
        assert_eq!(c.notes(), "served 4 of 100; held 1,024 of 5,000");
    }

    #[test]
    fn samples_and_cells_survive_a_json_round_trip() {
        let mut s = sample(1234.5, 7.5);
        s.idle = Some(Held {
            asked: 10,
            connected: 9,
            queued: 1,
            dropped: 2,
        });
        s.bytes_per_conn = Some(168.0);
        s.stack_bytes_per_conn = Some(16_384.0);
        s.anon_bytes_per_conn = Some(-12.5);
        s.kernel_stack_bytes_per_conn = Some(16_400.0);
        s.trouble = "timed out".into();
        let c = Cell {
            sweep: "rate".into(),
            rung: "epoll_et_server".into(),
            anchor: false,
            x: 45_000.0,
            fraction: Some(0.9),
            samples: vec![s],
            measured: "Measured now".into(),
        };
        let back = Cell::from_json(&c.json());
        assert_eq!(back.json(), c.json());
        assert_eq!(back.samples[0].anon_bytes_per_conn, Some(-12.5));
    }

    #[test]
    fn a_sample_of_an_older_results_file_has_no_breakdown() {
        // Schema 2 wrote no breakdown: its samples read back with None, not 0.
        let old = json!({"pss_kib": 3000, "bytes_per_conn": 17_600.0, "threads_per_conn": 1.0,
                         "errors": 0, "trouble": ""});
        let s = Sample::from_json(&old);
        assert_eq!(s.bytes_per_conn, Some(17_600.0));
        assert_eq!(
            (s.stack_bytes_per_conn, s.page_table_bytes_per_conn),
            (None, None)
        );
    }

    #[test]
    fn the_offered_rate_comes_from_the_rungs_own_closed_loop_median() {
        let sweeps = sweeps(Mode::Quick);
        let rate = sweeps.iter().find(|s| s.axis == Axis::Rate).expect("rate");
        let who = Who {
            subject: Subject::Nginx { workers: 1 },
            name: "epoll_et_server".into(),
            anchor: false,
        };
        let mut cache = HashMap::new();
        assert!(setup_of(rate, 0.5, &who, Mode::Quick, &cache).is_none());
        cache.insert(
            ("epoll_et_server".to_string(), Setup::plain(BUSY)),
            vec![
                sample(10_000.0, 1.0),
                sample(30_000.0, 1.0),
                sample(20_000.0, 1.0),
            ],
        );
        let (setup, x) = setup_of(rate, 0.5, &who, Mode::Quick, &cache).expect("calibrated");
        assert_eq!(
            (setup.rate, setup.workers, x),
            (Some(10_000), None, 10_000.0)
        );
        // A pool is calibrated, and offered its load, with a worker per connection.
        let pool = Who {
            subject: Subject::Nginx { workers: 1 },
            name: "threadpool_accept_main".into(),
            anchor: false,
        };
        assert!(setup_of(rate, 0.5, &pool, Mode::Quick, &cache).is_none());
        assert_eq!(calibration(&pool, Mode::Quick).workers, Some(BUSY));
        cache.insert(
            (
                "threadpool_accept_main".to_string(),
                calibration(&pool, Mode::Quick),
            ),
            vec![sample(8_000.0, 1.0)],
        );
        let (setup, _) = setup_of(rate, 1.25, &pool, Mode::Quick, &cache).expect("calibrated");
        assert_eq!((setup.rate, setup.workers), (Some(10_000), Some(BUSY)));
    }

    #[test]
    fn a_rung_that_held_fewer_is_not_asked_for_more() {
        let idle = sweeps(Mode::Full).remove(0);
        let mut cache = HashMap::new();
        let (at_1000, _) = setup_of_plain(&idle, 1_000.0, Mode::Full);
        let held = |h: u64| Sample {
            idle: Some(Held {
                asked: 1_000,
                connected: 1_000,
                queued: 1_000 - h,
                dropped: 0,
            }),
            ..Sample::default()
        };
        cache.insert(("prefork_server".to_string(), at_1000), vec![held(4)]);
        cache.insert(("poll_server".to_string(), at_1000), vec![held(1_000)]);
        // Most of them held (a slow moment, a thread ceiling): the next point still runs.
        cache.insert(("cgi_process_server".to_string(), at_1000), vec![held(700)]);
        assert_eq!(
            short_of(&cache, "cgi_process_server", &idle, 5_000.0, Mode::Full),
            None
        );
        assert_eq!(
            short_of(&cache, "prefork_server", &idle, 5_000.0, Mode::Full).as_deref(),
            Some("not run: held only 4 of 1,000 at the smaller point")
        );
        assert_eq!(
            short_of(&cache, "prefork_server", &idle, 1_000.0, Mode::Full),
            None
        );
        assert_eq!(
            short_of(&cache, "poll_server", &idle, 5_000.0, Mode::Full),
            None
        );
        let conns = sweeps(Mode::Full).remove(1);
        assert_eq!(
            short_of(&cache, "prefork_server", &conns, 10_000.0, Mode::Full),
            None
        );
    }

    #[test]
    fn a_partial_run_replaces_only_the_points_it_measured() {
        let cell = |rung: &str, x: f64, m: &str| Cell {
            sweep: "idle".into(),
            rung: rung.into(),
            anchor: false,
            x,
            fraction: None,
            samples: vec![],
            measured: m.into(),
        };
        let stored = vec![
            cell("a", 0.0, "old"),
            cell("a", 1.0, "old"),
            cell("b", 0.0, "old"),
        ];
        let merged = merge(stored, vec![cell("a", 1.0, "new")]);
        let stamps: Vec<_> = merged
            .iter()
            .map(|c| (c.rung.as_str(), c.x, c.measured.as_str()))
            .collect();
        assert_eq!(
            stamps,
            [("a", 0.0, "old"), ("b", 0.0, "old"), ("a", 1.0, "new")]
        );
    }

    #[test]
    fn every_mode_has_every_sweep_and_the_quick_idle_points_of_the_issue() {
        for mode in [Mode::Smoke, Mode::Quick, Mode::Full] {
            let ids: Vec<_> = sweeps(mode).iter().map(|s| s.id).collect();
            assert_eq!(ids, IDS, "{mode:?}");
        }
        let idle = |m| {
            sweeps(m)
                .into_iter()
                .find(|s| s.id == "idle")
                .expect("idle")
                .points
        };
        assert_eq!(idle(Mode::Quick), [0.0, 1_000.0, 5_000.0]);
        assert_eq!(
            idle(Mode::Full),
            [0.0, 1_000.0, 5_000.0, 10_000.0, 18_000.0]
        );
    }
}
