//! Shared types of SecureNet: no I/O lives here.
//!
//! Layout:
//! - [`tenant`]: the validated [`TenantId`] newtype, built in exactly one place.
//! - [`kind`]: the record kinds ([`RecordKind`]) and their Kafka topic names.
//! - [`schema`]: one versioned Arrow schema per record kind.
//! - [`logs`]: the typed log record and its Arrow batch builder, shared by every
//!   log receiver (HTTP, syslog, HEC, bulk) so they all produce identical batches.
//! - [`envelope`]: what travels on the bus — one Arrow IPC stream plus headers —
//!   with the checks that keep a batch to one tenant and one schema.
//! - [`plans`]: the billing catalogue (prices in integer cents, limits).
//! - [`inventory`]: typed rows of scans, devices and findings, and their batches.
//! - [`secret`]: [`Secret`], a configured secret that is never shown.
//! - [`severity`]: [`Severity`], ordered, parsed and named in one place.
//! - [`time`]: the shared clock (`now_ms`) and RFC 3339 parsing.
//!
//! Everything that crosses a crate boundary is defined here so that ingest,
//! pipeline, detectors and the query API cannot disagree about a column.

pub mod api;
pub mod envelope;
mod error;
pub mod fuzzing;
pub mod inventory;
pub mod kind;
pub mod logs;
pub mod plans;
pub mod schema;
pub mod secret;
pub mod severity;
pub mod tenant;
pub mod time;

pub use envelope::{BusPosition, Envelope, EnvelopeHeaders, PayloadCompression};
pub use error::{Error, InvalidSetting, Result};
pub use kind::RecordKind;
pub use logs::{LogBatchBuilder, LogRecord, ParseStatus};
pub use plans::{Feature, LimitsOverride, Plan, PlanLimits};
pub use schema::SchemaVersion;
pub use secret::Secret;
pub use severity::Severity;
pub use tenant::TenantId;
