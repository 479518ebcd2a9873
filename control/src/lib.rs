//! The control plane: organizations (tenants), API keys and authentication.
//!
//! Layout — one module per aggregate, each with its queries on [`MetaStore`]:
//! - [`store`]: the SQLite metadata store ([`MetaStore`]): connections, the
//!   default organization, tenant deletion; `migrations`: the schema as
//!   SQL files and the tables an organization's rows live in.
//! - [`orgs`]: organizations with plan, limits and the operator's terms.
//! - [`keys`]: API key format, generation and hashing; keys stored as
//!   SHA-256 hashes, verified in constant time.
//! - [`users`]: people who sign in with email and password (Argon2id).
//! - [`jwt`]: HS256 tokens from `POST /api/auth/token`, checked against the
//!   store on every request.
//! - [`inventory`]: devices and scans per tenant, with plan limits.
//! - [`billing`]: plan changes and their history; [`invoice`]: prorated
//!   invoices in cents (pure); [`stripe`]: Stripe's events, typed, applied
//!   once; [`signature`]: the HMAC scheme of Stripe's and our webhooks.
//! - [`models`]: the model registry and training sessions.
//! - [`notify`]: notifications, channels (webhook, email), the delivery log.
//! - [`audit`]: the audit log.
//! - [`rules`]: Sigma detection rules per organization, MSP rule packs;
//!   [`intel`]: threat-intelligence lists; [`sql_alerts`]: scheduled SQL
//!   alerts.
//! - [`auth`]: turning request headers into an authenticated [`Principal`].
//! - [`ratelimit`]: per-tenant token buckets.
//!
//! SQLite is the embedded default; the store is written against plain SQL so a
//! PostgreSQL implementation can be added for multi-node control planes.

pub mod audit;
pub mod auth;
pub mod billing;
pub mod branding;
mod db;
mod error;
pub mod fuzzing;
pub(crate) mod ids;
pub mod intel;
pub mod inventory;
pub mod invoice;
pub mod jwt;
pub mod keys;
pub(crate) mod migrations;
pub mod models;
pub mod notify;
pub mod orgs;
pub mod ratelimit;
mod rows;
pub mod rules;
pub mod signature;
pub mod sql_alerts;
pub mod store;
pub mod stripe;
pub mod stripe_out;
pub mod users;

pub use auth::{Principal, Role, authenticate};
pub use billing::IssuedInvoice;
pub use db::{Backend, StoreError, fresh_postgres_database};
pub use error::{Error, Result};
pub use inventory::{Device, DeviceObservation, ScanAdmission};
pub use keys::{ApiKeyInfo, IssuedKey};
pub use orgs::{NewOrganization, Organization};
pub use ratelimit::{Limited, RateLimits};
pub use store::MetaStore;
pub use users::User;

#[cfg(test)]
pub(crate) mod testing {
    use schemas::{Plan, TenantId};

    use crate::{MetaStore, NewOrganization, Organization};

    pub(crate) fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    /// A fresh, empty store: with `SECURENET_TEST_CONTROL=postgres`, a
    /// new database on the PostgreSQL server `SECURENET_TEST_POSTGRES_URL`
    /// names (`./scripts/test.sh` starts one and runs this crate's tests
    /// once more against it), else a private in-memory SQLite store.
    pub(crate) async fn store() -> MetaStore {
        let on_postgres = std::env::var("SECURENET_TEST_CONTROL").as_deref() == Ok("postgres");
        match std::env::var("SECURENET_TEST_POSTGRES_URL") {
            Ok(url) if on_postgres && !url.is_empty() => {
                MetaStore::connect(&crate::db::fresh_postgres_database(&url).await.unwrap())
                    .await
                    .unwrap()
            }
            _ => MetaStore::open_in_memory().unwrap(),
        }
    }

    /// A Business organization `id` named `ID`.
    pub(crate) async fn org(store: &MetaStore, id: &str) -> Organization {
        store
            .create_organization(&NewOrganization {
                id: t(id),
                name: id.to_uppercase(),
                owner_email: format!("owner@{id}.test"),
                plan: Plan::Business,
                parent_id: None,
                allow_overage: false,
            })
            .await
            .unwrap()
    }

    /// A fresh store with one Starter organization.
    pub(crate) async fn store_with(org: &str) -> (MetaStore, TenantId) {
        let store = store().await;
        let id = t(org);
        store
            .create_organization(&NewOrganization {
                id: id.clone(),
                name: org.into(),
                owner_email: "a@b.c".into(),
                plan: Plan::Starter,
                parent_id: None,
                allow_overage: false,
            })
            .await
            .unwrap();
        (store, id)
    }
}
