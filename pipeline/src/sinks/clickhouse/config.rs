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
    /// How insert bodies travel: `lz4` (ClickHouse's own compressed
    /// blocks, the client's default) or `none`. Compressing costs the
    /// sink's CPU and ClickHouse's (it decompresses) to save network bytes:
    /// worth it when the link is slower than the cores, not when ClickHouse
    /// is on the same host or a fast LAN (docs/benchmarks.md, "Insert
    /// compression").
    pub compression: InsertCompression,
}

/// `pipeline.clickhouse.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InsertCompression {
    None,
    Lz4,
}

impl From<InsertCompression> for clickhouse::Compression {
    fn from(c: InsertCompression) -> Self {
        match c {
            InsertCompression::None => clickhouse::Compression::None,
            InsertCompression::Lz4 => clickhouse::Compression::Lz4,
        }
    }
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
            compression: InsertCompression::None,
        }
    }
}

impl ClickHouseConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}
