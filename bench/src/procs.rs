//! Every process the harness starts lives in a process group of its own, registered here, so
//! that it is killed when its run ends, when the harness fails, and on Ctrl-C: no server or
//! client is ever left behind.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask};
use nix::unistd::Pid;

use crate::procfs;

static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Records a process group the harness started, so Ctrl-C kills it.
pub fn register(pgid: i32) {
    GROUPS.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
}

/// Kills a process group the harness started and forgets it.
pub fn kill_group(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&g| g != pgid);
}

/// Kills every process group the harness has started (the C1M memory watchdog's last resort).
pub fn kill_all_groups() {
    let groups = GROUPS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// Ctrl-C or SIGTERM: kill every group we started, put back any sysctl the C1M run changed,
/// then exit 130. Call before any thread starts
/// (the blocked mask is inherited).
pub fn kill_all_on_signal() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    std::thread::spawn(move || {
        let sig = set.wait().unwrap_or(Signal::SIGINT);
        kill_all_groups();
        crate::c1m::restore_sysctls();
        eprintln!("\nbench: {sig}: stopped every server and client it had started");
        std::process::exit(130);
    });
}

fn spawn_in_group(cmd: &mut Command) -> std::io::Result<Child> {
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    register(child.id() as i32);
    Ok(child)
}

fn drain(from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    drain_until_eof(from).0
}

/// As [`drain`], with the reading thread's handle: it ends at end of file, once every process
/// holding the pipe's write end has closed it.
fn drain_until_eof(
    mut from: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let into = Arc::new(Mutex::new(Vec::new()));
    let sink = into.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    });
    (into, reader)
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// A finished (or killed) client run.
#[derive(Debug)]
pub struct Finished {
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// The command's CPU seconds (user + system, all its threads), from wait4(2)'s rusage:
    /// how wrk's own cost is known, since wrk does not report it.
    pub cpu_s: Option<f64>,
}

