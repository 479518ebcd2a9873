//! The streaming detector inside the pipeline.
//!
//! The consumer feeds every batch into the detector's feature windows (an
//! inline detector that derives nothing). A tick task closes due windows
//! once per `tick_ms`, writes the resulting `anomalies` envelopes to every
//! sink (retried until they are stored; their ids are deterministic, so a
//! retry never duplicates), stores each newly trained model in the lake
//! (`models/tenant_id=<t>/<model>/v<version>.json`) and hands every event
//! to a hook (the binary records models and notifications in the metadata
//! store). At start-up the newest stored model of every tenant is restored.
//!
//! Windows are in memory: on a crash, windows still open are rebuilt only
//! from the batches the bus redelivers (those not yet acknowledged), so an
//! anomaly spanning a crash may be missed; nothing is ever reported twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use detectors::Detector;
use detectors::streaming::{Event, ModelConfig, StreamingDetector, TenantModel};
use detectors::windows::WindowConfig;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prometheus::{HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use schemas::time::now_ms;
use schemas::{Envelope, TenantId};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::consumer::write_all;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::sinks::Sink;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    pub enabled: bool,
    /// How often due windows are closed and scored.
    pub tick_ms: u64,
    /// Anomaly envelopes kept for retry while the sinks are down.
    pub max_pending: usize,
    pub windows: WindowConfig,
    pub models: ModelConfig,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick_ms: 1000,
            max_pending: 10_000,
            windows: WindowConfig::default(),
            models: ModelConfig::default(),
        }
    }
}

/// Receives every detector event (after models are stored); awaited
/// before the next event is handled.
pub type EventHook = Arc<dyn Fn(Event) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone)]
struct DetectionMetrics {
    windows_closed: IntCounter,
    late_rows: IntCounter,
    dropped_rows: IntCounter,
    open_windows: IntGauge,
    anomalies: IntCounterVec,
    models_trained: IntCounter,
    training_failures: IntCounter,
    training_seconds: prometheus::Histogram,
    scores: prometheus::Histogram,
    pending: IntGauge,
}

impl DetectionMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            windows_closed: IntCounter::new(
                "securenet_detector_windows_closed_total",
                "Feature windows closed",
            )?,
            late_rows: IntCounter::new(
                "securenet_detector_late_rows_total",
                "Rows that arrived after their window had closed (not in any window)",
            )?,
            dropped_rows: IntCounter::new(
                "securenet_detector_dropped_rows_total",
                "Rows not windowed because a tenant hit its open-window cap",
            )?,
            open_windows: IntGauge::new(
                "securenet_detector_open_windows",
                "Feature windows currently open",
            )?,
            anomalies: IntCounterVec::new(
                Opts::new("securenet_detector_anomalies_total", "Anomalies detected"),
                &["severity"],
            )?,
            models_trained: IntCounter::new(
                "securenet_detector_models_trained_total",
                "Per-tenant models trained",
            )?,
            training_failures: IntCounter::new(
                "securenet_detector_training_failures_total",
                "Model trainings that failed",
            )?,
            training_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "securenet_detector_training_duration_seconds",
                    "Time to train one tenant model",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
            )?,
            scores: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "securenet_detector_anomaly_score",
                    "Scores of detected anomalies (0..1, higher is more abnormal)",
                )
                .buckets(vec![0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]),
            )?,
            pending: IntGauge::new(
                "securenet_detector_pending_batches",
                "Anomaly batches waiting for the sinks",
            )?,
        };
        registry.register(Box::new(m.windows_closed.clone()))?;
        registry.register(Box::new(m.late_rows.clone()))?;
        registry.register(Box::new(m.dropped_rows.clone()))?;
        registry.register(Box::new(m.open_windows.clone()))?;
        registry.register(Box::new(m.anomalies.clone()))?;
        registry.register(Box::new(m.models_trained.clone()))?;
        registry.register(Box::new(m.training_failures.clone()))?;
        registry.register(Box::new(m.training_seconds.clone()))?;
        registry.register(Box::new(m.scores.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        // Every severity from the start (see PipelineMetrics::register_sink).
        for severity in schemas::Severity::ALERTS {
            m.anomalies.with_label_values(&[severity.as_str()]);
        }
        Ok(m)
    }
}

/// Where a tenant's model versions live in the lake.
pub fn models_prefix(lake: &Lake, tenant: &TenantId) -> Path {
    lake.root()
        .clone()
        .join("models")
        .join(format!("tenant_id={tenant}").as_str())
}

fn model_path(lake: &Lake, model: &TenantModel) -> Path {
    models_prefix(lake, &model.tenant)
        .join(model.model_id.as_str())
        .join(format!("v{:06}.json", model.version).as_str())
}

