//! The per-organization model registry (`ml_models`) and training
//! sessions (`ml_training_sessions`).
//!
//! A model is `(id, version)`; training a model again adds a version, and
//! when a version becomes `ready` the previously ready versions of the same
//! model are `archived`, so exactly one version of a model serves. Model
//! artifacts live in object storage; rows here point at them.

use schemas::TenantId;
use serde::Serialize;
use serde_json::Value;

use crate::db::{Constraint, Row, StoreError, Tx, params};
use crate::error::{Error, Result};
use crate::rows::{json, tenant};
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

const SESSION_COLUMNS: &str = "id, org_id, model_id, model_version, status, rows, duration_ms, \
                               metrics, error, started_at, finished_at";

/// Times [`MetaStore::insert_next_model_version`] reads the latest version
/// again after another process took the one it chose.
const VERSION_RACES: u32 = 8;

fn model_row(r: &Row) -> Result<ModelRecord> {
    let features: String = r.get(7)?;
    Ok(ModelRecord {
        org_id: tenant(r.get(0)?)?,
        id: r.get(1)?,
        version: r.get(2)?,
        name: r.get(3)?,
        model_type: ModelType::parse(&r.get::<String>(4)?)?,
        status: ModelStatus::parse(&r.get::<String>(5)?)?,
        accuracy: r.get(6)?,
        features: serde_json::from_str(&features).unwrap_or_default(),
        threshold: r.get(8)?,
        artifact: r.get(9)?,
        metrics: json(r.get(10)?),
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

fn session_row(r: &Row) -> Result<TrainingSession> {
    Ok(TrainingSession {
        id: r.get(0)?,
        org_id: tenant(r.get(1)?)?,
        model_id: r.get(2)?,
        model_version: r.get(3)?,
        status: ModelStatus::parse(&r.get::<String>(4)?)?,
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
async fn write_model(
    tx: &mut Tx<'_>,
    conflict: &str,
    m: &ModelRecord,
) -> std::result::Result<u64, StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO ml_models ({MODEL_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13){conflict}"
        ),
        params![
            m.org_id,
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
    .await
}

impl MetaStore {
    /// Inserts or updates a model version; a `ready` version archives the
    /// model's other ready versions. (Two versions of one model made ready
    /// at the same moment by two processes sharing a PostgreSQL store may
    /// both stay `ready`; [`MetaStore::model`] serves the higher.)
    pub async fn put_model(&self, m: &ModelRecord) -> Result<()> {
        let mut tx = self.db.begin().await?;
        if m.status == ModelStatus::Ready {
            tx.execute(
                "UPDATE ml_models SET status = 'archived', updated_at = ?4 \
                 WHERE org_id = ?1 AND id = ?2 AND version <> ?3 AND status = 'ready'",
                params![m.org_id, m.id, m.version, now_ms()],
            )
            .await?;
        }
        write_model(
            &mut tx,
            " ON CONFLICT(org_id, id, version) DO UPDATE SET name = excluded.name, \
             model_type = excluded.model_type, \
             status = excluded.status, accuracy = excluded.accuracy, \
             features = excluded.features, threshold = excluded.threshold, \
             artifact = excluded.artifact, metrics = excluded.metrics, \
             updated_at = excluded.updated_at",
            m,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores `m` as the model's next version (its `version` is set here,
    /// in the transaction that reads the latest). Concurrent trainings of
    /// one model never share a version: SQLite runs one write transaction
    /// at a time, and on PostgreSQL the loser of a race for a version
    /// breaks the primary key and reads the latest again.
    pub async fn insert_next_model_version(&self, m: &mut ModelRecord) -> Result<()> {
        let mut races = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let latest: Option<u32> = match tx
                .query_opt(
                    "SELECT MAX(version) FROM ml_models WHERE org_id = ?1 AND id = ?2",
                    params![m.org_id, m.id],
                )
                .await?
            {
                Some(r) => r.get::<Option<u32>>(0)?,
                None => None,
            };
            m.version = latest.unwrap_or(0) + 1;
            let written = write_model(&mut tx, "", &*m).await;
            match written {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(());
                }
                // Another process stored this version since the read (the
                // transaction is rolled back when dropped).
                Err(e) if e.violated() == Some(Constraint::Unique) && races < VERSION_RACES => {
                    races += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every model version of an organization, newest version first.
    pub async fn list_models(&self, org: &TenantId) -> Result<Vec<ModelRecord>> {
        self.db
            .query(
                &format!(
                    "SELECT {MODEL_COLUMNS} FROM ml_models WHERE org_id = ?1 \
                     ORDER BY id, version DESC"
                ),
                params![org],
            )
            .await?
            .iter()
            .map(model_row)
            .collect()
    }

    /// A model's given version, or the serving (`ready`) one.
    pub async fn model(
        &self,
        org: &TenantId,
        id: &str,
        version: Option<u32>,
    ) -> Result<Option<ModelRecord>> {
        let found = match version {
            Some(v) => {
                self.db
                    .query_opt(
                        &format!(
                            "SELECT {MODEL_COLUMNS} FROM ml_models \
                             WHERE org_id = ?1 AND id = ?2 AND version = ?3"
                        ),
                        params![org, id, v],
                    )
                    .await?
            }
            None => {
                self.db
                    .query_opt(
                        &format!(
                            "SELECT {MODEL_COLUMNS} FROM ml_models \
                             WHERE org_id = ?1 AND id = ?2 AND status = 'ready' \
                             ORDER BY version DESC LIMIT 1"
                        ),
                        params![org, id],
                    )
                    .await?
            }
        };
        found.as_ref().map(model_row).transpose()
    }

    /// The highest version recorded for a model (0 if none).
    pub async fn latest_model_version(&self, org: &TenantId, id: &str) -> Result<u32> {
        let v: Option<u32> = match self
            .db
            .query_opt(
                "SELECT MAX(version) FROM ml_models WHERE org_id = ?1 AND id = ?2",
                params![org, id],
            )
            .await?
        {
            Some(r) => r.get::<Option<u32>>(0)?,
            None => None,
        };
        Ok(v.unwrap_or(0))
    }

    pub async fn put_training_session(&self, s: &TrainingSession) -> Result<()> {
        self.db
            .execute(
                &format!(
                    "INSERT INTO ml_training_sessions ({SESSION_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT(id) DO UPDATE SET model_version = excluded.model_version, \
                     status = excluded.status, rows = excluded.rows, \
                     duration_ms = excluded.duration_ms, metrics = excluded.metrics, \
                     error = excluded.error, finished_at = excluded.finished_at"
                ),
                params![
                    s.id,
                    s.org_id,
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
            )
            .await?;
        Ok(())
    }

    /// One training session of `org`.
    pub async fn training_session(
        &self,
        org: &TenantId,
        id: &str,
    ) -> Result<Option<TrainingSession>> {
        self.db
            .query_opt(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM ml_training_sessions \
                     WHERE org_id = ?1 AND id = ?2"
                ),
                params![org, id],
            )
            .await?
            .as_ref()
            .map(session_row)
            .transpose()
    }

    /// A running or queued session is alive: its worker calls this
    /// periodically (see [`MetaStore::fail_stale_training_sessions`]).
    pub async fn touch_training_session(&self, id: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE ml_training_sessions SET heartbeat_at = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Marks failed every queued or running session whose worker has not
    /// been heard of since `cutoff_ms` (its process stopped or crashed),
    /// with its model version. Returns how many. The update re-checks each
    /// session's status and heartbeat as it changes it, so a session that
    /// another process failed, or whose worker was heard of meanwhile, is
    /// not failed (again) here.
    pub async fn fail_stale_training_sessions(&self, cutoff_ms: i64) -> Result<usize> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        let stale = tx
            .query(
                "UPDATE ml_training_sessions SET status = 'failed', finished_at = ?2, \
                 error = 'interrupted: the process running this training stopped; train again' \
                 WHERE status IN ('queued', 'training') \
                 AND COALESCE(heartbeat_at, started_at) < ?1 \
                 RETURNING org_id, model_id, model_version",
                params![cutoff_ms, now],
            )
            .await?;
        for r in &stale {
            let (org, model): (String, String) = (r.get(0)?, r.get(1)?);
            if let Some(version) = r.get::<Option<u32>>(2)? {
                tx.execute(
                    "UPDATE ml_models SET status = 'failed', updated_at = ?4 \
                     WHERE org_id = ?1 AND id = ?2 AND version = ?3 AND status = 'training'",
                    params![org, model, version, now],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(stale.len())
    }

    /// Training sessions, newest first.
    pub async fn list_training_sessions(&self, org: &TenantId) -> Result<Vec<TrainingSession>> {
        self.db
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM ml_training_sessions WHERE org_id = ?1 \
                     ORDER BY started_at DESC, id"
                ),
                params![org],
            )
            .await?
            .iter()
            .map(session_row)
            .collect()
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

    #[tokio::test]
    async fn a_ready_version_archives_the_previous_one() {
        let (store, org) = store_with("acme").await;
        store
            .put_model(&model(&org, 1, ModelStatus::Ready))
            .await
            .unwrap();
        store
            .put_model(&model(&org, 2, ModelStatus::Ready))
            .await
            .unwrap();
        let all = store.list_models(&org).await.unwrap();
        let status: Vec<_> = all.iter().map(|m| (m.version, m.status)).collect();
        assert_eq!(
            status,
            [(2, ModelStatus::Ready), (1, ModelStatus::Archived)]
        );
        assert_eq!(
            store
                .model(&org, "window-iforest", None)
                .await
                .unwrap()
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            store
                .latest_model_version(&org, "window-iforest")
                .await
                .unwrap(),
            2
        );
        assert_eq!(all[0].features, ["events", "bytes"]);
        assert_eq!(all[0].metrics["windows"], 300);
        // Another organization sees nothing.
        let (other_store, other) = store_with("globex").await;
        assert!(other_store.list_models(&other).await.unwrap().is_empty());
        assert!(
            store
                .model(&other, "window-iforest", None)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Versions are allocated one each, also when trainings of one model
    /// store theirs at once (on PostgreSQL they race for the same number).
    #[tokio::test]
    async fn next_versions_are_distinct_and_stale_sessions_fail() {
        let (store, org) = store_with("acme").await;
        let mut first = model(&org, 0, ModelStatus::Training);
        store.insert_next_model_version(&mut first).await.unwrap();
        assert_eq!(first.version, 1);
        let mut versions = futures::future::join_all((0..4).map(|_| {
            let (store, org) = (&store, &org);
            async move {
                let mut m = model(org, 0, ModelStatus::Training);
                store.insert_next_model_version(&mut m).await.unwrap();
                m.version
            }
        }))
        .await;
        versions.sort_unstable();
        assert_eq!(versions, [2, 3, 4, 5]);
        assert_eq!(
            store
                .latest_model_version(&org, "window-iforest")
                .await
                .unwrap(),
            5
        );

        let session = TrainingSession {
            id: "ts_1".into(),
            org_id: org.clone(),
            model_id: "window-iforest".into(),
            model_version: Some(5),
            status: ModelStatus::Training,
            rows: 300,
            duration_ms: None,
            metrics: serde_json::json!({}),
            error: None,
            started_at: 1_000,
            finished_at: None,
        };
        store.put_training_session(&session).await.unwrap();
        // Heard of after the cutoff: alive.
        store.touch_training_session("ts_1").await.unwrap();
        assert_eq!(store.fail_stale_training_sessions(2_000).await.unwrap(), 0);
        let cutoff = now_ms() + 1;
        assert_eq!(store.fail_stale_training_sessions(cutoff).await.unwrap(), 1);
        assert_eq!(store.fail_stale_training_sessions(cutoff).await.unwrap(), 0);
        let failed = store.training_session(&org, "ts_1").await.unwrap().unwrap();
        assert_eq!(failed.status, ModelStatus::Failed);
        assert!(failed.error.is_some() && failed.finished_at.is_some());
        assert_eq!(failed.rows, 300);
        for (version, status) in [(5, ModelStatus::Failed), (4, ModelStatus::Training)] {
            let m = store
                .model(&org, "window-iforest", Some(version))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.status, status, "version {version}");
        }
        assert_eq!(store.list_training_sessions(&org).await.unwrap(), [failed]);
    }
}
