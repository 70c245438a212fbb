//! The ladder run (`bench`, `--full`, `--smoke`): the sweeps, the single-point scenarios no
//! sweep covers, and the fixed-workload cost — every cell in rounds, the median with its
//! range — then every table, chart and README block made from what was measured.

use std::path::{Path, PathBuf};
use std::time::Instant;

use conformance::rungs::{RUNGS, Rung};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::machine::Stamp;
use crate::results::{self, Cost, Row};
use crate::run::{self, Subject};
use crate::scenarios::{self, Mode};
use crate::sweeps::{self, Cell, Sweep};
use crate::{anchors, charts, readme, root, sweep_report, target_dir};

/// Everything one ladder run measured (or a stored run merged with a partial one).
pub struct Results {
    pub mode: Mode,
    pub stamp: Stamp,
    pub cells: Vec<Cell>,
    pub rows: Vec<Row>,
    pub costs: Vec<Cost>,
}

/// What the run measures, from `--scenario` (empty: everything of the mode).
pub struct Plan {
    pub mode: Mode,
    pub sweeps: Vec<Sweep>,
    pub scenarios: Vec<scenarios::Scenario>,
    pub cost: bool,
    pub anchors: bool,
    pub write: bool,
}

impl Plan {
    pub fn new(mode: Mode, wanted: &[String], anchors: bool, write: bool) -> Result<Plan, String> {
        let want = |id: &str| wanted.is_empty() || wanted.iter().any(|w| w == id);
        // A scenario the mode runs on request only must be named.
        let want_scenario =
            |s: &scenarios::Scenario| want(s.id) && !(s.on_request && wanted.is_empty());
        for w in wanted {
            let known = sweeps::IDS.contains(&w.as_str())
                || w == "cost"
                || scenarios::ladder(mode).iter().any(|s| s.id == w);
            if !known {
                return Err(format!(
                    "--scenario {w}: not a sweep ({}), a scenario of this mode ({}) or cost",
                    sweeps::IDS.join(", "),
                    scenarios::ladder(mode)
                        .iter()
                        .map(|s| s.id)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(Plan {
            mode,
            sweeps: sweeps::sweeps(mode)
                .into_iter()
                .filter(|s| want(s.id))
                .collect(),
            scenarios: scenarios::ladder(mode)
                .into_iter()
                .filter(want_scenario)
                .collect(),
            cost: want("cost"),
            anchors: anchors && mode != Mode::Smoke && anchors::nginx_binary().is_some(),
            write,
        })
    }
}

/// Runs the plan for `rungs` and writes what it measured.
pub fn run(plan: &Plan, rungs: &[&Rung], bins: &Path, command: String) -> Result<(), String> {
    let t0 = Instant::now();
    let echo_client = bins.join("echo_client");
    if !echo_client.exists() {
        return Err(format!(
            "{} is missing: build it (drop --no-build)",
            echo_client.display()
        ));
    }
    let mut stamp = Stamp::now(command);
    stamp.work_unit_us = Some(crate::machine::work_unit_us());
    let rounds = sweeps::rounds(plan.mode);
    let anchor_workers: &[u32] = if plan.anchors { &[1, 2] } else { &[] };
    let bin_of = |k: &str| bins.join(k);
    let bins_owned: Vec<(String, PathBuf)> = rungs
        .iter()
        .map(|r| (r.krate.to_string(), bin_of(r.krate)))
        .collect();
    let mut who: Vec<sweeps::Who> = bins_owned
        .iter()
        .map(|(k, b)| sweeps::Who {
            subject: Subject::Rung { krate: k, bin: b },
            name: k.clone(),
            anchor: false,
        })
        .collect();
    // Variant rows a scenario names ("crate --flag", see `scenarios::variant`): the rung's
    // binary with more flags, run in every scenario that names it or names nobody (so its
    // rung's README compares the two everywhere). The sweeps and the cost table: rungs only.
    let variants: Vec<sweeps::Who> = plan
        .scenarios
        .iter()
        .flat_map(|s| s.only.unwrap_or(&[]).iter())
        .filter(|name| !scenarios::variant(name).1.is_empty())
        .filter_map(|name| {
            let (k, b) = bins_owned
                .iter()
                .find(|(k, _)| k == scenarios::variant(name).0)?;
            Some(sweeps::Who {
                subject: Subject::Rung { krate: k, bin: b },
                name: name.to_string(),
                anchor: false,
            })
        })
        .fold(Vec::new(), |mut v: Vec<sweeps::Who>, w| {
            if !v.iter().any(|o| o.name == w.name) {
                v.push(w);
            }
            v
        });
    for &w in anchor_workers {
        let subject = Subject::Nginx { workers: w };
        who.push(sweeps::Who {
            name: subject.name(),
            subject,
            anchor: true,
        });
    }

    // The progress bar counts runs; the sweeps' shared setups make the total an upper bound.
    let sweep_runs: usize = plan
        .sweeps
        .iter()
        .map(|s| {
            let subjects = who
                .iter()
                .filter(|w| !w.anchor || s.anchors)
                .filter(|w| s.only.is_none_or(|o| o.contains(&w.name.as_str())))
                .count();
            subjects * s.points.len()
        })
        .sum();
    let scenario_runs: usize = plan
        .scenarios
        .iter()
        .map(|s| {
            let modes = s.stall.as_ref().map_or(1, |st| st.distribute.len());
            modes
                * who
                    .iter()
                    .chain(&variants)
                    .filter(|w| (!w.anchor || s.anchors) && s.runs(&w.name))
                    .count()
        })
        .sum();
    let steps =
        rounds as usize * (sweep_runs + scenario_runs + if plan.cost { rungs.len() } else { 0 });
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()), // the template is a constant
    );
    let tick = |msg: &str| {
        bar.set_message(msg.to_string());
        bar.inc(1);
    };

    // A long run that writes keeps what it has measured: after each sweep, the cells so far go
    // to target/bench-<mode>-partial-<pid>.json (results.json's form), which `--rewrite-from`
    // can turn into tables should the run be cut short. Each run its own file.
    let partial = target_dir().join(format!(
        "bench-{}-partial-{}.json",
        format!("{:?}", plan.mode).to_lowercase(),
        std::process::id()
    ));
    let checkpoint = |cells: &[Cell]| {
        if !plan.write {
            return;
        }
        let v = json!({
            "schema": 3,
            "stamp": stamp.json(),
            "mode": format!("{:?}", plan.mode).to_lowercase(),
            "sweeps": cells.iter().map(|c| {
                let mut c = c.clone();
                c.measured = stamp.line();
                c.json()
            }).collect::<Vec<_>>(),
        });
        if let Ok(text) = serde_json::to_string_pretty(&v) {
            let _ = std::fs::write(&partial, text);
        }
    };
    let mut cells = sweeps::run(
        &plan.sweeps,
        &who,
        plan.mode,
        &echo_client,
        &tick,
        &checkpoint,
    );

    let mut rows: Vec<Row> = Vec::new();
    // The mixed workload's expensive request: about a millisecond at the unit just measured.
    let scenarios = scenarios::with_work_unit(&plan.scenarios, stamp.work_unit_us);
    for sc in &scenarios {
        if let Some(stall) = &sc.stall {
            // A row per `--distribute` mode, the modes in turn within each round, so a change
            // on the shared machine touches every mode alike.
            for w in who.iter().filter(|w| !w.anchor && sc.runs(&w.name)) {
                let mut each: Vec<Vec<Row>> = vec![Vec::new(); stall.distribute.len()];
                for _ in 0..rounds {
                    for (i, d) in stall.distribute.iter().enumerate() {
                        tick(&format!("{} · {} · {d}", w.name, sc.id));
                        each[i].push(run::stalled(&w.subject, sc, d, &echo_client));
                    }
                }
                rows.extend(each.into_iter().filter_map(Row::median_of));
            }
            continue;
        }
        // A rung the scenario names but the build lacks is simply not among `who`.
        for w in who
            .iter()
            .chain(&variants)
            .filter(|w| (!w.anchor || sc.anchors) && sc.runs(&w.name))
        {
            let sc = scenarios::Scenario {
                server_args: sc.server_args_for(&w.name),
                ..sc.clone()
            };
            let mut each = Vec::new();
            for _ in 0..rounds {
                tick(&format!("{} · {}", w.name, sc.id));
                let row = run::load(&w.subject, &sc, &echo_client, true);
                each.push(Row {
                    rung: w.name.clone(), // a variant's row is named with its flags
                    ..row
                });
            }
            rows.extend(Row::median_of(each));
        }
    }
    let mut costs: Vec<Cost> = Vec::new();
    if plan.cost {
        for w in who.iter().filter(|w| !w.anchor) {
            let mut each = Vec::new();
            for i in 0..rounds {
                tick(&format!("{} · cost", w.name));
                // syscalls under strace once: strace slows the server, its run is separate
                each.push(run::cost(&w.subject, plan.mode, &echo_client, i == 0));
            }
            let syscalls = each.iter().find_map(|c| c.syscalls_per_req);
            costs.extend(Cost::median_of(each).map(|c| Cost {
                syscalls_per_req: syscalls,
                ..c
            }));
        }
    }
    bar.finish_and_clear();

    for c in &mut cells {
        c.measured = stamp.line();
    }
    for r in &mut rows {
        r.measured = stamp.line();
        if let Some(st) = r.stall.as_mut() {
            st.unit_us = stamp.work_unit_us; // the unit its staller's /work/N was sized with
        }
    }
    for c in &mut costs {
        c.measured = stamp.line();
    }
    let out_dir = if plan.write {
        root().join("docs/results")
    } else {
        target_dir().join(format!("bench-{:?}", plan.mode).to_lowercase())
    };
    let mut res = Results {
        mode: plan.mode,
        stamp,
        cells,
        rows,
        costs,
    };
    if plan.write {
        res = merge(&out_dir.join("results.json"), res);
    }
    report(&res, &out_dir, plan.write)?;
    if plan.mode == Mode::Smoke {
        smoke_check(&res)?;
    }
    eprintln!(
        "bench: measured in {:.0} s; tables and charts in {} (index: {})",
        t0.elapsed().as_secs_f64(),
        out_dir.display(),
        out_dir.join("README.md").display()
    );
    Ok(())
}

/// The smoke run proves the pipeline: every server started, none crashed, every sweep has a
/// cell for every rung. (Starved and refused cells are the models' limits, not failures.)
fn smoke_check(res: &Results) -> Result<(), String> {
    let mut bad: Vec<String> = Vec::new();
    for c in &res.cells {
        for s in &c.samples {
            if s.trouble.starts_with("crashed")
                || s.trouble.starts_with("cannot start")
                || s.trouble.contains("printed no start-up line")
            {
                bad.push(format!("{} · {} {}: {}", c.rung, c.sweep, c.x, s.trouble));
            }
        }
    }
    for r in &res.rows {
        if matches!(
            r.verdict,
            Some(results::Verdict::Crashed(_) | results::Verdict::Failed(_))
        ) {
            bad.push(format!("{} · {}: {}", r.rung, r.scenario, r.rate_cell()));
        }
    }
    let rungs: Vec<&str> = res.costs.iter().map(|c| c.rung.as_str()).collect();
    for sweep in sweeps::sweeps(res.mode) {
        for rung in rungs
            .iter()
            .filter(|r| sweep.only.is_none_or(|o| o.contains(r)))
        {
            if !res
                .cells
                .iter()
                .any(|c| c.sweep == sweep.id && c.rung == *rung)
            {
                bad.push(format!("{rung} · {}: no cell", sweep.id));
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("smoke run failed:\n  {}", bad.join("\n  ")))
    }
}

fn rows_of<'a>(rows: &'a [Row], scenario: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.scenario == scenario).collect()
}

/// The largest point of a sweep among the cells.
fn largest(cells: &[Cell], sweep: &str) -> Option<f64> {
    cells
        .iter()
        .filter(|c| c.sweep == sweep)
        .map(|c| c.x)
        .reduce(f64::max)
}

/// Memory and threads per idle connection, for the cost table: the held sweep's largest point.
fn with_memory(costs: &[Cost], cells: &[Cell]) -> Vec<Cost> {
    let n = largest(cells, "held");
    costs
        .iter()
        .cloned()
        .map(|mut c| {
            if let Some(cell) = cells
                .iter()
                .find(|x| x.sweep == "held" && Some(x.x) == n && x.rung == c.rung)
            {
                c.bytes_per_idle_conn = cell.spread(sweeps::Metric::BytesPerConn).map(|s| s.median);
                c.threads_per_idle_conn = cell
                    .spread(sweeps::Metric::ThreadsPerConn)
                    .map(|s| s.median);
            }
            c
        })
        .collect()
}

fn rounds_note(mode: Mode) -> String {
    match sweeps::rounds(mode) {
        1 => "One round per cell (the quick and smoke runs): run `--full` for the median of three \
              with its range."
            .into(),
        n => format!(
            "Every cell is the median of {n} rounds with the smallest and largest beside it; two \
             rungs differ only where those ranges do not overlap."
        ),
    }
}

/// Every output of a run: the pages, charts and raw JSON under `out`, and (if `readmes`) the
/// README blocks and docs tables.
pub fn report(res: &Results, out: &Path, readmes: bool) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stamp_line = res.stamp.line();
    let costs = with_memory(&res.costs, &res.cells);
    let sweeps_all = sweeps::sweeps(res.mode);
    let note = rounds_note(res.mode);
    let all_stamps = results::stamps(
        res.cells
            .iter()
            .map(|c| c.measured.as_str())
            .chain(res.rows.iter().map(|r| r.measured.as_str()))
            .chain(costs.iter().map(|c| c.measured.as_str())),
        &stamp_line,
    );
    let mut index = format!("# Benchmark results\n\n{all_stamps}\n\n{note}\n\n## The sweeps\n\n");
    for sweep in &sweeps_all {
        let these: Vec<&Cell> = res.cells.iter().filter(|c| c.sweep == sweep.id).collect();
        if these.is_empty() {
            continue;
        }
        let mut stamps = results::stamps(these.iter().map(|c| c.measured.as_str()), &stamp_line);
        if let (sweeps::Axis::Work, Some(us)) = (sweep.axis, res.stamp.work_unit_us) {
            stamps += &format!(
                " One `--work` unit took {us:.2} µs of CPU here when the run started (best of \
                 five runs of 20,000 units of `server_common::work::burn`)."
            );
        }
        let page = sweep_report::page(sweep, &these, &stamps, &note);
        println!("\n{page}");
        std::fs::write(out.join(format!("sweep-{}.md", sweep.id)), page)
            .map_err(|e| e.to_string())?;
        // The chart carries the newest stamp of its cells.
        let chart_stamp = these
            .last()
            .map_or(stamp_line.as_str(), |c| c.measured.as_str());
        sweep_report::draw(sweep, &these, out, chart_stamp, sweeps::rounds(res.mode));
        let chart = sweep_report::chart_files(sweep)
            .first()
            .map(|(f, _)| format!(" — ![chart]({f})"))
            .unwrap_or_default();
        index += &format!(
            "- [{}](sweep-{}.md): {}{chart}\n",
            sweep.title, sweep.id, sweep.about
        );
    }
    let titles: Vec<(String, String)> = scenarios::ladder(res.mode)
        .into_iter()
        .filter(|s| res.rows.iter().any(|r| r.scenario == s.id))
        .map(|s| (s.id.to_string(), s.title))
        .collect();
    if !titles.is_empty() {
        let stalled = if res.rows.iter().any(|r| r.stall.is_some()) {
            ", a stalled event loop"
        } else {
            ""
        };
        index += &format!(
            "\n## Single-point scenarios\n\nWhat no sweep covers: connection churn, the echo protocol, 10,000 connections at once, head-of-line blocking{stalled}.\n\n"
        );
    }
    for (id, title) in &titles {
        let these = rows_of(&res.rows, id);
        if these.iter().any(|r| r.stall.is_some()) || scenarios::has_stall(id) {
            let md = stalled_page(title, &these, &stamp_line, &note, res.stamp.work_unit_us);
            println!("\n{md}");
            std::fs::write(out.join(format!("{id}.md")), md).map_err(|e| e.to_string())?;
            let bars: Vec<(String, Option<f64>, bool)> = these
                .iter()
                .map(|r| {
                    let p99 = r.stall.as_ref().and_then(|s| s.p99_us);
                    let mode = r.variant().unwrap_or_default();
                    (
                        format!("--distribute {mode}"),
                        p99.map(|s| s.median / 1000.0),
                        false,
                    )
                })
                .collect();
            let chart_title = "p99 latency of new connections, one loop stalled";
            if let Err(e) = charts::bars(&out.join(format!("{id}.svg")), chart_title, "ms", &bars) {
                eprintln!("bench: chart {id}: {e}");
            }
            index += &format!("- [{title}]({id}.md) — ![chart]({id}.svg)\n");
            continue;
        }
        // Its own page even when no round got as far as the mix (all crashed, say).
        if these.iter().any(|r| r.mix.is_some()) || scenarios::has_mix(id) {
            let md = mixed_page(
                id,
                title,
                &these,
                &stamp_line,
                &note,
                res.stamp.work_unit_us,
            );
            println!("\n{md}");
            std::fs::write(out.join(format!("{id}.md")), md).map_err(|e| e.to_string())?;
            let bars: Vec<(String, Option<f64>, bool)> = these
                .iter()
                .map(|r| {
                    let p99 = r.mix.as_ref().and_then(|m| m.cheap_p99_us);
                    (r.rung.clone(), p99.map(|s| s.median), r.anchor)
                })
                .collect();
            let chart_title = "Cheap requests' p99 beside expensive ones";
            if let Err(e) = charts::bars(&out.join(format!("{id}.svg")), chart_title, "µs", &bars)
            {
                eprintln!("bench: chart {id}: {e}");
            }
            index += &format!("- [{title}]({id}.md) — ![chart]({id}.svg)\n");
            continue;
        }
        let with_wrk = these.iter().any(|r| r.wrk_rate.is_some());
        let table = results::scenario_table(&these, with_wrk);
        println!("\n## {title}\n\n{table}");
        let md = format!(
            "# {title}\n\n{}\n\n{note}\n\n{table}",
            results::stamps(these.iter().map(|r| r.measured.as_str()), &stamp_line)
        );
        std::fs::write(out.join(format!("{id}.md")), md).map_err(|e| e.to_string())?;
        let bars: Vec<(String, Option<f64>, bool)> = these
            .iter()
            .map(|r| {
                (
                    r.rung.clone(),
                    if r.verdict == Some(results::Verdict::TimedOut) {
                        None
                    } else {
                        r.rate
                    },
                    r.anchor,
                )
            })
            .collect();
        let unit = these.first().map_or("", |r| r.unit);
        if let Err(e) = charts::bars(&out.join(format!("{id}.svg")), title, unit, &bars) {
            eprintln!("bench: chart {id}: {e}");
        }
        index += &format!("- [{title}]({id}.md) — ![chart]({id}.svg)\n");
    }
    if !costs.is_empty() {
        let refs: Vec<&Cost> = costs.iter().collect();
        let table = results::cost_table(&refs);
        let title = "What each request costs";
        let about = cost_about(res.mode);
        println!("\n## {title}\n\n{about}\n\n{table}");
        let md = format!(
            "# {title}\n\n{}\n\n{about} {note}\n\n{table}",
            results::stamps(costs.iter().map(|c| c.measured.as_str()), &stamp_line)
        );
        std::fs::write(out.join("cost.md"), md).map_err(|e| e.to_string())?;
        let bars: Vec<(String, Option<f64>, bool)> = costs
            .iter()
            .map(|c| (c.rung.clone(), c.cpu_us_per_req, false))
            .collect();
        if let Err(e) = charts::bars(&out.join("cost.svg"), "Server CPU per request", "µs", &bars)
        {
            eprintln!("bench: chart cost: {e}");
        }
        index += &format!("\n## The fixed workload\n\n- [{title}](cost.md) — ![chart](cost.svg)\n");
    }
    index += COLUMNS;
    index += "\nFrom runs of their own, each stamped with its machine, command and date:\n\n\
        - [Speed targets](targets.md), in alternating rounds — `cargo run --release -p bench -- --targets`\n\
        - [One million connections](c1m.md) — `cargo run --release -p bench -- --c1m` ([the story](../c10k.md#c1m-one-million-connections-on-two-cores))\n\
        - [Reliability under faults](../reliability.md) — `cargo run --release -p bench -- --reliability`\n";
    std::fs::write(out.join("README.md"), index).map_err(|e| e.to_string())?;
    let raw = json!({
        "schema": 3,
        "stamp": res.stamp.json(),
        "mode": format!("{:?}", res.mode).to_lowercase(),
        "sweeps": res.cells.iter().map(Cell::json).collect::<Vec<_>>(),
        "rows": res.rows.iter().map(Row::json).collect::<Vec<_>>(),
        "costs": costs.iter().map(Cost::json).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&raw).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if readmes {
        write_readme_blocks(res, &sweeps_all, &titles, &costs)?;
    }
    Ok(())
}

/// The page of a mixed workload (docs/results/mixed.md): the stamps, what was sent, the table
/// of the cheap and the expensive requests, and the chart of the cheap requests' p99.
fn mixed_page(
    id: &str,
    title: &str,
    rows: &[&Row],
    stamp_line: &str,
    note: &str,
    work_unit_us: Option<f64>,
) -> String {
    format!(
        "# {title}\n\n{}\n\n{note}\n\n{}\n\n{}\n![The cheap requests' p99 per server]({id}.svg)\n",
        results::stamps(rows.iter().map(|r| r.measured.as_str()), stamp_line),
        results::mixed_about(rows, work_unit_us),
        results::mixed_table(rows),
    )
}

/// The page of the stalled-loop scenario (docs/results/stalled.md): the stamps, the setup, a
/// row per `--distribute` mode, the p99s compared, and the chart of the p99s.
fn stalled_page(
    title: &str,
    rows: &[&Row],
    stamp_line: &str,
    note: &str,
    work_unit_us: Option<f64>,
) -> String {
    format!(
        "# {title}\n\n{}\n\n{note}\n\n{}\n\n{}\n{}\n\n![p99 per mode](stalled.svg)\n",
        results::stamps(rows.iter().map(|r| r.measured.as_str()), stamp_line),
        results::stalled_about(rows, work_unit_us),
        results::stalled_table(rows),
        results::stalled_verdict(rows),
    )
}

fn cost_about(mode: Mode) -> String {
    format!(
        "Fixed workload: HTTP keep-alive, {} connections × {} requests (`echo_client -c {0} -n {1}`); \
         server CPU from the server's own getrusage summary; memory and threads per idle \
         connection from the memory sweep's largest point.",
        scenarios::COST_CONNS,
        if mode == Mode::Smoke {
            100
        } else {
            scenarios::COST_REQUESTS
        }
    )
}

/// What each column of the tables means (docs/results/README.md).
const COLUMNS: &str = "
## The columns

How each is measured, and why that way: [docs/method.md](../method.md).

- **req/s, msg/s** — completed requests (messages) per second at the client, echo_client's
  count over the run.
- **server CPU per request** — user + system CPU of the server's whole process group (forked
  children and their reaped children included), read from /proc before and after the client
  run, divided by the requests completed. Steadier than req/s on two shared cores, where the
  client takes what the server leaves.
