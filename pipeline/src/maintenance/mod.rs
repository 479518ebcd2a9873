//! Scheduled upkeep of the stores: purging deleted tenants, retention per
//! plan, the ClickHouse usage rollup, and compaction of small Parquet
//! objects.
//!
//! - [`live`]: the compaction protocol's read rule and the [`live::LiveView`]
//!   store readers use.
//! - [`compaction`]: merging small objects, kill-safe.
//! - [`retention`]: the lake side of retention and tenant purges (the
//!   ClickHouse side lives with the ClickHouse sink).
//!
//! One pass runs at a time across all processes sharing the lake: a pass
//! first takes a lease object (`_maintenance.lease`, created only if absent;
//! taken over once expired), so several pipeline processes can all schedule
//! maintenance safely. Two compactors on one directory could otherwise both
//! commit merges of the same inputs.

pub mod compaction;
pub mod live;
pub mod retention;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use schemas::TenantId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::Result;
use crate::lake::Lake;
use crate::sinks::clickhouse::{ClickHouseRetentionReport, ClickHouseSink, UsageRollupReport};
use crate::sinks::parquet::ParquetSinkConfig;
use compaction::{CompactionConfig, CompactionReport, Compactor};
use retention::{LakeRetentionReport, TenantPolicy};

/// `[pipeline.maintenance]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run passes on a schedule in `serve` and `pipeline`.
    pub enabled: bool,
    pub interval_secs: u64,
    /// How long a pass's lease lasts; a pass must finish within it. A
    /// process killed mid-pass blocks others for at most this long.
    pub lease_ttl_secs: u64,
    pub compaction: CompactionConfig,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 600,
            lease_ttl_secs: 1800,
            compaction: CompactionConfig::default(),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MaintenanceReport {
    /// Set when another process held the lease and this pass did nothing.
    pub skipped: Option<String>,
    pub purged_tenants: Vec<String>,
    pub lake_retention: LakeRetentionReport,
    pub clickhouse_retention: Option<ClickHouseRetentionReport>,
    pub usage_rollup: Option<UsageRollupReport>,
    pub compaction: CompactionReport,
}

pub struct Maintenance {
    lake: Lake,
    clickhouse: Option<Arc<ClickHouseSink>>,
    config: MaintenanceConfig,
    compactor: Compactor,
    owner: String,
}

const LEASE: &str = "_maintenance.lease";

impl Maintenance {
    pub fn new(
        lake: Lake,
        clickhouse: Option<Arc<ClickHouseSink>>,
        config: MaintenanceConfig,
        parquet: ParquetSinkConfig,
    ) -> Self {
        let compactor = Compactor::new(lake.clone(), config.compaction.clone(), parquet);
        let owner = format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
            std::process::id()
        );
        Self {
            lake,
            clickhouse,
            config,
            compactor,
            owner,
        }
    }

    pub fn config(&self) -> &MaintenanceConfig {
        &self.config
    }

    /// A handle that gives this process's lease back, for shutdown paths
    /// that abandon a pass (every step is kill-safe; only the lease would
    /// otherwise linger until it expires).
    pub fn lease(&self) -> LeaseHandle {
        LeaseHandle {
            lake: self.lake.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Purges everything `tenant` has, in the lake and in ClickHouse.
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<usize> {
        let mut removed = retention::purge_tenant(&self.lake, tenant).await?;
        if let Some(ch) = &self.clickhouse {
            removed += ch.purge_tenant(tenant).await?;
        }
        Ok(removed)
    }

    /// One pass: purge `deleted` tenants (again: stragglers still in flight
    /// when a tenant was deleted land later), apply `policies`, compact.
    pub async fn run_once(
        &self,
        policies: &[TenantPolicy],
        deleted: &[TenantId],
        now: DateTime<Utc>,
    ) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        if let Some(holder) = self.acquire_lease(now).await? {
            report.skipped = Some(format!("lease held by {holder}"));
            return Ok(report);
        }
        let outcome = self.pass(policies, deleted, now, &mut report).await;
        if let Err(e) = self.lake.raw_store().delete(&lease_path(&self.lake)).await {
            warn!(error = %e, "could not release the maintenance lease");
        }
        outcome.map(|()| report)
    }

    async fn pass(
        &self,
        policies: &[TenantPolicy],
        deleted: &[TenantId],
        now: DateTime<Utc>,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        for tenant in deleted {
            if self.purge_tenant(tenant).await? > 0 {
                report.purged_tenants.push(tenant.to_string());
            }
        }
        let today = now.date_naive();
        report.lake_retention = retention::enforce(&self.lake, policies, today).await?;
        if let Some(ch) = &self.clickhouse {
            report.clickhouse_retention = Some(ch.enforce_retention(policies, today).await?);
            report.usage_rollup = Some(ch.rebuild_usage_rollup().await?);
        }
        if self.config.compaction.enabled {
            report.compaction = self.compactor.run_once(now).await?;
        }
        Ok(())
    }

    /// Takes the lease; returns the holder if someone else has it.
    async fn acquire_lease(&self, now: DateTime<Utc>) -> Result<Option<String>> {
        let store = self.lake.raw_store();
        let path = lease_path(&self.lake);
        let ttl_ms = (self.config.lease_ttl_secs.max(1) * 1_000) as i64;
        let body = format!("{} {}", now.timestamp_millis() + ttl_ms, self.owner);
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        for _ in 0..2 {
            match store
                .put_opts(
                    &path,
                    PutPayload::from(body.clone().into_bytes()),
                    create.clone(),
                )
                .await
            {
                Ok(_) => return Ok(None),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let held = match store.get(&path).await {
                Ok(got) => String::from_utf8_lossy(&got.bytes().await?).into_owned(),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let (expires, holder) = held.split_once(' ').unwrap_or(("0", "?"));
            if expires.parse::<i64>().unwrap_or(0) > now.timestamp_millis() {
                return Ok(Some(holder.to_string()));
            }
            info!(holder, "taking over an expired maintenance lease");
            delete_if_present(store.as_ref(), &path).await?;
        }
        Ok(Some("another process (lease contended)".into()))
    }
}

/// Deletes an object; one already gone (a concurrent or earlier pass) is
/// fine.
pub(crate) async fn delete_if_present(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn lease_path(lake: &Lake) -> object_store::path::Path {
    lake.root().clone().join(LEASE)
}

#[derive(Clone)]
pub struct LeaseHandle {
    lake: Lake,
    owner: String,
}

impl LeaseHandle {
    /// Deletes the lease if this process holds it.
    pub async fn release(&self) {
        let store = self.lake.raw_store();
        let path = lease_path(&self.lake);
        let Ok(got) = store.get(&path).await else {
            return;
        };
        let Ok(body) = got.bytes().await else { return };
        let held = String::from_utf8_lossy(&body);
        if held
            .split_once(' ')
            .is_some_and(|(_, owner)| owner == self.owner)
        {
            let _ = store.delete(&path).await;
        }
    }
}