/// Stores a model version (written whole: object_store puts are atomic).
pub async fn save_model(lake: &Lake, model: &TenantModel) -> Result<Path> {
    let path = model_path(lake, model);
    let bytes = serde_json::to_vec(model).map_err(|e| Error::Config(e.to_string()))?;
    lake.raw_store().put(&path, PutPayload::from(bytes)).await?;
    lake.sync(&path)?;
    Ok(path)
}

/// Stores a newly trained model under the next free version: another
/// pipeline process may have owned the tenant before (partitions move on
/// rebalance) and stored versions this process never saw, and a stored
/// version is never overwritten. Returns the model as stored.
pub async fn store_new_version(lake: &Lake, model: &TenantModel) -> Result<(TenantModel, Path)> {
    let prefix = models_prefix(lake, &model.tenant).join(model.model_id.as_str());
    let stored: Vec<Path> = lake
        .raw_store()
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    let newest = stored
        .iter()
        .filter_map(|p| {
            p.filename()?
                .strip_prefix('v')?
                .strip_suffix(".json")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let mut model = model.clone();
    if model.version <= newest {
        model.version = newest + 1;
    }
    let path = save_model(lake, &model).await?;
    Ok((model, path))
}

/// The newest stored version of every tenant's models.
pub async fn load_latest_models(lake: &Lake) -> Result<Vec<TenantModel>> {
    let store = lake.raw_store();
    let prefix = lake.root().clone().join("models");
    let objects: Vec<Path> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    // (tenant dir, model id) → newest path; names sort by version.
    let mut newest: BTreeMap<(String, String), Path> = BTreeMap::new();
    for path in objects {
        let parts: Vec<String> = path.parts().map(|p| p.as_ref().to_string()).collect();
        let [.., tenant, model, file] = parts.as_slice() else {
            continue;
        };
        if !file.ends_with(".json") {
            continue;
        }
        let key = (tenant.clone(), model.clone());
        if newest
            .get(&key)
            .is_none_or(|p| p.filename() < path.filename())
        {
            newest.insert(key, path);
        }
    }
    let mut models = Vec::new();
    for path in newest.into_values() {
        let bytes = store.get(&path).await?.bytes().await?;
        match serde_json::from_slice::<TenantModel>(&bytes) {
            Ok(m) => models.push(m),
            Err(e) => warn!(%path, error = %e, "unreadable model artifact; skipped"),
        }
    }
    Ok(models)
}

/// The running detector: hand [`Detection::inline`] to the consumer.
pub struct Detection {
    detector: Arc<Mutex<StreamingDetector>>,
    task: JoinHandle<()>,
}

impl Detection {
    /// Restores stored models and starts the tick task; it runs until
    /// `stop`, then closes every open window and writes what they yield.
    pub async fn start(
        config: DetectionConfig,
        lake: Lake,
        sinks: Vec<Arc<dyn Sink>>,
        registry: &Registry,
        hook: EventHook,
        stop: CancellationToken,
    ) -> Result<Self> {
        let metrics = DetectionMetrics::new(registry).map_err(|e| Error::Config(e.to_string()))?;
        let mut detector = StreamingDetector::new(config.windows.clone(), config.models.clone());
        let restored = load_latest_models(&lake).await?;
        if !restored.is_empty() {
            info!(models = restored.len(), "restored tenant models");
        }
        for model in restored {
            detector.restore(model);
        }
        let detector = Arc::new(Mutex::new(detector));
        let mut ticker = Ticker {
            detector: detector.clone(),
            lake,
            sinks,
            hook,
            metrics,
            pending: Vec::new(),
            max_pending: config.max_pending,
            last: Default::default(),
        };
        let period = Duration::from_millis(config.tick_ms.max(10));
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => ticker.tick(false).await,
                    _ = stop.cancelled() => break,
                }
            }
            ticker.tick(true).await;
        });
        Ok(Self { detector, task })
    }

    /// The detector as the consumer's inline detector (feeds the windows).
    pub fn inline(&self) -> Arc<dyn crate::consumer::Inline> {
        self.detector.clone()
    }

    /// Waits for the final tick after `stop` was cancelled.
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

struct Ticker {
    detector: Arc<Mutex<StreamingDetector>>,
    lake: Lake,
    sinks: Vec<Arc<dyn Sink>>,
    hook: EventHook,
    metrics: DetectionMetrics,
    pending: Vec<Envelope>,
    max_pending: usize,
    last: detectors::windows::WindowStats,
}

