//! `/api/insights/models…`: the model registry, training-data upload,
//! training and prediction, scoped to the caller's organization.
//!
//! - `GET  /api/insights/models` — every model version (viewer and up).
//! - `POST /api/insights/models/upload-training-data` — CSV (`text/csv`) or
//!   JSON (`application/json`, an array of objects or NDJSON); `?label=`
//!   names the label column (default `label` if present). The cleaned
//!   dataset is stored under `datasets/tenant_id=<t>/<id>.json` (member and
//!   up).
//! - `POST /api/insights/models/train` — `{"dataset_id", "name",
//!   "model_type"?, "n_estimators"?, "contamination"?, "seed"?}`: trains on
//!   a blocking thread (at most `MAX_CONCURRENT_TRAININGS` at once), stores
//!   the artifact under `models/tenant_id=<t>/<model id>/v<version>.json`,
//!   records the version (ready, archiving the previous one) and its
//!   training session, and answers with both (member and up). Training the
//!   same name again makes the next version.
//! - `POST /api/insights/models/{id}/predict` — `{"rows": [{feature: value}
//!   …] or [[…]], "version"?}`: labels or scores with confidences (viewer and
//!   up). Works for uploaded models and for the streaming detector's
//!   `window-iforest`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use control::insights::{ModelRecord, ModelStatus, ModelType, TrainingSession};
use detectors::streaming::{TenantModel, WINDOW_MODEL_ID};
use detectors::training::{
    self, Dataset, Format, Limits, ModelKind, Prediction, TrainParams, TrainedModel, TrainingError,
};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use pipeline::Lake;
use schemas::TenantId;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// Upload size limit of the training-data route.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;
const MAX_CONCURRENT_TRAININGS: usize = 1;
const MAX_PREDICT_ROWS: usize = 10_000;

/// Model artifacts and datasets, and a small cache of loaded models.
pub struct Insights {
    lake: Lake,
    trainings: Semaphore,
    cache: Mutex<HashMap<(String, String, u32), Arc<Loaded>>>,
}

enum Loaded {
    Uploaded(TrainedModel),
    Window(TenantModel),
}

impl Insights {
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            trainings: Semaphore::new(MAX_CONCURRENT_TRAININGS),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn dataset_path(&self, tenant: &TenantId, id: &str) -> Path {
        self.lake
            .root()
            .clone()
            .join("datasets")
            .join(format!("tenant_id={tenant}").as_str())
            .join(format!("{id}.json").as_str())
    }

    fn artifact_path(&self, tenant: &TenantId, model: &str, version: u32) -> Path {
        pipeline::detection::models_prefix(&self.lake, tenant)
            .join(model)
            .join(format!("v{version:06}.json").as_str())
    }

    async fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        self.lake
            .raw_store()
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|e| ApiError::Internal(format!("storing {path}: {e}")))?;
        Ok(())
    }

    async fn get(&self, path: &Path) -> Result<Option<bytes::Bytes>> {
        match self.lake.raw_store().get(path).await {
            Ok(r) => {
                Ok(Some(r.bytes().await.map_err(|e| {
                    ApiError::Internal(format!("reading {path}: {e}"))
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ApiError::Internal(format!("reading {path}: {e}"))),
        }
    }

    async fn load(&self, record: &ModelRecord) -> Result<Arc<Loaded>> {
        let key = (record.org_id.to_string(), record.id.clone(), record.version);
        if let Some(m) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(m.clone());
        }
        let path = self.artifact_path(&record.org_id, &record.id, record.version);
        let bytes = self.get(&path).await?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "model {} version {} has no stored artifact",
                record.id, record.version
            ))
        })?;
        let parsed = tokio::task::spawn_blocking(move || {
            if key.1 == WINDOW_MODEL_ID {
                serde_json::from_slice(&bytes).map(Loaded::Window)
            } else {
                serde_json::from_slice(&bytes).map(Loaded::Uploaded)
            }
            .map(|m| (key, m))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (key, model) =
            parsed.map_err(|e| ApiError::Internal(format!("artifact {path}: {e}")))?;
        let model = Arc::new(model);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, model.clone());
        Ok(model)
    }
}

fn training_error(e: TrainingError) -> ApiError {
    match e {
        TrainingError::Invalid(m) => ApiError::BadRequest(m),
        TrainingError::Failed(m) => ApiError::Internal(m),
    }
}

