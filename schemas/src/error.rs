use crate::kind::RecordKind;

/// Errors of the shared types. Every variant is a caller mistake or corrupt
/// input (a bad header, a bad payload), never an internal bug, so each message
/// names the offending value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid tenant id {value:?}: {reason}")]
    InvalidTenant { value: String, reason: &'static str },

    #[error(
        "unknown record kind {0:?} (expected one of logs, devices, scans, findings, anomalies, usage, api_requests)"
    )]
    UnknownKind(String),

    #[error(
        "unknown plan {0:?} (expected one of starter, professional, business, enterprise, msp)"
    )]
    UnknownPlan(String),

    #[error("invalid schema version {0:?} (expected MAJOR.MINOR, e.g. 1.0)")]
    InvalidSchemaVersion(String),

    #[error("envelope header {name} is missing")]
    MissingHeader { name: &'static str },

    #[error("envelope header {name} has invalid value {value:?}")]
    InvalidHeader { name: &'static str, value: String },

    #[error("corrupt envelope payload: {0}")]
    CorruptPayload(String),

    #[error("envelope says kind {header} but the batch has the schema of {actual}")]
    WrongKind { header: RecordKind, actual: String },

    #[error("schema mismatch for {kind} v{version}: {detail}")]
    SchemaMismatch {
        kind: RecordKind,
        version: String,
        detail: String,
    },

    #[error("batch belongs to tenant {header} but row {row} has tenant {found:?}")]
    MixedTenants {
        header: String,
        row: usize,
        found: String,
    },

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A configuration value out of its allowed range or shape, named by its
/// key (`http.max_connections`…), so the operator knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub problem: String,
}

impl InvalidSetting {
    pub fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}
