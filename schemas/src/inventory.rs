//! Typed rows of the `scans`, `devices` and `findings` kinds and their
//! Arrow batches (one tenant, one batch id per batch, like every kind).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt16Array,
    UInt32Array,
};
use uuid::Uuid;

use crate::envelope::constant_utf8;
use crate::error::Result;
use crate::kind::RecordKind;
use crate::schema;
use crate::tenant::TenantId;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanRow {
    pub ts_ms: i64,
    pub received_ms: i64,
    pub scan_id: String,
    pub target: Option<String>,
    pub scanner: Option<String>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub hosts_up: Option<u32>,
    pub hosts_total: Option<u32>,
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceRow {
    pub ts_ms: i64,
    pub received_ms: i64,
    pub device_id: String,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub vendor: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// `nmap`, `report`, `inventory`.
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingRow {
    pub ts_ms: i64,
    pub received_ms: i64,
    pub finding_id: String,
    pub scan_id: Option<String>,
    pub device_id: Option<String>,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub service: Option<String>,
    pub product: Option<String>,
    /// info, low, medium, high, critical
    pub severity: String,
    pub cvss: Option<f32>,
    pub title: String,
    pub cve: Option<String>,
}

fn times<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"))
}

fn opt_times<T>(rows: &[T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter(rows.iter().map(f)).with_timezone("UTC"))
}

fn strs<'a, T: 'a>(rows: &'a [T], f: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn opt_strs<'a, T: 'a>(rows: &'a [T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter(rows.iter().map(f)))
}

fn head<T>(
    tenant: &TenantId,
    batch_id: Uuid,
    rows: &[T],
    ts: impl Fn(&T) -> i64,
    rcv: impl Fn(&T) -> i64,
) -> Vec<ArrayRef> {
    vec![
        constant_utf8(tenant.as_str(), rows.len()),
        times(rows, ts),
        times(rows, rcv),
        constant_utf8(&batch_id.to_string(), rows.len()),
    ]
}

pub fn scans_batch(tenant: &TenantId, batch_id: Uuid, rows: &[ScanRow]) -> Result<RecordBatch> {
    let mut c = head(tenant, batch_id, rows, |r| r.ts_ms, |r| r.received_ms);
    c.extend([
        strs(rows, |r| r.scan_id.as_str()),
        opt_strs(rows, |r| r.target.as_deref()),
        opt_strs(rows, |r| r.scanner.as_deref()),
        opt_times(rows, |r| r.started_ms),
        opt_times(rows, |r| r.finished_ms),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.hosts_up))) as ArrayRef,
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.hosts_total))),
        strs(rows, |r| r.status.as_str()),
    ]);
    Ok(RecordBatch::try_new(schema::schema(RecordKind::Scans), c)?)
}

pub fn devices_batch(tenant: &TenantId, batch_id: Uuid, rows: &[DeviceRow]) -> Result<RecordBatch> {
    let mut c = head(tenant, batch_id, rows, |r| r.ts_ms, |r| r.received_ms);
    c.extend([
        strs(rows, |r| r.device_id.as_str()),
        opt_strs(rows, |r| r.ip.as_deref()),
        opt_strs(rows, |r| r.mac.as_deref()),
        opt_strs(rows, |r| r.hostname.as_deref()),
        opt_strs(rows, |r| r.os.as_deref()),
        opt_strs(rows, |r| r.vendor.as_deref()),
        times(rows, |r| r.first_seen_ms),
        times(rows, |r| r.last_seen_ms),
        strs(rows, |r| r.source.as_str()),
    ]);
    Ok(RecordBatch::try_new(
        schema::schema(RecordKind::Devices),
        c,
    )?)
}

pub fn findings_batch(
    tenant: &TenantId,
    batch_id: Uuid,
    rows: &[FindingRow],
) -> Result<RecordBatch> {
    let mut c = head(tenant, batch_id, rows, |r| r.ts_ms, |r| r.received_ms);
    c.extend([
        strs(rows, |r| r.finding_id.as_str()),
        opt_strs(rows, |r| r.scan_id.as_deref()),
        opt_strs(rows, |r| r.device_id.as_deref()),
        opt_strs(rows, |r| r.ip.as_deref()),
        Arc::new(UInt16Array::from_iter(rows.iter().map(|r| r.port))) as ArrayRef,
        opt_strs(rows, |r| r.protocol.as_deref()),
        opt_strs(rows, |r| r.service.as_deref()),
        opt_strs(rows, |r| r.product.as_deref()),
        strs(rows, |r| r.severity.as_str()),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.cvss))),
        strs(rows, |r| r.title.as_str()),
        opt_strs(rows, |r| r.cve.as_deref()),
    ]);
    Ok(RecordBatch::try_new(
        schema::schema(RecordKind::Findings),
        c,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    #[test]
    fn batches_have_their_kinds_schema() {
        let t = TenantId::new("acme").unwrap();
        let id = Uuid::now_v7();
        let s = scans_batch(
            &t,
            id,
            &[ScanRow {
                scan_id: "s".into(),
                status: "completed".into(),
                ..Default::default()
            }],
        )
        .unwrap();
        Envelope::new(t.clone(), RecordKind::Scans, id, s).unwrap();
        let d = devices_batch(
            &t,
            id,
            &[DeviceRow {
                device_id: "d".into(),
                source: "nmap".into(),
                ..Default::default()
            }],
        )
        .unwrap();
        Envelope::new(t.clone(), RecordKind::Devices, id, d).unwrap();
        let f = findings_batch(
            &t,
            id,
            &[FindingRow {
                finding_id: "f".into(),
                severity: "info".into(),
                title: "x".into(),
                port: Some(22),
                cvss: Some(7.5),
                ..Default::default()
            }],
        )
        .unwrap();
        Envelope::new(t, RecordKind::Findings, id, f).unwrap();
    }

    #[test]
    fn cvss_ratings() {
        assert_eq!(
            [9.8, 7.0, 5.0, 0.1, 0.0].map(|c| crate::Severity::from_cvss(c).as_str()),
            ["critical", "high", "medium", "low", "info"]
        );
    }
}
