//! `[pipeline.clickhouse]`.

use serde::{Deserialize, Serialize};

/// `[pipeline.clickhouse]`; the sink is on when `url` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`. Empty: sink off.
    pub url: String,
    pub database: String,
    pub user: String,
    /// Shown as `<redacted>` by `securenet config` when set.
    pub password: schemas::Secret,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// Inserts into one table that may run at once. ClickHouse works one
    /// insert on one thread, so one at a time leaves its other cores idle;
    /// batches that arrive while every slot is busy wait and share the next
    /// free one (group commit). 2 measured best on 2 cores
    /// (`benches/scaleout.sh`, docs/benchmarks.md).
    pub max_inserts_per_table: usize,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "securenet".into(),
            user: "default".into(),
            password: Default::default(),
            timeout_ms: 30_000,
            max_inserts_per_table: 2,
        }
    }
}

impl ClickHouseConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}
