//! Fuzzing support (`fuzz/`, `scripts/fuzz.sh`): the bus envelope entry
//! point, and the inputs kept for every target, which each crate's unit
//! tests replay so a crash once found stays fixed.

use crate::{Envelope, EnvelopeHeaders};

/// Bus envelopes: valid headers, any payload (bytes from the bus can come
/// from anywhere). Must neither panic nor hang.
pub fn envelope(data: &[u8]) {
    let kinds: [&[u8]; 3] = [b"logs", b"devices", b"usage"];
    let kind = kinds[data.first().map_or(0, |b| *b as usize % kinds.len())];
    let pairs: [(&str, &[u8]); 5] = [
        ("tenant", b"fuzz"),
        ("kind", kind),
        ("schema_version", b"1.0"),
        ("batch_id", b"0190a6f1-0000-7000-8000-000000000000"),
        ("produced_at", b"1795687200000"),
    ];
    if let Ok(headers) = EnvelopeHeaders::from_pairs(pairs) {
        let _ = Envelope::decode(headers, data.get(1..).unwrap_or_default());
    }
}

/// Every input kept for fuzz target `target`: the crashes once found
/// (`fuzz/regressions/<target>/`) and the corpus (`fuzz/corpus/<target>/`).
pub fn inputs(target: &str) -> Vec<Vec<u8>> {
    // At run time (cargo sets it): a binary reused from another checkout
    // sharing the target directory must read this checkout's corpus.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let root = std::path::Path::new(&manifest).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn envelope_fuzz_inputs_do_not_panic() {
        for data in super::inputs("envelope") {
            super::envelope(&data);
        }
        super::envelope(b"");
    }
}
