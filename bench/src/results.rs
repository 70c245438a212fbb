//! One measurement per (rung, scenario), and the tables made from them. Every cell is filled:
//! a server that cannot do a scenario gets an honest word ("refused 9,012", "timed out",
//! "crashed"), never a blank.

use serde_json::{Value, json};

use crate::spread::Spread;

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
    /// Server CPU per completed request, µs: the median of the rounds with their range.
    pub cpu_us_per_req: Option<Spread>,
    /// A mixed workload (echo_client `--mix`): the cheap and the expensive requests apart.
    pub mix: Option<MixRow>,
    /// The stalled-loop scenario: one row per `--distribute` mode, and what each loop took.
    pub stall: Option<StallRow>,
}

/// The two kinds of request of a mixed workload: each latency the median of the rounds (each
/// on its own, as a sweep cell's metrics) with their range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MixRow {
    pub every: u32,
    /// The expensive requests' target (`/work/N`).
    pub path: String,
    pub cheap_p50_us: Option<Spread>,
    pub cheap_p99_us: Option<Spread>,
    pub expensive_p50_us: Option<Spread>,
    pub expensive_p99_us: Option<Spread>,
    /// Requests of each kind completed, in the row's (median) round.
    pub cheap_count: Option<u64>,
    pub expensive_count: Option<u64>,
}

impl MixRow {
    /// One round's, from the client.
    pub fn of_round(m: &crate::client::MixOutcome) -> MixRow {
        let one = |x: Option<f64>| x.and_then(|v| Spread::of([v]));
        MixRow {
            every: m.mix.every,
            path: m.mix.path.clone(),
            cheap_p50_us: one(m.cheap.p50_us),
            cheap_p99_us: one(m.cheap.p99_us),
            expensive_p50_us: one(m.expensive.p50_us),
            expensive_p99_us: one(m.expensive.p99_us),
            cheap_count: m.cheap.count,
            expensive_count: m.expensive.count,
        }
    }

    fn json(&self) -> Value {
        json!({
            "every": self.every, "path": self.path,
            "cheap_p50_us": spread_json(self.cheap_p50_us),
            "cheap_p99_us": spread_json(self.cheap_p99_us),
            "expensive_p50_us": spread_json(self.expensive_p50_us),
            "expensive_p99_us": spread_json(self.expensive_p99_us),
            "cheap_count": self.cheap_count, "expensive_count": self.expensive_count,
        })
    }

    fn from_json(v: &Value) -> Option<MixRow> {
        let s = |k: &str| v.get(k).and_then(spread_from_json);
        Some(MixRow {
            every: v.get("every")?.as_u64()? as u32,
            path: v.get("path")?.as_str()?.to_string(),
            cheap_p50_us: s("cheap_p50_us"),
            cheap_p99_us: s("cheap_p99_us"),
            expensive_p50_us: s("expensive_p50_us"),
            expensive_p99_us: s("expensive_p99_us"),
            cheap_count: v.get("cheap_count").and_then(Value::as_u64),
            expensive_count: v.get("expensive_count").and_then(Value::as_u64),
        })
    }
}

/// One `--distribute` mode of the stalled-loop scenario: the measured client's latency, and
/// where the new connections went. A round fills each spread with its own value; a row of
/// rounds has the median of the rounds' own with their range (as [`MixRow`]), and the per-loop
/// figures of its median round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StallRow {
    /// `--distribute`: reuseport, exclusive or acceptor.
    pub distribute: String,
    /// The staller's target (`/work/N`).
    pub path: String,
    /// µs of CPU per `--work` unit, measured at the start of the run that sized `path`.
    pub unit_us: Option<f64>,
    /// Requests per second offered by the measured client (`--rate`).
    pub rate: u64,
    /// How long one staller request took, ms (its median in the round): one stall.
    pub stall_ms: Option<Spread>,
    pub p50_us: Option<Spread>,
    pub p99_us: Option<Spread>,
    pub max_us: Option<Spread>,
    /// Of the measured client's connections, the share the stalled loop accepted, %.
    pub share_pct: Option<Spread>,
    /// Those connections per staller request: how many new connections one stall caught.
    pub per_stall: Option<Spread>,
    /// The staller's requests (stalls) in the round.
    pub stalls: Option<u64>,
    /// The server's `accepts per worker`: connections each loop took, in loop order (the
    /// staller's own included).
    pub accepts: Vec<u64>,
    /// CPU seconds of each loop's thread over the measured load, in loop order.
    pub loop_cpu_s: Vec<f64>,
    /// The loop the staller held: the one that used the most CPU, if clearly.
    pub stalled_loop: Option<usize>,
}