/// Reaps our child `pid` if it has exited (or waits for it, when `block`): None while it runs;
/// once reaped, its CPU seconds (None if wait4 could not say).
fn reap(pid: libc::pid_t, block: bool) -> Option<Option<f64>> {
    let mut status = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all-zero bytes are valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: `pid` is our own child, which nothing else waits for (std's `Child` is never
    // waited on in `run_bounded`); `status` and `ru` are valid, writable out-parameters.
    let r = unsafe { libc::wait4(pid, &raw mut status, flags, &raw mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    match r {
        0 => None,
        r if r == pid => Some(Some(secs(ru.ru_utime) + secs(ru.ru_stime))),
        // ECHILD cannot happen for a child only we reap; if it does, it is gone, CPU unknown.
        _ => Some(None),
    }
}

/// Runs a command to completion in its own process group, killed after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> std::io::Result<Finished> {
    run_bounded_watched(cmd, limit, &AtomicI32::new(0))
}

/// [`run_bounded`], publishing the command's process group in `pgid` while it runs (0 before
/// and after), for a thread that samples it meanwhile.
pub fn run_bounded_watched(
    cmd: &mut Command,
    limit: Duration,
    pgid_out: &AtomicI32,
) -> std::io::Result<Finished> {
    let t0 = Instant::now();
    let mut child = spawn_in_group(cmd)?;
    let pgid = child.id() as i32;
    pgid_out.store(pgid, Ordering::Relaxed);
    let ((out, out_reader), (err, err_reader)) = (
        drain_until_eof(child.stdout.take().expect("piped")),
        drain_until_eof(child.stderr.take().expect("piped")),
    );
    let mut timed_out = false;
    let cpu_s = loop {
        if let Some(cpu) = reap(pgid, false) {
            break cpu;
        }
        if t0.elapsed() > limit {
            timed_out = true;
            kill_group(pgid);
            break reap(pgid, true).flatten();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    pgid_out.store(0, Ordering::Relaxed);
    kill_group(pgid); // anything the command left behind in its group
    // Let the drain threads read the last bytes: they end at end of file, which comes once the
    // group is gone. A fixed short sleep was not enough on a loaded machine (at `nice 19` beside
    // a benchmark the reader may not run for tens of ms: an empty stdout, a "failed" cell);
    // bounded, as a process outside the group could still hold the pipe open.
    let t1 = Instant::now();
    while !(out_reader.is_finished() && err_reader.is_finished())
        && t1.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Finished {
        timed_out,
        stdout: text(&out),
        stderr: text(&err),
        cpu_s,
    })
}

/// A server under measurement: started, sampled, stopped, always killed.
pub struct ServerRun {
    child: Child,
    pub pgid: i32,
    pub addr: SocketAddr,
    stdout: Arc<Mutex<Vec<u8>>>,
    /// Drained all the time, so a server that logs never blocks on a full pipe.
    _stderr: Arc<Mutex<Vec<u8>>>,
    sampler: Option<Sampling>,
}

/// Peak memory, threads and processes of a process group, sampled every 100 ms on a thread
/// of its own until stopped.
pub struct Sampling {
    stop: mpsc::Sender<()>,
    peak: Arc<Mutex<procfs::Sample>>,
}

impl Sampling {
    pub fn start(pgid: i32) -> Sampling {
        let (stop, stopped) = mpsc::channel::<()>();
        let peak = Arc::new(Mutex::new(procfs::sample(pgid)));
        let p = peak.clone();
        std::thread::spawn(move || {
            while stopped.recv_timeout(Duration::from_millis(100)).is_err() {
                let s = procfs::sample(pgid);
                let mut peak = p.lock().unwrap_or_else(|e| e.into_inner());
                peak.pss_kib = peak.pss_kib.max(s.pss_kib);
                peak.threads = peak.threads.max(s.threads);
                peak.processes = peak.processes.max(s.processes);
            }
        });
        Sampling { stop, peak }
    }

    /// Stops sampling and returns the peaks.
    pub fn stop(self) -> procfs::Sample {
        let _ = self.stop.send(());
        *self.peak.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Total CPU seconds of a process group right now (its reaped children included).
pub use conformance::server::group_cpu_seconds as group_cpu;

/// How a server ended.
#[derive(Debug)]
pub struct Stopped {
    /// Exited before we asked it to (status), i.e. crashed.
    pub crashed: Option<String>,
    /// The summary printed on SIGTERM.
    pub summary: String,
    pub peak: procfs::Sample,
}

impl ServerRun {
    /// Starts `bin args… --addr 127.0.0.1:0` and reads its start-up line.
    pub fn start(bin: &str, args: &[String]) -> Result<ServerRun, String> {
        let mut child =
            spawn_in_group(Command::new(bin).args(args).args(["--addr", "127.0.0.1:0"]))
                .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let pgid = child.id() as i32;
        let stderr = drain(child.stderr.take().expect("piped"));
        let mut out = child.stdout.take().expect("piped");
        // Read the start-up line byte by byte: we must not swallow what follows it.
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let rest = stdout.clone();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while let Ok(1) = out.read(&mut b) {
                if b[0] == b'\n' {
                    break;
                }
                line.push(b[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                rest.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let Some((addr, _, _)) = conformance::server::parse_listening_line(&line) else {
            kill_group(pgid);
            let _ = child.wait();
            return Err(format!(
                "{bin} printed no start-up line: {:?} {}",
                line,
                text(&stderr).trim()
            ));
        };
        Ok(ServerRun {
            child,
            pgid,
            addr,
            stdout,
            _stderr: stderr,
            sampler: None,
        })
    }

    /// Starts sampling memory and threads (after warm-up, so the baseline is the idle server).
    pub fn start_sampling(&mut self) {
        self.sampler = Some(Sampling::start(self.pgid));
    }

    /// Asks the server to stop (SIGTERM), collects its summary, and kills the group regardless.
    pub fn stop(mut self) -> Stopped {
        let peak = self
            .sampler
            .take()
            .map_or_else(|| procfs::sample(self.pgid), Sampling::stop);
        let crashed = match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        };
        if crashed.is_none() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pgid), Signal::SIGTERM);
            let _ = conformance::server::wait_timeout(&mut self.child, Duration::from_secs(5));
        }
        kill_group(self.pgid);
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(30));
        Stopped {
            crashed,
            summary: text(&self.stdout),
            peak,
        }
    }
}

impl Drop for ServerRun {
    fn drop(&mut self) {
        kill_group(self.pgid);
        let _ = self.child.wait();
    }
}

/// A `label: value` line of a server summary.
pub fn summary_value<'a>(summary: &'a str, label: &str) -> Option<&'a str> {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(": "))
}

/// `context switches: voluntary V involuntary I, children voluntary v involuntary i` → total.
pub fn context_switches(summary: &str) -> Option<u64> {
    context_switches_split(summary).map(|(vol, invol)| vol + invol)
}

/// The same line split: (voluntary V + v, involuntary I + i). Voluntary switches are the
/// model's own blocking (a read that waits, a lock, a pool hand-off); involuntary ones are
/// the scheduler taking the core away — mostly noise from sharing 2 cores with the client.
pub fn context_switches_split(summary: &str) -> Option<(u64, u64)> {
    let v = summary_value(summary, "context switches")?;
    let nums: Vec<u64> = v
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (nums.len() == 4).then(|| (nums[0] + nums[2], nums[1] + nums[3]))
}

/// `accepts per worker: 3 4 5` → the connections each worker (lesson 11: each loop) accepted,
/// in worker order (docs/contract.md §6).
pub fn accepts_per_worker(summary: &str) -> Option<Vec<u64>> {
    let v = summary_value(summary, "accepts per worker")?;
    v.split_whitespace().map(|n| n.parse().ok()).collect()
}

/// `CPU seconds: user U sys S, children user u sys s` → U + S + u + s.
pub fn summary_cpu(summary: &str) -> Option<f64> {
    let v = summary_value(summary, "CPU seconds")?;
    let nums: Vec<f64> = v
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .collect();
    (nums.len() == 4).then(|| nums.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's CPU comes back from wait4: a busy command shows its seconds, an idle one
    /// next to none, and a command past its limit is killed and reported as timed out.
    #[test]
    fn a_bounded_run_reports_the_commands_cpu() {
        let busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done";
        let f = run_bounded(
            Command::new("sh").args(["-c", busy]),
            Duration::from_secs(60),
        )
        .expect("sh runs");
        assert!(!f.timed_out);
        assert_eq!(f.stdout.trim(), "done");
        let cpu = f.cpu_s.expect("the command's CPU");
        assert!(cpu > 0.05, "a busy shell loop took {cpu} s of CPU?");
        let f = run_bounded(Command::new("sleep").arg("0.3"), Duration::from_secs(60))
            .expect("sleep runs");
        assert!(f.cpu_s.expect("sleep's CPU") < 0.1);
        let t0 = Instant::now();
        let f = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(300))
            .expect("sleep runs");
        assert!(f.timed_out && t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn reads_the_summary_lines() {
        let s = "requests served: 20\nCPU seconds: user 0.120 sys 0.300, children user 0.010 sys 0.020\n\
                 context switches: voluntary 100 involuntary 5, children voluntary 7 involuntary 1\n";
        assert_eq!(summary_value(s, "requests served"), Some("20"));
        assert!((summary_cpu(s).unwrap() - 0.45).abs() < 1e-9);
        assert_eq!(context_switches(s), Some(113));
        assert_eq!(context_switches_split(s), Some((107, 6)));
        assert_eq!(summary_cpu("nothing"), None);
        let s = "requests served: 20\naccepts per worker: 1 10400\n";
        assert_eq!(accepts_per_worker(s), Some(vec![1, 10400]));
        assert_eq!(accepts_per_worker("accepts per worker: 3 x"), None);
        assert_eq!(accepts_per_worker("requests served: 20\n"), None);
    }
}
