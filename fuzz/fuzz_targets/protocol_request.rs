//! The worker's decoder of supervisor frames (see `sandbox::protocol::fuzzing::request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandbox::protocol::fuzzing::request(data));
