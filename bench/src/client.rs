//! The clients: `echo_client --json` (every scenario), `wrk` (beside it on HTTP scenarios), and
//! the stalled-loop scenario's staller ([`Staller`]), which keeps one event loop busy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The staller of the stalled-loop scenario: one keep-alive HTTP connection that sends
/// `GET /work/N` (docs/contract.md §5), waits for the answer, and sends the next at once, until
/// stopped — so the loop that took the connection spends the run inside those requests, and
/// comes back to `epoll_wait` only between two of them. One request at a time, never
/// pipelined: a loop answers up to 16 pipelined requests per call (§5), which would hold it
/// much longer than one request between two looks at its other connections.
///
/// A thread of the harness rather than an echo_client: echo_client's `--mix` makes at most
/// every other request expensive, and the harness must know the staller holds its loop before
/// the measured load starts.
pub struct Staller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<StallerReport>,
}

/// What the staller saw: how long each of its requests took (wall clock, ms), and the error
/// that ended it early, if one did.
#[derive(Debug, Default)]
pub struct StallerReport {
    pub request_ms: Vec<f64>,
    pub error: Option<String>,
}

impl StallerReport {
    /// The median request, ms: the length of one stall as it happened (CPU work plus any wait
    /// for a core).
    pub fn median_ms(&self) -> Option<f64> {
        crate::spread::Spread::of(self.request_ms.iter().copied()).map(|s| s.median)
    }
}

impl Staller {
    /// Connects to `addr`, has one `GET path` answered — the connection is then on a loop for
    /// good — and sends the second before it returns: when it returns, that loop is busy.
    /// Each read waits at most `timeout`.
    pub fn start(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Staller, String> {
        let fail = |what: &str, e: std::io::Error| format!("staller: {what}: {e}");
        let mut conn =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail("connect", e))?;
        conn.set_nodelay(true).map_err(|e| fail("TCP_NODELAY", e))?;
        conn.set_read_timeout(Some(timeout))
            .map_err(|e| fail("SO_RCVTIMEO", e))?;
        conn.set_write_timeout(Some(timeout))
            .map_err(|e| fail("SO_SNDTIMEO", e))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes();
        let mut buf = Vec::new();
        conn.write_all(&request)
            .and_then(|()| read_response(&mut conn, &mut buf))
            .map_err(|e| fail("first request", e))?;
        let mut sent = Instant::now();
        conn.write_all(&request)
            .map_err(|e| fail("second request", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut report = StallerReport::default();
            loop {
                if let Err(e) = read_response(&mut conn, &mut buf) {
                    report.error = Some(format!("staller: {e}"));
                    return report;
                }
                report
                    .request_ms
                    .push(sent.elapsed().as_secs_f64() * 1000.0);
                if stopped.load(Ordering::Relaxed) {
                    return report; // the connection closes as it drops
                }
                sent = Instant::now();
                if let Err(e) = conn.write_all(&request) {
                    report.error = Some(format!("staller: {e}"));
                    return report;
                }
            }
        });
        Ok(Staller { stop, thread })
    }

    /// Stops after the request in flight is answered (one stall at most, or the read timeout).
    pub fn stop(self) -> StallerReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| StallerReport {
            error: Some("staller: its thread panicked".into()),
            ..StallerReport::default()
        })
    }
}

/// Reads one whole `200 OK` response with a `Content-Length` body (the contract's, §5) from
/// `conn`; `buf` carries bytes read past it (none: one request at a time) to the next call.
fn read_response(conn: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(len) = response_len(buf)? {
            buf.drain(..len);
            return Ok(());
        }
        match conn.read(&mut chunk)? {
            0 => return Err(Error::new(ErrorKind::UnexpectedEof, "the server closed")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the response at the start of `buf` once it is all there; an error if it is
/// not a `200` or has no `Content-Length`.
fn response_len(buf: &[u8]) -> std::io::Result<Option<usize>> {
    use std::io::{Error, ErrorKind};
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("{what}: {head:?}"));
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(bad("not a 200 response"));
    }
    let body: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| bad("no Content-Length"))?;
    let len = end + 4 + body;
    Ok((buf.len() >= len).then_some(len))
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

    #[test]
    fn the_staller_reads_whole_responses_however_they_are_split() {
        let one = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
        assert_eq!(response_len(one.as_bytes()).expect("ok"), Some(one.len()));
        assert_eq!(
            response_len(&one.as_bytes()[..one.len() - 1]).expect("ok"),
            None
        );
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n").expect("ok"), None);
        assert!(response_len(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(response_len(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        // Two responses, fed a byte at a time: each read returns exactly one.
        struct Dribble(Vec<u8>, usize);
        impl Read for Dribble {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let Some(&x) = self.0.get(self.1) else {
                    return Ok(0);
                };
                b[0] = x;
                self.1 += 1;
                Ok(1)
            }
        }
        let mut conn = Dribble(format!("{one}{one}").into_bytes(), 0);
        let mut buf = Vec::new();
        read_response(&mut conn, &mut buf).expect("first");
        assert_eq!(conn.1, one.len());
        read_response(&mut conn, &mut buf).expect("second");
        assert!(buf.is_empty());
        let eof = read_response(&mut conn, &mut buf).expect_err("nothing more");
        assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
        let r = StallerReport {
            request_ms: vec![150.0, 149.0, 400.0],
            error: None,
        };
        assert_eq!(r.median_ms(), Some(150.0));
    }
}
