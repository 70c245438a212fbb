//! One measurement per (rung, scenario), and the tables made from them. Every cell is filled:
//! a server that cannot do a scenario gets an honest word ("refused 9,012", "timed out",
//! "crashed"), never a blank.

use serde_json::{Value, json};

/// How a run went, as the table says it.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Ok,
    /// Finished, but some messages failed: the cell says which and how many.
    Errors(String),
    /// The scenario's hard time bound expired.
    TimedOut,
    /// The server exited by itself.
    Crashed(String),
    /// The harness could not run it at all (start failed, client missing…).
    Failed(String),
}

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub rung: String,
    /// A reference server (nginx) rather than a lesson.
    pub anchor: bool,
    pub scenario: String,
    pub verdict: Option<Verdict>,
    /// Completed requests or messages per second.
    pub rate: Option<f64>,
    pub unit: &'static str,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    pub errors: u64,
    /// Connections that completed at least one message, of those opened.
    pub served_conns: Option<(u64, u64)>,
    pub completed: Option<u64>,
    pub server_cpu_s: Option<f64>,
    pub peak_pss_kib: Option<u64>,
    pub peak_threads: Option<u64>,
    pub peak_processes: Option<u64>,
    pub client_cpu_s: Option<f64>,
    /// From the server's summary.
    pub requests_served: Option<u64>,
    pub context_switches: Option<u64>,
    /// wrk's requests/s on the same scenario, when wrk ran too.
    pub wrk_rate: Option<f64>,
    /// Memory per held idle connection, bytes (hold scenario).
    pub bytes_per_conn: Option<f64>,
    /// Threads added per held idle connection (hold scenario).
    pub threads_per_conn: Option<f64>,
    /// Syscalls per request, from strace -c -f (full mode, cost scenario).
    pub syscalls_per_req: Option<f64>,
    /// The client's raw JSON, kept in results.json.
    pub client_json: Option<Value>,
    /// The stamp line of the run that measured this row (rows of several runs may be merged).
    pub measured: String,
    /// Rounds behind the row (the row is the round with the median rate) and the range of
    /// their rates.
    pub rounds: u32,
    pub rate_min: Option<f64>,
    pub rate_max: Option<f64>,
}

/// Thousands separators: 12345.6 → "12,346".
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn us(x: Option<f64>) -> String {
    x.map_or("–".into(), latency)
}

/// A latency in µs as the tables show it: µs below a millisecond, then ms.
pub fn latency(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

impl Row {
    /// The main cell: the rate, or what went wrong instead.
    pub fn rate_cell(&self) -> String {
        match &self.verdict {
            Some(Verdict::TimedOut) => "timed out".into(),
            Some(Verdict::Crashed(s)) => format!("crashed ({s})"),
            Some(Verdict::Failed(s)) => format!("failed: {s}"),
            _ => match (self.rate, self.rate_min, self.rate_max) {
                (Some(r), Some(lo), Some(hi)) if self.rounds > 1 => format!(
                    "{} {} ({}–{})",
                    thousands(r),
                    self.unit,
                    thousands(lo),
                    thousands(hi)
                ),
                (Some(r), ..) => format!("{} {}", thousands(r), self.unit),
                (None, ..) => "–".into(),
            },
        }
    }

    /// Errors, starvation and refusals, in words.
    pub fn notes_cell(&self) -> String {
        let mut notes = Vec::new();
        if let Some(Verdict::Errors(s)) = &self.verdict {
            notes.push(s.clone());
        }
        if let Some((served, total)) = self.served_conns
            && served < total
        {
            notes.push(format!(
                "{} of {} conns served",
                thousands(served as f64),
                thousands(total as f64)
            ));
        }
        if notes.is_empty() {
            "ok".into()
        } else {
            notes.join("; ")
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "rung": self.rung, "anchor": self.anchor, "scenario": self.scenario,
            "verdict": format!("{:?}", self.verdict), "rate": self.rate, "unit": self.unit,
            "p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us,
            "errors": self.errors, "notes": self.notes_cell(),
            "served_conns": self.served_conns.map(|(a, b)| json!([a, b])),
            "completed": self.completed, "server_cpu_s": self.server_cpu_s,
            "peak_pss_kib": self.peak_pss_kib, "peak_threads": self.peak_threads,
            "peak_processes": self.peak_processes, "client_cpu_s": self.client_cpu_s,
            "requests_served": self.requests_served, "context_switches": self.context_switches,
            "wrk_rate": self.wrk_rate, "bytes_per_conn": self.bytes_per_conn,
            "threads_per_conn": self.threads_per_conn,
            "syscalls_per_req": self.syscalls_per_req, "client": self.client_json,
            "measured": self.measured, "rounds": self.rounds,
            "rate_min": self.rate_min, "rate_max": self.rate_max,
        })
    }

    /// The round with the median rate stands for all of them, with their range beside it.
    pub fn median_of(mut rounds: Vec<Row>) -> Option<Row> {
        let n = rounds.len() as u32;
        let spread = crate::spread::Spread::of(rounds.iter().filter_map(|r| r.rate));
        // Rounds without a rate (a crash, a time-out) sort first: with most rounds clean the
        // median is a clean one, and with most failed the row says so.
        rounds.sort_by(|a, b| {
            a.rate
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&b.rate.unwrap_or(f64::NEG_INFINITY))
        });
        if rounds.is_empty() {
            return None;
        }
        let mut row = rounds.swap_remove(rounds.len() / 2);
        row.rounds = n;
        row.rate_min = spread.map(|s| s.min);
        row.rate_max = spread.map(|s| s.max);
        Some(row)
    }
}

