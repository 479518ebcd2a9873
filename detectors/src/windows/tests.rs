use super::*;
use schemas::inventory::{FindingRow, findings_batch};
use schemas::{LogBatchBuilder, LogRecord, ParseStatus};
use uuid::Uuid;

const T0: i64 = 1_795_687_200_000; // a minute boundary
const MIN: i64 = 60_000;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn rec(ts: i64, host: &str, app: &str, src: &str, sev: u8, msg: &str) -> LogRecord {
    LogRecord {
        ts_ms: ts,
        received_ms: ts,
        host: Some(host.into()),
        app: Some(app.into()),
        source_ip: Some(src.into()),
        severity: Some(sev),
        message: msg.into(),
        bytes: 100,
        input: "http",
        ..Default::default()
    }
}

fn logs(records: &[LogRecord]) -> Envelope {
    let id = Uuid::now_v7();
    let mut b = LogBatchBuilder::with_capacity(records.len());
    for r in records {
        b.append(r);
    }
    Envelope::new(
        tenant(),
        RecordKind::Logs,
        id,
        b.finish(&tenant(), id).unwrap(),
    )
    .unwrap()
}

fn value(w: &ClosedWindow, feature: &str) -> f64 {
    w.values[FEATURES.iter().position(|f| *f == feature).unwrap()]
}

#[test]
fn features_of_a_window() {
    let mut w = Windows::new(WindowConfig::default());
    let mut unparsed = rec(T0 + 5, "web-1", "nginx", "10.0.0.9", 6, "garbage");
    unparsed.parse_status = ParseStatus::Error;
    w.observe(
        &logs(&[
            rec(
                T0,
                "web-1",
                "sshd",
                "10.0.0.1",
                4,
                "Failed password for root from 10.0.0.1",
            ),
            rec(
                T0 + 1,
                "web-1",
                "sshd",
                "10.0.0.2",
                3,
                "pam_unix(sshd:auth): authentication failure",
            ),
            rec(T0 + 2, "web-1", "cron", "10.0.0.1", 6, "job done"),
            rec(
                T0 + 3,
                "web-1",
                "sshd",
                "10.0.0.3",
                2,
                "Invalid user admin from 10.0.0.3",
            ),
            unparsed,
            rec(T0 + 10, "db-1", "postgres", "10.0.0.1", 6, "checkpoint"),
            // Next minute of web-1: its own window.
            rec(T0 + MIN, "web-1", "cron", "10.0.0.1", 6, "job done"),
        ]),
        T0,
    )
    .unwrap();
    assert_eq!(w.open_windows(), 3);
    let closed = w.close_all();
    assert_eq!(closed.len(), 3);
    let web = closed
        .iter()
        .find(|c| c.entity == "web-1" && c.start_ms == T0)
        .unwrap();
    assert_eq!(web.end_ms, T0 + MIN);
    assert_eq!(value(web, "events"), 5.0);
    assert_eq!(value(web, "distinct_apps"), 3.0);
    assert_eq!(value(web, "distinct_sources"), 4.0);
    assert_eq!(value(web, "auth_failures"), 3.0);
    assert_eq!(value(web, "error_ratio"), 2.0 / 5.0);
    assert_eq!(value(web, "bytes"), 500.0);
    assert_eq!(value(web, "parse_failures"), 1.0);
    assert_eq!(value(web, "new_ports"), 0.0);
    let db = closed.iter().find(|c| c.entity == "db-1").unwrap();
    assert_eq!(value(db, "events"), 1.0);
    assert_eq!(w.open_windows(), 0);
    assert_eq!(w.stats().closed, 3);
}

