//! The single-point scenarios, each a row per server: the ones the sweeps (sweeps.rs) do not
//! cover — connection churn (`Connection: close`), the echo protocol at 1,000 and 10,000
//! connections, CPU-bound echo — and the catalogue the speed targets (targets.rs) pick from.
//! `--smoke` proves the pipeline in seconds (CI).

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Smoke,
    Quick,
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http,
    Echo,
}

/// What the client does.
#[derive(Clone, Debug)]
pub enum Load {
    /// Closed-loop load: `conns` connections, each sending `messages` messages (or running for
    /// `duration`), waiting for each answer before the next.
    Closed {
        proto: Proto,
        conns: u32,
        messages: Option<u32>,
        duration: Option<Duration>,
        close: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: &'static str,
    pub title: String,
    pub load: Load,
    /// Extra server flags (`--work`, `--proto`).
    pub server_args: Vec<String>,
    /// Hard bound for the client run; past it the cell says "timed out".
    pub limit: Duration,
    /// Whether `wrk` runs beside echo_client (HTTP scenarios, full mode).
    pub with_wrk: bool,
    /// Whether nginx anchor rows run it (HTTP scenarios).
    pub anchors: bool,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn http(
    id: &'static str,
    title: String,
    conns: u32,
    close: bool,
    d: Duration,
    wrk: bool,
) -> Scenario {
    Scenario {
        id,
        title,
        load: Load::Closed {
            proto: Proto::Http,
            conns,
            messages: None,
            duration: Some(d),
            close,
        },
        server_args: vec![],
        limit: d + secs(30),
        with_wrk: wrk,
        anchors: true,
    }
}

fn echo(
    id: &'static str,
    title: String,
    conns: u32,
    messages: u32,
    work: u32,
    limit: u64,
) -> Scenario {
    let mut server_args = vec!["--proto".to_string(), "echo".to_string()];
    if work > 0 {
        server_args.extend(["--work".to_string(), work.to_string()]);
    }
    Scenario {
        id,
        title,
        load: Load::Closed {
            proto: Proto::Echo,
            conns,
            messages: Some(messages),
            duration: None,
            close: false,
        },
        server_args,
        limit: secs(limit),
        with_wrk: false,
        anchors: false,
    }
}

/// `--work` units for the "10,000 connections + CPU" scenario: a fraction of a millisecond of
/// CPU per message, like a handler that sums a hundred thousand integers (what one unit costs
/// on the machine of a run is on its CPU-work sweep page).
pub const CPU_WORK: u32 = 100;

/// The fixed, small workload behind the cost table: HTTP keep-alive, 10 connections × 2,000
/// requests. Small enough for every rung (simple_server serves the ten in turn), large enough
/// that start-up noise vanishes.
pub const COST_CONNS: u32 = 10;
pub const COST_REQUESTS: u32 = 2_000;

pub fn cost_load(mode: Mode) -> Load {
    let n = if mode == Mode::Smoke {
        100
    } else {
        COST_REQUESTS
    };
    Load::Closed {
        proto: Proto::Http,
        conns: COST_CONNS,
        messages: Some(n),
        duration: None,
        close: false,
    }
}

/// The single-point scenarios the ladder run measures beside the sweeps, in table order: none in
/// the quick run (the sweeps are its content), the ones no sweep covers in the full run.
pub fn ladder(mode: Mode) -> Vec<Scenario> {
    const FULL: &[&str] = &["http-close-10", "echo-1k", "echo-10k", "echo-10k-cpu"];
    match mode {
        // The sweeps cover HTTP; the echo protocol gets its one smoke row.
        Mode::Smoke => scenarios(Mode::Smoke)
            .into_iter()
            .filter(|s| s.id == "echo-2")
            .collect(),
        Mode::Quick => Vec::new(),
        // Three rounds of each: 5 s runs instead of the targets' 10 s.
        Mode::Full => scenarios(Mode::Full)
            .into_iter()
            .filter(|s| FULL.contains(&s.id))
            .map(|mut s| {
                let Load::Closed { duration, .. } = &mut s.load;
                if let Some(d) = duration {
                    *d = secs(5);
                    s.limit = secs(35);
                }
                s
            })
            .collect(),
    }
}

/// Every scenario of a mode, in table order (the targets pick theirs from the full list).
pub fn scenarios(mode: Mode) -> Vec<Scenario> {
    if mode == Mode::Smoke {
        let mut h = http(
            "http-ka-2",
            "HTTP keep-alive, 2 connections (smoke)".into(),
            2,
            false,
            secs(1),
            false,
        );
        h.anchors = false;
        return vec![
            h,
            echo(
                "echo-2",
                "echo, 2 connections × 100 messages (smoke)".into(),
                2,
                100,
                0,
                30,
            ),
        ];
    }
    let full = mode == Mode::Full;
    let d = if full { secs(10) } else { secs(3) };
    let mut v = vec![
        http(
            "http-ka-10",
            "HTTP keep-alive, 10 connections".into(),
            10,
            false,
            d,
            full,
        ),
        http(
            "http-close-10",
            "HTTP `Connection: close`, 10 connections".into(),
            10,
            true,
            d,
            full,
        ),
        http(
            "http-ka-100",
            "HTTP keep-alive, 100 connections".into(),
            100,
            false,
            d,
            full,
        ),
    ];
    if full {
        v.push(http(
            "http-ka-1000",
            "HTTP keep-alive, 1,000 connections".into(),
            1000,
            false,
            d,
            true,
        ));
    }
    v.push(echo(
        "echo-1k",
        "echo, 1,000 connections × 100 messages".into(),
        1000,
        100,
        0,
        120,
    ));
    // Issue 7's comparison with tokio: a few busy connections, many messages each.
    let n = if full { 5_000 } else { 1_000 };
    let title = format!(
        "echo, 100 connections × {} messages",
        crate::results::thousands(f64::from(n))
    );
    v.push(echo("echo-100", title, 100, n, 0, 120));
    if full {
        v.push(echo(
            "echo-10k",
            "echo, 10,000 connections × 100 messages".into(),
            10_000,
            100,
            0,
            300,
        ));
        v.push(echo(
            "echo-10k-cpu",
            format!("echo, 10,000 connections × 1 message, `--work {CPU_WORK}`"),
            10_000,
            1,
            CPU_WORK,
            300,
        ));
    } else {
        v.push(echo(
            "echo-1k-cpu",
            format!("echo, 1,000 connections × 1 message, `--work {CPU_WORK}`"),
            1000,
            1,
            CPU_WORK,
            120,
        ));
    }
    v
}
