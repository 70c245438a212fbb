//! `bench --targets`: the course's speed targets, each checked by alternating rounds.
//!
//! One `--full` run measures every cell once, minutes apart; on a shared 2-core machine two
//! cells of the same table can differ by 20% for no reason of their own (docs/method.md). A
//! target compares two subjects, so it is measured the way such comparisons must be: the
//! subject and its reference back to back, N rounds, the order flipped every round so drift
//! falls on both sides, each round a fresh server. The verdict is on the **median** of the
//! per-round ratios; every round is printed beside it, so a reader sees the spread too.

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
}

/// What is compared between the two sides.
#[derive(Clone, Copy, PartialEq)]
enum Measure {
    /// subject's rate ÷ reference's rate.
    Rate,
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
    /// Extra echo_client flags for both sides (the default is none: the client as the ladder
    /// runs it).
    client: &'static [&'static str],
}

const TARGETS: &[Target] = &[
    Target {
        id: "epoll-vs-nginx1",
        issue: 5,
        claim: "epoll_et_server ≥ 1.1 × nginx (1 worker), HTTP keep-alive, wrk -t2 -c100 -d10s",
        subject: Who::Rung("epoll_et_server"),
        reference: Who::Nginx(1),
        scenario: "http-ka-100",
        tool: Tool::Wrk,
        measure: Measure::Rate,
        at_least: Some(1.1),
        client: &[],
    },
    Target {
        id: "multi-epoll-vs-nginx2",
        issue: 7,
        claim: "multi_epoll_server ≥ 1.1 × nginx (2 workers), HTTP keep-alive, wrk -t2 -c100 -d10s",
        subject: Who::Rung("multi_epoll_server"),
        reference: Who::Nginx(2),
        scenario: "http-ka-100",
        tool: Tool::Wrk,
        measure: Measure::Rate,
        at_least: Some(1.1),
        client: &[],
    },
    Target {
        id: "epoll-vs-tokio",
        issue: 7,
        claim: "epoll_et_server ≥ 1.0 × tokio_server, echo 100 connections × 5,000 messages",
        subject: Who::Rung("epoll_et_server"),
        reference: Who::Rung("tokio_server"),
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::Rate,
        at_least: Some(1.0),
        client: &[],
    },
    Target {
        id: "epoll-vs-tokio-client-1-thread",
        issue: 7,
        claim: "epoll_et_server against tokio_server, echo 100 connections × 5,000 messages, echo_client --threads 1 (how much the client's threads decide)",
        subject: Who::Rung("epoll_et_server"),
        reference: Who::Rung("tokio_server"),
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::Rate,
        at_least: None,
        client: &["--threads", "1"],
    },
    Target {
        id: "multi-epoll-vs-tokio",
        issue: 7,
        claim: "multi_epoll_server ≥ 1.1 × tokio_server, echo 100 connections × 5,000 messages",
        subject: Who::Rung("multi_epoll_server"),
        reference: Who::Rung("tokio_server"),
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::Rate,
        at_least: Some(1.1),
        client: &[],
    },
    Target {
        id: "io-uring-vs-epoll-http",
        issue: 7,
        claim: "io_uring_server against epoll_et_server, HTTP keep-alive, wrk -t2 -c100 -d10s (where it stands)",
        subject: Who::Rung("io_uring_server"),
        reference: Who::Rung("epoll_et_server"),
        scenario: "http-ka-100",
        tool: Tool::Wrk,
        measure: Measure::Rate,
        at_least: None,
        client: &[],
    },
    Target {
        id: "io-uring-vs-epoll-echo",
        issue: 7,
        claim: "io_uring_server against epoll_et_server, echo 100 connections × 5,000 messages (where it stands)",
        subject: Who::Rung("io_uring_server"),
        reference: Who::Rung("epoll_et_server"),
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::Rate,
        at_least: None,
        client: &[],
    },
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
        client: &[],
    },
    Target {
        id: "echo-client-share",
        issue: 3,
        claim: "echo_client takes the smaller CPU share: server CPU ÷ client CPU ≥ 1.0, echo 100 × 5,000 against epoll_et_server",
        subject: Who::Rung("epoll_et_server"),
        reference: Who::Rung("epoll_et_server"),
        scenario: "echo-100",
        tool: Tool::EchoClient,
        measure: Measure::ClientShare,
        at_least: Some(1.0),
        client: &[],
    },
];

