//! The echo session's properties (server_common/src/fuzzing.rs): the output is the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    server_common::fuzzing::echo_properties(data);
});
