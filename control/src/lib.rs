//! The control plane: organizations (tenants), API keys and authentication.
//!
//! Layout:
//! - [`store`]: the SQLite metadata store ([`MetaStore`]) with its migrations;
//!   organizations with plan and limits, API keys stored as SHA-256 hashes.
//! - [`keys`]: API key format, generation and hashing.
//! - [`inventory`]: devices and scans per tenant, with plan limits.
//! - [`insights`]: the model registry, training sessions, notifications.
//! - [`users`]: people who sign in with email and password (Argon2id).
//! - [`jwt`]: HS256 tokens from `POST /api/auth/token`, checked against the
//!   store on every request.
//! - [`billing`]: plan changes, prorated invoices in cents, Stripe events.
//! - [`notify`]: notification channels (webhook, email) and the delivery log.
//! - [`auth`]: turning request headers into an authenticated [`Principal`].
//! - [`ratelimit`]: per-tenant token buckets.
//!
//! SQLite is the embedded default; the store is written against plain SQL so a
//! PostgreSQL implementation can be added for multi-node control planes.

pub mod auth;
pub mod billing;
mod error;
pub mod fuzzing;
pub(crate) mod ids;
pub mod insights;
pub mod inventory;
pub mod jwt;
pub mod keys;
pub mod notify;
pub mod ratelimit;
pub mod store;
pub mod users;

pub use auth::{Principal, Role, authenticate};
pub use error::{Error, Result};
pub use inventory::{Device, DeviceObservation, ScanAdmission};
pub use keys::IssuedKey;
pub use ratelimit::{Limited, RateLimits};
pub use store::{ApiKeyInfo, MetaStore, NewOrganization, Organization};
pub use users::User;
