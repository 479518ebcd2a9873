//! `/api/insights/models…`: the model registry, training-data upload,
//! training and prediction, scoped to the caller's organization.
//!
//! - `GET  /api/insights/models` — every model version (viewer and up).
//! - `POST /api/insights/models/upload-training-data` — CSV (`text/csv`) or
//!   JSON (`application/json`, an array of objects or NDJSON); `?label=`
//!   names the label column (default `label` if present), `?unlabelled=true`
//!   says there is none; a column whose name looks like an answer
//!   (`anomaly`, `is_attack`, `class`…) is refused unless one of them says
//!   what it is, so a model never trains on the answer as a feature. The
//!   answer lists the features, the label and the ignored columns. The cleaned
//!   dataset is stored under `datasets/tenant_id=<t>/<id>.json` (member and
//!   up).
//! - `POST /api/insights/models/train` — `{"dataset_id", "name",
//!   "model_type"?, "n_estimators"?, "contamination"?, "seed"?}`: a
//!   training *job* (member and up). The answer is `202` with the training
//!   session (`queued`) and the model version it will make, at once; the
//!   job waits for a training slot ([`crate::fair::FairSlots`]: at most
//!   `api.training.max_concurrent` at once, one per organization, the
//!   organization holding fewest first), trains on a blocking thread,
//!   stores the artifact under
//!   `models/tenant_id=<t>/<model id>/v<version>.json` and records the
//!   version `ready` (archiving the previous one) or `failed` with the
//!   error. The slot is held by the job, not the request: a client that
//!   disconnects frees nothing early. Training the same name again makes
//!   the next version.
//! - `GET /api/insights/models/training-sessions/{id}` — poll a session.
//!   A session whose process stopped (restart, crash) is marked `failed`
//!   once its heartbeat is older than [`STALE_AFTER`] by every query API
//!   that shares the store.
//! - `POST /api/insights/models/{id}/predict` — `{"rows": [{feature: value}
//!   …] or [[…]], "version"?}`: labels or scores with confidences (viewer and
//!   up). Works for uploaded models and for the streaming detector's
//!   `window-iforest`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use control::models::{ModelRecord, ModelStatus, ModelType, TrainingSession};
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
use uuid::Uuid;

use crate::fair::{FairSlots, Refused};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// Upload size limit of the training-data route.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;
const MAX_PREDICT_ROWS: usize = 10_000;
/// How often a running or queued training job says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// A queued or running session not heard of for this long is failed.
pub const STALE_AFTER: Duration = Duration::from_secs(90);
/// Upper bound of training work: rows × trees (200,000 rows with 100
/// trees). Training cannot be interrupted once started, so what would run
/// for long is refused up front instead.
const MAX_ROW_TREES: usize = 20_000_000;

/// `[api.training]`
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Trainings running at once, all organizations together.
    pub max_concurrent: usize,
    /// Trainings one organization may run at once.
    pub max_concurrent_per_org: usize,
    /// Trainings one organization may have waiting; more get 429.
    pub max_queued_per_org: usize,
    /// A queued training fails if no slot frees within this long.
    pub max_wait_ms: u64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            max_concurrent_per_org: 1,
            max_queued_per_org: 4,
            max_wait_ms: 600_000,
        }
    }
}

/// Model artifacts and datasets, and a small cache of loaded models.
pub struct Insights {
    lake: Lake,
    config: TrainingConfig,
    trainings: Arc<FairSlots>,
    cache: Mutex<HashMap<(String, String, u32), Arc<Loaded>>>,
}

enum Loaded {
    Uploaded(TrainedModel),
    Window(TenantModel),
}