- **p50, p99, p99.9, max** — latency from echo_client's merged HDR histograms; in the
  offered-load sweep, measured from each request's *intended* send time, so a stall counts
  against every request it delayed (coordinated omission).
- **served N of M** — only N of the M busy connections completed a request: a pool whose every
  worker is taken, lesson 1 serving one keep-alive client. Their cells are marked, and charts
  draw them hollow.
- **held N of M** — the server held only N of the M idle connections asked for (connected,
  taken off its accept queue, not closed by it): select's FD_SETSIZE, a full pool.
- **memory (PSS)** — proportional set size of every process of the server, so pages a forked
  child shares with its parent are split, not counted twice. **Memory per connection** is the
  growth over the idle server divided by the connections held, given only where the server
  holds every one of them itself. **Where the memory goes** splits it, at the held sweep's
  largest point: **stacks** (PSS of the mappings holding a thread's stack, found by each
  blocked thread's stack pointer), **other anonymous** (PSS of the other mappings with no file
  behind them: heap, arenas, copy-on-write copies, anonymous mmaps) and **file-backed** (PSS of
  file mappings) add up to it, within rounding; **page tables** (`VmPTE`) and **kernel
  stacks** (`KernelStack` of /proc/meminfo, machine-wide) are kernel memory outside PSS.
