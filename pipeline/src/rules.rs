//! Sigma rules in the stream.
//!
//! [`RuleBook`] holds every tenant's compiled [`RuleSet`]; whoever loads
//! rules (the binary, from the metadata store and the operator's rule
//! directory) swaps a tenant's set whole. [`SigmaStage`] is an inline
//! detector: the consumer hands it every batch before writing it, and the
//! `detections` batch it derives from a `logs` batch is written and
//! acknowledged together with it — a replayed batch derives the same
//! records (ids from the source batch), which the sinks store once.
//!
//! A tenant's rules cost only that tenant's batches: a batch is evaluated
//! against its own tenant's set alone, and the number and size of a
//! tenant's rules are bounded where they are uploaded.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use detectors::intel::IndicatorSet;
use detectors::sigma::TenantRules;
use detectors::sigma::detections::{States, derive};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use schemas::{Envelope, RecordKind, TenantId};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// `[pipeline.rules]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Evaluate Sigma rules on every `logs` batch.
    pub enabled: bool,
    /// How often the metadata store is asked whether rules changed.
    pub refresh_ms: u64,
    /// The operator's rule pack: every `*.yml`/`*.yaml` file here applies
    /// to every organization (read at start).
    pub rules_dir: Option<PathBuf>,
    /// Detections of rules at this level or above become notifications
    /// (`low`, `medium`, `high`, `critical`; `informational` rules are
    /// only stored).
    pub notify_min_level: String,
    /// At most one notification per rule and organization in this
    /// interval (per pipeline process); the detections themselves are all
    /// stored.
    pub notify_interval_ms: u64,
    /// Sigma field names mapped over the defaults: `"ClientIP" =
    /// "structured_data:client"`, `"user" = "host"` (docs/sigma.md). The
    /// query API's uploads and backtests read the same table.
    pub fields: BTreeMap<String, String>,
    /// Which records the rules of a log source see, over the defaults:
    /// `"service:sshd" = "{app: [sshd, sshd-session]}"` (a Sigma search in
    /// YAML; `""` makes the term narrow nothing) — docs/sigma.md.
    pub logsources: BTreeMap<String, String>,
}

impl RulesConfig {
    /// The field map rules are compiled with: fields and log sources.
    pub fn field_map(&self) -> Result<detectors::sigma::FieldMap, detectors::sigma::SigmaError> {
        detectors::sigma::FieldMap::default()
            .with_overrides(&self.fields)?
            .with_logsources(&self.logsources)
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_ms: 5_000,
            rules_dir: None,
            notify_min_level: "low".into(),
            notify_interval_ms: 60_000,
            fields: BTreeMap::new(),
            logsources: BTreeMap::new(),
        }
    }
}

#[derive(Clone)]
struct RuleMetrics {
    rows: IntCounter,
    detections: IntCounterVec,
    seconds: Histogram,
    tenants: IntGauge,
    rules: IntGauge,
    indicators: IntGauge,
    errors: IntCounter,
}

impl RuleMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            rows: IntCounter::new(
                "securenet_rules_rows_evaluated_total",
                "Rows (logs and scan findings) evaluated against their organization's Sigma rules",
            )?,
            detections: IntCounterVec::new(
                Opts::new(
                    "securenet_rules_detections_total",
                    "Rows a Sigma rule matched, by the rule's level",
                ),
                &["level"],
            )?,
            seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "securenet_rules_batch_seconds",
                    "Time to evaluate one batch against its organization's rules",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            )?,
            tenants: IntGauge::new(
                "securenet_rules_tenants",
                "Organizations with at least one enabled rule",
            )?,
            rules: IntGauge::new(
                "securenet_rules_loaded",
                "Enabled rules and correlations compiled, summed over organizations",
            )?,
            indicators: IntGauge::new(
                "securenet_rules_indicators",
                "Unexpired threat-intel indicators compiled, summed over organizations",
            )?,
            errors: IntCounter::new(
                "securenet_rules_errors_total",
                "Batches whose rules could not be evaluated (stored without detections)",
            )?,
        };
        registry.register(Box::new(m.rows.clone()))?;
        registry.register(Box::new(m.detections.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.tenants.clone()))?;
        registry.register(Box::new(m.rules.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.indicators.clone()))?;
        Ok(m)
    }
}

/// What one tenant's batches are evaluated against: its rules (shared by
/// tenants with the same rules) and its threat-intel indicators.
pub struct TenantDetection {
    pub rules: Arc<TenantRules>,
    pub intel: Option<Arc<IndicatorSet>>,
}

/// Every tenant's compiled rules.
pub struct RuleBook {
    sets: RwLock<Arc<HashMap<TenantId, Arc<TenantDetection>>>>,
    metrics: RuleMetrics,
}

