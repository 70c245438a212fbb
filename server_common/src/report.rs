//! The shutdown summary (`docs/contract.md` §6): the course's `pr_cpu_time` (UNP), printed once
//! when a server stops. `label: value` lines, stable labels, so tests and the harness can read
//! it and a person can too.

use std::io::{self, Write};

use nix::sys::resource::{UsageWho, getrusage};

use crate::stats::Stats;

/// Writes the summary of `stats` to `out`. `cause` says what stopped the server ("SIGTERM");
/// `extra` are the model's own `label: value` lines, printed after the standard ones.
pub fn write_summary(
    out: &mut impl Write,
    crate_name: &str,
    stats: &Stats,
    cause: &str,
    extra: &[(String, String)],
) -> io::Result<()> {
    let elapsed = stats.started().elapsed().as_secs_f64();
    writeln!(
        out,
        "summary: {crate_name} pid {} stopped by {cause} after {elapsed:.2} s",
        std::process::id()
    )?;
    // The peak first, then one read of the per-worker accept counters for both accept lines:
    // so `peak <= accepted` and `accepted == sum(per worker)` hold even while connections are
    // still being accepted as we print (see Stats::accepted).
    let peak = stats.peak();
    let per_worker = stats.per_worker(|c| &c.accepted);
    let accepted = per_worker
        .as_ref()
        .map_or_else(|| stats.total(|c| &c.accepted), |p| p.iter().sum());
    writeln!(out, "connections accepted: {accepted}")?;
    writeln!(out, "peak concurrent connections: {peak}")?;
    writeln!(out, "requests served: {}", stats.total(|c| &c.requests))?;
    writeln!(out, "error responses: {}", stats.total(|c| &c.errors))?;
    writeln!(out, "bytes echoed: {}", stats.total(|c| &c.bytes))?;

    // getrusage(2): RUSAGE_SELF covers every thread of this process; RUSAGE_CHILDREN covers the
    // children already reaped with wait(2), so forking models reap before they report.
    let me = getrusage(UsageWho::RUSAGE_SELF).ok();
    let kids = getrusage(UsageWho::RUSAGE_CHILDREN).ok();
    let rss = |u: &Option<nix::sys::resource::Usage>| u.as_ref().map_or(0, |u| u.max_rss());
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    let cpu = |u: &Option<nix::sys::resource::Usage>| {
        u.as_ref()
            .map_or((0.0, 0.0), |u| (secs(u.user_time()), secs(u.system_time())))
    };
    // ru_maxrss is in KiB on Linux; for children it is the largest single child, not a sum.
    writeln!(
        out,
        "peak RSS KiB: self {}, largest child {}",
        rss(&me),
        rss(&kids)
    )?;
    let ((mu, ms), (ku, ks)) = (cpu(&me), cpu(&kids));
    writeln!(
        out,
        "CPU seconds: user {mu:.3} sys {ms:.3}, children user {ku:.3} sys {ks:.3}"
    )?;
    // Voluntary: a thread blocked (recv with no data, accept on an empty queue, a lock).
    // Involuntary: the scheduler took the CPU away (time slice used up, a more urgent task).
    let switches = |u: &Option<nix::sys::resource::Usage>| {
        u.as_ref().map_or((0, 0), |u| {
            (
                u.voluntary_context_switches(),
                u.involuntary_context_switches(),
            )
        })
    };
    let ((mv, mi), (kv, ki)) = (switches(&me), switches(&kids));
    writeln!(
        out,
        "context switches: voluntary {mv} involuntary {mi}, children voluntary {kv} involuntary {ki}"
    )?;

    if let Some(per) = per_worker {
        let list: Vec<String> = per.iter().map(u64::to_string).collect();
        writeln!(out, "accepts per worker: {}", list.join(" "))?;
    }
    for (label, value) in extra {
        writeln!(out, "{label}: {value}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_contract_labels_in_order() {
        let stats = Stats::new_shared(Some(3));
        let _c = stats.accepted(2);
        stats
            .worker(1)
            .requests
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::new();
        write_summary(
            &mut out,
            "x_server",
            stats,
            "SIGTERM",
            &[("queue wait".into(), "1 ms".into())],
        )
        .unwrap(); // writing to a Vec cannot fail
        let text = String::from_utf8(out).unwrap(); // we only wrote UTF-8
        let labels: Vec<&str> = text
            .lines()
            .map(|l| l.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            labels,
            [
                "summary",
                "connections accepted",
                "peak concurrent connections",
                "requests served",
                "error responses",
                "bytes echoed",
                "peak RSS KiB",
                "CPU seconds",
                "context switches",
                "accepts per worker",
                "queue wait"
            ]
        );
        assert!(text.contains("connections accepted: 1\n"));
        assert!(text.contains("requests served: 7\n"));
        assert!(text.contains("accepts per worker: 0 0 1\n"));
        assert!(text.contains("stopped by SIGTERM after "));
    }
}
