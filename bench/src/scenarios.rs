//! The single-point scenarios, each a row per server: the ones the sweeps (sweeps.rs) do not
//! cover — connection churn (`Connection: close`), the echo protocol at 1,000 and 10,000
//! connections, CPU-bound echo, a mixed workload (head-of-line blocking), one event loop of
//! lesson 11 stalled (how each way of distributing connections copes) — and the catalogue the
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
    /// The stalled-loop scenario: a staller keeps one loop busy while the load runs, once per
    /// `--distribute` mode (run.rs `stalled`).
    pub stall: Option<Stall>,
    /// Run only when named by `--scenario`, not by default in this mode.
    pub on_request: bool,
}

/// One loop made slow for the whole measurement (`stalled`): a staller — one keep-alive
/// connection sending `GET path` back to back, one request at a time — keeps the loop that
/// took its connection busy, while the scenario's load opens a new connection per request at
/// `rate` per second (open loop). Run once per mode of `distribute` (the loops: the scenario's
/// `--workers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The staller's target, `/work/N`: about [`STALL_MS`] of CPU per request.
    pub path: String,
    /// Requests per second offered by the measuring client (echo_client `--rate`).
    pub rate: u64,
    /// The `--distribute` modes, in table order.
    pub distribute: &'static [&'static str],
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
        stall: None,
        on_request: false,
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
        stall: None,
        on_request: false,
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
    units_for(MIXED_EXPENSIVE_US, unit_us, MIXED_UNITS_DEFAULT)
}

/// `--work` units costing about `target_us` of CPU at `unit_us` µs per unit, two significant
/// figures, within the contract's 1 to 1,000,000 (§5); `default` without a plausible unit.
fn units_for(target_us: f64, unit_us: Option<f64>, default: u32) -> u32 {
    let Some(u) = unit_us.filter(|u| u.is_finite() && *u > 0.0) else {
        return default;
    };
    let n = target_us / u;
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
        stall: None,
        on_request: false,
    }
}

/// Whether scenario `id` sends a mix of cheap and expensive requests.
pub fn has_mix(id: &str) -> bool {
    scenarios(Mode::Full)
        .iter()
        .any(|s| s.id == id && matches!(&s.load, Load::Closed { mix: Some(_), .. }))
}

/// The stalled-loop scenario (`stalled`): lesson 11 only, with these loops.
pub const STALL_RUNGS: &[&str] = &["multi_epoll_server"];
pub const STALL_WORKERS: u32 = 2;
/// What one staller request should cost: long enough that a connection queued behind it waits
/// visibly (a p99 of ~this), short enough that the loop comes back to `epoll_wait` many times
/// a run — each time it may take new connections, which is what the modes differ in.
pub const STALL_MS: f64 = 150.0;
/// `--work` units of a staller request when the unit was not measured (≈ 2 µs each).
pub const STALL_UNITS_DEFAULT: u32 = 75_000;
/// The measuring client: a new connection per request (`--close`: the modes differ in who
/// takes a *new* connection), `STALL_RATE` requests per second in all, over `STALL_CONNS`
/// slots. Each slot sends every `STALL_CONNS / STALL_RATE` s = 400 ms, more than a stall: a
/// request delayed by one does not make its slot's next one late too (the open loop would
/// charge that to the next request as well).
pub const STALL_RATE: u64 = 1_000;
pub const STALL_CONNS: u32 = 400;
/// The modes of `--distribute` (docs/contract.md §1), in table order.
pub const STALL_MODES: &[&str] = &["reuseport", "exclusive", "acceptor"];

/// The staller's `--work` units: about [`STALL_MS`] of CPU at `unit_us` µs per unit.
pub fn stall_units(unit_us: Option<f64>) -> u32 {
    units_for(STALL_MS * 1000.0, unit_us, STALL_UNITS_DEFAULT)
}

/// One loop of lesson 11 stalled: `--workers 2`, HTTP; a staller keeps one loop in requests of
/// ~150 ms of CPU, back to back, while echo_client opens a new connection per request at 1,000
/// per second for `d` — once per `--distribute` mode. Where the new connections go is the
/// question: to the stalled loop, they wait for it.
fn stalled(d: Duration) -> Scenario {
    Scenario {
        id: "stalled",
        title: format!(
            "One loop stalled: lesson 11 with {STALL_WORKERS} loops, one kept busy by \
             ~{STALL_MS:.0} ms requests, a new connection per request at {} req/s",
            crate::results::thousands(STALL_RATE as f64)
        ),
        load: Load::Closed {
            proto: Proto::Http,
            conns: STALL_CONNS,
            messages: None,
            duration: Some(d),
            close: true,
            mix: None,
        },
        server_args: vec!["--workers".into(), STALL_WORKERS.to_string()],
        limit: d + secs(30),
        // wrk has no open loop with a new connection per request; nginx has no /work/N.
        with_wrk: false,
        anchors: false,
        only: Some(STALL_RUNGS),
        pool_workers: None,
        stall: Some(Stall {
            path: mixed_path(STALL_UNITS_DEFAULT),
            rate: STALL_RATE,
            distribute: STALL_MODES,
        }),
        on_request: false,
    }
}

