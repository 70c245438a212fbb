//! The clients: `echo_client --json` (every scenario) and `wrk` (beside it on HTTP scenarios).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::procs;
use crate::scenarios::{Load, Mix, Proto};

/// What a client run produced, whatever the client.
#[derive(Clone, Debug, Default)]
pub struct ClientOutcome {
    pub rate: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    pub errors: u64,
    /// Errors in words, the largest kinds first: "refused 9,012, reset 3".
    pub error_text: String,
    pub served_conns: Option<(u64, u64)>,
    pub completed: Option<u64>,
    pub client_cpu_s: Option<f64>,
    pub timed_out: bool,
    /// The client could not run or its output could not be read.
    pub failure: Option<String>,
    pub json: Option<Value>,
    /// A `--mix` run: the cheap and the expensive requests' latency apart.
    pub mix: Option<MixOutcome>,
}

/// One kind of request's latency in a `--mix` run (echo_client's `mix.cheap`, `mix.expensive`;
/// µs, measured as `latency_us`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindLatency {
    /// Requests of this kind completed.
    pub count: Option<u64>,
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p99_9_us: Option<f64>,
    pub max_us: Option<f64>,
}

/// echo_client's `mix` object: which requests were expensive, and each kind's latency.
#[derive(Clone, Debug, PartialEq)]
pub struct MixOutcome {
    pub mix: Mix,
    pub cheap: KindLatency,
    pub expensive: KindLatency,
}

fn kind_latency(v: &Value) -> KindLatency {
    KindLatency {
        count: v.get("count").and_then(Value::as_u64),
        p50_us: num(v, "/p50"),
        p90_us: num(v, "/p90"),
        p99_us: num(v, "/p99"),
        p99_9_us: num(v, "/p99_9"),
        max_us: num(v, "/max"),
    }
}

/// The `mix` object of echo_client's JSON, absent without `--mix`.
fn parse_mix(v: &Value) -> Option<MixOutcome> {
    let m = v.get("mix").filter(|m| m.is_object())?;
    Some(MixOutcome {
        mix: Mix {
            every: m.get("every").and_then(Value::as_u64)? as u32,
            path: m.get("path").and_then(Value::as_str)?.to_string(),
        },
        cheap: m.get("cheap").map(kind_latency).unwrap_or_default(),
        expensive: m.get("expensive").map(kind_latency).unwrap_or_default(),
    })
}

/// echo_client's flags for a load (see echo_client/README.md).
pub fn echo_client_args(addr: SocketAddr, load: &Load) -> Vec<String> {
    let mut a = vec![
        "--addr".into(),
        addr.to_string(),
        "--json".into(),
        "--allow-errors".into(),
    ];
    match load {
        Load::Closed {
            proto,
            conns,
            messages,
            duration,
            close,
            mix,
        } => {
            let proto = if *proto == Proto::Http {
                "http"
            } else {
                "echo"
            };
            a.extend([
                "--proto".into(),
                proto.into(),
                "-c".into(),
                conns.to_string(),
            ]);
            if let Some(n) = messages {
                a.extend(["-n".into(), n.to_string()]);
            }
            if let Some(d) = duration {
                a.extend(["-d".into(), format!("{}ms", d.as_millis())]);
            }
            if *close {
                a.push("--close".into());
            }
            if let Some(m) = mix {
                a.extend(["--mix".into(), format!("{}:{}", m.every, m.path)]);
            }
        }
    }
    a
}

fn num(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

/// Reads echo_client's `--json` object (schema 1, the field table in echo_client/README.md).
pub fn parse_echo_client(v: &Value) -> ClientOutcome {
    let mut kinds: Vec<(String, u64)> = v
        .pointer("/errors")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != "total")
                .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let error_text = kinds
        .iter()
        .map(|(k, n)| {
            format!(
                "{} {}",
                k.replace('_', " "),
                crate::results::thousands(*n as f64)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let slots = num(v, "/fairness/connections");
    let none = num(v, "/fairness/completed_none");
    ClientOutcome {
        rate: num(v, "/transfer/per_s"),
        p50_us: num(v, "/latency_us/p50"),
        p99_us: num(v, "/latency_us/p99"),
        max_us: num(v, "/latency_us/max"),
        errors: num(v, "/errors/total")
            .map_or_else(|| kinds.iter().map(|k| k.1).sum(), |n| n as u64),
        error_text,
        served_conns: slots.zip(none).map(|(c, z)| ((c - z) as u64, c as u64)),
        completed: num(v, "/transfer/completed").map(|n| n as u64),
        client_cpu_s: num(v, "/cpu/total_s"),
        timed_out: false,
        failure: v
            .pointer("/interrupted")
            .and_then(Value::as_bool)
            .filter(|&i| i)
            .map(|_| "client interrupted".into()),
        json: Some(v.clone()),
        mix: parse_mix(v),
    }
}

/// Runs echo_client against `addr` with a hard time bound.
pub fn echo_client(bin: &Path, addr: SocketAddr, load: &Load, limit: Duration) -> ClientOutcome {
    echo_client_with(bin, addr, load, limit, &[])
}

/// As `echo_client`, with extra flags (e.g. `--threads 1`) after the load's own.
pub fn echo_client_with(
    bin: &Path,
    addr: SocketAddr,
    load: &Load,
    limit: Duration,
    extra: &[&str],
) -> ClientOutcome {
    let mut args = echo_client_args(addr, load);
    args.extend(extra.iter().map(|s| s.to_string()));
    let finished = match procs::run_bounded(Command::new(bin).args(&args), limit) {
        Ok(f) => f,
        Err(e) => {
            return ClientOutcome {
                failure: Some(format!("cannot run echo_client: {e}")),
                ..Default::default()
            };
        }
    };
    if finished.timed_out {
        return ClientOutcome {
            timed_out: true,
            ..Default::default()
        };
    }
    match serde_json::from_str::<Value>(finished.stdout.trim()) {
        Ok(v) => parse_echo_client(&v),
        Err(_) => ClientOutcome {
            failure: Some(format!(
                "echo_client: {}",
                finished.stderr.lines().last().unwrap_or("no output")
            )),
            ..Default::default()
        },
    }
}

pub fn wrk_installed() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// Runs wrk with the same connections and duration (HTTP, duration-bound loads only).
pub fn wrk(addr: SocketAddr, load: &Load, limit: Duration) -> Option<ClientOutcome> {
    let Load::Closed {
        proto,
        conns,
        duration,
        close,
        ..
    } = load;
    let (Proto::Http, Some(d)) = (proto, duration) else {
        return None;
    };
    let threads = (*conns).clamp(1, 2);
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{}s", d.as_secs()),
        "--latency",
    ]);
    if *close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/"));
    let f = procs::run_bounded(&mut cmd, limit).ok()?;
    Some(ClientOutcome {
        client_cpu_s: f.cpu_s,
        ..parse_wrk(&f.stdout)
    })
}

/// "1.23ms" → 1230 µs.
fn wrk_duration_us(s: &str) -> Option<f64> {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        _ => return None,
    })
}