#[test]
fn windows_close_on_the_watermark_or_when_idle() {
    let config = WindowConfig::default();
    let mut w = Windows::new(config.clone());
    w.observe(&logs(&[rec(T0, "a", "x", "1", 6, "m")]), 0)
        .unwrap();
    // Event time moves on by width + lateness: the first window is due.
    w.observe(&logs(&[rec(T0 + 2 * MIN, "b", "x", "1", 6, "m")]), 0)
        .unwrap();
    let closed = w.close_due(1);
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].entity.as_str(), closed[0].start_ms), ("a", T0));
    // The second one only closes once it has been idle long enough.
    assert!(w.close_due(config.idle_close_ms - 1).is_empty());
    let closed = w.close_due(config.idle_close_ms);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].entity, "b");
}

#[test]
fn late_rows_are_counted_and_dropped() {
    let mut w = Windows::new(WindowConfig::default());
    w.observe(&logs(&[rec(T0, "a", "x", "1", 6, "m")]), 0)
        .unwrap();
    assert_eq!(w.close_all().len(), 1);
    w.observe(&logs(&[rec(T0 + 5, "a", "x", "1", 6, "late")]), 0)
        .unwrap();
    assert_eq!(w.stats().late_rows, 1);
    assert_eq!(w.open_windows(), 0);
    // Another entity's same minute is not late.
    w.observe(&logs(&[rec(T0 + 5, "b", "x", "1", 6, "m")]), 0)
        .unwrap();
    assert_eq!(w.open_windows(), 1);
}

#[test]
fn event_times_from_the_future_are_clamped_to_the_receive_time() {
    let config = WindowConfig::default();
    let mut w = Windows::new(config.clone());
    let mut r = rec(T0, "a", "x", "1", 6, "m");
    r.ts_ms = T0 + 365 * 24 * 60 * MIN;
    w.observe(&logs(&[r, rec(T0 + 4 * MIN, "b", "x", "1", 6, "m")]), 0)
        .unwrap();
    // A year-ahead clock moves the watermark by the allowed skew (5 min),
    // not by a year: b's window (due at T0 + 6 min) stays open.
    assert!(w.close_due(1).is_empty());
    let closed = w.close_all();
    let a = closed.iter().find(|c| c.entity == "a").unwrap();
    assert_eq!(a.start_ms, T0 + config.max_clock_skew_ms);
}

#[test]
fn new_ports_count_once_per_entity_and_port() {
    let mut w = Windows::new(WindowConfig::default());
    let finding = |ip: &str, port: u16| FindingRow {
        ts_ms: T0,
        received_ms: T0,
        finding_id: format!("{ip}:{port}"),
        ip: Some(ip.into()),
        port: Some(port),
        severity: "info".into(),
        title: "open".into(),
        ..Default::default()
    };
    let scan = |rows: &[FindingRow]| {
        let id = Uuid::now_v7();
        let b = findings_batch(&tenant(), id, rows).unwrap();
        Envelope::new(tenant(), RecordKind::Findings, id, b).unwrap()
    };
    w.observe(
        &scan(&[finding("10.0.0.1", 22), finding("10.0.0.1", 80)]),
        0,
    )
    .unwrap();
    w.observe(
        &scan(&[
            finding("10.0.0.1", 22),
            finding("10.0.0.1", 443),
            finding("10.0.0.2", 22),
        ]),
        0,
    )
    .unwrap();
    let closed = w.close_all();
    let one = closed.iter().find(|c| c.entity == "10.0.0.1").unwrap();
    assert_eq!(value(one, "new_ports"), 3.0);
    let two = closed.iter().find(|c| c.entity == "10.0.0.2").unwrap();
    assert_eq!(value(two, "new_ports"), 1.0);
}

#[test]
fn open_windows_are_capped_per_tenant() {
    let mut w = Windows::new(WindowConfig {
        max_open_per_tenant: 2,
        ..Default::default()
    });
    let rows: Vec<_> = (0..5)
        .map(|i| rec(T0, &format!("h{i}"), "x", "1", 6, "m"))
        .collect();
    w.observe(&logs(&rows), 0).unwrap();
    assert_eq!(w.open_windows(), 2);
    assert_eq!(w.stats().dropped_rows, 3);
}
