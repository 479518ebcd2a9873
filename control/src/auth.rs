//! Request authentication: headers in, [`Principal`] out.

use std::collections::HashMap;
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
pub async fn authenticate(store: &MetaStore, headers: &HeaderMap) -> Result<Principal> {
    let key = presented_key(headers).ok_or(Error::MissingCredentials)?;
    if key.is_empty() {
        return Err(Error::MissingCredentials);
    }
    if crate::jwt::looks_like_jwt(key) {
        store.verify_jwt(key).await
    } else {
        store.verify_key_cached(key).await
    }
}

/// Recently verified API keys, so that a shared (PostgreSQL) control plane
/// is not asked on every request. Only successes are kept — a key created
/// on another host works at once — and each for at most `ttl`: that is the
/// bound within which a key revoked (or its organization deleted) through
/// another process stops working here. This process's own revocations and
/// deletions drop their entries at once. Entries are keyed by the SHA-256
/// of the presented key, never the key itself.
pub(crate) struct KeyCache {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<HashMap<[u8; 32], (Principal, std::time::Instant)>>,
}

/// Cached keys per process before the cache starts over (a cache miss
/// costs one lookup; this only bounds memory under a flood of keys).
const KEY_CACHE_ENTRIES: usize = 100_000;

impl KeyCache {
    pub(crate) fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, std::time::Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.lock();
        match entries.get(hash) {
            Some((p, at)) if at.elapsed() < self.ttl => Some(p.clone()),
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    fn put(&self, hash: [u8; 32], principal: &Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= KEY_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (principal.clone(), std::time::Instant::now()));
    }

    /// Drops the entries of a key id (`None`: of every key of `org`).
    pub(crate) fn forget(&self, org: &TenantId, key_id: Option<&str>) {
        self.lock()
            .retain(|_, (p, _)| !(p.tenant == *org && key_id.is_none_or(|id| p.key_id == id)));
    }
}

impl MetaStore {
    /// [`MetaStore::verify_key`] behind the process's [`KeyCache`].
    pub async fn verify_key_cached(&self, presented: &str) -> Result<Principal> {
        let hash = crate::keys::hash(presented);
        if let Some(p) = self.key_cache.get(&hash) {
            return Ok(p);
        }
        let principal = self.verify_key(presented).await?;
        self.key_cache.put(hash, &principal);
        Ok(principal)
    }

    /// How long a verified API key is trusted without asking the store
    /// again (0: every request asks). The default is 0 on SQLite (one
    /// host; a lookup is a local read) and [`SHARED_KEY_CACHE_TTL`] on
    /// PostgreSQL.
    pub fn set_key_cache_ttl(&mut self, ttl: std::time::Duration) {
        self.key_cache = KeyCache::new(ttl);
    }

    pub fn key_cache_ttl(&self) -> std::time::Duration {
        self.key_cache.ttl()
    }
}

/// The default key cache lifetime on a shared (PostgreSQL) control plane:
/// a revoked key stops working on every host within this long.
pub const SHARED_KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

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

    /// Two handles on one file store stand for two hosts sharing a control
    /// plane: a key revoked through one stops working through the other
    /// within the other's cache lifetime, and at once through the one that
    /// revoked it.
    #[tokio::test]
    async fn a_revoked_key_stops_working_everywhere_within_the_cache_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let ttl = std::time::Duration::from_millis(300);
        let mut here = MetaStore::open(&path).unwrap();
        let mut there = MetaStore::open(&path).unwrap();
        here.set_key_cache_ttl(ttl);
        there.set_key_cache_ttl(ttl);
        let key = here
            .ensure_default_org(schemas::Plan::Business, None)
            .await
            .unwrap()
            .unwrap();
        let h = headers(&[("x-api-key", &key.secret)]);
        // A key created elsewhere works at once (failures are not cached).
        assert!(matches!(
            authenticate(&there, &headers(&[("x-api-key", "sn_0000000000000000_00")])).await,
            Err(Error::InvalidCredentials)
        ));
        assert_eq!(
            authenticate(&there, &h).await.unwrap().tenant.as_str(),
            "default"
        );
        authenticate(&here, &h).await.unwrap();

        let revoked_at = std::time::Instant::now();
        here.revoke_key(&crate::testing::t("default"), &key.id)
            .await
            .unwrap();
        assert!(matches!(
            authenticate(&here, &h).await,
            Err(Error::InvalidCredentials)
        ));
        // `there` still trusts its cached verification, but not for long.
        loop {
            match authenticate(&there, &h).await {
                Ok(_) => assert!(revoked_at.elapsed() < ttl, "accepted after the bound"),
                Err(Error::InvalidCredentials) => break,
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(revoked_at.elapsed() <= ttl + std::time::Duration::from_millis(100));
    }

    #[tokio::test]
    async fn the_cache_keeps_no_key_material_and_forgets_deleted_organizations() {
        let (mut store, org) = crate::testing::store_with("acme").await;
        store.set_key_cache_ttl(std::time::Duration::from_secs(60));
        let key = store.create_key(&org, "k", Role::Admin).await.unwrap();
        let h = headers(&[("x-api-key", &key.secret)]);
        authenticate(&store, &h).await.unwrap();
        {
            let entries = store.key_cache.lock();
            assert_eq!(entries.len(), 1);
            assert!(entries.contains_key(&crate::keys::hash(&key.secret)));
        }
        store.delete_organization(&org).await.unwrap();
        assert!(matches!(
            authenticate(&store, &h).await,
            Err(Error::InvalidCredentials)
        ));
    }
}
