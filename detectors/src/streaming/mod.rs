//! Streaming anomaly detection: feature windows scored by per-tenant
//! isolation forests.
//!
//! - Every closed window joins its tenant's history (a bounded ring).
//! - Cold start: once a tenant has `min_windows` windows and no model, a
//!   model is trained on its history; retraining happens after
//!   `retrain_after_windows` new windows or `retrain_interval_ms`, each
//!   training producing the next version. Training runs on its own OS thread,
//!   never on the async runtime; the current model keeps scoring meanwhile.
//! - Every closed window is scored by the tenant's current model; a score
//!   above the model's threshold becomes an `anomalies` record (score,
//!   threshold, model version, feature values, explanation) and an
//!   [`Event::Anomaly`] for notifications, with a severity from the margin.
//!
//! Scores are `-score_samples` (0..1, higher is more abnormal). The
//! threshold is a fence over the training scores: above their
//! `1 - contamination` quantile by `fence` times that quantile's distance
//! from their median (`q + fence·(q − median)`), and never below
//! `min_score`. A plain quantile of a
//! few hundred training windows is a poor estimate of the far tail — every
//! model period then reports about one window that merely sits at the edge
//! of its history — while real incidents (brute force, error storms) score
//! far beyond the fence.
//! Counts enter the model as `ln(1 + x)` (the ratio as is): isolation
//! forests split uniformly within a feature's range, and raw counts are
//! heavy-tailed. The model is one-sided: every feature is floored at its
//! training median, so a window is never anomalous for being *quieter* than
//! usual (a silent host is an availability question, not an intrusion
//! signal; without the floor, minutes with a handful of events were the
//! most common false alarms).
//!
//! Retraining follows a doubling schedule while the history grows (a model
//! trained on 200 windows is replaced once 200 more arrived, then 400…),
//! then every `retrain_after_windows`: early models are calibrated on little
//! data and improve fast.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use schemas::Severity;
use schemas::time::now_ms;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use schemas::envelope::constant_utf8;
use schemas::{Envelope, RecordKind, TenantId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::iforest::{Contamination, IsolationForest, Matrix, Params};
use crate::windows::{ClosedWindow, FEATURES, N_FEATURES, WindowConfig, Windows};
use crate::{Detector, Result};

/// The model every tenant gets over its feature windows.
pub const WINDOW_MODEL_ID: &str = "window-iforest";

/// Namespace of anomaly and anomaly-batch ids (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x5ec0_4e7a_d37e_c7a0_0000_0000_0000_0001);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Windows a tenant needs before its first model is trained.
    pub min_windows: usize,
    /// Windows kept per tenant for (re)training.
    pub history: usize,
    /// New windows after which a model is retrained.
    pub retrain_after_windows: usize,
    /// Age after which a model is retrained (given `min_windows` new ones).
    pub retrain_interval_ms: i64,
    pub n_estimators: usize,
    /// Tail share of the history whose quantile anchors the fence (see the
    /// module docs).
    pub contamination: f64,
    /// How far beyond the tail quantile the threshold sits, in units of
    /// the quantile's distance from the median score.
    pub fence: f64,
    /// Scores at or below this never count as anomalies.
    pub min_score: f64,
    pub seed: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            min_windows: 200,
            history: 20_000,
            retrain_after_windows: 5_000,
            retrain_interval_ms: 86_400_000,
            n_estimators: 100,
            contamination: 0.01,
            fence: 0.5,
            min_score: 0.6,
            seed: 42,
        }
    }
}

/// A trained model of one tenant, as stored in the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantModel {
    pub tenant: TenantId,
    pub model_id: String,
    pub version: u32,
    pub features: Vec<String>,
    pub threshold: f64,
    pub trained_at_ms: i64,
    pub training_windows: usize,
    /// Per feature, in model-input space: the training median values are
    /// raised to before scoring (one-sided scoring; see the module docs).
    #[serde(default)]
    pub floor: Vec<f64>,
    pub forest: IsolationForest,
}

impl TenantModel {
    /// The model's input for a window: [`model_input`], floored.
    pub fn input(&self, values: &[f64; N_FEATURES]) -> [f64; N_FEATURES] {
        floored(model_input(values), &self.floor)
    }
}

fn floored(mut x: [f64; N_FEATURES], floor: &[f64]) -> [f64; N_FEATURES] {
    for (v, f) in x.iter_mut().zip(floor) {
        *v = v.max(*f);
    }
    x
}

