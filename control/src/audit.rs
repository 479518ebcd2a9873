//! The audit log: one row per mutating API call (who, what, when, the
//! status it got), plus the operator's, the CLI's, Stripe's and failed
//! sign-ins' entries.

use schemas::TenantId;
use serde::Serialize;

use crate::db::params;
use crate::error::Result;
use crate::rows::tenant;
use crate::store::{MetaStore, now_ms};

/// Audited calls of one key (or user) and role to one route: how many
/// and when last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub key_id: String,
    pub role: String,
    pub method: String,
    pub route: String,
    pub count: u64,
    pub last_at: i64,
}

/// One audited call: who (key, role), what (method, route template and
/// path), when, and the HTTP status it got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub org_id: TenantId,
    pub key_id: String,
    pub role: String,
    pub method: String,
    pub route: String,
    pub path: String,
    pub status: u16,
    pub at: i64,
}

impl AuditEntry {
    /// An entry for something done outside a tenant's own API call: by the
    /// platform operator, the CLI, Stripe, or a failed sign-in.
    pub fn system(
        org: &TenantId,
        actor: impl Into<String>,
        role: &str,
        method: &str,
        route: &str,
        path: impl Into<String>,
        status: u16,
    ) -> Self {
        Self {
            id: 0,
            org_id: org.clone(),
            key_id: actor.into(),
            role: role.to_string(),
            method: method.to_string(),
            route: route.to_string(),
            path: path.into().chars().take(512).collect(),
            status,
            at: now_ms(),
        }
    }
}

impl MetaStore {
    /// Records a failed authentication with a credential whose organization
    /// is known (a revoked key, or a known key id with a wrong secret) in
    /// that organization's log — at most once a minute per key, so a flood
    /// of bad attempts cannot flood the log (or the writer). Unknown keys
    /// have no organization to tell. Best effort: errors are logged.
    pub async fn record_failed_authentication(&self, presented: &str, method: &str, path: &str) {
        use std::collections::HashMap;
        use std::sync::Mutex;
        use std::time::{Duration, Instant};
        static RECENT: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
        let Ok(Some((org, key_id))) = self.key_owner(presented).await else {
            return;
        };
        {
            let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
            let recent = recent.get_or_insert_with(HashMap::new);
            if recent
                .get(&key_id)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60))
            {
                return;
            }
            if recent.len() > 10_000 {
                recent.clear();
            }
            recent.insert(key_id.clone(), Instant::now());
        }
        let entry = AuditEntry::system(&org, key_id, "-", method, "authentication", path, 401);
        if let Err(e) = self.append_audit(&entry).await {
            tracing::warn!(error = %e, "writing the audit log failed");
        }
    }

    /// Appends to the audit log.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO audit_log (org_id, key_id, role, method, route, path, status, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    entry.org_id,
                    entry.key_id,
                    entry.role,
                    entry.method,
                    entry.route,
                    entry.path,
                    entry.status,
                    entry.at,
                ],
            )
            .await?;
        Ok(())
    }

    /// An organization's audit log, newest first, before entry `before`.
    pub async fn list_audit(
        &self,
        org: &TenantId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.db
            .query(
                "SELECT id, org_id, key_id, role, method, route, path, status, at FROM audit_log \
                 WHERE org_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                params![org, before.unwrap_or(i64::MAX), limit],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    org_id: tenant(r.get(1)?)?,
                    key_id: r.get(2)?,
                    role: r.get(3)?,
                    method: r.get(4)?,
                    route: r.get(5)?,
                    path: r.get(6)?,
                    status: r.get(7)?,
                    at: r.get(8)?,
                })
            })
            .collect()
    }

    /// `org`'s audit log from `from` to before `until` (ms), summarised:
    /// one line per key (or user) and role, method and route, with how
    /// many times and when last; most frequent first.
    pub async fn audit_summary(
        &self,
        org: &TenantId,
        from: i64,
        until: i64,
    ) -> Result<Vec<AuditSummary>> {
        self.db
            .query(
                "SELECT key_id, role, method, route, COUNT(*), MAX(at) FROM audit_log \
                 WHERE org_id = ?1 AND at >= ?2 AND at < ?3 \
                 GROUP BY key_id, role, method, route \
                 ORDER BY COUNT(*) DESC, key_id, route, method",
                params![org, from, until],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(AuditSummary {
                    key_id: r.get(0)?,
                    role: r.get(1)?,
                    method: r.get(2)?,
                    route: r.get(3)?,
                    count: r.get::<i64>(4)?.max(0) as u64,
                    last_at: r.get(5)?,
                })
            })
            .collect()
    }
}
