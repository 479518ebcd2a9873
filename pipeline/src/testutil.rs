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

/// A logs envelope of `rows` rows with distinct timestamps from `first`
/// (milliseconds after 2025-11-24T16:00Z).
pub fn envelope_with_rows(tenant: &str, first: u64, rows: u64) -> Envelope {
    let ts: Vec<i64> = (first..first + rows)
        .map(|i| 1_764_000_000_000 + i as i64)
        .collect();
    envelope_at(tenant, &ts)
}

/// Every Parquet object under the lake as its readers see it (the live
/// view), as a sorted list of (batch id, ts) rows.
pub async fn lake_rows(lake: &crate::Lake) -> Vec<(String, i64)> {
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::TimestampMillisecondType;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let store = lake.store();
    let prefix = lake.kind_prefix(RecordKind::Logs);
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut rows = Vec::new();
    for meta in objects
        .iter()
        .filter(|m| m.location.extension() == Some("parquet"))
    {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch
                .column_by_name("batch_id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            let ts = batch
                .column(1)
                .as_primitive::<TimestampMillisecondType>()
                .clone();
            for i in 0..batch.num_rows() {
                rows.push((ids.value(i).to_string(), ts.value(i)));
            }
        }
    }
    rows.sort();
    rows
}

/// Names of every object in the lake, manifests included (raw view).
pub async fn object_names(lake: &crate::Lake) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = lake.kind_prefix(RecordKind::Logs);
    let objects: Vec<_> = lake
        .raw_store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<String> = objects
        .iter()
        .filter_map(|m| m.location.filename().map(String::from))
        .collect();
    names.sort();
    names
}
