//! Starting a server under test, reading its start-up line, stopping it, and never leaving a
//! process behind: each server runs in its own process group, which `Drop` kills whole.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long any single step of a test may wait before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// A running server. Killed, with its whole process group, when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub pid: i32,
    pub first_line: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stdout_done: mpsc::Receiver<()>,
    /// Set by `stop`: the server exited by itself, so `Drop` must leave its process group alone
    /// for the caller to inspect (the `Stopped` it returned kills the group later).
    stopped: bool,
}

/// What a stopped server left behind. Dropping it kills whatever is still in the server's
/// process group, *after* the caller has had the chance to check that nothing is.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// How long it took to exit after the signal.
    pub elapsed: Duration,
    /// Everything on stdout after the start-up line.
    pub stdout: String,
    pub stderr: String,
    _survivors: KillOnDrop,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    done: Option<mpsc::Sender<()>>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    });
}

impl Server {
    /// Starts `bin` with `args` in a new process group and waits for its start-up line.
    pub fn start(bin: &str, args: &[&str]) -> Server {
        Server::start_limited(bin, args, None)
    }

    /// As `start`, with RLIMIT_NOFILE lowered to `nofile` (soft and hard) in the server, to
    /// provoke EMFILE with a handful of connections.
    pub fn start_limited(bin: &str, args: &[&str], nofile: Option<u64>) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: the closure runs in the forked child before exec; setrlimit(2) is a plain
            // syscall (async-signal-safe) on a value copied into the closure, and touches no
            // lock or allocation of the parent's.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let pid = child.id() as i32;
        let stderr = Arc::new(Mutex::new(String::new()));
        // stderr is drained all the time: a server that logs must never block on a full pipe.
        collect(
            child.stderr.take().expect("stderr was piped"),
            stderr.clone(),
            None,
        );

        let mut out = BufReader::new(child.stdout.take().expect("stdout was piped"));
        let (line_tx, line_rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (done_tx, stdout_done) = mpsc::channel();
        let rest = stdout.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = line_tx.send(line);
            collect(out, rest, Some(done_tx));
        });
        let guard = KillOnDrop(pid);
        let first_line = match line_rx.recv_timeout(STEP) {
            Ok(line) if !line.is_empty() => line.trim_end().to_string(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{bin} printed no start-up line; stderr: {}",
                    stderr.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        };
        std::mem::forget(guard);
        let addr = parse_listening_line(&first_line)
            .unwrap_or_else(|| panic!("not a start-up line: {first_line:?}"))
            .0;
        Server {
            child,
            addr,
            pid,
            first_line,
            stdout,
            stderr,
            stdout_done,
            stopped: false,
        }
    }

    /// A connected client socket with timeouts, so no test can hang on it.
    pub fn connect(&self) -> TcpStream {
        crate::client::connect(self.addr)
    }

    /// stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits up to `STEP` for `needle` to appear on the server's stderr (a log line the test
    /// provoked); panics with `what` and the whole log if it does not.
    pub fn wait_for_log(&self, needle: &str, what: &str) {
        let t0 = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(t0.elapsed() < STEP, "{what}: {:?}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The share of one core the server's process group used over the next `over`, measured
    /// by sleeping through it: for "waiting, not spinning" checks (0.0 idle, 1.0 a whole core).
    pub fn busy_fraction(&self, over: Duration) -> f64 {
        let (cpu0, t0) = (group_cpu_seconds(self.pid), Instant::now());
        std::thread::sleep(over);
        (group_cpu_seconds(self.pid) - cpu0) / t0.elapsed().as_secs_f64()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` to the server (not its group) and waits up to `STEP` for it to exit.
    pub fn stop(mut self, sig: Signal) -> Stopped {
        let t = Instant::now();
        kill(Pid::from_raw(self.pid), sig).expect("the server is alive to be signalled");
        let status = wait_timeout(&mut self.child, STEP)
            .unwrap_or_else(|| panic!("server did not exit within {STEP:?} of {sig}"));
        let elapsed = t.elapsed();
        // stdout's reader ends at EOF, once the server and every child holding the pipe exit.
        let _ = self.stdout_done.recv_timeout(Duration::from_secs(2));
        self.stopped = true;
        Stopped {
            status,
            elapsed,
            stdout: self
                .stdout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            stderr: self.stderr(),
            _survivors: KillOnDrop(self.pid),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Kills a process group when dropped: a start-up that fails half-way, or whatever outlived a
/// stopped server.
#[derive(Debug)]
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Waits up to `limit` for `child` to exit: its status, or None if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Parses `listening on IP:PORT (<crate>, pid <pid>)` into its three parts.
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, String, i32)> {
    let rest = line.strip_prefix("listening on ")?;
    let (addr, rest) = rest.split_once(" (")?;
    let (krate, rest) = rest.split_once(", pid ")?;
    let pid = rest.strip_suffix(')')?.parse().ok()?;
    Some((addr.parse().ok()?, krate.to_string(), pid))
}

/// Runs `bin` to completion (for flags that make it exit at once), with a time limit.
pub fn run_to_exit(bin: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(bin)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let _guard = KillOnDrop(child.id() as i32);
    let (out, err) = (
        Arc::new(Mutex::new(String::new())),
        Arc::new(Mutex::new(String::new())),
    );
    let (tx, rx) = mpsc::channel();
    collect(
        child.stdout.take().expect("piped"),
        out.clone(),
        Some(tx.clone()),
    );
    collect(child.stderr.take().expect("piped"), err.clone(), Some(tx));
    let status =
        wait_timeout(&mut child, STEP).unwrap_or_else(|| panic!("{bin} {args:?} did not exit"));
    for _ in 0..2 {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
    let get = |s: &Arc<Mutex<String>>| s.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (status, get(&out), get(&err))
}

/// Processes (not zombies) still in process group `pgid`, read from /proc.
pub fn live_processes_in_group(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name (which may contain spaces) start after the last ')'.
            let Some((_, after)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = after.split_whitespace().collect();
            // f[0] = state, f[2] = process group
            f.len() > 2 && f[0] != "Z" && f[2].parse() == Ok(pgid)
        })
        .collect()
}

/// /proc/PID/stat fields after the command name (proc(5) field 3 is index 0).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds used so far by the live processes of group `pgid`, their reaped children
/// included (utime + stime + cutime + cstime).
pub fn group_cpu_seconds(pgid: i32) -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    live_processes_in_group(pgid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            f[11..15]
                .iter()
                .filter_map(|v| v.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum::<f64>()
        / hz
}

/// Proportional memory (PSS, KiB) of the live processes of group `pgid`: shared pages split
/// between the processes sharing them, so a forked child's copy-on-write pages count once.
pub fn group_pss_kib(pgid: i32) -> u64 {
    live_processes_in_group(pgid)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_start_up_line() {
        let (addr, krate, pid) =
            parse_listening_line("listening on [::1]:8080 (poll_server, pid 42)").unwrap();
        assert_eq!(
            (addr.to_string().as_str(), krate.as_str(), pid),
            ("[::1]:8080", "poll_server", 42)
        );
        assert!(parse_listening_line("listening on 127.0.0.1:80").is_none());
        assert!(parse_listening_line("hello").is_none());
    }
}
