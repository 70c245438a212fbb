//! What this lesson writes by hand on top of tokio, and what makes it this model: a fixed set of
//! worker threads whatever the number of connections, the idle timeout on *writes* too, and the
//! lingering close's time limit. (Accept's back-off on EMFILE: the suite's `fault_emfile`.)

use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use conformance::client::{Conn, End, GET, GET_CLOSE, echo_probe};
use conformance::server::{STEP, Server};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use server_common::responses::{OK_CLOSE, OK_KEEP_ALIVE};

const BIN: &str = env!("CARGO_BIN_EXE_tokio_server");

fn start(args: &[&str]) -> Server {
    Server::start(BIN, &[&["--addr", "127.0.0.1:0"], args].concat())
}

/// The process's threads: one directory each in /proc/PID/task.
fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn one_worker_thread_per_cpu_however_many_connections() {
    let s = start(&[]);
    let mut conns: Vec<Conn> = (0..300).map(|_| Conn::new(s.connect())).collect();
    for c in &mut conns {
        c.send(GET); // all 300 open and waiting at once
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c
            .response(false)
            .unwrap_or_else(|e| panic!("conn {i}: {e}"));
        assert_eq!(r.raw, OK_KEEP_ALIVE, "conn {i}");
    }
    // Lesson 3 would have 300 connection threads here. tokio: its workers, the main thread
    // (in block_on) and the shared crate's signal thread — nothing per connection.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(threads(s.pid), cpus + 2);
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_idle_timeout() {
    // 2 s, against the 500 ms asserted below: on a loaded machine the client may still be
    // filling the server's receive buffer for a while after the server's write began to wait.
    let s = start(&["--proto", "echo", "--idle-timeout", "2"]);
    let mut c = s.connect();
    c.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    // Send without reading until every buffer between us is full: the server's write waits
    // for us, so it has stopped reading (backpressure), and now nothing moves either way.
    let chunk = vec![b'x'; 64 * 1024];
    let (mut written, mut last_progress) = (0usize, Instant::now());
    loop {
        match c.write(&chunk) {
            Ok(n) => (written, last_progress) = (written + n, Instant::now()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("closed while we were still sending: {e}"),
        }
        assert!(written < 1 << 30, "the server never stopped reading");
    }
    // Wait, still without reading, for the server to give up on its write. It closes with our
    // bytes unread, so its kernel sends an RST: POLLERR | POLLHUP here (always reported).
    let mut fds = [PollFd::new(c.as_fd(), PollFlags::empty())];
    let ready = poll(&mut fds, PollTimeout::try_from(STEP).expect("STEP fits")).expect("poll");
    assert_eq!(ready, 1, "still open after {STEP:?} in which nothing moved");
    assert!(
        last_progress.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?} after the last byte moved",
        last_progress.elapsed()
    );
    echo_probe(s.addr, 1000); // and the server goes on
}

#[test]
fn a_lingering_close_ends_even_if_the_client_never_closes() {
    let s = start(&[]);
    let stream = s.connect();
    let mut raw = stream.try_clone().expect("clone");
    let mut c = Conn::new(stream);
    // Connection: close with bytes behind it: the server answers, half-closes and lingers.
    c.send(&[GET_CLOSE, b"junk the server will never read"].concat());
    assert_eq!(c.read_to_end(), (OK_CLOSE.to_vec(), End::Eof));
    let eof = Instant::now();
    // We keep sending; while it lingers the server discards it. Once it closes for good, its
    // kernel answers our next byte with an RST, and a write after that fails.
    while raw.write_all(b"j").is_ok() {
        assert!(eof.elapsed() < STEP, "still lingering after {STEP:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        eof.elapsed() >= Duration::from_secs(1),
        "the linger (2 s) ended after only {:?}",
        eof.elapsed()
    );
}
