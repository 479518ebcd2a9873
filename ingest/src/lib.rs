//! Ingest: receivers that turn forwarders' records into tenant-partitioned
//! Arrow batches on the bus.
//!
//! Layout:
//! - [`batcher`]: the per-tenant batcher — groups records by tenant, flushes
//!   on rows, bytes or age, publishes to the bus and tells every waiting
//!   request when its rows are durable. Holds the in-flight memory budget
//!   that turns a saturated pipeline into 503s instead of drops.
//! - [`http`]: the HTTP receivers (`POST /api/ingest/logs`) and the error →
//!   status mapping they share.
//! - [`json`]: JSON log object → [`schemas::LogRecord`].
//! - [`testdata`]: the seeded test-data generator behind `securenet gen`.
//! - [`syslog`]: UDP/TCP/TLS syslog listeners, RFC 5424/3164 parsing and
//!   RFC 6587 framing.
//! - [`scans`]: nmap XML and JSON scan reports, device inventories, and
//!   their admission against plan limits.
//! - [`fluent`]: the Fluent forward protocol (event modes, acks, handshake).
//! - [`gelf`]: GELF messages (UDP chunks, compression) → records.
//! - [`otlp`]: OpenTelemetry logs (OTLP/HTTP and OTLP/gRPC) → records.
//! - [`tls`]: certificates of the TLS listeners, reloaded on SIGHUP.
//! - [`metrics`]: ingest's Prometheus metrics.

pub mod batcher;
mod config;
pub mod conn_caps;
mod error;
pub mod first_bytes;
pub mod fluent;
#[doc(hidden)]
pub mod fuzzing;
pub mod gelf;
pub mod http;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod scans;
pub mod syslog;
pub mod testdata;
pub mod tls;

pub use batcher::Batcher;
pub use config::{BatchConfig, HttpIngestConfig, IngestConfig, OtlpConfig};
pub use error::{Error, Result};
/// Loki's push messages (for clients and benchmarks that build pushes).
pub use http::loki::proto as loki_proto;
pub use metrics::IngestMetrics;
