use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use chrono::{DateTime, NaiveDate};
use futures::FutureExt;
use futures::future::BoxFuture;

use schemas::Envelope;

use super::config::ParquetSinkConfig;
use super::encoder::encode;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::metrics::PipelineMetrics;
use crate::sinks::Sink;

use schemas::time::DAY_MS as MS_PER_DAY;

pub struct ParquetSink {
    config: ParquetSinkConfig,
    lake: Lake,
    metrics: PipelineMetrics,
}

impl ParquetSink {
    pub(super) fn new(config: ParquetSinkConfig, lake: Lake, metrics: PipelineMetrics) -> Self {
        Self {
            config,
            lake,
            metrics,
        }
    }

    async fn write_envelope(&self, envelope: &Envelope) -> Result<()> {
        let started = Instant::now();
        let name = format!("{}.parquet", envelope.batch_id());
        for (date, part) in split_by_date(envelope.batch())? {
            let path = self
                .lake
                .object_path(envelope.kind(), envelope.tenant(), date, &name);
            let config = self.config.clone();
            let bytes = tokio::task::spawn_blocking(move || encode(&part, &config))
                .await
                .map_err(|e| Error::Sink {
                    sink: "parquet",
                    message: format!("encoder task failed: {e}"),
                })??;
            self.lake.put(&path, bytes).await?;
            if self.config.fsync {
                let lake = self.lake.clone();
                tokio::task::spawn_blocking(move || lake.sync(&path))
                    .await
                    .map_err(|e| Error::Sink {
                        sink: "parquet",
                        message: format!("fsync task failed: {e}"),
                    })??;
            }
        }
        self.metrics
            .observe_write("parquet", envelope, started.elapsed());
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<()>> {
        async move {
            let outcome = self.write_envelope(envelope).await;
            if outcome.is_err() {
                self.metrics
                    .sink_errors
                    .with_label_values(&["parquet"])
                    .inc();
            }
            outcome
        }
        .boxed()
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            // Listing the root proves the store is reachable and readable.
            use futures::TryStreamExt;
            let store = self.lake.store();
            let prefix = self.lake.kind_prefix(schemas::RecordKind::Logs);
            let mut listing = store.list(Some(&prefix));
            listing.try_next().await?;
            Ok(())
        }
        .boxed()
    }
}

/// Splits a batch by the UTC date of its `ts` column (column 1 of every
/// schema). The common case — one date — returns the batch itself.
fn split_by_date(batch: &RecordBatch) -> Result<Vec<(NaiveDate, RecordBatch)>> {
    let ts = batch
        .column(1)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| Error::Sink {
            sink: "parquet",
            message: "column ts is not a millisecond timestamp".into(),
        })?;
    let day = |i: usize| ts.value(i).div_euclid(MS_PER_DAY);
    if ts.is_empty() {
        return Ok(vec![]);
    }
    let first = day(0);
    if (1..ts.len()).all(|i| day(i) == first) {
        return Ok(vec![(to_date(first)?, batch.clone())]);
    }
    let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for i in 0..ts.len() {
        groups.entry(day(i)).or_default().push(i as u32);
    }
    groups
        .into_iter()
        .map(|(d, rows)| {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            Ok((to_date(d)?, part))
        })
        .collect()
}

fn to_date(day: i64) -> Result<NaiveDate> {
    DateTime::from_timestamp_millis(day * MS_PER_DAY)
        .map(|t| t.date_naive())
        .ok_or_else(|| Error::Sink {
            sink: "parquet",
            message: format!("event day {day} is out of range"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::envelope_at;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use prometheus::Registry;

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    fn sink(dir: &std::path::Path) -> ParquetSink {
        let lake = Lake::local(dir).unwrap();
        let metrics = PipelineMetrics::new(&Registry::new()).unwrap();
        ParquetSinkConfig::default().build(lake, metrics).unwrap()
    }

    #[tokio::test]
    async fn writes_one_file_per_date_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path());
        // 2025-11-25 23:59:59.000 and the next two milliseconds across midnight.
        let env = envelope_at(
            "acme",
            &[1_764_115_199_000, 1_764_115_200_000, 1_764_115_200_001],
        );
        sink.write(&env).await.unwrap();
        sink.write(&env).await.unwrap(); // replay
        let id = env.batch_id();
        assert_eq!(
            files(dir.path()),
            [
                format!("logs/tenant_id=acme/date=2025-11-25/{id}.parquet"),
                format!("logs/tenant_id=acme/date=2025-11-26/{id}.parquet"),
            ]
        );
        let path = dir
            .path()
            .join(format!("logs/tenant_id=acme/date=2025-11-26/{id}.parquet"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
        sink.healthcheck().await.unwrap();
    }
}
