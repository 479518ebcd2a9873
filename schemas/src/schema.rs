//! One Arrow schema per record kind.
//!
//! Every schema starts with the same four columns — `tenant_id`, `ts` (event
//! time), `received_at` and `batch_id` — so partitioning, sinks and queries
//! never have to guess where the tenant or the time is. Within a major version
//! only additive changes are allowed (new nullable columns at the end, minor
//! bump); a consumer accepts a batch of the same major version whose minor is
//! not newer than its own, or newer with extra trailing columns that it drops.
//!
//! Types are chosen so that the same columns map onto ClickHouse 18.16 and
//! later: no maps (structured data is a JSON string), no nanosecond times.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Error;
use crate::kind::RecordKind;

/// `MAJOR.MINOR`; carried in the `schema_version` envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SchemaVersion {
    pub major: u16,
    pub minor: u16,
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for SchemaVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidSchemaVersion(s.chars().take(32).collect());
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

/// The current version of each kind's schema.
pub fn version(kind: RecordKind) -> SchemaVersion {
    match kind {
        // 1.1 added `source_country`, `source_asn`, `source_as_org` (GeoIP).
        RecordKind::Logs => SchemaVersion { major: 1, minor: 1 },
        RecordKind::Devices
        | RecordKind::Scans
        | RecordKind::Findings
        | RecordKind::Anomalies
        | RecordKind::ApiRequests
        | RecordKind::Detections => SchemaVersion { major: 1, minor: 0 },
        // 1.1 added `subject` (the device a `devices` row counts).
        RecordKind::Usage => SchemaVersion { major: 1, minor: 1 },
    }
}

/// Event and receive times: milliseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn time(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}

/// The columns every kind starts with.
fn common() -> Vec<Field> {
    vec![
        utf8("tenant_id", false),
        time("ts", false),
        time("received_at", false),
        utf8("batch_id", false),
    ]
}

fn build(rest: Vec<Field>) -> SchemaRef {
    let mut fields = common();
    fields.extend(rest);
    Arc::new(Schema::new(fields))
}

static LOGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        utf8("host", true),
        utf8("app", true),
        // RFC 5424 PROCID is free text (up to 128 chars), so it stays a string.
        utf8("pid", true),
        Field::new("severity", DataType::UInt8, true),
        Field::new("facility", DataType::UInt8, true),
        utf8("msg_id", true),
        utf8("message", false),
        utf8("source_ip", true),
        // JSON object: RFC 5424 structured data or the extra fields of a JSON log.
        utf8("structured_data", true),
        // The bytes as received, kept when parsing failed or was lossy.
        Field::new("raw", DataType::Binary, true),
        utf8("parse_status", false),
        // Which receiver took the record: http, syslog_udp, syslog_tcp, hec, bulk...
        utf8("input", false),
        // Size of the record as received; the basis of `log_bytes` usage.
        Field::new("bytes", DataType::UInt32, false),
        // 1.1 — where `source_ip` is (GeoIP, filled by the pipeline when a
        // database is configured): ISO 3166-1 alpha-2 country, autonomous
        // system number and its organization.
        utf8("source_country", true),
        Field::new("source_asn", DataType::UInt32, true),
        utf8("source_as_org", true),
    ])
});

static DEVICES: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        utf8("device_id", false),
        utf8("ip", true),
        utf8("mac", true),
        utf8("hostname", true),
        utf8("os", true),
        utf8("vendor", true),
        time("first_seen", false),
        time("last_seen", false),
        utf8("source", false),
    ])
});

static SCANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        utf8("scan_id", false),
        utf8("target", true),
        utf8("scanner", true),
        time("started", true),
        time("finished", true),
        Field::new("hosts_up", DataType::UInt32, true),
        Field::new("hosts_total", DataType::UInt32, true),
        utf8("status", false),
    ])
});

static FINDINGS: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        utf8("finding_id", false),
        utf8("scan_id", true),
        utf8("device_id", true),
        utf8("ip", true),
        Field::new("port", DataType::UInt16, true),
        utf8("protocol", true),
        utf8("service", true),
        utf8("product", true),
        // info, low, medium, high, critical
        utf8("severity", false),
        Field::new("cvss", DataType::Float32, true),
        utf8("title", false),
        utf8("cve", true),
    ])
});

static ANOMALIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        utf8("anomaly_id", false),
        utf8("model_id", false),
        Field::new("model_version", DataType::UInt32, false),
        utf8("entity", false),
        time("window_start", false),
        time("window_end", false),
        Field::new("score", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
        utf8("severity", false),
        // JSON objects: feature values, and per-feature share of the isolation.
        utf8("features", false),
        utf8("explanation", false),
    ])
});

