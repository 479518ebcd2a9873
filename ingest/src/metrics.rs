//! Ingest metrics (`securenet_ingest_*`). Labels are bounded: receiver
//! names, outcomes and flush reasons, never tenants or error strings.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct IngestMetrics {
    /// Records by receiver and outcome (accepted, rejected).
    pub records: IntCounterVec,
    /// Bytes of accepted records by receiver.
    pub bytes: IntCounterVec,
    /// Batches flushed, by reason (rows, bytes, age, shutdown).
    pub flushes: IntCounterVec,
    /// Requests refused because the in-flight budget was spent.
    pub backpressure: IntCounter,
    /// Times a detached receiver (a TCP syslog reader) stopped reading to
    /// wait for budget.
    pub paused: IntCounter,
    /// Detached batches (syslog) published again after a transient bus error.
    pub republished: IntCounter,
    /// Bytes accepted but not yet durable.
    pub in_flight_bytes: IntGauge,
}

impl IngestMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            records: IntCounterVec::new(
                Opts::new("securenet_ingest_records_total", "Records received"),
                &["input", "outcome"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new("securenet_ingest_bytes_total", "Bytes of accepted records"),
                &["input"],
            )?,
            flushes: IntCounterVec::new(
                Opts::new(
                    "securenet_ingest_batches_flushed_total",
                    "Batches flushed to the bus",
                ),
                &["reason"],
            )?,
            backpressure: IntCounter::new(
                "securenet_ingest_backpressure_rejections_total",
                "Requests refused with 503 because the pipeline was saturated",
            )?,
            paused: IntCounter::new(
                "securenet_ingest_backpressure_pauses_total",
                "Times a TCP syslog reader paused because the pipeline was saturated",
            )?,
            republished: IntCounter::new(
                "securenet_ingest_batches_republished_total",
                "Syslog batches published again after a transient bus error",
            )?,
            in_flight_bytes: IntGauge::new(
                "securenet_ingest_in_flight_bytes",
                "Bytes of records accepted but not yet durable",
            )?,
        };
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.flushes.clone()))?;
        registry.register(Box::new(m.backpressure.clone()))?;
        registry.register(Box::new(m.paused.clone()))?;
        registry.register(Box::new(m.republished.clone()))?;
        registry.register(Box::new(m.in_flight_bytes.clone()))?;
        Ok(m)
    }
}
