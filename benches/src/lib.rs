//! Benchmarks of SecureNet.
//!
//! - `benches/ingest_path.rs` (criterion): the CPU stages of the ingest path
//!   — NDJSON parsing, Arrow batch building, envelope encode/decode.
//! - `src/bin/loadgen.rs`: the end-to-end HTTP load generator used by
//!   `benches/ingest_http.sh`, with a null server as the baseline, and by
//!   `benches/forwarders.sh` in every forwarder protocol ([`protocols`]).

pub mod protocols;
