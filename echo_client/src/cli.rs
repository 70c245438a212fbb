//! The command line, and the plan derived from it: everything a worker needs to know, fixed
//! before the first connection opens.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::error::ErrorKind as ClapError;
use clap::{CommandFactory, Parser, ValueEnum};

/// The protocol spoken on every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// Messages of `--size` bytes, each echoed back and checked byte by byte.
    Echo,
    /// `GET / HTTP/1.1` keep-alive requests (or `Connection: close` with `--close`).
    Http,
}

/// echo_client: the course's load generator. Epoll event loops (one per thread, in one or more
/// processes) drive echo or HTTP/1.1 load against one server, verify every byte that comes
/// back, and report connect and transfer rates, latency percentiles (hdrhistogram), fairness
/// across connections, errors by kind and the client's own CPU time — for people, or as one
/// JSON object with `--json`.
///
/// Closed loop by default (each connection sends, waits for the whole reply, sends the next);
/// `--rate` switches to an open loop that measures latency from each message's intended send
/// time, so a stalled server cannot hide its stall.
#[derive(Parser, Clone, Debug)]
#[command(version, max_term_width = 100)]
pub struct Args {
    /// Server address. Loopback only in this course's benchmarks.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    pub addr: SocketAddr,

    /// Protocol spoken on every connection.
    #[arg(long, value_enum, default_value_t = Proto::Echo)]
    pub proto: Proto,

    /// Connections opened to the server (each one a slot that reconnects where the workload
    /// asks for it).
    #[arg(short = 'c', long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub connections: u64,

    /// Messages (HTTP: requests) per connection; the run ends when all are done.
    #[arg(short = 'n', long, value_name = "M", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,

    /// Run for this long (e.g. 10s, 500ms, 2m); default 10s unless -n or --hold is given.
    #[arg(short = 'd', long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Open loop: send this many messages per second in total, spread evenly over the
    /// connections; latency counts from each message's intended send time.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Bytes per echo message (echo only). Each carries its connection id, sequence number and
    /// send time, then a pattern derived from them.
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=MAX_SIZE as u64))]
    pub size: Option<u64>,

    /// Open at most this many connections per second (in total) instead of all at once.
    #[arg(long = "connect-rate", value_name = "R",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_rate: Option<u64>,

    /// Open every connection, keep them all idle this long (watching for any the server drops),
    /// then check each one still answers (-n defaults to 1): the C10K holding test.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub hold: Option<Duration>,

    /// HTTP only: send `Connection: close` and open a new connection for every request.
    #[arg(long)]
    pub close: bool,

    /// HTTP only: on every connection, every EVERY-th request (EVERY ≥ 2) is `GET PATH` instead
    /// of `GET /`, and its latency is also reported apart from the others' (e.g. 10:/work/1000:
    /// head-of-line blocking behind expensive requests, docs/contract.md §5).
    #[arg(long, value_name = "EVERY:PATH", value_parser = parse_mix)]
    pub mix: Option<Mix>,

    /// Give up on a connect, or on a reply, after this long: counted as a connect timeout or a
    /// read timeout, and the connection is closed.
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Event-loop threads per process [default: the CPUs divided among the processes].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Client processes, each with its share of the connections (one process may hold fewer
    /// descriptors than RLIMIT_NOFILE allows); their reports are merged.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub processes: u32,

    /// Source addresses to spread the connections over, as a range (127.0.0.2-127.0.0.40) or a
    /// list (127.0.0.2,127.0.0.3): each one has its own ~28k ephemeral ports.
    #[arg(long = "source-ips", value_name = "IPS", value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,

    /// Print the report as one JSON object (schema in echo_client/README.md).
    #[arg(long)]
    pub json: bool,

    /// Exit 0 despite network errors (refused, timeouts, resets, early EOFs, non-2xx). A wrong
    /// byte (mismatch, bad HTTP) always exits 1.
    #[arg(long = "allow-errors")]
    pub allow_errors: bool,
}

