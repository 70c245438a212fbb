//! What a server holds, read from /proc for its whole process group (forked children
//! included): proportional memory, threads. Its CPU: `conformance::server::group_cpu_seconds`.

use std::fs;

// CPU and the group's processes: conformance::server (group_cpu_seconds,
// live_processes_in_group), which the tests use too.
use conformance::server::live_processes_in_group;

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
    let pids = live_processes_in_group(pgid);
    Sample {
        pss_kib: pids.iter().map(|&p| pss_kib(p)).sum(),
        threads: pids
            .iter()
            .map(|&p| status_field(p, "Threads:").unwrap_or(1))
            .sum(),
        processes: pids.len() as u64,
    }
}
