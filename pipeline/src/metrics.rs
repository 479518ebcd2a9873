//! Prometheus metrics of the pipeline (names per STYLE.md:
//! `securenet_<subsystem>_<name>_<unit>`, bounded labels).

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use schemas::Envelope;

#[derive(Clone)]
pub struct PipelineMetrics {
    /// Rows written, by sink and kind.
    pub sink_rows: IntCounterVec,
    /// Envelopes written, by sink and kind.
    pub sink_batches: IntCounterVec,
    /// Inserts the ClickHouse sink made, by kind (`sink="clickhouse"`):
    /// beside `sink_batches` it shows how many envelopes group commit put
    /// in one insert.
    pub sink_inserts: IntCounterVec,
    /// Failed writes, by sink.
    pub sink_errors: IntCounterVec,
    /// Time to write one envelope, by sink.
    pub sink_write_seconds: HistogramVec,
    /// Envelopes waiting on the embedded bus.
    pub bus_depth: IntGauge,
    /// Kafka consumer lag per topic (messages behind the high watermark,
    /// summed over the partitions this member owns; from librdkafka's
    /// statistics every 5 s).
    pub consumer_lag: IntGaugeVec,
    /// Kafka partitions this member of the consumer group owns (0 while it
    /// waits for an assignment, or when the group has more members than
    /// partitions).
    pub assigned_partitions: IntGauge,
    /// Envelopes being written right now.
    pub in_flight: IntGauge,
    /// Bus messages that could not be decoded and went to the dead-letter topic.
    pub dead_letters: IntCounter,
    /// ClickHouse batches by whether the sink looked them up in its ledger
    /// (`looked_up`: a possible replay) or knew them new (`skipped`).
    pub ledger_lookups: IntCounterVec,
}

impl PipelineMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            sink_rows: IntCounterVec::new(
                Opts::new("securenet_sink_rows_total", "Rows written by a sink"),
                &["sink", "kind"],
            )?,
            sink_batches: IntCounterVec::new(
                Opts::new("securenet_sink_batches_total", "Batches written by a sink"),
                &["sink", "kind"],
            )?,
            sink_inserts: IntCounterVec::new(
                Opts::new(
                    "securenet_sink_inserts_total",
                    "Inserts a sink made (one may hold several batches)",
                ),
                &["sink", "kind"],
            )?,
            sink_errors: IntCounterVec::new(
                Opts::new("securenet_sink_errors_total", "Failed sink writes"),
                &["sink"],
            )?,
            sink_write_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "securenet_sink_write_duration_seconds",
                    "Time to write one batch to a sink",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
                &["sink"],
            )?,
            bus_depth: IntGauge::new(
                "securenet_bus_queue_depth_batches",
                "Batches waiting on the embedded bus",
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "securenet_bus_consumer_lag_messages",
                    "Kafka messages not yet consumed, per topic (partitions this member owns)",
                ),
                &["topic"],
            )?,
            assigned_partitions: IntGauge::new(
                "securenet_bus_assigned_partitions",
                "Kafka partitions this pipeline member owns",
            )?,
            in_flight: IntGauge::new(
                "securenet_pipeline_in_flight_batches",
                "Batches being written to the sinks",
            )?,
            dead_letters: IntCounter::new(
                "securenet_bus_dead_letters_total",
                "Undecodable bus messages moved to the dead-letter topic",
            )?,
            ledger_lookups: IntCounterVec::new(
                Opts::new(
                    "securenet_clickhouse_ledger_lookups_total",
                    "ClickHouse batches looked up in the ledger before their insert \
                     (looked_up: a possible replay) or known new from their bus position (skipped)",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.sink_rows.clone()))?;
        registry.register(Box::new(m.sink_batches.clone()))?;
        registry.register(Box::new(m.sink_inserts.clone()))?;
        registry.register(Box::new(m.sink_errors.clone()))?;
        registry.register(Box::new(m.sink_write_seconds.clone()))?;
        registry.register(Box::new(m.bus_depth.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.assigned_partitions.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.ledger_lookups.clone()))?;
        Ok(m)
    }

    /// Creates a sink's error and latency series at zero, so `rate()` /
    /// `increase()` and the alert rules see its first error.
    pub fn register_sink(&self, sink: &str) {
        self.sink_errors.with_label_values(&[sink]);
        self.sink_write_seconds.with_label_values(&[sink]);
    }

    pub fn observe_write(&self, sink: &'static str, envelope: &Envelope, took: Duration) {
        let kind = envelope.kind().as_str();
        self.sink_rows
            .with_label_values(&[sink, kind])
            .inc_by(envelope.num_rows() as u64);
        self.sink_batches.with_label_values(&[sink, kind]).inc();
        self.sink_write_seconds
            .with_label_values(&[sink])
            .observe(took.as_secs_f64());
    }
}