impl Ticker {
    async fn tick(&mut self, last: bool) {
        // Newly trained models first: stored under their final version and
        // reinstalled with it before this tick scores anything.
        let trained = {
            let mut d = self.detector.lock().unwrap_or_else(|p| p.into_inner());
            d.collect_trained();
            d.drain_events()
        };
        for event in trained {
            let event = self.store_trained(event).await;
            self.handle(&event).await;
        }
        let (out, events, stats, open) = {
            let mut d = self.detector.lock().unwrap_or_else(|p| p.into_inner());
            let out = if last {
                d.on_shutdown()
            } else {
                d.on_tick(now_ms())
            };
            (
                out,
                d.drain_events(),
                d.windows().stats(),
                d.windows().open_windows(),
            )
        };
        self.metrics
            .windows_closed
            .inc_by(stats.closed - self.last.closed);
        self.metrics
            .late_rows
            .inc_by(stats.late_rows - self.last.late_rows);
        self.metrics
            .dropped_rows
            .inc_by(stats.dropped_rows - self.last.dropped_rows);
        self.metrics.open_windows.set(open as i64);
        self.last = stats;
        match out {
            Ok(envelopes) => self.pending.extend(envelopes),
            Err(e) => warn!(error = %e, "detector tick failed"),
        }
        for event in events {
            let event = self.store_trained(event).await;
            self.handle(&event).await;
        }
        self.flush().await;
    }

    /// For a trained model: stores it under its final version and, if that
    /// differs, reinstalls it so scoring and later versions follow.
    async fn store_trained(&self, event: Event) -> Event {
        let Event::ModelTrained { model, duration_ms } = event else {
            return event;
        };
        match store_new_version(&self.lake, &model).await {
            Ok((stored, path)) => {
                info!(tenant = %stored.tenant, version = stored.version,
                    windows = stored.training_windows, %path, "model trained");
                if stored.version != model.version {
                    self.detector
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .restore(stored.clone());
                }
                Event::ModelTrained {
                    model: Arc::new(stored),
                    duration_ms,
                }
            }
            Err(e) => {
                warn!(tenant = %model.tenant, error = %e, "storing a model failed");
                Event::ModelTrained { model, duration_ms }
            }
        }
    }

    async fn handle(&self, event: &Event) {
        match event {
            Event::ModelTrained { duration_ms, .. } => {
                self.metrics.models_trained.inc();
                self.metrics
                    .training_seconds
                    .observe(*duration_ms as f64 / 1000.0);
            }
            Event::TrainingFailed { tenant, error } => {
                self.metrics.training_failures.inc();
                warn!(%tenant, %error, "model training failed");
            }
            Event::Anomaly(a) => {
                self.metrics
                    .anomalies
                    .with_label_values(&[a.severity.as_str()])
                    .inc();
                self.metrics.scores.observe(a.score);
            }
        }
        (self.hook)(event.clone()).await;
    }

    /// Writes pending anomaly envelopes; keeps them on failure.
    async fn flush(&mut self) {
        if !self.pending.is_empty() {
            match write_all(&self.sinks, self.pending.iter()).await {
                Ok(()) => self.pending.clear(),
                Err(e) => {
                    warn!(error = %e, pending = self.pending.len(), "anomalies not stored yet; retrying");
                    if self.pending.len() > self.max_pending {
                        let drop = self.pending.len() - self.max_pending;
                        warn!(dropped = drop, "anomaly backlog full; oldest dropped");
                        self.pending.drain(..drop);
                    }
                }
            }
        }
        self.metrics.pending.set(self.pending.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tenant: &str, version: u32) -> TenantModel {
        let windows: Vec<[f64; detectors::windows::N_FEATURES]> = (0..50)
            .map(|i| {
                [
                    10.0 + f64::from(i % 7),
                    3.0,
                    2.0,
                    0.0,
                    0.0,
                    1000.0,
                    0.0,
                    0.0,
                ]
            })
            .collect();
        detectors::streaming::train(
            TenantId::new(tenant).unwrap(),
            version,
            &windows,
            &ModelConfig::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_stored_version_is_never_overwritten_and_the_newest_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path()).unwrap();
        // Another process stored version 1 of acme's model.
        let theirs = model("acme", 1);
        save_model(&lake, &theirs).await.unwrap();
        // This process trained its own "version 1": stored as 2.
        let (ours, path) = store_new_version(&lake, &model("acme", 1)).await.unwrap();
        assert_eq!(ours.version, 2);
        assert!(
            path.as_ref().ends_with("window-iforest/v000002.json"),
            "{path}"
        );
        // A higher local version is kept as is.
        let (later, _) = store_new_version(&lake, &model("acme", 7)).await.unwrap();
        assert_eq!(later.version, 7);
        save_model(&lake, &model("globex", 1)).await.unwrap();
        let mut newest: Vec<(String, u32)> = load_latest_models(&lake)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.tenant.to_string(), m.version))
            .collect();
        newest.sort();
        assert_eq!(newest, [("acme".to_string(), 7), ("globex".to_string(), 1)]);
    }
}
