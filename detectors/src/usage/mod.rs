//! Billing-grade usage counting.
//!
//! Every batch that reaches the pipeline yields one `usage` envelope with
//! its counts per tenant, UTC day and metric. The usage envelope's batch id
//! is derived from the source batch id (UUID v5), and its rows are a pure
//! function of the source rows, so a replayed batch produces the very same
//! usage batch — which the sinks store once, like any replay. Daily and
//! monthly figures are sums over these rows; nothing is kept in memory, so a
//! crash loses nothing and counts nothing twice.
//!
//! Decisions (see docs/detectors.md#usage):
//! - The day is the UTC day of `received_at` — when SecureNet accepted the
//!   record — not the event time a client claims: billing cannot be moved
//!   into a closed month by a client's clock, and late data never reopens an
//!   invoice.
//! - `devices` rows carry the device id in `subject`, one row per device,
//!   day and source batch, so distinct devices per day or month are exact
//!   (`count(DISTINCT subject)`), not a sum and not a sketch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use schemas::envelope::constant_utf8;
use schemas::{Envelope, RecordKind};
use uuid::Uuid;

use crate::{Detector, Error, Result};

use schemas::time::DAY_MS as MS_PER_DAY;

/// The metrics, as named in `usage.metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    LogEvents,
    LogBytes,
    Scans,
    Findings,
    Devices,
    ApiRequests,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::LogEvents,
        Metric::LogBytes,
        Metric::Scans,
        Metric::Findings,
        Metric::Devices,
        Metric::ApiRequests,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LogEvents => "log_events",
            Metric::LogBytes => "log_bytes",
            Metric::Scans => "scans",
            Metric::Findings => "findings",
            Metric::Devices => "devices",
            Metric::ApiRequests => "api_requests",
        }
    }

    /// Whether the metric is a sum (every other is a distinct count over
    /// `subject`).
    pub fn is_additive(self) -> bool {
        self != Metric::Devices
    }
}

/// The usage batch id for a source batch: stable across replays.
pub fn usage_batch_id(source: Uuid) -> Uuid {
    Uuid::new_v5(&source, b"securenet.usage.v1")
}

/// One usage row before it becomes Arrow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    day: i32,
    metric: Metric,
    subject: Option<String>,
    value: u64,
}

/// The usage envelope for `source`, or `None` for kinds that are not billed
/// (usage and anomalies themselves) and for empty batches.
pub fn count(source: &Envelope) -> Result<Option<Envelope>> {
    let batch = source.batch();
    let rows = match source.kind() {
        RecordKind::Logs => {
            let bytes = column::<UInt32Array>(batch, "bytes")?;
            let mut per_day: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
            for (i, day) in days(batch)?.enumerate() {
                let e = per_day.entry(day).or_default();
                e.0 += 1;
                e.1 += u64::from(bytes.value(i));
            }
            per_day
                .into_iter()
                .flat_map(|(day, (events, bytes))| {
                    [
                        additive(day, Metric::LogEvents, events),
                        additive(day, Metric::LogBytes, bytes),
                    ]
                })
                .collect()
        }
        RecordKind::Scans => count_rows(batch, Metric::Scans)?,
        RecordKind::Findings => count_rows(batch, Metric::Findings)?,
        RecordKind::ApiRequests => count_rows(batch, Metric::ApiRequests)?,
        RecordKind::Devices => {
            let ids = column::<StringArray>(batch, "device_id")?;
            let mut seen: BTreeSet<(i32, &str)> = BTreeSet::new();
            for (i, day) in days(batch)?.enumerate() {
                if ids.is_valid(i) {
                    seen.insert((day, ids.value(i)));
                }
            }
            seen.into_iter()
                .map(|(day, id)| Row {
                    day,
                    metric: Metric::Devices,
                    subject: Some(id.to_string()),
                    value: 1,
                })
                .collect()
        }
        RecordKind::Usage | RecordKind::Anomalies | RecordKind::Detections => return Ok(None),
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let id = usage_batch_id(source.batch_id());
    let batch = to_batch(source.tenant().as_str(), id, &rows)?;
    Ok(Some(Envelope::new(
        source.tenant().clone(),
        RecordKind::Usage,
        id,
        batch,
    )?))
}

fn additive(day: i32, metric: Metric, value: u64) -> Row {
    Row {
        day,
        metric,
        subject: None,
        value,
    }
}

fn count_rows(batch: &RecordBatch, metric: Metric) -> Result<Vec<Row>> {
    let mut per_day: BTreeMap<i32, u64> = BTreeMap::new();
    for day in days(batch)? {
        *per_day.entry(day).or_default() += 1;
    }
    Ok(per_day
        .into_iter()
        .map(|(day, n)| additive(day, metric, n))
        .collect())
}

/// The UTC day (days since the epoch) of each row's `received_at`.
fn days(batch: &RecordBatch) -> Result<impl Iterator<Item = i32> + '_> {
    let received = column::<TimestampMillisecondArray>(batch, "received_at")?;
    Ok(received
        .values()
        .iter()
        .map(|ms| ms.div_euclid(MS_PER_DAY) as i32))
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Column(name.to_string()))
}

fn to_batch(tenant: &str, id: Uuid, rows: &[Row]) -> Result<RecordBatch> {
    let n = rows.len();
    let day_ms: Vec<i64> = rows.iter().map(|r| i64::from(r.day) * MS_PER_DAY).collect();
    let ts = || {
        Arc::new(TimestampMillisecondArray::from(day_ms.clone()).with_timezone("UTC")) as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        constant_utf8(tenant, n),
        ts(),
        ts(),
        constant_utf8(&id.to_string(), n),
        Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.day))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.subject.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(
        schemas::schema::schema(RecordKind::Usage),
        columns,
    )?)
}

/// [`count`] as a [`Detector`]: its output is written together with the
/// source batch, before the source batch is acknowledged.
#[derive(Debug, Default)]
pub struct UsageCounter;

impl Detector for UsageCounter {
    fn name(&self) -> &'static str {
        "usage"
    }

    fn process_batch(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>> {
        Ok(count(envelope)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
