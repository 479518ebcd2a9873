//! Scheduled SQL alerts: `/api/detections/alerts`.
//!
//! An analyst saves a query over their own tables with a schedule
//! (`every`), a condition on its value (the first column of the first row;
//! 0 without rows) and a severity. The query is planned at creation in the
//! organization's SQL session — the same sandbox as `POST /api/sql`, so a
//! statement that is not a query, or a table that is not the
//! organization's, is refused then — and run by the pipeline role on
//! schedule with the organization's SQL limits; a run whose value meets
//! the condition is a detection (`rule_id` `alert:<id>`) and a
//! notification.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use control::sql_alerts::SqlAlert;
use schemas::Severity;
use schemas::time::{now_ms, to_rfc3339};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::sql::Bound;
use crate::state::AppState;

const OPS: [&str; 6] = ["gt", "gte", "lt", "lte", "eq", "ne"];
const MAX_NAME_CHARS: usize = 200;
/// Longest schedule accepted.
const MAX_EVERY_MS: i64 = 7 * 86_400_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// gt, gte, lt, lte, eq, ne
    op: String,
    value: f64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlert {
    name: String,
    /// A query over the organization's tables; its first value is tested.
    sql: String,
    /// How often: a number and s, m, h or d (`5m`).
    every: String,
    condition: Condition,
    /// low, medium, high (default), critical.
    severity: Option<String>,
    /// Default true.
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertChange {
    enabled: bool,
}

/// `5m` → ms.
fn every_ms(text: &str, min_ms: i64) -> Result<i64> {
    let bad = || {
        ApiError::BadRequest(format!(
            "every {text:?}: a number and s, m, h or d, from {} s to 7 d \
             (api.detections.min_alert_interval_ms)",
            min_ms / 1000
        ))
    };
    let ms = schemas::time::parse_duration_ms(text).ok_or_else(bad)?;
    if ms < min_ms || ms > MAX_EVERY_MS {
        return Err(bad());
    }
    Ok(ms)
}

fn alert_json(a: &SqlAlert) -> Value {
    let time = |t: Option<i64>| t.map(to_rfc3339);
    json!({
        "id": a.id,
        "name": a.name,
        "sql": a.sql,
        "every_ms": a.every_ms,
        "condition": { "op": a.op, "value": a.threshold },
        "severity": a.severity,
        "enabled": a.enabled,
        "next_run_at": to_rfc3339(a.next_run_at),
        "last_run_at": time(a.last_run_at),
        "last_value": a.last_value,
        "last_error": a.last_error,
        "last_fired_at": time(a.last_fired_at),
        "created_at": to_rfc3339(a.created_at),
    })
}

/// `GET /api/detections/alerts`
pub async fn list(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Value>> {
    let alerts: Vec<Value> = state
        .store
        .list_sql_alerts(&caller.tenant)
        .await?
        .iter()
        .map(alert_json)
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

/// `GET /api/detections/alerts/{id}`
pub async fn get_alert(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let alert = state
        .store
        .sql_alert(&caller.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("SQL alert {id:?} not found")))?;
    Ok(Json(json!({ "alert": alert_json(&alert) })))
}

/// `POST /api/detections/alerts`
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<NewAlert>,
) -> Result<(StatusCode, Json<Value>)> {
    let crate::extract::JsonBody(req) = body;
    let config = &state.detections.config;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::BadRequest(format!(
            "name: 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let every_ms = every_ms(&req.every, config.min_alert_interval_ms)?;
    if !OPS.contains(&req.condition.op.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "condition.op {:?} is not one of {}",
            req.condition.op,
            OPS.join(", ")
        )));
    }
    if !req.condition.value.is_finite() {
        return Err(ApiError::BadRequest(
            "condition.value must be a finite number".into(),
        ));
    }
    let severity = match req.severity.as_deref() {
        None => Severity::High,
        Some(s) => Severity::parse(s)
            .filter(|s| Severity::ALERTS.contains(s))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "severity {s:?} is not one of {}",
                    Severity::list(&Severity::ALERTS)
                ))
            })?,
    };
    // Planned (not run) in the organization's session now: what it cannot
    // plan there it could not run on schedule either.
    state
        .sql
        .describe(&caller.tenant, &Bound::new(req.sql.clone()))
        .await
        .map_err(|e| ApiError::BadRequest(format!("query refused: {e}")))?;
    let existing = state.store.list_sql_alerts(&caller.tenant).await?.len();
    if existing >= config.max_alerts_per_org {
        return Err(ApiError::Conflict(format!(
            "this organization has {existing} SQL alerts, the most allowed \
             (api.detections.max_alerts_per_org = {}); delete one first",
            config.max_alerts_per_org
        )));
    }
    let now = now_ms();
    let alert = SqlAlert {
        org_id: caller.tenant.clone(),
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        sql: req.sql,
        every_ms,
        op: req.condition.op,
        threshold: req.condition.value,
        severity: severity.as_str().into(),
        enabled: req.enabled.unwrap_or(true),
        next_run_at: now,
        last_run_at: None,
        last_value: None,
        last_error: None,
        last_fired_at: None,
        created_at: now,
    };
    state.store.add_sql_alert(&alert).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "alert": alert_json(&alert) })),
    ))
}

/// `PATCH /api/detections/alerts/{id}`
pub async fn set(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: crate::extract::JsonBody<AlertChange>,
) -> Result<Json<Value>> {
    let crate::extract::JsonBody(change) = body;
    state
        .store
        .set_sql_alert_enabled(&caller.tenant, &id, change.enabled)
        .await?;
    get_alert(State(state), Caller(caller), Path(id)).await
}

/// `DELETE /api/detections/alerts/{id}`
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.delete_sql_alert(&caller.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
