//! Echo workloads against in-test servers: correct, byte-flipping, closing early, silent,
//! stalling, serving one connection at a time.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;

#[test]
fn a_correct_echo_server_passes_every_size() {
    let server = TestServer::start(|_, c| echo(c));
    for size in ["1", "23", "24", "64", "70000"] {
        let (r, j) = run_json(server.addr, &["-c", "4", "-n", "50", "--size", size]);
        assert_eq!(r.code, 0, "size {size}: {}\n{}", r.stderr, r.stdout);
        assert_eq!(num(&j, "/transfer/completed"), 200);
        assert_eq!(num(&j, "/errors/total"), 0);
        assert_eq!(num(&j, "/latency_us/count"), 200);
        let bytes = 200 * size.parse::<u64>().unwrap();
        assert_eq!(num(&j, "/transfer/bytes_sent"), bytes);
        assert_eq!(num(&j, "/transfer/bytes_received"), bytes);
        assert_eq!(num(&j, "/fairness/min"), 50);
        assert_eq!(num(&j, "/fairness/max"), 50);
        assert_eq!(num(&j, "/connect/established"), 4);
        assert_eq!(j["ok"], true);
    }
}

#[test]
fn a_flipped_byte_is_a_mismatch_and_fails_the_run() {
    // Byte 1000 of each connection's stream (inside its 16th message) comes back changed.
    let server =
        TestServer::start(|_, c| echo_with(c, |at, b| if at == 1000 { b ^ 1 } else { b }, None));
    let (r, j) = run_json(server.addr, &["-c", "3", "-n", "40"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(num(&j, "/errors/mismatch"), 3);
    // The 15 messages before the flip verified; the slot is given up after it (-n run).
    assert_eq!(num(&j, "/transfer/completed"), 3 * 15);
    assert_eq!(j["ok"], false);
    // A wrong byte is never excused.
    let (r, _) = run_json(server.addr, &["-c", "1", "-n", "40", "--allow-errors"]);
    assert_eq!(r.code, 1);
}

#[test]
fn a_header_byte_of_another_connection_is_a_mismatch() {
    // Flipping the connection-id field (byte 0 of message 2) is caught like any other byte.
    let server =
        TestServer::start(|_, c| echo_with(c, |at, b| if at == 128 { b ^ 0x80 } else { b }, None));
    let (r, j) = run_json(server.addr, &["-c", "1", "-n", "5"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/errors/mismatch"), 1);
    assert_eq!(num(&j, "/transfer/completed"), 2);
}

#[test]
fn extra_bytes_from_the_server_are_a_mismatch() {
    let server = TestServer::start(|_, mut c| {
        use std::io::Write;
        let mut buf = [0u8; 64];
        if c.read_exact(&mut buf).is_ok() {
            let _ = c.write_all(&buf);
            let _ = c.write_all(b"surprise");
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let (r, j) = run_json(server.addr, &["-c", "1", "-n", "2"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/errors/mismatch"), 1);
}

#[test]
fn an_early_close_counts_as_early_eof() {
    // Each connection is closed after three 64-byte messages.
    let server = TestServer::start(|_, c| echo_with(c, |_, b| b, Some(3 * 64)));
    let (r, j) = run_json(server.addr, &["-c", "4", "-n", "10"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/errors/early_eof"), 4);
    assert_eq!(num(&j, "/errors/total"), 4);
    assert_eq!(num(&j, "/transfer/completed"), 12);
    // A network error is excused by --allow-errors.
    let (r, j) = run_json(server.addr, &["-c", "2", "-n", "10", "--allow-errors"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(num(&j, "/errors/early_eof"), 2);
    assert_eq!(j["ok"], true);
}

#[test]
fn a_silent_server_is_a_read_timeout() {
    let server = TestServer::start(|_, mut c| {
        let mut sink = [0u8; 1024];
        while matches!(c.read(&mut sink), Ok(1..)) {}
    });
    let (r, j) = run_json(server.addr, &["-c", "2", "-n", "1", "--timeout", "300ms"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/errors/read_timeout"), 2);
    assert_eq!(num(&j, "/transfer/completed"), 0);
}

/// Lesson 1's punchline: an iterative server gives one connection everything and the others
/// nothing. They are reported as starved in the fairness line — not as errors.
#[test]
fn starved_connections_are_reported_and_not_errors() {
    let server = TestServer::iterative(|_, c| echo(c));
    let (r, j) = run_json(server.addr, &["-c", "4", "-d", "1s"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(num(&j, "/errors/total"), 0);
    assert_eq!(num(&j, "/fairness/completed_none"), 3);
    assert_eq!(num(&j, "/fairness/starved"), 3);
    assert_eq!(num(&j, "/fairness/min"), 0);
    assert_eq!(num(&j, "/fairness/median"), 0);
    assert!(num(&j, "/fairness/max") > 0);
    assert_eq!(num(&j, "/fairness/max"), num(&j, "/transfer/completed"));
    assert!(float(&j, "/fairness/jain_index") < 0.26);
    // The same in the human report.
    let addr = server.addr.to_string();
    let r = run(&["--addr", &addr, "-c", "4", "-d", "1s"]);
    assert!(
        r.stdout.contains("3 of 4 completed none (3 starved"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("errors         none"), "{}", r.stdout);
    // And a short timeout turns the wait into read timeouts: the one way starvation counts.
    let (r, j) = run_json(server.addr, &["-c", "3", "-d", "1s", "--timeout", "200ms"]);
    assert_eq!(r.code, 1);
    assert!(num(&j, "/errors/read_timeout") >= 2);
}

/// Open loop: a server that stalls 500 ms once. Every message scheduled during the stall is
/// charged the time it waited, not just the one that hit the stall (coordinated omission).
#[test]
fn the_open_loop_charges_a_stall_to_every_message_it_delayed() {
    let server = TestServer::start(|_, c| {
        echo_with(
            c,
            |at, b| {
                if at == 20 * 64 {
                    std::thread::sleep(Duration::from_millis(500));
                }
                b
            },
            None,
        )
    });
    let (r, j) = run_json(server.addr, &["-c", "1", "-n", "100", "--rate", "100"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 100);
    assert_eq!(j["config"]["loop"], "open");
    // Messages 20..29 were due during the first 100 ms of the stall: each waited >= 400 ms.
    assert!(
        float(&j, "/latency_us/p90") >= 400_000.0,
        "{}",
        j["latency_us"]
    );
    // The schedule held: 100 messages at 100/s take about a second, never less than 0.99 s.
    assert!(float(&j, "/transfer/duration_s") >= 0.98);
}

#[test]
fn hold_keeps_every_connection_then_checks_it() {
    let server = TestServer::start(|_, c| echo(c));
    let (r, j) = run_json(server.addr, &["-c", "6", "--hold", "500ms"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/connections/established_at_start"), 6);
    assert_eq!(num(&j, "/connections/held_after_hold"), 6);
    assert_eq!(num(&j, "/connections/peak_established"), 6);
    assert_eq!(num(&j, "/transfer/completed"), 6);
    assert!(float(&j, "/config/hold_s") == 0.5);
}

#[test]
fn hold_counts_connections_the_server_drops() {
    // The server closes its first connection 100 ms in, during the hold.
    let server = TestServer::start(|i, c| {
        if i == 0 {
            std::thread::sleep(Duration::from_millis(100));
            drop(c);
        } else {
            echo(c)
        }
    });
    let (r, j) = run_json(server.addr, &["-c", "4", "--hold", "1s", "--threads", "1"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/connections/established_at_start"), 4);
    assert_eq!(num(&j, "/connections/held_after_hold"), 3);
    assert_eq!(num(&j, "/errors/early_eof"), 1);
    assert_eq!(num(&j, "/transfer/completed"), 3);
}

#[test]
fn connect_rate_ramps_the_connects() {
    let server = TestServer::start(|_, c| echo(c));
    let (r, j) = run_json(
        server.addr,
        &["-c", "10", "-n", "1", "--connect-rate", "20"],
    );
    assert_eq!(r.code, 0);
    // Connection 9 starts 9/20 s after the first: the phase cannot be shorter.
    assert!(float(&j, "/connect/duration_s") >= 0.45, "{}", j["connect"]);
    assert_eq!(num(&j, "/connect/established"), 10);
}

#[test]
fn source_ips_spread_the_connections() {
    let server = TestServer::start(|_, c| echo(c));
    let (r, j) = run_json(
        server.addr,
        &["-c", "6", "-n", "2", "--source-ips", "127.0.0.2-127.0.0.3"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 12);
    let mut ips: Vec<String> = server
        .peers
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.ip().to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips, ["127.0.0.2", "127.0.0.3"]);
}

#[test]
fn processes_merge_their_reports() {
    let server = TestServer::start(|_, c| echo(c));
    let (r, j) = run_json(
        server.addr,
        &["-c", "6", "-n", "50", "--processes", "3", "--threads", "2"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/config/processes"), 3);
    assert_eq!(num(&j, "/transfer/completed"), 300);
    assert_eq!(num(&j, "/latency_us/count"), 300);
    assert_eq!(num(&j, "/connect/latency_us/count"), 6);
    assert_eq!(num(&j, "/connect/attempted"), 6);
    assert_eq!(num(&j, "/fairness/connections"), 6);
    assert_eq!(num(&j, "/fairness/min"), 50);
    assert_eq!(num(&j, "/connections/established_at_start"), 6);
    assert_eq!(num(&j, "/transfer/bytes_received"), 300 * 64);
    // Children's CPU is counted too.
    assert!(float(&j, "/cpu/total_s") > 0.0);
    // And errors from every process are added up.
    let flipper =
        TestServer::start(|_, c| echo_with(c, |at, b| if at == 70 { !b } else { b }, None));
    let (r, j) = run_json(flipper.addr, &["-c", "4", "-n", "5", "--processes", "2"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/errors/mismatch"), 4);
    assert_eq!(num(&j, "/transfer/completed"), 4);
}

/// `examples/uring_floor.rs` (the floor `bench/floor.sh` compares echo_client with) completes
/// every message, with both thread counts the script uses, and counts them right.
#[test]
fn the_io_uring_floor_client_completes_every_message() {
    let bin = example("uring_floor");
    let server = TestServer::start(|_, c| echo(c));
    for threads in ["1", "2"] {
        let out = std::process::Command::new(&bin)
            .args(["--addr", &server.addr.to_string(), "-c", "4", "-n", "50"])
            .args(["--size", "100", "--threads", threads])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("uring_floor    200 messages in"),
            "{stdout}"
        );
        assert!(stdout.contains("client CPU"), "{stdout}");
    }
}

/// examples/echo_server is the floor `bench --targets` measures the lessons against: it must
/// serve both protocols correctly with the flags the harness gives it (echo_client checks
/// every byte, and the exact response for HTTP).
#[test]
fn the_floor_server_serves_echo_and_http_keep_alive() {
    let bin = example("echo_server");
    let bin = bin.to_str().expect("a UTF-8 path");
    for (flags, proto) in [
        (&["--threads", "2"][..], "echo"),
        (&["--threads", "2", "--http"], "http"),
    ] {
        let mut args = vec!["--addr", "127.0.0.1:0"];
        args.extend(flags);
        let server = conformance::server::Server::start(bin, &args);
        let (r, j) = run_json(server.addr, &["--proto", proto, "-c", "8", "-n", "200"]);
        assert_eq!(r.code, 0, "{proto}: {}\n{}", r.stderr, r.stdout);
        assert_eq!(num(&j, "/transfer/completed"), 1600, "{proto}");
        assert_eq!(num(&j, "/errors/total"), 0, "{proto}");
        if proto == "http" {
            // A request whose blank line is split between two reads is answered once, when
            // it ends; two requests in one read get two answers.
            use std::io::Write;
            let mut c = std::net::TcpStream::connect(server.addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r")
                .expect("write");
            std::thread::sleep(Duration::from_millis(50)); // two segments, two reads
            c.write_all(b"\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
                .expect("write");
            let ok = server_common::responses::OK_KEEP_ALIVE;
            let mut got = vec![0; ok.len() * 3];
            c.read_exact(&mut got).expect("three answers");
            assert_eq!(got, ok.repeat(3));
        }
    }
}
