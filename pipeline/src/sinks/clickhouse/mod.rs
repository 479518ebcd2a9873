//! The ClickHouse sink (HTTP, Native blocks, through the `clickhouse` crate).
//!
//! Tables are created or migrated at start from the Arrow schemas
//! (idempotent: `CREATE TABLE IF NOT EXISTS`, then `ADD COLUMN` for columns
//! a newer schema version added). One table per record kind:
//! `ReplacingMergeTree`, `PARTITION BY toYYYYMM(<ts>)`, `ORDER BY
//! (tenant_id, ts, batch_id, row_in_batch)`.
//!
//! Effectively once: a ledger table (`ingested_batches`) records every
//! batch id after its rows are inserted — the ids of 200 ms of batches in
//! one insert — and a batch already in the ledger (or still waiting to be
//! recorded in it by this process) is skipped. A crash before the ledger
//! row is written replays the batch; its rows then have the same sorting
//! key as the first copy, and `ReplacingMergeTree` collapses them —
//! immediately for readers using `FINAL`, and on disk at the next merge. Only features ClickHouse 18.16
//! shares with current releases are used (no DateTime64, LowCardinality,
//! Map, TTL or insert deduplication tokens).
//!
//! Group commit: envelopes written to the same table at the same time
//! share one insert (the ones that queued while the previous insert ran),
//! and each is acknowledged when that insert succeeded — fewer, larger
//! parts for ClickHouse to write and merge, no added wait. A refused group
//! is retried envelope by envelope, so only the guilty one is
//! dead-lettered.
//!
//! Rows ClickHouse rejects as data (a parse or type error) go to the
//! `dead_letters` table with the error, and the batch counts as written, so
//! one bad batch never blocks the stream; transport errors fail the write,
//! which the consumer retries with backoff.
//!
//! - `config.rs`: what operators set.
//! - `sink.rs`: table creation and migration, the ledger, inserts, dead
//!   letters.
//! - `native.rs`: Arrow batches → Native blocks; `rowbinary.rs`: column
//!   types, and RowBinary strings for the ledger and dead letters;
//!   `maintenance.rs`: retention and the usage roll-up.

mod config;
mod maintenance;
mod native;
mod rowbinary;
mod sink;

pub use config::{ClickHouseConfig, InsertCompression};
pub use maintenance::{ClickHouseRetentionReport, UsageRollupReport};
pub use rowbinary::column_type;
pub use sink::{ClickHouseSink, INSERT_FORMAT, encode_insert};

const NAME: &str = "clickhouse";