fn name(w: Who) -> String {
    match w {
        Who::Rung(k) => k.to_string(),
        Who::Nginx(1) => "nginx (1 worker)".into(),
        Who::Nginx(n) => format!("nginx ({n} workers)"),
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

/// One round: (subject's sample, reference's sample), in the order the round asks.
fn round(
    t: &Target,
    sc: &Scenario,
    bins: &Path,
    echo_client: &Path,
    flip: bool,
) -> (Sample, Sample) {
    let run_one = |who: Who, tool: Tool| {
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
        };
        run::sample(&subject, sc, tool, echo_client, t.client)
    };
    let (sub_tool, ref_tool) = match t.measure {
        Measure::ClientVsWrk => (Tool::EchoClient, Tool::Wrk),
        _ => (t.tool, t.tool),
    };
    if t.measure == Measure::ClientShare {
        return (run_one(t.subject, sub_tool), Sample::default());
    }
    if flip {
        let r = run_one(t.reference, ref_tool);
        (run_one(t.subject, sub_tool), r)
    } else {
        let s = run_one(t.subject, sub_tool);
        (s, run_one(t.reference, ref_tool))
    }
}

fn ratio(t: &Target, s: &Sample, r: &Sample) -> Option<f64> {
    match t.measure {
        Measure::Rate | Measure::ClientVsWrk => Some(s.rate? / r.rate?).filter(|x| x.is_finite()),
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

/// Runs every target (or those in `only`, by id), `rounds` rounds each; returns the summary
/// table (for the READMEs' `targets` blocks), the whole report with every round, and the raw
/// JSON.
pub fn run(
    bins: &Path,
    echo_client: &Path,
    rounds: u32,
    only: &[String],
    stamp: &crate::machine::Stamp,
) -> (String, String, Value) {
    let all = scenarios::scenarios(Mode::Full);
    let nginx = crate::anchors::nginx_binary().is_some();
    let wrk = crate::client::wrk_installed();
    let mut summary = String::from(
        "| issue | target | median ratio | rounds (ratio each) | verdict |\n|--:|---|--:|---|---|\n",
    );
    let mut details = String::new();
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
        if (needs_nginx && !nginx) || (needs_wrk && !wrk) {
            summary += &format!(
                "| {} | {} | – | not run: {} is not installed | – |\n",
                t.issue,
                t.claim,
                if needs_nginx && !nginx {
                    "nginx"
                } else {
                    "wrk"
                }
            );
            continue;
        }
        let unit = if sc.id.starts_with("http") {
            "req/s"
        } else {
            "msg/s"
        };
        let (left, right) = match t.measure {
            Measure::Rate => (name(t.subject), name(t.reference)),
            Measure::ClientVsWrk => ("echo_client".into(), "wrk".into()),
            Measure::ClientShare => ("server CPU".into(), "client CPU".into()),
        };
        details += &format!(
            "\n### {} (issue {})\n\n{}; scenario `{}`.\n\n| round | {left} | {right} | ratio |\n|--:|--:|--:|--:|\n",
            t.id, t.issue, t.claim, sc.id
        );
        let mut ratios = Vec::new();
        let mut rounds_raw = Vec::new();
        for i in 0..rounds {
            eprintln!("bench: target {} round {}/{rounds}", t.id, i + 1);
            let (s, r) = round(t, sc, bins, echo_client, i % 2 == 1);
            let x = ratio(t, &s, &r);
            if let Some(x) = x {
                ratios.push(x);
            }
            let (a, b) = match t.measure {
                Measure::ClientShare => (
                    s.server_cpu_s.map_or("–".into(), |c| format!("{c:.2} s")),
                    s.client_cpu_s
                        .map_or("–".into(), |c| format!("{c:.2} s ({})", cell(&s, unit))),
                ),
                _ => (cell(&s, unit), cell(&r, unit)),
            };
            details += &format!(
                "| {} | {a} | {b} | {} |\n",
                i + 1,
                x.map_or("–".into(), |x| format!("{x:.2}"))
            );
            rounds_raw.push(json!({
                "subject": { "rate": s.rate, "completed": s.completed, "server_cpu_s": s.server_cpu_s, "client_cpu_s": s.client_cpu_s, "trouble": s.trouble },
                "reference": { "rate": r.rate, "completed": r.completed, "server_cpu_s": r.server_cpu_s, "client_cpu_s": r.client_cpu_s, "trouble": r.trouble },
                "ratio": x,
            }));
        }
        let each = ratios
            .iter()
            .map(|x| format!("{x:.2}"))
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
            "| {} | {} | {} | {each} | {verdict} |\n",
            t.issue,
            t.claim,
            m.map_or("–".into(), |m| format!("{m:.2}")),
        );
        raw.push(json!({
            "id": t.id, "issue": t.issue, "claim": t.claim, "scenario": sc.id,
            "at_least": t.at_least, "median": m, "rounds": rounds_raw,
        }));
    }
    let md = format!(
        "{}\n\n{rounds} alternating rounds per target (the order flips every round; each run a fresh server); verdict on the median ratio.\n\n{summary}",
        stamp.line()
    );
    let full = format!("{md}\n## Every round\n{details}");
    let json = json!({ "schema": 1, "stamp": stamp.json(), "rounds": rounds, "targets": raw });
    (md, full, json)
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

    #[test]
    fn ratios_need_both_sides_and_a_finite_result() {
        let t = &TARGETS[0];
        let s = |rate: Option<f64>| Sample {
            rate,
            ..Sample::default()
        };
        assert_eq!(ratio(t, &s(Some(110.0)), &s(Some(100.0))), Some(1.1));
        assert_eq!(ratio(t, &s(Some(110.0)), &s(None)), None);
        assert_eq!(ratio(t, &s(Some(1.0)), &s(Some(0.0))), None);
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
    fn target_ids_are_unique_and_scenarios_exist() {
        let all = scenarios::scenarios(Mode::Full);
        for (i, t) in TARGETS.iter().enumerate() {
            assert!(all.iter().any(|s| s.id == t.scenario), "{}", t.id);
            assert!(TARGETS[..i].iter().all(|u| u.id != t.id), "{}", t.id);
        }
    }
}