impl Row {
    /// Reads back a row written by [`Row::json`] (for `bench --rewrite-from`).
    pub fn from_json(v: &Value) -> Row {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let verdict = v.get("verdict").and_then(Value::as_str).map(|s| {
            let inner = s
                .strip_prefix("Some(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap_or(s);
            let arg = |p: &str| {
                inner
                    .strip_prefix(p)
                    .and_then(|r| r.strip_suffix("\")"))
                    .unwrap_or("")
                    .replace("\\\"", "\"")
            };
            match inner {
                "Ok" => Verdict::Ok,
                "TimedOut" => Verdict::TimedOut,
                _ if inner.starts_with("Errors(") => Verdict::Errors(arg("Errors(\"")),
                _ if inner.starts_with("Crashed(") => Verdict::Crashed(arg("Crashed(\"")),
                _ => Verdict::Failed(arg("Failed(\"")),
            }
        });
        let unit = match v.get("unit").and_then(Value::as_str) {
            Some("req/s") => "req/s",
            Some("msg/s") => "msg/s",
            _ => "conns",
        };
        Row {
            rung: v
                .get("rung")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            anchor: v.get("anchor").and_then(Value::as_bool).unwrap_or(false),
            scenario: v
                .get("scenario")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            verdict,
            rate: f("rate"),
            unit,
            p50_us: f("p50_us"),
            p99_us: f("p99_us"),
            max_us: f("max_us"),
            errors: u("errors").unwrap_or(0),
            served_conns: v
                .get("served_conns")
                .and_then(Value::as_array)
                .and_then(|a| Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))),
            completed: u("completed"),
            server_cpu_s: f("server_cpu_s"),
            peak_pss_kib: u("peak_pss_kib"),
            peak_threads: u("peak_threads"),
            peak_processes: u("peak_processes"),
            client_cpu_s: f("client_cpu_s"),
            requests_served: u("requests_served"),
            context_switches: u("context_switches"),
            wrk_rate: f("wrk_rate"),
            bytes_per_conn: f("bytes_per_conn"),
            threads_per_conn: f("threads_per_conn"),
            syscalls_per_req: f("syscalls_per_req"),
            client_json: v.get("client").cloned().filter(|c| !c.is_null()),
            measured: v
                .get("measured")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            rounds: v.get("rounds").and_then(Value::as_u64).unwrap_or(1) as u32,
            rate_min: f("rate_min"),
            rate_max: f("rate_max"),
        }
    }
}

impl Cost {
    /// Reads back a cost written by [`Cost::json`].
    pub fn from_json(v: &Value) -> Cost {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        Cost {
            rung: v
                .get("rung")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            cpu_us_per_req: f("cpu_us_per_req"),
            switches_per_req: f("switches_per_req"),
            voluntary_per_req: f("voluntary_per_req"),
            syscalls_per_req: f("syscalls_per_req"),
            bytes_per_idle_conn: f("bytes_per_idle_conn"),
            threads_per_idle_conn: f("threads_per_idle_conn"),
            note: v
                .get("note")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            measured: v
                .get("measured")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            rounds: v.get("rounds").and_then(Value::as_u64).unwrap_or(1) as u32,
            cpu_min: f("cpu_min"),
            cpu_max: f("cpu_max"),
        }
    }
}

/// A markdown table of one scenario's rows.
/// The rate of the nginx (1 worker) row among `rows`, the reference for the ratio column.
fn nginx_rate(rows: &[&Row]) -> Option<f64> {
    rows.iter()
        .find(|r| r.anchor && r.rung == "nginx (1 worker)")
        .and_then(|r| r.rate)
        .filter(|&r| r > 0.0)
}

