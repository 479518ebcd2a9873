//! The tenant id newtype.
//!
//! A tenant id appears in object-store paths (`tenant_id=<t>`), Kafka keys,
//! ClickHouse rows and SQL literals, so the accepted alphabet is deliberately
//! small: lowercase ASCII letters, digits, `-` and `_`, starting with a letter
//! or digit, at most 64 bytes. Nothing else needs escaping anywhere.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Maximum length of a tenant id, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 64;

/// A validated organization (tenant) id. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The one constructor: validates `value` and wraps it.
    pub fn new(value: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidTenant {
            value: value.chars().take(80).collect(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if value.len() > MAX_TENANT_ID_LEN {
            return Err(invalid("must be at most 64 characters"));
        }
        let bytes = value.as_bytes();
        if !(bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit()) {
            return Err(invalid("must start with a lowercase letter or a digit"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
        {
            return Err(invalid(
                "may contain only lowercase letters, digits, '-' and '_'",
            ));
        }
        Ok(Self(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &self.0)
    }
}

impl FromStr for TenantId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for ok in [
            "default",
            "acme",
            "acme-corp",
            "org_42",
            "7eleven",
            &"a".repeat(64),
        ] {
            assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_what_would_need_escaping() {
        for bad in [
            "",
            "Acme",
            "-acme",
            "_acme",
            "acme/../x",
            "a b",
            "a'b",
            "a=b",
            "ümlaut",
            &"a".repeat(65),
        ] {
            let err = TenantId::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid tenant id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn serde_validates() {
        let t: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(t.as_str(), "acme");
        assert!(serde_json::from_str::<TenantId>("\"../etc\"").is_err());
    }
}
