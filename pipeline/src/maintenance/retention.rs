//! Retention per tenant plan, and purging a deleted tenant, on the Parquet
//! lake (the ClickHouse side is in the ClickHouse sink).
//!
//! The plan's "log retention" applies to the event kinds ([`RETAINED`]):
//! logs, the anomalies detected in them, and API request records. Inventory
//! and billing history (devices, scans, findings, usage) are kept for the
//! tenant's lifetime: invoices and vulnerability history must stay
//! reproducible. Whole date directories are dropped once the entire day is
//! older than the retention window.

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use schemas::{RecordKind, TenantId};
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;

/// The kinds a plan's retention applies to.
pub const RETAINED: [RecordKind; 4] = [
    RecordKind::Logs,
    RecordKind::Anomalies,
    RecordKind::ApiRequests,
    // Matches carry the matching row's message: kept no longer than it.
    RecordKind::Detections,
];

/// One tenant's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    pub tenant: TenantId,
    pub retention_days: u32,
}

impl TenantPolicy {
    /// The first day still kept on `today`.
    pub fn first_kept_day(&self, today: NaiveDate) -> NaiveDate {
        today - chrono::Days::new(u64::from(self.retention_days))
    }
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct LakeRetentionReport {
    pub date_dirs_dropped: usize,
    pub objects_deleted: usize,
}

/// Drops every retained kind's date directory older than the tenant's
/// window.
pub async fn enforce(
    lake: &Lake,
    policies: &[TenantPolicy],
    today: NaiveDate,
) -> Result<LakeRetentionReport> {
    let store = lake.raw_store();
    let mut report = LakeRetentionReport::default();
    for kind in RETAINED {
        for policy in policies {
            let first_kept = policy.first_kept_day(today);
            let tenant_dir = lake.tenant_prefix(kind, &policy.tenant);
            let listed = store.list_with_delimiter(Some(&tenant_dir)).await?;
            for dir in listed.common_prefixes {
                let Some(date) = dir
                    .filename()
                    .and_then(|n| n.strip_prefix("date="))
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                else {
                    continue;
                };
                if date < first_kept {
                    report.objects_deleted += delete_prefix(store.as_ref(), &dir).await?;
                    lake.prune_empty_dirs(&dir)?;
                    report.date_dirs_dropped += 1;
                }
            }
        }
    }
    Ok(report)
}

/// Deletes everything `tenant` has in the lake, every kind; returns the
/// number of objects deleted.
pub async fn purge_tenant(lake: &Lake, tenant: &TenantId) -> Result<usize> {
    let store = lake.raw_store();
    let mut deleted = 0;
    for kind in RecordKind::ALL {
        let dir = lake.tenant_prefix(kind, tenant);
        deleted += delete_prefix(store.as_ref(), &dir).await?;
        lake.prune_empty_dirs(&dir)?;
    }
    Ok(deleted)
}

async fn delete_prefix(store: &dyn ObjectStore, prefix: &Path) -> Result<usize> {
    let objects: Vec<Path> = store
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    for path in &objects {
        super::delete_if_present(store, path).await?;
    }
    Ok(objects.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::Sink;
    use crate::sinks::parquet::ParquetSinkConfig;
    use crate::testutil::{envelope_at, lake_rows};

    const DAY: i64 = 86_400_000;

    #[tokio::test]
    async fn drops_days_older_than_each_tenants_window_and_purges_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path()).unwrap();
        let sink = ParquetSinkConfig::default()
            .build(
                lake.clone(),
                crate::PipelineMetrics::new(&prometheus::Registry::new()).unwrap(),
            )
            .unwrap();
        // 2025-11-24 and the 40 and 400 days before it, for two tenants.
        let today_ms = 1_764_000_000_000;
        for tenant in ["short", "long"] {
            sink.write(&envelope_at(
                tenant,
                &[today_ms, today_ms - 40 * DAY, today_ms - 400 * DAY],
            ))
            .await
            .unwrap();
        }
        let today = NaiveDate::from_ymd_opt(2025, 11, 24).unwrap();
        let policies = [
            TenantPolicy {
                tenant: TenantId::new("short").unwrap(),
                retention_days: 30,
            },
            TenantPolicy {
                tenant: TenantId::new("long").unwrap(),
                retention_days: 365,
            },
        ];
        let report = enforce(&lake, &policies, today).await.unwrap();
        assert_eq!(report.date_dirs_dropped, 3); // short: −40, −400; long: −400
        let left: Vec<i64> = lake_rows(&lake).await.iter().map(|r| r.1).collect();
        let mut expected = vec![today_ms, today_ms, today_ms - 40 * DAY];
        expected.sort();
        let mut left_sorted = left.clone();
        left_sorted.sort();
        assert_eq!(left_sorted, expected);
        // Idempotent.
        assert_eq!(
            enforce(&lake, &policies, today).await.unwrap(),
            LakeRetentionReport::default()
        );

        assert_eq!(
            purge_tenant(&lake, &TenantId::new("long").unwrap())
                .await
                .unwrap(),
            2
        );
        assert_eq!(lake_rows(&lake).await.len(), 1);
        assert!(!dir.path().join("logs/tenant_id=long").exists());
    }
}
