use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::get;
use axum::{Router, middleware};
use control::MetaStore;
use futures::future::BoxFuture;

use crate::audit;
use crate::error::ApiError;
use crate::insights::Insights;
use crate::metering::{self, ApiMeter};
use crate::ops;
use crate::sql::SqlEngine;

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
    /// `[api.sql]`: limits of analyst queries (`POST /api/sql`, `securenet sql`).
    pub sql: crate::sql::SqlConfig,
    /// Requests per second per organization (token bucket); 0 = no limit.
    /// Over it: 429 with `Retry-After`, not billed.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// The platform operator's token for `POST /api/orgs` (at least 32
    /// characters; unset: only MSP admins create — child — organizations).
    pub platform_admin_token: Option<schemas::Secret>,
    /// HS256 secret for JWTs (at least 32 bytes). Unset: a random secret is
    /// generated once and kept in the metadata store, which every role
    /// sharing the store uses.
    pub jwt_secret: Option<schemas::Secret>,
    /// Stripe webhook signing secret (`whsec_…`); unset: the webhook
    /// answers 503.
    pub stripe_webhook_secret: Option<schemas::Secret>,
    /// Hours after a month ends before its invoices are issued (final,
    /// numbered, never recomputed): records arriving late still count
    /// until then.
    pub invoice_grace_hours: u32,
    /// `[api.stripe]`: telling Stripe about plan changes and invoices.
    pub stripe: crate::stripe_out::StripeConfig,
    /// An OpenAI-compatible endpoint that may narrate
    /// `POST /api/insights/summary` (the built-in summary stays).
    pub llm: Option<crate::analysis::LlmConfig>,
    /// Notification delivery (webhooks, SMTP).
    pub notify: crate::notify::NotifyConfig,
    /// Sign-in attempts (`POST /api/auth/token` with a password) per
    /// account and per client address, per minute; over it: 429.
    pub sign_in_per_minute_per_account: u32,
    pub sign_in_per_minute_per_address: u32,
    /// Argon2 password hashes computed at once (19 MiB each).
    pub max_concurrent_password_hashes: usize,
    /// Model training.
    pub training: crate::insights::TrainingConfig,
    /// `[api.flight_sql]`: the Arrow Flight SQL listener (off when unset).
    pub flight_sql: crate::flight_sql::FlightSqlConfig,
    /// `[api.detections]`: detection rules and their backtests.
    pub detections: crate::detections::DetectionsConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            sql: Default::default(),
            rate_limit_per_sec: 100,
            rate_limit_burst: 200,
            platform_admin_token: None,
            jwt_secret: None,
            stripe_webhook_secret: None,
            invoice_grace_hours: crate::billing::DEFAULT_INVOICE_GRACE_HOURS,
            stripe: Default::default(),
            llm: None,
            notify: Default::default(),
            sign_in_per_minute_per_account: 10,
            sign_in_per_minute_per_address: 30,
            max_concurrent_password_hashes: 2,
            training: Default::default(),
            flight_sql: Default::default(),
            detections: Default::default(),
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
    /// `api.platform_admin_token`: creates organizations (`POST /api/orgs`).
    pub platform_token: Option<crate::auth::PlatformToken>,
    pub billing: Arc<crate::billing::Billing>,
    /// Host and process probe for `/api/metrics/system`.
    pub system: Arc<crate::dashboard::SystemProbe>,
    /// The data directory (its disk is reported by `/api/metrics/system`).
    pub data_dir: std::path::PathBuf,
    /// `api.llm`: an optional model that narrates the built-in summary.
    pub llm: Option<Arc<crate::analysis::LlmConfig>>,
    /// Sends notifications (the dispatcher and the channel test route).
    pub notify: Arc<crate::notify::Notifier>,
    /// Sign-in throttling and bounded password hashing.
    pub sign_in: Arc<crate::signin::SignInGuard>,
    pub ops: OpsState,
    /// The OpenAPI document (`GET /api/openapi.json`), built at start with
    /// the ingest routes: [`crate::openapi::build`].
    pub openapi: Arc<utoipa::openapi::OpenApi>,
    /// Detection rule limits and the operator's rule pack.
    pub detections: Arc<crate::detections::Detections>,
}

/// What the operational endpoints need; every role serves them.
#[derive(Clone)]
pub struct OpsState {
    pub registry: prometheus::Registry,
    pub health: Arc<[HealthCheck]>,
}

impl AppState {
    /// The caller's organization; `404` once it was deleted (a credential
    /// cached or in flight can outlive it).
    pub async fn caller_org(
        &self,
        caller: &control::Principal,
    ) -> Result<control::Organization, ApiError> {
        self.store
            .organization(&caller.tenant)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!("organization {} no longer exists", caller.tenant))
            })
    }

    /// The caller's organization, when its plan includes `feature` now;
    /// otherwise `402 feature_not_in_plan` (checked at every use, so a
    /// downgrade stops the feature at once).
    pub async fn entitled_org(
        &self,
        caller: &control::Principal,
        feature: schemas::Feature,
    ) -> Result<control::Organization, ApiError> {
        let org = self.caller_org(caller).await?;
        org.require(feature)?;
        Ok(org)
    }
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

/// Largest JSON body of a route without its own limit (axum's default).
pub const DEFAULT_JSON_LIMIT: usize = 2 << 20;

/// The query API's routes over `state`: the route table, each route behind
/// its access check.
pub fn router(state: AppState) -> Router {
    let sql_body_limit = state.sql.config().max_body_bytes;
    let mut api = Router::new();
    for e in crate::routes::table() {
        let mut handler = e.handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), e.access),
            crate::auth::authorize,
        ));
        if e.path == "/api/sql" {
            handler = handler.layer(DefaultBodyLimit::max(sql_body_limit));
        }
        api = api.route(e.path, handler);
    }
    // After routing, so it sees route templates.
    let api = api.route_layer(middleware::from_fn_with_state(
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
    let openapi = state.openapi.clone();
    api.with_state(state.clone())
        .route(
            "/api/openapi.json",
            get(crate::openapi::handler).with_state(openapi),
        )
        .merge(crate::openapi::swagger_ui())
        .merge(ops_router(state.ops))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_JSON_LIMIT))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// A known route called with another method: JSON like every error. The
/// binary sets it on the whole router too (ingest routes included).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} is not allowed on {}", method, uri.path()))
}
