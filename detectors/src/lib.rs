//! Detectors: streaming analysis of record batches.
//!
//! Layout: [`Detector`] is the one small trait every detector implements
//! (Arroyo's `ArrowOperator` shape): a batch in, derived envelopes out, with
//! defaulted lifecycle hooks. The isolation forest, the per-tenant model
//! registry and billing-grade usage counting are built on it (see the
//! detectors issue); nothing here does I/O — the pipeline feeds batches in
//! and publishes what comes out.

pub mod drain;
pub mod fuzzing;
pub mod iforest;
pub mod intel;
pub mod metrics;
pub mod sigma;
pub mod streaming;
pub mod templates;
pub mod training;
pub mod usage;
pub mod windows;

use schemas::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Schema(#[from] schemas::Error),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("column {0:?} is missing or has an unexpected type")]
    Column(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A streaming detector.
///
/// ```
/// use detectors::{Detector, Result};
/// use schemas::Envelope;
///
/// /// Counts rows per tenant; emits nothing.
/// #[derive(Default)]
/// struct RowCounter(std::collections::HashMap<String, usize>);
///
/// impl Detector for RowCounter {
///     fn name(&self) -> &'static str { "row_counter" }
///     fn process_batch(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>> {
///         *self.0.entry(envelope.tenant().to_string()).or_default() += envelope.num_rows();
///         Ok(vec![])
///     }
/// }
/// ```
pub trait Detector: Send {
    /// Short name for metrics and logs.
    fn name(&self) -> &'static str;

    /// Looks at one batch; returns envelopes to publish (anomalies, usage).
    fn process_batch(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>>;

    /// Called periodically with the current time (ms since the epoch), so
    /// time windows can close without new input.
    fn on_tick(&mut self, _now_ms: i64) -> Result<Vec<Envelope>> {
        Ok(Vec::new())
    }

    /// Called once before shutdown; returns what is still buffered.
    fn on_shutdown(&mut self) -> Result<Vec<Envelope>> {
        Ok(Vec::new())
    }
}
