use super::*;
use arrow::array::AsArray;
use arrow::datatypes::{Date32Type, TimestampMillisecondType, UInt64Type};
use schemas::inventory::{
    DeviceRow, FindingRow, ScanRow, devices_batch, findings_batch, scans_batch,
};
use schemas::{LogBatchBuilder, LogRecord, TenantId};

const DAY: i64 = MS_PER_DAY;
/// 2025-11-26T00:00:00Z
const D: i32 = 20_418;
const D0: i64 = D as i64 * DAY;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn logs(received: &[(i64, u32)]) -> Envelope {
    let id = Uuid::now_v7();
    let mut b = LogBatchBuilder::with_capacity(received.len());
    for &(rcv, bytes) in received {
        b.append(&LogRecord {
            // Event time deliberately a day off: usage follows received_at.
            ts_ms: rcv - DAY,
            received_ms: rcv,
            message: "m".into(),
            bytes,
            input: "http",
            ..Default::default()
        });
    }
    let batch = b.finish(&tenant(), id).unwrap();
    Envelope::new(tenant(), RecordKind::Logs, id, batch).unwrap()
}

/// (day, metric, subject, value) rows of a usage envelope.
fn rows(e: &Envelope) -> Vec<(i32, String, Option<String>, u64)> {
    let b = e.batch();
    let day = b
        .column_by_name("day")
        .unwrap()
        .as_primitive::<Date32Type>();
    let metric = b.column_by_name("metric").unwrap().as_string::<i32>();
    let value = b
        .column_by_name("value")
        .unwrap()
        .as_primitive::<UInt64Type>();
    let subject = b.column_by_name("subject").unwrap().as_string::<i32>();
    (0..b.num_rows())
        .map(|i| {
            (
                day.value(i),
                metric.value(i).to_string(),
                subject.is_valid(i).then(|| subject.value(i).to_string()),
                value.value(i),
            )
        })
        .collect()
}

#[test]
fn logs_count_events_and_bytes_per_received_day() {
    let src = logs(&[(D0 + 5, 100), (D0 + 6, 20), (D0 + DAY + 1, 7)]);
    let usage = count(&src).unwrap().unwrap();
    assert_eq!(usage.kind(), RecordKind::Usage);
    assert_eq!(usage.tenant(), src.tenant());
    assert_eq!(
        rows(&usage),
        vec![
            (D, "log_events".into(), None, 2),
            (D, "log_bytes".into(), None, 120),
            (D + 1, "log_events".into(), None, 1),
            (D + 1, "log_bytes".into(), None, 7),
        ]
    );
    // ts is the day itself, so the usage lands in that day's partition.
    let ts = usage
        .batch()
        .column(1)
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(0), D0);
    assert_eq!(ts.value(2), D0 + DAY);
}

#[test]
fn a_replayed_batch_yields_the_same_usage_batch() {
    let src = logs(&[(D0 + 5, 100), (D0 + 6, 20)]);
    let a = count(&src).unwrap().unwrap();
    let b = count(&src).unwrap().unwrap();
    assert_eq!(a.batch_id(), b.batch_id());
    assert_eq!(a.batch_id(), usage_batch_id(src.batch_id()));
    assert_ne!(a.batch_id(), src.batch_id());
    assert_eq!(a.batch(), b.batch());
    // Another source batch never collides.
    let other = count(&logs(&[(D0 + 5, 100), (D0 + 6, 20)]))
        .unwrap()
        .unwrap();
    assert_ne!(other.batch_id(), a.batch_id());
}

#[test]
fn devices_are_distinct_per_day_and_named() {
    let id = Uuid::now_v7();
    let dev = |rcv: i64, device: &str| DeviceRow {
        ts_ms: rcv,
        received_ms: rcv,
        device_id: device.into(),
        first_seen_ms: rcv,
        last_seen_ms: rcv,
        source: "nmap".into(),
        ..Default::default()
    };
    let batch = devices_batch(
        &tenant(),
        id,
        &[
            dev(D0, "b"),
            dev(D0 + 1, "a"),
            dev(D0 + 2, "b"),
            dev(D0 + DAY, "b"),
        ],
    )
    .unwrap();
    let src = Envelope::new(tenant(), RecordKind::Devices, id, batch).unwrap();
    assert_eq!(
        rows(&count(&src).unwrap().unwrap()),
        vec![
            (D, "devices".into(), Some("a".into()), 1),
            (D, "devices".into(), Some("b".into()), 1),
            (D + 1, "devices".into(), Some("b".into()), 1),
        ]
    );
}

#[test]
fn scans_and_findings_count_rows() {
    let id = Uuid::now_v7();
    let scan = |rcv: i64, n: &str| ScanRow {
        ts_ms: rcv,
        received_ms: rcv,
        scan_id: n.into(),
        status: "done".into(),
        ..Default::default()
    };
    let batch = scans_batch(&tenant(), id, &[scan(D0, "s1"), scan(D0 + 9, "s2")]).unwrap();
    let src = Envelope::new(tenant(), RecordKind::Scans, id, batch).unwrap();
    assert_eq!(
        rows(&count(&src).unwrap().unwrap()),
        vec![(D, "scans".into(), None, 2)]
    );

    let id = Uuid::now_v7();
    let finding = |n: &str| FindingRow {
        ts_ms: D0,
        received_ms: D0,
        finding_id: n.into(),
        severity: "high".into(),
        title: "t".into(),
        ..Default::default()
    };
    let batch = findings_batch(
        &tenant(),
        id,
        &[finding("f1"), finding("f2"), finding("f3")],
    )
    .unwrap();
    let src = Envelope::new(tenant(), RecordKind::Findings, id, batch).unwrap();
    assert_eq!(
        rows(&count(&src).unwrap().unwrap()),
        vec![(D, "findings".into(), None, 3)]
    );
}

#[test]
fn usage_and_anomalies_are_not_billed() {
    let src = logs(&[(D0, 1)]);
    let usage = count(&src).unwrap().unwrap();
    assert!(count(&usage).unwrap().is_none());
}

#[test]
fn metric_names_are_stable() {
    let names: Vec<_> = Metric::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(
        names,
        [
            "log_events",
            "log_bytes",
            "scans",
            "findings",
            "devices",
            "api_requests"
        ]
    );
    assert!(!Metric::Devices.is_additive());
    assert!(Metric::LogBytes.is_additive());
}
