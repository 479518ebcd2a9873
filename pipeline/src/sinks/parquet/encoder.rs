use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::config::{ParquetCompression, ParquetSinkConfig};
use crate::error::Result;

/// False-positive rate of the bloom filters: 1% costs ~1.2 bytes per
/// distinct value of a row group.
const BLOOM_FILTER_FPP: f64 = 0.01;

/// Encodes `batch` as one Parquet file (the configured codec; page statistics and the page
/// index on, so readers can prune by `ts`; pages of `data_page_bytes`, so a
/// lookup decompresses only the pages holding its rows; bloom filters on
/// the configured lookup columns). CPU-bound: call from a blocking thread.
pub fn encode(batch: &RecordBatch, config: &ParquetSinkConfig) -> Result<Vec<u8>> {
    let compression = match config.compression {
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(config.zstd_level)?),
        ParquetCompression::Lz4Raw => Compression::LZ4_RAW,
        ParquetCompression::Snappy => Compression::SNAPPY,
    };
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(config.max_row_group_rows))
        .set_data_page_size_limit(config.data_page_bytes)
        .set_created_by(format!("securenet {}", env!("CARGO_PKG_VERSION")));
    // Sized for a row group of distinct values; the writer folds each
    // filter down to what the values it saw need.
    let max_ndv = batch.num_rows().clamp(1, config.max_row_group_rows) as u64;
    for field in batch.schema().fields() {
        if config
            .bloom_filter_columns
            .iter()
            .any(|c| c == field.name())
        {
            let path = ColumnPath::from(field.name().as_str());
            props = props
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), BLOOM_FILTER_FPP)
                .set_column_bloom_filter_max_ndv(path, max_ndv);
        }
    }
    let props = props.build();
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4 + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;
    use std::sync::Arc;

    #[test]
    fn lookup_columns_get_bloom_filters_and_the_others_none() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("source_ip", DataType::Utf8, true),
            Field::new("message", DataType::Utf8, false),
        ]));
        let ips: Vec<String> = (0..5000)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(&ips)),
                Arc::new(StringArray::from_iter_values(
                    ips.iter().map(|ip| format!("from {ip}")),
                )),
            ],
        )
        .unwrap();
        let bytes = encode(&batch, &ParquetSinkConfig::default()).unwrap();
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let reader = SerializedFileReader::new_with_options(Bytes::from(bytes), options).unwrap();
        let group = reader.get_row_group(0).unwrap();
        let bloom = group
            .get_column_bloom_filter(0)
            .expect("source_ip has a bloom filter");
        assert!(
            ips.iter().all(|ip| bloom.check(&ip.as_str())),
            "no false negatives"
        );
        let false_positives = (0..10_000)
            .filter(|i| bloom.check(&format!("192.168.{}.{}", i / 256, i % 256).as_str()))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} of 10,000 absent values pass"
        );
        assert!(
            group.get_column_bloom_filter(1).is_none(),
            "message has none"
        );
    }

    #[test]
    fn each_codec_is_written_and_reads_back_the_same_rows() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "message",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from_iter_values(
                (0..3000).map(|i| format!("sshd[{i}]: Failed password for root")),
            ))],
        )
        .unwrap();
        let mut sizes = Vec::new();
        for (codec, expected) in [
            (ParquetCompression::Zstd, "ZSTD"),
            (ParquetCompression::Lz4Raw, "LZ4_RAW"),
            (ParquetCompression::Snappy, "SNAPPY"),
        ] {
            let config = ParquetSinkConfig {
                compression: codec,
                ..ParquetSinkConfig::default()
            };
            let bytes = Bytes::from(encode(&batch, &config).unwrap());
            sizes.push(bytes.len());
            let reader = SerializedFileReader::new(bytes.clone()).unwrap();
            let chunk = reader.metadata().row_group(0).column(0).compression();
            assert!(
                chunk.to_string().starts_with(expected),
                "{codec:?}: {chunk}"
            );
            let back: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .with_batch_size(batch.num_rows())
                .build()
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            assert_eq!(back, std::slice::from_ref(&batch), "{codec:?}");
        }
        // The default is the smallest: zstd.
        assert_eq!(
            ParquetSinkConfig::default().compression,
            ParquetCompression::Zstd
        );
        assert!(sizes[0] < sizes[1] && sizes[0] < sizes[2], "{sizes:?}");
    }

    #[test]
    fn pages_are_cut_at_the_configured_size_and_indexed() {
        use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        use parquet::file::metadata::PageIndexPolicy;
        // 20,000 distinct ~100-byte messages: 2 MB, as a row group of logs.
        let schema = Arc::new(Schema::new(vec![Field::new(
            "message",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from_iter_values((0..20_000).map(|i| {
                format!("sshd[{i}]: Failed password for invalid user u{i} from 10.1.{}.{} port {i} ssh2 {i:040}", i / 256 % 256, i % 256)
            })))],
        )
        .unwrap();
        let pages = |config: &ParquetSinkConfig| {
            let bytes = Bytes::from(encode(&batch, config).unwrap());
            let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
                bytes,
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
            )
            .unwrap();
            let index = reader.metadata().offset_index().expect("an offset index");
            index[0][0].page_locations().len()
        };
        let default = pages(&ParquetSinkConfig::default());
        // 64 KiB pages of ~2 MB (the writer checks the size every 1,024
        // values, ~100 KB here): about 20, not the 2 of 1 MiB pages.
        assert!((15..=40).contains(&default), "{default} pages");
        let larger = pages(&ParquetSinkConfig {
            data_page_bytes: 1024 * 1024,
            ..ParquetSinkConfig::default()
        });
        assert!(
            larger < default / 4,
            "{larger} pages of 1 MiB against {default}"
        );
    }
}
