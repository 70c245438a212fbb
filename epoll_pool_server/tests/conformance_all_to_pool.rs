//! The whole server contract again, against `--all-to-pool`: every request's answer waits for a
//! worker and comes back through the eventfd. (`conformance.rs`: the default, costly work only.)
conformance::suite!("epoll_pool_server", args = ["--all-to-pool"], forks = false);
