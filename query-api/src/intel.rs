//! Threat-intelligence lists: `/api/detections/intel`.
//!
//! - `PUT /api/detections/intel/{name}?level=high` — a list as CSV
//!   (`text/csv`: a header naming `value` and optionally `type`,
//!   `expires_at`, `description`, or one value per line) or JSON
//!   (`{"indicators": [...]}` or a STIX 2.1 bundle); replaces a list of the
//!   same name. Every bad entry is reported (by line or index) and nothing
//!   is stored.
//! - `GET /api/detections/intel`, `GET /api/detections/intel/{name}`,
//!   `DELETE /api/detections/intel/{name}`.
//!
//! Pipelines match every `logs` batch against the organization's
//! unexpired indicators (`detectors::intel`); matches are `detections`
//! rows with rule id `intel:<name>`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use control::intel::{ThreatList, ThreatListInfo};
use detectors::intel::{Indicator, parse_csv, parse_json};
use detectors::sigma::Level;
use schemas::time::{now_ms, to_rfc3339};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// Largest list upload (about a million indicators of CSV).
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IntelParams {
    /// The level of its detections: informational, low, medium, high
    /// (default), critical.
    level: Option<String>,
}

fn info_json(i: &ThreatListInfo) -> Value {
    json!({
        "name": i.name,
        "level": i.level,
        "indicators": i.count,
        "updated_at": to_rfc3339(i.updated_at),
    })
}

/// `PUT /api/detections/intel/{name}`
pub async fn put_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    params: crate::extract::QueryParams<IntelParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    crate::detections::valid_id(&name)?;
    let level = match p.level.as_deref() {
        None => Level::High,
        Some(l) => Level::parse_name(l).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "level {l:?} is not one of informational, low, medium, high, critical"
            ))
        })?,
    };
    let media = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadRequest(format!("the list is not UTF-8: {e}")))?;
    let parsed = match media.as_str() {
        "text/csv" | "text/plain" => parse_csv(text),
        "application/json" | "application/stix+json" => parse_json(text),
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other:?}: send text/csv or application/json (indicators or a STIX bundle)"
            )));
        }
    };
    let indicators: Vec<Indicator> =
        parsed.map_err(|e| ApiError::BadRequest(format!("list refused: {e}")))?;
    let max = state.detections.config.max_indicators_per_org;
    let others: u64 = state
        .store
        .list_threat_lists(&caller.tenant)
        .await?
        .iter()
        .filter(|l| l.name != name)
        .map(|l| l.count)
        .sum();
    let total = others + indicators.len() as u64;
    if total > max as u64 {
        return Err(ApiError::Conflict(format!(
            "this organization would hold {total} indicators, over the limit of {max} \
             (api.detections.max_indicators_per_org); delete or shorten a list first"
        )));
    }
    let list = ThreatList {
        info: ThreatListInfo {
            org_id: caller.tenant.clone(),
            name: name.clone(),
            level: level.as_str().into(),
            count: indicators.len() as u64,
            updated_at: now_ms(),
        },
        indicators: serde_json::to_string(&indicators)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    state.store.put_threat_list(&list).await?;
    let expired = indicators
        .iter()
        .filter(|i| i.expires_at.is_some_and(|at| at <= list.info.updated_at))
        .count();
    let mut out = info_json(&list.info);
    out["expired"] = json!(expired);
    Ok(Json(json!({ "list": out })))
}

/// `GET /api/detections/intel`
pub async fn lists(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Value>> {
    let lists: Vec<Value> = state
        .store
        .list_threat_lists(&caller.tenant)
        .await?
        .iter()
        .map(info_json)
        .collect();
    Ok(Json(json!({ "lists": lists })))
}

/// `GET /api/detections/intel/{name}`
pub async fn get_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let list = state
        .store
        .threat_list(&caller.tenant, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("threat-intel list {name:?} not found")))?;
    let indicators: Value = serde_json::from_str(&list.indicators)
        .map_err(|e| ApiError::Internal(format!("stored list {name}: {e}")))?;
    Ok(Json(
        json!({ "list": info_json(&list.info), "indicators": indicators }),
    ))
}

/// `DELETE /api/detections/intel/{name}`
pub async fn delete_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    state
        .store
        .delete_threat_list(&caller.tenant, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