/// Whether scenario `id` is the stalled-loop kind (a row per `--distribute` mode).
pub fn has_stall(id: &str) -> bool {
    scenarios(Mode::Full)
        .iter()
        .any(|s| s.id == id && s.stall.is_some())
}

/// The scenarios with their expensive requests (and the staller's) sized to the measured
/// `--work` unit.
pub fn with_work_unit(scenarios: &[Scenario], unit_us: Option<f64>) -> Vec<Scenario> {
    let path = mixed_path(mixed_units(unit_us));
    let stall_path = mixed_path(stall_units(unit_us));
    scenarios
        .iter()
        .cloned()
        .map(|mut s| {
            let Load::Closed { mix, .. } = &mut s.load;
            if let Some(m) = mix.as_mut().filter(|_| s.id == "mixed") {
                m.path = path.clone();
            }
            if let Some(st) = s.stall.as_mut() {
                st.path = stall_path.clone();
            }
            s
        })
        .collect()
}

/// The single-point scenarios the ladder run measures beside the sweeps, in table order: in the
/// quick run the mixed workload, 3 s per rung (the sweeps are its content), and the stalled
/// loop on request (`--scenario stalled`: 30 s more); the ones no sweep covers in the full run.
pub fn ladder(mode: Mode) -> Vec<Scenario> {
    const FULL: &[&str] = &[
        "http-close-10",
        "echo-1k",
        "echo-10k",
        "echo-10k-cpu",
        "mixed",
        "stalled",
    ];
    match mode {
        // The sweeps cover HTTP; the echo protocol gets its one smoke row.
        Mode::Smoke => scenarios(Mode::Smoke)
            .into_iter()
            .filter(|s| s.id == "echo-2")
            .collect(),
        Mode::Quick => scenarios(Mode::Quick)
            .into_iter()
            .filter(|s| s.id == "mixed" || s.id == "stalled")
            .map(|mut s| {
                s.on_request = s.stall.is_some();
                s
            })
            .collect(),
        // Three rounds of each: 5 s runs instead of the targets' 10 s — but the stalled loop's
        // 10 s, so that its p99 rests on 10,000 requests per mode.
        Mode::Full => scenarios(Mode::Full)
            .into_iter()
            .filter(|s| FULL.contains(&s.id))
            .map(|mut s| {
                let Load::Closed { duration, .. } = &mut s.load;
                if let Some(d) = duration.as_mut().filter(|_| s.stall.is_none()) {
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
    // 10 s in every mode: the quick run takes it on request only.
    v.push(stalled(secs(10)));
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
        assert!(
            ladder(Mode::Quick)
                .iter()
                .filter(|s| !s.on_request)
                .all(|s| s.id == "mixed")
        );
        assert!(has_mix("mixed") && !has_mix("echo-1k"));
        assert!(ladder(Mode::Smoke).iter().all(|s| s.id != "mixed"));
    }

    #[test]
    fn the_stalled_loop_runs_lesson_11_in_each_mode_on_request_in_the_quick_run() {
        assert_eq!(stall_units(None), STALL_UNITS_DEFAULT);
        assert_eq!(stall_units(Some(2.0)), 75_000);
        assert_eq!(stall_units(Some(1.99)), 75_000);
        assert_eq!(stall_units(Some(3.0)), 50_000);
        assert_eq!(stall_units(Some(0.1)), 1_000_000); // the contract's limit
        let full = ladder(Mode::Full);
        let s = full.iter().find(|s| s.id == "stalled").expect("in full");
        assert!(has_stall("stalled") && !has_stall("mixed") && !has_mix("stalled"));
        assert!(s.runs("multi_epoll_server") && !s.runs("epoll_et_server"));
        assert!(!s.anchors && !s.with_wrk && !s.on_request);
        let st = s.stall.as_ref().expect("stall");
        assert_eq!(st.distribute, ["reuseport", "exclusive", "acceptor"]);
        assert_eq!(s.server_args_for("multi_epoll_server"), ["--workers", "2"]);
        // Its own 10 s, not the full run's 5 s of the other scenarios.
        let Load::Closed {
            duration, close, ..
        } = &s.load;
        assert_eq!((*duration, *close), (Some(secs(10)), true));
        assert_eq!(
            full.iter().find(|s| s.id == "mixed").map(|s| s.limit),
            Some(secs(35))
        );
        // Slots send less often than a stall lasts: a late request does not delay the next.
        assert!(STALL_CONNS as f64 / STALL_RATE as f64 * 1000.0 > 2.0 * STALL_MS);
        let sized = with_work_unit(&full, Some(3.0));
        let st = sized.iter().find(|s| s.id == "stalled").unwrap();
        assert_eq!(st.stall.as_ref().unwrap().path, "/work/50000");
        let quick = ladder(Mode::Quick);
        let q = quick.iter().find(|s| s.id == "stalled").expect("in quick");
        assert!(q.on_request);
        assert!(ladder(Mode::Smoke).iter().all(|s| s.stall.is_none()));
    }
}
