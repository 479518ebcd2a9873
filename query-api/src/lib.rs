//! The query API (axum): analyst SQL, health, Prometheus metrics, and the
//! tenant scoping every route shares.
//!
//! Layout:
//! - [`state`]: [`AppState`] — what handlers share — and [`router`], the one
//!   function that builds the routes.
//! - [`audit`]: the audit log of mutating calls and `GET /api/audit-log`.
//! - [`routes`]: the route table — every route with its access (public,
//!   role, platform); the router and the permission matrix come from it.
//! - [`auth`]: the access check each route runs, the MSP acting header,
//!   and the [`auth::Caller`] the handlers get.
//! - [`billing`]: plans, current plan, limits, plan changes, invoices, the
//!   Stripe webhook.
//! - [`sql`]: `POST /api/sql` — a DataFusion session per query (a copy of
//!   the engine's template with its own pool) that only has
//!   the caller's tables registered, on its own runtime, with bounded
//!   expression depth, a deadline and cancellation inside execution, memory
//!   limits that cover functions and results, and fair slots per
//!   organization; results as JSON, CSV or Arrow IPC.
//! - [`alerts`]: `/api/anomalies` and `/api/notifications` (cursor
//!   pagination, filters, mark as read).
//! - [`detections`]: Sigma rules per organization (`/api/detections/rules`,
//!   MSP packs, the operator's pack, backtests) and their matches
//!   (`/api/detections`).
//! - [`intel`]: threat-intelligence lists (`/api/detections/intel`);
//!   [`sql_alerts`]: scheduled SQL alerts (`/api/detections/alerts`).
//! - [`insights`]: the model registry, training-data upload, training and
//!   prediction (`/api/insights/models…`).
//! - [`data`]: `/api/logs`, `/api/devices`, `/api/scans`, `/api/findings`
//!   (cursor pages, filters).
//! - [`dashboard`]: `/api/metrics/system`, `/organization`, `/security`,
//!   `/dashboard`.
//! - [`analysis`]: log summary (log templates, optional LLM narrative),
//!   threat analysis per entity, recommendations.
//! - [`notify`]: notification channels (signed webhooks, SMTP email), the
//!   dispatcher with retries and backoff, the delivery log.
//! - [`metering`]: every authenticated call becomes an `api_requests`
//!   record (the billable API counter), published to the bus.
//! - [`usage`]: recorded usage per month: `/api/billing/usage`,
//!   `/api/metrics/usage/export` (CSV, JSON, Parquet).
//! - [`orgs`]: organizations, API keys, users, and JWT sign-in.
//! - [`signin`]: sign-in throttling per account and address, bounded
//!   password hashing.
//! - [`openapi`]: `GET /api/openapi.json`, generated from the route table.
//! - [`ops`]: `/api/metrics/health`, `/metrics`, `/api/metrics/prometheus`.
//! - [`headers`]: security headers on every response.
//! - [`error`]: [`ApiError`] and its one mapping to HTTP statuses.
//! - [`extract`]: JSON body and query string extractors whose rejections
//!   are [`ApiError`]s (413 over the limit, 415, 400).
//! - [`fair`]: fair per-organization admission to shared slots (SQL
//!   queries, model training).

pub mod alerts;
pub mod analysis;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod dashboard;
pub mod data;
pub mod detections;
pub mod document;
pub mod error;
pub mod extract;
pub mod fair;
pub mod flight_sql;
pub mod headers;
pub mod insights;
pub mod intel;
pub(crate) mod listing;
pub mod metering;
pub mod notify;
pub mod openapi;
pub mod ops;
pub mod orgs;
pub mod reports;
pub mod routes;
pub mod signin;
pub mod sql;
pub mod sql_alerts;
pub mod state;
pub mod stripe_out;
pub mod usage;

pub use error::{ApiError, Result};
pub use state::{
    ApiConfig, AppState, HealthCheck, OpsState, method_not_allowed, ops_router, router,
};
