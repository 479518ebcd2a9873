use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of the ingest role.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// When a tenant's pending batch is flushed.
    pub batch: BatchConfig,
    /// HTTP receivers.
    pub http: HttpIngestConfig,
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
            linger_ms: 200,
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
}

impl Default for HttpIngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 << 20,
            max_record_bytes: 1 << 20,
        }
    }
}

impl IngestConfig {
    pub fn validate(&self) -> Result<()> {
        self.batch.validate()?;
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
