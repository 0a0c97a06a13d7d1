//! The supervisor's decoder of worker frames (see `sandbox::protocol::fuzzing::event`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandbox::protocol::fuzzing::event(data));