pub fn parse_wrk(out: &str) -> ClientOutcome {
    let mut c = ClientOutcome::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", r] => c.rate = r.parse().ok(),
            ["50%", t] => c.p50_us = wrk_duration_us(t),
            ["99%", t] => c.p99_us = wrk_duration_us(t),
            ["Latency", _avg, _stdev, max, ..] => c.max_us = wrk_duration_us(max),
            [n, "requests", "in", ..] => c.completed = n.parse().ok(),
            ["Socket", "errors:", rest @ ..] => {
                let nums: Vec<u64> = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse().ok())
                    .collect();
                c.errors += nums.iter().sum::<u64>();
                c.error_text = rest.join(" ");
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => c.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `echo_client --proto http -c 4 -d 1000ms --mix 10:/work/500 --json` against
    /// `echo_client/examples/echo_server.rs --http` (which ignores `/work/N`: both kinds cost the
    /// same there).
    const MIX_JSON: &str = include_str!("../fixtures/echo_client_mix.json");

    #[test]
    fn parses_the_mix_of_echo_client_json() {
        let v: Value = serde_json::from_str(MIX_JSON).expect("fixture is JSON");
        let c = parse_echo_client(&v);
        assert_eq!(c.rate, Some(73973.0));
        assert_eq!(c.errors, 0);
        let m = c.mix.expect("a --mix run has a mix");
        assert_eq!(
            m.mix,
            Mix {
                every: 10,
                path: "/work/500".into()
            }
        );
        assert_eq!(
            m.cheap,
            KindLatency {
                count: Some(66579),
                p50_us: Some(53.407),
                p90_us: Some(54.495),
                p99_us: Some(76.479),
                p99_9_us: Some(117.759),
                max_us: Some(1272.831),
            }
        );
        assert_eq!(m.expensive.count, Some(7394));
        assert_eq!(
            (m.expensive.p50_us, m.expensive.p99_us),
            (Some(53.471), Some(80.255))
        );
        // The kinds add up to every completed request.
        assert_eq!(
            m.cheap.count.zip(m.expensive.count).map(|(a, b)| a + b),
            c.completed
        );
        // Without --mix there is no mix object, and no mix.
        let mut plain = v.clone();
        plain.as_object_mut().expect("object").remove("mix");
        assert_eq!(parse_echo_client(&plain).mix, None);
    }

    #[test]
    fn a_mixed_load_passes_its_mix_to_echo_client() {
        let load = Load::Closed {
            proto: Proto::Http,
            conns: 100,
            messages: None,
            duration: Some(Duration::from_secs(5)),
            close: false,
            mix: Some(Mix {
                every: 10,
                path: "/work/500".into(),
            }),
        };
        let a = echo_client_args("127.0.0.1:1".parse().expect("addr"), &load);
        let i = a.iter().position(|x| x == "--mix").expect("--mix");
        assert_eq!(a[i + 1], "10:/work/500");
    }

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:18080/\n  2 threads and 10 connections\n\
  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   146.02us  113.80us   5.82ms   92.70%\n\
    Req/Sec     6.76k     1.63k    9.03k    70.59%\n  Latency Distribution\n     50%  130.00us\n     75%  150.00us\n\
     90%  200.00us\n     99%    1.20ms\n  34324 requests in 5.10s, 2.59MB read\n  Socket errors: connect 0, read 2, write 0, timeout 9\n\
Requests/sec:   6729.85\nTransfer/sec:    519.20KB\n";
        let c = parse_wrk(out);
        assert_eq!(c.rate, Some(6729.85));
        assert_eq!(c.p50_us, Some(130.0));
        assert_eq!(c.p99_us, Some(1200.0));
        assert_eq!(c.max_us, Some(5820.0));
        assert_eq!(c.completed, Some(34324));
        assert_eq!(c.errors, 11);
    }
}
