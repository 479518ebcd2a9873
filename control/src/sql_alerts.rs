//! Scheduled SQL alerts (`sql_alerts`): an analyst's query over their own
//! tables, run every `every_ms`, whose first value is compared with a
//! threshold. Pipelines take due alerts with a conditional update of
//! `next_run_at`, so each run happens once however many pipeline
//! processes share the store.

use schemas::TenantId;
use serde::Serialize;

use crate::db::{Row, params};
use crate::error::{Error, Result};
use crate::rows::{changed, tenant};
use crate::store::MetaStore;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqlAlert {
    pub org_id: TenantId,
    pub id: String,
    pub name: String,
    pub sql: String,
    pub every_ms: i64,
    /// gt, gte, lt, lte, eq, ne
    pub op: String,
    pub threshold: f64,
    /// low, medium, high, critical
    pub severity: String,
    pub enabled: bool,
    pub next_run_at: i64,
    pub last_run_at: Option<i64>,
    pub last_value: Option<f64>,
    pub last_error: Option<String>,
    pub last_fired_at: Option<i64>,
    pub created_at: i64,
}

const COLUMNS: &str = "org_id, id, name, sql, every_ms, op, threshold, severity, enabled, \
                       next_run_at, last_run_at, last_value, last_error, last_fired_at, created_at";

fn alert_row(r: &Row) -> Result<SqlAlert> {
    Ok(SqlAlert {
        org_id: tenant(r.get(0)?)?,
        id: r.get(1)?,
        name: r.get(2)?,
        sql: r.get(3)?,
        every_ms: r.get(4)?,
        op: r.get(5)?,
        threshold: r.get(6)?,
        severity: r.get(7)?,
        enabled: r.get(8)?,
        next_run_at: r.get(9)?,
        last_run_at: r.get(10)?,
        last_value: r.get(11)?,
        last_error: r.get(12)?,
        last_fired_at: r.get(13)?,
        created_at: r.get(14)?,
    })
}

/// What one run found.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRun {
    pub at: i64,
    pub value: Option<f64>,
    pub error: Option<String>,
    pub fired: bool,
}

impl MetaStore {
    /// Stores a new alert; [`Error::Conflict`] if the organization has one
    /// of this id.
    pub async fn add_sql_alert(&self, a: &SqlAlert) -> Result<()> {
        let inserted = self
            .db
            .execute(
                &format!(
                    "INSERT INTO sql_alerts ({COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                     ON CONFLICT(org_id, id) DO NOTHING"
                ),
                params![
                    a.org_id,
                    a.id,
                    a.name,
                    a.sql,
                    a.every_ms,
                    a.op,
                    a.threshold,
                    a.severity,
                    a.enabled,
                    a.next_run_at,
                    a.last_run_at,
                    a.last_value,
                    a.last_error.as_deref(),
                    a.last_fired_at,
                    a.created_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict {
                what: "SQL alert",
                id: a.id.clone(),
            });
        }
        Ok(())
    }

    pub async fn list_sql_alerts(&self, org: &TenantId) -> Result<Vec<SqlAlert>> {
        self.db
            .query(
                &format!("SELECT {COLUMNS} FROM sql_alerts WHERE org_id = ?1 ORDER BY id"),
                params![org],
            )
            .await?
            .iter()
            .map(alert_row)
            .collect()
    }

    pub async fn sql_alert(&self, org: &TenantId, id: &str) -> Result<Option<SqlAlert>> {
        self.db
            .query_opt(
                &format!("SELECT {COLUMNS} FROM sql_alerts WHERE org_id = ?1 AND id = ?2"),
                params![org, id],
            )
            .await?
            .map(|r| alert_row(&r))
            .transpose()
    }

    pub async fn set_sql_alert_enabled(
        &self,
        org: &TenantId,
        id: &str,
        enabled: bool,
    ) -> Result<()> {
        let n = self
            .db
            .execute(
                "UPDATE sql_alerts SET enabled = ?1 WHERE org_id = ?2 AND id = ?3",
                params![enabled, org, id],
            )
            .await?;
        changed(n, "SQL alert", id)
    }

