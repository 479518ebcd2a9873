use std::time::Duration;

use serde::{Deserialize, Serialize};

use schemas::TenantId;

use crate::error::{Error, Result};
use crate::syslog::{Protocol, SyslogConfig};

/// Settings of the ingest role.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// When a tenant's pending batch is flushed.
    pub batch: BatchConfig,
    /// HTTP receivers.
    pub http: HttpIngestConfig,
    /// Syslog listeners (`[[ingest.syslog]]`); the default is TCP and UDP
    /// on 127.0.0.1:5514 for the `default` organization.
    pub syslog: Vec<SyslogConfig>,
    /// OpenTelemetry logs over gRPC (OTLP/HTTP is always on the HTTP
    /// listener, at `/v1/logs`).
    pub otlp: OtlpConfig,
}

/// `[ingest.otlp]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Where OTLP/gRPC listens (`LogsService/Export`; collectors' default
    /// port is 4317); off when unset. Messages are limited to
    /// `ingest.http.max_body_bytes`, records to `max_record_bytes`, and the
    /// organization's `rate_limit_per_sec` applies, as on HTTP.
    pub grpc_listen: Option<std::net::SocketAddr>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 5514));
        let default_tenant = TenantId::new("default").ok();
        let listener = |name: &str, protocol| SyslogConfig {
            default_tenant: default_tenant.clone(),
            ..SyslogConfig::new(name, protocol, local)
        };
        Self {
            batch: BatchConfig::default(),
            http: HttpIngestConfig::default(),
            otlp: OtlpConfig::default(),
            syslog: vec![
                listener("tcp", Protocol::Tcp),
                listener("udp", Protocol::Udp),
            ],
        }
    }
}

/// Per-tenant batching and the in-flight budget.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Flush a tenant's batch once it holds this many rows.
    pub max_rows: usize,
    /// Flush a tenant's batch once its records take this many bytes.
    pub max_bytes: usize,
    /// Flush a tenant's batch at the latest this long after its first record.
    pub linger_ms: u64,
    /// Group commit: a tenant's batch is flushed at once while fewer than
    /// this many of its batches are being written; otherwise it grows until
    /// one completes. 0 disables eager flushing (size and linger only).
    pub flush_concurrency: usize,
    /// Bytes of records accepted but not yet durable, across all tenants.
    /// When the budget is spent, receivers push back (HTTP 503).
    pub max_in_flight_bytes: usize,
    /// How long a request may wait for budget before it gets a 503.
    pub backpressure_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 50_000,
            max_bytes: 16 << 20,
            linger_ms: 1_000,
            flush_concurrency: 2,
            max_in_flight_bytes: 256 << 20,
            backpressure_wait_ms: 1_000,
        }
    }
}

impl BatchConfig {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn validate(&self) -> Result<()> {
        if self.max_rows == 0 || self.max_bytes == 0 {
            return Err(Error::Config(
                "ingest.batch.max_rows and max_bytes must be positive".into(),
            ));
        }
        if self.max_in_flight_bytes == 0 || self.max_in_flight_bytes > u32::MAX as usize {
            return Err(Error::Config(format!(
                "ingest.batch.max_in_flight_bytes is {}; use 1..={}",
                self.max_in_flight_bytes,
                u32::MAX
            )));
        }
        Ok(())
    }
}

/// HTTP receivers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpIngestConfig {
    /// Largest accepted request body, after decompression.
    pub max_body_bytes: usize,
    /// Largest accepted single NDJSON line / JSON object.
    pub max_record_bytes: usize,
    /// Largest accepted scan report (nmap XML of big networks is large).
    pub max_scan_body_bytes: usize,
    /// Requests per second per organization on the ingest routes; 0 turns
    /// the limit off. Over it: 429 with Retry-After.
    pub rate_limit_per_sec: u32,
    /// Requests an organization may send in a burst above the rate.
    pub rate_limit_burst: u32,
    /// Devices (inventory) or hosts (scan report) in one request at most;
    /// over it: 413. Bounds the metadata work one request can cause.
    pub max_devices_per_request: usize,
}

impl Default for HttpIngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 << 20,
            max_record_bytes: 1 << 20,
            max_scan_body_bytes: 64 << 20,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            max_devices_per_request: 10_000,
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<()> {
        self.batch.validate()?;
        let mut names = std::collections::HashSet::new();
        for listener in &self.syslog {
            listener.validate()?;
            if !names.insert(&listener.name) {
                return Err(Error::Config(format!(
                    "two syslog listeners are named {:?}",
                    listener.name
                )));
            }
        }
        if self.http.max_body_bytes > self.batch.max_in_flight_bytes {
            // A body larger than the whole budget could never be accepted.
            return Err(Error::Config(format!(
                "ingest.http.max_body_bytes ({}) exceeds ingest.batch.max_in_flight_bytes ({})",
                self.http.max_body_bytes, self.batch.max_in_flight_bytes
            )));
        }
        Ok(())
    }
}
