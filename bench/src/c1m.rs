//! `bench --c1m`: one million concurrent connections on this 2-core machine, in steps
//! (10k → 100k → 500k → 1M by default), with the multi-process reactor (lesson 11,
//! `--processes`) on one side and echo_client (`--processes`, `--source-ips`) on the other.
//!
//! For each step: raise what may be raised (sysctls, restored afterwards — also on Ctrl-C and on
//! errors), start the server with enough loop processes for the 20,000-descriptor cap, ramp the
//! connections at `--connect-rate`, hold them idle, check that every one still echoes, and tear
//! down. Reported: time to establish, peak established (client and server), server userland
//! memory (PSS) per connection, kernel slab per connection (/proc/meminfo), CPU. A step that
//! runs the machine short of memory is stopped and reported as the ceiling, with the resource.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procs::{self, ServerRun};
use crate::results::thousands;

/// Connections per process on either side: under the 20,000-descriptor cap with room for the
/// listeners, epoll instances and pipes, and for SO_REUSEPORT's uneven hashing.
const PER_PROCESS: u64 = 15_000;
/// Source addresses for the client: 40 × 64,512 ports is 2.58 M, enough for a million with
/// connections in TIME_WAIT from the previous step still holding ports.
const SOURCES: &str = "127.0.0.2-127.0.0.41";
/// Below this much available memory the step is stopped: the machine comes first.
const MEM_FLOOR_KIB: u64 = 1536 * 1024;

/// The sysctls a step raises, and the values to raise them to.
const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_local_port_range", "1024 65535"),
    ("net.core.somaxconn", "65535"),
    ("net.ipv4.tcp_max_syn_backlog", "65535"),
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

fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// One step's measurements.
#[derive(Debug, Default)]
struct Step {
    target: u64,
    established: u64,
    server_peak: u64,
    connect_s: f64,
    checked_ok: u64,
    errors: u64,
    error_text: String,
    server_pss_per_conn: f64,
    slab_per_conn: f64,
    slab_peak_mib: f64,
    server_cpu_s: f64,
    client_cpu_s: f64,
    stopped_by: Option<String>,
}

