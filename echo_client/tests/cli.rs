//! The command line, setup failures, the human report and the JSON schema.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;

use common::*;
use serde_json::Value;

#[test]
fn bad_flags_exit_2_with_clap_message() {
    for args in [
        &["--close"][..],
        &["-c", "0"],
        &["--frobnicate"],
        &["--proto", "http", "--size", "10"],
        &["-n", "5", "-d", "1s"],
        &["-d", "ten"],
        &["--source-ips", "127.0.0.9-127.0.0.2"],
        &["--addr", "[::1]:80", "--source-ips", "127.0.0.2"],
        &["--mix", "3:/work/5"], // --proto echo, the default
        &["--proto", "echo", "--mix", "3:/work/5"],
        &["--proto", "http", "--mix", "1:/work/5"],
        &["--proto", "http", "--mix", "3:work/5"],
        &["--proto", "http", "--mix", "3:/work 5"],
        &["--proto", "http", "--mix", "/work/5"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn version_and_help() {
    let r = run(&["--version"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.trim(),
        format!("echo_client {}", env!("CARGO_PKG_VERSION"))
    );
    let r = run(&["--help"]);
    assert_eq!(r.code, 0);
    for flag in [
        "--connections",
        "--rate",
        "--hold",
        "--processes",
        "--source-ips",
        "--json",
    ] {
        assert!(r.stdout.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn an_unreachable_server_is_one_line_and_exit_1() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let r = run(&["--addr", &addr, "-c", "3", "-d", "5s"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(&format!(
            "echo_client: cannot connect to {addr}: Connection refused"
        )),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}

/// More connections than one process may hold: one line before anything starts, naming
/// --processes.
#[test]
fn too_many_connections_for_one_process_suggest_processes() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|w| w.parse().ok())
        .unwrap_or(u64::MAX);
    if hard > 5_000_000 {
        eprintln!("skipped: RLIMIT_NOFILE's hard limit {hard} is beyond what -c accepts");
        return;
    }
    let c = (hard + 100).to_string();
    let r = run(&["--addr", "127.0.0.1:9", "-c", &c, "-n", "1"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("RLIMIT_NOFILE") && r.stderr.contains("--processes"),
        "{}",
        r.stderr
    );
}

#[test]
fn no_status_line_when_stdout_is_not_a_terminal() {
    let server = TestServer::start(|_, c| echo(c));
    let addr = server.addr.to_string();
    let r = run(&["--addr", &addr, "-c", "2", "-d", "2500ms"]);
    assert_eq!(r.code, 0);
    assert!(
        !r.stdout.contains('\r') && !r.stdout.contains('\x1b'),
        "{:?}",
        r.stdout
    );
    assert!(r.stdout.starts_with("echo_client "), "{}", r.stdout);
    for label in [
        "connect ",
        "transfer ",
        "latency µs ",
        "fairness ",
        "errors ",
        "client CPU ",
    ] {
        assert!(r.stdout.contains(label), "{label} missing:\n{}", r.stdout);
    }
}

/// The README documents every JSON field between two markers, one `path` per table row; the
/// output has exactly those fields — no undocumented one, none missing.
#[test]
fn json_fields_are_exactly_the_documented_ones() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (_, rest) = readme
        .split_once("<!-- json-fields:begin -->")
        .expect("begin marker");
    let (table, _) = rest
        .split_once("<!-- json-fields:end -->")
        .expect("end marker");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(path, _)| path.to_string())
        .collect();
    assert!(documented.len() > 50, "{documented:?}");
    // `mix.*` is there only with --mix.
    let without_mix: BTreeSet<String> = documented
        .iter()
        .filter(|p| !p.starts_with("mix."))
        .cloned()
        .collect();
    assert!(documented.len() > without_mix.len(), "mix.* documented");

    let server = TestServer::start(|_, c| echo(c));
    let http = TestServer::start(|_, c| http_with(c, contract_response, write_whole));
    for (at, extra) in [
        (server.addr, &[][..]),
        (
            server.addr,
            &[
                "--hold",
                "100ms",
                "--rate",
                "1000",
                "--source-ips",
                "127.0.0.1",
            ],
        ),
        (http.addr, &["--proto", "http", "--mix", "2:/work/5"]),
    ] {
        let mut args = vec!["-c", "2", "-n", "3"];
        args.extend_from_slice(extra);
        let (r, j) = run_json(at, &args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let mut found = BTreeSet::new();
        leaves(&j, String::new(), &mut found);
        let expected = if extra.contains(&"--mix") {
            &documented
        } else {
            &without_mix
        };
        assert_eq!(&found, expected, "output fields (left) vs README (right)");
        assert_eq!(j["schema"], 1);
        assert_eq!(j["tool"], "echo_client");
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            j["command"][0].as_str().map(|s| s.ends_with("echo_client")),
            Some(true)
        );
        assert!(
            j["command"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--json")
        );
        let started = j["started_at"].as_str().unwrap();
        assert!(started.len() == 20 && started.ends_with('Z'), "{started}");
        // The transfer phase on the wall clock: it began within this test's minute, ended no
        // later than now, and spans `duration_s`.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap() // the clock is past 1970
            .as_secs_f64();
        let t = &j["transfer"];
        let (from, to) = (t["started_unix_s"].as_f64(), t["ended_unix_s"].as_f64());
        let (from, to) = (from.unwrap(), to.unwrap()); // documented floats, checked above
        assert!(
            now - 60.0 < from && from <= to && to <= now,
            "{from} {to} {now}"
        );
        let span = t["duration_s"].as_f64().unwrap();
        assert!(((to - from) - span).abs() < 1e-3, "{from} {to} {span}");
    }
}

/// Dotted paths of every leaf; arrays are leaves.
fn leaves(v: &Value, path: String, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// SIGINT stops the run at once: the partial report is printed, marked interrupted, exit 130 —
/// also with forked client processes, which only the parent's signal reaches here.
#[test]
fn sigint_stops_the_run_and_prints_a_partial_report() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Kills the child if the test fails before it exits.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let server = TestServer::start(|_, c| echo(c));
    let addr = server.addr.to_string();
    for procs in ["1", "2"] {
        let child = Command::new(BIN)
            .args([
                "--addr",
                &addr,
                "-c",
                "4",
                "-d",
                "60s",
                "--json",
                "--processes",
                procs,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("echo_client starts");
        let mut child = Reap(child);
        std::thread::sleep(Duration::from_millis(700));
        // SAFETY: kill(2) on our own child's pid; it reads no memory of ours.
        assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) }, 0);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.0.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                start.elapsed() < conformance::server::STEP,
                "did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.0.stdout.take().expect("piped"), &mut out)
            .expect("read stdout");
        assert_eq!(status.code(), Some(130), "--processes {procs}: {out}");
        let j: serde_json::Value = serde_json::from_str(&out).expect("a JSON report");
        assert_eq!(j["interrupted"], true);
        assert_eq!(j["ok"], false);
        assert!(num(&j, "/transfer/completed") > 0, "{out}");
        assert!(float(&j, "/transfer/duration_s") < 60.0);
    }
}
