//! Users: people who sign in with an email and a password and get a JWT
//! (`POST /api/auth/token`). Machines use API keys.
//!
//! Passwords are stored as Argon2id PHC strings (the `argon2` crate's
//! defaults: 19 MiB, 2 passes) — unlike API keys, passwords are low-entropy
//! and need a slow hash. A sign-in for an unknown email still runs one
//! verification against a fixed hash so timing does not reveal which emails
//! exist.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use schemas::TenantId;
use serde::Serialize;

use crate::auth::{Principal, Role};
use crate::db::{Row, params};
use crate::error::{Error, Result};
use crate::store::{MetaStore, now_ms};

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; we ask 12).
pub const MIN_PASSWORD_LEN: usize = 12;
const MAX_PASSWORD_LEN: usize = 1024;
/// Accounts of one address a sign-in checks the password against (each
/// check is an Argon2 hash: bounded work per attempt).
const MAX_ACCOUNTS_PER_EMAIL: usize = 8;

/// A user as listings show it: never the password hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: Role,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Invalid(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Invalid(format!("cannot hash the password: {e}")))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A valid hash nobody's password matches, verified for unknown emails.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password never issued").unwrap_or_default())
}

fn validate(email: &str, password: &str) -> Result<()> {
    let at = email.find('@');
    if email.len() > 254 || at.is_none_or(|i| i == 0 || i + 1 == email.len()) {
        return Err(Error::Invalid(format!("{email:?} is not an email address")));
    }
    let chars = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&chars) {
        return Err(Error::Invalid(format!(
            "passwords are {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

fn user_row(r: &Row) -> Result<(User, String)> {
    let role: String = r.get(3)?;
    Ok((
        User {
            id: r.get(0)?,
            org_id: r.get(1)?,
            email: r.get(2)?,
            // Only written from a parsed Role; an unknown value gets the least privilege.
            role: role.parse().unwrap_or(Role::Viewer),
            created_at: r.get(4)?,
            last_login_at: r.get(5)?,
        },
        r.get(6)?,
    ))
}

const USER_COLUMNS: &str = "id, org_id, email, role, created_at, last_login_at, password_hash";

impl MetaStore {
    /// Adds a user to `org`. Emails are unique within an organization
    /// (case-insensitive); the same address may belong to users of several
    /// organizations, which learn nothing of each other.
    pub async fn create_user(
        &self,
        org: &TenantId,
        email: &str,
        password: &str,
        role: Role,
    ) -> Result<User> {
        let email = email.trim();
        validate(email, password)?;
        let hash = hash_password(password)?;
        let user = User {
            id: crate::ids::random_id("u_"),
            org_id: org.to_string(),
            email: email.to_string(),
            role,
            created_at: now_ms(),
            last_login_at: None,
        };
        // The only unique key a new random id can collide on is the
        // organization's (case-insensitive) email.
        let inserted = self
            .db
            .execute(
                "INSERT INTO users (id, org_id, email, role, password_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    user.id,
                    user.org_id,
                    user.email,
                    role.as_str(),
                    hash,
                    user.created_at
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict {
                what: "user",
                id: email.to_string(),
            });
        }
        Ok(user)
    }

    pub async fn list_users(&self, org: &TenantId) -> Result<Vec<User>> {
        self.db
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE org_id = ?1 ORDER BY created_at, id"
                ),
                params![org],
            )
            .await?
            .iter()
            .map(|r| user_row(r).map(|(u, _)| u))
            .collect()
    }

    /// Removes a user of `org`; their JWTs stop working on the next request.
    pub async fn delete_user(&self, org: &TenantId, id: &str) -> Result<()> {
        let n = self
            .db
            .execute(
                "DELETE FROM users WHERE id = ?1 AND org_id = ?2",
                params![id, org],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "user",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Checks an email and password; the user's principal on success.
    /// `organization` picks the account when the address has accounts in
    /// several organizations; without it, the one account whose password
    /// matches signs in (several matching is an error that tells only the
    /// password's holder to name the organization).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
        organization: Option<&TenantId>,
    ) -> Result<(User, Principal)> {
        let candidates: Vec<(User, String)> = self
            .db
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users \
                     WHERE lower(email) = lower(?1) AND (?2 IS NULL OR org_id = ?2) \
                     ORDER BY created_at, id LIMIT {MAX_ACCOUNTS_PER_EMAIL}"
                ),
                params![email.trim(), organization],
            )
            .await?
            .iter()
            .map(user_row)
            .collect::<Result<_>>()?;
        if candidates.is_empty() {
            let _ = verify_password(password, decoy_hash());
            return Err(Error::InvalidCredentials);
        }
        let mut matching: Vec<User> = candidates
            .into_iter()
            .filter(|(_, hash)| verify_password(password, hash))
            .map(|(user, _)| user)
            .collect();
        let mut user = match matching.len() {
            0 => return Err(Error::InvalidCredentials),
            1 => matching.remove(0),
            _ => {
                return Err(Error::Invalid(
                    "this email and password sign in to several organizations: \
                     add \"organization\" to the request"
                        .into(),
                ));
            }
        };
        let now = now_ms();
        self.db
            .execute(
                "UPDATE users SET last_login_at = ?2 WHERE id = ?1",
                params![user.id, now],
            )
            .await?;
        user.last_login_at = Some(now);
        let principal = Principal {
            tenant: TenantId::new(&user.org_id)?,
            key_id: format!("user:{}", user.id),
            role: user.role,
        };
        Ok((user, principal))
    }

    /// Organizations and user ids that have an account with this address.
    pub async fn users_by_email(&self, email: &str) -> Result<Vec<(TenantId, String)>> {
        let rows = self
            .db
            .query(
                "SELECT org_id, id FROM users WHERE lower(email) = lower(?1) LIMIT 16",
                params![email.trim()],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Ok(org) = TenantId::new(&r.get::<String>(0)?) {
                out.push((org, r.get(1)?));
            }
        }
        Ok(out)
    }

    /// The current role of a user of `org`, `None` once deleted.
    pub async fn user_role(&self, org: &TenantId, id: &str) -> Result<Option<Role>> {
        self.db
            .query_opt(
                "SELECT role FROM users WHERE id = ?1 AND org_id = ?2",
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

    #[tokio::test]
    async fn users_sign_in_with_their_password_only() {
        let store = crate::testing::store().await;
        store
            .ensure_default_org(Plan::Business, None)
            .await
            .unwrap();
        let org = TenantId::new(DEFAULT_ORG).unwrap();
        let user = store
            .create_user(
                &org,
                "ana@example.com",
                "correct horse battery",
                Role::Member,
            )
            .await
            .unwrap();
        let (signed, principal) = store
            .sign_in("ANA@example.com", "correct horse battery", None)
            .await
            .unwrap();
        assert_eq!(signed.id, user.id);
        assert_eq!(principal.role, Role::Member);
        assert_eq!(principal.key_id, format!("user:{}", user.id));
        assert!(matches!(
            store
                .sign_in("ana@example.com", "wrong horse battery", None)
                .await,
            Err(Error::InvalidCredentials)
        ));
        assert!(matches!(
            store
                .sign_in("nobody@example.com", "correct horse battery", None)
                .await,
            Err(Error::InvalidCredentials)
        ));
        assert!(matches!(
            store
                .create_user(
                    &org,
                    "ana@EXAMPLE.com",
                    "another long password",
                    Role::Viewer
                )
                .await,
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            store
                .create_user(&org, "bo@example.com", "short", Role::Viewer)
                .await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            store
                .create_user(&org, "not-an-email", "long enough password", Role::Viewer)
                .await,
            Err(Error::Invalid(_))
        ));
        store.delete_user(&org, &user.id).await.unwrap();
        assert_eq!(store.user_role(&org, &user.id).await.unwrap(), None);
        assert!(store.list_users(&org).await.unwrap().is_empty());
    }

    /// One organization cannot learn or block another's users' addresses.
    #[tokio::test]
    async fn the_same_email_can_be_a_user_of_two_organizations() {
        let store = crate::testing::store().await;
        let (acme, globex) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("globex").unwrap(),
        );
        for id in [&acme, &globex] {
            store
                .create_organization(&crate::NewOrganization {
                    id: id.clone(),
                    name: id.to_string(),
                    owner_email: "o@x.test".into(),
                    plan: Plan::Business,
                    parent_id: None,
                    allow_overage: false,
                })
                .await
                .unwrap();
        }
        let a = store
            .create_user(&acme, "sam@example.com", "acme password one", Role::Admin)
            .await
            .unwrap();
        let g = store
            .create_user(
                &globex,
                "SAM@example.com",
                "globex password two",
                Role::Viewer,
            )
            .await
            .unwrap();
        // Each password signs in to its own organization.
        let (u, p) = store
            .sign_in("sam@example.com", "acme password one", None)
            .await
            .unwrap();
        assert_eq!((u.id, p.tenant), (a.id.clone(), acme.clone()));
        let (u, _) = store
            .sign_in("sam@example.com", "globex password two", None)
            .await
            .unwrap();
        assert_eq!(u.id, g.id);
        // The same password in both: the organization must be named.
        store
            .create_user(&acme, "lee@example.com", "shared password 1", Role::Viewer)
            .await
            .unwrap();
        store
            .create_user(
                &globex,
                "lee@example.com",
                "shared password 1",
                Role::Viewer,
            )
            .await
            .unwrap();
        assert!(matches!(
            store
                .sign_in("lee@example.com", "shared password 1", None)
                .await,
            Err(Error::Invalid(_))
        ));
        let (_, p) = store
            .sign_in("lee@example.com", "shared password 1", Some(&globex))
            .await
            .unwrap();
        assert_eq!(p.tenant, globex);
        assert!(matches!(
            store
                .sign_in("sam@example.com", "acme password one", Some(&globex))
                .await,
            Err(Error::InvalidCredentials)
        ));
    }
}
