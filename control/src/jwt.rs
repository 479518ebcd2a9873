//! JWTs (HS256) for `POST /api/auth/token`: organization, role and expiry
//! in the claims, signed with a secret kept in the metadata store (generated
//! on first use, so every role sharing the store accepts the same tokens).
//!
//! Tokens are short-lived (1 h by default, 24 h at most) and still checked
//! against the store on every request: a deleted user or a revoked API key
//! stops working at once, and a user whose role was lowered gets the lower
//! role. The token proves who the caller is; the store says what they may do.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemas::TenantId;
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Role};
use crate::db::params;
use crate::error::{Error, Result};
use crate::store::{MetaStore, now_ms};

const ISSUER: &str = "securenet";
pub const DEFAULT_TTL_SECS: u64 = 3600;
pub const MAX_TTL_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// `user:<id>` or `key:<id>`: the credential the token was issued for.
    pub sub: String,
    pub org: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
}

/// Whether a presented bearer credential is a JWT rather than an API key
/// (`sn_…` keys never contain dots; JWTs are three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

impl MetaStore {
    /// The signing secret: the one in the store, generated on first use
    /// (by whichever process of a shared store comes first).
    async fn jwt_secret(&self) -> Result<&[u8]> {
        let secret = self
            .jwt_secret
            .get_or_try_init(|| async {
                self.db
                    .execute(
                        "INSERT INTO settings (key, value) VALUES ('jwt_secret', ?1) \
                         ON CONFLICT(key) DO NOTHING",
                        params![rand::random::<[u8; 32]>().to_vec()],
                    )
                    .await?;
                let stored: Vec<u8> = self
                    .db
                    .write_query(
                        "SELECT value FROM settings WHERE key = 'jwt_secret'",
                        params![],
                    )
                    .await?
                    .first()
                    .map(|r| r.get(0))
                    .transpose()?
                    .ok_or_else(|| Error::Invalid("the JWT secret is missing".into()))?;
                Ok::<_, Error>(stored)
            })
            .await?;
        Ok(secret)
    }

    /// Uses `secret` (from configuration) instead of the stored one. Call
    /// before the first token is issued or checked.
    pub fn set_jwt_secret(&self, secret: &[u8]) -> Result<()> {
        if secret.len() < 32 {
            return Err(Error::Invalid(
                "the JWT secret must be at least 32 bytes".into(),
            ));
        }
        self.jwt_secret
            .set(secret.to_vec())
            .map_err(|_| Error::Invalid("the JWT secret is already in use".into()))
    }

    /// Signs a token for `principal`, valid for `ttl_secs` (capped at 24 h).
    pub async fn issue_jwt(
        &self,
        principal: &Principal,
        ttl_secs: u64,
    ) -> Result<(String, Claims)> {
        let iat = (now_ms() / 1000).max(0) as u64;
        let sub = if principal.key_id.starts_with("user:") {
            principal.key_id.clone()
        } else {
            format!("key:{}", principal.key_id)
        };
        let claims = Claims {
            iss: ISSUER.into(),
            sub,
            org: principal.tenant.to_string(),
            role: principal.role,
            iat,
            exp: iat + ttl_secs.clamp(1, MAX_TTL_SECS),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.jwt_secret().await?),
        )
        .map_err(|e| Error::Invalid(format!("cannot sign the token: {e}")))?;
        Ok((token, claims))
    }

    /// Verifies a token's signature, issuer and expiry, then that its
    /// credential still exists; the principal with the lower of the token's
    /// and the current role.
    pub async fn verify_jwt(&self, token: &str) -> Result<Principal> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(self.jwt_secret().await?),
            &validation,
        )
        .map_err(|_| Error::InvalidCredentials)?
        .claims;
        let tenant = TenantId::new(&claims.org).map_err(|_| Error::InvalidCredentials)?;
        let current = if let Some(user) = claims.sub.strip_prefix("user:") {
            self.user_role(&tenant, user).await?
        } else if let Some(key) = claims.sub.strip_prefix("key:") {
            self.key_role(&tenant, key).await?
        } else {
            None
        };
        let role = current.ok_or(Error::InvalidCredentials)?.min(claims.role);
        Ok(Principal {
            tenant,
            key_id: claims
                .sub
                .strip_prefix("key:")
                .unwrap_or(&claims.sub)
                .to_string(),
            role,
        })
    }

    /// The role of a live (not revoked) key of `org`.
    async fn key_role(&self, org: &TenantId, id: &str) -> Result<Option<Role>> {
        self.db
            .query_opt(
                "SELECT role FROM api_keys WHERE id = ?1 AND org_id = ?2 AND revoked_at IS NULL",
                params![id, org],
            )
            .await?
            .map(|r| r.get::<String>(0)?.parse())
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEFAULT_ORG;
    use schemas::Plan;

    async fn default_store() -> (MetaStore, TenantId) {
        let store = crate::testing::store().await;
        store
            .ensure_default_org(Plan::Business, None)
            .await
            .unwrap();
        (store, TenantId::new(DEFAULT_ORG).unwrap())
    }

    #[tokio::test]
    async fn tokens_carry_org_role_and_expiry_and_follow_the_credential() {
        let (store, org) = default_store().await;
        let key = store.create_key(&org, "ci", Role::Member).await.unwrap();
        let principal = store.verify_key(&key.secret).await.unwrap();
        let (token, claims) = store.issue_jwt(&principal, 600).await.unwrap();
        assert!(looks_like_jwt(&token));
        assert!(!looks_like_jwt(&key.secret));
        assert_eq!(claims.exp - claims.iat, 600);
        assert_eq!(store.verify_jwt(&token).await.unwrap(), principal);

        // Tampering breaks the signature.
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            store.verify_jwt(&forged).await,
            Err(Error::InvalidCredentials)
        ));

        // Revoking the key revokes its tokens.
        store.revoke_key(&org, &key.id).await.unwrap();
        assert!(matches!(
            store.verify_jwt(&token).await,
            Err(Error::InvalidCredentials)
        ));
    }

    #[tokio::test]
    async fn expired_and_foreign_tokens_are_refused() {
        let (store, org) = default_store().await;
        let user = store
            .create_user(
                &org,
                "ops@example.com",
                "a long enough password",
                Role::Admin,
            )
            .await
            .unwrap();
        let (_, principal) = store
            .sign_in(&user.email, "a long enough password", None)
            .await
            .unwrap();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: format!("user:{}", user.id),
            org: org.to_string(),
            role: Role::Admin,
            iat: 1,
            exp: 2,
        };
        let secret = store.jwt_secret().await.unwrap().to_vec();
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert!(matches!(
            store.verify_jwt(&expired).await,
            Err(Error::InvalidCredentials)
        ));

        let other = crate::testing::store().await;
        other
            .ensure_default_org(Plan::Business, None)
            .await
            .unwrap();
        let (theirs, _) = other.issue_jwt(&principal, 60).await.unwrap();
        assert!(matches!(
            store.verify_jwt(&theirs).await,
            Err(Error::InvalidCredentials)
        ));

        let (mine, _) = store.issue_jwt(&principal, 60).await.unwrap();
        assert_eq!(store.verify_jwt(&mine).await.unwrap().role, Role::Admin);
        store.delete_user(&org, &user.id).await.unwrap();
        assert!(matches!(
            store.verify_jwt(&mine).await,
            Err(Error::InvalidCredentials)
        ));
    }
}