/// One detected anomaly.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Anomaly {
    pub tenant: TenantId,
    pub anomaly_id: Uuid,
    pub model_id: String,
    pub model_version: u32,
    pub entity: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub score: f64,
    pub threshold: f64,
    pub severity: Severity,
    /// Feature name → value.
    pub features: Vec<(&'static str, f64)>,
    /// Feature name → share of the isolation, largest first.
    pub explanation: Vec<(&'static str, f64)>,
}

/// What the detector reports besides the records it emits.
#[derive(Debug, Clone)]
pub enum Event {
    ModelTrained {
        model: Arc<TenantModel>,
        duration_ms: u64,
    },
    TrainingFailed {
        tenant: TenantId,
        error: String,
    },
    Anomaly(Anomaly),
}

/// Counters for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamingStats {
    pub windows_scored: u64,
    pub anomalies: u64,
    pub models_trained: u64,
}

#[derive(Debug, Default)]
struct TenantState {
    history: VecDeque<[f64; N_FEATURES]>,
    model: Option<Arc<TenantModel>>,
    since_training: usize,
    training: bool,
    last_version: u32,
}

type Trained = (TenantId, std::result::Result<TenantModel, String>, u64);

/// Feature windows + per-tenant models; see the module docs.
pub struct StreamingDetector {
    windows: Windows,
    config: ModelConfig,
    tenants: HashMap<TenantId, TenantState>,
    trained_tx: Sender<Trained>,
    trained_rx: Receiver<Trained>,
    events: Vec<Event>,
    stats: StreamingStats,
}

/// The model's view of a window: counts as `ln(1 + x)`, the ratio as is.
pub fn model_input(values: &[f64; N_FEATURES]) -> [f64; N_FEATURES] {
    let mut out = *values;
    for (i, v) in out.iter_mut().enumerate() {
        if FEATURES[i] != "error_ratio" {
            *v = v.ln_1p();
        }
    }
    out
}

