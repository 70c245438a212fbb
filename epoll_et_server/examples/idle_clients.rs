//! Opens many idle connections to a server on loopback and holds them for a while: the load
//! behind the readiness lessons' READMEs (lesson 8's refusals over FD_SETSIZE, lesson 9's scan
//! cost with idle connections, lesson 10's memory per idle connection).
//!
//! ```text
//! idle_clients ADDR COUNT SECONDS [SERVER_PID] [--get]
//! ```
//!
//! Connects COUNT times to ADDR (loopback only) — with `--get`, sending one keep-alive
//! `GET /` on each connection and reading its answer, so that every connection has served a
//! request before it goes idle — waits a second, then counts how many
//! connections the server has closed (EOF or reset: refused) and how many it keeps open. With
//! SERVER_PID it also prints the server's resident memory (VmRSS) before and after, and the
//! difference per connection kept open. Then it holds everything, silent, for SECONDS (at most
//! 600) and exits, closing them all. Bounded by this process's RLIMIT_NOFILE (20,000 here).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One keep-alive `GET /`, and its answer read up to the end of the 14-byte body.
fn request(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.ends_with(b"Hello, world!\n") {
        match s.read(&mut buf)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    Ok(())
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let get = args.iter().any(|a| a == "--get");
    args.retain(|a| a != "--get");
    let usage = "usage: idle_clients ADDR COUNT SECONDS [SERVER_PID] [--get]";
    let (Some(addr), Some(count), Some(secs)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
        args.get(3).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    if !addr.ip().is_loopback() || secs > 600 {
        eprintln!("{usage}\nloopback addresses only, and at most 600 seconds");
        std::process::exit(2);
    }
    let pid: Option<u32> = args.get(4).and_then(|a| a.parse().ok());
    let before = pid.and_then(vm_rss_kib);

    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut s) if get => match request(&mut s) {
                Ok(()) => conns.push(s),
                Err(e) => {
                    eprintln!(
                        "connection {i}: GET: {e}; stopping at {} connections",
                        conns.len()
                    );
                    break;
                }
            },
            Ok(s) => conns.push(s),
            Err(e) => {
                eprintln!(
                    "connection {i}: {e}; stopping at {} connections",
                    conns.len()
                );
                break;
            }
        }
    }
    let connect_time = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1)); // let the server accept (or refuse) them all

    let (mut open, mut refused) = (0usize, 0usize);
    for s in &mut conns {
        // A closed connection reads as EOF (or a reset); an open, idle one has nothing to say.
        s.set_nonblocking(true)
            .expect("O_NONBLOCK on a connected socket");
        match s.read(&mut [0u8; 1]) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => open += 1,
            _ => refused += 1,
        }
    }
    println!(
        "connections: {} opened in {:.2} s, {open} kept open by the server, {refused} closed by it",
        conns.len(),
        connect_time.as_secs_f64()
    );
    if let (Some(pid), Some(before)) = (pid, before)
        && let Some(after) = vm_rss_kib(pid)
    {
        let per = (after.saturating_sub(before) * 1024) as f64 / open.max(1) as f64;
        println!(
            "server VmRSS: {before} KiB before, {after} KiB after: {per:.0} bytes per open connection"
        );
    }
    std::thread::sleep(Duration::from_secs(secs));
    // Dropping `conns` closes every socket.
}
