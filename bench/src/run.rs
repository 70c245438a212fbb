//! One measurement: start the server (or nginx), sample it, drive it with the client, stop it,
//! and turn what happened into a row. Every run gets a fresh server, so no run inherits another's
//! connections, caches or leaks.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::client::{self, ClientOutcome};
use crate::procfs;
use crate::procs::{self, ServerRun};
use crate::results::{Cost, Row, StallRow, Verdict};
use crate::scenarios::{Load, Mode, Proto, Scenario};
use crate::spread::Spread;

/// What is measured: a lesson binary, nginx with N workers, or a plain server that takes only
/// its own flags (and `--addr`): the floor under the servers (see targets.rs).
pub enum Subject<'a> {
    Rung {
        krate: &'a str,
        bin: &'a Path,
    },
    Nginx {
        workers: u32,
    },
    Plain {
        name: &'a str,
        bin: &'a Path,
        args: &'a [&'a str],
    },
}

impl Subject<'_> {
    pub fn name(&self) -> String {
        match self {
            Subject::Rung { krate, .. } => krate.to_string(),
            Subject::Nginx { workers: 1 } => "nginx (1 worker)".into(),
            Subject::Nginx { workers } => format!("nginx ({workers} workers)"),
            Subject::Plain { name, .. } => name.to_string(),
        }
    }
}

/// A started subject: its address, process group, and how to stop it.
pub enum Running {
    Server(ServerRun),
    Nginx(crate::anchors::Nginx, procs::Sampling),
}

impl Running {
    pub fn start(subject: &Subject, server_args: &[String]) -> Result<Running, String> {
        let (bin, args) = match subject {
            Subject::Rung { bin, .. } => {
                let mut args = server_args.to_vec();
                // Generous timeouts: a benchmark must not be cut short by the idle sweep.
                args.extend(["--idle-timeout".into(), "600".into()]);
                (bin, args)
            }
            // Not a lesson: none of the contract's flags (the scenario's `--proto`, the idle
            // timeout), only its own; its protocol is among them (the floor's `--http`).
            Subject::Plain { bin, args, .. } => (bin, args.iter().map(|a| a.to_string()).collect()),
            Subject::Nginx { workers } => {
                let n = crate::anchors::Nginx::start(*workers)?;
                let sampling = procs::Sampling::start(n.pgid);
                return Ok(Running::Nginx(n, sampling));
            }
        };
        let mut s = ServerRun::start(&bin.to_string_lossy(), &args)?;
        s.start_sampling();
        Ok(Running::Server(s))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        match self {
            Running::Server(s) => s.addr,
            Running::Nginx(n, _) => n.addr,
        }
    }

    pub fn pgid(&self) -> i32 {
        match self {
            Running::Server(s) => s.pgid,
            Running::Nginx(n, _) => n.pgid,
        }
    }

    pub fn stop(self) -> procs::Stopped {
        match self {
            Running::Server(s) => s.stop(),
            Running::Nginx(n, sampling) => {
                let peak = sampling.stop();
                drop(n);
                procs::Stopped {
                    crashed: None,
                    summary: String::new(),
                    peak,
                }
            }
        }
    }
}

fn base_row(subject: &Subject, scenario: &str, unit: &'static str) -> Row {
    Row {
        rung: subject.name(),
        anchor: matches!(subject, Subject::Nginx { .. }),
        scenario: scenario.to_string(),
        unit,
        ..Row::default()
    }
}

fn unit_of(load: &Load) -> &'static str {
    match load {
        Load::Closed {
            proto: Proto::Http, ..
        } => "req/s",
        _ => "msg/s",
    }
}

/// What one load run tells: the client's figures, and the server's CPU, peak and summary.
fn fill_from_run(row: &mut Row, c: &ClientOutcome, cpu: f64, stopped: &procs::Stopped) {
    row.server_cpu_s = Some(cpu);
    fill_from_client(row, c);
    row.peak_pss_kib = Some(stopped.peak.pss_kib);
    row.peak_threads = Some(stopped.peak.threads);
    row.peak_processes = Some(stopped.peak.processes);
    row.requests_served =
        procs::summary_value(&stopped.summary, "requests served").and_then(|v| v.parse().ok());
    row.context_switches = procs::context_switches(&stopped.summary);
}

