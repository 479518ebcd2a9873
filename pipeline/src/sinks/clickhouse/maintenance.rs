//! Retention and tenant purges on the ClickHouse side.
//!
//! Whole monthly partitions older than every tenant's window are dropped
//! (cheap); inside the window, rows past a tenant's own retention go with an
//! `ALTER TABLE … DELETE` mutation, issued only when there is something to
//! delete (a mutation rewrites parts). Both exist in 18.16 and current
//! releases. Mutations run asynchronously: the rows disappear once ClickHouse
//! has rewritten the affected parts.
//!
//! The usage rollup: `usage_daily` (a `SummingMergeTree`) holds exact daily
//! sums per tenant and metric. Appending to it per batch would count a
//! replayed batch twice (the ledger cannot make two tables atomic), so each
//! monthly partition is rebuilt from the de-duplicated `usage FINAL` into a
//! staging table and swapped in with `REPLACE PARTITION` (atomic for
//! readers; in 18.16 and current releases) whenever `usage` changed since.
//! `devices` is the exception to summing: its daily value is the number of
//! distinct devices (`uniqExact(subject)`); a month's distinct devices come
//! from `usage` itself, since daily distinct counts do not add up.
//!
//! Tenant ids are validated to `[a-z0-9_-]` ([`TenantId`]), so quoting them
//! into SQL is safe.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use schemas::{RecordKind, TenantId};
use serde::Serialize;
use tracing::{debug, info};

