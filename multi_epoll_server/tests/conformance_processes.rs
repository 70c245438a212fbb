//! The whole server contract again, against `--processes`: the supervisor binds, announces,
//! reports and stops; forked loop processes serve (so the suite also checks that they are
//! reaped and that none outlives the supervisor). `conformance.rs` runs the default, threads.
conformance::suite!("multi_epoll_server", args = ["--processes"], forks = true);
