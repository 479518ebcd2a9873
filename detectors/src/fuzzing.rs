//! Fuzzing entry point (`fuzz/`, `scripts/fuzz.sh`) for the training
//! upload parser; the unit test replays every kept input.

use crate::training::{Format, Label, Limits, parse};

/// Training data uploads (CSV and JSON, polars): must refuse, not panic.
pub fn training_upload(data: &[u8]) {
    let limits = Limits {
        max_rows: 2_000,
        ..Limits::default()
    };
    let _ = parse(data, Format::Csv, Label::Auto, &limits);
    let _ = parse(data, Format::Json, Label::Auto, &limits);
}

#[cfg(test)]
mod tests {
    #[test]
    fn training_upload_fuzz_inputs_do_not_panic() {
        for data in schemas::fuzzing::inputs("training_upload") {
            super::training_upload(&data);
        }
    }
}