use super::ClickHouseSink;
use super::sink::{sink_error, table};
use crate::error::Result;
use crate::maintenance::retention::{RETAINED, TenantPolicy};

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct UsageRollupReport {
    /// Months (YYYYMM) rebuilt.
    pub months_rebuilt: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ClickHouseRetentionReport {
    pub partitions_dropped: usize,
    pub delete_mutations: usize,
}

fn day_start_ms(day: NaiveDate) -> i64 {
    day.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis()
}

impl ClickHouseSink {
    async fn count(&self, sql: &str) -> Result<u64> {
        self.client
            .query(sql)
            .fetch_one::<u64>()
            .await
            .map_err(|e| sink_error(format!("{e} (in: {sql})")))
    }

    /// Deletes the rows past each tenant's retention; see the module docs.
    pub async fn enforce_retention(
        &self,
        policies: &[TenantPolicy],
        today: NaiveDate,
    ) -> Result<ClickHouseRetentionReport> {
        let mut report = ClickHouseRetentionReport::default();
        let Some(longest) = policies.iter().map(|p| p.retention_days).max() else {
            return Ok(report);
        };
        let oldest_kept = today - chrono::Days::new(u64::from(longest));
        let oldest_kept_month = oldest_kept.year() as u32 * 100 + oldest_kept.month();
        // One condition for all tenants: (tenant in group AND ts < cutoff) OR …
        let mut by_days: std::collections::BTreeMap<u32, Vec<&TenantId>> = Default::default();
        for p in policies {
            by_days.entry(p.retention_days).or_default().push(&p.tenant);
        }
        let condition = by_days
            .iter()
            .map(|(days, tenants)| {
                let cutoff = day_start_ms(today - chrono::Days::new(u64::from(*days)));
                let list: Vec<String> = tenants.iter().map(|t| format!("'{t}'")).collect();
                format!("(tenant_id IN ({}) AND ts < {cutoff})", list.join(", "))
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let db = &self.database;
        for kind in RETAINED {
            let t = table(kind);
            let partitions: Vec<String> = self
                .client
                .query(
                    "SELECT DISTINCT partition FROM system.parts \
                     WHERE database = ? AND table = ? AND active",
                )
                .bind(db.as_str())
                .bind(t)
                .fetch_all()
                .await
                .map_err(sink_error)?;
            for partition in partitions {
                // toYYYYMM partitions: the whole month precedes every window.
                if partition
                    .parse::<u32>()
                    .is_ok_and(|m| m < oldest_kept_month)
                {
                    self.execute(&format!("ALTER TABLE {db}.{t} DROP PARTITION {partition}"))
                        .await?;
                    info!(
                        table = t,
                        partition, "dropped a partition past every retention"
                    );
                    report.partitions_dropped += 1;
                }
            }
            let expired = self
                .count(&format!("SELECT count() FROM {db}.{t} WHERE {condition}"))
                .await?;
            if expired > 0 {
                self.execute(&format!("ALTER TABLE {db}.{t} DELETE WHERE {condition}"))
                    .await?;
                info!(table = t, rows = expired, "retention delete issued");
                report.delete_mutations += 1;
            }
        }
        Ok(report)
    }

    /// Last modification of each active partition of `table`.
    async fn partition_times(&self, table: &str) -> Result<BTreeMap<String, u32>> {
        let rows: Vec<(String, u32)> = self
            .client
            .query(
                "SELECT partition, toUInt32(max(modification_time)) FROM system.parts \
                 WHERE database = ? AND table = ? AND active GROUP BY partition",
            )
            .bind(self.database.as_str())
            .bind(table)
            .fetch_all()
            .await
            .map_err(sink_error)?;
        Ok(rows.into_iter().collect())
    }

    /// Rebuilds every month of `usage_daily` whose `usage` rows changed
    /// since it was last built; see the module docs.
    pub async fn rebuild_usage_rollup(&self) -> Result<UsageRollupReport> {
        let db = &self.database;
        let raw = self.partition_times(table(RecordKind::Usage)).await?;
        let built = self.partition_times("usage_daily").await?;
        let mut report = UsageRollupReport::default();
        for (month, changed) in raw {
            if month.parse::<u32>().is_err() || built.get(&month).is_some_and(|b| *b > changed) {
                continue;
            }
            self.execute(&format!(
                "ALTER TABLE {db}.usage_daily_staging DROP PARTITION {month}"
            ))
            .await?;
            self.execute(&format!(
                "INSERT INTO {db}.usage_daily_staging (tenant_id, day, metric, value) \
                 SELECT tenant_id, day, metric, \
                 if(metric = 'devices', uniqExact(subject), sum(value)) FROM {db}.usage FINAL \
                 WHERE toYYYYMM(day) = {month} GROUP BY tenant_id, day, metric"
            ))
            .await?;
            self.execute(&format!(
                "ALTER TABLE {db}.usage_daily REPLACE PARTITION {month} FROM {db}.usage_daily_staging"
            ))
            .await?;
            report.months_rebuilt.push(month);
        }
        if !report.months_rebuilt.is_empty() {
            info!(months = ?report.months_rebuilt, "usage rollup rebuilt");
        }
        Ok(report)
    }

    /// Deletes everything a tenant has (every kind, the batch ledger and
    /// dead letters); returns how many tables got a delete.
    ///
    /// `ALTER TABLE … DELETE` is a mutation: ClickHouse answers at once and
    /// rewrites the parts in the background. A table whose purge of this
    /// tenant is still pending gets no second one (each mutation rewrites
    /// every part it touches); rows that land after it are caught by a
    /// later pass, when it is done.
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<usize> {
        let db = &self.database;
        let mut tables: Vec<&str> = RecordKind::ALL.iter().map(|k| table(*k)).collect();
        tables.extend(["ingested_batches", "dead_letters", "usage_daily"]);
        // Tenant ids are [a-z0-9_-], so they need no escaping; ClickHouse
        // stores the command as `DELETE WHERE tenant_id = 'T'`.
        let condition = format!("tenant_id = '{tenant}'");
        let pending_sql = format!(
            "SELECT DISTINCT table FROM system.mutations WHERE database = '{db}' \
             AND is_done = 0 AND position(command, 'tenant_id = \\'{tenant}\\'') > 0"
        );
        let pending: Vec<String> = self
            .client
            .query(&pending_sql)
            .fetch_all()
            .await
            .map_err(|e| sink_error(format!("{e} (in: {pending_sql})")))?;
        let mut touched = 0;
        for t in tables {
            if pending.iter().any(|p| p == t) {
                debug!(%tenant, table = t, "purge still running; not issued again");
                continue;
            }
            if self
                .count(&format!("SELECT count() FROM {db}.{t} WHERE {condition}"))
                .await?
                == 0
            {
                continue;
            }
            self.execute(&format!("ALTER TABLE {db}.{t} DELETE WHERE {condition}"))
                .await?;
            touched += 1;
        }
        if touched > 0 {
            info!(%tenant, tables = touched, "tenant purge issued");
        }
        Ok(touched)
    }

    /// Whether the mutations issued so far have all been applied.
    pub async fn mutations_done(&self) -> Result<bool> {
        let pending = self
            .count(&format!(
                "SELECT count() FROM system.mutations WHERE database = '{}' AND is_done = 0",
                self.database
            ))
            .await?;
        Ok(pending == 0)
    }
}
