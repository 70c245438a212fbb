//! What a server costs, read from /proc for its whole process group (forked children
//! included): CPU ticks, proportional memory, threads.

use std::fs;

/// Clock ticks per second for /proc/PID/stat's time fields.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The processes (not zombies) whose process group is `pgid`.
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[2].parse() == Ok(pgid)))
        .collect()
}

/// /proc/PID/stat's fields after the command name (field 3 of the man page is index 0).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds of a process: user + system, plus its reaped children's (cutime + cstime), so
/// work done by children that already exited is not lost.
fn cpu_seconds(pid: i32) -> f64 {
    stat_fields(pid).map_or(0.0, |f| {
        // utime, stime, cutime, cstime are fields 14-17 of proc(5): indices 11-14 here.
        let t: f64 = f[11..15].iter().filter_map(|v| v.parse::<f64>().ok()).sum();
        t / ticks_per_sec()
    })
}

/// Total CPU seconds of a process group right now.
pub fn group_cpu(pgid: i32) -> f64 {
    group_pids(pgid).into_iter().map(cpu_seconds).sum()
}

fn status_field(pid: i32, name: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(name)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Proportional set size of one process in KiB: its private pages plus its share of pages
/// shared with others (a forked child's copy-on-write pages are split between parent and
/// children instead of counted once per process, as RSS would).
fn pss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .or_else(|| status_field(pid, "VmRSS:"))
        .unwrap_or(0)
}

/// A snapshot of the group's memory and threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub pss_kib: u64,
    pub threads: u64,
    pub processes: u64,
}

pub fn sample(pgid: i32) -> Sample {
    let pids = group_pids(pgid);
    Sample {
        pss_kib: pids.iter().map(|&p| pss_kib(p)).sum(),
        threads: pids
            .iter()
            .map(|&p| status_field(p, "Threads:").unwrap_or(1))
            .sum(),
        processes: pids.len() as u64,
    }
}