impl StallRow {
    /// The loop that used clearly the most CPU — at least twice the next one's, which the
    /// staller's loop does (it computes all the run, the others mostly wait) — or `None`.
    pub fn busiest(loop_cpu_s: &[f64]) -> Option<usize> {
        let mut order: Vec<(usize, f64)> = loop_cpu_s.iter().copied().enumerate().collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        match order.as_slice() {
            [(i, top), rest @ ..] if *top > 0.0 && rest.iter().all(|r| 2.0 * r.1 <= *top) => {
                Some(*i)
            }
            _ => None,
        }
    }

    /// The share of the measured client's connections that the stalled loop accepted, %: its
    /// accepts but the staller's own connection, of all the loops' but that one.
    pub fn stalled_share_pct(&self) -> Option<f64> {
        let on_stalled = self.accepts.get(self.stalled_loop?)?.checked_sub(1)?;
        let all = self.accepts.iter().sum::<u64>().checked_sub(1)?;
        (all > 0).then(|| on_stalled as f64 * 100.0 / all as f64)
    }

    /// The measured client's connections the stalled loop accepted, per stall (per staller
    /// request): one per stall is a policy that learns of each stall one connection late.
    pub fn caught_per_stall(&self) -> Option<f64> {
        let on_stalled = self.accepts.get(self.stalled_loop?)?.checked_sub(1)?;
        let stalls = self.stalls.filter(|&n| n > 0)?;
        Some(on_stalled as f64 / stalls as f64)
    }

    fn json(&self) -> Value {
        json!({
            "distribute": self.distribute, "path": self.path, "unit_us": self.unit_us,
            "rate": self.rate,
            "stall_ms": spread_json(self.stall_ms),
            "p50_us": spread_json(self.p50_us), "p99_us": spread_json(self.p99_us),
            "max_us": spread_json(self.max_us), "share_pct": spread_json(self.share_pct),
            "per_stall": spread_json(self.per_stall), "stalls": self.stalls,
            "accepts": self.accepts, "loop_cpu_s": self.loop_cpu_s,
            "stalled_loop": self.stalled_loop,
        })
    }

    fn from_json(v: &Value) -> Option<StallRow> {
        let s = |k: &str| v.get(k).and_then(spread_from_json);
        let list = |k: &str| {
            v.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        Some(StallRow {
            distribute: v.get("distribute")?.as_str()?.to_string(),
            path: v.get("path")?.as_str()?.to_string(),
            unit_us: v.get("unit_us").and_then(Value::as_f64),
            rate: v.get("rate").and_then(Value::as_u64).unwrap_or(0),
            stall_ms: s("stall_ms"),
            p50_us: s("p50_us"),
            p99_us: s("p99_us"),
            max_us: s("max_us"),
            share_pct: s("share_pct"),
            per_stall: s("per_stall"),
            stalls: v.get("stalls").and_then(Value::as_u64),
            accepts: list("accepts").iter().filter_map(Value::as_u64).collect(),
            loop_cpu_s: list("loop_cpu_s")
                .iter()
                .filter_map(Value::as_f64)
                .collect(),
            stalled_loop: v
                .get("stalled_loop")
                .and_then(Value::as_u64)
                .map(|i| i as usize),
        })
    }
}

/// A spread in results.json: `{"median", "min", "max", "rounds"}`, or null.
fn spread_json(s: Option<Spread>) -> Value {
    s.map_or(
        Value::Null,
        |s| json!({"median": s.median, "min": s.min, "max": s.max, "rounds": s.n}),
    )
}

fn spread_from_json(v: &Value) -> Option<Spread> {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    Some(Spread {
        median: f("median")?,
        min: f("min")?,
        max: f("max")?,
        n: v.get("rounds").and_then(Value::as_u64).unwrap_or(1) as usize,
    })
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
        let mut v = json!({
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
            "cpu_us_per_req": spread_json(self.cpu_us_per_req),
            "mix": self.mix.as_ref().map(MixRow::json),
        });
        // Only a stalled-loop row has the key: the other rows read as they did before it.
        if let (Some(st), Some(o)) = (&self.stall, v.as_object_mut()) {
            o.insert("stall".into(), st.json());
        }
        v
    }

    /// What tells two rows of one rung and scenario apart: the `--distribute` mode of a
    /// stalled-loop row (a row per mode), else nothing.
    pub fn variant(&self) -> Option<&str> {
        self.stall.as_ref().map(|s| s.distribute.as_str())
    }

    /// Server CPU per completed request in this round, µs.
    pub fn round_cpu_us_per_req(&self) -> Option<f64> {
        let n = self.completed.filter(|&n| n > 0)? as f64;
        Some(self.server_cpu_s? * 1e6 / n)
    }

