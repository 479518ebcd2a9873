//! Notification delivery: per-organization channels and the dispatcher.
//!
//! Routes (admin): `GET/POST /api/notifications/channels`,
//! `DELETE /api/notifications/channels/{id}`,
//! `POST /api/notifications/channels/{id}/test`,
//! `GET /api/notifications/deliveries` (the delivery log).
//!
//! Webhooks: `POST` of JSON `{"id", "event": "notification",
//! "organization", "notification": {...}}` with `X-SecureNet-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body" under the channel's
//! secret>` (Stripe's scheme, so existing verifiers work),
//! `X-SecureNet-Event` and `X-SecureNet-Delivery` (the delivery id, stable
//! across retries: receivers deduplicate on it). 2xx is delivered; anything
//! else — or no answer within the timeout — is retried with exponential
//! backoff until `max_attempts`, then marked `failed`. Webhooks are an
//! integration: the starter plan has email only.
//!
//! Email: plain text over SMTP (`api.notify.smtp.url`, e.g.
//! `smtp://relay:25`, `smtps://user:pass@host:465`, or
//! `smtp://host:587?tls=required`), from `api.notify.smtp.from`.
//!
//! Layout: this file holds the configuration and the routes; [`targets`]
//! decides which webhook targets are allowed (globally reachable addresses
//! only), [`dispatch`] sends and retries deliveries.

mod dispatch;
mod targets;
#[cfg(test)]
mod tests;

pub use dispatch::{Notifier, spawn_dispatcher};
use targets::validate_target;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use control::notify::ChannelKind;
use schemas::Feature;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::{Cursor, page};
use crate::state::AppState;

/// `[api.notify]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// How often new notifications are matched to channels and due
    /// deliveries are sent.
    pub poll_ms: u64,
    /// Attempts per delivery before it is marked `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Allow webhook targets on loopback and private addresses (off in
    /// production: a tenant must not reach the operator's network).
    pub allow_private_targets: bool,
    pub smtp: Option<SmtpConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            poll_ms: 1_000,
            max_attempts: 8,
            backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            timeout_ms: 10_000,
            allow_private_targets: false,
            smtp: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain), `smtps://…` (TLS) or
    /// `smtp://host:587?tls=required` (STARTTLS); credentials in the URL.
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    pub from: String,
}

/// The SMTP URL may carry credentials: shown without them.
fn redact_url<S: serde::Serializer>(v: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    match url::Url::parse(v) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            s.serialize_str(u.as_str())
        }
        _ => s.serialize_str(v),
    }
}

/// Delay before attempt `attempts + 1`.
pub fn backoff(config: &NotifyConfig, attempts: u32) -> u64 {
    schemas::time::backoff_ms(config.backoff_ms, config.max_backoff_ms, attempts)
}

/// Notification channels one organization may have: every notification
/// fans out to each, so the count bounds the delivery work one tenant
/// causes.
pub const MAX_CHANNELS_PER_ORG: usize = 20;

/// `402` unless the organization's plan includes webhooks — checked when a
/// channel is created or tested and again at every delivery.
async fn webhooks_included(state: &AppState, tenant: &schemas::TenantId) -> Result<()> {
    match state.store.organization(tenant).await? {
        Some(o) => Ok(o.require(Feature::Webhooks)?),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    kind: String,
    target: String,
    min_severity: Option<String>,
}

/// `GET /api/notifications/channels`
pub async fn list_channels(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "channels": state.store.list_channels(&caller.tenant).await? }),
    ))
}

/// `POST /api/notifications/channels`
pub async fn create_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<NewChannel>,
) -> Result<(StatusCode, Json<Value>)> {
    let crate::extract::JsonBody(req) = body;
    let kind = match req.kind.as_str() {
        "webhook" => ChannelKind::Webhook,
        "email" => ChannelKind::Email,
        other => {
            return Err(ApiError::BadRequest(format!(
                "kind {other:?}: webhook or email"
            )));
        }
    };
    // The plan first: a starter organization learns webhooks are not in
    // its plan before being told how to fix the URL.
    if kind == ChannelKind::Webhook {
        webhooks_included(&state, &caller.tenant).await?;
    }
    validate_target(&state.notify.config, kind, req.target.trim())?;
    let existing = state.store.list_channels(&caller.tenant).await?.len();
    if existing >= MAX_CHANNELS_PER_ORG {
        return Err(ApiError::Conflict(format!(
            "this organization has {existing} notification channels, the most allowed \
             ({MAX_CHANNELS_PER_ORG}); delete one first"
        )));
    }
    let channel = state
        .store
        .create_channel(
            &caller.tenant,
            kind,
            req.target.trim(),
            req.min_severity.as_deref().unwrap_or("high"),
        )
        .await?;
    let mut out = json!({ "channel": channel });
    if let Some(secret) = &channel.secret {
        out["secret"] = json!(secret);
        out["note"] = json!("the signing secret is shown only this once; store it now");
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// `DELETE /api/notifications/channels/{id}`
pub async fn delete_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.delete_channel(&caller.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/notifications/channels/{id}/test` — sends a test message now
/// and answers with the outcome (not retried, not in the log).
pub async fn test_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let channel = state
        .store
        .list_channels(&caller.tenant)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("channel {id:?} not found")))?;
    if channel.kind == ChannelKind::Webhook {
        webhooks_included(&state, &caller.tenant).await?;
    }
    let notification = control::notify::Notification {
        id: format!("test-{}", schemas::time::now_ms()),
        org_id: caller.tenant.clone(),
        kind: "test".into(),
        severity: "low".into(),
        title: "Test notification".into(),
        body: json!({"message": "this channel works"}),
        ref_id: "test".into(),
        created_at: schemas::time::now_ms(),
        read_at: None,
    };
    let org = state.caller_org(&caller).await?;
    let brand = state.store.applied_branding(&org).await?;
    let outcome = state
        .notify
        .send(&channel, &notification, &notification.id, brand.as_ref())
        .await;
    Ok(Json(match outcome {
        Ok(status) => json!({"delivered": true, "status": status}),
        Err((status, error)) => json!({"delivered": false, "status": status, "error": error}),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// One channel's deliveries.
    channel: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /api/notifications/deliveries` — newest first; `next_cursor`.
pub async fn deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<DeliveryParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let limit = crate::listing::limit(p.limit)?;
    let before = Cursor::param(p.cursor.as_deref())?;
    let rows = state
        .store
        .list_deliveries(
            &caller.tenant,
            p.channel.as_deref(),
            before.as_ref().map(|c| (c.at_ms, c.id.as_str())),
            limit + 1,
        )
        .await?;
    let (rows, next) = page(rows, limit, |d| {
        Cursor::new(d.created_at, d.id.clone()).to_string()
    });
    Ok(Json(json!({ "deliveries": rows, "next_cursor": next })))
}