impl Insights {
    pub fn new(lake: Lake, config: TrainingConfig) -> Self {
        Self {
            lake,
            trainings: FairSlots::new(
                config.max_concurrent,
                config.max_concurrent_per_org,
                config.max_queued_per_org,
            ),
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Trainings of `tenant` running now.
    pub fn trainings_running(&self, tenant: &TenantId) -> usize {
        self.trainings.running(tenant)
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
    let models = state.store.list_models(&caller.tenant).await?;
    let sessions = state.store.list_training_sessions(&caller.tenant).await?;
    Ok(Json(
        json!({ "models": models, "training_sessions": sessions }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The label column.
    label: Option<String>,
    /// The data has no label: every numeric column is a feature.
    #[serde(default)]
    unlabelled: bool,
}

/// `POST /api/insights/models/upload-training-data`
pub async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::extract::QueryParams(params): crate::extract::QueryParams<UploadParams>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    state
        .entitled_org(&caller, schemas::Feature::MlDetection)
        .await?;
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
    if params.label.is_some() && params.unlabelled {
        return Err(ApiError::BadRequest(
            "give either label=COLUMN or unlabelled=true, not both".into(),
        ));
    }
    let label = params.label.clone();
    let unlabelled = params.unlabelled;
    let dataset = tokio::task::spawn_blocking(move || {
        let label = match (&label, unlabelled) {
            (Some(l), _) => training::Label::Column(l),
            (None, true) => training::Label::Unlabelled,
            (None, false) => training::Label::Auto,
        };
        training::parse(&body, format, label, &Limits::default())
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

/// `POST /api/insights/models/train` — queues a training job; `202`.
pub async fn train(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<TrainRequest>,
) -> Result<(StatusCode, Json<Value>)> {
    state
        .entitled_org(&caller, schemas::Feature::MlDetection)
        .await?;
    let crate::extract::JsonBody(req) = body;
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
    let dataset: Dataset = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("stored dataset {}: {e}", req.dataset_id)))?;
    if dataset.rows.saturating_mul(n_estimators) > MAX_ROW_TREES {
        return Err(ApiError::BadRequest(format!(
            "{} rows × {n_estimators} trees is more training than one job may do \
             (at most {MAX_ROW_TREES} rows × trees): use fewer trees or a sample",
            dataset.rows
        )));
    }
    // A place in the queue (or a slot) before anything is promised.
    let entry = state.insights.trainings.enter(&tenant).map_err(|r| match r {
        Refused::QueueFull { queued } => ApiError::TooBusy(format!(
            "this organization already has {queued} trainings waiting; retry when one has finished"
        )),
        Refused::Timeout { .. } => ApiError::TooBusy("no training slot".into()),
    })?;
    let started_at = now_ms();
    let mut record = ModelRecord {
        org_id: tenant.clone(),
        id: id.clone(),
        version: 0,
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
    state.store.insert_next_model_version(&mut record).await?;
    let session = TrainingSession {
        id: Uuid::now_v7().to_string(),
        org_id: tenant.clone(),
        model_id: id,
        model_version: Some(record.version),
        status: ModelStatus::Queued,
        rows: dataset.rows as u64,
        duration_ms: None,
        metrics: json!({}),
        error: None,
        started_at,
        finished_at: None,
    };
    state.store.put_training_session(&session).await?;
    state.store.touch_training_session(&session.id).await?;
    let params = TrainParams {
        kind: req.model_type,
        n_estimators,
        contamination: req.contamination.unwrap_or(0.05),
        seed: req.seed.unwrap_or(42),
    };
    let job = TrainingJob {
        store: state.store.clone(),
        insights: state.insights.clone(),
        record: record.clone(),
        session: session.clone(),
    };
    tokio::spawn(job.run(entry, dataset, params));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "model": record,
            "training_session": session,
            "poll": format!("/api/insights/models/training-sessions/{}", session.id),
        })),
    ))
}

/// One queued training, run to its end whatever happens to the request.
struct TrainingJob {
    store: Arc<control::MetaStore>,
    insights: Arc<Insights>,
    record: ModelRecord,
    session: TrainingSession,
}

impl TrainingJob {
    async fn run(mut self, entry: crate::fair::Entry, dataset: Dataset, params: TrainParams) {
        let wait = Duration::from_millis(self.insights.config.max_wait_ms);
        let slot = {
            let waiting = entry.wait(wait);
            tokio::pin!(waiting);
            let mut beat = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    slot = &mut waiting => break slot,
                    _ = beat.tick() => self.beat().await,
                }
            }
        };
        let Ok(_slot) = slot else {
            self.fail(format!(
                "no training slot became free within {} s; retry later",
                wait.as_secs()
            ))
            .await;
            return;
        };
        self.session.status = ModelStatus::Training;
        if let Err(e) = self.store.put_training_session(&self.session).await {
            tracing::warn!(error = %e, session = %self.session.id, "recording a training session failed");
        }
        let started = Instant::now();
        let training = tokio::task::spawn_blocking(move || {
            let (model, metrics) = training::train(&dataset, &params)?;
            let artifact =
                serde_json::to_vec(&model).map_err(|e| TrainingError::Failed(e.to_string()))?;
            Ok::<_, TrainingError>((dataset, model, metrics, artifact))
        });
        tokio::pin!(training);
        let mut beat = tokio::time::interval(HEARTBEAT);
        let outcome = loop {
            tokio::select! {
                done = &mut training => break done,
                _ = beat.tick() => self.beat().await,
            }
        };
        // The slot is released when this function returns: after the work.
        match outcome {
            Ok(Ok((dataset, model, metrics, artifact))) => {
                if let Err(e) = self
                    .finish(dataset, model, metrics, artifact, started.elapsed())
                    .await
                {
                    self.fail(format!("storing the model failed: {e}")).await;
                }
            }
            Ok(Err(e)) => self.fail(e.to_string()).await,
            Err(e) => self.fail(format!("training task failed: {e}")).await,
        }
    }