fn fill_from_client(row: &mut Row, c: &ClientOutcome) {
    row.rate = c.rate;
    row.p50_us = c.p50_us;
    row.p99_us = c.p99_us;
    row.max_us = c.max_us;
    row.errors = c.errors;
    row.served_conns = c.served_conns;
    row.completed = c.completed;
    row.client_cpu_s = c.client_cpu_s;
    row.client_json = c.json.clone();
    row.mix = c.mix.as_ref().map(crate::results::MixRow::of_round);
}

fn verdict(stopped: &procs::Stopped, c: Option<&ClientOutcome>) -> Verdict {
    if let Some(status) = &stopped.crashed {
        return Verdict::Crashed(status.clone());
    }
    match c {
        Some(c) if c.timed_out => Verdict::TimedOut,
        Some(c) if c.errors > 0 => Verdict::Errors(c.error_text.clone()),
        Some(c) if c.failure.is_some() => Verdict::Failed(c.failure.clone().unwrap_or_default()),
        _ => Verdict::Ok,
    }
}

/// A load scenario: throughput, latency, errors, server CPU and memory, client CPU.
pub fn load(subject: &Subject, sc: &Scenario, echo_client: &Path, wrk: bool) -> Row {
    let mut row = base_row(subject, sc.id, unit_of(&sc.load));
    let (c, cpu, stopped) = match drive(subject, sc, Tool::EchoClient, echo_client, &[]) {
        Ok(run) => run,
        Err(e) => {
            row.verdict = Some(Verdict::Failed(e));
            return row;
        }
    };
    fill_from_run(&mut row, &c, cpu, &stopped);
    row.verdict = Some(verdict(&stopped, Some(&c)));

    if wrk && sc.with_wrk && client::wrk_installed() {
        // A fresh server for wrk, so the two clients never share a server's state.
        if let Ok(running) = Running::start(subject, &sc.server_args) {
            row.wrk_rate = client::wrk(running.addr(), &sc.load, sc.limit).and_then(|w| w.rate);
            let _ = running.stop();
        }
    }
    row
}

/// One round of the stalled-loop scenario in one `--distribute` mode: a fresh server with
/// `--distribute distribute`, the staller holding one of its loops (client.rs [`Staller`]),
/// then the measured load (echo_client, open loop at the scenario's rate, a new connection
/// per request). Which loop was stalled is read from the loops' own CPU over the load
/// (/proc/PID/task: the threads `loop-0`, `loop-1`, …); how many connections each loop took,
/// from the server's `accepts per worker`.
///
/// [`Staller`]: client::Staller
pub fn stalled(subject: &Subject, sc: &Scenario, distribute: &str, echo_client: &Path) -> Row {
    let mut row = base_row(subject, sc.id, unit_of(&sc.load));
    let Some(stall) = &sc.stall else {
        row.verdict = Some(Verdict::Failed("not a stalled-loop scenario".into()));
        return row;
    };
    let mut st = StallRow {
        distribute: distribute.to_string(),
        path: stall.path.clone(),
        rate: stall.rate,
        ..StallRow::default()
    };
    let mut args = sc.server_args_for(&subject.name());
    args.extend(["--distribute".into(), distribute.into()]);
    let running = match Running::start(subject, &args) {
        Ok(r) => r,
        Err(e) => {
            row.verdict = Some(Verdict::Failed(e));
            row.stall = Some(st);
            return row;
        }
    };
    let staller = match client::Staller::start(running.addr(), &stall.path, sc.limit) {
        Ok(s) => s,
        Err(e) => {
            let _ = running.stop();
            row.verdict = Some(Verdict::Failed(e));
            row.stall = Some(st);
            return row;
        }
    };
    let pid = running.pgid(); // the server leads its group: its pid
    let loops_before = procfs::thread_cpu(pid);
    let cpu0 = procs::group_cpu(pid);
    let rate = stall.rate.to_string();
    let c = client::echo_client_with(
        echo_client,
        running.addr(),
        &sc.load,
        sc.limit,
        &["--rate", &rate],
    );
    let cpu = procs::group_cpu(pid) - cpu0;
    st.loop_cpu_s = loop_cpu(&loops_before, &procfs::thread_cpu(pid));
    let report = staller.stop();
    let stopped = running.stop();
    let one = |v: Option<f64>| v.and_then(|v| Spread::of([v]));
    st.stall_ms = one(report.median_ms());
    st.accepts = procs::accepts_per_worker(&stopped.summary).unwrap_or_default();
    st.stalled_loop = StallRow::busiest(&st.loop_cpu_s);
    st.share_pct = one(st.stalled_share_pct());
    st.stalls = Some(report.request_ms.len() as u64);
    st.per_stall = one(st.caught_per_stall());
    fill_from_run(&mut row, &c, cpu, &stopped);
    row.verdict = Some(match (verdict(&stopped, Some(&c)), report.error) {
        // The staller's failure voids the round: no loop was held for the whole load.
        (Verdict::Ok, Some(e)) => Verdict::Failed(e),
        (v, _) => v,
    });
    st.p50_us = one(row.p50_us);
    st.p99_us = one(row.p99_us);
    st.max_us = one(row.max_us);
    row.stall = Some(st);
    row
}

