#![no_main]
//! Bus envelopes: valid headers, any payload.
libfuzzer_sys::fuzz_target!(|data: &[u8]| schemas::fuzzing::envelope(data));
