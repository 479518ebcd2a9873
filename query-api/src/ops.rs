//! Operational endpoints: readiness and Prometheus metrics. Both are
//! unauthenticated (probes and scrapers carry no tenant credentials) and
//! expose no tenant data: metric labels never carry tenant ids.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use prometheus::{Encoder, TextEncoder};
use serde_json::{Map, Value, json};

use crate::state::OpsState;

/// `GET /api/metrics/health`: 200 when every check passes, else 503 with
/// the failing checks named.
pub async fn health(State(state): State<OpsState>) -> Response {
    let results = join_all(state.health.iter().map(|c| {
        let check = c.check.clone();
        async move {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), check()).await;
            let outcome = outcome.unwrap_or_else(|_| Err("check timed out after 5s".into()));
            (c.name, outcome)
        }
    }))
    .await;
    let healthy = results.iter().all(|(_, r)| r.is_ok());
    let checks: Map<String, Value> = results
        .into_iter()
        .map(|(name, r)| {
            let v = match r {
                Ok(()) => json!({ "status": "ok" }),
                Err(e) => json!({ "status": "failing", "error": e }),
            };
            (name.to_string(), v)
        })
        .collect();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics` and `GET /api/metrics/prometheus`: text exposition format.
pub async fn prometheus(State(state): State<OpsState>) -> Response {
    let families = state.registry.gather();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        return crate::error::ApiError::Internal(format!("encoding metrics: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