/// CPU seconds each loop thread (`loop-0`, `loop-1`, …) used between two readings, in loop
/// order; empty if the names do not say which loop is which.
fn loop_cpu(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<f64> {
    let index = |name: &str| name.strip_prefix("loop-")?.parse::<usize>().ok();
    let mut loops: Vec<(usize, f64)> = after
        .iter()
        .filter_map(|(name, cpu)| {
            let i = index(name)?;
            let was = before.iter().find(|(n, _)| n == name).map_or(0.0, |b| b.1);
            Some((i, cpu - was))
        })
        .collect();
    loops.sort_by_key(|l| l.0);
    let in_order = loops.iter().enumerate().all(|(k, (i, _))| k == *i);
    if in_order {
        loops.into_iter().map(|l| l.1).collect()
    } else {
        Vec::new()
    }
}

/// The fixed small workload: CPU and context switches per request (and syscalls per request
/// under strace in full mode).
pub fn cost(subject: &Subject, mode: Mode, echo_client: &Path, with_strace: bool) -> Cost {
    let mut cost = Cost {
        rung: subject.name(),
        ..Cost::default()
    };
    let load = crate::scenarios::cost_load(mode);
    match Running::start(subject, &[]) {
        Ok(running) => {
            let cpu0 = procs::group_cpu(running.pgid());
            let c =
                client::echo_client(echo_client, running.addr(), &load, Duration::from_secs(120));
            let cpu_proc = procs::group_cpu(running.pgid()) - cpu0;
            let stopped = running.stop();
            let served = procs::summary_value(&stopped.summary, "requests served")
                .and_then(|v| v.parse::<f64>().ok());
            let requests = served
                .or(c.completed.map(|n| n as f64))
                .filter(|&n| n > 0.0);
            // The summary's getrusage CPU has microsecond resolution (/proc counts 10 ms
            // ticks); use it when the subject prints one.
            let cpu = procs::summary_cpu(&stopped.summary).unwrap_or(cpu_proc);
            if let Some(n) = requests {
                cost.cpu_us_per_req = Some(cpu * 1e6 / n);
                if let Some((vol, invol)) = procs::context_switches_split(&stopped.summary) {
                    cost.switches_per_req = Some((vol + invol) as f64 / n);
                    cost.voluntary_per_req = Some(vol as f64 / n);
                }
            }
            if c.errors > 0 || c.timed_out {
                cost.note = format!(
                    "client: {}",
                    if c.timed_out {
                        "timed out".into()
                    } else {
                        c.error_text.clone()
                    }
                );
            }
        }
        Err(e) => cost.note = e,
    }
    if with_strace && mode == Mode::Full && strace_installed() {
        cost.syscalls_per_req = strace_calls(subject, &load, echo_client);
    }
    cost
}

fn strace_installed() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the cost workload under `strace -c -f` attached to every process of the server and
/// returns syscalls per completed request.
fn strace_calls(subject: &Subject, load: &Load, echo_client: &Path) -> Option<f64> {
    let running = Running::start(subject, &[]).ok()?;
    let out = std::env::temp_dir().join(format!("bench-strace-{}.txt", std::process::id()));
    let mut cmd = Command::new("strace");
    cmd.args(["-c", "-f", "-qq", "-o"]).arg(&out);
    // A server may fork its workers after its start-up line (lesson 4 does), and strace -f
    // follows only the forks that come after it attached: wait until the group has stopped
    // growing, or the calls of workers forked in between would be missed (a prefork cell once
    // read 0.2 syscalls per request).
    let group = || {
        let mut p = conformance::server::live_processes_in_group(running.pgid());
        p.sort_unstable();
        p
    };
    let mut pids = group();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let again = group();
        if again == pids {
            break;
        }
        pids = again;
    }
    for pid in pids {
        cmd.args(["-p", &pid.to_string()]);
    }
    let mut strace = cmd.stderr(std::process::Stdio::null()).spawn().ok()?;
    std::thread::sleep(Duration::from_millis(500)); // attach before the load starts
    let c = client::echo_client(echo_client, running.addr(), load, Duration::from_secs(300));
    // Stop the server first, then let strace end with it. Not the other way round: strace
    // started with `-o FILE` blocks SIGINT while it waits for its tracees (strace(1), `-I`), so
    // a SIGINT to strace is not seen until the server makes a syscall — and a blocking server
    // idle in accept(2) never does. The server's shutdown adds a few dozen calls to tens of
    // thousands of requests.
    let _ = running.stop();
    // Bounded, like everything the harness waits for: strace ends when its last tracee does.
    if conformance::server::wait_timeout(&mut strace, Duration::from_secs(15)).is_none() {
        let _ = strace.kill(); // no summary then: the cell says "–", never a guess
        let _ = strace.wait();
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    let total = text.lines().find(|l| l.trim_end().ends_with(" total"))?;
    // % time, seconds, usecs/call, calls, [errors], "total"
    let calls: f64 = total.split_whitespace().nth(3)?.parse().ok()?;
    let n = c.completed? as f64;
    (n > 0.0).then(|| calls / n)
}

/// Which load generator drives a target round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    EchoClient,
    Wrk,
}

