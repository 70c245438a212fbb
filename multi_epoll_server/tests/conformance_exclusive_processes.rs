//! The whole server contract again, against `--distribute exclusive --processes`: one listener,
//! held by the supervisor and watched with EPOLLEXCLUSIVE by every loop process.
conformance::suite!(
    "multi_epoll_server",
    args = ["--distribute", "exclusive", "--processes"],
    forks = true
);