fn run_step(bins: &Path, target: u64, hold_s: u64, rate: u64) -> Step {
    let mut step = Step {
        target,
        ..Step::default()
    };
    let loops = target.div_ceil(PER_PROCESS).max(2);
    let server_bin = bins.join("multi_epoll_server");
    let args: Vec<String> = [
        "--processes",
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
    let slab0 = meminfo_kib("Slab:");
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

    // Memory watchdog: samples slab and server PSS, and stops everything if the machine runs
    // short of memory (the step's ceiling).
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let peaks = std::sync::Arc::new(Mutex::new((0u64, 0u64, None::<String>)));
    let watchdog = {
        let (stop, peaks, pgid) = (stop.clone(), peaks.clone(), server.pgid);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let slab = meminfo_kib("Slab:");
                let pss = crate::procfs::sample(pgid).pss_kib;
                let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                p.0 = p.0.max(slab);
                p.1 = p.1.max(pss);
                if meminfo_kib("MemAvailable:") < MEM_FLOOR_KIB && p.2.is_none() {
                    p.2 = Some(format!(
                        "memory: MemAvailable fell under {} MiB",
                        MEM_FLOOR_KIB / 1024
                    ));
                    procs::kill_all_groups();
                }
                drop(p);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    let client_procs = target.div_ceil(PER_PROCESS).max(1);
    let client_args: Vec<String> = vec![
        "--addr".into(),
        server.addr.to_string(),
        "--proto".into(),
        "echo".into(),
        "-c".into(),
        target.to_string(),
        "--processes".into(),
        client_procs.to_string(),
        "--source-ips".into(),
        SOURCES.into(),
        "--connect-rate".into(),
        rate.to_string(),
        "--hold".into(),
        format!("{hold_s}s"),
        "--timeout".into(),
        "60s".into(),
        "--json".into(),
        "--allow-errors".into(),
    ];
    let limit = Duration::from_secs(hold_s + 600);
    let t0 = Instant::now();
    let finished = procs::run_bounded(
        Command::new(bins.join("echo_client")).args(&client_args),
        limit,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let (slab_peak, pss_peak, memory_stop) =
        peaks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let stopped = server.stop();
    step.server_peak = procs::summary_value(&stopped.summary, "peak concurrent connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    step.server_cpu_s = procs::summary_cpu(&stopped.summary).unwrap_or(0.0);
    step.stopped_by =
        memory_stop.or_else(|| stopped.crashed.map(|c| format!("server crashed: {c}")));
    match finished {
        Ok(f) if f.timed_out => {
            step.stopped_by = step.stopped_by.take().or(Some("client timed out".into()))
        }
        Ok(f) => match serde_json::from_str::<Value>(f.stdout.trim()) {
            Ok(v) => {
                let num = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
                step.established = num("/connections/established_at_start") as u64;
                step.connect_s = num("/connect/duration_s");
                step.checked_ok = num("/transfer/completed") as u64;
                step.client_cpu_s = num("/cpu/total_s");
                let c = crate::client::parse_echo_client(&v);
                step.errors = c.errors;
                step.error_text = c.error_text;
            }
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
    step.server_pss_per_conn = pss_peak.saturating_sub(pss0) as f64 * 1024.0 / held;
    step.slab_per_conn = slab_peak.saturating_sub(slab0) as f64 * 1024.0 / held;
    step.slab_peak_mib = slab_peak.saturating_sub(slab0) as f64 / 1024.0;
    eprintln!(
        "bench: c1m step {}: {} established in {:.1} s, {} checked, stopped by {:?}, {:.0} s",
        thousands(target as f64),
        thousands(step.established as f64),
        step.connect_s,
        thousands(step.checked_ok as f64),
        step.stopped_by,
        t0.elapsed().as_secs_f64()
    );
    // Let TIME_WAIT and the kernel's per-socket memory settle before the next step.
    std::thread::sleep(Duration::from_secs(5));
    step
}

/// Runs the steps and writes docs/results/c1m.{md,json,svg} (or under `out`), returning the
/// markdown table for docs/c10k.md.
pub fn run(
    bins: &Path,
    steps: &[u64],
    hold_s: u64,
    rate: u64,
    stamp: &crate::machine::Stamp,
    out: &Path,
) -> Result<String, String> {
    set_sysctls()?;
    let _restore = RestoreOnDrop;
    let mut rows = Vec::new();
    for &n in steps {
        let step = run_step(bins, n, hold_s, rate);
        let reached = step.stopped_by.is_none() && step.established >= n;
        rows.push(step);
        if !reached {
            break; // the ceiling: later steps cannot do better
        }
    }
    restore_sysctls();

    let mut md = format!(
        "{}\n\n| connections asked | established (client) | peak held (server) | time to establish | checked after the hold | errors | server memory per conn (PSS) | kernel slab per conn | kernel slab | server CPU | client CPU | stopped by |\n|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|---|\n",
        stamp.line()
    );
    for s in &rows {
        md += &format!(
            "| {} | {} | {} | {:.1} s | {} | {} | {} B | {} B | {:.0} MiB | {:.1} s | {:.1} s | {} |\n",
            thousands(s.target as f64),
            thousands(s.established as f64),
            thousands(s.server_peak as f64),
            s.connect_s,
            thousands(s.checked_ok as f64),
            if s.errors == 0 {
                "none".to_string()
            } else {
                s.error_text.clone()
            },
            thousands(s.server_pss_per_conn),
            thousands(s.slab_per_conn),
            s.slab_peak_mib,
            s.server_cpu_s,
            s.client_cpu_s,
            match &s.stopped_by {
                Some(why) => why.clone(),
                None if s.established >= s.target => "— (reached)".into(),
                None => format!(
                    "— ({} short: see errors)",
                    thousands((s.target - s.established) as f64)
                ),
            },
        );
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("c1m.md"),
        format!("# One million connections\n\n{md}"),
    )
    .map_err(|e| e.to_string())?;
    let raw: Vec<Value> = rows
        .iter()
        .map(|s| {
            json!({
                "target": s.target, "established": s.established, "server_peak": s.server_peak,
                "connect_s": s.connect_s, "checked_ok": s.checked_ok, "errors": s.errors,
                "error_text": s.error_text, "server_pss_per_conn": s.server_pss_per_conn,
                "slab_per_conn": s.slab_per_conn, "slab_peak_mib": s.slab_peak_mib,
                "server_cpu_s": s.server_cpu_s, "client_cpu_s": s.client_cpu_s, "stopped_by": s.stopped_by,
            })
        })
        .collect();
    let json = json!({ "schema": 1, "stamp": stamp.json(), "steps": raw });
    std::fs::write(
        out.join("c1m.json"),
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let steps: Vec<(u64, u64)> = rows.iter().map(|s| (s.target, s.established)).collect();
    chart(out, &steps);
    Ok(md)
}

/// c1m.svg: connections established per step, from (asked, established) pairs.
fn chart(out: &Path, steps: &[(u64, u64)]) {
    let bars: Vec<(String, Option<f64>, bool)> = steps
        .iter()
        .map(|&(asked, got)| (thousands(asked as f64), Some(got as f64), false))
        .collect();
    if let Err(e) = crate::charts::bars(
        &out.join("c1m.svg"),
        "Connections established and held",
        "connections",
        &bars,
    ) {
        eprintln!("bench: chart c1m: {e}");
    }
}

/// `--rewrite-from`: redraws c1m.svg from the c1m.json beside the results, if there is one.
pub fn rechart(out: &Path) {
    let Some(v) = std::fs::read_to_string(out.join("c1m.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return;
    };
    let steps: Vec<(u64, u64)> = v
        .get("steps")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((s.get("target")?.as_u64()?, s.get("established")?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    if !steps.is_empty() {
        chart(out, &steps);
    }
}