static USAGE: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        Field::new("day", DataType::Date32, false),
        // log_events, log_bytes, scans, findings, devices, api_requests
        utf8("metric", false),
        Field::new("value", DataType::UInt64, false),
        // `devices` rows name the device they count (one row per device, day
        // and source batch), so distinct devices per month stay exact:
        // count(DISTINCT subject). Null for the additive metrics.
        utf8("subject", true),
    ])
});

static API_REQUESTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    build(vec![
        utf8("method", false),
        utf8("route", false),
        Field::new("status", DataType::UInt16, false),
        Field::new("latency_ms", DataType::Float64, false),
    ])
});

static DETECTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    // `ts` and `received_at` are the matching row's; `batch_id` is the
    // detections batch's own (derived from the source batch's id, so a
    // replayed source batch derives the same one).
    build(vec![
        // Derived from (source batch, rule, row): the same match has the
        // same id however often the source batch is replayed.
        utf8("detection_id", false),
        utf8("rule_id", false),
        utf8("rule_title", false),
        // Sigma's level: informational, low, medium, high, critical.
        utf8("level", false),
        // JSON array of the rule's tags (attack.t1110, ...).
        utf8("tags", false),
        // The kind of the record that matched (`logs`) and where it is.
        utf8("source_kind", false),
        utf8("source_batch_id", false),
        Field::new("source_row", DataType::UInt32, false),
        // The matching row's key fields.
        utf8("host", true),
        utf8("app", true),
        utf8("source_ip", true),
        utf8("message", true),
        // Correlation detections: JSON of what fired (type, group values,
        // count, first event time); null for a single rule's match.
        utf8("context", true),
    ])
});

/// The Arrow schema of `kind` at its current version.
pub fn schema(kind: RecordKind) -> SchemaRef {
    match kind {
        RecordKind::Logs => LOGS.clone(),
        RecordKind::Devices => DEVICES.clone(),
        RecordKind::Scans => SCANS.clone(),
        RecordKind::Findings => FINDINGS.clone(),
        RecordKind::Anomalies => ANOMALIES.clone(),
        RecordKind::Usage => USAGE.clone(),
        RecordKind::ApiRequests => API_REQUESTS.clone(),
        RecordKind::Detections => DETECTIONS.clone(),
    }
}

/// The kind whose schema has exactly these fields, if any (used to name the
/// actual kind in a wrong-kind error).
pub fn kind_of(candidate: &Schema) -> Option<RecordKind> {
    RecordKind::ALL
        .into_iter()
        .find(|k| fields_match(schema(*k).as_ref(), candidate).is_ok())
}

/// Checks that `actual` has every field of `expected`, in order, with the same
/// type and nullability; extra trailing fields are reported via `Ok(extra)`.
pub(crate) fn fields_match(expected: &Schema, actual: &Schema) -> Result<usize, String> {
    if let Some(missing) = expected
        .fields()
        .iter()
        .find(|e| actual.field_with_name(e.name()).is_err())
    {
        return Err(format!(
            "missing column {:?} ({} columns, expected {})",
            missing.name(),
            actual.fields().len(),
            expected.fields().len()
        ));
    }
    for (i, (e, a)) in expected.fields().iter().zip(actual.fields()).enumerate() {
        if e.name() != a.name() {
            return Err(format!(
                "column {i} is {:?}, expected {:?}",
                a.name(),
                e.name()
            ));
        }
        if e.data_type() != a.data_type() {
            return Err(format!(
                "column {:?} has type {}, expected {}",
                a.name(),
                a.data_type(),
                e.data_type()
            ));
        }
        if e.is_nullable() != a.is_nullable() {
            return Err(format!(
                "column {:?} nullability is {}, expected {}",
                a.name(),
                a.is_nullable(),
                e.is_nullable()
            ));
        }
    }
    Ok(actual.fields().len() - expected.fields().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_starts_with_the_common_columns() {
        for k in RecordKind::ALL {
            let s = schema(k);
            let names: Vec<_> = s
                .fields()
                .iter()
                .take(4)
                .map(|f| f.name().as_str())
                .collect();
            assert_eq!(names, ["tenant_id", "ts", "received_at", "batch_id"], "{k}");
            assert!(!s.field(0).is_nullable());
            assert_eq!(s.field(1).data_type(), &timestamp_type());
        }
    }

    #[test]
    fn kinds_are_distinguishable_by_schema() {
        for k in RecordKind::ALL {
            assert_eq!(kind_of(&schema(k)), Some(k));
        }
    }

    #[test]
    fn version_parses() {
        let v: SchemaVersion = "1.3".parse().unwrap();
        assert_eq!(v, SchemaVersion { major: 1, minor: 3 });
        assert_eq!(v.to_string(), "1.3");
        for bad in ["1", "a.b", "1.", "", "1.2.3"] {
            assert!(bad.parse::<SchemaVersion>().is_err(), "{bad}");
        }
    }
}
