//! The pipeline: the bus between ingest and sinks, the consumer loop, and
//! the sinks.
//!
//! Layout:
//! - [`bus`]: the producer/consumer interface and its embedded (in-process,
//!   bounded) implementation; Kafka implements the same traits.
//! - [`consumer`]: the loop that takes deliveries off the bus, writes them to
//!   every sink and only then acknowledges them (at-least-once transport,
//!   idempotent sinks).
//! - [`sinks`]: the [`Sink`] trait and the Parquet sink.
//! - [`lake`]: where Parquet lives (object_store + Hive layout), shared with
//!   the query API so writers and readers agree on paths.
//! - [`detection`]: the streaming detector (feature windows, per-tenant
//!   models) ticking beside the consumer; anomalies to the sinks, models
//!   to the lake.
//! - [`rules`]: Sigma rules per tenant evaluated on every `logs` batch
//!   (an inline detector deriving `detections`).
//! - [`maintenance`]: retention, tenant purges and compaction, scheduled.
//! - [`metrics`]: the pipeline's Prometheus metrics.

pub mod bus;
pub mod consumer;
pub mod detection;
pub mod entitlements;
mod error;
pub mod geoip;
pub mod lake;
pub mod maintenance;
pub mod metrics;
pub mod rules;
pub mod sinks;
#[cfg(test)]
mod testutil;

pub use bus::{BusConsumer, BusProducer, Delivery};
pub use error::{Error, Result};
pub use lake::Lake;
pub use metrics::PipelineMetrics;
pub use sinks::Sink;
