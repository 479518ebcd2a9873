#![no_main]
//! Bearer tokens: anything presented must be refused, never crash.
libfuzzer_sys::fuzz_target!(|data: &[u8]| control::fuzzing::token(data));