impl RuleBook {
    pub fn new(registry: &Registry) -> prometheus::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            sets: RwLock::new(Arc::new(HashMap::new())),
            metrics: RuleMetrics::new(registry)?,
        }))
    }

    /// Replaces every tenant's set (tenants left out have no rules).
    pub fn replace(&self, sets: HashMap<TenantId, Arc<TenantDetection>>) {
        self.metrics.tenants.set(sets.len() as i64);
        self.metrics
            .rules
            .set(sets.values().map(|s| s.rules.len() as i64).sum());
        self.metrics.indicators.set(
            sets.values()
                .filter_map(|s| s.intel.as_ref())
                .map(|i| i.len() as i64)
                .sum(),
        );
        *self.sets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sets);
    }

    pub fn get(&self, tenant: &TenantId) -> Option<Arc<TenantDetection>> {
        self.sets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
    }

    /// The consumer's inline detector over this book; correlation
    /// windows accept events up to `lateness_ms` late (the feature
    /// windows' allowance).
    pub fn stage(self: &Arc<Self>, lateness_ms: i64) -> SigmaStage {
        SigmaStage {
            book: self.clone(),
            lateness_ms,
            states: Mutex::new(HashMap::new()),
        }
    }
}

/// Evaluates each `logs` batch (and each `findings` batch, against the
/// rules over scan findings) against its tenant's rules, and keeps each
/// tenant's correlation windows (in memory: a restarted pipeline rebuilds
/// them from the batches the bus redelivers, so a burst spanning a crash
/// may go uncorrelated). Batches in flight are evaluated concurrently:
/// only feeding a tenant's windows takes its lock.
pub struct SigmaStage {
    book: Arc<RuleBook>,
    lateness_ms: i64,
    states: Mutex<HashMap<TenantId, Arc<Mutex<States>>>>,
}

impl crate::consumer::Inline for SigmaStage {
    fn name(&self) -> &'static str {
        "sigma"
    }

    fn derive(&self, envelope: &Envelope) -> detectors::Result<Vec<Envelope>> {
        // Logs meet the rules over logs, correlations and threat intel;
        // scan findings the rules over findings.
        if !matches!(envelope.kind(), RecordKind::Logs | RecordKind::Findings) {
            return Ok(Vec::new());
        }
        let tenant = envelope.tenant();
        let Some(detection) = self.book.get(tenant) else {
            self.states
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(tenant);
            return Ok(Vec::new());
        };
        let started = Instant::now();
        let states = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.clone())
            .or_default()
            .clone();
        let m = &self.book.metrics;
        // Evaluation is pure: a batch it fails on would fail again on every
        // redelivery, holding up the organizations behind it on the bus.
        // The batch is stored without detections and the failure counted.
        let derived = match derive(
            &detection.rules,
            detection.intel.as_deref(),
            &states,
            self.lateness_ms,
            envelope,
        ) {
            Ok(d) => d,
            Err(error) => {
                m.errors.inc();
                warn!(%error, %tenant, batch_id = %envelope.batch_id(),
                    "Sigma rules could not be evaluated on a batch; stored without detections");
                None
            }
        };
        m.seconds.observe(started.elapsed().as_secs_f64());
        m.rows.inc_by(envelope.num_rows() as u64);
        let Some(derived) = derived else {
            return Ok(Vec::new());
        };
        if let Some(levels) = derived
            .batch()
            .column_by_name("level")
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
        {
            for level in levels.iter().flatten() {
                m.detections.with_label_values(&[level]).inc();
            }
        }
        Ok(vec![derived])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Inline;
    use crate::testutil::envelope;
    use detectors::sigma::{Document, FieldMap};

    fn set(yaml: &str) -> Arc<TenantDetection> {
        let doc = Arc::new(Document::parse(yaml).unwrap());
        Arc::new(TenantDetection {
            rules: Arc::new(TenantRules::compile(&[doc], &FieldMap::default()).0),
            intel: None,
        })
    }

    #[test]
    fn each_tenant_is_evaluated_against_its_own_rules_only() {
        let registry = Registry::new();
        let book = RuleBook::new(&registry).unwrap();
        let every_row = "title: Any\nid: any\nlevel: low\nlogsource: {product: linux}\n\
            detection:\n  sel:\n    message|startswith: 'm'\n  condition: sel\n";
        let acme = TenantId::new("acme").unwrap();
        book.replace(HashMap::from([(acme.clone(), set(every_row))]));
        let stage = book.stage(60_000);
        let out = stage.derive(&envelope("acme", 3)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind(), RecordKind::Detections);
        assert_eq!(out[0].num_rows(), 3);
        assert_eq!(out[0].tenant(), &acme);
        // Another tenant's batch: no rules of its own, nothing derived.
        assert!(stage.derive(&envelope("globex", 3)).unwrap().is_empty());
        book.replace(HashMap::new());
        assert!(stage.derive(&envelope("acme", 3)).unwrap().is_empty());
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("securenet_rules_detections_total{level=\"low\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("securenet_rules_rows_evaluated_total 3"),
            "{text}"
        );
    }
}