- **min–max** — the smallest and largest round beside the median. Two rungs differ only where
  these ranges do not overlap.
";

/// Each rung's README: its rows of every sweep and single-point scenario, and its cost beside
/// its neighbours'. The root README: the headline charts and table.
fn write_readme_blocks(
    res: &Results,
    sweeps_all: &[Sweep],
    titles: &[(String, String)],
    costs: &[Cost],
) -> Result<(), String> {
    let stamp_line = res.stamp.line();
    let rungs: Vec<&str> = RUNGS
        .iter()
        .map(|r| r.krate)
        .filter(|k| {
            res.cells.iter().any(|c| c.rung == *k)
                || res.rows.iter().any(|r| r.rung == *k)
                || costs.iter().any(|c| c.rung == *k)
        })
        .collect();
    for krate in rungs {
        let crate_stamps = results::stamps(
            res.cells
                .iter()
                .filter(|c| c.rung == krate)
                .map(|c| c.measured.as_str())
                .chain(
                    res.rows
                        .iter()
                        .filter(|r| r.rung == krate)
                        .map(|r| r.measured.as_str()),
                )
                .chain(
                    costs
                        .iter()
                        .filter(|c| c.rung == krate)
                        .map(|c| c.measured.as_str()),
                ),
            &stamp_line,
        );
        let mut body = format!(
            "{crate_stamps} {}\n\n{}",
            rounds_note(res.mode),
            sweep_report::rung_rows(krate, sweeps_all, &res.cells)
        );
        // The rung's rows, and its variants' (`scenarios::variant`), each titled with its flags.
        let mine: Vec<&Row> = res
            .rows
            .iter()
            .filter(|r| scenarios::variant(&r.rung).0 == krate)
            .collect();
        if mine.iter().any(|r| r.stall.is_none()) {
            body += "**Single-point scenarios**\n\n| scenario | throughput | p50 | p99 | max | errors / notes | server CPU | peak memory (PSS) | threads |\n|---|--:|--:|--:|--:|---|--:|--:|--:|\n";
            for (id, title) in titles {
                // The stalled loop has a row per mode: a table of its own, below.
                for r in mine
                    .iter()
                    .filter(|r| &r.scenario == id && r.stall.is_none())
                {
                    let title = match scenarios::variant(&r.rung).1 {
                        "" => title.clone(),
                        flags => format!("{title}, with `{flags}`"),
                    };
                    let line = results::scenario_table(&[r], false);
                    // The single data row of that table, with the scenario's title instead of the name.
                    if let Some(data) = line.lines().nth(2) {
                        let cells: Vec<&str> = data.split('|').collect();
                        body += &format!(
                            "| {title} |{}|\n",
                            cells[2..cells.len().saturating_sub(2)].join("|")
                        );
                    }
                }
            }
            body += "\n";
        }
        for (id, title) in titles {
            let stalled: Vec<&Row> = mine
                .iter()
                .copied()
                .filter(|r| &r.scenario == id && r.stall.is_some())
                .collect();
            if !stalled.is_empty() {
                body += &format!(
                    "**{title}** ([setup and method](../docs/results/{id}.md))\n\n{}\n{}\n\n",
                    results::stalled_table(&stalled),
                    results::stalled_verdict(&stalled)
                );
            }
        }
        if let Some(i) = costs.iter().position(|c| c.rung == krate) {
            let neighbours: Vec<&Cost> = costs[i.saturating_sub(1)..(i + 2).min(costs.len())]
                .iter()
                .collect();
            body += &format!(
                "**What one request costs** here, beside the neighbouring rungs ({})\n\n{}",
                cost_about(res.mode),
                results::cost_table(&neighbours)
            );
        }
        body +=
            "\nEvery rung, every sweep, with charts: [docs/results](../docs/results/README.md).\n";
        let path = root().join(krate).join("README.md");
        match readme::rewrite(&path, "bench", &body) {
            Ok(true) => {}
            Ok(false) => eprintln!("bench: {} has no bench block markers", path.display()),
            Err(e) => eprintln!("bench: {}: {e}", path.display()),
        }
    }
    // The root README: the two charts that tell the story, then the table.
    let stamps = results::stamps(res.cells.iter().map(|c| c.measured.as_str()), &stamp_line);
    let mut body = format!("{stamps} {}\n\n", rounds_note(res.mode));
    for (id, metric) in [("idle", "cpu"), ("held", "pss")] {
        if let Some(s) = sweeps_all.iter().find(|s| s.id == id)
            && res.cells.iter().any(|c| c.sweep == id)
        {
            body += &format!("![{}](docs/results/sweep-{id}-{metric}.svg)\n\n", s.title);
        }
    }
    body += &sweep_report::headline(sweeps_all, &res.cells);
    body += "\nEvery sweep, every rung, with charts and the column definitions: [docs/results](docs/results/README.md).\n";
    write_doc_blocks(res, costs);
    let path = root().join("README.md");
    match readme::rewrite(&path, "bench-headline", &body) {
        Ok(true) => Ok(()),
        Ok(false) => Err("README.md has no bench-headline block markers".into()),
        Err(e) => Err(format!("README.md: {e}")),
    }
}

