//! The control plane: organizations (tenants), API keys and authentication.
//!
//! Layout:
//! - [`store`]: the SQLite metadata store ([`MetaStore`]) with its migrations;
//!   organizations with plan and limits, API keys stored as SHA-256 hashes.
//! - [`keys`]: API key format, generation and hashing.
//! - [`inventory`]: devices and scans per tenant, with plan limits.
//! - [`insights`]: the model registry, training sessions, notifications.
//! - [`auth`]: turning request headers into an authenticated [`Principal`].
//! - [`ratelimit`]: per-tenant token buckets.
//!
//! SQLite is the embedded default; the store is written against plain SQL so a
//! PostgreSQL implementation can be added for multi-node control planes.

pub mod auth;
mod error;
pub mod insights;
pub mod inventory;
pub mod keys;
pub mod ratelimit;
pub mod store;

pub use auth::{Principal, Role, authenticate};
pub use error::{Error, Result};
pub use inventory::{Device, DeviceObservation, ScanAdmission};
pub use keys::IssuedKey;
pub use ratelimit::{Limited, RateLimits};
pub use store::{ApiKeyInfo, MetaStore, NewOrganization, Organization};
