//! HTTP workloads against in-test servers: the contract's responses split at every byte,
//! dribbled, malformed, non-2xx, and `Connection: close` with a reconnect per request.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use server_common::responses::OK_KEEP_ALIVE;

/// Response `k` is written in two parts cut at byte `k % len` (a pause between them makes them
/// separate segments), so a run of `len` requests cuts every response at every boundary.
#[test]
fn responses_split_at_every_byte_boundary_are_parsed() {
    let len = OK_KEEP_ALIVE.len() as u64;
    let server = TestServer::start(|_, c| {
        http_with(c, contract_response, |conn, k, r| {
            let cut = (k % r.len() as u64) as usize;
            conn.write_all(&r[..cut])?;
            conn.flush()?;
            std::thread::sleep(Duration::from_millis(2));
            conn.write_all(&r[cut..])
        })
    });
    let n = len.to_string();
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "2", "-n", &n]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 2 * len);
    assert_eq!(num(&j, "/transfer/bytes_received"), 2 * len * len);
    assert_eq!(j["transfer"]["unit"], "request");
}

#[test]
fn responses_dribbled_one_byte_at_a_time_are_parsed() {
    let server = TestServer::start(|_, c| {
        http_with(c, contract_response, |conn, _, r| {
            for b in r {
                conn.write_all(std::slice::from_ref(b))?;
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        })
    });
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "2", "-n", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 6);
}

#[test]
fn keep_alive_against_the_contract_response() {
    let server = TestServer::start(|_, c| http_with(c, contract_response, write_whole));
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "3", "-n", "100"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 300);
    assert_eq!(num(&j, "/connect/attempted"), 3);
}