pub fn scenario_table(rows: &[&Row], with_wrk: bool) -> String {
    let mut s = String::from(
        "| server | throughput | p50 | p99 | max | errors / notes | server CPU | peak memory (PSS) | threads | client CPU |",
    );
    if with_wrk {
        s += " wrk |";
    }
    // Ratios to nginx with one worker, when it ran in this scenario (issue 6: "ratios to nginx
    // printed"). Throughput ratio from the same client, echo_client.
    let reference = nginx_rate(rows);
    if reference.is_some() {
        s += " × nginx (1 worker) |";
    }
    s += "\n|---|--:|--:|--:|--:|---|--:|--:|--:|--:|";
    if with_wrk {
        s += "--:|";
    }
    if reference.is_some() {
        s += "--:|";
    }
    s += "\n";
    for r in rows {
        let name = if r.anchor {
            format!("*{}*", r.rung)
        } else {
            format!("`{}`", r.rung)
        };
        s += &format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.rate_cell(),
            us(r.p50_us),
            us(r.p99_us),
            us(r.max_us),
            r.notes_cell(),
            r.server_cpu_s.map_or("–".into(), |c| format!("{c:.2} s")),
            mib(r.peak_pss_kib),
            r.peak_threads.map_or("–".into(), |t| thousands(t as f64)),
            r.client_cpu_s.map_or("–".into(), |c| format!("{c:.2} s")),
        );
        if with_wrk {
            s += &format!(
                " {} |",
                r.wrk_rate
                    .map_or("–".into(), |w| format!("{} req/s", thousands(w)))
            );
        }
        if let Some(n) = reference {
            s += &format!(
                " {} |",
                r.rate
                    .filter(|_| r.verdict != Some(Verdict::TimedOut))
                    .map_or("–".into(), |x| format!("{:.2}", x / n))
            );
        }
        s += "\n";
    }
    s
}

/// What one request costs on each rung: the table that explains the others.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    pub rung: String,
    pub cpu_us_per_req: Option<f64>,
    pub switches_per_req: Option<f64>,
    /// Of those, the voluntary ones (the thread blocked); the rest are involuntary (preempted).
    pub voluntary_per_req: Option<f64>,
    pub syscalls_per_req: Option<f64>,
    pub bytes_per_idle_conn: Option<f64>,
    pub threads_per_idle_conn: Option<f64>,
    pub note: String,
    /// The stamp line of the run that measured it.
    pub measured: String,
    /// Rounds behind the CPU figure (the median round's) and their range.
    pub rounds: u32,
    pub cpu_min: Option<f64>,
    pub cpu_max: Option<f64>,
}

impl Cost {
    pub fn json(&self) -> Value {
        json!({
            "rung": self.rung, "cpu_us_per_req": self.cpu_us_per_req,
            "switches_per_req": self.switches_per_req, "voluntary_per_req": self.voluntary_per_req,
            "syscalls_per_req": self.syscalls_per_req,
            "bytes_per_idle_conn": self.bytes_per_idle_conn,
            "threads_per_idle_conn": self.threads_per_idle_conn, "note": self.note,
            "measured": self.measured, "rounds": self.rounds,
            "cpu_min": self.cpu_min, "cpu_max": self.cpu_max,
        })
    }

    /// The round with the median CPU per request stands for all, with their range beside it.
    pub fn median_of(mut rounds: Vec<Cost>) -> Option<Cost> {
        let n = rounds.len() as u32;
        let spread = crate::spread::Spread::of(rounds.iter().filter_map(|c| c.cpu_us_per_req));
        rounds.sort_by(|a, b| {
            a.cpu_us_per_req
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.cpu_us_per_req.unwrap_or(f64::INFINITY))
        });
        // The lower middle: with a missing round (sorted last) the median is a measured one.
        let mut c = rounds.swap_remove(rounds.len().checked_sub(1)? / 2);
        c.rounds = n;
        c.cpu_min = spread.map(|s| s.min);
        c.cpu_max = spread.map(|s| s.max);
        Some(c)
    }
}

