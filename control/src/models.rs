//! The per-organization model registry (`ml_models`) and training
//! sessions (`ml_training_sessions`).
//!
//! A model is `(id, version)`; training a model again adds a version, and
//! when a version becomes `ready` the previously ready versions of the same
//! model are `archived`, so exactly one version of a model serves. Model
//! artifacts live in object storage; rows here point at them.

use rusqlite::{OptionalExtension, Row, params};
use schemas::TenantId;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rows::{conversion, json, tenant};
use crate::store::{MetaStore, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelType {
    IsolationForest,
    RandomForest,
}

impl ModelType {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::IsolationForest => "isolation_forest",
            ModelType::RandomForest => "random_forest",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "isolation_forest" => Ok(ModelType::IsolationForest),
            "random_forest" => Ok(ModelType::RandomForest),
            other => Err(Error::Invalid(format!("unknown model type {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// A training session waiting for a training slot.
    Queued,
    Training,
    Ready,
    Failed,
    Archived,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Queued => "queued",
            ModelStatus::Training => "training",
            ModelStatus::Ready => "ready",
            ModelStatus::Failed => "failed",
            ModelStatus::Archived => "archived",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "queued" => Ok(ModelStatus::Queued),
            "training" => Ok(ModelStatus::Training),
            "ready" => Ok(ModelStatus::Ready),
            "failed" => Ok(ModelStatus::Failed),
            "archived" => Ok(ModelStatus::Archived),
            other => Err(Error::Invalid(format!("unknown model status {other:?}"))),
        }
    }
}

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecord {
    pub org_id: TenantId,
    pub id: String,
    pub version: u32,
    pub name: String,
    pub model_type: ModelType,
    pub status: ModelStatus,
    /// Held-out accuracy (supervised) or ROC AUC on labelled data.
    pub accuracy: Option<f64>,
    pub features: Vec<String>,
    pub threshold: Option<f64>,
    /// Object-store path of the artifact.
    pub artifact: Option<String>,
    pub metrics: Value,
    /// ms since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingSession {
    pub id: String,
    pub org_id: TenantId,
    pub model_id: String,
    pub model_version: Option<u32>,
    /// training, ready (finished) or failed.
    pub status: ModelStatus,
    pub rows: u64,
    pub duration_ms: Option<u64>,
    pub metrics: Value,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

const MODEL_COLUMNS: &str = "org_id, id, version, name, model_type, status, accuracy, features, \
                             threshold, artifact, metrics, created_at, updated_at";

fn model_row(r: &Row<'_>) -> rusqlite::Result<ModelRecord> {
    let features: String = r.get(7)?;
    Ok(ModelRecord {
        org_id: tenant(r.get(0)?)?,
        id: r.get(1)?,
        version: r.get(2)?,
        name: r.get(3)?,
        model_type: ModelType::parse(&r.get::<_, String>(4)?).map_err(conversion)?,
        status: ModelStatus::parse(&r.get::<_, String>(5)?).map_err(conversion)?,
        accuracy: r.get(6)?,
        features: serde_json::from_str(&features).unwrap_or_default(),
        threshold: r.get(8)?,
        artifact: r.get(9)?,
        metrics: json(r.get(10)?),
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<TrainingSession> {
    Ok(TrainingSession {
        id: r.get(0)?,
        org_id: tenant(r.get(1)?)?,
        model_id: r.get(2)?,
        model_version: r.get(3)?,
        status: ModelStatus::parse(&r.get::<_, String>(4)?).map_err(conversion)?,
        rows: r.get(5)?,
        duration_ms: r.get(6)?,
        metrics: json(r.get(7)?),
        error: r.get(8)?,
        started_at: r.get(9)?,
        finished_at: r.get(10)?,
    })
}

/// Inserts the row of `m`, followed by `conflict` (an `ON CONFLICT` clause
/// or nothing).
fn write_model(
    tx: &rusqlite::Transaction<'_>,
    conflict: &str,
    m: &ModelRecord,
) -> rusqlite::Result<usize> {
    tx.execute(
        &format!(
            "INSERT INTO ml_models ({MODEL_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13){conflict}"
        ),
        params![
            m.org_id.as_str(),
            m.id,
            m.version,
            m.name,
            m.model_type.as_str(),
            m.status.as_str(),
            m.accuracy,
            serde_json::to_string(&m.features).unwrap_or_else(|_| "[]".into()),
            m.threshold,
            m.artifact,
            m.metrics.to_string(),
            m.created_at,
            m.updated_at,
        ],
    )
}

impl MetaStore {
    /// Inserts or updates a model version; a `ready` version archives the
    /// model's other ready versions.
    pub fn put_model(&self, m: &ModelRecord) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if m.status == ModelStatus::Ready {
            tx.execute(
                "UPDATE ml_models SET status = 'archived', updated_at = ?4 \
                 WHERE org_id = ?1 AND id = ?2 AND version <> ?3 AND status = 'ready'",
                params![m.org_id.as_str(), m.id, m.version, now_ms()],
            )?;
        }
        write_model(
            &tx,
            " ON CONFLICT(org_id, id, version) DO UPDATE SET name = excluded.name, \
             model_type = excluded.model_type, \
             status = excluded.status, accuracy = excluded.accuracy, \
             features = excluded.features, threshold = excluded.threshold, \
             artifact = excluded.artifact, metrics = excluded.metrics, \
             updated_at = excluded.updated_at",
            m,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores `m` as the model's next version (its `version` is set here,
    /// in the same transaction that reads the latest, so concurrent
    /// trainings of one model never share a version).
    pub fn insert_next_model_version(&self, m: &mut ModelRecord) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let latest: Option<u32> = tx.query_row(
            "SELECT max(version) FROM ml_models WHERE org_id = ?1 AND id = ?2",
            params![m.org_id.as_str(), m.id],
            |r| r.get(0),
        )?;
        m.version = latest.unwrap_or(0) + 1;
        write_model(&tx, "", m)?;
        tx.commit()?;
        Ok(())
    }

    /// Every model version of an organization, newest version first.
    pub fn list_models(&self, org: &TenantId) -> Result<Vec<ModelRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {MODEL_COLUMNS} FROM ml_models WHERE org_id = ?1 ORDER BY id, version DESC"
        ))?;
        let rows = stmt.query_map([org.as_str()], model_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A model's given version, or the serving (`ready`) one.
    pub fn model(
        &self,
        org: &TenantId,
        id: &str,
        version: Option<u32>,
    ) -> Result<Option<ModelRecord>> {
        let conn = self.conn();
        let found = match version {
            Some(v) => conn
                .query_row(
                    &format!(
                        "SELECT {MODEL_COLUMNS} FROM ml_models \
                         WHERE org_id = ?1 AND id = ?2 AND version = ?3"
                    ),
                    params![org.as_str(), id, v],
                    model_row,
                )
                .optional()?,
            None => conn
                .query_row(
                    &format!(
                        "SELECT {MODEL_COLUMNS} FROM ml_models \
                         WHERE org_id = ?1 AND id = ?2 AND status = 'ready' \
                         ORDER BY version DESC LIMIT 1"
                    ),
                    params![org.as_str(), id],
                    model_row,
                )
                .optional()?,
        };
        Ok(found)
    }

    /// The highest version recorded for a model (0 if none).
    pub fn latest_model_version(&self, org: &TenantId, id: &str) -> Result<u32> {
        let conn = self.conn();
        let v: Option<u32> = conn.query_row(
            "SELECT max(version) FROM ml_models WHERE org_id = ?1 AND id = ?2",
            params![org.as_str(), id],
            |r| r.get(0),
        )?;
        Ok(v.unwrap_or(0))
    }

    pub fn put_training_session(&self, s: &TrainingSession) -> Result<()> {
        self.conn().execute(
            "INSERT INTO ml_training_sessions (id, org_id, model_id, model_version, status, \
             rows, duration_ms, metrics, error, started_at, finished_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT(id) DO UPDATE SET model_version = excluded.model_version, \
             status = excluded.status, rows = excluded.rows, duration_ms = excluded.duration_ms, \
             metrics = excluded.metrics, error = excluded.error, finished_at = excluded.finished_at",
            params![
                s.id,
                s.org_id.as_str(),
                s.model_id,
                s.model_version,
                s.status.as_str(),
                s.rows,
                s.duration_ms,
                s.metrics.to_string(),
                s.error,
                s.started_at,
                s.finished_at,
            ],
        )?;
        Ok(())
    }

    /// One training session of `org`.
    pub fn training_session(&self, org: &TenantId, id: &str) -> Result<Option<TrainingSession>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, org_id, model_id, model_version, status, rows, duration_ms, metrics, \
             error, started_at, finished_at FROM ml_training_sessions WHERE org_id = ?1 AND id = ?2",
        )?;
        Ok(stmt
            .query_row(params![org.as_str(), id], session_row)
            .optional()?)
    }

    /// A running or queued session is alive: its worker calls this
    /// periodically (see [`MetaStore::fail_stale_training_sessions`]).
    pub fn touch_training_session(&self, id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE ml_training_sessions SET heartbeat_at = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )?;
        Ok(())
    }

    /// Marks failed every queued or running session whose worker has not
    /// been heard of since `cutoff_ms` (its process stopped or crashed),
    /// with its model version. Returns how many.
    pub fn fail_stale_training_sessions(&self, cutoff_ms: i64) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let stale: Vec<(String, String, String, Option<u32>)> = {
            let mut stmt = tx.prepare(
                "SELECT id, org_id, model_id, model_version FROM ml_training_sessions \
                 WHERE status IN ('queued', 'training') \
                 AND COALESCE(heartbeat_at, started_at) < ?1",
            )?;
            stmt.query_map([cutoff_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let now = now_ms();
        for (id, org, model, version) in &stale {
            tx.execute(
                "UPDATE ml_training_sessions SET status = 'failed', finished_at = ?2, \
                 error = 'interrupted: the process running this training stopped; train again' \
                 WHERE id = ?1",
                params![id, now],
            )?;
            if let Some(v) = version {
                tx.execute(
                    "UPDATE ml_models SET status = 'failed', updated_at = ?4 \
                     WHERE org_id = ?1 AND id = ?2 AND version = ?3 AND status = 'training'",
                    params![org, model, v, now],
                )?;
            }
        }
        tx.commit()?;
        Ok(stale.len())
    }

    /// Training sessions, newest first.
    pub fn list_training_sessions(&self, org: &TenantId) -> Result<Vec<TrainingSession>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, org_id, model_id, model_version, status, rows, duration_ms, metrics, \
             error, started_at, finished_at FROM ml_training_sessions WHERE org_id = ?1 \
             ORDER BY started_at DESC, id",
        )?;
        let rows = stmt.query_map([org.as_str()], session_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::store_with;

    fn model(org: &TenantId, version: u32, status: ModelStatus) -> ModelRecord {
        ModelRecord {
            org_id: org.clone(),
            id: "window-iforest".into(),
            version,
            name: "Host-minute anomalies".into(),
            model_type: ModelType::IsolationForest,
            status,
            accuracy: None,
            features: vec!["events".into(), "bytes".into()],
            threshold: Some(0.61),
            artifact: Some(format!("models/x/v{version}.json")),
            metrics: serde_json::json!({"windows": 300}),
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn a_ready_version_archives_the_previous_one() {
        let (store, org) = store_with("acme");
        store
            .put_model(&model(&org, 1, ModelStatus::Ready))
            .unwrap();
        store
            .put_model(&model(&org, 2, ModelStatus::Ready))
            .unwrap();
        let all = store.list_models(&org).unwrap();
        let status: Vec<_> = all.iter().map(|m| (m.version, m.status)).collect();
        assert_eq!(
            status,
            [(2, ModelStatus::Ready), (1, ModelStatus::Archived)]
        );
        assert_eq!(
            store
                .model(&org, "window-iforest", None)
                .unwrap()
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            store.latest_model_version(&org, "window-iforest").unwrap(),
            2
        );
        assert_eq!(all[0].features, ["events", "bytes"]);
        assert_eq!(all[0].metrics["windows"], 300);
        // Another organization sees nothing.
        let (other_store, other) = store_with("globex");
        assert!(other_store.list_models(&other).unwrap().is_empty());
        assert!(
            store
                .model(&other, "window-iforest", None)
                .unwrap()
                .is_none()
        );
    }
}
