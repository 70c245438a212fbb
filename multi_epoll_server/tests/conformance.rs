//! The whole server contract (docs/contract.md) against this crate's binary, default mode.
conformance::suite!("multi_epoll_server");
