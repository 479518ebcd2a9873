//! API keys: `sn_<16 hex id>_<64 hex secret>`.
//!
//! The id is public (listings, audit logs, revocation); only the SHA-256 of
//! the whole key is stored. Keys carry 256 bits of entropy, so a fast hash is
//! the right tool (as for GitHub or Stripe tokens): a slow password hash would
//! only add latency to every ingest call. Keys supplied from configuration may
//! have any shape; their id is derived from their hash.

use rand::RngCore;
use schemas::TenantId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{Principal, Role};
use crate::db::params;
use crate::error::{Error, Result};
use crate::store::{MetaStore, now_ms};

pub const PREFIX: &str = "sn_";
/// Shortest key accepted from configuration.
pub const MIN_CONFIGURED_KEY_LEN: usize = 20;

/// A freshly issued key: `secret` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub id: String,
    pub secret: String,
}

pub fn generate() -> IssuedKey {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = format!("{PREFIX}{id}_{}", hex::encode(secret));
    IssuedKey { id, secret }
}

/// The id a presented key is looked up by.
pub fn key_id(key: &str) -> String {
    if let Some(rest) = key.strip_prefix(PREFIX)
        && let Some((id, _)) = rest.split_once('_')
        && id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return id.to_ascii_lowercase();
    }
    // Configured keys of another shape: a stable id from the hash.
    format!("h{}", &hex::encode(hash(key))[..15])
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Only record a key's last use when the stored value is older than this, so
/// authentication stays a read on the hot path.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// What a key listing shows: never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl MetaStore {
    /// Issues a new key for `org`; the secret is returned once.
    pub async fn create_key(&self, org: &TenantId, name: &str, role: Role) -> Result<IssuedKey> {
        let key = generate();
        self.insert_key(org, name, role, &key.id, &key.secret)
            .await?;
        Ok(key)
    }

    /// Stores a key supplied by the operator (configuration); idempotent.
    pub async fn import_key(
        &self,
        org: &TenantId,
        name: &str,
        role: Role,
        secret: &str,
    ) -> Result<String> {
        if secret.len() < MIN_CONFIGURED_KEY_LEN {
            return Err(Error::Invalid(format!(
                "configured API key is {} characters long; use at least {}",
                secret.len(),
                MIN_CONFIGURED_KEY_LEN
            )));
        }
        let id = key_id(secret);
        match self.insert_key(org, name, role, &id, secret).await {
            Err(Error::Conflict { .. }) => Ok(id),
            other => other.map(|()| id),
        }
    }

    async fn insert_key(
        &self,
        org: &TenantId,
        name: &str,
        role: Role,
        id: &str,
        secret: &str,
    ) -> Result<()> {
        if self.organization(org).await?.is_none() {
            return Err(Error::NotFound {
                what: "organization",
                id: org.to_string(),
            });
        }
        let hash = hash(secret);
        let n = self
            .db
            .execute(
                "INSERT INTO api_keys (id, org_id, name, role, hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING",
                params![id, org, name, role.as_str(), &hash[..], now_ms()],
            )
            .await?;
        if n == 0 {
            return Err(Error::Conflict {
                what: "api key",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    pub async fn list_keys(&self, org: &TenantId) -> Result<Vec<ApiKeyInfo>> {
        self.db
            .query(
                "SELECT id, org_id, name, role, created_at, last_used_at, revoked_at \
                 FROM api_keys WHERE org_id = ?1 ORDER BY created_at, id",
                params![org],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: r.get(0)?,
                    org_id: r.get(1)?,
                    name: r.get(2)?,
                    role: r.get::<String>(3)?.parse()?,
                    created_at: r.get(4)?,
                    last_used_at: r.get(5)?,
                    revoked_at: r.get(6)?,
                })
            })
            .collect()
    }

    /// Revokes a key of `org`. Revoking twice is not an error.
    pub async fn revoke_key(&self, org: &TenantId, id: &str) -> Result<()> {
        let n = self
            .db
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) WHERE id = ?1 AND org_id = ?2",
                params![id, org, now_ms()],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "api key",
                id: id.to_string(),
            });
        }
        self.key_cache.forget(org, Some(id));
        Ok(())
    }

    /// The organization and id of the key `presented` claims to be (its
    /// public id part), without checking the secret: for attributing a
    /// failed authentication to the organization it targeted.
    pub async fn key_owner(&self, presented: &str) -> Result<Option<(TenantId, String)>> {
        let id = key_id(presented);
        let org: Option<String> = self
            .db
            .query_opt("SELECT org_id FROM api_keys WHERE id = ?1", params![id])
            .await?
            .map(|r| r.get(0))
            .transpose()?;
        Ok(org.and_then(|o| TenantId::new(&o).ok()).map(|o| (o, id)))
    }

    /// Resolves a presented API key to its principal. The lookup is by the
    /// public id; the hash comparison is constant-time.
    pub async fn verify_key(&self, presented: &str) -> Result<Principal> {
        let id = key_id(presented);
        let row = self
            .db
            .query_opt(
                "SELECT hash, org_id, role, revoked_at, last_used_at FROM api_keys WHERE id = ?1",
                params![id],
            )
            .await?;
        let Some(row) = row else {
            return Err(Error::InvalidCredentials);
        };
        let stored: Vec<u8> = row.get(0)?;
        let (org, role): (String, String) = (row.get(1)?, row.get(2)?);
        let (revoked_at, last_used): (Option<i64>, Option<i64>) = (row.get(3)?, row.get(4)?);
        let matches: bool = hash(presented).ct_eq(stored.as_slice()).into();
        if !matches || revoked_at.is_some() {
            return Err(Error::InvalidCredentials);
        }
        let now = now_ms();
        if last_used.is_none_or(|t| now - t > LAST_USED_RESOLUTION_MS) {
            // Best effort: skipped while a bulk write holds SQLite's writer
            // (the next request records it).
            self.db
                .try_execute(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .await?;
        }
        Ok(Principal {
            tenant: TenantId::new(&org)?,
            key_id: id,
            role: role.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{org, t};

    #[tokio::test]
    async fn generated_keys_parse_back_to_their_id() {
        let k = generate();
        assert!(k.secret.starts_with("sn_"));
        assert_eq!(k.secret.len(), 3 + 16 + 1 + 64);
        assert_eq!(key_id(&k.secret), k.id);
        assert_ne!(generate().secret, k.secret);
    }

    #[tokio::test]
    async fn foreign_keys_get_a_stable_hash_id() {
        let a = key_id("my-configured-development-key");
        assert_eq!(a, key_id("my-configured-development-key"));
        assert!(a.starts_with('h') && a.len() == 16);
        assert_ne!(a, key_id("another-configured-key-value"));
    }

    #[tokio::test]
    async fn keys_are_stored_hashed_listed_and_revocable() {
        let store = crate::testing::store().await;
        org(&store, "acme").await;
        let key = store
            .create_key(&t("acme"), "forwarder", Role::Member)
            .await
            .unwrap();
        let stored: Vec<u8> = store
            .db
            .query_opt("SELECT hash FROM api_keys WHERE id = ?1", params![key.id])
            .await
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap();
        assert_ne!(stored, key.secret.as_bytes());
        assert_eq!(stored.len(), 32);

        let listed = store.list_keys(&t("acme")).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, key.id);
        assert_eq!(listed[0].role, Role::Member);

        assert_eq!(
            store.verify_key(&key.secret).await.unwrap().role,
            Role::Member
        );
        assert!(
            store.list_keys(&t("acme")).await.unwrap()[0]
                .last_used_at
                .is_some()
        );

        store.revoke_key(&t("acme"), &key.id).await.unwrap();
        assert!(matches!(
            store.verify_key(&key.secret).await,
            Err(Error::InvalidCredentials)
        ));
        assert!(
            store.list_keys(&t("acme")).await.unwrap()[0]
                .revoked_at
                .is_some()
        );
    }

    #[tokio::test]
    async fn wrong_secret_with_a_valid_id_is_refused() {
        let store = crate::testing::store().await;
        org(&store, "acme").await;
        let key = store
            .create_key(&t("acme"), "k", Role::Admin)
            .await
            .unwrap();
        let mut forged = key.secret.clone();
        forged.pop();
        forged.push(if key.secret.ends_with('0') { '1' } else { '0' });
        assert!(matches!(
            store.verify_key(&forged).await,
            Err(Error::InvalidCredentials)
        ));
        assert!(matches!(
            store.verify_key("sn_nope").await,
            Err(Error::InvalidCredentials)
        ));
    }

    #[tokio::test]
    async fn a_tenant_cannot_revoke_another_tenants_key() {
        let store = crate::testing::store().await;
        org(&store, "acme").await;
        org(&store, "globex").await;
        let key = store
            .create_key(&t("acme"), "k", Role::Admin)
            .await
            .unwrap();
        assert!(matches!(
            store.revoke_key(&t("globex"), &key.id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(store.verify_key(&key.secret).await.is_ok());
    }
}