/// `GET /api/insights/models`
pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Value>> {
    let models = state.store.list_models(&caller.tenant)?;
    let sessions = state.store.list_training_sessions(&caller.tenant)?;
    Ok(Json(
        json!({ "models": models, "training_sessions": sessions }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct UploadParams {
    label: Option<String>,
}

/// `POST /api/insights/models/upload-training-data`
pub async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let body = body.map_err(|e| ApiError::from_body(e, MAX_UPLOAD_BYTES))?;
    let media = crate::error::media_type(&headers);
    let format = match media.as_str() {
        "text/csv" | "application/csv" => Format::Csv,
        "application/json" | "application/x-ndjson" | "application/jsonl" => Format::Json,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "unsupported content type {other:?}: send text/csv or application/json"
            )));
        }
    };
    let label = params.label.clone();
    let dataset = tokio::task::spawn_blocking(move || {
        training::parse(&body, format, label.as_deref(), &Limits::default())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(training_error)?;
    let id = Uuid::now_v7().to_string();
    let bytes = serde_json::to_vec(&dataset).map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .insights
        .put(&state.insights.dataset_path(&caller.tenant, &id), bytes)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "dataset_id": id,
            "rows": dataset.rows,
            "dropped_rows": dataset.dropped_rows,
            "features": dataset.features,
            "label_column": dataset.label_column,
            "classes": dataset.class_counts(),
            "ignored_columns": dataset.ignored_columns,
        })),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    dataset_id: String,
    name: String,
    #[schema(value_type = Option<String>)]
    model_type: Option<ModelKind>,
    n_estimators: Option<usize>,
    contamination: Option<f64>,
    seed: Option<u64>,
}

/// A model id from its name: lowercase letters, digits and dashes.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(64).collect()
}

/// `POST /api/insights/models/train`
pub async fn train(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: std::result::Result<Json<TrainRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let Json(req) = body.map_err(ApiError::from)?;
    let id = slug(&req.name);
    if id.is_empty() || id == WINDOW_MODEL_ID {
        return Err(ApiError::BadRequest(format!(
            "name {:?} is not usable: give a name with letters or digits (and not the streaming detector's {WINDOW_MODEL_ID})",
            req.name
        )));
    }
    if Uuid::parse_str(&req.dataset_id).is_err() {
        return Err(ApiError::BadRequest(
            "dataset_id is not a dataset id".into(),
        ));
    }
    let n_estimators = req.n_estimators.unwrap_or(100);
    if !(1..=500).contains(&n_estimators) {
        return Err(ApiError::BadRequest(
            "n_estimators must be within 1..=500".into(),
        ));
    }
    let tenant = caller.tenant.clone();
    let bytes = state
        .insights
        .get(&state.insights.dataset_path(&tenant, &req.dataset_id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dataset {}", req.dataset_id)))?;
    let _slot = state
        .insights
        .trainings
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let version = state.store.latest_model_version(&tenant, &id)? + 1;
    let session_id = Uuid::now_v7().to_string();
    let started_at = now_ms();
    // Visible as `training` while it runs.
    let mut record = ModelRecord {
        org_id: tenant.clone(),
        id: id.clone(),
        version,
        name: req.name.clone(),
        model_type: match req.model_type {
            Some(ModelKind::IsolationForest) => ModelType::IsolationForest,
            _ => ModelType::RandomForest,
        },
        status: ModelStatus::Training,
        accuracy: None,
        features: Vec::new(),
        threshold: None,
        artifact: None,
        metrics: json!({}),
        created_at: started_at,
        updated_at: started_at,
    };
    state.store.put_model(&record)?;
    let params = TrainParams {
        kind: req.model_type,
        n_estimators,
        contamination: req.contamination.unwrap_or(0.05),
        seed: req.seed.unwrap_or(42),
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let dataset: Dataset = serde_json::from_slice(&bytes)
            .map_err(|e| TrainingError::Failed(format!("stored dataset: {e}")))?;
        let started = Instant::now();
        let (model, metrics) = training::train(&dataset, &params)?;
        let artifact =
            serde_json::to_vec(&model).map_err(|e| TrainingError::Failed(e.to_string()))?;
        Ok::<_, TrainingError>((dataset, model, metrics, artifact, started.elapsed()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (dataset, model, metrics, artifact, took) = match outcome {
        Ok(o) => o,
        Err(e) => {
            record.status = ModelStatus::Failed;
            record.metrics = json!({ "error": e.to_string() });
            record.updated_at = now_ms();
            state.store.put_model(&record)?;
            state.store.put_training_session(&TrainingSession {
                id: session_id,
                org_id: tenant.clone(),
                model_id: id,
                model_version: None,
                status: ModelStatus::Failed,
                rows: 0,
                duration_ms: None,
                metrics: json!({}),
                error: Some(e.to_string()),
                started_at,
                finished_at: Some(now_ms()),
            })?;
            return Err(training_error(e));
        }
    };
    let path = state.insights.artifact_path(&tenant, &id, version);
    state.insights.put(&path, artifact).await?;
    let metrics_json = serde_json::to_value(&metrics).unwrap_or(Value::Null);
    record.model_type = match model.kind() {
        ModelKind::IsolationForest => ModelType::IsolationForest,
        ModelKind::RandomForest => ModelType::RandomForest,
    };
    record.status = ModelStatus::Ready;
    record.accuracy = metrics.accuracy.or(metrics.isolation_forest_auc);
    record.features = dataset.features.clone();
    record.threshold = match &model {
        TrainedModel::IsolationForest { threshold, .. } => Some(*threshold),
        TrainedModel::RandomForest { .. } => None,
    };
    record.artifact = Some(path.to_string());
    record.metrics = metrics_json.clone();
    record.updated_at = now_ms();
    state.store.put_model(&record)?;
    let session = TrainingSession {
        id: session_id,
        org_id: tenant,
        model_id: id,
        model_version: Some(version),
        status: ModelStatus::Ready,
        rows: dataset.rows as u64,
        duration_ms: Some(took.as_millis() as u64),
        metrics: metrics_json,
        error: None,
        started_at,
        finished_at: Some(now_ms()),
    };
    state.store.put_training_session(&session)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "model": record, "training_session": session })),
    ))
}

