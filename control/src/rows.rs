//! Reading stored rows into domain values: conversions every aggregate
//! shares.

use schemas::TenantId;
use serde_json::Value;

use crate::error::{Error, Result};

/// An organization id column.
pub(crate) fn tenant(s: String) -> Result<TenantId> {
    Ok(TenantId::new(&s)?)
}

/// `Ok` when a write by key changed a row; [`Error::NotFound`] naming
/// `what` and `id` when none matched.
pub(crate) fn changed(rows: u64, what: &'static str, id: &str) -> Result<()> {
    if rows == 0 {
        return Err(Error::NotFound {
            what,
            id: id.to_string(),
        });
    }
    Ok(())
}

/// A JSON text column; unreadable JSON reads as null rather than failing
/// the whole listing.
pub(crate) fn json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::Null)
}
