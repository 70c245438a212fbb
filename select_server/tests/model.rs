//! What only select(2) does: descriptors at or over FD_SETSIZE (1024) cannot be watched, so
//! their connections are accepted and closed at once, counted, and the others keep being served.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use conformance::client::{Conn, GET};
use conformance::server::{STEP, Server};
use nix::sys::signal::Signal;
use server_common::responses::OK_KEEP_ALIVE;

/// How one connection fared after sending GET: answered, or closed by the server.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Served,
    Refused,
}

fn fate(s: &mut TcpStream) -> Fate {
    // A refused connection may already be closed when we write: a failed write is a refusal too.
    if s.write_all(GET).is_err() {
        return Fate::Refused;
    }
    let mut buf = vec![0u8; OK_KEEP_ALIVE.len()];
    match s.read_exact(&mut buf) {
        Ok(()) if buf == OK_KEEP_ALIVE => Fate::Served,
        Ok(()) => panic!("unexpected answer: {:?}", String::from_utf8_lossy(&buf)),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            Fate::Refused
        }
        Err(e) => panic!("neither served nor closed: {e}"),
    }
}

#[test]
fn connections_over_fd_setsize_are_refused_and_the_rest_served() {
    let bin = env!("CARGO_BIN_EXE_select_server");
    let server = Server::start(bin, &["--addr", "127.0.0.1:0"]);
    let total = 1200;
    let mut conns: Vec<TcpStream> = (0..total).map(|_| server.connect()).collect();
    let fates: Vec<Fate> = conns.iter_mut().map(fate).collect();
    let served = fates.iter().filter(|f| **f == Fate::Served).count();
    let refused = total - served;

    // Descriptors 0–2 are stdio and 3 the listener: about 1,020 fit below 1024. The kernel hands
    // out the lowest free number, and we connected one after the other, so the first ones fit.
    assert!((1000..1024).contains(&served), "served {served} of {total}");
    assert!(
        fates[..900].iter().all(|f| *f == Fate::Served),
        "the first connections are served"
    );

    // The early connections are still served after the refusals.
    for s in conns.iter_mut().take(5) {
        assert_eq!(fate(s), Fate::Served);
    }

    // Free some descriptors: a new client is served again (retried: the server notices the
    // closes a moment after we make them).
    conns.truncate(800);
    let (t0, mut late) = (Instant::now(), 0);
    loop {
        let mut c = Conn::new(server.connect());
        c.send(GET);
        match c.response(false) {
            Ok(r) => {
                assert_eq!(r.raw, OK_KEEP_ALIVE);
                break;
            }
            Err(_) if t0.elapsed() < STEP => {
                late += 1; // refused: the closes were not noticed yet
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("not served after descriptors were freed: {e}"),
        }
    }

    let stderr = server.stderr();
    assert!(
        stderr.contains("FD_SETSIZE"),
        "the refusals are logged: {stderr}"
    );
    assert!(
        stderr.lines().count() <= 12,
        "logged at most once a second, not once per refusal: {stderr}"
    );
    let stopped = server.stop(Signal::SIGTERM);
    let line = stopped
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("refused over FD_SETSIZE: "))
        .unwrap_or_else(|| panic!("no refusal line in the summary:\n{}", stopped.stdout));
    let counted: usize = line.parse().expect("a number");
    // Our refused connections, plus any retry above that came before the closes were noticed.
    assert_eq!(counted, refused + late, "the summary counts every refusal");
}
