//! The whole server contract (docs/contract.md) against this crate's binary.
conformance::suite!("threadpool_accept_main");