#[test]
fn connection_close_reconnects_for_every_request() {
    let server = TestServer::start(|_, c| http_with(c, contract_response, write_whole));
    let (r, j) = run_json(
        server.addr,
        &["--proto", "http", "--close", "-c", "2", "-n", "5"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 10);
    assert_eq!(num(&j, "/connect/attempted"), 10);
    assert_eq!(num(&j, "/connect/established"), 10);
    assert_eq!(num(&j, "/errors/total"), 0);
    assert_eq!(server.peers.lock().unwrap().len(), 10);
}

#[test]
fn a_server_announcing_close_is_followed_by_a_reconnect() {
    // Keep-alive requests, but the server closes after every second response, saying so.
    let server = TestServer::start(|_, c| {
        http_with(
            c,
            |k, _| {
                if k == 1 {
                    server_common::responses::OK_CLOSE.to_vec()
                } else {
                    OK_KEEP_ALIVE.to_vec()
                }
            },
            |conn, k, r| {
                conn.write_all(r)?;
                if k == 1 {
                    return Err(std::io::ErrorKind::Other.into()); // ends the loop: close
                }
                Ok(())
            },
        )
    });
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "1", "-n", "6"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/transfer/completed"), 6);
    assert_eq!(num(&j, "/connect/attempted"), 3);
}

#[test]
fn malformed_responses_are_bad_http_and_always_fail() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHello, world!\n"[..], // extra bytes
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
    ] {
        let server = TestServer::start(move |_, c| {
            http_with(c, |_, _| bad.to_vec(), write_whole);
        });
        let (r, j) = run_json(
            server.addr,
            &["--proto", "http", "-c", "1", "-n", "2", "--allow-errors"],
        );
        assert_eq!(r.code, 1, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(
            num(&j, "/errors/bad_http"),
            1,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_non_2xx_status_is_counted_and_excusable() {
    let server = TestServer::start(|_, c| {
        http_with(
            c,
            |_, _| b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec(),
            write_whole,
        )
    });
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "2", "-n", "3"]);
    assert_eq!(r.code, 1);
    assert_eq!(num(&j, "/errors/http_status"), 2);
    let (r, _) = run_json(
        server.addr,
        &["--proto", "http", "-c", "2", "-n", "3", "--allow-errors"],
    );
    assert_eq!(r.code, 0);
}

/// The lesson-1 setting: keep-alive against a server that serves one connection at a time.
#[test]
fn keep_alive_against_an_iterative_server_starves_all_but_one() {
    let server = TestServer::iterative(|_, c| http_with(c, contract_response, write_whole));
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "5", "-d", "1s"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(num(&j, "/fairness/completed_none"), 4);
    assert_eq!(num(&j, "/fairness/starved"), 4);
    assert_eq!(num(&j, "/errors/total"), 0);
    assert!(num(&j, "/transfer/in_flight_at_end") >= 4);
}

/// The end of a -d run with reconnects: replies that arrive after the end, and the server's
/// FIN right behind them, are not part of the run — never counted as early EOFs.
#[test]
fn the_end_of_a_close_run_counts_no_errors() {
    let server = TestServer::start(|_, c| http_with(c, contract_response, write_whole));
    for _ in 0..3 {
        let (r, j) = run_json(
            server.addr,
            &["--proto", "http", "--close", "-c", "8", "-d", "1s"],
        );
        assert_eq!(r.code, 0, "{}", r.stdout);
        assert_eq!(num(&j, "/errors/total"), 0);
        assert!(num(&j, "/transfer/completed") > 0);
    }
}

/// `--mix 3:/work/5`: every third request of each connection goes to /work/5, and the report
/// splits the latency by kind — here against examples/echo_server --http (the floor server,
/// which answers every request alike), with -n as requests per connection.
#[test]
fn mix_reports_cheap_and_expensive_requests_apart() {
    let bin = example("echo_server");
    let bin = bin.to_str().expect("a UTF-8 path");
    let server = conformance::server::Server::start(bin, &["--addr", "127.0.0.1:0", "--http"]);
    // 2 connections × 15 requests: 5 expensive on each; × 30: 10 on each.
    for (n, cheap, expensive) in [("15", 20, 10), ("30", 40, 20)] {
        let args = ["--proto", "http", "--mix", "3:/work/5", "-c", "2", "-n", n];
        let (r, j) = run_json(server.addr, &args);
        assert_eq!(r.code, 0, "-n {n}: {}\n{}", r.stderr, r.stdout);
        assert_eq!(num(&j, "/transfer/completed"), cheap + expensive, "-n {n}");
        assert_eq!(num(&j, "/errors/total"), 0, "-n {n}");
        assert_eq!(num(&j, "/latency_us/count"), cheap + expensive, "-n {n}");
        assert_eq!(num(&j, "/mix/every"), 3);
        assert_eq!(j["mix"]["path"], "/work/5");
        assert_eq!(num(&j, "/mix/cheap/count"), cheap, "-n {n}");
        assert_eq!(num(&j, "/mix/expensive/count"), expensive, "-n {n}");
        // The two parts are the whole: neither part's extremes lie outside the whole's.
        for kind in ["cheap", "expensive"] {
            let at = |f: &str| float(&j, &format!("/mix/{kind}/{f}"));
            assert!(at("max") <= float(&j, "/latency_us/max"), "{kind}");
            assert!(at("min") >= float(&j, "/latency_us/min"), "{kind}");
            assert!(at("p50") <= at("p99") && at("p99") <= at("max"), "{kind}");
        }
    }
    // The human report: the main line unchanged, then one line per kind.
    let addr = server.addr.to_string();
    let args = [
        "--addr",
        &addr,
        "--proto",
        "http",
        "--mix",
        "3:/work/5",
        "-c",
        "2",
    ];
    let r = run(&[&args[..], &["-n", "6"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = |start: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line:\n{}", r.stdout))
            .to_string()
    };
    assert!(line("latency µs ").ends_with("12 samples)"), "{}", r.stdout);
    assert!(
        line("latency, cheap (/) ").ends_with("8 samples)"),
        "{}",
        r.stdout
    );
    assert!(
        line("latency, expensive (/work/5) ").ends_with("4 samples)"),
        "{}",
        r.stdout
    );
    for part in ["p50 ", "p90 ", "p99 ", "p99.9 ", "max "] {
        assert!(line("latency, expensive").contains(part), "{part}");
    }
    // Without --mix: no "mix" object, no extra lines.
    let (r, j) = run_json(server.addr, &["--proto", "http", "-c", "2", "-n", "3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(j.get("mix").is_none(), "{j}");
    let r = run(&["--addr", &addr, "--proto", "http", "-c", "2", "-n", "3"]);
    assert!(!r.stdout.contains("latency, "), "{}", r.stdout);
}

/// What the server sees: on each connection slot, exactly requests 3, 6, 9, … go to the mix's
/// path — also in the open loop, across processes and threads, and with a reconnect per request
/// (`--close`: the count is per slot, so it carries over from one TCP connection to the next).
#[test]
fn mix_sends_every_nth_request_of_each_connection_to_the_path() {
    use std::sync::{Arc, Mutex};
    for extra in [
        &[][..],
        &["--rate", "3000"],
        &["--processes", "2"],
        &["--threads", "2"],
        &["--close"],
    ] {
        // (TCP connection, request number on it, went to /work/5)
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = TestServer::start(move |i, c| {
            let log = log.clone();
            http_with(
                c,
                move |k, head| {
                    let expensive = head.starts_with(b"GET /work/5 HTTP/1.1\r\n");
                    assert!(expensive || head.starts_with(b"GET / HTTP/1.1\r\n"));
                    log.lock().unwrap().push((i, k, expensive));
                    contract_response(k, head)
                },
                write_whole,
            )
        });
        let mut args = vec![
            "--proto",
            "http",
            "--mix",
            "3:/work/5",
            "-c",
            "2",
            "-n",
            "15",
        ];
        args.extend_from_slice(extra);
        let (r, j) = run_json(server.addr, &args);
        assert_eq!(r.code, 0, "{extra:?}: {}\n{}", r.stderr, r.stdout);
        assert_eq!(num(&j, "/transfer/completed"), 30, "{extra:?}");
        assert_eq!(num(&j, "/mix/cheap/count"), 20, "{extra:?}");
        assert_eq!(num(&j, "/mix/expensive/count"), 10, "{extra:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 30, "{extra:?}");
        assert_eq!(seen.iter().filter(|s| s.2).count(), 10, "{extra:?}");
        if !extra.contains(&"--close") {
            // Two keep-alive connections, 15 requests each.
            for &(i, k, expensive) in &seen {
                assert_eq!(expensive, (k + 1) % 3 == 0, "{extra:?}: connection {i}");
            }
        }
    }
}