/// Severity from how far the score is above the threshold.
pub fn severity(score: f64, threshold: f64) -> Severity {
    match score - threshold {
        m if m >= 0.15 => Severity::Critical,
        m if m >= 0.10 => Severity::High,
        m if m >= 0.05 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// Trains a tenant's model on its windows (blocking; CPU-bound).
pub fn train(
    tenant: TenantId,
    version: u32,
    windows: &[[f64; N_FEATURES]],
    config: &ModelConfig,
) -> std::result::Result<TenantModel, String> {
    // Per-feature training medians: the floor of one-sided scoring.
    let mut floor = vec![0.0; N_FEATURES];
    let mut column = Vec::with_capacity(windows.len());
    for (f, slot) in floor.iter_mut().enumerate() {
        column.clear();
        column.extend(windows.iter().map(|w| model_input(w)[f]));
        column.sort_by(f64::total_cmp);
        *slot = column.get(column.len() / 2).copied().unwrap_or(0.0);
    }
    let data: Vec<f64> = windows
        .iter()
        .flat_map(|w| floored(model_input(w), &floor))
        .collect();
    let params = Params {
        n_estimators: config.n_estimators,
        contamination: Contamination::Fraction(config.contamination.clamp(1e-6, 0.5)),
        seed: config.seed ^ u64::from(version),
        // Windows far beyond anything in the history must score high.
        range_check: true,
        ..Params::default()
    };
    let forest =
        IsolationForest::fit(Matrix::new(&data, N_FEATURES), params).map_err(|e| e.to_string())?;
    let mut scores: Vec<f64> = forest
        .score_samples(Matrix::new(&data, N_FEATURES))
        .into_iter()
        .map(|s| -s)
        .collect();
    scores.sort_by(f64::total_cmp);
    let median = scores.get(scores.len() / 2).copied().unwrap_or(0.5);
    let q = -forest.offset();
    let threshold = (q + config.fence * (q - median)).max(config.min_score);
    Ok(TenantModel {
        tenant,
        model_id: WINDOW_MODEL_ID.to_string(),
        version,
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        threshold,
        trained_at_ms: now_ms(),
        training_windows: windows.len(),
        floor,
        forest,
    })
}

impl StreamingDetector {
    pub fn new(windows: WindowConfig, config: ModelConfig) -> Self {
        let (trained_tx, trained_rx) = channel();
        Self {
            windows: Windows::new(windows),
            config,
            tenants: HashMap::new(),
            trained_tx,
            trained_rx,
            events: Vec::new(),
            stats: StreamingStats::default(),
        }
    }

    /// Installs a model from the registry (at start-up); training continues
    /// from its version.
    pub fn restore(&mut self, model: TenantModel) {
        let state = self.tenants.entry(model.tenant.clone()).or_default();
        state.last_version = state.last_version.max(model.version);
        state.model = Some(Arc::new(model));
    }

    pub fn model(&self, tenant: &TenantId) -> Option<Arc<TenantModel>> {
        self.tenants.get(tenant).and_then(|t| t.model.clone())
    }

    /// Events since the last call (models trained, anomalies).
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn stats(&self) -> StreamingStats {
        self.stats
    }

    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// Whether a training job is running for any tenant.
    pub fn training(&self) -> bool {
        self.tenants.values().any(|t| t.training)
    }

    /// Installs models whose training finished (also done by `on_tick`);
    /// their [`Event::ModelTrained`] events are then in
    /// [`Self::drain_events`].
    pub fn collect_trained(&mut self) {
        while let Ok((tenant, outcome, duration_ms)) = self.trained_rx.try_recv() {
            let state = self.tenants.entry(tenant.clone()).or_default();
            state.training = false;
            match outcome {
                Ok(model) => {
                    let model = Arc::new(model);
                    state.last_version = state.last_version.max(model.version);
                    state.model = Some(model.clone());
                    self.stats.models_trained += 1;
                    self.events.push(Event::ModelTrained { model, duration_ms });
                }
                Err(error) => self.events.push(Event::TrainingFailed { tenant, error }),
            }
        }
    }

    fn maybe_train(&mut self, tenant: &TenantId, now_ms: i64) {
        let config = &self.config;
        let Some(state) = self.tenants.get_mut(tenant) else {
            return;
        };
        if state.training || state.history.len() < config.min_windows {
            return;
        }
        let due = match &state.model {
            None => true,
            Some(m) => {
                // Doubling while the history grows, then every
                // `retrain_after_windows`.
                let after = config
                    .retrain_after_windows
                    .min(m.training_windows.max(config.min_windows));
                state.since_training >= after
                    || (now_ms - m.trained_at_ms >= config.retrain_interval_ms
                        && state.since_training >= config.min_windows)
            }
        };
        if !due {
            return;
        }
        state.training = true;
        state.since_training = 0;
        let version = state.last_version + 1;
        let windows: Vec<[f64; N_FEATURES]> = state.history.iter().copied().collect();
        let config = config.clone();
        let tx = self.trained_tx.clone();
        let tenant = tenant.clone();
        let job_tenant = tenant.clone();
        let spawned = std::thread::Builder::new()
            .name("securenet-train".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = train(job_tenant.clone(), version, &windows, &config);
                let _ = tx.send((job_tenant, outcome, started.elapsed().as_millis() as u64));
            });
        if let Err(e) = spawned {
            state.training = false;
            self.events.push(Event::TrainingFailed {
                tenant,
                error: format!("cannot start a training thread: {e}"),
            });
        }
    }

    /// Scores closed windows, records history, starts training; returns
    /// one anomalies envelope per tenant that has anomalies.
    fn process_closed(&mut self, closed: Vec<ClosedWindow>, now_ms: i64) -> Result<Vec<Envelope>> {
        let mut by_tenant: HashMap<TenantId, Vec<ClosedWindow>> = HashMap::new();
        for w in closed {
            by_tenant.entry(w.tenant.clone()).or_default().push(w);
        }
        let mut out = Vec::new();
        let mut tenants: Vec<_> = by_tenant.into_iter().collect();
        tenants.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (tenant, windows) in tenants {
            let state = self.tenants.entry(tenant.clone()).or_default();
            let mut anomalies = Vec::new();
            if let Some(model) = state.model.clone() {
                let data: Vec<f64> = windows
                    .iter()
                    .flat_map(|w| model.input(&w.values))
                    .collect();
                let scores = model.forest.score_samples(Matrix::new(&data, N_FEATURES));
                self.stats.windows_scored += windows.len() as u64;
                for (i, (w, s)) in windows.iter().zip(scores).enumerate() {
                    let score = -s;
                    if score > model.threshold {
                        anomalies.push(anomaly(
                            w,
                            &model,
                            score,
                            &data[i * N_FEATURES..(i + 1) * N_FEATURES],
                        ));
                    }
                }
            }
            for w in &windows {
                if state.history.len() == self.config.history {
                    state.history.pop_front();
                }
                state.history.push_back(w.values);
            }
            state.since_training += windows.len();
            self.maybe_train(&tenant, now_ms);
            if !anomalies.is_empty() {
                self.stats.anomalies += anomalies.len() as u64;
                out.push(anomalies_envelope(&tenant, &anomalies)?);
                self.events
                    .extend(anomalies.into_iter().map(Event::Anomaly));
            }
        }
        Ok(out)
    }
}

fn anomaly(w: &ClosedWindow, model: &TenantModel, score: f64, input: &[f64]) -> Anomaly {
    let id = Uuid::new_v5(
        &NAMESPACE,
        format!(
            "{}/{}/{}/{}/{}",
            w.tenant, w.entity, w.start_ms, model.model_id, model.version
        )
        .as_bytes(),
    );
    let shares = model.forest.explain(input);
    let mut explanation: Vec<(&'static str, f64)> = FEATURES.iter().copied().zip(shares).collect();
    explanation.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    Anomaly {
        tenant: w.tenant.clone(),
        anomaly_id: id,
        model_id: model.model_id.clone(),
        model_version: model.version,
        entity: w.entity.clone(),
        window_start_ms: w.start_ms,
        window_end_ms: w.end_ms,
        score,
        threshold: model.threshold,
        severity: severity(score, model.threshold),
        features: FEATURES.iter().copied().zip(w.values).collect(),
        explanation,
    }
}

fn json_pairs(pairs: &[(&str, f64)], digits: i32) -> String {
    let scale = 10f64.powi(digits);
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::json!((v * scale).round() / scale),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// One tenant's anomalies as an envelope; its batch id derives from the
/// anomaly ids, so re-emitting the same anomalies is idempotent.
pub fn anomalies_envelope(tenant: &TenantId, anomalies: &[Anomaly]) -> Result<Envelope> {
    let n = anomalies.len();
    let mut seed = String::new();
    for a in anomalies {
        seed.push_str(&a.anomaly_id.to_string());
    }
    let batch_id = Uuid::new_v5(&NAMESPACE, seed.as_bytes());
    let times = |f: fn(&Anomaly) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(anomalies.iter().map(f))
                .with_timezone("UTC"),
        )
    };
    let strings = |f: &dyn Fn(&Anomaly) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(anomalies.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        constant_utf8(tenant.as_str(), n),
        times(|a| a.window_start_ms),
        // Deterministic (replays produce identical rows): the window's end.
        times(|a| a.window_end_ms),
        constant_utf8(&batch_id.to_string(), n),
        strings(&|a| a.anomaly_id.to_string()),
        strings(&|a| a.model_id.clone()),
        Arc::new(UInt32Array::from_iter_values(
            anomalies.iter().map(|a| a.model_version),
        )),
        strings(&|a| a.entity.clone()),
        times(|a| a.window_start_ms),
        times(|a| a.window_end_ms),
        Arc::new(Float64Array::from_iter_values(
            anomalies.iter().map(|a| a.score),
        )),
        Arc::new(Float64Array::from_iter_values(
            anomalies.iter().map(|a| a.threshold),
        )),
        strings(&|a| a.severity.to_string()),
        strings(&|a| json_pairs(&a.features, 4)),
        strings(&|a| json_pairs(&a.explanation, 3)),
    ];
    let batch = RecordBatch::try_new(schemas::schema::schema(RecordKind::Anomalies), columns)?;
    Ok(Envelope::new(
        tenant.clone(),
        RecordKind::Anomalies,
        batch_id,
        batch,
    )?)
}

impl Detector for StreamingDetector {
    fn name(&self) -> &'static str {
        "windows"
    }

    /// Folds the batch into the windows; anomalies come from [`on_tick`],
    /// not with the batch.
    ///
    /// [`on_tick`]: Detector::on_tick
    fn process_batch(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>> {
        self.windows.observe(envelope, now_ms())?;
        Ok(Vec::new())
    }

    fn on_tick(&mut self, now_ms: i64) -> Result<Vec<Envelope>> {
        self.collect_trained();
        let closed = self.windows.close_due(now_ms);
        self.process_closed(closed, now_ms)
    }

    fn on_shutdown(&mut self) -> Result<Vec<Envelope>> {
        self.collect_trained();
        let closed = self.windows.close_all();
        self.process_closed(closed, now_ms())
    }
}

#[cfg(test)]
mod tests;
