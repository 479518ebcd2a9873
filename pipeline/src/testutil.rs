//! Envelopes for unit tests.

use schemas::{Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};
use uuid::Uuid;

/// A logs envelope with one row per timestamp.
pub fn envelope_at(tenant: &str, timestamps: &[i64]) -> Envelope {
    let t = TenantId::new(tenant).unwrap();
    let id = Uuid::now_v7();
    let mut b = LogBatchBuilder::with_capacity(timestamps.len());
    for (i, ts) in timestamps.iter().enumerate() {
        b.append(&LogRecord {
            ts_ms: *ts,
            received_ms: *ts,
            message: format!("m{i}"),
            input: "test",
            bytes: 2,
            ..Default::default()
        });
    }
    Envelope::new(t.clone(), RecordKind::Logs, id, b.finish(&t, id).unwrap()).unwrap()
}

/// A logs envelope of `rows` rows on 2025-11-24.
pub fn envelope(tenant: &str, rows: usize) -> Envelope {
    let ts: Vec<i64> = (0..rows as i64).map(|i| 1_764_000_000_000 + i).collect();
    envelope_at(tenant, &ts)
}