    /// The round with the median rate stands for all of them, with their range beside it; CPU
    /// per request and a mixed workload's latencies are each the median of the rounds' own.
    pub fn median_of(mut rounds: Vec<Row>) -> Option<Row> {
        let n = rounds.len() as u32;
        let spread = Spread::of(rounds.iter().filter_map(|r| r.rate));
        let cpu = Spread::of(rounds.iter().filter_map(Row::round_cpu_us_per_req));
        let mixes: Vec<&MixRow> = rounds.iter().filter_map(|r| r.mix.as_ref()).collect();
        let mix_spread = |f: fn(&MixRow) -> Option<Spread>| {
            Spread::of(mixes.iter().filter_map(|m| f(m)).map(|s| s.median))
        };
        let mix = mixes.first().map(|first| MixRow {
            cheap_p50_us: mix_spread(|m| m.cheap_p50_us),
            cheap_p99_us: mix_spread(|m| m.cheap_p99_us),
            expensive_p50_us: mix_spread(|m| m.expensive_p50_us),
            expensive_p99_us: mix_spread(|m| m.expensive_p99_us),
            ..(*first).clone()
        });
        let stalls: Vec<&StallRow> = rounds.iter().filter_map(|r| r.stall.as_ref()).collect();
        let stall_spread = |f: fn(&StallRow) -> Option<Spread>| {
            Spread::of(stalls.iter().filter_map(|m| f(m)).map(|s| s.median))
        };
        let stall = stalls.first().map(|first| StallRow {
            stall_ms: stall_spread(|m| m.stall_ms),
            p50_us: stall_spread(|m| m.p50_us),
            p99_us: stall_spread(|m| m.p99_us),
            max_us: stall_spread(|m| m.max_us),
            share_pct: stall_spread(|m| m.share_pct),
            per_stall: stall_spread(|m| m.per_stall),
            ..(*first).clone()
        });
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
        row.cpu_us_per_req = cpu;
        if let Some(m) = mix {
            // The counts are the row's own round's.
            let own = row.mix.take();
            row.mix = Some(MixRow {
                cheap_count: own.as_ref().and_then(|o| o.cheap_count),
                expensive_count: own.as_ref().and_then(|o| o.expensive_count),
                ..m
            });
        }
        if let Some(m) = stall {
            // The per-loop figures are the row's own round's.
            let own = row.stall.take().unwrap_or_default();
            row.stall = Some(StallRow {
                accepts: own.accepts,
                loop_cpu_s: own.loop_cpu_s,
                stalled_loop: own.stalled_loop,
                stalls: own.stalls,
                ..m
            });
        }
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
            // Both added after schema 3's first files: absent there, and read as none.
            cpu_us_per_req: v.get("cpu_us_per_req").and_then(spread_from_json),
            mix: v.get("mix").and_then(MixRow::from_json),
            stall: v.get("stall").and_then(StallRow::from_json),
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
            r.mix.as_ref().map_or_else(
                || r.notes_cell(),
                |m| {
                    // A mixed row elsewhere than its own page (a rung's README): the cheap
                    // requests' latency, which the all-requests columns blur.
                    let cheap = format!(
                        "cheap requests p50 {}, p99 {}",
                        us(m.cheap_p50_us.map(|s| s.median)),
                        us(m.cheap_p99_us.map(|s| s.median))
                    );
                    match r.notes_cell() {
                        n if n == "ok" => cheap,
                        n => format!("{n}; {cheap}"),
                    }
                }
            ),
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

fn spread_cell(s: Option<Spread>, fmt: impl Fn(f64) -> String) -> String {
    s.map_or("–".into(), |s| s.show(fmt))
}

/// The mixed workload's page text above its table: what was sent, and how to read it.
/// `work_unit_us`: the `--work` unit measured at the start of the run, if known.
pub fn mixed_about(rows: &[&Row], work_unit_us: Option<f64>) -> String {
    let mut kinds: Vec<(u32, &str)> = Vec::new();
    for m in rows.iter().filter_map(|r| r.mix.as_ref()) {
        if !kinds.contains(&(m.every, m.path.as_str())) {
            kinds.push((m.every, m.path.as_str()));
        }
    }
    let sent = kinds
        .iter()
        .map(|(every, path)| {
            let cost = path
                .strip_prefix("/work/")
                .and_then(|n| n.parse::<f64>().ok())
                .zip(work_unit_us)
                .map(|(n, u)| format!(" (≈ {:.1} ms of CPU at {u:.2} µs per unit)", n * u / 1000.0))
                .unwrap_or_default();
            format!("every {every}th request of each connection is `GET {path}`{cost}")
        })
        .collect::<Vec<_>>()
        .join("; in other rows ");
    format!(
        "Closed loop, HTTP keep-alive: {sent}, the others `GET /` at no work \
         ([contract](../contract.md) §5, echo_client `--mix`). A pool runs with a worker per \
         connection (`--workers`). **Cheap** and **expensive** are the two kinds' latencies \
         apart: a cheap request queued on one event loop behind an expensive one waits for it \
         (head-of-line blocking), so the cheap requests' p99 is the column that tells the models \
         apart. Each latency and the CPU per request is the median of the rounds' own, with \
         their min–max; throughput is the median round's."
    )
}

/// The mixed workload's table: the cheap and the expensive requests' latency apart, then
/// throughput and server CPU per request.
pub fn mixed_table(rows: &[&Row]) -> String {
    let mut s = String::from(
        "| server | cheap p50 | cheap p99 | expensive p50 | expensive p99 | throughput | server CPU per request | errors / notes |\n|---|--:|--:|--:|--:|--:|--:|---|\n",
    );
    for r in rows {
        let m = r.mix.clone().unwrap_or_default();
        let cpu = r
            .cpu_us_per_req
            .or_else(|| r.round_cpu_us_per_req().and_then(|c| Spread::of([c])));
        s += &format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |\n",
            r.rung,
            spread_cell(m.cheap_p50_us, latency),
            spread_cell(m.cheap_p99_us, latency),
            spread_cell(m.expensive_p50_us, latency),
            spread_cell(m.expensive_p99_us, latency),
            r.rate_cell(),
            spread_cell(cpu, |c| format!("{c:.1} µs")),
            r.notes_cell(),
        );
    }
    s
}

/// The stalled-loop scenario's page text above its table: the setup, and how each column is
/// measured. `work_unit_us`: the `--work` unit measured at the start of the run, if the rows do
/// not say which unit sized their staller (rows of an older results.json).
pub fn stalled_about(rows: &[&Row], work_unit_us: Option<f64>) -> String {
    let first = rows.iter().find_map(|r| r.stall.as_ref());
    let path = first.map_or("/work/N", |s| s.path.as_str());
    let work_unit_us = first.and_then(|s| s.unit_us).or(work_unit_us);
    let cost = path
        .strip_prefix("/work/")
        .and_then(|n| n.parse::<f64>().ok())
        .zip(work_unit_us)
        .map(|(n, u)| format!(" (≈ {:.0} ms of CPU at {u:.2} µs per unit)", n * u / 1000.0))
        .unwrap_or_default();
    let workers = rows
        .iter()
        .find_map(|r| r.stall.as_ref().map(|s| s.accepts.len()))
        .filter(|&n| n > 0)
        .map_or("N".to_string(), |n| n.to_string());
    // The measured client's exact command, from its own report (argv, the port left out).
    let command = rows
        .iter()
        .find_map(|r| r.client_json.as_ref()?.get("command")?.as_array().cloned())
        .map(|argv| {
            let mut words: Vec<String> = argv
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if let Some(w) = words.first_mut() {
                *w = w.rsplit('/').next().unwrap_or(w).to_string();
            }
            if let Some(i) = words.iter().position(|w| w == "--addr") {
                words.drain(i..(i + 2).min(words.len()));
            }
            format!("`{}`", words.join(" "))
        })
        .unwrap_or_else(|| "echo_client (its command is in results.json)".into());
    format!(
        "`multi_epoll_server --workers {workers} --distribute MODE` (HTTP), a fresh server for \
         every run, modes in turn within each round. **The staller**: one keep-alive connection \
         of the harness sends `GET {path}`{cost}, waits for the answer and sends the next at \
         once, for the whole run — the loop that took it computes nearly all the time and turns \
         to its other connections, and to new ones, only between two of those requests. **The \
         measured client**: {command} — a new connection per request (every mode decides at \
         accept), open loop at a fixed rate, latency from each request's intended send time; \
         each slot reconnects right after its answer and sends its next request on schedule. A \
         request on a connection of the stalled loop waits for the stall in progress to end. \
         **Which loop was stalled**: the one whose thread used the most CPU over the load \
         (`/proc/PID/task/TID/stat` of the threads `loop-0`, `loop-1`). **Accepts per loop**: \
         the server's own count (`accepts per worker`), the staller's connection included; the \
         share of new connections on the stalled loop leaves it out, and **per stall** divides \
         those connections by the staller's requests in the run: how many new connections each \
         stall caught. **One staller request**: its median wall time in the run, one stall — more than its CPU when the loop waited \
         for a core. Each latency, share and stall is the median of the rounds' own with their \
         min–max; throughput is the median round's, and the per-loop columns are that round's."
    )
}

/// The stalled-loop scenario's table: a row per `--distribute` mode — the measured client's
/// latency and rate, then where the new connections went and what each loop did.
pub fn stalled_table(rows: &[&Row]) -> String {
    let mut s = String::from(
        "| `--distribute` | p50 | p99 | max | throughput | new connections on the stalled loop | per stall | accepts per loop | loop CPU over the load | one staller request | errors / notes |\n|---|--:|--:|--:|--:|--:|--:|---|---|--:|---|\n",
    );
    for r in rows {
        let st = r.stall.clone().unwrap_or_default();
        let per_loop = |v: Vec<String>| {
            if v.is_empty() {
                return "–".to_string();
            }
            v.into_iter()
                .enumerate()
                .map(|(i, x)| {
                    if Some(i) == st.stalled_loop {
                        format!("{x} (stalled)")
                    } else {
                        x
                    }
                })
                .collect::<Vec<_>>()
                .join(" · ")
        };
        s += &format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            st.distribute,
            spread_cell(st.p50_us, latency),
            spread_cell(st.p99_us, latency),
            spread_cell(st.max_us, latency),
            r.rate_cell(),
            spread_cell(st.share_pct, percent),
            spread_cell(st.per_stall, |n| format!("{n:.1}")),
            per_loop(st.accepts.iter().map(|&n| thousands(n as f64)).collect()),
            per_loop(st.loop_cpu_s.iter().map(|c| format!("{c:.1} s")).collect()),
            spread_cell(st.stall_ms, |ms| latency(ms * 1000.0)),
            r.notes_cell(),
        );
    }
    s
}

