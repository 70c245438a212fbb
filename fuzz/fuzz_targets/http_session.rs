//! The HTTP session's properties (server_common/src/fuzzing.rs): never panics, chunking-
//! invariant, framing consistent, bounded. The first two bytes of an input choose the reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    server_common::fuzzing::http_properties(data);
});
