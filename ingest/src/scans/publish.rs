//! A scan report or an inventory → admitted by the plan limits → published
//! as `scans`, `devices` and `findings` envelopes, durably.
//!
//! Scan envelopes get deterministic batch ids (UUIDv5 of tenant, scan id and
//! kind), and a scan's id defaults to a hash of the report, so posting the
//! same report twice rewrites the same Parquet objects instead of adding
//! rows — and counts once against the monthly scan limit. A scan id is
//! bound to its report's content hash: re-sending the *same* report under
//! an id is an idempotent replay; a *different* report under a used id is
//! refused with `409`, so an acknowledged report is never overwritten (nor
//! its devices, findings and usage), and a used id cannot slip a new scan
//! past the monthly limit.

use std::sync::Arc;

use control::{Device, DeviceObservation, MetaStore, Organization};
use pipeline::BusProducer;
use schemas::inventory::{
    DeviceRow, FindingRow, ScanRow, devices_batch, findings_batch, scans_batch,
};
use schemas::{Envelope, RecordKind, TenantId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ScanReport;
use crate::error::Error;

/// What a scan post did.
#[derive(Debug, Serialize)]
pub struct ScanSummary {
    pub scan_id: String,
    /// False when this scan id had been received before (a replay).
    pub new_scan: bool,
    pub scans_this_month: u64,
    pub hosts_up: usize,
    pub devices: usize,
    pub new_devices: usize,
    pub findings: usize,
}

fn hex16(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Runs a blocking metadata-store call off the async runtime.
async fn blocking<T, F>(f: impl FnOnce() -> F + Send + 'static) -> Result<T, Error>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, control::Error>>,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(f()))
        .await
        .map_err(|e| Error::Unavailable(format!("metadata task failed: {e}")))?
        .map_err(Error::from)
}

fn device_rows(devices: &[Device], received_ms: i64, source: &str) -> Vec<DeviceRow> {
    let mut seen = std::collections::HashSet::new();
    devices
        .iter()
        .filter(|d| seen.insert(d.device_id.clone()))
        .map(|d| DeviceRow {
            ts_ms: d.last_seen,
            received_ms,
            device_id: d.device_id.clone(),
            ip: d.ip.clone(),
            mac: d.mac.clone(),
            hostname: d.hostname.clone(),
            os: d.os.clone(),
            vendor: d.vendor.clone(),
            first_seen_ms: d.first_seen,
            last_seen_ms: d.last_seen,
            source: source.to_string(),
        })
        .collect()
}

async fn publish(
    producer: &dyn BusProducer,
    tenant: &TenantId,
    kind: RecordKind,
    id: Uuid,
    batch: arrow::array::RecordBatch,
) -> Result<(), Error> {
    let envelope = Envelope::new(tenant.clone(), kind, id, batch)
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    producer
        .publish(envelope)
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))
}

