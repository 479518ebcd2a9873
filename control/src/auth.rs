//! Request authentication: headers in, [`Principal`] out.

use std::fmt;
use std::str::FromStr;

use http::HeaderMap;
use schemas::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::MetaStore;

/// Roles of a credential within its organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Invalid(format!(
                "unknown role {other:?} (expected admin, member or viewer)"
            ))),
        }
    }
}

/// Who is calling: the tenant every query and write is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    /// Public id of the API key used.
    pub key_id: String,
    pub role: Role,
}

/// Extracts the presented API key: `X-API-Key: <key>`, `Authorization:
/// Bearer <key>` or (Splunk HEC clients) `Authorization: Splunk <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("splunk"))
        .then(|| token.trim())
}

/// Authenticates a request from its headers.
pub fn authenticate(store: &MetaStore, headers: &HeaderMap) -> Result<Principal> {
    let key = presented_key(headers).ok_or(Error::MissingCredentials)?;
    if key.is_empty() {
        return Err(Error::MissingCredentials);
    }
    if crate::jwt::looks_like_jwt(key) {
        store.verify_jwt(key)
    } else {
        store.verify_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn finds_the_key_in_every_supported_header() {
        assert_eq!(presented_key(&headers(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer k2")])),
            Some("k2")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Splunk k3")])),
            Some("k3")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }

    #[test]
    fn roles_order_by_privilege() {
        assert!(Role::Admin > Role::Member && Role::Member > Role::Viewer);
        assert_eq!("member".parse::<Role>().unwrap(), Role::Member);
        assert!("root".parse::<Role>().is_err());
    }
}