/// One round of a target (targets.rs): a fresh subject, one client run, the rate and the CPU
/// on both sides.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub rate: Option<f64>,
    pub server_cpu_s: Option<f64>,
    /// The client's CPU: echo_client's own report, wrk's from wait4 (procs::run_bounded).
    pub client_cpu_s: Option<f64>,
    pub completed: Option<u64>,
    /// Errors or a failure in words; empty when the run was clean.
    pub trouble: String,
}

pub fn sample(
    subject: &Subject,
    sc: &Scenario,
    tool: Tool,
    echo_client: &Path,
    client_extra: &[&str],
) -> Sample {
    let (c, cpu, stopped) = match drive(subject, sc, tool, echo_client, client_extra) {
        Ok(run) => run,
        Err(e) => {
            return Sample {
                trouble: e,
                ..Sample::default()
            };
        }
    };
    let trouble = match verdict(&stopped, Some(&c)) {
        Verdict::Ok => String::new(),
        Verdict::Errors(e) => e,
        Verdict::TimedOut => "timed out".into(),
        Verdict::Crashed(s) => format!("crashed: {s}"),
        Verdict::Failed(e) => e,
    };
    Sample {
        rate: c.rate,
        server_cpu_s: Some(cpu),
        client_cpu_s: c.client_cpu_s,
        completed: c.completed,
        trouble,
    }
}

/// One run of a load scenario, the part `load` and `sample` share: a fresh subject, one client
/// run, the server's CPU over it (its whole process group, from /proc), and the stopped server.
fn drive(
    subject: &Subject,
    sc: &Scenario,
    tool: Tool,
    echo_client: &Path,
    client_extra: &[&str],
) -> Result<(ClientOutcome, f64, procs::Stopped), String> {
    let running = Running::start(subject, &sc.server_args)?;
    let cpu0 = procs::group_cpu(running.pgid());
    let c = match tool {
        Tool::EchoClient => client::echo_client_with(
            echo_client,
            running.addr(),
            &sc.load,
            sc.limit,
            client_extra,
        ),
        Tool::Wrk => client::wrk(running.addr(), &sc.load, sc.limit).unwrap_or(ClientOutcome {
            failure: Some("wrk cannot run this load".into()),
            ..ClientOutcome::default()
        }),
    };
    let cpu = procs::group_cpu(running.pgid()) - cpu0;
    Ok((c, cpu, running.stop()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loops_cpu_over_the_load_in_loop_order() {
        let t = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
            v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
        };
        let before = t(&[("multi_epoll_ser", 0.01), ("loop-0", 0.25), ("loop-1", 0.0)]);
        let after = t(&[
            ("multi_epoll_ser", 0.02),
            ("loop-1", 9.5),
            ("loop-0", 0.75),
            ("acceptor", 0.3),
        ]);
        assert_eq!(loop_cpu(&before, &after), [0.5, 9.5]);
        // A loop missing from the first reading counts from zero; a gap in the names: unknown.
        assert_eq!(loop_cpu(&[], &t(&[("loop-0", 1.0)])), [1.0]);
        assert!(loop_cpu(&[], &t(&[("loop-1", 1.0)])).is_empty());
        assert!(loop_cpu(&before, &t(&[("main", 1.0)])).is_empty());
    }
}
