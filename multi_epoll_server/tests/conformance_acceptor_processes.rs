//! The whole server contract again, against `--distribute acceptor --processes`: an acceptor
//! process hands every connection to a loop process; the supervisor holds both ends of every
//! socketpair, so a killed loop's replacement (the worker-kill case) finds its queue intact.
conformance::suite!(
    "multi_epoll_server",
    args = ["--distribute", "acceptor", "--processes"],
    forks = true
);
