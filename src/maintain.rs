//! Glue between the control plane (plans, deleted organizations) and the
//! pipeline's maintenance job: the scheduled loop in `serve`/`pipeline`,
//! `securenet maintain` (one pass, now) and `securenet orgs delete`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use control::MetaStore;
use pipeline::Lake;
use pipeline::maintenance::Maintenance;
use pipeline::maintenance::retention::TenantPolicy;
use pipeline::sinks::clickhouse::ClickHouseSink;
use schemas::TenantId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

/// Every organization's retention, from its plan limits.
pub async fn policies(store: &MetaStore) -> anyhow::Result<Vec<TenantPolicy>> {
    Ok(store
        .list_organizations()
        .await?
        .into_iter()
        .map(|o| TenantPolicy {
            tenant: o.id,
            retention_days: o.limits.log_retention_days,
        })
        .collect())
}

pub fn build(config: &Config, lake: Lake, clickhouse: Option<Arc<ClickHouseSink>>) -> Maintenance {
    Maintenance::new(
        lake,
        clickhouse,
        config.pipeline.maintenance.clone(),
        config.pipeline.parquet.clone(),
    )
}

/// Connects to what `config` names (lake, and ClickHouse when configured)
/// for one-off commands.
async fn connect(config: &Config) -> anyhow::Result<Maintenance> {
    let lake = config.lake()?;
    let clickhouse = if config.pipeline.clickhouse.enabled() {
        let metrics = pipeline::PipelineMetrics::new(&prometheus::Registry::new())?;
        Some(Arc::new(
            ClickHouseSink::connect(&config.pipeline.clickhouse, metrics)
                .await
                .context("connecting to ClickHouse")?,
        ))
    } else {
        None
    };
    Ok(build(config, lake, clickhouse))
}

async fn pass(
    maintenance: &Maintenance,
    store: &MetaStore,
) -> anyhow::Result<pipeline::maintenance::MaintenanceReport> {
    let deleted = store.deleted_organizations().await?;
    let policies = policies(store).await?;
    Ok(maintenance
        .run_once(&policies, &deleted, chrono::Utc::now())
        .await?)
}

/// Runs a pass every `interval_secs` until `stop`.
pub fn spawn_loop(
    maintenance: Maintenance,
    store: Arc<MetaStore>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let every = Duration::from_secs(maintenance.config().interval_secs.max(1));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match pass(&maintenance, &store).await {
                Ok(report) => info!(?report, "maintenance pass"),
                Err(e) => warn!(error = %e, "maintenance pass failed; retrying next interval"),
            }
        }
    })
}

/// `securenet maintain`: one pass now, the report as JSON on stdout.
pub fn run_once(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tracing::info!("maintenance pass: deleted organizations' data, retention, compaction");
    let report = runtime.block_on(async {
        let store = crate::admin::open_store(config).await?;
        let maintenance = connect(config).await?;
        pass(&maintenance, &store).await
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `securenet orgs delete`: the organization, then its data everywhere.
pub async fn delete_organization(
    config: &Config,
    store: &MetaStore,
    id: &TenantId,
) -> anyhow::Result<()> {
    store.delete_organization(id).await?;
    tracing::info!(org = %id, "organization deleted; purging its data from the lake and ClickHouse");
    let removed = async {
        let maintenance = connect(config).await?;
        anyhow::Ok(maintenance.purge_tenant(id).await?)
    }
    .await
    .with_context(|| {
        format!(
            "organization {id} is deleted, but purging its data failed; the maintenance job retries"
        )
    })?;
    eprintln!("deleted organization {id}; purged its data ({removed} objects and tables)");
    Ok(())
}