pub async fn publish_scan(
    report: ScanReport,
    body: &[u8],
    org: Organization,
    store: Arc<MetaStore>,
    producer: &dyn BusProducer,
    received_ms: i64,
    source: &'static str,
) -> Result<ScanSummary, Error> {
    let tenant = org.id.clone();
    let scan_id = report.scan_id.clone().unwrap_or_else(|| {
        let mut h = Sha256::new();
        h.update(body);
        format!("sha256-{}", hex::encode(&h.finalize()[..12]))
    });
    // What the report says, whatever its formatting: the same report sent
    // again (re-serialized, gzip or not) hashes the same.
    let content_hash = {
        let canonical = serde_json::to_vec(&report).unwrap_or_default();
        hex::encode(&Sha256::digest(&canonical)[..16])
    };
    let up: Vec<_> = report.hosts.iter().filter(|h| h.up).collect();
    let observations: Vec<DeviceObservation> = up
        .iter()
        .map(|h| DeviceObservation {
            ip: h.ip.clone(),
            mac: h.mac.clone(),
            hostname: h.hostname.clone(),
            os: h.os.clone(),
            vendor: h.vendor.clone(),
        })
        .collect();
    let admission = {
        let (store, org, scan_id) = (store.clone(), org.clone(), scan_id.clone());
        blocking(move || async move {
            store
                .admit_scan(&org, &scan_id, &content_hash, &observations, received_ms)
                .await
        })
        .await?
    };
    let ts = report
        .finished_ms
        .or(report.started_ms)
        .unwrap_or(received_ms);
    let scan = ScanRow {
        ts_ms: ts,
        received_ms,
        scan_id: scan_id.clone(),
        target: report.target.clone(),
        scanner: Some(report.scanner.clone()),
        started_ms: report.started_ms,
        finished_ms: report.finished_ms,
        hosts_up: Some(up.len() as u32),
        hosts_total: report.hosts_total.or(Some(report.hosts.len() as u32)),
        status: report.status.clone(),
    };
    let mut findings = Vec::new();
    for (host, device) in up.iter().zip(&admission.devices) {
        for f in &host.findings {
            let port = f.port.map(|p| p.to_string()).unwrap_or_default();
            let key = f.cve.as_deref().unwrap_or(&f.title);
            findings.push(FindingRow {
                ts_ms: ts,
                received_ms,
                finding_id: hex16(&[
                    tenant.as_str(),
                    &scan_id,
                    &device.device_id,
                    &port,
                    f.protocol.as_deref().unwrap_or(""),
                    key,
                ]),
                scan_id: Some(scan_id.clone()),
                device_id: Some(device.device_id.clone()),
                ip: host.ip.clone(),
                port: f.port,
                protocol: f.protocol.clone(),
                service: f.service.clone(),
                product: f.product.clone(),
                severity: f.severity.clone(),
                cvss: f.cvss,
                title: f.title.clone(),
                cve: f.cve.clone(),
            });
        }
    }
    let devices = device_rows(&admission.devices, received_ms, source);
    let new_devices = {
        let mut ids = std::collections::HashSet::new();
        admission
            .devices
            .iter()
            .filter(|d| d.is_new && ids.insert(d.device_id.clone()))
            .count()
    };
    let batch_id = |kind: RecordKind| {
        Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{tenant}/{scan_id}/{kind}").as_bytes(),
        )
    };
    let bad = |e: schemas::Error| Error::Unavailable(e.to_string());
    let id = batch_id(RecordKind::Scans);
    publish(
        producer,
        &tenant,
        RecordKind::Scans,
        id,
        scans_batch(&tenant, id, &[scan]).map_err(bad)?,
    )
    .await?;
    if !devices.is_empty() {
        let id = batch_id(RecordKind::Devices);
        publish(
            producer,
            &tenant,
            RecordKind::Devices,
            id,
            devices_batch(&tenant, id, &devices).map_err(bad)?,
        )
        .await?;
    }
    if !findings.is_empty() {
        let id = batch_id(RecordKind::Findings);
        publish(
            producer,
            &tenant,
            RecordKind::Findings,
            id,
            findings_batch(&tenant, id, &findings).map_err(bad)?,
        )
        .await?;
    }
    // High and critical findings notify (once per vulnerability of a
    // device: the ref leaves the scan out, so rescans do not re-notify).
    let notifications: Vec<control::notify::Notification> = findings
        .iter()
        .filter(|f| matches!(f.severity.as_str(), "high" | "critical"))
        .map(|f| {
            let port = f.port.map(|p| p.to_string()).unwrap_or_default();
            let reference = hex16(&[
                tenant.as_str(),
                f.device_id.as_deref().unwrap_or(""),
                &port,
                f.protocol.as_deref().unwrap_or(""),
                f.cve.as_deref().unwrap_or(&f.title),
            ]);
            control::notify::Notification {
                id: format!("finding-{reference}"),
                org_id: tenant.clone(),
                kind: "finding".into(),
                severity: f.severity.clone(),
                title: format!(
                    "{} on {}{}",
                    f.title,
                    f.ip.as_deref().unwrap_or("unknown host"),
                    f.port.map(|p| format!(":{p}")).unwrap_or_default()
                ),
                body: serde_json::json!({
                    "finding_id": f.finding_id, "scan_id": f.scan_id, "device_id": f.device_id,
                    "ip": f.ip, "port": f.port, "protocol": f.protocol, "service": f.service,
                    "cve": f.cve, "cvss": f.cvss, "severity": f.severity,
                }),
                ref_id: reference,
                created_at: received_ms,
                read_at: None,
            }
        })
        .collect();
    if !notifications.is_empty() {
        let store = store.clone();
        blocking(move || async move {
            for n in &notifications {
                store.add_notification(n).await?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(ScanSummary {
        scan_id,
        new_scan: admission.new_scan,
        scans_this_month: admission.scans_this_month,
        hosts_up: up.len(),
        devices: devices.len(),
        new_devices,
        findings: findings.len(),
    })
}

/// What a device inventory post did.
#[derive(Debug, Serialize)]
pub struct InventorySummary {
    pub devices: usize,
    pub new_devices: usize,
    pub device_ids: Vec<String>,
}

pub async fn publish_inventory(
    observations: Vec<DeviceObservation>,
    org: Organization,
    store: Arc<MetaStore>,
    producer: &dyn BusProducer,
    received_ms: i64,
) -> Result<InventorySummary, Error> {
    let tenant = org.id.clone();
    let devices =
        blocking(
            move || async move { store.upsert_devices(&org, &observations, received_ms).await },
        )
        .await?;
    let new_devices = {
        let mut ids = std::collections::HashSet::new();
        devices
            .iter()
            .filter(|d| d.is_new && ids.insert(d.device_id.clone()))
            .count()
    };
    let rows = device_rows(&devices, received_ms, "inventory");
    if !rows.is_empty() {
        let id = Uuid::now_v7();
        let batch =
            devices_batch(&tenant, id, &rows).map_err(|e| Error::Unavailable(e.to_string()))?;
        publish(producer, &tenant, RecordKind::Devices, id, batch).await?;
    }
    Ok(InventorySummary {
        devices: rows.len(),
        new_devices,
        device_ids: devices.into_iter().map(|d| d.device_id).collect(),
    })
}
