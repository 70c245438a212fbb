//! The single-point scenarios, each a row per server: the ones the sweeps (sweeps.rs) do not
//! cover — connection churn (`Connection: close`), the echo protocol at 1,000 and 10,000
//! connections, CPU-bound echo, a mixed workload (head-of-line blocking) — and the catalogue the
//! speed targets (targets.rs) pick from. `--smoke` proves the pipeline in seconds (CI).

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

/// echo_client `--mix EVERY:PATH` (HTTP only): every `every`-th request of each connection is
/// `GET path`, and its latency is reported apart from the others'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    pub every: u32,
    pub path: String,
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
        mix: Option<Mix>,
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
    /// Only these rungs run it (crate names; a rung not in the build is skipped); `None`: all.
    pub only: Option<&'static [&'static str]>,
    /// `--workers N` for a pool rung (a fixed pool of workers), so that every connection has one.
    pub pool_workers: Option<u32>,
}

impl Scenario {
    /// Whether rung (or anchor) `name` runs this scenario.
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_none_or(|o| o.contains(&name))
    }

    /// The server flags for rung `name`: the scenario's, a variant's own ([`variant`]), and
    /// `--workers` for a pool.
    pub fn server_args_for(&self, name: &str) -> Vec<String> {
        let (krate, flags) = variant(name);
        let mut a = self.server_args.clone();
        a.extend(flags.split_whitespace().map(String::from));
        if let Some(n) = self.pool_workers.filter(|_| crate::sweeps::is_pool(krate)) {
            a.extend(["--workers".to_string(), n.to_string()]);
        }
        a
    }
}

/// A row's name is a crate, or a crate and flags (`epoll_pool_server --all-to-pool`): a
/// variant of that rung, which a scenario names in its `only` list; it then runs beside the
/// rung, with those flags added, there and in every scenario open to all. Returns the crate and
/// the flags ("" for the rung itself).
pub fn variant(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or((name, ""))
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
            mix: None,
        },
        server_args: vec![],
        limit: d + secs(30),
        with_wrk: wrk,
        anchors: true,
        only: None,
        pool_workers: None,
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
            mix: None,
        },
        server_args,
        limit: secs(limit),
        with_wrk: false,
        anchors: false,
        only: None,
        pool_workers: None,
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
        mix: None,
    }
}

/// The mixed workload (`mixed`): the rungs it compares, in any order (the tables follow the
/// ladder's). A rung not in the build — not yet in conformance's list, or not done — is skipped,
/// so a new one is one more name here.
pub const MIXED_RUNGS: &[&str] = &[
    "epoll_et_server",
    // The reactor with a pool (lesson 14), as it ships and as the Go benchmark's worker pool.
    "epoll_pool_server",
    "epoll_pool_server --all-to-pool",
    "multi_epoll_server",
    "threadpool_accept_main",
    "tokio_server",
];

/// One request in `MIXED_EVERY` of each connection is expensive.
pub const MIXED_EVERY: u32 = 10;
pub const MIXED_CONNS: u32 = 100;
/// What an expensive request should cost: about a millisecond of server CPU.
pub const MIXED_EXPENSIVE_US: f64 = 1000.0;
/// `--work` units of an expensive request when the unit was not measured: 500 units ≈ 1 ms at
/// the ≈ 2 µs per unit of the course's machine.
pub const MIXED_UNITS_DEFAULT: u32 = 500;

/// The expensive requests' `--work` units: about [`MIXED_EXPENSIVE_US`] of CPU at `unit_us` µs
/// per unit (bench measures it at the start of a run), two significant figures; the default
/// without a plausible measurement.
pub fn mixed_units(unit_us: Option<f64>) -> u32 {
    let Some(u) = unit_us.filter(|u| u.is_finite() && *u > 0.0) else {
        return MIXED_UNITS_DEFAULT;
    };
    let n = MIXED_EXPENSIVE_US / u;
    let scale = 10f64.powi((n.log10().floor() as i32 - 1).max(0));
    ((n / scale).round() * scale).clamp(1.0, 1_000_000.0) as u32
}

/// The expensive requests' target for `units` units of work (docs/contract.md §5).
pub fn mixed_path(units: u32) -> String {
    format!("/work/{units}")
}