/// The largest `--size`: large enough for any buffer-size experiment, small enough that the
/// shared payload pattern stays a small allocation per process.
pub const MAX_SIZE: usize = 64 << 20;

/// The run's length when neither `-n` nor `-d` is given, as wrk's default.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `--source-ips`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// `--mix EVERY:PATH`, parsed: every `every`-th request of each connection slot goes to `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// At least 2 (1 would make every request expensive: nothing left to compare with).
    pub every: u64,
    /// The expensive requests' target: starts with `/`, visible ASCII only.
    pub path: String,
}

impl Mix {
    /// Whether request `seq` of a connection slot (0-based: its `seq + 1`-th request) is an
    /// expensive one — the EVERY-th, 2·EVERY-th, … The count is per slot and survives
    /// reconnects (`--close`, or after an error), so every slot sends the same mix; a request
    /// retried after an error keeps its kind.
    pub fn is_expensive(&self, seq: u64) -> bool {
        (seq + 1).is_multiple_of(self.every)
    }
}

/// The longest `--mix` path: the whole request head must stay well inside a server's 8 KiB
/// head limit (docs/contract.md §5).
pub const MAX_MIX_PATH: usize = 4096;

/// When the transfer phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Each connection completes this many messages.
    Messages(u64),
    /// The phase lasts this long.
    Duration(Duration),
}

/// Everything a run needs, checked and defaulted.
#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub connections: u64,
    pub until: Until,
    pub rate: Option<u64>,
    /// Echo message size (0 for HTTP).
    pub size: usize,
    pub connect_rate: Option<u64>,
    pub hold: Option<Duration>,
    pub close: bool,
    /// `--mix` (HTTP only).
    pub mix: Option<Mix>,
    pub timeout: Duration,
    pub threads: u32,
    pub processes: u32,
    pub sources: Vec<IpAddr>,
    pub json: bool,
    pub allow_errors: bool,
}

impl Plan {
    /// Checks what clap cannot (flags that only make sense together) and fills the defaults.
    /// A bad combination exits 2 with clap's message, like any other bad flag.
    pub fn from_args(a: Args) -> Plan {
        let fail = |msg: String| -> ! {
            Args::command()
                .error(ClapError::ArgumentConflict, msg)
                .exit()
        };
        if a.close && a.proto != Proto::Http {
            fail("--close needs --proto http".into());
        }
        if a.mix.is_some() && a.proto != Proto::Http {
            fail("--mix needs --proto http".into());
        }
        if a.size.is_some() && a.proto != Proto::Echo {
            fail("--size applies to --proto echo only".into());
        }
        let sources = a.source_ips.map(|s| s.0).unwrap_or_default();
        if let Some(bad) = sources.iter().find(|ip| ip.is_ipv4() != a.addr.is_ipv4()) {
            fail(format!(
                "--source-ips {bad} is not of the same family as --addr {}",
                a.addr
            ));
        }
        let until = match (a.messages, a.duration) {
            (Some(n), _) => Until::Messages(n),
            (None, Some(d)) if d.is_zero() => fail("--duration must be more than 0".into()),
            (None, Some(d)) => Until::Duration(d),
            // The holding test checks each connection once after the hold.
            (None, None) if a.hold.is_some() => Until::Messages(1),
            (None, None) => Until::Duration(DEFAULT_DURATION),
        };
        if a.timeout.is_zero() {
            fail("--timeout must be more than 0".into());
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let per_process = a.connections.div_ceil(a.processes as u64);
        if per_process == 0 || a.connections < a.processes as u64 {
            fail(format!(
                "--processes {} is more than the {} connections",
                a.processes, a.connections
            ));
        }
        // Never more threads than connections: an event loop without a connection is waste.
        let threads = a
            .threads
            .unwrap_or_else(|| cpus.div_ceil(a.processes).max(1))
            .min(per_process.min(u32::MAX as u64) as u32);
        Plan {
            addr: a.addr,
            proto: a.proto,
            connections: a.connections,
            until,
            rate: a.rate,
            size: match a.proto {
                Proto::Echo => a.size.unwrap_or(64) as usize,
                Proto::Http => 0,
            },
            connect_rate: a.connect_rate,
            hold: a.hold.filter(|h| !h.is_zero()),
            close: a.close,
            mix: a.mix,
            timeout: a.timeout,
            threads,
            processes: a.processes,
            sources,
            json: a.json,
            allow_errors: a.allow_errors,
        }
    }

    /// The connection ids of process `p` (of `self.processes`), as a half-open range.
    pub fn process_ids(&self, p: u32) -> std::ops::Range<u64> {
        split(0..self.connections, self.processes as u64, p as u64)
    }

    /// The connection ids of thread `t` within the ids `of` one process.
    pub fn thread_ids(&self, of: std::ops::Range<u64>, t: u32) -> std::ops::Range<u64> {
        split(of, self.threads as u64, t as u64)
    }

    /// The source address of connection `id`, if `--source-ips` was given: round robin, so
    /// every address gets the same share.
    pub fn source_of(&self, id: u64) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[(id % self.sources.len() as u64) as usize])
    }
}

