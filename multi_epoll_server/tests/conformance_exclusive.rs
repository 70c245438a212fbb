//! The whole server contract again, against `--distribute exclusive`: one listener, in every
//! loop's epoll with EPOLLEXCLUSIVE; threads. (`conformance.rs`: the default, reuseport.)
conformance::suite!(
    "multi_epoll_server",
    args = ["--distribute", "exclusive"],
    forks = false
);
