//! `bench --targets`: the course's speed targets, each checked by alternating rounds.
//!
//! One `--full` run measures every cell once, minutes apart; on a shared 2-core machine two
//! cells of the same table can differ by 20% for no reason of their own (docs/method.md). A
//! target compares two subjects, so it is measured the way such comparisons must be: the
//! subject and its reference back to back, N rounds, the order flipped every round so drift
//! falls on both sides, each round a fresh server. The verdict is on the **median** of the
//! per-round ratios; every round is printed beside it, so a reader sees the spread too.
//!
//! Server against server is judged on **server CPU per request** (the reference's ÷ the
//! subject's: above 1, the subject does the same work for less), with each side's rate beside
//! it: on two cores shared with the client the rate is split between client and server, while a
//! server's CPU per request barely depends on how fast the client pushed (docs/method.md).

use std::path::Path;

use serde_json::{Value, json};

use crate::results::thousands;
use crate::run::{self, Sample, Subject, Tool};
use crate::scenarios::{self, Mode, Scenario};

/// What a target compares.
#[derive(Clone, Copy)]
enum Who {
    Rung(&'static str),
    Nginx(u32),
    /// The floor: echo_client's example echo server with [`floor_args`] — one SO_REUSEPORT
    /// epoll loop per core that receives and sends and does nothing else (no timeouts, no
    /// parsing, no summary; with `http`, one fixed keep-alive answer per request). No lesson
    /// can do less per message or request, so its ratio over a reference is the most any of
    /// them could show against that reference on this machine.
    Floor {
        http: bool,
    },
}

/// The floor server: `target/release/examples/` + this (built by `bench --targets`).
pub const FLOOR_EXAMPLE: &str = "echo_server";

/// The floor's flags: one loop per core of this machine's two, as lesson 11 runs by default.
fn floor_args(http: bool) -> &'static [&'static str] {
    if http {
        &["--threads", "2", "--http"]
    } else {
        &["--threads", "2"]
    }
}

/// What is compared between the two sides.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Measure {
    /// Server against server: the reference's server CPU per request ÷ the subject's (above 1,
    /// the subject is the cheaper), rates reported beside it.
    Cpu,
    /// Against the same server, echo_client (subject) versus wrk (reference): rate ratio.
    ClientVsWrk,
    /// Server CPU ÷ client CPU in the subject's runs: > 1 means the client took the smaller
    /// share. The reference is not run.
    ClientShare,
}

