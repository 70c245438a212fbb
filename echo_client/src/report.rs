//! The report: numbers derived once from the merged tally ([`Summary`]), then rendered for
//! people (wrk-like lines) or as one JSON object whose fields are documented in README.md and
//! versioned by `"schema"`.

use std::borrow::Cow;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::cli::{Plan, Proto, Until};
use crate::clock;
use crate::run::Outcome;
use crate::stats::{Failure, Fairness, MixLatency, Tally};

/// Bump when a field changes meaning or disappears; adding fields keeps the number.
pub const SCHEMA: u32 = 1;

/// Everything the two renderings share, computed once.
pub struct Summary<'a> {
    plan: &'a Plan,
    out: &'a Outcome,
    pub ok: bool,
    connect_s: f64,
    transfer_s: f64,
    fairness: Fairness,
    unit: &'static str,
}

impl<'a> Summary<'a> {
    pub fn new(plan: &'a Plan, out: &'a Outcome, ok: bool) -> Summary<'a> {
        let n = &out.tally.n;
        Summary {
            plan,
            out,
            ok,
            // The connect phase runs from the start of the process's clock to the moment the
            // last initial connection settled; the transfer phase from the common start (after
            // any hold) to the last reply, or to the end of a -d run.
            connect_s: clock::secs(n.connect_done_ns),
            transfer_s: clock::secs(n.transfer_done_ns.saturating_sub(n.transfer_start_ns)),
            fairness: Fairness::of(&out.tally.per_conn),
            unit: match plan.proto {
                Proto::Echo => "message",
                Proto::Http => "request",
            },
        }
    }

    fn per_s(&self, count: u64, secs: f64) -> f64 {
        if secs > 0.0 { count as f64 / secs } else { 0.0 }
    }

    fn cpu_total(&self) -> f64 {
        self.out.cpu.0 + self.out.cpu.1
    }

    /// Client CPU per completed message, µs (None when nothing completed).
    fn cpu_per_unit_us(&self) -> Option<f64> {
        let m = self.out.tally.n.messages;
        (m > 0).then(|| self.cpu_total() * 1e6 / m as f64)
    }

    // ─── JSON ───────────────────────────────────────────────────────────────────────────────

    /// The `--json` object (schema [`SCHEMA`], documented in README.md).
    pub fn json(&self, command: &[String], started_at: &str) -> Value {
        let (plan, t) = (self.plan, &self.out.tally);
        let n = &t.n;
        let f = &self.fairness;
        let mb = |bytes: u64| self.per_s(bytes, self.transfer_s) / 1e6;
        let mut errors = serde_json::Map::new();
        errors.insert("total".into(), json!(t.errors_total()));
        for kind in Failure::ALL {
            errors.insert(kind.key().into(), json!(t.errors_of(kind)));
        }
        let mut report = json!({
            "schema": SCHEMA,
            "tool": "echo_client",
            "version": env!("CARGO_PKG_VERSION"),
            "command": command,
            "started_at": started_at,
            "ok": self.ok,
            "interrupted": self.out.interrupted,
            "config": {
                "addr": plan.addr.to_string(),
                "proto": match plan.proto { Proto::Echo => "echo", Proto::Http => "http" },
                "loop": if plan.rate.is_some() { "open" } else { "closed" },
                "connections": plan.connections,
                "messages_per_connection": match plan.until { Until::Messages(m) => Some(m), _ => None },
                "duration_s": match plan.until { Until::Duration(d) => Some(d.as_secs_f64()), _ => None },
                "rate": plan.rate,
                "size": (plan.proto == Proto::Echo).then_some(plan.size),
                "connect_rate": plan.connect_rate,
                "hold_s": plan.hold.map(|h| h.as_secs_f64()),
                "close": plan.close,
                "timeout_s": plan.timeout.as_secs_f64(),
                "threads": plan.threads,
                "processes": plan.processes,
                "source_ips": plan.sources.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            },
            "connect": {
                "attempted": n.connects_attempted,
                "established": n.connects_ok,
                "duration_s": self.connect_s,
                "per_s": self.per_s(n.established_at_start, self.connect_s),
                "latency_us": hist_json(&t.connect_latency),
            },
            "transfer": {
                "unit": self.unit,
                "completed": n.messages,
                "duration_s": self.transfer_s,
                "started_unix_s": clock::unix_at(n.transfer_start_ns),
                "ended_unix_s": clock::unix_at(n.transfer_done_ns),
                "per_s": self.per_s(n.messages, self.transfer_s),
                "target_rate": plan.rate,
                "bytes_sent": n.bytes_sent,
                "bytes_received": n.bytes_received,
                "mb_per_s_sent": mb(n.bytes_sent),
                "mb_per_s_received": mb(n.bytes_received),
                "in_flight_at_end": n.in_flight_at_end,
            },
            "latency_us": hist_json(&t.latency),
            "fairness": {
                "connections": f.connections,
                "min": f.min,
                "median": f.median,
                "max": f.max,
                "completed_none": f.completed_none,
                "starved": n.starved,
                "jain_index": f.jain,
            },
            "connections": {
                "established_at_start": n.established_at_start,
                "held_after_hold": plan.hold.map(|_| n.held_after_hold),
                "peak_established": n.peak_established,
            },
            "errors": errors,
            "cpu": {
                "user_s": self.out.cpu.0,
                "system_s": self.out.cpu.1,
                "total_s": self.cpu_total(),
                "us_per_unit": self.cpu_per_unit_us(),
            },
        });
        // Only with --mix, so a run without it has exactly the fields it always had.
        if let (Some(mix), Value::Object(fields)) = (&plan.mix, &mut report) {
            let m = mix_of(t);
            fields.insert(
                "mix".into(),
                json!({
                    "every": mix.every,
                    "path": mix.path,
                    "cheap": hist_json(&m.cheap),
                    "expensive": hist_json(&m.expensive),
                }),
            );
        }
        report
    }

    // ─── people ─────────────────────────────────────────────────────────────────────────────

    /// The wrk-like report: one line per aspect, labels in a column.
    pub fn human(&self) -> String {
        let (plan, t) = (self.plan, &self.out.tally);
        let n = &t.n;
        let f = &self.fairness;
        let mut s = String::new();
        let what = match plan.proto {
            Proto::Echo => format!("echo, {}-byte messages", plan.size),
            Proto::Http if plan.close => "http, Connection: close".to_string(),
            Proto::Http => "http keep-alive".to_string(),
        };
        let what = match &plan.mix {
            Some(m) => format!("{what}, 1 request in {} to {}", m.every, m.path),
            None => what,
        };
        let looped = match plan.rate {
            Some(r) => format!("open loop at {} {}s/s", group(r), self.unit),
            None => "closed loop".to_string(),
        };
        let until = match plan.until {
            Until::Messages(m) => format!(
                "{} connections × {} {}s",
                group(plan.connections),
                group(m),
                self.unit
            ),
            Until::Duration(d) => format!(
                "{} connections for {:.1} s",
                group(plan.connections),
                d.as_secs_f64()
            ),
        };
        let procs = if plan.processes > 1 {
            format!("{} processes × {} threads", plan.processes, plan.threads)
        } else {
            format!("{} threads", plan.threads)
        };
        let _ = writeln!(
            s,
            "echo_client {} → {} ({what}; {looped}; {until}; {procs})",
            env!("CARGO_PKG_VERSION"),
            plan.addr
        );
        if self.out.interrupted {
            let _ = writeln!(
                s,
                "INTERRUPTED    by a signal: the numbers below are partial"
            );
        }
        let _ = writeln!(
            s,
            "connect        {} of {} established in {:.3} s ({}/s); latency µs {}",
            group(n.established_at_start),
            group(plan.connections),
            self.connect_s,
            group(self.per_s(n.established_at_start, self.connect_s).round() as u64),
            short_percentiles(&t.connect_latency),
        );
        if plan.close || n.connects_attempted > plan.connections {
            let _ = writeln!(
                s,
                "reconnects     {} connects in all, {} established",
                group(n.connects_attempted),
                group(n.connects_ok)
            );
        }
        if let Some(h) = plan.hold {
            let _ = writeln!(
                s,
                "hold           {:.1} s: {} established at the start, {} still established after it",
                h.as_secs_f64(),
                group(n.established_at_start),
                group(n.held_after_hold),
            );
        }
        let target = plan
            .rate
            .map_or(String::new(), |r| format!(" (target {})", group(r)));
        let _ = writeln!(
            s,
            "transfer       {} {}s in {:.3} s: {} {}s/s{target}; sent {:.2} MB/s, received {:.2} MB/s",
            group(n.messages),
            self.unit,
            self.transfer_s,
            group(self.per_s(n.messages, self.transfer_s).round() as u64),
            self.unit,
            self.per_s(n.bytes_sent, self.transfer_s) / 1e6,
            self.per_s(n.bytes_received, self.transfer_s) / 1e6,
        );
        let _ = writeln!(s, "latency µs     {}", long_percentiles(&t.latency));
        if let Some(m) = &plan.mix {
            // Both parts of the line above, aligned with each other (a long path pushes them
            // right of the label column).
            let cheap = "latency, cheap (/)".to_string();
            let expensive = format!("latency, expensive ({})", m.path);
            let width = 15.max(cheap.chars().count().max(expensive.chars().count()) + 2);
            let m = mix_of(t);
            for (label, h) in [(cheap, &m.cheap), (expensive, &m.expensive)] {
                let _ = writeln!(s, "{label:<width$}{}", long_percentiles(h));
            }
        }
        let mut fair = format!(
            "{}s per connection: min {}, median {}, max {}; {} of {} completed none",
            self.unit,
            group(f.min),
            group(f.median),
            group(f.max),
            group(f.completed_none),
            group(f.connections),
        );
        if n.starved > 0 {
            let _ = write!(
                fair,
                " ({} starved: connected, still waiting for a first reply at the end — not errors)",
                group(n.starved)
            );
        }
        let _ = writeln!(s, "fairness       {fair}; Jain's index {:.3}", f.jain);
        let _ = writeln!(
            s,
            "connections    peak {} established{}",
            group(n.peak_established),
            if n.in_flight_at_end > 0 {
                format!(
                    "; {} in flight at the end (not errors)",
                    group(n.in_flight_at_end)
                )
            } else {
                String::new()
            }
        );
        let errors: Vec<String> = Failure::ALL
            .iter()
            .filter(|&&k| t.errors_of(k) > 0)
            .map(|&k| format!("{} {}", k.label(), group(t.errors_of(k))))
            .collect();
        let _ = writeln!(
            s,
            "errors         {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                format!("{}: {}", group(t.errors_total()), errors.join(", "))
            }
        );
        let per = self.cpu_per_unit_us().map_or(String::new(), |us| {
            format!(", {us:.2} µs per {}", self.unit)
        });
        let _ = writeln!(
            s,
            "client CPU     user {:.2} s + system {:.2} s = {:.2} s{per}",
            self.out.cpu.0,
            self.out.cpu.1,
            self.cpu_total()
        );
        s
    }
}

