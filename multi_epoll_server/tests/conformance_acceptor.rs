//! The whole server contract again, against `--distribute acceptor`: an acceptor thread hands
//! every connection to a loop thread over a socketpair (SCM_RIGHTS).
conformance::suite!(
    "multi_epoll_server",
    args = ["--distribute", "acceptor"],
    forks = false
);
