//! The whole server contract (docs/contract.md) against this crate's binary.
conformance::suite!("cgi_thread_server");