    async fn beat(&self) {
        if let Err(e) = self.store.touch_training_session(&self.session.id).await {
            tracing::warn!(error = %e, session = %self.session.id, "training heartbeat failed");
        }
    }

    async fn finish(
        &mut self,
        dataset: Dataset,
        model: TrainedModel,
        metrics: training::TrainingMetrics,
        artifact: Vec<u8>,
        took: Duration,
    ) -> Result<()> {
        let insights = &self.insights;
        let record = &mut self.record;
        let path = insights.artifact_path(&record.org_id, &record.id, record.version);
        insights.put(&path, artifact).await?;
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
        record.artifact = Some(insights.lake.relative(&path));
        record.metrics = metrics_json.clone();
        record.updated_at = now_ms();
        self.store.put_model(record).await?;
        self.session.status = ModelStatus::Ready;
        self.session.rows = dataset.rows as u64;
        self.session.duration_ms = Some(took.as_millis() as u64);
        self.session.metrics = metrics_json;
        self.session.finished_at = Some(now_ms());
        self.store.put_training_session(&self.session).await?;
        Ok(())
    }

    async fn fail(&mut self, error: String) {
        tracing::info!(session = %self.session.id, %error, "training failed");
        let now = now_ms();
        self.record.status = ModelStatus::Failed;
        self.record.metrics = json!({ "error": error });
        self.record.updated_at = now;
        self.session.status = ModelStatus::Failed;
        self.session.error = Some(error);
        self.session.finished_at = Some(now);
        let stored = match self.store.put_model(&self.record).await {
            Ok(()) => self.store.put_training_session(&self.session).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::warn!(error = %e, session = %self.session.id, "recording a failed training failed");
        }
    }
}

/// `GET /api/insights/models/training-sessions/{id}`
pub async fn training_session(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>> {
    let session = state
        .store
        .training_session(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("training session {id:?} not found")))?;
    Ok(Json(json!({ "training_session": session })))
}

/// Fails sessions whose process stopped, now and every minute, until
/// `stop` (every query API sharing the store runs one; the update is
/// idempotent).
pub fn spawn_stale_session_sweeper(
    store: Arc<control::MetaStore>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let cutoff = now_ms() - STALE_AFTER.as_millis() as i64;
            match store.fail_stale_training_sessions(cutoff).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(sessions = n, "marked interrupted training sessions failed")
                }
                Err(e) => tracing::warn!(error = %e, "sweeping training sessions failed"),
            }
        }
    })
}

use schemas::time::now_ms;

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
    body: crate::extract::JsonBody<PredictRequest>,
) -> Result<Json<Value>> {
    state
        .entitled_org(&caller, schemas::Feature::MlDetection)
        .await?;
    let crate::extract::JsonBody(req) = body;
    if req.rows.is_empty() || req.rows.len() > MAX_PREDICT_ROWS {
        return Err(ApiError::BadRequest(format!(
            "rows must hold 1..={MAX_PREDICT_ROWS} rows"
        )));
    }
    let record = state
        .store
        .model(&caller.tenant, &id, req.version)
        .await?
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
