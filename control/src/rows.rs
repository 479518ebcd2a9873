//! Reading stored rows into domain values: conversions every aggregate
//! shares.

use schemas::TenantId;
use serde_json::Value;

use crate::error::Result;

/// An organization id column.
pub(crate) fn tenant(s: String) -> Result<TenantId> {
    Ok(TenantId::new(&s)?)
}

/// A JSON text column; unreadable JSON reads as null rather than failing
/// the whole listing.
pub(crate) fn json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::Null)
}
