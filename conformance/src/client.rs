//! A small, strict test client: every socket has timeouts, responses are parsed by their
//! `Content-Length`, and an EOF is told apart from a reset.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::server::STEP;

/// Connects with read and write timeouts of `STEP` and Nagle off (so one-byte writes go out
/// as one-byte segments).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s =
        TcpStream::connect_timeout(&addr, STEP).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(STEP)).expect("set_read_timeout");
    s.set_write_timeout(Some(STEP)).expect("set_write_timeout");
    s.set_nodelay(true).expect("set_nodelay");
    s
}

/// Closes `s` with an RST instead of a FIN (SO_LINGER with a zero timeout), as a crashing or
/// impatient client does.
pub fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` is an open socket for the duration of the call, and we pass a pointer to a
    // live `linger` struct with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
    drop(s);
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The response exactly as received.
    pub raw: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a connection ended when read to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    Reset,
}

/// A client connection that may receive several (pipelined) responses: bytes read past one
/// response are kept for the next.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF. Retries EINTR: a socket with a receive
    /// timeout returns it after a stop/continue or a debugger attach even without handlers
    /// (signal(7)), and that is the test process's business, not the server's.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response. `head_only` for the answer to a HEAD request (no body follows).
    pub fn response(&mut self, head_only: bool) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "EOF inside a head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            })
            .collect();
        let len: usize = match headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            _ if head_only || status / 100 == 1 => 0,
            Some((_, v)) => v
                .parse()
                .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad Content-Length"))?,
            None => {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "response without Content-Length",
                ));
            }
        };
        while self.buf.len() < head_end + len {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "EOF inside a body",
                ));
            }
        }
        let raw: Vec<u8> = self.buf.drain(..head_end + len).collect();
        Ok(Response {
            status,
            headers,
            body: raw[head_end..].to_vec(),
            raw,
        })
    }

    /// Reads until the server closes. Returns the bytes and whether it ended in EOF or RST.
    pub fn read_to_end(&mut self) -> (Vec<u8>, End) {
        loop {
            match self.fill() {
                Ok(0) => return (std::mem::take(&mut self.buf), End::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return (std::mem::take(&mut self.buf), End::Reset);
                }
                Err(e) => panic!("reading to the end: {e} after {} bytes", self.buf.len()),
            }
        }
    }

    /// Whether a response arrives within `wait` (false: the read timed out, nothing came).
    pub fn answered_within(&mut self, wait: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(wait))
            .expect("set_read_timeout");
        let got = match self.fill() {
            Ok(n) => n > 0,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) => panic!("waiting for an answer: {e}"),
        };
        self.stream
            .set_read_timeout(Some(STEP))
            .expect("set_read_timeout");
        got
    }
}

/// `GET / HTTP/1.1` with a Host header, as a client sends it.
pub const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";
/// The same, asking the server to close afterwards.
pub const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

/// A deterministic pseudo-random byte pattern (xorshift), so echoed data can be checked byte
/// by byte without keeping a copy of what was sent.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `GET` on a fresh connection and returns the response: the "is it still serving?"
/// probe used after every fault.
pub fn probe(addr: SocketAddr) -> Response {
    let mut c = Conn::new(connect(addr));
    c.send(GET_CLOSE);
    c.response(false)
        .unwrap_or_else(|e| panic!("probe after a fault: {e}"))
}

/// Echo probe: `n` bytes in, the same `n` bytes out.
pub fn echo_probe(addr: SocketAddr, n: usize) {
    let mut s = connect(addr);
    let data = pattern(n, 99);
    s.write_all(&data).expect("echo probe write");
    let mut back = vec![0u8; n];
    s.read_exact(&mut back).expect("echo probe read");
    assert!(back == data, "echo probe: bytes differ");
}
