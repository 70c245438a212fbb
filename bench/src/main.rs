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
mod curves;
mod idle;
mod ladder;
mod machine;
mod procfs;
mod procs;
mod readme;
mod results;
mod run;
mod scenarios;
mod spread;
mod sweep_report;
mod sweeps;
mod targets;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use conformance::rungs::{RUNGS, Rung, Status};
use indicatif::ProgressBar;

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
    /// Only these sweeps and scenarios (ids such as idle, held, rate, echo-1k, cost; comma-separated).
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
    /// multi-process reactor (each of --c1m-designs) and echo_client --processes --source-ips:
    /// held idle, then loaded. Changes sysctls (root) and restores them. Writes
    /// docs/results/c1m.* and docs/c10k.md's block.
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
    /// How long the C1M run holds the connections idle before loading them.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    c1m_hold: u64,
    /// The C1M load phase: after the hold, every connection runs echo_client's closed loop for
    /// this long. 0: no load, each connection is checked once after the hold.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    c1m_load: u64,
    /// The C1M server designs (lesson 11 `--processes --distribute D`), taking turns at each step.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "reuseport,acceptor",
        value_name = "D,D"
    )]
    c1m_designs: Vec<String>,
    /// Runs of every C1M design and step: the tables show the median round and the range.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    c1m_rounds: u32,
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
            ladder::rewrite_from(path, !args.no_write)
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
        let plan = c1m::Plan {
            steps: args.c1m_steps.clone(),
            designs: c1m::designs(&args.c1m_designs)?,
            hold_s: args.c1m_hold,
            load_s: args.c1m_load,
            rate: args.c1m_rate,
            rounds: args.c1m_rounds,
        };
        let md = c1m::run(&bins, &plan, &stamp, &out)?;
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
    let write = (args.write || mode == Mode::Full) && !args.no_write && mode != Mode::Smoke;
    let plan = ladder::Plan::new(mode, &args.scenario, !args.no_anchors, write)?;
    let command = command_line();
    ladder::run(
        &plan,
        &rungs,
        &bins,
        command.trim_end_matches(" --").to_string(),
    )?;
    eprintln!(
        "bench: done in {:.0} s, build included",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
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

/// How this run was started, for the stamp: `cargo run --release -p bench -- <its flags>`.
fn command_line() -> String {
    std::iter::once("cargo run --release -p bench --".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A JSON file of an earlier run; errors name the file.
pub fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
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
