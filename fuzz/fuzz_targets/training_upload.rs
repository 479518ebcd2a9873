#![no_main]
//! Training data uploads (CSV and JSON, polars): must refuse, not panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| detectors::fuzzing::training_upload(data));
