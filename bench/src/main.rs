//! The ladder benchmark: every rung through the same scenarios, every number the course shows.
//!
//! `cargo run --release -p bench` builds the release binaries it needs, runs the quick ladder
//! (under five minutes on 2 cores) and prints the tables. `--full` runs everything and writes
//! `docs/results/` and every README's numbers block; `--smoke` proves the pipeline in seconds.
//! See bench/README.md for the method.

mod anchors;
mod c1m;
mod charts;
mod client;
mod machine;
mod procfs;
mod procs;
mod readme;
mod results;
mod run;
mod scenarios;
mod targets;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use conformance::rungs::{RUNGS, Rung, Status};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use results::{Cost, Row};
use run::Subject;
use scenarios::Mode;

/// The ladder benchmark: runs every rung of the ladder through the same scenarios (HTTP
/// keep-alive and close, echo at 1k and 10k connections, CPU-bound echo, idle connections held)
/// with echo_client, beside nginx and wrk when installed, and reports throughput, latency,
/// errors, server CPU and memory, and what each request costs.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Run everything: 10 s runs, 1,000 and 10,000 connections, wrk beside echo_client,
    /// syscalls per request under strace. Writes docs/results/ and the READMEs' numbers.
    #[arg(long, conflicts_with = "smoke")]
    full: bool,
    /// Seconds per rung, to prove the pipeline works (CI). Writes only under target/.
    #[arg(long)]
    smoke: bool,
    /// Only these rungs (crate names, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "CRATES")]
    only: Vec<String>,
    /// Only these scenarios (ids such as http-ka-100, echo-1k, hold, cost; comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    scenario: Vec<String>,
    /// Write docs/results/ and the README blocks (the default with --full).
    #[arg(long)]
    write: bool,
    /// Write nothing outside target/, even with --full.
    #[arg(long, conflicts_with = "write")]
    no_write: bool,
    /// Leave out the nginx reference rows.
    #[arg(long)]
    no_anchors: bool,
    /// Use the release binaries already built instead of running cargo build.
    #[arg(long)]
    no_build: bool,
    /// Instead of the load scenarios, inject every fault of conformance/src/faults.rs into
    /// every rung and write docs/reliability.md from what happened.
    #[arg(long, conflicts_with_all = ["full", "smoke", "scenario"])]
    reliability: bool,
    /// Instead of the ladder: one million concurrent connections, in steps, with the
    /// multi-process reactor and echo_client --processes --source-ips. Changes sysctls (root)
    /// and restores them. Writes docs/results/c1m.* and docs/c10k.md's block.
    #[arg(long, conflicts_with_all = ["full", "smoke", "scenario", "reliability"])]
    c1m: bool,
    /// The C1M steps, in connections.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,500000,1000000",
        value_name = "N,N,…"
    )]
    c1m_steps: Vec<u64>,
    /// Measure nothing: rebuild every table, chart and README block from the raw results of an
    /// earlier run (its results.json), e.g. after editing a template. With --targets: the
    /// targets' tables from an earlier targets.json.
    #[arg(long, value_name = "RESULTS_JSON", conflicts_with_all = ["full", "smoke", "reliability", "c1m"])]
    rewrite_from: Option<PathBuf>,
    /// Check the course's speed targets (issues 3, 5, 7): each comparison in alternating
    /// rounds, verdict on the median ratio. Writes docs/results/targets.{md,json} and the
    /// `targets` block of the READMEs concerned.
    #[arg(long, conflicts_with_all = ["full", "smoke", "reliability", "c1m"])]
    targets: bool,
    /// Rounds per target (with --targets).
    #[arg(long, default_value_t = 5, value_name = "N")]
    rounds: u32,
    /// Only these targets, by id (with --targets; ids in docs/results/targets.md).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    target: Vec<String>,
    /// How long the C1M run holds the connections idle before checking them.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    c1m_hold: u64,
    /// Connections opened per second in the C1M run (echo_client --connect-rate). Above what the
    /// two cores can accept (connections ÷ time to establish, in the table) connects pile up in
    /// the SYN queue, their retransmissions back off (1, 3, 7, 15, 31 s) and the slowest time out.
    #[arg(long, default_value_t = 12_000, value_name = "PER_S")]
    c1m_rate: u64,
}