    pub async fn delete_sql_alert(&self, org: &TenantId, id: &str) -> Result<()> {
        let n = self
            .db
            .execute(
                "DELETE FROM sql_alerts WHERE org_id = ?1 AND id = ?2",
                params![org, id],
            )
            .await?;
        changed(n, "SQL alert", id)
    }

    /// Enabled alerts due at `now`, oldest due first.
    pub async fn due_sql_alerts(&self, now: i64, limit: usize) -> Result<Vec<SqlAlert>> {
        self.db
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM sql_alerts WHERE enabled = 1 AND next_run_at <= ?1 \
                     ORDER BY next_run_at LIMIT ?2"
                ),
                params![now, limit],
            )
            .await?
            .iter()
            .map(alert_row)
            .collect()
    }

    /// Takes the run of `alert` due at its `next_run_at`: true for the one
    /// caller whose update moved it to `next`, false for every other.
    pub async fn claim_sql_alert(&self, alert: &SqlAlert, next: i64) -> Result<bool> {
        let n = self
            .db
            .execute(
                "UPDATE sql_alerts SET next_run_at = ?1 \
                 WHERE org_id = ?2 AND id = ?3 AND next_run_at = ?4",
                params![next, alert.org_id, alert.id, alert.next_run_at],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records what a run found.
    pub async fn record_sql_alert_run(
        &self,
        org: &TenantId,
        id: &str,
        run: &AlertRun,
    ) -> Result<()> {
        self.db
            .execute(
                "UPDATE sql_alerts SET last_run_at = ?1, last_value = ?2, last_error = ?3, \
                 last_fired_at = CASE WHEN ?4 = 1 THEN ?1 ELSE last_fired_at END \
                 WHERE org_id = ?5 AND id = ?6",
                params![run.at, run.value, run.error.as_deref(), run.fired, org, id],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn alert(org: &TenantId, id: &str, next: i64) -> SqlAlert {
        SqlAlert {
            org_id: org.clone(),
            id: id.into(),
            name: id.into(),
            sql: "SELECT count(*) FROM logs".into(),
            every_ms: 60_000,
            op: "gt".into(),
            threshold: 10.0,
            severity: "high".into(),
            enabled: true,
            next_run_at: next,
            last_run_at: None,
            last_value: None,
            last_error: None,
            last_fired_at: None,
            created_at: 1,
        }
    }

    #[tokio::test]
    async fn a_due_alert_is_claimed_once() {
        let (store, acme) = testing::store_with("alerts-acme").await;
        store.add_sql_alert(&alert(&acme, "a", 1000)).await.unwrap();
        store
            .add_sql_alert(&alert(&acme, "later", 9000))
            .await
            .unwrap();
        assert!(store.add_sql_alert(&alert(&acme, "a", 1)).await.is_err());
        let due = store.due_sql_alerts(5000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        // Two pipelines race for it: one wins.
        assert!(store.claim_sql_alert(&due[0], 61_000).await.unwrap());
        assert!(!store.claim_sql_alert(&due[0], 61_000).await.unwrap());
        assert!(store.due_sql_alerts(5000, 10).await.unwrap().is_empty());
        let run = AlertRun {
            at: 5000,
            value: Some(12.0),
            error: None,
            fired: true,
        };
        store.record_sql_alert_run(&acme, "a", &run).await.unwrap();
        let a = store.sql_alert(&acme, "a").await.unwrap().unwrap();
        assert_eq!((a.last_value, a.last_fired_at), (Some(12.0), Some(5000)));
        store
            .set_sql_alert_enabled(&acme, "later", false)
            .await
            .unwrap();
        assert!(
            store
                .due_sql_alerts(100_000, 10)
                .await
                .unwrap()
                .iter()
                .all(|a| a.id != "later")
        );
        store.delete_sql_alert(&acme, "a").await.unwrap();
        assert!(store.delete_sql_alert(&acme, "a").await.is_err());
    }
}
