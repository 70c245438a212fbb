//! `bench --c1m`: one million concurrent connections on this 2-core machine, in steps
//! (10k → 100k → 500k → 1M by default), with the multi-process reactor (lesson 11,
//! `--processes`) on one side and echo_client (`--processes`, `--source-ips`) on the other —
//! once per design: `--distribute reuseport` (a listener per loop process) and `acceptor` (one
//! acceptor process handing connections to the loop processes).
//!
//! For each design and step: raise what may be raised (sysctls, restored afterwards — also on
//! Ctrl-C and on errors), start the server with enough loop processes for the
//! 20,000-descriptor cap, ramp the connections at `--connect-rate`, hold them idle, then load
//! them all: every connection runs echo_client's closed loop (send, wait for the verified echo,
//! send the next) for `--c1m-load` seconds, and tear down. Reported: time to establish, peak
//! established, connections per loop, server userland memory (PSS) and kernel slab per
//! connection; and for the load phase messages per second, latency, errors, each side's CPU
//! and the TCP memory the kernel charged with data in flight (/proc/net/sockstat). A step that
//! runs the machine short of memory is stopped and reported as the ceiling, with the resource.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::procfs::{
    meminfo_kib, memory_pressures, read, softirq_seconds, tcp_mem_limits, tcp_mem_pages,
};
use crate::procs::{self, ServerRun};
use crate::results::{latency, thousands};

/// Connections per process on either side: under the 20,000-descriptor cap with room for the
/// listeners, epoll instances and pipes, and for uneven sharing between the loops (the hash of
/// `reuseport`; the queue-length policy of `acceptor`): the table's "per loop" column shows it.
const PER_PROCESS: u64 = 15_000;
/// Source addresses for the client: 40 × 64,512 ports is 2.58 M, enough for a million with
/// connections in TIME_WAIT from the previous step still holding ports.
const SOURCES: &str = "127.0.0.2-127.0.0.41";
/// Below this much available memory the step is stopped: the machine comes first.
const MEM_FLOOR_KIB: u64 = 1536 * 1024;
/// How often the watchdog samples memory, CPU and the kernel's TCP memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The sysctls a step raises, and the values to raise them to.
const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_local_port_range", "1024 65535"),
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
];

/// A server design of the run: lesson 11 with `--processes` and this `--distribute`.
pub struct Design {
    pub name: &'static str,
    /// The row of the Go 1M-connection benchmark (a seed document) this design answers.
    pub seed_row: &'static str,
}

/// Every design `--c1m-designs` may name. The seed's "multiple epoll" server is a SO_REUSEPORT
/// listener and an epoll per goroutine; its "prefork" is a process per epoll, all accepting
/// from one inherited listener; its "workerpool" one accept loop and one epoll feeding a pool.
/// `exclusive` is not in the default run: EPOLLEXCLUSIVE wakes the loops in wait-queue order,
/// so they fill one after another up to the descriptor cap, and a loop paused at the cap (out
/// of descriptors) still takes the wake-ups while clients wait in the queue (docs/c10k.md).
pub const DESIGNS: &[Design] = &[
    Design {
        name: "reuseport",
        seed_row: "multiple epoll; prefork",
    },
    Design {
        name: "exclusive",
        seed_row: "prefork (one listener)",
    },
    Design {
        name: "acceptor",
        seed_row: "workerpool (closest)",
    },
];

/// The values found before we changed anything, restored by `restore_sysctls` — from `Drop`,
/// from an error path, and from the Ctrl-C handler (procs.rs).
static SAVED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn set_sysctls() -> Result<(), String> {
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    for (name, value) in SYSCTLS {
        let path = sysctl_path(name);
        let old = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
        if !saved.iter().any(|(n, _)| n == name) {
            saved.push((name.to_string(), old.trim().replace('\t', " ")));
        }
        std::fs::write(&path, value)
            .map_err(|e| format!("cannot set {name} (root needed): {e}"))?;
    }
    Ok(())
}

/// Puts back every sysctl we changed. Safe to call more than once.
pub fn restore_sysctls() {
    let mut saved = SAVED.lock().unwrap_or_else(|p| p.into_inner());
    for (name, value) in saved.drain(..) {
        if let Err(e) = std::fs::write(sysctl_path(&name), &value) {
            eprintln!("bench: could not restore {name} to {value}: {e}");
        }
    }
}

struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        restore_sysctls();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One watchdog sample: the wall clock, both sides' CPU and the machine's softirq time so far,
/// the kernel's TCP pages.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    at: f64,
    server_cpu: f64,
    client_cpu: f64,
    softirq: f64,
    tcp_pages: u64,
}

