//! Helpers for echo_client's tests: small servers with deliberate faults, run in threads of the
//! test process, and a runner for the echo_client binary that never leaves it behind.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Every socket of a test server gives up after this long, so no server thread outlives a
/// test by much. It is a hang guard, not a performance bound.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_echo_client");

// ─── running echo_client ────────────────────────────────────────────────────────────────────

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as the `--json` object.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}\nstderr: {}", self.stdout, self.stderr)
        })
    }
}

/// Runs echo_client with `args` to completion, through the conformance crate's runner: its
/// own process group, killed on drop, and a hang guard of `conformance::server::STEP` (every
/// run here takes a few seconds at most).
pub fn run(args: &[&str]) -> Run {
    let (status, stdout, stderr) = conformance::server::run_to_exit(BIN, args);
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Runs with `--json` against `addr` and returns the run and its JSON.
pub fn run_json(addr: SocketAddr, args: &[&str]) -> (Run, Value) {
    let addr = addr.to_string();
    let mut all = vec!["--addr", addr.as_str(), "--json"];
    all.extend_from_slice(args);
    let r = run(&all);
    let j = r.json();
    (r, j)
}

/// A number at a JSON pointer (`/errors/total`), as u64.
pub fn num(j: &Value, ptr: &str) -> u64 {
    j.pointer(ptr)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{ptr} is not an integer in {j}"))
}

pub fn float(j: &Value, ptr: &str) -> f64 {
    j.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{ptr} is not a number in {j}"))
}

/// An example of this crate: `cargo test` builds them next to the test binaries, in
/// target/<profile>/examples.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .expect("target/<profile>/deps/<test> has two parents")
}

// ─── test servers ───────────────────────────────────────────────────────────────────────────

/// A test server: an accept loop in a thread, each connection handled by `handle` in a thread
/// of its own (or, with `iterative`, one after the other). The peers it accepted are recorded.
pub struct TestServer {
    pub addr: SocketAddr,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl TestServer {
    pub fn start(handle: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> TestServer {
        Self::start_at("127.0.0.1:0", false, handle)
    }

    /// Serves one connection at a time to its end, as lesson 1 does.
    pub fn iterative(handle: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> TestServer {
        Self::start_at("127.0.0.1:0", true, handle)
    }

    fn start_at(
        at: &str,
        iterative: bool,
        handle: impl Fn(usize, TcpStream) + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind(at).expect("bind a test server");
        let addr = listener.local_addr().expect("local_addr");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        let handle = Arc::new(handle);
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { continue };
                conn.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                conn.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
                conn.set_nodelay(true).expect("nodelay");
                if let Ok(p) = conn.peer_addr() {
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                }
                let h = handle.clone();
                if iterative {
                    h(i, conn);
                } else {
                    std::thread::spawn(move || h(i, conn));
                }
            }
        });
        TestServer { addr, peers }
    }
}

/// Echoes everything; `alter(offset, byte)` may change each byte on its way back (its offset
/// in the connection's stream), `stop_after` closes once that many bytes were echoed.
pub fn echo_with(mut conn: TcpStream, alter: impl Fn(u64, u8) -> u8, stop_after: Option<u64>) {
    let mut buf = [0u8; 16 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut n = n;
        if let Some(limit) = stop_after {
            n = n.min((limit - offset) as usize);
        }
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = alter(offset + i as u64, *b);
        }
        if conn.write_all(&buf[..n]).is_err() {
            return;
        }
        offset += n as u64;
        if stop_after == Some(offset) {
            // A graceful early close: FIN first, then drain whatever the client still sends
            // (its next message is already on the way). Dropping the socket with unread
            // bytes would send an RST instead, and the client would race between seeing
            // the EOF and the reset — "early EOF" is what this close must deterministically be.
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            while matches!(conn.read(&mut buf), Ok(1..)) {}
            return;
        }
    }
}

pub fn echo(conn: TcpStream) {
    echo_with(conn, |_, b| b, None);
}

/// Reads one request head (up to the empty line). None at EOF or on error.
pub fn read_request(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// An HTTP server loop: answers each request with `respond(request number, head)`, written
/// with `write`; closes after a request that asked for it.
pub fn http_with(
    mut conn: TcpStream,
    respond: impl Fn(u64, &[u8]) -> Vec<u8>,
    write: impl Fn(&mut TcpStream, u64, &[u8]) -> std::io::Result<()>,
) {
    let mut k = 0;
    while let Some(head) = read_request(&mut conn) {
        let response = respond(k, &head);
        if write(&mut conn, k, &response).is_err() {
            return;
        }
        k += 1;
        if contains(&head, b"Connection: close") {
            return;
        }
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The contract's response: keep-alive, or `Connection: close` when the request asked.
pub fn contract_response(_k: u64, head: &[u8]) -> Vec<u8> {
    use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};
    if contains(head, b"Connection: close") {
        OK_CLOSE.to_vec()
    } else {
        OK_KEEP_ALIVE.to_vec()
    }
}

pub fn write_whole(conn: &mut TcpStream, _k: u64, r: &[u8]) -> std::io::Result<()> {
    conn.write_all(r)
}