pub fn cost_table(costs: &[&Cost]) -> String {
    let f = |x: Option<f64>, d: usize| x.map_or("–".into(), |v| format!("{v:.d$}"));
    let mut s = String::from(
        "| server | server CPU per request | context switches per request (voluntary + involuntary) | syscalls per request | memory per idle connection | threads per idle connection |\n|---|--:|--:|--:|--:|--:|\n",
    );
    for c in costs {
        let mem = c.bytes_per_idle_conn.map_or("–".into(), |b| {
            if b >= 10_240.0 {
                format!("{:.0} KiB", b / 1024.0)
            } else {
                format!("{} B", thousands(b))
            }
        });
        s += &format!(
            "| `{}` | {} | {} | {} | {mem} | {} |\n",
            c.rung,
            match (c.cpu_us_per_req, c.cpu_min, c.cpu_max) {
                (Some(v), Some(lo), Some(hi)) if c.rounds > 1 =>
                    format!("{v:.1} µs ({lo:.1}–{hi:.1})"),
                (Some(v), ..) => format!("{v:.1} µs"),
                _ => "–".into(),
            },
            match (c.switches_per_req, c.voluntary_per_req) {
                (Some(t), Some(v)) => format!("{t:.2} ({v:.2} + {:.2})", t - v),
                (t, _) => f(t, 2),
            },
            f(c.syscalls_per_req, 1),
            f(c.threads_per_idle_conn, 2),
        );
    }
    s
}

/// The stamp lines of the runs behind `measured` (one per distinct run, in order), or
/// `fallback` when none is recorded.
pub fn stamps<'a>(measured: impl Iterator<Item = &'a str>, fallback: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for m in measured.filter(|m| !m.is_empty()) {
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    match seen.as_slice() {
        [] => fallback.to_string(),
        [one] => one.to_string(),
        many => format!("Rows from {} runs: {}", many.len(), many.join(" — ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-12345.0), "-12,345");
    }

    #[test]
    fn rows_and_costs_survive_a_json_round_trip() {
        let r = Row {
            rung: "x_server".into(),
            scenario: "echo-1k".into(),
            unit: "msg/s",
            verdict: Some(Verdict::Errors("refused 9,012".into())),
            rate: Some(1234.5),
            served_conns: Some((3, 10)),
            peak_pss_kib: Some(2048),
            ..Row::default()
        };
        let back = Row::from_json(&r.json());
        assert_eq!(back.verdict, r.verdict);
        assert_eq!(
            (back.rate, back.served_conns, back.peak_pss_kib, back.unit),
            (r.rate, r.served_conns, r.peak_pss_kib, r.unit)
        );
        assert_eq!(back.notes_cell(), r.notes_cell());
        let c = Cost {
            rung: "x".into(),
            cpu_us_per_req: Some(7.5),
            note: "n".into(),
            ..Cost::default()
        };
        let back = Cost::from_json(&c.json());
        assert_eq!(
            (back.rung, back.cpu_us_per_req, back.note),
            (c.rung, c.cpu_us_per_req, c.note)
        );
    }

    #[test]
    fn a_row_of_rounds_is_the_median_round_with_the_range() {
        let row = |rate: Option<f64>| Row {
            rung: "x".into(),
            scenario: "s".into(),
            unit: "req/s",
            rate,
            ..Row::default()
        };
        let m = Row::median_of(vec![row(Some(300.0)), row(Some(100.0)), row(Some(200.0))])
            .expect("rounds");
        assert_eq!(
            (m.rate, m.rate_min, m.rate_max, m.rounds),
            (Some(200.0), Some(100.0), Some(300.0), 3)
        );
        assert_eq!(m.rate_cell(), "200 req/s (100–300)");
        // A failed round (no rate) sorts low: two clean rounds of three give a clean median.
        let m = Row::median_of(vec![row(None), row(Some(5.0)), row(Some(7.0))]).expect("rounds");
        assert_eq!(m.rate, Some(5.0));
        assert!(Row::median_of(Vec::new()).is_none());
        let one = Row::median_of(vec![row(Some(9.0))]).expect("one");
        assert_eq!(one.rate_cell(), "9 req/s");

        let cost = |cpu: Option<f64>| Cost {
            rung: "x".into(),
            cpu_us_per_req: cpu,
            ..Cost::default()
        };
        let c =
            Cost::median_of(vec![cost(Some(9.0)), cost(None), cost(Some(8.0))]).expect("rounds");
        assert_eq!(
            (c.cpu_us_per_req, c.cpu_min, c.cpu_max),
            (Some(9.0), Some(8.0), Some(9.0))
        );
        assert!(cost_table(&[&c]).contains("| 9.0 µs (8.0–9.0) |"));
    }

    #[test]
    fn cells_are_never_blank() {
        let mut r = Row {
            rung: "x".into(),
            scenario: "s".into(),
            unit: "req/s",
            ..Row::default()
        };
        assert_eq!(r.rate_cell(), "–");
        r.verdict = Some(Verdict::TimedOut);
        assert_eq!(r.rate_cell(), "timed out");
        r.verdict = Some(Verdict::Errors("refused 9,012".into()));
        r.rate = Some(1500.0);
        r.served_conns = Some((1, 10));
        assert_eq!(r.rate_cell(), "1,500 req/s");
        assert_eq!(r.notes_cell(), "refused 9,012; 1 of 10 conns served");
    }
}
