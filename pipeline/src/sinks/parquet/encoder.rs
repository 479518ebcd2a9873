use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::ParquetSinkConfig;
use crate::error::Result;

/// Encodes `batch` as one Parquet file (zstd, page statistics on so readers
/// can prune by `ts`). CPU-bound: call from a blocking thread.
pub fn encode(batch: &RecordBatch, config: &ParquetSinkConfig) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(config.zstd_level)?))
        .set_max_row_group_row_count(Some(config.max_row_group_rows))
        .set_created_by(format!("securenet {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4 + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}