fn now_ms() -> i64 {
    detectors::streaming::now_ms()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    #[schema(value_type = Vec<Object>)]
    rows: Vec<Value>,
    version: Option<u32>,
}

/// `POST /api/insights/models/{id}/predict`
pub async fn predict(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath(id): UrlPath<String>,
    body: std::result::Result<Json<PredictRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>> {
    let Json(req) = body.map_err(ApiError::from)?;
    if req.rows.is_empty() || req.rows.len() > MAX_PREDICT_ROWS {
        return Err(ApiError::BadRequest(format!(
            "rows must hold 1..={MAX_PREDICT_ROWS} rows"
        )));
    }
    let record = state
        .store
        .model(&caller.tenant, &id, req.version)?
        .ok_or_else(|| ApiError::NotFound(format!("no model {id:?}")))?;
    let x = rows_matrix(&req.rows, &record.features)?;
    let loaded = state.insights.load(&record).await?;
    let predictions = tokio::task::spawn_blocking(move || -> Result<Vec<Prediction>> {
        match loaded.as_ref() {
            Loaded::Uploaded(model) => training::predict(model, &x).map_err(training_error),
            Loaded::Window(model) => Ok(window_predictions(model, &x)),
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({
        "model_id": record.id,
        "version": record.version,
        "predictions": predictions,
    })))
}

/// Rows as objects (by feature name) or arrays (in feature order).
fn rows_matrix(rows: &[Value], features: &[String]) -> Result<Vec<f64>> {
    let mut x = Vec::with_capacity(rows.len() * features.len());
    for (i, row) in rows.iter().enumerate() {
        let number = |v: Option<&Value>, f: &str| -> Result<f64> {
            match v {
                Some(Value::Number(n)) => n.as_f64().ok_or_else(|| {
                    ApiError::BadRequest(format!("rows[{i}].{f} is not a finite number"))
                }),
                Some(Value::Bool(b)) => Ok(f64::from(u8::from(*b))),
                Some(_) => Err(ApiError::BadRequest(format!(
                    "rows[{i}].{f} must be a number"
                ))),
                None => Err(ApiError::BadRequest(format!(
                    "rows[{i}] lacks feature {f:?} (features: {})",
                    features.join(", ")
                ))),
            }
        };
        match row {
            Value::Object(map) => {
                for f in features {
                    x.push(number(map.get(f), f)?);
                }
            }
            Value::Array(values) if values.len() == features.len() => {
                for (f, v) in features.iter().zip(values) {
                    x.push(number(Some(v), f)?);
                }
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "rows[{i}] must be an object of features or an array of {} numbers",
                    features.len()
                )));
            }
        }
    }
    Ok(x)
}

fn window_predictions(model: &TenantModel, x: &[f64]) -> Vec<Prediction> {
    use detectors::windows::{FEATURES, N_FEATURES};
    x.chunks_exact(N_FEATURES)
        .map(|row| {
            let mut values = [0.0; N_FEATURES];
            values.copy_from_slice(row);
            let input = model.input(&values);
            let score = -model
                .forest
                .score_samples(detectors::iforest::Matrix::new(&input, N_FEATURES))[0];
            let anomaly = score > model.threshold;
            let confidence = if anomaly {
                (score - model.threshold) / (1.0 - model.threshold).max(1e-9)
            } else {
                (model.threshold - score) / model.threshold.max(1e-9)
            };
            Prediction {
                label: if anomaly { "anomaly" } else { "normal" }.into(),
                confidence: confidence.clamp(0.0, 1.0),
                score: Some(score),
                explanation: Some(
                    FEATURES
                        .iter()
                        .map(|f| f.to_string())
                        .zip(model.forest.explain(&input))
                        .collect(),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn model_ids_are_slugs_of_names() {
        assert_eq!(slug("Login Classifier v2!"), "login-classifier-v2");
        assert_eq!(slug("  --x--  "), "x");
        assert_eq!(slug("!!!"), "");
    }
}