/// The mixed workload: HTTP keep-alive, 100 connections in a closed loop, every 10th request of
/// each `GET /work/N` (about 1 ms of CPU; [`with_work_unit`] sets N from the run's measured
/// unit), the others `GET /` (no work). Head-of-line blocking made measurable: a cheap request
/// that lands behind an expensive one on the same event loop waits for it.
fn mixed(d: Duration) -> Scenario {
    Scenario {
        id: "mixed",
        title: format!(
            "Mixed workload: HTTP keep-alive, {MIXED_CONNS} connections, 1 request in \
             {MIXED_EVERY} costs ~1 ms of CPU"
        ),
        load: Load::Closed {
            proto: Proto::Http,
            conns: MIXED_CONNS,
            messages: None,
            duration: Some(d),
            close: false,
            mix: Some(Mix {
                every: MIXED_EVERY,
                path: mixed_path(MIXED_UNITS_DEFAULT),
            }),
        },
        server_args: vec![],
        limit: d + secs(30),
        // wrk cannot send a mix; nginx does not know `/work/N`.
        with_wrk: false,
        anchors: false,
        only: Some(MIXED_RUNGS),
        // As the offered-load sweep does: a pool as large as the connections.
        pool_workers: Some(MIXED_CONNS),
    }
}

/// Whether scenario `id` sends a mix of cheap and expensive requests.
pub fn has_mix(id: &str) -> bool {
    scenarios(Mode::Full)
        .iter()
        .any(|s| s.id == id && matches!(&s.load, Load::Closed { mix: Some(_), .. }))
}

/// The scenarios with their expensive requests sized to the measured `--work` unit.
pub fn with_work_unit(scenarios: &[Scenario], unit_us: Option<f64>) -> Vec<Scenario> {
    let path = mixed_path(mixed_units(unit_us));
    scenarios
        .iter()
        .cloned()
        .map(|mut s| {
            let Load::Closed { mix, .. } = &mut s.load;
            if let Some(m) = mix.as_mut().filter(|_| s.id == "mixed") {
                m.path = path.clone();
            }
            s
        })
        .collect()
}

/// The single-point scenarios the ladder run measures beside the sweeps, in table order: in the
/// quick run only the mixed workload, 3 s per rung (the sweeps are its content), the ones no
/// sweep covers in the full run.
pub fn ladder(mode: Mode) -> Vec<Scenario> {
    const FULL: &[&str] = &[
        "http-close-10",
        "echo-1k",
        "echo-10k",
        "echo-10k-cpu",
        "mixed",
    ];
    match mode {
        // The sweeps cover HTTP; the echo protocol gets its one smoke row.
        Mode::Smoke => scenarios(Mode::Smoke)
            .into_iter()
            .filter(|s| s.id == "echo-2")
            .collect(),
        Mode::Quick => scenarios(Mode::Quick)
            .into_iter()
            .filter(|s| s.id == "mixed")
            .collect(),
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
    v.push(mixed(d));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expensive_request_costs_about_a_millisecond() {
        assert_eq!(mixed_units(None), MIXED_UNITS_DEFAULT);
        assert_eq!(mixed_units(Some(0.0)), MIXED_UNITS_DEFAULT);
        assert_eq!(mixed_units(Some(f64::NAN)), MIXED_UNITS_DEFAULT);
        assert_eq!(mixed_units(Some(2.0)), 500);
        assert_eq!(mixed_units(Some(2.13)), 470);
        assert_eq!(mixed_units(Some(0.05)), 20_000);
        assert_eq!(mixed_units(Some(5000.0)), 1);
    }

    #[test]
    fn the_mixed_scenario_runs_its_rungs_with_pools_sized_to_the_connections() {
        let full = ladder(Mode::Full);
        let m = full
            .iter()
            .find(|s| s.id == "mixed")
            .expect("mixed in full");
        assert!(!m.anchors && !m.with_wrk);
        assert!(m.runs("epoll_et_server") && m.runs("epoll_pool_server"));
        assert!(!m.runs("simple_server") && !m.runs("nginx (1 worker)"));
        let Load::Closed { duration, mix, .. } = &m.load;
        assert_eq!(*duration, Some(secs(5)));
        assert_eq!(mix.as_ref().map(|m| m.every), Some(MIXED_EVERY));
        assert_eq!(
            m.server_args_for("threadpool_accept_main"),
            ["--workers", "100"]
        );
        assert!(m.server_args_for("epoll_et_server").is_empty());
        // A variant row: its rung's binary with its own flags.
        assert!(m.runs("epoll_pool_server --all-to-pool"));
        assert_eq!(
            m.server_args_for("epoll_pool_server --all-to-pool"),
            ["--all-to-pool"]
        );
        assert_eq!(variant("a_server --x 1"), ("a_server", "--x 1"));
        assert_eq!(variant("a_server"), ("a_server", ""));
        let sized = with_work_unit(&full, Some(4.0));
        let Load::Closed { mix, .. } = &sized.iter().find(|s| s.id == "mixed").unwrap().load;
        assert_eq!(mix.as_ref().unwrap().path, "/work/250");
        assert!(ladder(Mode::Quick).iter().all(|s| s.id == "mixed"));
        assert!(has_mix("mixed") && !has_mix("echo-1k"));
        assert!(ladder(Mode::Smoke).iter().all(|s| s.id != "mixed"));
    }
}