/// Part `i` of `n` near-equal contiguous parts of `r`.
fn split(r: std::ops::Range<u64>, n: u64, i: u64) -> std::ops::Range<u64> {
    let len = r.end - r.start;
    let at = |k: u64| r.start + (len as u128 * k as u128 / n as u128) as u64;
    at(i)..at(i + 1)
}

/// `10s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare number of seconds (`--hold 30`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `EVERY:PATH`: an integer of at least 2, a colon, and a request target that starts with `/`
/// and holds only visible ASCII (no space, control byte or non-ASCII byte: it goes verbatim
/// into the request line).
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let (every, path) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not EVERY:PATH (e.g. 10:/work/1000)"))?;
    let every: u64 = every
        .parse()
        .map_err(|_| format!("EVERY in {s:?} is not a whole number (e.g. 10:/work/1000)"))?;
    if every < 2 {
        return Err(format!(
            "EVERY must be at least 2 (1 would make every request expensive), not {every}"
        ));
    }
    if !path.starts_with('/') {
        return Err(format!("PATH {path:?} must start with '/'"));
    }
    if let Some(b) = path.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "PATH {path:?} holds byte {b:#04x}: only visible ASCII, no spaces or control bytes"
        ));
    }
    if path.len() > MAX_MIX_PATH {
        return Err(format!(
            "PATH is {} bytes, more than {MAX_MIX_PATH}",
            path.len()
        ));
    }
    Ok(Mix {
        every,
        path: path.to_string(),
    })
}