struct Target {
    id: &'static str,
    issue: u32,
    claim: &'static str,
    subject: Who,
    reference: Who,
    scenario: &'static str,
    tool: Tool,
    measure: Measure,
    /// The ratio to reach; None: reported, no threshold ("where it stands").
    at_least: Option<f64>,
    /// The echo_client configurations (extra flags) each side is run under, every round; a
    /// side's result in a round is its best configuration's. [`LADDER`]: the client as the
    /// ladder runs it, one configuration.
    clients: &'static [&'static [&'static str]],
}

/// The client as the ladder runs it: no extra flags.
const LADDER: &[&[&str]] = &[&[]];

/// Server against server on echo: both sides run with echo_client's two thread counts and
/// each keeps its best. On two cores shared with the client, the client's thread count decides
/// how the scheduler splits the cores between client and server — one client thread suits a
/// one-thread server, two suit a two-thread one (docs/method.md, "Targets") — so a single
/// fixed count would pick the winner. The same two configurations for every server: none is
/// tuned for.
const BOTH_THREAD_COUNTS: &[&[&str]] = &[&["--threads", "1"], &["--threads", "2"]];

/// Server against server on keep-alive HTTP: wrk, as the targets name it, one configuration.
const fn http_pair(
    id: &'static str,
    issue: u32,
    claim: &'static str,
    subject: Who,
    reference: Who,
    at_least: Option<f64>,
) -> Target {
    Target {
        id,
        issue,
        claim,
        subject,
        reference,
        scenario: "http-ka-100",
        tool: Tool::Wrk,
        measure: Measure::Cpu,
        at_least,
        clients: LADDER,
    }
}

/// Server against server on echo, 100 × 5,000: echo_client under [`BOTH_THREAD_COUNTS`].
const fn echo_pair(
    id: &'static str,
    issue: u32,
    claim: &'static str,
    subject: Who,
    reference: Who,
    at_least: Option<f64>,
) -> Target {
    Target {
        id,
        issue,
        claim,
        subject,
        reference,
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::Cpu,
        at_least,
        clients: BOTH_THREAD_COUNTS,
    }
}

const TARGETS: &[Target] = &[
    http_pair(
        "epoll-vs-nginx1",
        5,
        "epoll_et_server ≥ 1.1 × nginx (1 worker) in server CPU per request (nginx's ÷ ours), HTTP keep-alive, wrk -t2 -c100 -d10s",
        Who::Rung("epoll_et_server"),
        Who::Nginx(1),
        Some(1.1),
    ),
    http_pair(
        "multi-epoll-vs-nginx2",
        7,
        "multi_epoll_server ≥ 1.1 × nginx (2 workers) in server CPU per request (nginx's ÷ ours), HTTP keep-alive, wrk -t2 -c100 -d10s",
        Who::Rung("multi_epoll_server"),
        Who::Nginx(2),
        Some(1.1),
    ),
    http_pair(
        "floor-vs-nginx2",
        7,
        "the HTTP floor (echo_client's examples/echo_server --threads 2 --http: an epoll loop per core that answers each request with fixed bytes) against nginx (2 workers), HTTP keep-alive, wrk -t2 -c100 -d10s (where it stands: the most any server can show over nginx here)",
        Who::Floor { http: true },
        Who::Nginx(2),
        None,
    ),
    http_pair(
        "multi-epoll-vs-floor-http",
        7,
        "multi_epoll_server against the HTTP floor (as above), HTTP keep-alive, wrk -t2 -c100 -d10s (where it stands: how much of the floor's rate the lesson keeps)",
        Who::Rung("multi_epoll_server"),
        Who::Floor { http: true },
        None,
    ),
    echo_pair(
        "epoll-vs-tokio",
        7,
        "epoll_et_server ≥ 1.0 × tokio_server in server CPU per message (tokio's ÷ ours), echo 100 connections × 5,000 messages (each side's best of echo_client --threads 1 and 2)",
        Who::Rung("epoll_et_server"),
        Who::Rung("tokio_server"),
        Some(1.0),
    ),
    echo_pair(
        "multi-epoll-vs-tokio",
        7,
        "multi_epoll_server against tokio_server in server CPU per message (tokio's ÷ ours), echo 100 connections × 5,000 messages (each side's best of echo_client --threads 1 and 2; reported: the floor rows showed ≥ 1.1 out of reach on this machine)",
        Who::Rung("multi_epoll_server"),
        Who::Rung("tokio_server"),
        None,
    ),
    echo_pair(
        "floor-vs-tokio",
        7,
        "the floor (echo_client's examples/echo_server --threads 2: an epoll loop per core that only receives and sends) against tokio_server, echo 100 connections × 5,000 messages (each side's best of echo_client --threads 1 and 2; where it stands: the most any epoll server can show over tokio here)",
        Who::Floor { http: false },
        Who::Rung("tokio_server"),
        None,
    ),
    echo_pair(
        "multi-epoll-vs-floor-echo",
        7,
        "multi_epoll_server against the floor (as above), echo 100 connections × 5,000 messages (each side's best of echo_client --threads 1 and 2; where it stands: how much of the floor's rate the lesson keeps)",
        Who::Rung("multi_epoll_server"),
        Who::Floor { http: false },
        None,
    ),
    http_pair(
        "io-uring-vs-epoll-http",
        7,
        "io_uring_server against epoll_et_server, HTTP keep-alive, wrk -t2 -c100 -d10s (where it stands)",
        Who::Rung("io_uring_server"),
        Who::Rung("epoll_et_server"),
        None,
    ),
    echo_pair(
        "io-uring-vs-epoll-echo",
        7,
        "io_uring_server against epoll_et_server, echo 100 connections × 5,000 messages (each side's best of echo_client --threads 1 and 2; where it stands)",
        Who::Rung("io_uring_server"),
        Who::Rung("epoll_et_server"),
        None,
    ),
    Target {
        id: "echo-client-vs-wrk",
        issue: 3,
        claim: "echo_client ≥ 1.0 × wrk -t2 on nginx (1 worker), HTTP keep-alive, 100 connections, 10 s",
        subject: Who::Nginx(1),
        reference: Who::Nginx(1),
        scenario: "http-ka-100",
        tool: Tool::EchoClient,
        measure: Measure::ClientVsWrk,
        at_least: Some(1.0),
        clients: LADDER,
    },
    Target {
        id: "echo-client-share",
        issue: 3,
        claim: "echo_client's CPU share: server CPU ÷ client CPU, echo 100 × 5,000 against epoll_et_server (reported: on loopback each side pays the same kernel path per message, which the floor rows showed)",
        subject: Who::Rung("epoll_et_server"),
        reference: Who::Rung("epoll_et_server"),
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::ClientShare,
        at_least: None,
        clients: LADDER,
    },
];

fn name(w: Who) -> String {
    match w {
        Who::Rung(k) => k.to_string(),
        Who::Nginx(1) => "nginx (1 worker)".into(),
        Who::Nginx(n) => format!("nginx ({n} workers)"),
        Who::Floor { http } => {
            format!("the floor ({FLOOR_EXAMPLE} {})", floor_args(http).join(" "))
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// One side's runs in a round: one per client configuration, in `Target::clients` order.
type Side = Vec<Sample>;

/// One round: the subject's runs and the reference's, one per client configuration. Within the
/// round the order alternates — subject, reference, reference, subject, … (from the reference
/// when `flip`) — so drift in the machine falls on both sides.
fn round(t: &Target, sc: &Scenario, bins: &Path, echo_client: &Path, flip: bool) -> (Side, Side) {
    let floor_names = [false, true].map(|http| name(Who::Floor { http }));
    let run_one = |who: Who, tool: Tool, flags: &[&str]| {
        let bin;
        let subject = match who {
            Who::Rung(k) => {
                bin = bins.join(k);
                Subject::Rung {
                    krate: k,
                    bin: &bin,
                }
            }
            Who::Nginx(w) => Subject::Nginx { workers: w },
            Who::Floor { http } => {
                bin = bins.join("examples").join(FLOOR_EXAMPLE);
                Subject::Plain {
                    name: &floor_names[usize::from(http)],
                    bin: &bin,
                    args: floor_args(http),
                }
            }
        };
        run::sample(&subject, sc, tool, echo_client, flags)
    };
    let (sub_tool, ref_tool) = match t.measure {
        Measure::ClientVsWrk => (Tool::EchoClient, Tool::Wrk),
        _ => (t.tool, t.tool),
    };
    if t.measure == Measure::ClientShare {
        // One side only: the CPU split of the subject's own run.
        return (vec![run_one(t.subject, sub_tool, t.clients[0])], Vec::new());
    }
    let mut subject = Vec::new();
    let mut reference = Vec::new();
    for (k, flags) in t.clients.iter().enumerate() {
        if (k % 2 == 0) != flip {
            subject.push(run_one(t.subject, sub_tool, flags));
            reference.push(run_one(t.reference, ref_tool, flags));
        } else {
            reference.push(run_one(t.reference, ref_tool, flags));
            subject.push(run_one(t.subject, sub_tool, flags));
        }
    }
    (subject, reference)
}

/// Server CPU per request (µs) of a run, when both figures are known.
fn cpu_us(s: &Sample) -> Option<f64> {
    let n = s.completed.filter(|&n| n > 0)? as f64;
    Some(s.server_cpu_s? * 1e6 / n).filter(|x| x.is_finite())
}

/// The index of a side's best run: the lowest server CPU per request (for [`Measure::Cpu`]) or
/// the highest rate (otherwise) among its clean runs (no errors, no trouble), else among the
/// runs with a figure, else the first.
fn best(side: &[Sample], measure: Measure) -> usize {
    // Larger is better: the rate, or the CPU per request negated.
    let score = |s: &Sample| match measure {
        Measure::Cpu => cpu_us(s).map(|c| -c),
        _ => s.rate,
    };
    let top = |clean: bool| {
        (0..side.len())
            .filter(|&k| score(&side[k]).is_some() && (!clean || side[k].trouble.is_empty()))
            .max_by(|&a, &b| {
                score(&side[a])
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&score(&side[b]).unwrap_or(f64::NEG_INFINITY))
            })
    };
    top(true).or_else(|| top(false)).unwrap_or(0)
}

/// A side's best run with its index (None for a side that was not run), or a blank sample.
fn top(side: &[Sample], measure: Measure) -> Option<(usize, &Sample)> {
    let b = best(side, measure);
    side.get(b).map(|s| (b, s))
}

static NONE: Sample = Sample {
    rate: None,
    server_cpu_s: None,
    client_cpu_s: None,
    completed: None,
    trouble: String::new(),
};

/// A side's best run, or an empty sample (no rate, no CPU) for a side that was not run.
fn top_or_none(side: &[Sample], measure: Measure) -> &Sample {
    top(side, measure).map_or(&NONE, |(_, s)| s)
}

/// A side's cell: its best run, naming the configuration and the others' rates when the
/// target sweeps the client's configurations.
fn side_cell(t: &Target, side: &[Sample], unit: &str) -> String {
    let Some((b, top)) = top(side, t.measure) else {
        return "–".into();
    };
    let shown = |s: &Sample| match t.measure {
        Measure::Cpu => cpu_cell(s, unit),
        _ => cell(s, unit),
    };
    if t.clients.len() < 2 {
        return shown(top);
    }
    let others = (0..side.len())
        .filter(|&k| k != b)
        .map(|k| format!("{} with {}", shown(&side[k]), t.clients[k].join(" ")))
        .collect::<Vec<_>>()
        .join("; ");
    format!("{} with {} ({others})", shown(top), t.clients[b].join(" "))
}

/// A run judged on server CPU: its CPU per request, with its rate beside it.
fn cpu_cell(s: &Sample, unit: &str) -> String {
    match cpu_us(s) {
        Some(c) => format!("{c:.1} µs/{} at {}", &unit[..3], cell(s, unit)),
        None => cell(s, unit),
    }
}

/// `cell` plus the client's CPU per request of the side's best run, where it is known (wrk's
/// from wait4, echo_client's from its report).
fn with_client_cpu(cell: String, side: &[Sample]) -> String {
    let Some((_, s)) = top(side, Measure::ClientVsWrk) else {
        return cell;
    };
    match (s.client_cpu_s, s.completed) {
        (Some(cpu), Some(n)) if n > 0 => {
            format!("{cell}; client CPU {:.1} µs/request", cpu * 1e6 / n as f64)
        }
        _ => cell,
    }
}

/// A side's runs as JSON: the best run's figures at the top (as before the sweep), every run
/// under `runs`.
fn side_json(t: &Target, side: &[Sample]) -> Value {
    let one = |s: &Sample| {
        json!({ "rate": s.rate, "completed": s.completed, "server_cpu_s": s.server_cpu_s,
                "client_cpu_s": s.client_cpu_s, "trouble": s.trouble })
    };
    let Some((b, top)) = top(side, t.measure) else {
        return Value::Null;
    };
    let mut v = one(top);
    v["client_flags"] = json!(t.clients[b].join(" "));
    v["runs"] = side
        .iter()
        .zip(t.clients)
        .map(|(s, flags)| {
            let mut r = one(s);
            r["client_flags"] = json!(flags.join(" "));
            r
        })
        .collect();
    v
}

fn ratio(t: &Target, s: &Sample, r: &Sample) -> Option<f64> {
    match t.measure {
        Measure::Cpu => Some(cpu_us(r)? / cpu_us(s)?).filter(|x| x.is_finite()),
        Measure::ClientVsWrk => Some(s.rate? / r.rate?).filter(|x| x.is_finite()),
        Measure::ClientShare => Some(s.server_cpu_s? / s.client_cpu_s?).filter(|x| x.is_finite()),
    }
}

fn cell(s: &Sample, unit: &str) -> String {
    let mut c = s
        .rate
        .map_or("–".to_string(), |r| format!("{} {unit}", thousands(r)));
    if !s.trouble.is_empty() {
        c += &format!(" ({})", s.trouble);
    }
    c
}

/// Runs every target (or those in `only`, by id), `rounds` rounds each, and returns what it
/// measured as JSON (docs/results/targets.json); [`render`] turns it into the tables.
pub fn run(
    bins: &Path,
    echo_client: &Path,
    rounds: u32,
    only: &[String],
    stamp: &crate::machine::Stamp,
) -> Value {
    let all = scenarios::scenarios(Mode::Full);
    let nginx = crate::anchors::nginx_binary().is_some();
    let wrk = crate::client::wrk_installed();
    let mut raw = Vec::new();
    for t in TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t.id))
    {
        let Some(sc) = all.iter().find(|s| s.id == t.scenario) else {
            continue;
        };
        let needs_nginx =
            matches!(t.subject, Who::Nginx(_)) || matches!(t.reference, Who::Nginx(_));
        let needs_wrk = t.tool == Tool::Wrk || t.measure == Measure::ClientVsWrk;
        let missing = match (needs_nginx && !nginx, needs_wrk && !wrk) {
            (true, _) => Some("nginx"),
            (_, true) => Some("wrk"),
            _ => None,
        };
        let mut rounds_raw = Vec::new();
        // A target whose tool is missing is recorded as not run, with no rounds.
        for i in 0..if missing.is_some() { 0 } else { rounds } {
            eprintln!("bench: target {} round {}/{rounds}", t.id, i + 1);
            let (sub, refs) = round(t, sc, bins, echo_client, i % 2 == 1);
            let x = ratio(
                t,
                top_or_none(&sub, t.measure),
                top_or_none(&refs, t.measure),
            );
            rounds_raw.push(json!({
                "subject": side_json(t, &sub),
                "reference": side_json(t, &refs),
                "ratio": x,
            }));
        }
        let ratios: Vec<f64> = rounds_raw
            .iter()
            .filter_map(|r| r["ratio"].as_f64())
            .collect();
        raw.push(json!({
            "id": t.id, "issue": t.issue, "claim": t.claim, "scenario": sc.id,
            "at_least": t.at_least, "median": median(ratios), "not_run": missing,
            "rounds": rounds_raw,
        }));
    }
    json!({ "schema": 1, "stamp": stamp.json(), "rounds": rounds, "targets": raw })
}

/// A ratio for the tables: two decimals, or three where two would round it onto the threshold
/// it misses (1.096 against 1.10 must not read "1.10 … not met").
fn fmt_ratio(x: f64, at_least: Option<f64>) -> String {
    let two = format!("{x:.2}");
    match at_least {
        Some(a) if x < a && two.parse::<f64>().is_ok_and(|r| r >= a) => format!("{x:.3}"),
        _ => two,
    }
}

fn sample_of(v: &Value) -> Sample {
    Sample {
        rate: v["rate"].as_f64(),
        server_cpu_s: v["server_cpu_s"].as_f64(),
        client_cpu_s: v["client_cpu_s"].as_f64(),
        completed: v["completed"].as_u64(),
        trouble: v["trouble"].as_str().unwrap_or_default().to_string(),
    }
}

/// A side's runs back from [`side_json`] (or from a file written before the sweep: one run).
fn side_of(v: &Value) -> Side {
    match v["runs"].as_array() {
        Some(runs) => runs.iter().map(sample_of).collect(),
        None if v.is_null() => Vec::new(),
        None => vec![sample_of(v)],
    }
}

/// The tables from [`run`]'s JSON: the summary (for the READMEs' `targets` blocks) and the
/// whole report with every round. `bench --targets --rewrite-from docs/results/targets.json`
/// rebuilds them without measuring again.
pub fn render(v: &Value) -> (String, String) {
    let stamp = crate::machine::Stamp::from_json(&v["stamp"]);
    let rounds = v["rounds"].as_u64().unwrap_or(0);
    let all = scenarios::scenarios(Mode::Full);
    let mut summary = String::from(
        "| issue | target | median ratio | rounds (ratio each) | verdict |\n|--:|---|--:|---|---|\n",
    );
    let mut details = String::new();
    for e in v["targets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let id = e["id"].as_str().unwrap_or_default();
        // Targets since removed from the list are left out: their meaning is no longer here.
        let Some(t) = TARGETS.iter().find(|t| t.id == id) else {
            continue;
        };
        let Some(sc) = all.iter().find(|s| s.id == t.scenario) else {
            continue;
        };
        let claim = e["claim"].as_str().unwrap_or(t.claim);
        if let Some(missing) = e["not_run"].as_str() {
            summary += &format!(
                "| {} | {claim} | – | not run: {missing} is not installed | – |\n",
                t.issue
            );
            continue;
        }
        let unit = if sc.id.starts_with("http") {
            "req/s"
        } else {
            "msg/s"
        };
        let (left, right) = match t.measure {
            Measure::Cpu => (name(t.subject), name(t.reference)),
            Measure::ClientVsWrk => ("echo_client".into(), "wrk".into()),
            Measure::ClientShare => ("server CPU".into(), "client CPU".into()),
        };
        let sweep = if t.clients.len() > 1 {
            format!(
                " Each side ran under every client configuration ({}) in every round; the ratio is best ÷ best.",
                t.clients
                    .iter()
                    .map(|c| format!("`{}`", c.join(" ")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        details += &format!(
            "\n### {} (issue {})\n\n{claim}; scenario `{}`.{sweep}\n\n| round | {left} | {right} | ratio |\n|--:|--:|--:|--:|\n",
            t.id, t.issue, sc.id
        );
        let mut ratios = Vec::new();
        for (i, r) in e["rounds"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let (sub, refs) = (side_of(&r["subject"]), side_of(&r["reference"]));
            let x = r["ratio"].as_f64();
            ratios.extend(x);
            let s = top_or_none(&sub, t.measure);
            let (a, b) = match t.measure {
                Measure::ClientShare => (
                    s.server_cpu_s.map_or("–".into(), |c| format!("{c:.2} s")),
                    s.client_cpu_s
                        .map_or("–".into(), |c| format!("{c:.2} s ({})", cell(s, unit))),
                ),
                // Client against client: each one's own CPU per request beside its rate.
                Measure::ClientVsWrk => (
                    with_client_cpu(side_cell(t, &sub, unit), &sub),
                    with_client_cpu(side_cell(t, &refs, unit), &refs),
                ),
                Measure::Cpu => (side_cell(t, &sub, unit), side_cell(t, &refs, unit)),
            };
            details += &format!(
                "| {} | {a} | {b} | {} |\n",
                i + 1,
                x.map_or("–".into(), |x| fmt_ratio(x, t.at_least))
            );
        }
        let each = ratios
            .iter()
            .map(|&x| fmt_ratio(x, t.at_least))
            .collect::<Vec<_>>()
            .join(", ");
        let m = median(ratios.clone());
        let met_rounds = t
            .at_least
            .map(|a| ratios.iter().filter(|&&x| x >= a).count());
        let verdict = match (t.at_least, m) {
            (_, None) => "not measured".to_string(),
            (None, Some(_)) => "reported (no threshold)".to_string(),
            (Some(a), Some(m)) => format!(
                "{} (≥ {a:.2}; {} of {} rounds)",
                if m >= a { "**met**" } else { "**not met**" },
                met_rounds.unwrap_or(0),
                ratios.len()
            ),
        };
        summary += &format!(
            "| {} | {claim} | {} | {each} | {verdict} |\n",
            t.issue,
            m.map_or("–".into(), |m| fmt_ratio(m, t.at_least)),
        );
    }
    let md = format!(
        "{}\n\n{rounds} alternating rounds per target (the order flips every round; each run a fresh server); verdict on the median ratio.\n\n{summary}",
        stamp.line()
    );
    let full = format!("{md}\n## Every round\n{details}");
    (md, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![1.2, 0.9, 1.0]), Some(1.0));
        assert_eq!(median(vec![1.0, 2.0, 4.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    /// A run with `cpu_us` of server CPU per request (over a million requests) at `rate`.
    fn run_at(cpu_us: f64, rate: f64) -> Sample {
        Sample {
            rate: Some(rate),
            completed: Some(1_000_000),
            server_cpu_s: Some(cpu_us),
            ..Sample::default()
        }
    }

    #[test]
    fn ratios_need_both_sides_and_a_finite_result() {
        // Server against server: the reference's CPU per request over the subject's.
        let t = &TARGETS[0];
        assert_eq!(t.measure, Measure::Cpu);
        let x = ratio(t, &run_at(10.0, 1.0), &run_at(11.0, 1.0)).expect("both sides");
        assert!((x - 1.1).abs() < 1e-9, "{x}");
        assert_eq!(ratio(t, &run_at(10.0, 1.0), &Sample::default()), None);
        assert_eq!(ratio(t, &run_at(0.0, 1.0), &run_at(11.0, 1.0)), None);
        // Client against client: the rates.
        let c = TARGETS
            .iter()
            .find(|t| t.measure == Measure::ClientVsWrk)
            .expect("the client target is in the list");
        let s = |rate: Option<f64>| Sample {
            rate,
            ..Sample::default()
        };
        assert_eq!(ratio(c, &s(Some(110.0)), &s(Some(100.0))), Some(1.1));
        assert_eq!(ratio(c, &s(Some(110.0)), &s(None)), None);
        assert_eq!(ratio(c, &s(Some(1.0)), &s(Some(0.0))), None);
        // The CPU share reads only the subject's run: server CPU over client CPU.
        let share = TARGETS
            .iter()
            .find(|t| t.measure == Measure::ClientShare)
            .expect("the client-share target is in the list");
        let run = Sample {
            server_cpu_s: Some(4.5),
            client_cpu_s: Some(5.0),
            ..Sample::default()
        };
        assert_eq!(ratio(share, &run, &Sample::default()), Some(0.9));
    }

    #[test]
    fn a_side_keeps_its_best_run_and_names_the_others() {
        let run = |rate: Option<f64>, trouble: &str| Sample {
            rate,
            trouble: trouble.into(),
            ..Sample::default()
        };
        let by_rate = Measure::ClientVsWrk;
        let side = vec![run(Some(90_000.0), ""), run(Some(101_000.0), "")];
        assert_eq!(best(&side, by_rate), 1);
        // A run without a rate never wins; with none at all, the first stands.
        assert_eq!(
            best(&[run(None, "timed out"), run(Some(5.0), "")], by_rate),
            1
        );
        assert_eq!(best(&[run(None, "a"), run(None, "b")], by_rate), 0);
        // A faster run with errors loses to a clean one; alone, it still counts.
        assert_eq!(
            best(&[run(Some(9.0), ""), run(Some(10.0), "3 resets")], by_rate),
            0
        );
        assert_eq!(
            best(
                &[run(Some(9.0), "1 reset"), run(Some(10.0), "3 resets")],
                by_rate
            ),
            1
        );
        // Judged on CPU, the cheaper run is the best, whatever its rate.
        let cpu_side = vec![run_at(12.0, 101_000.0), run_at(9.5, 90_000.0)];
        assert_eq!(best(&cpu_side, Measure::Cpu), 1);
        let sweep = TARGETS
            .iter()
            .find(|t| t.id == "epoll-vs-tokio")
            .expect("the epoll-vs-tokio target is in the list");
        assert_eq!(
            side_cell(sweep, &cpu_side, "msg/s"),
            "9.5 µs/msg at 90,000 msg/s with --threads 2 (12.0 µs/msg at 101,000 msg/s with --threads 1)"
        );
        assert_eq!(side_json(sweep, &cpu_side)["client_flags"], "--threads 2");
        assert_eq!(side_json(sweep, &cpu_side)["runs"][0]["rate"], 101_000.0);
        // Without a sweep, the cell is the run's alone.
        assert_eq!(
            side_cell(&TARGETS[0], &cpu_side[..1], "req/s"),
            "12.0 µs/req at 101,000 req/s"
        );
    }

    /// Every server-against-server echo target runs both sides under the same client
    /// configurations: the sweep is the method, not a favour to one server.
    #[test]
    fn echo_comparisons_between_servers_all_sweep_the_same_clients() {
        for t in TARGETS {
            let server = |w| matches!(w, Who::Rung(_) | Who::Floor { .. });
            let servers = server(t.subject) && server(t.reference);
            if t.measure == Measure::Cpu && servers && t.tool == Tool::EchoClient {
                assert_eq!(t.clients, BOTH_THREAD_COUNTS, "{}", t.id);
            } else {
                assert_eq!(t.clients.len(), 1, "{}", t.id);
            }
        }
    }

    /// The floor is an instrument, not a claim: what it is compared with is reported, never
    /// judged against a threshold, and it is always the two-loop server lesson 11 runs here.
    #[test]
    fn the_floor_is_reported_never_judged() {
        let floor = |w| matches!(w, Who::Floor { .. });
        let floors: Vec<&Target> = TARGETS
            .iter()
            .filter(|t| floor(t.subject) || floor(t.reference))
            .collect();
        assert_eq!(floors.len(), 4);
        for t in floors {
            assert_eq!(t.at_least, None, "{}", t.id);
            // The floor speaks the scenario's protocol: `--http` exactly for the HTTP ones.
            let http = t.scenario.starts_with("http");
            let side = if floor(t.subject) {
                t.subject
            } else {
                t.reference
            };
            assert!(
                matches!(side, Who::Floor { http: h } if h == http),
                "{}",
                t.id
            );
        }
        assert_eq!(
            name(Who::Floor { http: true }),
            "the floor (echo_server --threads 2 --http)",
            "the tables name it"
        );
    }

    #[test]
    fn client_cells_carry_the_clients_cpu_per_request_when_known() {
        let run = Sample {
            rate: Some(50_000.0),
            completed: Some(500_000),
            client_cpu_s: Some(6.5),
            ..Sample::default()
        };
        assert_eq!(
            with_client_cpu("50,000 req/s".into(), std::slice::from_ref(&run)),
            "50,000 req/s; client CPU 13.0 µs/request"
        );
        let unknown = Sample {
            client_cpu_s: None,
            ..run
        };
        assert_eq!(with_client_cpu("x".into(), &[unknown]), "x");
    }

    #[test]
    fn ratios_show_a_third_decimal_only_where_two_would_hide_a_miss() {
        assert_eq!(fmt_ratio(1.0956, Some(1.1)), "1.096");
        assert_eq!(fmt_ratio(1.0956, None), "1.10");
        assert_eq!(fmt_ratio(1.1, Some(1.1)), "1.10");
        assert_eq!(fmt_ratio(1.02, Some(1.1)), "1.02");
        assert_eq!(fmt_ratio(0.997, Some(1.0)), "0.997");
    }

    /// What `run` writes, `render` reads back: the report can be rebuilt from targets.json.
    #[test]
    fn the_tables_are_rebuilt_from_the_json_alone() {
        let t = TARGETS
            .iter()
            .find(|t| t.id == "epoll-vs-tokio")
            .expect("the epoll-vs-tokio target is in the list");
        // (subject's best CPU per message, reference's): ratios 1.0956, 1.2, 0.9.
        let rounds: Vec<Value> = [(10.0, 10.956), (10.0, 12.0), (10.0, 9.0)]
            .iter()
            .map(|&(s, r)| {
                let sub = vec![run_at(2.0 * s, 50_000.0), run_at(s, 100_000.0)];
                let refs = vec![run_at(r, 90_000.0), run_at(2.0 * r, 45_000.0)];
                let (bs, br) = (best(&sub, t.measure), best(&refs, t.measure));
                json!({ "subject": side_json(t, &sub), "reference": side_json(t, &refs),
                        "ratio": ratio(t, &sub[bs], &refs[br]) })
            })
            .collect();
        let stamp = crate::machine::Stamp::from_json(&json!({ "date": "2026-11-22 22:07 UTC" }));
        let v = json!({ "schema": 1, "stamp": stamp.json(), "rounds": 3, "targets": [
            { "id": t.id, "claim": t.claim, "rounds": rounds },
            { "id": "epoll-vs-nginx1", "claim": "against nginx", "not_run": "nginx", "rounds": [] },
            { "id": "a-target-since-removed", "rounds": [] },
        ]});
        let (summary, full) = render(&v);
        assert!(summary.contains("2026-11-22 22:07 UTC"), "{summary}");
        // Median 1.0956 of (1.0956, 1.2, 0.9): at least 1.0, and shown so.
        assert!(
            summary.contains("| 1.10 | 1.10, 1.20, 0.90 | **met** (≥ 1.00; 2 of 3 rounds) |"),
            "{summary}"
        );
        assert!(summary.contains("| against nginx | – | not run: nginx is not installed |"));
        assert!(!summary.contains("since-removed"));
        assert!(
            full.contains("| 1 | 10.0 µs/msg at 100,000 msg/s with --threads 2 (20.0 µs/msg at 50,000 msg/s with --threads 1) | 11.0 µs/msg at 90,000 msg/s with --threads 1 (21.9 µs/msg at 45,000 msg/s with --threads 2) | 1.10 |"),
            "{full}"
        );
    }

    #[test]
    fn target_ids_are_unique_and_scenarios_exist() {
        let all = scenarios::scenarios(Mode::Full);
        for (i, t) in TARGETS.iter().enumerate() {
            assert!(all.iter().any(|s| s.id == t.scenario), "{}", t.id);
            assert!(TARGETS[..i].iter().all(|u| u.id != t.id), "{}", t.id);
        }
    }
}
