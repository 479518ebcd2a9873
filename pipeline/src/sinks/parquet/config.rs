use serde::{Deserialize, Serialize};

use super::sink::ParquetSink;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::metrics::PipelineMetrics;

/// Settings of the Parquet sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetSinkConfig {
    /// Page compression of the objects the pipeline writes (and compaction
    /// rewrites). Readers need nothing set: each column chunk names its own.
    pub compression: ParquetCompression,
    /// zstd level, 1 (fast) to 22 (small). 3 is zstd's own default. Used
    /// when `compression` is `zstd`.
    pub zstd_level: i32,
    /// Maximum rows per row group.
    pub max_row_group_rows: usize,
    /// Target size of a data page before compression. Pages are the unit a
    /// reader decompresses and the page index prunes: small pages let a
    /// lookup of a few rows (`source_ip = '…'`) decompress only the pages
    /// holding them instead of most of every column.
    pub data_page_bytes: usize,
    /// fsync each object (and its directory) on the local filesystem before
    /// acknowledging. Turning it off survives a process crash, not a power loss.
    pub fsync: bool,
    /// Columns (of any record kind that has them) written with a bloom
    /// filter per row group, so an equality lookup (`source_ip = '…'`)
    /// skips the row groups that cannot hold the value — what min/max
    /// statistics cannot do for addresses and names.
    pub bloom_filter_columns: Vec<String>,
}

/// Page compression codecs offered for lake objects: the ones every
/// Parquet reader an analyst is likely to point at the lake (DuckDB,
/// pyarrow, Spark, Trino, ClickHouse) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParquetCompression {
    /// Smallest objects (level `zstd_level`).
    Zstd,
    /// LZ4 block format (Parquet's `LZ4_RAW`): larger objects, cheaper to
    /// decode.
    Lz4Raw,
    /// Snappy, the Parquet ecosystem's common default.
    Snappy,
}

/// Columns analysts look values up in: addresses, host names, CVE ids.
pub const DEFAULT_BLOOM_FILTER_COLUMNS: &[&str] = &["source_ip", "host", "ip", "hostname", "cve"];

impl Default for ParquetSinkConfig {
    fn default() -> Self {
        Self {
            compression: ParquetCompression::Zstd,
            zstd_level: 3,
            max_row_group_rows: 128 * 1024,
            data_page_bytes: 64 * 1024,
            fsync: true,
            bloom_filter_columns: DEFAULT_BLOOM_FILTER_COLUMNS
                .iter()
                .map(|c| c.to_string())
                .collect(),
        }
    }
}

impl ParquetSinkConfig {
    /// Validates the settings and builds the sink.
    pub fn build(&self, lake: Lake, metrics: PipelineMetrics) -> Result<ParquetSink> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Error::Config(format!(
                "parquet.zstd_level is {}; use 1..=22",
                self.zstd_level
            )));
        }
        if self.max_row_group_rows == 0 {
            return Err(Error::Config(
                "parquet.max_row_group_rows must be positive".into(),
            ));
        }
        if self.data_page_bytes == 0 {
            return Err(Error::Config(
                "parquet.data_page_bytes must be positive".into(),
            ));
        }
        metrics.register_sink("parquet");
        Ok(ParquetSink::new(self.clone(), lake, metrics))
    }
}
