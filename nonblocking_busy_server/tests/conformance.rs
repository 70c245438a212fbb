//! The whole server contract (docs/contract.md) against this crate's binary.
conformance::suite!("nonblocking_busy_server");