/// docs/c10k.md's ceilings (what each rung did with the most connections) and docs/choosing.md's
/// cost table, from the same results.
fn write_doc_blocks(res: &Results, costs: &[Cost]) {
    let stamp_line = res.stamp.line();
    let cell = |rung: &str, id: &str| -> String {
        res.rows
            .iter()
            .find(|r| r.rung == rung && r.scenario == id)
            .map_or("–".into(), |r| {
                let notes = r.notes_cell();
                if notes == "ok" {
                    r.rate_cell()
                } else {
                    format!("{} ({notes})", r.rate_cell())
                }
            })
    };
    let held_max = largest(&res.cells, "held");
    let mut ceilings = format!(
        "{}\n\n| server | idle connections held (of {}) | memory per idle connection | threads per idle connection | echo, 10,000 × 100 messages | echo, 10,000 × 1 message with `--work` |\n|---|--:|--:|--:|---|---|\n",
        results::stamps(
            res.cells
                .iter()
                .filter(|c| c.sweep == "held")
                .map(|c| c.measured.as_str())
                .chain(
                    // The rows of the two columns below, not every scenario's.
                    res.rows
                        .iter()
                        .filter(|r| r.scenario == "echo-10k" || r.scenario == "echo-10k-cpu")
                        .map(|r| r.measured.as_str())
                ),
            &stamp_line
        ),
        held_max.map_or("–".into(), results::thousands)
    );
    for c in costs {
        let held = res
            .cells
            .iter()
            .find(|x| x.sweep == "held" && x.rung == c.rung && Some(x.x) == held_max)
            .and_then(|x| {
                x.samples
                    .iter()
                    .filter_map(|s| s.idle)
                    .map(|h| h.held())
                    .min()
            });
        ceilings += &format!(
            "| [`{0}`](../{0}/) | {1} | {2} | {3} | {4} | {5} |\n",
            c.rung,
            held.map_or("–".into(), |h| results::thousands(h as f64)),
            c.bytes_per_idle_conn
                .map_or("not every connection held".into(), |b| {
                    sweeps::Metric::BytesPerConn.show(b)
                }),
            c.threads_per_idle_conn
                .map_or("–".into(), |t| format!("{t:.2}")),
            cell(&c.rung, "echo-10k"),
            cell(&c.rung, "echo-10k-cpu"),
        );
    }
    let refs: Vec<&Cost> = costs.iter().collect();
    let cost = format!(
        "{}\n\n{}",
        results::stamps(costs.iter().map(|c| c.measured.as_str()), &stamp_line),
        results::cost_table(&refs)
    );
    for (file, block, body) in [
        ("docs/c10k.md", "bench:ceilings", &ceilings),
        ("docs/choosing.md", "bench:cost", &cost),
    ] {
        let path = root().join(file);
        match readme::rewrite(&path, block, body) {
            Ok(true) => {}
            Ok(false) => eprintln!("bench: {file} has no {block} markers"),
            Err(e) => eprintln!("bench: {file}: {e}"),
        }
    }
}