/// A share as the stalled-loop table shows it: two decimals under 1%, where the modes that
/// avoid the stalled loop differ (0.04% is four connections in ten thousand), one above.
fn percent(p: f64) -> String {
    if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// One sentence under the stalled-loop table: each other mode's p99 against `reuseport`'s,
/// by their ranges (two rows differ only where the ranges do not overlap); empty without a
/// `reuseport` row.
pub fn stalled_verdict(rows: &[&Row]) -> String {
    let p99 = |r: &Row| r.stall.as_ref().and_then(|s| s.p99_us);
    let Some(base) = rows
        .iter()
        .find(|r| r.variant() == Some("reuseport"))
        .and_then(|r| p99(r))
    else {
        return String::new();
    };
    let show = |s: Spread| s.show(latency);
    let others: Vec<String> = rows
        .iter()
        .filter(|r| r.variant().is_some_and(|v| v != "reuseport"))
        .map(|r| {
            let mode = r.variant().unwrap_or_default();
            match p99(r) {
                None => format!("`{mode}` has no p99 ({})", r.rate_cell()),
                Some(p) if p.overlaps(&base) => {
                    format!(
                        "`{mode}` {} — the ranges overlap: no difference shown",
                        show(p)
                    )
                }
                Some(p) if p.median < base.median => format!("`{mode}` {} — lower", show(p)),
                Some(p) => format!("`{mode}` {} — higher", show(p)),
            }
        })
        .collect();
    format!(
        "The p99 against `reuseport`'s, {}: {}.",
        show(base),
        others.join("; ")
    )
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

    /// A mixed row as a round makes it: rate, CPU, and the mix of the client's JSON.
    fn mixed_round(rung: &str, rate: f64, cpu_s: f64, cheap: (f64, f64), exp: (f64, f64)) -> Row {
        let mix = crate::client::MixOutcome {
            mix: crate::scenarios::Mix {
                every: 10,
                path: "/work/500".into(),
            },
            cheap: crate::client::KindLatency {
                count: Some(9_000),
                p50_us: Some(cheap.0),
                p99_us: Some(cheap.1),
                ..Default::default()
            },
            expensive: crate::client::KindLatency {
                count: Some(1_000),
                p50_us: Some(exp.0),
                p99_us: Some(exp.1),
                ..Default::default()
            },
        };
        Row {
            rung: rung.into(),
            scenario: "mixed".into(),
            unit: "req/s",
            verdict: Some(Verdict::Ok),
            rate: Some(rate),
            completed: Some(10_000),
            server_cpu_s: Some(cpu_s),
            mix: Some(MixRow::of_round(&mix)),
            ..Row::default()
        }
    }

    #[test]
    fn a_mixed_row_is_read_from_the_client_and_keeps_each_latency_s_median() {
        let v: Value = serde_json::from_str(include_str!("../fixtures/echo_client_mix.json"))
            .expect("fixture");
        let c = crate::client::parse_echo_client(&v);
        let m = MixRow::of_round(c.mix.as_ref().expect("mix"));
        assert_eq!((m.every, m.path.as_str()), (10, "/work/500"));
        assert_eq!(m.cheap_p99_us.map(|s| s.median), Some(76.479));
        assert_eq!(m.expensive_p50_us.map(|s| s.median), Some(53.471));
        assert_eq!(
            (m.cheap_count, m.expensive_count),
            (Some(66579), Some(7394))
        );

        // Each latency is the median of the rounds' own, not the median-rate round's.
        let row = Row::median_of(vec![
            mixed_round("e", 900.0, 0.5, (60.0, 3_000.0), (1_000.0, 4_000.0)),
            mixed_round("e", 1_000.0, 0.6, (50.0, 1_000.0), (1_100.0, 2_000.0)),
            mixed_round("e", 800.0, 0.4, (70.0, 2_000.0), (1_200.0, 3_000.0)),
        ])
        .expect("rounds");
        assert_eq!(row.rate, Some(900.0));
        let m = row.mix.clone().expect("mix");
        let p99 = m.cheap_p99_us.expect("p99");
        assert_eq!(
            (p99.median, p99.min, p99.max, p99.n),
            (2_000.0, 1_000.0, 3_000.0, 3)
        );
        assert_eq!(m.expensive_p50_us.map(|s| s.median), Some(1_100.0));
        let cpu = row.cpu_us_per_req.expect("cpu");
        assert_eq!((cpu.median, cpu.min, cpu.max), (50.0, 40.0, 60.0));

        // Round trip through results.json; a row of an older file (no mix, no CPU spread) loads.
        let back = Row::from_json(&row.json());
        assert_eq!(back.mix, row.mix);
        assert_eq!(back.cpu_us_per_req, row.cpu_us_per_req);
        let mut old = row.json();
        let o = old.as_object_mut().expect("object");
        o.remove("mix");
        o.remove("cpu_us_per_req");
        let back = Row::from_json(&old);
        assert_eq!(
            (back.mix, back.cpu_us_per_req, back.rate),
            (None, None, Some(900.0))
        );
    }

    #[test]
    fn the_mixed_table_shows_the_cheap_requests_apart() {
        let three = |rung: &str, k: f64| {
            Row::median_of(
                [1.0, 1.1, 0.9]
                    .iter()
                    .map(|f| {
                        mixed_round(
                            rung,
                            4_000.0 * f,
                            0.05 * f,
                            (80.0 * k * f, 900.0 * k * f),
                            (1_050.0 * f, 2_400.0 * f),
                        )
                    })
                    .collect(),
            )
            .expect("rounds")
        };
        let a = three("epoll_et_server", 10.0);
        let b = three("tokio_server", 1.0);
        let mut c = Row {
            rung: "threadpool_accept_main".into(),
            scenario: "mixed".into(),
            unit: "req/s",
            verdict: Some(Verdict::Crashed("signal 9".into())),
            ..Row::default()
        };
        c.rounds = 1;
        let t = mixed_table(&[&a, &b, &c]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| server | cheap p50 | cheap p99 | expensive p50 | expensive p99 | throughput | server CPU per request | errors / notes |"
        );
        assert_eq!(
            lines[2],
            "| `epoll_et_server` | 800 µs (720–880 µs) | 9.0 ms (8.1–9.9 ms) | 1.1 ms (945 µs–1.2 ms) | 2.4 ms (2.2–2.6 ms) | 4,000 req/s (3,600–4,400) | 5.0 µs (4.5–5.5 µs) | ok |"
        );
        assert_eq!(
            lines[3],
            "| `tokio_server` | 80 µs (72–88 µs) | 900 µs (810–990 µs) | 1.1 ms (945 µs–1.2 ms) | 2.4 ms (2.2–2.6 ms) | 4,000 req/s (3,600–4,400) | 5.0 µs (4.5–5.5 µs) | ok |"
        );
        assert_eq!(
            lines[4],
            "| `threadpool_accept_main` | – | – | – | – | crashed (signal 9) | – | ok |"
        );
        let about = mixed_about(&[&a, &b], Some(2.0));
        assert!(
            about.contains("every 10th request of each connection is `GET /work/500` (≈ 1.0 ms of CPU at 2.00 µs per unit)"),
            "{about}"
        );
        // Elsewhere (a rung's README) the generic table carries the cheap figures in its notes.
        assert!(
            scenario_table(&[&a], false).contains("| cheap requests p50 800 µs, p99 9.0 ms |"),
            "{}",
            scenario_table(&[&a], false)
        );
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

    /// One round of one `--distribute` mode of the stalled-loop scenario, as run.rs makes it.
    fn stall_round(
        mode: &str,
        rate: f64,
        lat: (f64, f64, f64),
        accepts: &[u64],
        cpu: &[f64],
    ) -> Row {
        let one = |v: f64| Spread::of([v]);
        let mut st = StallRow {
            distribute: mode.into(),
            path: "/work/75000".into(),
            rate: 1000,
            stall_ms: one(150.0 + rate / 1000.0),
            p50_us: one(lat.0),
            p99_us: one(lat.1),
            max_us: one(lat.2),
            accepts: accepts.to_vec(),
            loop_cpu_s: cpu.to_vec(),
            stalled_loop: StallRow::busiest(cpu),
            stalls: Some(100),
            ..StallRow::default()
        };
        st.share_pct = st.stalled_share_pct().and_then(one);
        st.per_stall = st.caught_per_stall().and_then(one);
        Row {
            rung: "multi_epoll_server".into(),
            scenario: "stalled".into(),
            unit: "req/s",
            verdict: Some(Verdict::Ok),
            rate: Some(rate),
            p99_us: Some(lat.1),
            stall: Some(st),
            ..Row::default()
        }
    }

    #[test]
    fn the_stalled_loop_is_the_busiest_and_its_share_leaves_the_staller_out() {
        assert_eq!(StallRow::busiest(&[9.8, 0.4]), Some(0));
        assert_eq!(StallRow::busiest(&[0.4, 9.8, 0.2]), Some(1));
        // Not clearly one loop (the staller failed, say): none.
        assert_eq!(StallRow::busiest(&[1.0, 0.6]), None);
        assert_eq!(StallRow::busiest(&[0.0, 0.0]), None);
        assert_eq!(StallRow::busiest(&[]), None);
        let st = |accepts: Vec<u64>, stalled_loop| StallRow {
            accepts,
            stalled_loop,
            ..StallRow::default()
        };
        // 1 of the stalled loop's 251 is the staller's: 250 of the 10,000 others, 2.5%.
        assert_eq!(st(vec![251, 9_750], Some(0)).stalled_share_pct(), Some(2.5));
        assert_eq!(st(vec![9_750, 1], Some(1)).stalled_share_pct(), Some(0.0));
        assert_eq!(st(vec![9_750, 1], None).stalled_share_pct(), None);
        assert_eq!(st(vec![0, 0], Some(0)).stalled_share_pct(), None);
        assert_eq!(st(vec![], Some(0)).stalled_share_pct(), None);
        // 250 connections caught by 100 stalls; without a count of stalls, nothing.
        let mut caught = st(vec![251, 9_750], Some(0));
        assert_eq!(caught.caught_per_stall(), None);
        caught.stalls = Some(100);
        assert_eq!(caught.caught_per_stall(), Some(2.5));
        caught.stalls = Some(0);
        assert_eq!(caught.caught_per_stall(), None);
        assert_eq!(
            (percent(0.04), percent(2.54)),
            ("0.04%".into(), "2.5%".into())
        );
    }

    #[test]
    fn a_stalled_row_keeps_each_figure_s_median_and_its_round_s_loops() {
        let row = Row::median_of(vec![
            stall_round(
                "acceptor",
                990.0,
                (130.0, 200_000.0, 400_000.0),
                &[258, 10_135],
                &[9.1, 0.4],
            ),
            stall_round(
                "acceptor",
                1_000.0,
                (100.0, 150_000.0, 300_000.0),
                &[101, 9_900],
                &[9.0, 0.5],
            ),
            stall_round(
                "acceptor",
                980.0,
                (120.0, 180_000.0, 500_000.0),
                &[1, 10_000],
                &[8.0, 0.3],
            ),
        ])
        .expect("rounds");
        assert_eq!(row.rate, Some(990.0));
        let st = row.stall.clone().expect("stall");
        let p99 = st.p99_us.expect("p99");
        assert_eq!(
            (p99.median, p99.min, p99.max, p99.n),
            (180_000.0, 150_000.0, 200_000.0, 3)
        );
        assert_eq!(st.max_us.map(|s| s.median), Some(400_000.0));
        let share = st.share_pct.expect("share");
        assert_eq!((share.min, share.median), (0.0, 1.0));
        let caught = st.per_stall.expect("per stall");
        assert_eq!((caught.min, caught.median, caught.max), (0.0, 1.0, 2.57));
        assert_eq!(st.stalls, Some(100));
        // The per-loop figures are the median round's (rate 990), not mixed across rounds.
        assert_eq!(
            (
                st.accepts.as_slice(),
                st.loop_cpu_s.as_slice(),
                st.stalled_loop
            ),
            (&[258, 10_135][..], &[9.1, 0.4][..], Some(0))
        );
        assert_eq!(row.variant(), Some("acceptor"));
        // Round trip through results.json; a row without one has no stall.
        let back = Row::from_json(&row.json());
        assert_eq!(back.stall, row.stall);
        let mut old = row.json();
        old.as_object_mut().expect("object").remove("stall");
        assert_eq!(Row::from_json(&old).stall, None);
        assert_eq!(Row::from_json(&old).variant(), None);
    }

    #[test]
    fn the_stalled_table_has_a_row_per_mode_and_compares_the_p99s() {
        let three = |mode: &str, p99: f64, accepts: [u64; 2], cpu: [f64; 2]| {
            Row::median_of(
                [1.0, 1.1, 0.9]
                    .iter()
                    .map(|f| {
                        stall_round(
                            mode,
                            1_000.0 * f,
                            (500.0 * f, p99 * f, 2.0 * p99 * f),
                            &accepts,
                            &cpu,
                        )
                    })
                    .collect(),
            )
            .expect("rounds")
        };
        let reuseport = three("reuseport", 200_000.0, [5_001, 5_000], [9.5, 0.5]);
        let exclusive = three("exclusive", 1_800.0, [1, 10_000], [9.5, 0.5]);
        let acceptor = three("acceptor", 210_000.0, [9_900, 101], [0.5, 9.5]);
        let mut crashed = Row {
            rung: "multi_epoll_server".into(),
            scenario: "stalled".into(),
            unit: "req/s",
            verdict: Some(Verdict::Crashed("signal 9".into())),
            stall: Some(StallRow {
                distribute: "acceptor".into(),
                ..StallRow::default()
            }),
            ..Row::default()
        };
        crashed.rounds = 1;
        let t = stalled_table(&[&reuseport, &exclusive, &acceptor, &crashed]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| `--distribute` | p50 | p99 | max | throughput | new connections on the stalled loop | per stall | accepts per loop | loop CPU over the load | one staller request | errors / notes |"
        );
        assert_eq!(
            lines[2],
            "| `reuseport` | 500 µs (450–550 µs) | 200 ms (180–220 ms) | 400 ms (360–440 ms) | 1,000 req/s (900–1,100) | 50.0% (50.0–50.0%) | 50.0 (50.0–50.0) | 5,001 (stalled) · 5,000 | 9.5 s (stalled) · 0.5 s | 151 ms (151–151 ms) | ok |"
        );
        assert_eq!(
            lines[3],
            "| `exclusive` | 500 µs (450–550 µs) | 1.8 ms (1.6–2.0 ms) | 3.6 ms (3.2–4.0 ms) | 1,000 req/s (900–1,100) | 0.00% (0.00–0.00%) | 0.0 (0.0–0.0) | 1 (stalled) · 10,000 | 9.5 s (stalled) · 0.5 s | 151 ms (151–151 ms) | ok |"
        );
        assert_eq!(
            lines[4],
            "| `acceptor` | 500 µs (450–550 µs) | 210 ms (189–231 ms) | 420 ms (378–462 ms) | 1,000 req/s (900–1,100) | 1.0% (1.0–1.0%) | 1.0 (1.0–1.0) | 9,900 · 101 (stalled) | 0.5 s · 9.5 s (stalled) | 151 ms (151–151 ms) | ok |"
        );
        assert_eq!(
            lines[5],
            "| `acceptor` | – | – | – | crashed (signal 9) | – | – | – | – | – | ok |"
        );
        let v = stalled_verdict(&[&reuseport, &exclusive, &acceptor, &crashed]);
        assert_eq!(
            v,
            "The p99 against `reuseport`'s, 200 ms (180–220 ms): `exclusive` 1.8 ms (1.6–2.0 ms) — \
             lower; `acceptor` 210 ms (189–231 ms) — the ranges overlap: no difference shown; \
             `acceptor` has no p99 (crashed (signal 9))."
        );
        assert_eq!(stalled_verdict(&[&exclusive]), "");
        let mut r = reuseport.clone();
        r.client_json = Some(serde_json::json!({"command": [
            "/work/target/release/echo_client", "--addr", "127.0.0.1:4242", "--json",
            "--proto", "http", "-c", "400", "--close", "--rate", "1000"
        ]}));
        let about = stalled_about(&[&r, &exclusive], Some(2.0));
        assert!(
            about.contains("`multi_epoll_server --workers 2 --distribute MODE`"),
            "{about}"
        );
        assert!(
            about.contains("`GET /work/75000` (≈ 150 ms of CPU at 2.00 µs per unit)"),
            "{about}"
        );
        assert!(
            about.contains("`echo_client --json --proto http -c 400 --close --rate 1000`"),
            "{about}"
        );
    }
}
