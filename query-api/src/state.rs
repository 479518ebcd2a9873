use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use axum::{Router, middleware};
use control::MetaStore;
use futures::future::BoxFuture;

use crate::alerts;
use crate::audit;
use crate::error::ApiError;
use crate::insights::{self, Insights};
use crate::metering::{self, ApiMeter};
use crate::ops;
use crate::orgs;
use crate::sql::{self, SqlEngine};
use crate::usage;

/// A named readiness check (metadata store, bus, sinks...).
#[derive(Clone)]
pub struct HealthCheck {
    pub name: &'static str,
    pub check: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

/// `[api]`: limits of the query API.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Requests per second per organization (token bucket); 0 = no limit.
    /// Over it: 429 with `Retry-After`, not billed.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<MetaStore>,
    pub sql: Arc<SqlEngine>,
    pub insights: Arc<Insights>,
    /// Records every authenticated API call as `api_requests` (off when
    /// there is no bus to publish them to).
    pub meter: Option<Arc<ApiMeter>>,
    /// Per-organization request budget.
    pub limits: Arc<control::RateLimits>,
    pub ops: OpsState,
}

/// What the operational endpoints need; every role serves them.
#[derive(Clone)]
pub struct OpsState {
    pub registry: prometheus::Registry,
    pub health: Arc<[HealthCheck]>,
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> Self {
        state.ops.clone()
    }
}

/// `/metrics`, `/api/metrics/prometheus` and `/api/metrics/health` alone —
/// for roles without the query API (ingest, pipeline).
pub fn ops_router(ops: OpsState) -> Router {
    Router::new()
        .route("/api/metrics/health", get(ops::health))
        .route("/api/metrics/prometheus", get(ops::prometheus))
        .route("/metrics", get(ops::prometheus))
        .with_state(ops)
}

/// The query API's routes over `state`.
pub fn router(state: AppState) -> Router {
    let sql_body_limit = state.sql.config().max_body_bytes;
    let api = Router::new()
        .route(
            "/api/sql",
            post(sql::handler).layer(DefaultBodyLimit::max(sql_body_limit)),
        )
        .route("/api/insights/models", get(insights::list))
        .route(
            "/api/insights/models/upload-training-data",
            post(insights::upload).layer(DefaultBodyLimit::max(insights::MAX_UPLOAD_BYTES)),
        )
        .route("/api/insights/models/train", post(insights::train))
        .route("/api/insights/models/{id}/predict", post(insights::predict))
        .route("/api/billing/usage", get(usage::billing_usage))
        .route("/api/metrics/usage/export", get(usage::export))
        .route("/api/anomalies", get(alerts::anomalies))
        .route("/api/notifications", get(alerts::notifications))
        .route("/api/notifications/{id}/read", post(alerts::mark_read))
        .route("/api/audit-log", get(audit::list))
        .route("/api/orgs/current", get(orgs::current))
        .route(
            "/api/orgs/current/api-keys",
            get(orgs::list_keys).post(orgs::create_key),
        )
        .route(
            "/api/orgs/current/api-keys/{id}",
            axum::routing::delete(orgs::revoke_key),
        )
        // After routing, so it sees route templates.
        .route_layer(middleware::from_fn_with_state(
            state.store.clone(),
            audit::middleware,
        ));
    // After routing, so the middleware sees the route template.
    let api = match &state.meter {
        Some(meter) => api.route_layer(middleware::from_fn_with_state(
            meter.clone(),
            metering::middleware,
        )),
        None => api,
    };
    api.with_state(state.clone())
        .merge(ops_router(state.ops))
        .fallback(not_found)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