/// Reads a results.json back (schema 1, 2, or 3 — 3 adds the held sweep's breakdown of memory
/// per connection; an older file's samples read back without it).
pub fn read(v: &Value) -> Results {
    let mode = match v.get("mode").and_then(Value::as_str) {
        Some("full") => Mode::Full,
        Some("smoke") => Mode::Smoke,
        _ => Mode::Quick,
    };
    let array = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    Results {
        mode,
        stamp: Stamp::from_json(&v["stamp"]),
        cells: array("sweeps").iter().map(Cell::from_json).collect(),
        rows: array("rows").iter().map(Row::from_json).collect(),
        costs: array("costs").iter().map(Cost::from_json).collect(),
    }
}

/// `--rewrite-from`: the outputs of an earlier run, rebuilt from its results.json (beside it),
/// and the README blocks unless `readmes` is false (`--no-write`).
pub fn rewrite_from(path: &Path, readmes: bool) -> Result<(), String> {
    let res = read(&crate::read_json(path)?);
    let out = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    crate::c1m::rewrite(&out, readmes)?;
    report(&res, &out, readmes)
}

/// Merges this run into the stored results of the same mode: a re-measured cell, row or cost
/// replaces the stored one, everything else is kept with its own stamp. Order: ladder order,
/// anchors last.
fn merge(stored: &Path, fresh: Results) -> Results {
    let Some(old) = std::fs::read_to_string(stored)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return fresh;
    };
    let old = read(&old);
    if old.mode != fresh.mode {
        eprintln!(
            "bench: {} holds another mode's results: replacing them",
            stored.display()
        );
        return fresh;
    }
    // The `--work` unit the pages state (the work sweep's, the mixed workload's) is the one
    // their numbers were measured with: a partial run that measured neither keeps the stored
    // one. (The stalled loop's rows carry their own.)
    let states_unit =
        fresh.cells.iter().any(|c| c.sweep == "work") || fresh.rows.iter().any(|r| r.mix.is_some());
    let work_unit_us = if states_unit {
        fresh.stamp.work_unit_us
    } else {
        old.stamp.work_unit_us.or(fresh.stamp.work_unit_us)
    };
    // A variant row ranks right after its rung.
    let rank = |rung: &str| {
        let (krate, flags) = scenarios::variant(rung);
        let at = RUNGS.iter().position(|r| r.krate == krate);
        (at.unwrap_or(RUNGS.len()), !flags.is_empty())
    };
    let mut cells = sweeps::merge(old.cells, fresh.cells);
    cells.sort_by(|a, b| {
        let ka = (
            sweeps::IDS.iter().position(|i| *i == a.sweep),
            a.anchor,
            rank(&a.rung),
        );
        let kb = (
            sweeps::IDS.iter().position(|i| *i == b.sweep),
            b.anchor,
            rank(&b.rung),
        );
        ka.cmp(&kb).then(
            a.fraction
                .unwrap_or(a.x)
                .total_cmp(&b.fraction.unwrap_or(b.x)),
        )
    });
    let mut rows: Vec<Row> =
        old.rows
            .into_iter()
            .filter(|o| {
                !fresh.rows.iter().any(|n| {
                    n.rung == o.rung && n.scenario == o.scenario && n.variant() == o.variant()
                })
            })
            .collect();
    rows.extend(fresh.rows);
    let ids: Vec<&str> = scenarios::ladder(fresh.mode).iter().map(|s| s.id).collect();
    // Rows of scenarios no longer in the ladder (an older schema's) are left out.
    rows.retain(|r| ids.contains(&r.scenario.as_str()));
    // A stalled-loop row per `--distribute` mode, in the scenario's order of modes.
    let mode = |r: &Row| {
        r.variant()
            .and_then(|v| scenarios::STALL_MODES.iter().position(|m| *m == v))
    };
    rows.sort_by_key(|r| {
        (
            ids.iter().position(|i| *i == r.scenario),
            r.anchor,
            rank(&r.rung),
            mode(r),
        )
    });
    let mut costs: Vec<Cost> = old
        .costs
        .into_iter()
        .filter(|o| !fresh.costs.iter().any(|n| n.rung == o.rung))
        .collect();
    costs.extend(fresh.costs);
    costs.sort_by_key(|c| rank(&c.rung));
    Results {
        mode: fresh.mode,
        stamp: Stamp {
            work_unit_us,
            ..fresh.stamp
        },
        cells,
        rows,
        costs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::StallRow;

    fn results(mode: Mode, rows: Vec<Row>) -> Results {
        Results {
            mode,
            stamp: Stamp::from_json(&json!({})),
            cells: Vec::new(),
            rows,
            costs: Vec::new(),
        }
    }

    fn row(scenario: &str, mode: Option<&str>, rate: f64) -> Row {
        Row {
            rung: "multi_epoll_server".into(),
            scenario: scenario.into(),
            unit: "req/s",
            rate: Some(rate),
            stall: mode.map(|m| StallRow {
                distribute: m.into(),
                ..StallRow::default()
            }),
            ..Row::default()
        }
    }

    #[test]
    fn a_partial_run_replaces_each_mode_of_the_stalled_loop_and_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("bench-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let stored = dir.join("results.json");
        let mut old = results(
            Mode::Full,
            vec![
                row("mixed", None, 1.0),
                row("stalled", Some("reuseport"), 2.0),
                row("stalled", Some("exclusive"), 3.0),
                row("stalled", Some("acceptor"), 4.0),
            ],
        );
        old.stamp.work_unit_us = Some(2.08);
        report(&old, &dir, false).expect("written");
        // Only one mode measured again: it replaces its own row, not the others'. And it keeps
        // the stored `--work` unit, which the pages of the rows it did not measure state.
        let mut fresh = results(Mode::Full, vec![row("stalled", Some("exclusive"), 30.0)]);
        fresh.stamp.work_unit_us = Some(2.02);
        let merged = merge(&stored, fresh);
        assert_eq!(merged.stamp.work_unit_us, Some(2.08));
        let seen: Vec<(Option<&str>, Option<f64>)> =
            merged.rows.iter().map(|r| (r.variant(), r.rate)).collect();
        assert_eq!(
            seen,
            [
                (None, Some(1.0)),
                (Some("reuseport"), Some(2.0)),
                (Some("exclusive"), Some(30.0)),
                (Some("acceptor"), Some(4.0)),
            ]
        );
        let fresh = results(
            Mode::Full,
            vec![
                row("stalled", Some("acceptor"), 40.0),
                row("stalled", Some("reuseport"), 20.0),
                row("stalled", Some("exclusive"), 30.0),
            ],
        );
        let merged = merge(&stored, fresh);
        let seen: Vec<(&str, Option<&str>, Option<f64>)> = merged
            .rows
            .iter()
            .map(|r| (r.scenario.as_str(), r.variant(), r.rate))
            .collect();
        assert_eq!(
            seen,
            [
                ("mixed", None, Some(1.0)),
                ("stalled", Some("reuseport"), Some(20.0)),
                ("stalled", Some("exclusive"), Some(30.0)),
                ("stalled", Some("acceptor"), Some(40.0)),
            ]
        );
        // A run that measured the mixed workload again states its own unit.
        let mut mixed = row("mixed", None, 5.0);
        mixed.mix = Some(crate::results::MixRow::default());
        let mut again = results(Mode::Full, vec![mixed]);
        again.stamp.work_unit_us = Some(2.02);
        assert_eq!(merge(&stored, again).stamp.work_unit_us, Some(2.02));
        // Its page: a row per mode, and the p99s compared.
        let page = std::fs::read_to_string(dir.join("stalled.md")).expect("stalled.md");
        assert!(page.contains("| `exclusive` |") && page.contains("| `acceptor` |"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_quick_run_measures_the_stalled_loop_only_when_asked() {
        let ids = |p: Plan| p.scenarios.iter().map(|s| s.id).collect::<Vec<_>>();
        let quick = Plan::new(Mode::Quick, &[], false, false).expect("plan");
        assert_eq!(ids(quick), ["mixed"]);
        let asked = Plan::new(Mode::Quick, &["stalled".into()], false, false).expect("plan");
        assert_eq!(ids(asked), ["stalled"]);
        let full = Plan::new(Mode::Full, &[], false, false).expect("plan");
        assert!(ids(full).contains(&"stalled"));
        assert!(Plan::new(Mode::Smoke, &["stalled".into()], false, false).is_err());
    }
}