/// `127.0.0.2-127.0.0.40` (IPv4 ranges, inclusive) or `a,b,c` (any addresses), or a mix.
pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let mut ips = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: Ipv4Addr = lo.trim().parse().map_err(|e| format!("{lo:?}: {e}"))?;
                let hi: Ipv4Addr = hi.trim().parse().map_err(|e| format!("{hi:?}: {e}"))?;
                let (lo, hi) = (u32::from(lo), u32::from(hi));
                if hi < lo || hi - lo >= 65_536 {
                    return Err(format!(
                        "{part:?} is not a range of at most 65536 addresses"
                    ));
                }
                ips.extend((lo..=hi).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
            }
            None => ips.push(part.parse().map_err(|e| format!("{part:?}: {e}"))?),
        }
    }
    if ips.is_empty() {
        return Err("no address given".into());
    }
    Ok(SourceIps(ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn source_ip_ranges_and_lists() {
        let r = parse_source_ips("127.0.0.2-127.0.0.4").unwrap().0;
        assert_eq!(r.len(), 3);
        assert_eq!(r[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        let l = parse_source_ips("127.0.0.2, ::1").unwrap().0;
        assert_eq!(l.len(), 2);
        assert!(parse_source_ips("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_source_ips("").is_err());
        assert!(parse_source_ips("localhost").is_err());
    }

    #[test]
    fn mix_values() {
        let m = parse_mix("10:/work/1000").unwrap();
        assert_eq!((m.every, m.path.as_str()), (10, "/work/1000"));
        // Only the first colon separates: a path may hold colons.
        assert_eq!(parse_mix("2:/a:b").unwrap().path, "/a:b");
        assert_eq!(parse_mix("3:/").unwrap().path, "/");
        for bad in [
            "",
            "10",
            "10/work/1",
            ":/work/1",
            "x:/work/1",
            "-2:/work/1",
            "0:/work/1",
            "1:/work/1",
            "10:",
            "10:work/1",
            "10:/work 1",
            "10:/work\t1",
            "10:/work\r\n1",
            "10:/work/\u{7f}",
            "10:/wörk",
        ] {
            assert!(parse_mix(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_mix(&format!("2:/{}", "a".repeat(MAX_MIX_PATH - 1))).is_ok());
        assert!(parse_mix(&format!("2:/{}", "a".repeat(MAX_MIX_PATH))).is_err());
    }

    #[test]
    fn mix_flag_is_http_only_and_parsed_by_clap() {
        let a =
            Args::try_parse_from(["echo_client", "--proto", "http", "--mix", "3:/work/5"]).unwrap();
        let plan = Plan::from_args(a);
        assert_eq!(
            plan.mix,
            Some(Mix {
                every: 3,
                path: "/work/5".into()
            })
        );
        assert_eq!(
            Plan::from_args(Args::parse_from(["echo_client", "--proto", "http"])).mix,
            None
        );
        for bad in ["1:/x", "3:x", "3:/a b"] {
            let e = Args::try_parse_from(["echo_client", "--proto", "http", "--mix", bad])
                .expect_err(bad);
            assert_eq!(e.kind(), ClapError::ValueValidation, "{bad}");
        }
        // `--mix` with `--proto echo` exits 2 from Plan::from_args (tests/cli.rs runs it).
    }

    #[test]
    fn the_every_th_request_of_each_connection_is_expensive() {
        let m = parse_mix("3:/work/5").unwrap();
        let kinds: Vec<bool> = (0..9).map(|seq| m.is_expensive(seq)).collect();
        assert_eq!(
            kinds,
            [false, false, true, false, false, true, false, false, true]
        );
        // Counted per connection: 15 requests on each of 2 connections, 5 expensive on each.
        let per_conn = (0..15).filter(|&seq| m.is_expensive(seq)).count();
        assert_eq!(2 * per_conn, 10);
        let two = parse_mix("2:/x").unwrap();
        assert!(!two.is_expensive(0) && two.is_expensive(1) && !two.is_expensive(2));
    }

    #[test]
    fn connections_are_split_without_loss_or_overlap() {
        let a = Args::parse_from([
            "echo_client",
            "-c",
            "1003",
            "--processes",
            "3",
            "--threads",
            "4",
        ]);
        let plan = Plan::from_args(a);
        let mut next = 0;
        for p in 0..3 {
            let pr = plan.process_ids(p);
            for t in 0..4 {
                let tr = plan.thread_ids(pr.clone(), t);
                assert_eq!(tr.start, next);
                assert!(tr.end - tr.start >= 83, "{tr:?}");
                next = tr.end;
            }
        }
        assert_eq!(next, 1003);
    }

    #[test]
    fn defaults() {
        let plan = Plan::from_args(Args::parse_from(["echo_client"]));
        assert_eq!(plan.until, Until::Duration(Duration::from_secs(10)));
        assert_eq!(plan.size, 64);
        let hold = Plan::from_args(Args::parse_from(["echo_client", "--hold", "3"]));
        assert_eq!(hold.until, Until::Messages(1));
        let few = Plan::from_args(Args::parse_from([
            "echo_client",
            "-c",
            "1",
            "--threads",
            "8",
        ]));
        assert_eq!(few.threads, 1);
    }
}