/// A cumulative series' value at `t`, linear between the samples around it (clamped at the
/// ends): the CPU spent up to an instant that fell between two samples.
fn value_at(samples: &[Sample], t: f64, of: impl Fn(&Sample) -> f64) -> f64 {
    let Some(i) = samples.iter().position(|s| s.at >= t) else {
        return samples.last().map_or(0.0, &of);
    };
    if i == 0 {
        return of(&samples[0]);
    }
    let (a, b) = (&samples[i - 1], &samples[i]);
    let f = if b.at > a.at {
        (t - a.at) / (b.at - a.at)
    } else {
        1.0
    };
    of(a) + f * (of(b) - of(a))
}

/// What happened between `from` and `to` (wall clock).
#[derive(Debug, Default, PartialEq)]
struct Window {
    /// CPU seconds of each side, and of softirq on every CPU.
    server: f64,
    client: f64,
    softirq: f64,
    /// The most TCP pages any sample in the window saw.
    peak_pages: u64,
}

fn window(samples: &[Sample], from: f64, to: f64) -> Window {
    let cpu = |of: fn(&Sample) -> f64| value_at(samples, to, of) - value_at(samples, from, of);
    let pages = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .map(|s| s.tcp_pages)
        .max()
        .unwrap_or(0);
    Window {
        server: cpu(|s| s.server_cpu),
        client: cpu(|s| s.client_cpu),
        softirq: cpu(|s| s.softirq),
        peak_pages: pages,
    }
}

// ─── one step ───────────────────────────────────────────────────────────────────────────────

/// One step's measurements.
#[derive(Debug, Default)]
struct Step {
    design: String,
    target: u64,
    /// Which round of `--c1m-rounds` (1-based).
    round: u32,
    established: u64,
    server_peak: u64,
    connect_s: f64,
    /// Connections that completed at least one verified echo (in the load phase, or the one
    /// check after the hold when there is no load phase).
    answered: u64,
    errors: u64,
    error_text: String,
    /// Connections each loop process accepted: fewest, most.
    per_loop: Option<(u64, u64)>,
    server_pss_per_conn: f64,
    slab_per_conn: f64,
    slab_peak_mib: f64,
    /// The load phase (all 0 without one).
    load_s: f64,
    messages: u64,
    msg_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    server_cpu_load_s: f64,
    client_cpu_load_s: f64,
    softirq_load_s: f64,
    /// TCP pages just before the load phase (idle connections) and the most during it.
    tcp_pages_idle: u64,
    tcp_pages_peak: u64,
    /// Times TCP entered memory pressure during the step.
    pressures: u64,
    stopped_by: Option<String>,
}

/// What the watchdog thread shares with the step.
#[derive(Default)]
struct Watch {
    samples: Vec<Sample>,
    slab_peak: u64,
    memory_stop: Option<String>,
}

