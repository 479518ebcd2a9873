//! The Parquet sink: one zstd Parquet object per (envelope, event date) in
//! the lake's Hive layout.
//!
//! - `config.rs`: what operators set.
//! - `encoder.rs`: record batch → Parquet bytes (CPU; runs off the runtime).
//! - `sink.rs`: splits by date, encodes, puts whole objects, fsyncs locally.
//!
//! Object names are the envelope's batch id, so a replayed envelope
//! overwrites its own file with identical content instead of adding rows,
//! and `put` is atomic (staged and renamed), so readers never see a partial
//! object.

mod config;
mod encoder;
mod sink;
#[cfg(test)]
mod zstd_contexts;

pub use config::{ParquetCompression, ParquetSinkConfig};
pub use encoder::encode;
pub use sink::ParquetSink;
