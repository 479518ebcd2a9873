//! The audit log: every mutating call (POST, PUT, PATCH, DELETE) to a
//! query-API route by an authenticated caller is recorded after it is
//! answered — who (key id, role), what (method, route template, path), when
//! and the status it got, refusals and failures included — and admins list
//! it at `GET /api/audit-log?limit=50&cursor=…` (newest first).

use std::sync::Arc;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use control::MetaStore;
use control::audit::AuditEntry;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::metering::CallerSlot;
use crate::state::AppState;

/// Records mutating calls once they are answered.
pub async fn middleware(
    State(store): State<Arc<MetaStore>>,
    mut request: Request,
    next: Next,
) -> Response {
    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !mutating {
        return next.run(request).await;
    }
    let slot = CallerSlot::of(&mut request);
    let method = request.method().to_string();
    let path: String = request.uri().path().chars().take(512).collect();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    if let Some(caller) = slot.0.get() {
        let entry = AuditEntry {
            id: 0,
            org_id: caller.tenant.clone(),
            key_id: caller.key_id.clone(),
            role: caller.role.as_str().to_string(),
            method,
            route,
            path,
            status: response.status().as_u16(),
            at: schemas::time::now_ms(),
        };
        if let Err(e) = store.append_audit(&entry).await {
            warn!(error = %e, "writing the audit log failed");
        }
    }
    response
}

/// Appends an entry made outside the middleware (sign-ins, the platform
/// operator, failed authentication); a failure to record is logged.
pub async fn record(store: &MetaStore, entry: AuditEntry) {
    if let Err(e) = store.append_audit(&entry).await {
        warn!(error = %e, "writing the audit log failed");
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /api/audit-log` (admins).
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<AuditParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let limit = crate::listing::limit(p.limit)?;
    // The entry number of the last item; opaque like every cursor.
    let before = match p.cursor.as_deref() {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("cursor is not one this API issued".into()))?,
        ),
        None => None,
    };
    let entries = state
        .store
        .list_audit(&caller.tenant, before, limit + 1)
        .await?;
    let (entries, next) = crate::listing::page(entries, limit, |e| e.id.to_string());
    Ok(Json(json!({ "entries": entries, "next_cursor": next })))
}