fn run_step(bins: &Path, design: &Design, target: u64, plan: &Plan) -> Step {
    let mut step = Step {
        design: design.name.into(),
        target,
        round: 1,
        ..Step::default()
    };
    let loops = target.div_ceil(PER_PROCESS).max(2);
    let server_bin = bins.join("multi_epoll_server");
    let args: Vec<String> = [
        "--processes",
        "--distribute",
        design.name,
        "--workers",
        &loops.to_string(),
        "--backlog",
        "65535",
        "--proto",
        "echo",
        "--idle-timeout",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let slab0 = meminfo_kib("Slab:").unwrap_or(0);
    let pressures0 = memory_pressures();
    let mut server = match ServerRun::start(&server_bin.to_string_lossy(), &args) {
        Ok(s) => s,
        Err(e) => {
            step.stopped_by = Some(e);
            return step;
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    let pss0 = crate::procfs::sample(server.pgid).pss_kib;
    server.start_sampling();

    // Watchdog: samples slab, both sides' CPU and TCP's pages, and stops everything if the
    // machine runs short of memory (the step's ceiling). The server's memory (PSS) has its own
    // sampler, started above: ServerRun's, whose peak `stop` returns.
    let stop = Arc::new(AtomicBool::new(false));
    let client_pgid = Arc::new(AtomicI32::new(0));
    let watch = Arc::new(Mutex::new(Watch::default()));
    let watchdog = {
        let (stop, watch, pgid) = (stop.clone(), watch.clone(), server.pgid);
        let client_pgid = client_pgid.clone();
        std::thread::spawn(move || {
            let mut client_cpu = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let slab = meminfo_kib("Slab:").unwrap_or(0);
                // The client's group exists only while it runs; keep its last value after.
                let c = client_pgid.load(Ordering::Relaxed);
                if c != 0 {
                    client_cpu = procs::group_cpu(c);
                }
                let sample = Sample {
                    at: unix_now(),
                    server_cpu: procs::group_cpu(pgid),
                    client_cpu,
                    softirq: softirq_seconds(&read("/proc/stat")).unwrap_or(0.0),
                    tcp_pages: tcp_mem_pages(&read("/proc/net/sockstat")).unwrap_or(0),
                };
                let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
                w.samples.push(sample);
                w.slab_peak = w.slab_peak.max(slab);
                let short = meminfo_kib("MemAvailable:").is_some_and(|k| k < MEM_FLOOR_KIB);
                if short && w.memory_stop.is_none() {
                    w.memory_stop = Some(format!(
                        "memory: MemAvailable fell under {} MiB",
                        MEM_FLOOR_KIB / 1024
                    ));
                    procs::kill_all_groups();
                }
                drop(w);
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };

    let client_procs = target.div_ceil(PER_PROCESS).max(1);
    let mut client_args: Vec<String> = [
        "--addr",
        &server.addr.to_string(),
        "--proto",
        "echo",
        "-c",
        &target.to_string(),
        "--processes",
        &client_procs.to_string(),
        "--source-ips",
        SOURCES,
        "--connect-rate",
        &plan.rate.to_string(),
        "--hold",
        &format!("{}s", plan.hold_s),
        // A closed loop over a million connections: a message waits behind up to a million
        // others, seconds. Two minutes without its echo is an error, not queueing.
        "--timeout",
        "120s",
        "--json",
        "--allow-errors",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if plan.load_s > 0 {
        client_args.extend(["-d".to_string(), format!("{}s", plan.load_s)]);
    }
    let limit = Duration::from_secs(plan.hold_s + plan.load_s + 600);
    let t0 = Instant::now();
    let finished = procs::run_bounded_watched(
        Command::new(bins.join("echo_client")).args(&client_args),
        limit,
        &client_pgid,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let w = std::mem::take(&mut *watch.lock().unwrap_or_else(|e| e.into_inner()));
    let stopped = server.stop();
    step.server_peak = procs::summary_value(&stopped.summary, "peak concurrent connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    step.per_loop = procs::accepts_per_worker(&stopped.summary).and_then(|v| {
        let (lo, hi) = (v.iter().min()?, v.iter().max()?);
        Some((*lo, *hi))
    });
    step.pressures = memory_pressures().saturating_sub(pressures0);
    step.stopped_by = w
        .memory_stop
        .clone()
        .or_else(|| stopped.crashed.map(|c| format!("server crashed: {c}")));
    match finished {
        Ok(f) if f.timed_out => {
            step.stopped_by = step.stopped_by.take().or(Some("client timed out".into()))
        }
        Ok(f) => match serde_json::from_str::<Value>(f.stdout.trim()) {
            Ok(v) => fill_from_client(&mut step, &v, &w.samples, plan.load_s > 0),
            Err(_) => {
                step.stopped_by = step.stopped_by.take().or_else(|| {
                    Some(format!(
                        "echo_client: {}",
                        f.stderr.lines().last().unwrap_or("no output")
                    ))
                })
            }
        },
        Err(e) => step.stopped_by = Some(format!("cannot run echo_client: {e}")),
    }
    let held = step.established.max(step.server_peak).max(1) as f64;
    step.server_pss_per_conn = stopped.peak.pss_kib.saturating_sub(pss0) as f64 * 1024.0 / held;
    step.slab_per_conn = w.slab_peak.saturating_sub(slab0) as f64 * 1024.0 / held;
    step.slab_peak_mib = w.slab_peak.saturating_sub(slab0) as f64 / 1024.0;
    eprintln!(
        "bench: c1m {} {}: {} established in {:.1} s, {} answered, {} errors, {} msg/s \
         (p99 {}), stopped by {:?}, {:.0} s",
        design.name,
        thousands(target as f64),
        thousands(step.established as f64),
        step.connect_s,
        thousands(step.answered as f64),
        thousands(step.errors as f64),
        thousands(step.msg_per_s),
        wait(step.p99_us),
        step.stopped_by,
        t0.elapsed().as_secs_f64()
    );
    // Let TIME_WAIT and the kernel's per-socket memory settle before the next step.
    std::thread::sleep(Duration::from_secs(5));
    step
}

/// What echo_client's report says, and what the watchdog saw during its load phase (the
/// window its report places on the wall clock).
fn fill_from_client(step: &mut Step, v: &Value, samples: &[Sample], loaded: bool) {
    let num = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    step.established = num("/connections/established_at_start") as u64;
    step.connect_s = num("/connect/duration_s");
    let c = crate::client::parse_echo_client(v);
    step.answered = c.served_conns.map_or(0, |(served, _)| served);
    step.errors = c.errors;
    step.error_text = c.error_text;
    if !loaded {
        return;
    }
    step.load_s = num("/transfer/duration_s");
    step.messages = c.completed.unwrap_or(0);
    step.msg_per_s = c.rate.unwrap_or(0.0);
    step.p50_us = c.p50_us.unwrap_or(0.0);
    step.p99_us = c.p99_us.unwrap_or(0.0);
    step.max_us = c.max_us.unwrap_or(0.0);
    let (from, to) = (
        num("/transfer/started_unix_s"),
        num("/transfer/ended_unix_s"),
    );
    let w = window(samples, from, to);

    step.server_cpu_load_s = w.server;
    step.client_cpu_load_s = w.client;
    step.softirq_load_s = w.softirq;
    step.tcp_pages_peak = w.peak_pages;
    // Just before the load: the last sample of the hold.
    step.tcp_pages_idle = samples
        .iter()
        .rev()
        .find(|s| s.at < from)
        .map_or(0, |s| s.tcp_pages);
}

// ─── the run ────────────────────────────────────────────────────────────────────────────────

/// What the command line asked for.
pub struct Plan {
    pub steps: Vec<u64>,
    pub designs: Vec<&'static Design>,
    pub hold_s: u64,
    /// The load phase's length; 0: no load, each connection is checked once after the hold.
    pub load_s: u64,
    pub rate: u64,
    /// Runs of every (design, step); the tables show the median round and the range.
    pub rounds: u32,
}

/// Looks up `--c1m-designs` names.
pub fn designs(names: &[String]) -> Result<Vec<&'static Design>, String> {
    names
        .iter()
        .map(|n| {
            DESIGNS.iter().find(|d| d.name == n).ok_or_else(|| {
                let known: Vec<&str> = DESIGNS.iter().map(|d| d.name).collect();
                format!(
                    "--c1m-designs: no design {n:?} (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect()
}

/// Runs the steps of every design and writes docs/results/c1m.{md,json,svg} (or under `out`),
/// returning the markdown for docs/c10k.md.
pub fn run(
    bins: &Path,
    plan: &Plan,
    stamp: &crate::machine::Stamp,
    out: &Path,
) -> Result<String, String> {
    set_sysctls()?;
    let _restore = RestoreOnDrop;
    let mut rows = Vec::new();
    // Designs that met their ceiling: their later steps cannot do better.
    let mut stopped: Vec<&str> = Vec::new();
    for &n in &plan.steps {
        for round in 1..=plan.rounds.max(1) {
            // Each round starts with another design, so that none always runs right after
            // the same neighbour (TIME_WAIT, slab left over): alternating rounds, as --targets.
            let mut order = plan.designs.clone();
            let turn = (round as usize - 1) % order.len().max(1);
            order.rotate_left(turn);
            for design in order {
                if stopped.contains(&design.name) {
                    continue;
                }
                let mut step = run_step(bins, design, n, plan);
                step.round = round;
                if step.stopped_by.is_some() || step.established < n {
                    stopped.push(design.name);
                }
                rows.push(step);
            }
        }
    }
    restore_sysctls();

    let limits = tcp_mem_limits();
    let md = page(&stamp.line(), &rows, limits);
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("c1m.md"),
        format!("# One million connections\n\n{md}"),
    )
    .map_err(|e| e.to_string())?;
    let raw: Vec<Value> = rows.iter().map(step_json).collect();
    let json = json!({
        "schema": 2, "stamp": stamp.json(), "load_s": plan.load_s, "hold_s": plan.hold_s,
        "rounds": plan.rounds,
        "tcp_mem_pages": limits, "steps": raw,
    });
    std::fs::write(
        out.join("c1m.json"),
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    chart(out, &aggregate(&rows));
    Ok(md)
}

fn step_json(s: &Step) -> Value {
    json!({
        "design": s.design, "target": s.target, "round": s.round, "established": s.established,
        "server_peak": s.server_peak, "connect_s": s.connect_s, "answered": s.answered,
        "errors": s.errors, "error_text": s.error_text,
        "per_loop_min": s.per_loop.map(|p| p.0), "per_loop_max": s.per_loop.map(|p| p.1),
        "server_pss_per_conn": s.server_pss_per_conn, "slab_per_conn": s.slab_per_conn,
        "slab_peak_mib": s.slab_peak_mib, "load_s": s.load_s, "messages": s.messages,
        "msg_per_s": s.msg_per_s, "p50_us": s.p50_us, "p99_us": s.p99_us, "max_us": s.max_us,
        "server_cpu_load_s": s.server_cpu_load_s, "client_cpu_load_s": s.client_cpu_load_s,
        "softirq_load_s": s.softirq_load_s,
        "tcp_pages_idle": s.tcp_pages_idle, "tcp_pages_peak": s.tcp_pages_peak,
        "memory_pressures": s.pressures, "stopped_by": s.stopped_by,
    })
}

/// A latency cell: the tables' own format up to 10 s, then seconds (a million connections in a
/// closed loop wait tens of seconds, which "33934 ms" makes hard to read).
fn wait(us: f64) -> String {
    if us >= 10e6 {
        format!("{:.1} s", us / 1e6)
    } else {
        latency(us)
    }
}

/// A step back from c1m.json (schema 2), for `--rewrite-from`.
fn step_from_json(v: &Value) -> Step {
    let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Step {
        design: text("design").unwrap_or_default(),
        target: n("target"),
        round: n("round").max(1) as u32,
        established: n("established"),
        server_peak: n("server_peak"),
        connect_s: f("connect_s"),
        answered: n("answered"),
        errors: n("errors"),
        error_text: text("error_text").unwrap_or_default(),
        per_loop: (v.get("per_loop_min").and_then(Value::as_u64))
            .zip(v.get("per_loop_max").and_then(Value::as_u64)),
        server_pss_per_conn: f("server_pss_per_conn"),
        slab_per_conn: f("slab_per_conn"),
        slab_peak_mib: f("slab_peak_mib"),
        load_s: f("load_s"),
        messages: n("messages"),
        msg_per_s: f("msg_per_s"),
        p50_us: f("p50_us"),
        p99_us: f("p99_us"),
        max_us: f("max_us"),
        server_cpu_load_s: f("server_cpu_load_s"),
        client_cpu_load_s: f("client_cpu_load_s"),
        softirq_load_s: f("softirq_load_s"),
        tcp_pages_idle: n("tcp_pages_idle"),
        tcp_pages_peak: n("tcp_pages_peak"),
        pressures: n("memory_pressures"),
        stopped_by: text("stopped_by"),
    }
}

/// One (design, step) of the tables, over its rounds.
struct Agg<'a> {
    /// The round shown: the median by messages per second (by time to establish when there
    /// was no load phase); with an even count, the lower of the middle two.
    median: &'a Step,
    rounds: usize,
    /// The worst over the rounds: the fewest answered, every round's errors, the extremes of
    /// the per-loop counts, the first reason a round stopped.
    answered: u64,
    errors: u64,
    error_text: String,
    per_loop: Option<(u64, u64)>,
    stopped_by: Option<String>,
    /// (lowest, highest) over the rounds.
    rate: (f64, f64),
    p50: (f64, f64),
    p99: (f64, f64),
}

/// Groups the runs by (design, step), designs in [`DESIGNS`] order, steps ascending.
fn aggregate(rows: &[Step]) -> Vec<Agg<'_>> {
    let rank = |d: &str| {
        DESIGNS
            .iter()
            .position(|x| x.name == d)
            .unwrap_or(usize::MAX)
    };
    let mut keys: Vec<(usize, u64, &str)> = rows
        .iter()
        .map(|s| (rank(&s.design), s.target, s.design.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(_, target, design)| {
            let mut runs: Vec<&Step> = (rows.iter())
                .filter(|s| s.design == design && s.target == target)
                .collect();
            let by = |s: &&Step| {
                if s.load_s > 0.0 {
                    s.msg_per_s
                } else {
                    -s.connect_s
                }
            };
            runs.sort_by(|a, b| by(a).total_cmp(&by(b)));
            let span = |f: fn(&Step) -> f64| {
                let v = runs.iter().map(|s| f(s));
                (
                    v.clone().fold(f64::INFINITY, f64::min),
                    v.fold(0.0, f64::max),
                )
            };
            let loops = runs.iter().filter_map(|s| s.per_loop);
            Agg {
                median: runs[(runs.len() - 1) / 2], // a key exists only with a run behind it
                rounds: runs.len(),
                answered: runs.iter().map(|s| s.answered).min().unwrap_or(0),
                errors: runs.iter().map(|s| s.errors).sum(),
                error_text: (runs.iter())
                    .filter(|s| s.errors > 0)
                    .map(|s| s.error_text.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                per_loop: loops
                    .clone()
                    .map(|p| p.0)
                    .min()
                    .zip(loops.map(|p| p.1).max()),
                stopped_by: runs.iter().find_map(|s| s.stopped_by.clone()),
                rate: span(|s| s.msg_per_s),
                p50: span(|s| s.p50_us),
                p99: span(|s| s.p99_us),
            }
        })
        .collect()
}

/// A cell with the rounds' range after it, when there was more than one round.
fn ranged(rounds: usize, show: fn(f64) -> String, median: f64, (lo, hi): (f64, f64)) -> String {
    if rounds > 1 {
        format!("{} ({}–{})", show(median), show(lo), show(hi))
    } else {
        show(median)
    }
}

/// The block: the holding table, then (with a load phase) the load table.
fn page(stamp_line: &str, rows: &[Step], limits: Option<[u64; 3]>) -> String {
    let mut md = format!(
        "{stamp_line}\n\n**Holding.** lesson 11 `--processes --distribute DESIGN`, one loop \
         process per 15,000 connections; the connections idle for the hold. Answered: \
         connections that completed at least one verified echo (in the load phase, or in the \
         one check after the hold when there is none); errors: the client's, whole run.\n\n\
         | design | connections asked | established (client) | peak held (server) | per loop (fewest–most) | time to establish | answered | errors | server memory per conn (PSS) | kernel slab per conn | kernel slab | stopped by |\n\
         |---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|---|\n"
    );
    let aggs = aggregate(rows);
    for a in &aggs {
        let s = a.median;
        md += &format!(
            "| `{}` | {} | {} | {} | {} | {:.1} s | {} | {} | {} B | {} B | {:.0} MiB | {} |\n",
            s.design,
            thousands(s.target as f64),
            thousands(s.established as f64),
            thousands(s.server_peak as f64),
            a.per_loop.map_or("–".into(), |(lo, hi)| format!(
                "{}–{}",
                thousands(lo as f64),
                thousands(hi as f64)
            )),
            s.connect_s,
            thousands(a.answered as f64),
            if a.errors == 0 {
                "none".to_string()
            } else {
                a.error_text.clone()
            },
            thousands(s.server_pss_per_conn),
            thousands(s.slab_per_conn),
            s.slab_peak_mib,
            match &a.stopped_by {
                Some(why) => why.clone(),
                None if s.established >= s.target => "— (reached)".into(),
                None => format!(
                    "— ({} short: see errors)",
                    thousands((s.target - s.established) as f64)
                ),
            },
        );
    }
    let loaded: Vec<&Agg> = aggs.iter().filter(|a| a.median.load_s > 0.0).collect();
    let rounds = aggs.iter().map(|a| a.rounds).max().unwrap_or(1);
    if loaded.is_empty() {
        return md;
    }
    let mib = |pages: u64| pages as f64 * 4096.0 / (1024.0 * 1024.0);
    md += &format!(
        "\n**Under load.** After the hold, every connection runs echo_client's closed loop (a \
         64-byte message, wait for its verified echo, the next) for the load phase; latency is \
         send → echo verified, histograms merged over the client processes. CPU is each side's, \
         over the load phase only (cores: CPU seconds ÷ seconds); softirq is the part of all \
         CPU time spent in softirq (on loopback, mostly TCP's receive path, run by whichever \
         process sent: it is inside the two sides' columns, not on top). TCP memory: the pages TCP \
         charged system-wide (`mem` in /proc/net/sockstat), idle just before the load and at \
         most during it{}.{}\n\n\
         | design | seed's row | connections | load | messages/s | p50 | p99 | max | server CPU | client CPU | softirq | server CPU per message | TCP memory idle → peak | memory-pressure entries |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        limits.map_or(String::new(), |[_, pressure, high]| format!(
            "; here `tcp_mem` puts TCP under pressure above {} pages ({:.0} MiB) and at its \
             hard limit at {} pages ({:.0} MiB)",
            thousands(pressure as f64),
            mib(pressure),
            thousands(high as f64),
            mib(high)
        )),
        if rounds > 1 {
            format!(
                " Each row is the median of {rounds} rounds (by messages/s), the rounds' range \
                 in brackets; the designs take turns going first."
            )
        } else {
            String::new()
        }
    );
    for a in loaded {
        let s = a.median;
        let seed = DESIGNS
            .iter()
            .find(|d| d.name == s.design)
            .map_or("", |d| d.seed_row);
        md += &format!(
            "| `{}` | {} | {} | {:.0} s | {} | {} | {} | {} | {:.2} cores | {:.2} cores | {:.2} cores | {:.1} µs | {:.0} → {:.0} MiB | {} |\n",
            s.design,
            seed,
            thousands(s.established as f64),
            s.load_s,
            ranged(a.rounds, thousands, s.msg_per_s, a.rate),
            ranged(a.rounds, wait, s.p50_us, a.p50),
            ranged(a.rounds, wait, s.p99_us, a.p99),
            wait(s.max_us),
            s.server_cpu_load_s / s.load_s,
            s.client_cpu_load_s / s.load_s,
            s.softirq_load_s / s.load_s,
            if s.messages > 0 {
                s.server_cpu_load_s * 1e6 / s.messages as f64
            } else {
                0.0
            },
            mib(s.tcp_pages_idle),
            mib(s.tcp_pages_peak),
            thousands(s.pressures as f64),
        );
    }
    md
}

/// c1m.svg: connections established per step; c1m-load.svg: messages per second under load.
fn chart(out: &Path, aggs: &[Agg]) {
    let label = |a: &Agg| format!("{} {}", a.median.design, thousands(a.median.target as f64));
    let held: Vec<(String, Option<f64>, bool)> = aggs
        .iter()
        .map(|a| (label(a), Some(a.median.established as f64), false))
        .collect();
    if let Err(e) = crate::charts::bars(
        &out.join("c1m.svg"),
        "Connections established and held",
        "connections",
        &held,
    ) {
        eprintln!("bench: chart c1m: {e}");
    }
    let load: Vec<(String, Option<f64>, bool)> = aggs
        .iter()
        .map(|a| {
            (
                label(a),
                Some(a.median.msg_per_s).filter(|&r| r > 0.0),
                false,
            )
        })
        .collect();
    if load.iter().any(|b| b.1.is_some())
        && let Err(e) = crate::charts::bars(
            &out.join("c1m-load.svg"),
            "Every connection in a closed loop: messages per second",
            "messages per second",
            &load,
        )
    {
        eprintln!("bench: chart c1m-load: {e}");
    }
}

/// `--rewrite-from`: rebuilds c1m.md and the charts from the c1m.json beside the results, if
/// there is one, and docs/c10k.md's block unless `readmes` is false. A schema-1 file (before
/// the load phase) is left as it is: its table had other columns.
pub fn rewrite(out: &Path, readmes: bool) -> Result<(), String> {
    let Some(v) = std::fs::read_to_string(out.join("c1m.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return Ok(());
    };
    if v.get("schema").and_then(Value::as_u64) != Some(2) {
        return Ok(());
    }
    let steps = v.get("steps").and_then(Value::as_array);
    let rows: Vec<Step> = steps.into_iter().flatten().map(step_from_json).collect();
    chart(out, &aggregate(&rows));
    let limits = v
        .get("tcp_mem_pages")
        .and_then(|l| serde_json::from_value::<[u64; 3]>(l.clone()).ok());
    let stamp = crate::machine::Stamp::from_json(&v["stamp"]);
    let md = page(&stamp.line(), &rows, limits);
    std::fs::write(
        out.join("c1m.md"),
        format!("# One million connections\n\n{md}"),
    )
    .map_err(|e| e.to_string())?;
    if readmes {
        let path = crate::root().join("docs/c10k.md");
        crate::readme::rewrite(&path, "c1m", &md)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load window's CPU is the cumulative series between its ends, interpolated between
    /// samples; the TCP peak is the window's own, not the step's.
    #[test]
    fn a_window_takes_what_happened_inside_it() {
        let s = |at: f64, server_cpu: f64, client_cpu: f64, tcp_pages: u64| Sample {
            at,
            server_cpu,
            client_cpu,
            softirq: at * 2.0, // both CPUs always in softirq: 2 s a second
            tcp_pages,
        };
        let samples = [
            s(100.0, 1.0, 2.0, 900), // the connect ramp
            s(101.0, 1.0, 2.0, 10),  // the hold
            s(102.0, 2.0, 3.0, 500), // load
            s(103.0, 3.0, 5.0, 700), // load
            s(104.0, 3.5, 5.5, 20),  // teardown
        ];
        let w = window(&samples, 101.5, 103.5);
        assert!((w.server - (3.25 - 1.5)).abs() < 1e-9, "{w:?}");
        assert!((w.client - (5.25 - 2.5)).abs() < 1e-9, "{w:?}");
        assert!((w.softirq - 4.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w.peak_pages, 700);
        // Outside the samples: clamped to the ends.
        assert_eq!(value_at(&samples, 50.0, |s| s.server_cpu), 1.0);
        assert_eq!(value_at(&samples, 500.0, |s| s.server_cpu), 3.5);
    }

    /// Rounds fold into one row: the median round by rate, each figure's range, the worst of
    /// what went wrong; designs in their table order whatever order they ran in.
    #[test]
    fn rounds_show_the_median_round_and_the_range() {
        let run = |design: &str, round: u32, rate: f64, answered: u64, errors: u64| Step {
            design: design.into(),
            target: 1000,
            round,
            established: 1000,
            answered,
            errors,
            error_text: format!("reset {errors}"),
            per_loop: Some((490 + u64::from(round), 510 + u64::from(round))),
            load_s: 10.0,
            msg_per_s: rate,
            p50_us: 1e9 / rate, // Little: 1,000 connections ÷ rate, in µs
            p99_us: 2e9 / rate,
            ..Step::default()
        };
        let rows = [
            run("acceptor", 1, 5000.0, 1000, 0),
            run("reuseport", 1, 4000.0, 1000, 0),
            run("acceptor", 2, 4000.0, 998, 2),
            run("reuseport", 2, 6000.0, 1000, 0),
            run("acceptor", 3, 6000.0, 1000, 1),
            run("reuseport", 3, 5000.0, 1000, 0),
        ];
        let aggs = aggregate(&rows);
        assert_eq!(aggs.len(), 2);
        assert_eq!(aggs[0].median.design, "reuseport"); // DESIGNS order
        assert_eq!((aggs[0].median.round, aggs[0].rate), (3, (4000.0, 6000.0)));
        let a = &aggs[1];
        assert_eq!((a.median.round, a.rounds), (1, 3));
        assert_eq!((a.answered, a.errors), (998, 3));
        assert_eq!(a.error_text, "reset 2; reset 1");
        assert_eq!(a.per_loop, Some((491, 513)));
        assert_eq!(a.p50, (1e9 / 6000.0, 1e9 / 4000.0));
        let md = page("stamp", &rows, None);
        assert!(md.contains("median of 3 rounds"), "{md}");
        assert!(
            md.contains("| 5,000 (4,000–6,000) | 200 ms (167 ms–250 ms) |"),
            "{md}"
        );
        assert!(md.contains("| 998 | reset 2; reset 1 |"), "{md}");
        // One round: no brackets.
        assert!(!page("stamp", &rows[..2], None).contains("(4,000–"));
    }

    #[test]
    fn the_page_shows_the_load_table_only_with_a_load_phase() {
        let step = |load_s: f64| Step {
            design: "acceptor".into(),
            target: 1000,
            established: 1000,
            server_peak: 1000,
            answered: 1000,
            per_loop: Some((480, 520)),
            load_s,
            messages: 50_000,
            msg_per_s: 5000.0,
            p99_us: 12_000.0,
            server_cpu_load_s: 5.0,
            tcp_pages_peak: 256,
            ..Step::default()
        };
        let held = page("stamp", &[step(0.0)], Some([1, 2, 3]));
        assert!(held.contains("| `acceptor` | 1,000 | 1,000 | 1,000 | 480–520 |"));
        assert!(!held.contains("Under load"));
        let loaded = page("stamp", &[step(10.0)], Some([1, 2, 3]));
        assert!(loaded.contains("| `acceptor` | workerpool (closest) | 1,000 | 10 s | 5,000 |"));
        // 5 s of server CPU over 10 s; 5 s over 50,000 messages; 256 pages of 4 KiB.
        assert!(loaded.contains("| 0.50 cores |"), "{loaded}");
        assert!(loaded.contains("| 100.0 µs | 0 → 1 MiB |"), "{loaded}");
        // What c1m.json keeps is what the page is rebuilt from.
        let back = step_from_json(&step_json(&step(10.0)));
        assert_eq!(page("stamp", &[back], Some([1, 2, 3])), loaded);
        assert_eq!(wait(33_934_000.0), "33.9 s");
        assert_eq!(wait(9_999.0), latency(9_999.0));
        assert!(designs(&["nope".into()]).is_err());
        assert_eq!(designs(&["acceptor".into()]).unwrap()[0].name, "acceptor"); // known
    }
}
