//! The audit trail's reader: segment splitting and record parsing (see
//! `supervisor::audit::fuzzing::segment`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| supervisor::audit::fuzzing::segment(data));
