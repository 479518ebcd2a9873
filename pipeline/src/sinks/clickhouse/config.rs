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
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "securenet".into(),
            user: "default".into(),
            password: Default::default(),
            timeout_ms: 30_000,
        }
    }
}

impl ClickHouseConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}
