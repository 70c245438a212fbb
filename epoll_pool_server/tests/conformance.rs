//! The whole server contract (docs/contract.md) against this crate's binary.
conformance::suite!("epoll_pool_server");