/// The workspace root, found at run time: `cargo run` sets CARGO_MANIFEST_DIR (bench/); run
/// directly, the binary looks upwards from the current directory for the `[workspace]`
/// manifest. (A path compiled in would point at whichever checkout built the binary.)
fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        return PathBuf::from(dir).join("..");
    }
    let mut dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    loop {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|m| m.contains("[workspace]")) {
            return dir;
        }
        if !dir.pop() {
            return PathBuf::from(".");
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn build(rungs: &[&Rung]) -> Result<(), String> {
    let mut args = vec!["-p", "echo_client"];
    for r in rungs {
        args.extend(["-p", r.krate]);
    }
    eprintln!(
        "bench: building release binaries ({} servers + echo_client)…",
        rungs.len()
    );
    cargo_build(&args)
}

/// `cargo build --release ARGS` in the workspace root.
fn cargo_build(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .args(["build", "--release"])
        .args(args);
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed: {status}"))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    procs::kill_all_on_signal();
    match run_all(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_all(args: &Args) -> Result<(), String> {
    let t0 = Instant::now();
    let mode = if args.full {
        Mode::Full
    } else if args.smoke {
        Mode::Smoke
    } else {
        Mode::Quick
    };
    for name in &args.only {
        if !RUNGS.iter().any(|r| r.krate == name) {
            return Err(format!(
                "--only {name}: not a rung (see conformance/src/rungs.rs)"
            ));
        }
    }
    let rungs: Vec<&Rung> = RUNGS
        .iter()
        .filter(|r| r.status == Status::Done)
        .filter(|r| args.only.is_empty() || args.only.iter().any(|o| o == r.krate))
        .collect();
    if rungs.is_empty() {
        return Err("no rung to run (--only names only planned rungs?)".into());
    }
    if let Some(path) = &args.rewrite_from {
        return if args.targets {
            rewrite_targets(args, path)
        } else {
            rewrite_from(path)
        };
    }
    if !args.no_build {
        build(&rungs)?;
        if args.targets {
            // The floor server of the targets (targets.rs, `Who::Floor`): an example, not a bin.
            cargo_build(&["-p", "echo_client", "--example", targets::FLOOR_EXAMPLE])?;
        }
    }
    let bins = target_dir().join("release");
    if args.reliability {
        return reliability(&rungs, &bins, t0);
    }
    if args.targets {
        return check_targets(args, &bins, t0);
    }
    if args.c1m {
        let command = command_line();
        let stamp = machine::Stamp::now(command);
        let out = if args.no_write {
            target_dir().join("bench-c1m")
        } else {
            root().join("docs/results")
        };
        let md = c1m::run(
            &bins,
            &args.c1m_steps,
            args.c1m_hold,
            args.c1m_rate,
            &stamp,
            &out,
        )?;
        println!("{md}");
        if !args.no_write {
            let path = root().join("docs/c10k.md");
            if !readme::rewrite(&path, "c1m", &md)
                .map_err(|e| format!("{}: {e}", path.display()))?
            {
                eprintln!("bench: {} has no c1m block markers", path.display());
            }
        }
        eprintln!("bench: C1M done in {:.0} s", t0.elapsed().as_secs_f64());
        return Ok(());
    }
    let echo_client = bins.join("echo_client");
    if !echo_client.exists() {
        return Err(format!(
            "{} is missing: build it (drop --no-build)",
            echo_client.display()
        ));
    }
    let wanted = |id: &str| args.scenario.is_empty() || args.scenario.iter().any(|s| s == id);
    let scenarios: Vec<_> = scenarios::scenarios(mode)
        .into_iter()
        .filter(|s| wanted(s.id))
        .collect();
    let anchors_on = !args.no_anchors && mode != Mode::Smoke && anchors::nginx_binary().is_some();
    let anchor_workers: &[u32] = if anchors_on { &[1, 2] } else { &[] };

    let steps = scenarios.len() * rungs.len()
        + scenarios.iter().filter(|s| s.anchors).count() * anchor_workers.len()
        + if wanted("hold") { rungs.len() } else { 0 }
        + if wanted("cost") { rungs.len() } else { 0 };
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()), // the template is a constant
    );

    let mut rows: Vec<Row> = Vec::new();
    for sc in &scenarios {
        for r in &rungs {
            bar.set_message(format!("{} · {}", r.krate, sc.id));
            let bin = bins.join(r.krate);
            rows.push(run::load(
                &Subject::Rung {
                    krate: r.krate,
                    bin: &bin,
                },
                sc,
                &echo_client,
                true,
            ));
            bar.inc(1);
        }
        if sc.anchors {
            for &w in anchor_workers {
                bar.set_message(format!("nginx {w}w · {}", sc.id));
                rows.push(run::load(
                    &Subject::Nginx { workers: w },
                    sc,
                    &echo_client,
                    true,
                ));
                bar.inc(1);
            }
        }
    }
    let mut costs: Vec<Cost> = Vec::new();
    if wanted("hold") || wanted("cost") {
        for r in &rungs {
            let bin = bins.join(r.krate);
            let subject = Subject::Rung {
                krate: r.krate,
                bin: &bin,
            };
            let mut hold = None;
            if wanted("hold") {
                bar.set_message(format!("{} · hold", r.krate));
                let h = run::hold(
                    &subject,
                    scenarios::hold_conns(mode),
                    scenarios::hold_secs(mode),
                    &echo_client,
                );
                hold = Some(rows.len());
                rows.push(h);
                bar.inc(1);
            }
            if wanted("cost") {
                bar.set_message(format!("{} · cost", r.krate));
                costs.push(run::cost(
                    &subject,
                    mode,
                    &echo_client,
                    hold.map(|i| &rows[i]),
                ));
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let command = command_line();
    let stamp = machine::Stamp::now(command.trim_end_matches(" --").to_string());
    let write = (args.write || mode == Mode::Full) && !args.no_write && mode != Mode::Smoke;
    let out_dir = if write {
        root().join("docs/results")
    } else {
        target_dir().join(format!("bench-{mode:?}").to_lowercase())
    };
    for r in &mut rows {
        r.measured = stamp.line();
    }
    for c in &mut costs {
        c.measured = stamp.line();
    }
    // A partial run (--only, --scenario) updates what it measured and keeps the rest.
    let (rows, costs) = if write {
        merge(&out_dir.join("results.json"), mode, rows, costs)
    } else {
        (rows, costs)
    };
    let all_scenarios: Vec<_> = scenarios::scenarios(mode)
        .into_iter()
        .filter(|sc| rows.iter().any(|r| r.scenario == sc.id))
        .collect();
    report(&stamp, mode, &all_scenarios, &rows, &costs, &out_dir, write)?;
    eprintln!(
        "bench: done in {:.0} s; results in {}",
        t0.elapsed().as_secs_f64(),
        out_dir.display()
    );
    Ok(())
}

fn rows_of<'a>(rows: &'a [Row], scenario: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.scenario == scenario).collect()
}

fn report(
    stamp: &machine::Stamp,
    mode: Mode,
    scenarios: &[scenarios::Scenario],
    rows: &[Row],
    costs: &[Cost],
    out: &Path,
    write_readmes: bool,
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    // Memory and threads per idle connection come from the hold rows at hand (which may be from
    // another run than the cost rows, after a partial run).
    let costs: Vec<Cost> = costs
        .iter()
        .cloned()
        .map(|mut c| {
            if let Some(h) = rows
                .iter()
                .find(|r| r.rung == c.rung && r.scenario == "hold")
            {
                c.bytes_per_idle_conn = h.bytes_per_conn;
                c.threads_per_idle_conn = h.threads_per_conn;
            }
            c
        })
        .collect();
    let costs = costs.as_slice();
    let all_stamps = results::stamps(
        rows.iter()
            .map(|r| r.measured.as_str())
            .chain(costs.iter().map(|c| c.measured.as_str())),
        &stamp.line(),
    );
    let mut index = format!("# Benchmark results\n\n{all_stamps}\n\n");
    let mut all_titles: Vec<(String, String)> = scenarios
        .iter()
        .map(|s| (s.id.to_string(), s.title.clone()))
        .collect();
    if rows.iter().any(|r| r.scenario == "hold") {
        all_titles.push((
            "hold".into(),
            format!(
                "{} idle connections held",
                results::thousands(scenarios::hold_conns(mode) as f64)
            ),
        ));
    }
    for (id, title) in &all_titles {
        let these = rows_of(rows, id);
        let with_wrk = these.iter().any(|r| r.wrk_rate.is_some());
        let table = results::scenario_table(&these, with_wrk);
        println!("\n## {title}\n\n{table}");
        let md = format!(
            "# {title}\n\n{}\n\n{table}",
            results::stamps(these.iter().map(|r| r.measured.as_str()), &stamp.line())
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
        let about = format!(
            "Fixed workload: HTTP keep-alive, {} connections × {} requests (`echo_client -c {0} -n {1}`); \
             memory and threads per idle connection from the hold scenario.",
            scenarios::COST_CONNS,
            if mode == Mode::Smoke {
                100
            } else {
                scenarios::COST_REQUESTS
            }
        );
        println!("\n## {title}\n\n{about}\n\n{table}");
        let md = format!(
            "# {title}\n\n{}\n\n{about}\n\n{table}",
            results::stamps(costs.iter().map(|c| c.measured.as_str()), &stamp.line())
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
        index += &format!("- [{title}](cost.md) — ![chart](cost.svg)\n");
    }
    index += "\nFrom runs of their own, each stamped with its machine, command and date:\n\n\
        - [Speed targets](targets.md), in alternating rounds — `cargo run --release -p bench -- --targets`\n\
        - [One million connections](c1m.md) — `cargo run --release -p bench -- --c1m` ([the story](../c10k.md#c1m-one-million-connections-on-two-cores))\n\
        - [Reliability under faults](../reliability.md) — `cargo run --release -p bench -- --reliability`\n";
    std::fs::write(out.join("README.md"), index).map_err(|e| e.to_string())?;
    let raw = json!({
        "schema": 1,
        "stamp": stamp.json(),
        "mode": format!("{mode:?}").to_lowercase(),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "costs": costs.iter().map(Cost::json).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&raw).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if write_readmes {
        write_readme_blocks(stamp, &all_titles, rows, costs)?;
    }
    Ok(())
}

/// Each rung's README: its own row in every scenario, and its cost beside its neighbours'.
/// The root README: the headline table and a chart.
fn write_readme_blocks(
    stamp: &machine::Stamp,
    titles: &[(String, String)],
    rows: &[Row],
    costs: &[Cost],
) -> Result<(), String> {
    for (i, cost) in costs.iter().enumerate() {
        let krate = &cost.rung;
        let crate_stamps = results::stamps(
            rows.iter()
                .filter(|r| &r.rung == krate)
                .map(|r| r.measured.as_str())
                .chain(std::iter::once(cost.measured.as_str())),
            &stamp.line(),
        );
        let mut body = format!(
            "{crate_stamps}\n\n| scenario | throughput | p50 | p99 | max | errors / notes | server CPU | peak memory (PSS) | threads |\n|---|--:|--:|--:|--:|---|--:|--:|--:|\n"
        );
        for (id, title) in titles {
            if let Some(r) = rows.iter().find(|r| &r.rung == krate && &r.scenario == id) {
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
        let neighbours: Vec<&Cost> = costs[i.saturating_sub(1)..(i + 2).min(costs.len())]
            .iter()
            .collect();
        body += &format!(
            "\nWhat one request costs here, beside the neighbouring rungs (fixed workload: HTTP keep-alive, {} connections × {} requests):\n\n{}",
            scenarios::COST_CONNS,
            scenarios::COST_REQUESTS,
            results::cost_table(&neighbours)
        );
        body += "\nEvery rung, every scenario, with charts: [docs/results](../docs/results/README.md).\n";
        let path = root().join(krate).join("README.md");
        match readme::rewrite(&path, "bench", &body) {
            Ok(true) => {}
            Ok(false) => eprintln!("bench: {} has no bench block markers", path.display()),
            Err(e) => eprintln!("bench: {}: {e}", path.display()),
        }
    }
    // Root README headline: throughput in the main scenarios and the cost columns.
    let cols = ["http-ka-100", "http-close-10", "echo-1k"];
    let mut body = format!(
        "{}\n\n| server | HTTP keep-alive, 100 conns | HTTP close, 10 conns | echo, 1k conns × 100 | CPU per request | memory per idle conn |\n|---|--:|--:|--:|--:|--:|\n",
        results::stamps(rows.iter().map(|r| r.measured.as_str()), &stamp.line())
    );
    let mut names: Vec<(String, bool)> = Vec::new();
    for r in rows {
        if !names.iter().any(|(n, _)| n == &r.rung) {
            names.push((r.rung.clone(), r.anchor));
        }
    }
    for (name, anchor) in names {
        let cell = |id: &str| {
            rows.iter()
                .find(|r| r.rung == name && r.scenario == id)
                .map_or("–".into(), |r| r.rate_cell())
        };
        let cost = costs.iter().find(|c| c.rung == name);
        let shown = if anchor {
            format!("*{name}*")
        } else {
            format!("[`{name}`]({name}/)")
        };
        body += &format!(
            "| {shown} | {} | {} | {} | {} | {} |\n",
            cell(cols[0]),
            cell(cols[1]),
            cell(cols[2]),
            cost.and_then(|c| c.cpu_us_per_req)
                .map_or("–".into(), |v| format!("{v:.1} µs")),
            cost.and_then(|c| c.bytes_per_idle_conn)
                .map_or("–".into(), |b| format!("{} B", results::thousands(b))),
        );
    }
    body += "\n![HTTP keep-alive, 100 connections](docs/results/http-ka-100.svg)\n\nAll scenarios and the per-request costs: [docs/results](docs/results/README.md).\n";
    write_doc_blocks(stamp, rows, costs);
    let path = root().join("README.md");
    match readme::rewrite(&path, "bench-headline", &body) {
        Ok(true) => Ok(()),
        Ok(false) => Err("README.md has no bench-headline block markers".into()),
        Err(e) => Err(format!("README.md: {e}")),
    }
}

/// `--reliability`: every fault against every rung, and the table in docs/reliability.md.
fn reliability(rungs: &[&Rung], bins: &Path, t0: Instant) -> Result<(), String> {
    use conformance::faults::{FAULTS, Outcome};
    let bar = ProgressBar::new((rungs.len() * FAULTS.len()) as u64);
    let mut table: Vec<Vec<Outcome>> = Vec::new();
    for r in rungs {
        // Target wants a 'static path: one small leak per rung for the life of this run.
        let bin: &'static str = Box::leak(
            bins.join(r.krate)
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        let target = conformance::Target::new(bin, r.krate);
        let mut row = Vec::new();
        for (id, _, probe) in FAULTS {
            bar.set_message(format!("{} · {id}", r.krate));
            // A probe that panics (a helper assertion) is a failure to report, not a crash.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe(&target)))
                .unwrap_or_else(|_| Outcome::Fail("the probe itself panicked (see stderr)".into()));
            row.push(outcome);
            bar.inc(1);
        }
        table.push(row);
    }
    bar.finish_and_clear();
    let command = "cargo run --release -p bench -- --reliability".to_string();
    let stamp = machine::Stamp::now(command);
    let mut md = format!(
        "# Reliability: each fault, each server\n\nGenerated by `bench --reliability` from the probes in \
         [`conformance/src/faults.rs`](../conformance/src/faults.rs) — the same probes every server's \
         conformance suite runs (it fails on ❌). ✅ the contract held; ⚠️ the model's documented \
         limit showed and the server recovered as the contract asks; – not applicable.\n\n{}\n",
        stamp.line()
    );
    for (i, (_, title, _)) in FAULTS.iter().enumerate() {
        md += &format!("\n## {title}\n\n| server | outcome |\n|---|---|\n");
        for (r, row) in rungs.iter().zip(&table) {
            md += &format!(
                "| `{}` | {} |\n",
                r.krate,
                row[i].cell().replace('|', "\\|")
            );
        }
    }
    println!("{md}");
    let path = root().join("docs/reliability.md");
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    let failed = table
        .iter()
        .flatten()
        .filter(|o| matches!(o, Outcome::Fail(_)))
        .count();
    eprintln!(
        "bench: reliability done in {:.0} s; {failed} failures; {}",
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    if failed > 0 {
        Err(format!("{failed} contract violations (see the table)"))
    } else {
        Ok(())
    }
}

/// docs/c10k.md's ceilings (what each rung did with 10,000 connections) and docs/choosing.md's
/// cost table, from the same rows.
fn write_doc_blocks(stamp: &machine::Stamp, rows: &[Row], costs: &[Cost]) {
    let cell = |rung: &str, id: &str| -> String {
        rows.iter()
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
    let mut ceilings = format!(
        "{}\n\n| server | idle connections held at once | memory per idle connection | threads per idle connection | echo, 10,000 × 100 messages | echo, 10,000 × 1 message with `--work` |\n|---|--:|--:|--:|---|---|\n",
        results::stamps(rows.iter().map(|r| r.measured.as_str()), &stamp.line())
    );
    for c in costs {
        let hold = rows
            .iter()
            .find(|r| r.rung == c.rung && r.scenario == "hold");
        ceilings += &format!(
            "| [`{0}`](../{0}/) | {1} | {2} | {3} | {4} | {5} |\n",
            c.rung,
            hold.and_then(|h| h.rate)
                .map_or("–".into(), results::thousands),
            c.bytes_per_idle_conn
                .map_or("–".into(), |b| format!("{} B", results::thousands(b))),
            c.threads_per_idle_conn
                .map_or("–".into(), |t| format!("{t:.2}")),
            cell(&c.rung, "echo-10k"),
            cell(&c.rung, "echo-10k-cpu"),
        );
    }
    let refs: Vec<&Cost> = costs.iter().collect();
    let cost = format!(
        "{}\n\n{}",
        results::stamps(costs.iter().map(|c| c.measured.as_str()), &stamp.line()),
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

/// How this run was started, for the stamp: `cargo run --release -p bench -- <its flags>`.
fn command_line() -> String {
    std::iter::once("cargo run --release -p bench --".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON file of an earlier run; errors name the file.
fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `--rewrite-from`: the outputs of an earlier run, rebuilt from its results.json.
fn rewrite_from(path: &Path) -> Result<(), String> {
    let v = read_json(path)?;
    let stamp = machine::Stamp::from_json(&v["stamp"]);
    let mode = match v.get("mode").and_then(serde_json::Value::as_str) {
        Some("full") => Mode::Full,
        Some("smoke") => Mode::Smoke,
        _ => Mode::Quick,
    };
    let array = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let rows: Vec<Row> = array("rows").iter().map(Row::from_json).collect();
    let costs: Vec<Cost> = array("costs").iter().map(Cost::from_json).collect();
    let scenarios: Vec<_> = scenarios::scenarios(mode)
        .into_iter()
        .filter(|sc| rows.iter().any(|r| r.scenario == sc.id))
        .collect();
    let out = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    c1m::rechart(&out);
    report(&stamp, mode, &scenarios, &rows, &costs, &out, true)
}

/// Merges this run's rows and costs into the stored results of the same mode: a re-measured
/// (server, scenario) replaces the stored one, everything else is kept with its own stamp.
/// Order: ladder order, anchors last within each scenario.
fn merge(stored: &Path, mode: Mode, rows: Vec<Row>, costs: Vec<Cost>) -> (Vec<Row>, Vec<Cost>) {
    let Some(old) = std::fs::read_to_string(stored)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return (rows, costs);
    };
    if old.get("mode").and_then(serde_json::Value::as_str)
        != Some(format!("{mode:?}").to_lowercase().as_str())
    {
        eprintln!(
            "bench: {} holds another mode's results: replacing them",
            stored.display()
        );
        return (rows, costs);
    }
    let array = |k: &str| {
        old.get(k)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut merged: Vec<Row> = array("rows")
        .iter()
        .map(Row::from_json)
        .filter(|o| {
            !rows
                .iter()
                .any(|n| n.rung == o.rung && n.scenario == o.scenario)
        })
        .collect();
    merged.extend(rows);
    let mut merged_costs: Vec<Cost> = array("costs")
        .iter()
        .map(Cost::from_json)
        .filter(|o| !costs.iter().any(|n| n.rung == o.rung))
        .collect();
    merged_costs.extend(costs);
    let rank = |rung: &str| {
        RUNGS
            .iter()
            .position(|r| r.krate == rung)
            .unwrap_or(RUNGS.len())
    };
    let ids: Vec<&str> = scenarios::scenarios(mode)
        .iter()
        .map(|s| s.id)
        .chain(["hold"])
        .collect();
    let scenario_rank = |id: &str| ids.iter().position(|i| *i == id).unwrap_or(ids.len());
    merged.sort_by_key(|r| {
        (
            scenario_rank(&r.scenario),
            r.anchor,
            rank(&r.rung),
            r.rung.clone(),
        )
    });
    merged_costs.sort_by_key(|c| rank(&c.rung));
    (merged, merged_costs)
}

/// `--targets`: see targets.rs.
fn check_targets(args: &Args, bins: &Path, t0: std::time::Instant) -> Result<(), String> {
    let echo_client = bins.join("echo_client");
    let command = command_line();
    let stamp = machine::Stamp::now(command);
    let json = targets::run(bins, &echo_client, args.rounds.max(1), &args.target, &stamp);
    let partial = !args.target.is_empty();
    if partial {
        eprintln!("bench: --target picks a subset: nothing written (run all targets to write)");
    }
    if !(args.no_write || partial) {
        let out = root().join("docs/results");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(out.join("targets.json"), text).map_err(|e| e.to_string())?;
    }
    write_targets(&json, args.no_write || partial)?;
    eprintln!("bench: targets done in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// `--targets --rewrite-from targets.json`: the tables of an earlier targets run, rebuilt.
fn rewrite_targets(args: &Args, path: &Path) -> Result<(), String> {
    write_targets(&read_json(path)?, args.no_write)
}

/// Prints the targets report and, unless `dry`, writes docs/results/targets.md and the
/// `targets` block of the READMEs concerned (targets.json is the input: written only by a run).
fn write_targets(json: &serde_json::Value, dry: bool) -> Result<(), String> {
    let (summary, full) = targets::render(json);
    println!("{full}");
    if !dry {
        let out = root().join("docs/results");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        std::fs::write(out.join("targets.md"), format!("# Speed targets\n\n{full}"))
            .map_err(|e| e.to_string())?;
        let body = format!(
            "{summary}\nEvery round: [docs/results/targets.md](../docs/results/targets.md).\n"
        );
        for krate in [
            "epoll_et_server",
            "multi_epoll_server",
            "tokio_server",
            "io_uring_server",
            "echo_client",
        ] {
            let path = root().join(krate).join("README.md");
            match readme::rewrite(&path, "targets", &body) {
                Ok(true) => {}
                Ok(false) => eprintln!("bench: {} has no targets block markers", path.display()),
                Err(e) => eprintln!("bench: {}: {e}", path.display()),
            }
        }
    }
    Ok(())
}
