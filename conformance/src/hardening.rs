//! The contract's defences against clients that are slow, greedy or tricky (`docs/contract.md`
//! §5, "Limits"): a head deadline, a bound on the work one call does for one connection, a
//! lingering close whatever the read boundaries, and chunked bodies read with limits. Part of
//! every server's suite, like the cases of cases.rs.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

use crate::Target;
use crate::client::{Conn, End, GET, GET_CLOSE, connect};
use crate::rungs::Concurrency;

/// The head deadline the cases start servers with (`--head-timeout 1`): short, so a case
/// takes seconds, not the default's ten.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// What a busy two-core machine may add to a deadline before the answer is late.
const MARGIN: Duration = Duration::from_secs(3);

fn status(raw: &[u8]) -> u16 {
    String::from_utf8_lossy(raw)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Clients that each send one byte of a request head every `every`, for as long as the case
/// runs (until dropped): header bytes, or — with `blank` — line ends before any request line.
struct Dribblers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dribblers {
    fn start(conns: Vec<TcpStream>, every: Duration, blank: bool) -> Dribblers {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            let head = b"GET / HTTP/1.1\r\nX-Slow: ";
            let mut i = 0;
            while !flag.load(Relaxed) {
                let byte = match (blank, head.get(i)) {
                    (true, _) => b"\r\n"[i % 2],
                    (false, Some(&b)) => b,
                    (false, None) => b'a',
                };
                for mut c in &conns {
                    let _ = c.write(&[byte]); // a closed one (408, 400) just fails
                }
                i += 1;
                std::thread::sleep(every);
            }
        });
        Dribblers {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Dribblers {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn http_a_dribbled_head_gets_408_within_the_deadline(t: &Target) {
    let s = t.start(&["--head-timeout", "1"]);
    let mut c = Conn::new(connect(s.addr));
    let t0 = Instant::now();
    let writer = c.stream.try_clone().expect("clone the socket");
    // One byte every 100 ms, for ever: every byte restarts an idle timer, none a head deadline.
    let _dribble = Dribblers::start(vec![writer], Duration::from_millis(100), false);
    let (bytes, end) = c.read_to_end();
    let took = t0.elapsed();
    assert_eq!(status(&bytes), 408, "{:?}", String::from_utf8_lossy(&bytes));
    assert!(
        took < HEAD_TIMEOUT + MARGIN,
        "the 408 came after {took:?} (deadline {HEAD_TIMEOUT:?})"
    );
    assert!(took >= HEAD_TIMEOUT, "408 before the deadline: {took:?}");
    // The close lingers (the client is still sending), so it ends in EOF, not a reset.
    assert_eq!(end, End::Eof);
}

pub fn http_too_many_empty_lines_get_400(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(connect(s.addr));
    c.send(b"\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    let (bytes, end) = c.read_to_end();
    assert_eq!(status(&bytes), 400, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(end, End::Eof);
    // Two are tolerated (RFC 9112 §2.2).
    let mut c = Conn::new(connect(s.addr));
    c.send(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(c.response(false).expect("an answer").raw, OK_KEEP_ALIVE);
}

/// How many dribblers can occupy every worker of the model: one for lesson 1, the default pool
/// for a pool, eight for the rest.
fn occupiers(t: &Target) -> usize {
    match t.caps.concurrency {
        Concurrency::One => 1,
        Concurrency::Workers => server_common::cli::default_workers() as usize,
        Concurrency::Unbounded => 8,
    }
}

fn served_beside_dribblers(t: &Target, blank: bool) {
    let s = t.start(&["--head-timeout", "1"]);
    let n = occupiers(t);
    let conns: Vec<TcpStream> = (0..n).map(|_| connect(s.addr)).collect();
    let _dribble = Dribblers::start(conns, Duration::from_millis(300), blank);
    std::thread::sleep(Duration::from_millis(500)); // every worker has its dribbler
    let t0 = Instant::now();
    let mut normal = Conn::new(connect(s.addr));
    normal.send(GET_CLOSE);
    let (bytes, _) = normal.read_to_end();
    let took = t0.elapsed();
    assert_eq!(
        bytes,
        OK_CLOSE,
        "a normal client beside {n} dribblers: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        took < HEAD_TIMEOUT + MARGIN,
        "a normal client beside {n} endless dribblers waited {took:?}: the head deadline \
         ({HEAD_TIMEOUT:?}) must free whoever they hold"
    );
}

pub fn http_endless_slow_heads_do_not_hold_the_workers(t: &Target) {
    served_beside_dribblers(t, false);
}

pub fn http_endless_empty_lines_do_not_hold_the_workers(t: &Target) {
    served_beside_dribblers(t, true);
}

pub fn http_one_pipelining_client_cannot_starve_another(t: &Target) {
    if t.caps.concurrency == Concurrency::One {
        return; // lesson 1 serves one connection at a time by design (its README)
    }
    // 10,000 minimal requests at --work 100 (a fraction of a millisecond each): seconds of
    // work. Answered whole per read, they would keep one event loop to itself that long.
    let s = t.start(&["--work", "100"]);
    let greedy = connect(s.addr);
    let (mut reader, mut writer) = (
        Conn::new(greedy.try_clone().expect("clone")),
        greedy.try_clone().expect("clone"),
    );
    let n = 10_000;
    let send = std::thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(&GET.repeat(n));
        writer // kept open until the reader is done
    });
    let read = std::thread::spawn(move || {
        for _ in 0..n {
            if reader.response(false).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200)); // the flood is being answered
    let t0 = Instant::now();
    let mut one = Conn::new(connect(s.addr));
    one.send(GET);
    let r = one.response(false).expect("the single request's answer");
    let took = t0.elapsed();
    assert_eq!(r.raw, OK_KEEP_ALIVE);
    assert!(
        took < Duration::from_secs(1),
        "one request waited {took:?} behind a client pipelining {n}"
    );
    drop(one);
    // Done: cut the flood short (its reader and writer then fail and end).
    let _ = greedy.shutdown(std::net::Shutdown::Both);
    let _ = read.join();
    let _ = send.join();
}

pub fn http_close_then_pipelined_bytes_split_anywhere_arrive_whole(t: &Target) {
    // A `Connection: close` request with more requests behind it, split in two writes at every
    // byte: wherever the split, the server must not close under bytes still arriving — its
    // close would become an RST that can destroy the response before the client reads it.
    // The second part follows at once (it may reach the server's socket between the read of
    // the first and the close), or a moment later (after the close, if there is no linger).
    let s = t.start(&[]);
    let stream = [GET_CLOSE, GET, GET].concat();
    for pause in [Duration::ZERO, Duration::from_millis(2)] {
        for cut in 1..stream.len() {
            let mut c = Conn::new(connect(s.addr));
            c.send(&stream[..cut]);
            std::thread::sleep(pause);
            use std::io::Write;
            let _ = c.stream.write_all(&stream[cut..]); // may fail once the server has closed
            assert_eq!(
                c.read_to_end(),
                (OK_CLOSE.to_vec(), End::Eof),
                "split at byte {cut}, second part after {pause:?}"
            );
        }
    }
}

pub fn http_chunked_body_is_read_and_discarded(t: &Target) {
    let s = t.start(&[]);
    let mut c = Conn::new(connect(s.addr));
    c.send(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    c.send(b"6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n");
    assert_eq!(c.response(false).expect("the answer").raw, OK_KEEP_ALIVE);
    c.send(GET);
    assert_eq!(c.response(false).expect("the next").raw, OK_KEEP_ALIVE);
}

fn refused(t: &Target, request: &[u8], want: u16) {
    let s = t.start(&[]);
    let mut c = Conn::new(connect(s.addr));
    c.send(request);
    let (bytes, end) = c.read_to_end();
    assert_eq!(
        status(&bytes),
        want,
        "{:?}",
        String::from_utf8_lossy(request)
    );
    assert_eq!(end, End::Eof, "an error response ends with a clean close");
}

pub fn http_ambiguous_framing_gets_400_and_unknown_coding_501(t: &Target) {
    refused(
        t,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        400,
    );
    refused(
        t,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
    refused(
        t,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        501,
    );
}

// ─── clients nobody here wrote ──────────────────────────────────────────────────────────────

/// Runs a real client; `None` if it is not installed — which fails the case when
/// `LADDER_REQUIRE_CLIENTS` is set (CI installs curl, ab and h2load and sets it).
fn tool(cmd: &str, args: &[&str]) -> Option<String> {
    match std::process::Command::new(cmd).args(args).output() {
        Ok(o) => Some(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => {
            assert!(
                std::env::var_os("LADDER_REQUIRE_CLIENTS").is_none(),
                "{cmd} is required (LADDER_REQUIRE_CLIENTS) but cannot run: {e}"
            );
            eprintln!("{cmd} is not installed: its part of the case is skipped");
            None
        }
    }
}

/// `label: N` in a client's report.
fn count(report: &str, label: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        l.trim()
            .strip_prefix(label)?
            .split_whitespace()
            .next()?
            .trim_end_matches(',')
            .parse()
            .ok()
    })
}

pub fn real_clients_get_every_answer(t: &Target) {
    let s = t.start(&[]);
    let url = format!("http://{}/", s.addr);
    // Lesson 1 serves one keep-alive connection until it closes: one client connection there.
    let conns = if t.caps.concurrency == Concurrency::One {
        "1"
    } else {
        "4"
    };

    // curl: HTTP/1.1, HTTP/1.0, a chunked upload, and a POST then a GET on one connection.
    let body = std::env::temp_dir().join(format!("ladder-upload-{}", std::process::id()));
    std::fs::write(&body, crate::client::pattern(100_000, 7)).expect("write the upload");
    let upload = format!("@{}", body.display());
    let wrote = "%{http_code} %{num_connects}\n";
    let upload_args = [
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        upload.as_str(),
    ];
    let reuse_args = [
        "-d",
        "x=1",
        url.as_str(),
        "--next",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        wrote,
    ];
    for extra in [&[][..], &["--http1.0"], &upload_args, &reuse_args] {
        let args: Vec<&str> = ["-sS", "-o", "/dev/null", "-w", wrote]
            .into_iter()
            .chain(extra.iter().copied())
            .chain([url.as_str()])
            .collect();
        let Some(out) = tool("curl", &args) else {
            break;
        };
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            !lines.is_empty() && lines.iter().all(|l| l.starts_with("200")),
            "curl {args:?}: {out}"
        );
        if extra.contains(&"--next") {
            // The second transfer reused the first one's connection: no new connect.
            assert_eq!(lines, ["200 1", "200 0"], "curl reuse: {out}");
        }
    }
    let _ = std::fs::remove_file(&body);

    // ApacheBench: HTTP/1.0, with keep-alive (-k) and without.
    for keep in [true, false] {
        let mut args = vec!["-q", "-n", "1000", "-c", conns];
        if keep {
            args.push("-k");
        }
        args.push(url.as_str());
        let Some(out) = tool("ab", &args) else { break };
        assert_eq!(
            count(&out, "Complete requests:"),
            Some(1000),
            "ab {args:?}: {out}"
        );
        assert_eq!(
            count(&out, "Failed requests:"),
            Some(0),
            "ab {args:?}: {out}"
        );
        assert!(!out.contains("Non-2xx"), "ab {args:?}: {out}");
    }

    // h2load over HTTP/1.1, pipelining eight deep.
    if let Some(out) = tool(
        "h2load",
        &["--h1", "-m", "8", "-n", "1000", "-c", conns, &url],
    ) {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("requests:"))
            .unwrap_or_default();
        assert!(line.contains("1000 succeeded, 0 failed"), "h2load: {out}");
    }
}
