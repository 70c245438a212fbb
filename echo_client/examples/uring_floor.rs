//! The floor under any echo client: the least a client can do per message on loopback, to
//! compare echo_client's CPU with. Not a load generator — it checks lengths only, keeps no
//! histogram, reads no clock per message — and it batches its calls through io_uring(7), the
//! obvious way for a client to spend less CPU per message than the server it drives:
//!
//! ```text
//!   per turn:  io_uring_enter(submit every queued send + recv, wait for ≥ 1 completion)
//!   per reply: recv complete? → queue the next send and its recv : queue a recv for the rest
//! ```
//!
//! So it makes one syscall per *batch* where echo_client makes two per message (`sendmsg`,
//! `recvfrom`) plus a share of an `epoll_pwait2`. If batching were what the client lacked, this
//! program would take clearly less CPU per message than the server: run it beside
//! `echo_client` against one server and compare the CPU seconds each reports.
//!
//! ```text
//! cargo run --release -p echo_client --example uring_floor -- --addr 127.0.0.1:9000 -c 100 -n 5000
//! ```

use std::error::Error;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use clap::Parser;
use io_uring::{IoUring, opcode, types::Fd};
use nix::sys::resource::{UsageWho, getrusage};

/// A minimal io_uring echo client: closed loop, lengths checked, nothing else.
#[derive(Parser)]
struct Args {
    /// The echo server.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Connections, split evenly over the threads.
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Messages per connection.
    #[arg(short = 'n', long, default_value_t = 5000)]
    messages: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Threads, each with its own ring and its share of the connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Tokens: connection index × 2, plus 1 for a send (0 for a recv).
const SEND: u64 = 1;

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    if args.threads == 0 || args.connections % args.threads != 0 || args.size == 0 {
        return Err("--threads must divide --connections, and --size must be > 0".into());
    }
    let per_thread = args.connections / args.threads;
    let t0 = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|_| {
            let (addr, n, size) = (args.addr, args.messages, args.size);
            std::thread::spawn(move || run(addr, per_thread, n, size).map_err(|e| e.to_string()))
        })
        .collect();
    let mut total = 0;
    for t in threads {
        // A panicking thread is a bug in this example: let it show.
        total += t.join().expect("thread panicked")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let (user, system) = (tv(usage.user_time()), tv(usage.system_time()));
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "uring_floor    {total} messages in {secs:.3} s: {:.0} messages/s ({} thread{})",
        total as f64 / secs,
        args.threads,
        if args.threads == 1 { "" } else { "s" }
    )?;
    writeln!(
        out,
        "client CPU     user {user:.2} s + system {system:.2} s = {:.2} s, {:.2} µs per message",
        user + system,
        (user + system) * 1e6 / total.max(1) as f64
    )?;
    Ok(())
}

/// One thread: `conns` connections, `messages` each; returns the messages completed.
fn run(addr: SocketAddr, conns: usize, messages: u64, size: usize) -> Result<u64, Box<dyn Error>> {
    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build((2 * conns).next_power_of_two().max(8) as u32)?;
    let socks = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // The memory the kernel reads and writes for in-flight operations is leaked: it must outlive
    // every operation, also those still in flight when an error returns early (the ring's
    // teardown cancels them asynchronously). A few KiB per thread of a short-lived example.
    let message: &'static [u8] = vec![0x5a_u8; size].leak();
    // One receive region per connection in one buffer. Only its base pointer is used: no
    // reference to bytes the kernel may be writing, and the received bytes are never read
    // (lengths only).
    let base = vec![0u8; conns * size].leak().as_mut_ptr();
    let mut got = vec![0usize; conns];
    let mut done = vec![0u64; conns];
    let mut in_flight = 0usize;

    let fds: Vec<_> = socks.iter().map(|s| Fd(s.as_raw_fd())).collect();
    // Queues a recv into connection i's region from `at` on, preceded by a send when `send`;
    // returns how many operations it queued.
    let queue = |ring: &mut IoUring, i: usize, at: usize, send: bool| {
        // SAFETY: i < conns and at < size, so the offset stays inside the `conns * size` bytes.
        let dst = unsafe { base.add(i * size + at) };
        let recv = opcode::Recv::new(fds[i], dst, (size - at) as u32)
            .build()
            .user_data((i as u64) << 1);
        let send_op = opcode::Send::new(fds[i], message.as_ptr(), size as u32)
            .build()
            .user_data((i as u64) << 1 | SEND);
        let entries: &[_] = if send { &[send_op, recv] } else { &[recv] };
        // The queue has room for two entries per connection and each connection has at most
        // two in flight; should it be full anyway, submitting first makes room.
        let full = {
            let sq = ring.submission();
            sq.len() + entries.len() > sq.capacity()
        };
        if full {
            ring.submit()?;
        }
        // SAFETY: the memory named is leaked (valid for ever, never moved or resized), and
        // connection i has no other recv in flight into its region.
        unsafe { ring.submission().push_multiple(entries) }
            .map_err(|_| std::io::Error::other("submission queue full"))?;
        Ok::<usize, std::io::Error>(entries.len())
    };
    for i in 0..conns {
        in_flight += queue(&mut ring, i, 0, true)?;
    }
    let mut total = 0;
    // This turn's completions, copied out (queueing the next operations needs the ring) into
    // one vector reused every turn: nothing allocated per turn.
    let mut completions = Vec::with_capacity(2 * conns);
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        completions.clear();
        completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(token, result) in &completions {
            in_flight -= 1;
            let i = (token >> 1) as usize;
            if token & SEND == SEND {
                // A short send of a small message on loopback would be a surprise: fail loudly
                // rather than measure something else.
                if result != size as i32 {
                    return Err(format!("connection {i}: send returned {result}").into());
                }
                continue;
            }
            if result <= 0 {
                return Err(format!("connection {i}: recv returned {result}").into());
            }
            got[i] += result as usize;
            if got[i] < size {
                in_flight += queue(&mut ring, i, got[i], false)?;
                continue;
            }
            got[i] = 0;
            done[i] += 1;
            total += 1;
            if done[i] < messages {
                in_flight += queue(&mut ring, i, 0, true)?;
            }
        }
    }
    // Nothing in flight and no error: every connection did all its messages.
    Ok(total)
}
