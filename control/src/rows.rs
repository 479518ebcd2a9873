//! Reading SQLite rows into domain values: conversions every aggregate
//! shares.

use rusqlite::types::Type;
use schemas::TenantId;
use serde_json::Value;

use crate::error::Error;

/// An organization id column.
pub(crate) fn tenant(s: String) -> rusqlite::Result<TenantId> {
    TenantId::new(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e)))
}

/// A JSON text column; unreadable JSON reads as null rather than failing
/// the whole listing.
pub(crate) fn json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

/// A column whose text does not parse into its domain type.
pub(crate) fn conversion(e: Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(e))
}
