//! Wiring between the streaming detector and the metadata store: trained
//! models become registry versions (with a training session each) and
//! anomalies become notifications.

use std::sync::Arc;

use control::MetaStore;
use control::models::{ModelRecord, ModelStatus, ModelType, TrainingSession};
use control::notify::Notification;
use detectors::streaming::Event;
use pipeline::detection::EventHook;
use schemas::time::now_ms;
use serde_json::json;
use tracing::warn;

/// The hook [`pipeline::detection::Detection`] calls for every event.
pub fn detector_hook(store: Arc<MetaStore>) -> EventHook {
    Arc::new(move |event: Event| {
        let store = store.clone();
        Box::pin(async move {
            if let Err(e) = record(&store, &event).await {
                // An organization deleted meanwhile, or a busy database: the
                // records themselves are in the sinks either way.
                warn!(error = %e, "recording a detector event in the metadata store failed");
            }
        })
    })
}

async fn record(store: &MetaStore, event: &Event) -> control::Result<()> {
    match event {
        Event::ModelTrained { model, duration_ms } => {
            let now = now_ms();
            let metrics = json!({
                "training_windows": model.training_windows,
                "threshold": model.threshold,
                "n_estimators": model.forest.params().n_estimators,
            });
            store
                .put_model(&ModelRecord {
                    org_id: model.tenant.clone(),
                    id: model.model_id.clone(),
                    version: model.version,
                    name: "Host-minute anomalies".into(),
                    model_type: ModelType::IsolationForest,
                    status: ModelStatus::Ready,
                    accuracy: None,
                    features: model.features.clone(),
                    threshold: Some(model.threshold),
                    artifact: Some(format!(
                        "models/tenant_id={}/{}/v{:06}.json",
                        model.tenant, model.model_id, model.version
                    )),
                    metrics: metrics.clone(),
                    created_at: model.trained_at_ms,
                    updated_at: now,
                })
                .await?;
            store
                .put_training_session(&TrainingSession {
                    id: format!("{}-{}-v{}", model.tenant, model.model_id, model.version),
                    org_id: model.tenant.clone(),
                    model_id: model.model_id.clone(),
                    model_version: Some(model.version),
                    status: ModelStatus::Ready,
                    rows: model.training_windows as u64,
                    duration_ms: Some(*duration_ms),
                    metrics,
                    error: None,
                    started_at: model.trained_at_ms - *duration_ms as i64,
                    finished_at: Some(model.trained_at_ms),
                })
                .await
        }
        Event::TrainingFailed { tenant, error } => {
            let now = now_ms();
            store
                .put_training_session(&TrainingSession {
                    id: format!("{tenant}-window-iforest-failed-{now}"),
                    org_id: tenant.clone(),
                    model_id: detectors::streaming::WINDOW_MODEL_ID.into(),
                    model_version: None,
                    status: ModelStatus::Failed,
                    rows: 0,
                    duration_ms: None,
                    metrics: json!({}),
                    error: Some(error.clone()),
                    started_at: now,
                    finished_at: Some(now),
                })
                .await
        }
        Event::Anomaly(a) => {
            let top = a.explanation.first().map(|(f, _)| *f).unwrap_or("activity");
            store
                .add_notification(&Notification {
                    id: a.anomaly_id.to_string(),
                    org_id: a.tenant.clone(),
                    kind: "anomaly".into(),
                    severity: a.severity.to_string(),
                    title: format!("Unusual {top} on {}", a.entity),
                    body: json!({
                        "anomaly_id": a.anomaly_id,
                        "entity": a.entity,
                        "window_start": a.window_start_ms,
                        "window_end": a.window_end_ms,
                        "score": a.score,
                        "threshold": a.threshold,
                        "model_id": a.model_id,
                        "model_version": a.model_version,
                        "features": a.features.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                        "explanation": a.explanation.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    }),
                    ref_id: a.anomaly_id.to_string(),
                    created_at: now_ms(),
                    read_at: None,
                }).await
                .map(|_| ())
        }
    }
}