/// µs with ns precision, from a histogram of ns. Percentiles are hdrhistogram's: the highest
/// value of the bucket that holds the quantile, so they round up, never down.
fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// The `--mix` histograms of a `--mix` run. Every thread's tally has them then, so the merged
/// one does too; should none have come back (every thread lost), the split is reported empty.
fn mix_of(t: &Tally) -> Cow<'_, MixLatency> {
    t.mix
        .as_ref()
        .map_or_else(|| Cow::Owned(MixLatency::default()), Cow::Borrowed)
}

fn hist_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "min": null, "mean": null, "stdev": null, "p50": null,
                      "p90": null, "p99": null, "p99_9": null, "p99_99": null, "max": null});
    }
    let q = |x: f64| us(h.value_at_quantile(x));
    json!({
        "count": h.len(),
        "min": us(h.min()),
        "mean": h.mean() / 1e3,
        "stdev": h.stdev() / 1e3,
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p99_9": q(0.999),
        "p99_99": q(0.9999),
        "max": us(h.max()),
    })
}

/// `p50 38.1  p99 120.0  max 2210.0`: the given quantiles and the maximum, in µs.
fn percentiles(h: &Histogram<u64>, quantiles: &[(&str, f64)]) -> String {
    let mut parts: Vec<String> = quantiles
        .iter()
        .map(|(label, q)| format!("{label} {:.1}", us(h.value_at_quantile(*q))))
        .collect();
    parts.push(format!("max {:.1}", us(h.max())));
    parts.join("  ")
}

fn short_percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    percentiles(h, &[("p50", 0.5), ("p99", 0.99)])
}

fn long_percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "- (nothing completed)".into();
    }
    let quantiles = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];
    format!(
        "{}  (mean {:.1}, stdev {:.1}, {} samples)",
        percentiles(h, &quantiles),
        h.mean() / 1e3,
        h.stdev() / 1e3,
        group(h.len()),
    )
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn grouping() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1000), "1,000");
        assert_eq!(super::group(1234567), "1,234,567");
    }
}
