//! The whole server contract (docs/contract.md) against this crate's binary.
conformance::suite!("io_uring_server");
