//! Anomalies and notifications listings, cursor-paginated, scoped to the
//! caller's organization.
//!
//! - `GET /api/anomalies?severity=high,critical&entity=web-1&since=…&until=…&limit=50&cursor=…`
//!   — from the `anomalies` table (the lake, through the caller's SQL
//!   session), newest window first. `since`/`until` are RFC 3339 and bound
//!   `window_start`; the cursor is opaque (`<window_start ms>.<anomaly id>`
//!   of the last item).
//! - `GET /api/notifications?unread=true&severity=…&limit=50&cursor=…` —
//!   from the metadata store, newest first.
//! - `POST /api/notifications/{id}/read` — marks one read (idempotent).
//!
//! Every filter value is validated before it reaches SQL (severities from a
//! fixed set, the entity quoted, times and cursors parsed), so nothing the
//! caller sends is interpreted as SQL.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use schemas::Severity;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

const MAX_LIMIT: usize = 500;

fn severities(list: Option<&str>) -> Result<Vec<&'static str>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|s| {
            let s = s.trim();
            Severity::parse(s)
                .filter(|k| Severity::ALERTS.contains(k))
                .map(Severity::as_str)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "severity {s:?} is not one of {}",
                        Severity::list(&Severity::ALERTS)
                    ))
                })
        })
        .collect()
}

pub(crate) fn limit(l: Option<usize>) -> Result<usize> {
    match l.unwrap_or(50) {
        0 => Err(ApiError::BadRequest("limit must be at least 1".into())),
        n if n > MAX_LIMIT => Err(ApiError::BadRequest(format!(
            "limit {n} is over the maximum of {MAX_LIMIT}"
        ))),
        n => Ok(n),
    }
}

pub(crate) fn rfc3339_ms(name: &str, v: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::BadRequest(format!("{name} {v:?} is not an RFC 3339 time")))
}

/// `<ms>.<id>` → parts; ids are UUIDs (anomalies) or safe slugs.
fn cursor(c: &str) -> Result<(i64, String)> {
    let bad = || ApiError::BadRequest("cursor is not one this API issued".into());
    let (ms, id) = c.split_once('.').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(bad());
    }
    Ok((ms, id.to_string()))
}

pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParams {
    severity: Option<String>,
    entity: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/anomalies`
pub async fn anomalies(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<AnomalyParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let limit = limit(p.limit)?;
    let mut filters = vec!["1 = 1".to_string()];
    let sev = severities(p.severity.as_deref())?;
    if !sev.is_empty() {
        let list: Vec<String> = sev.iter().map(|s| quote(s)).collect();
        filters.push(format!("severity IN ({})", list.join(", ")));
    }
    if let Some(e) = &p.entity {
        if e.len() > 256 {
            return Err(ApiError::BadRequest(
                "entity is longer than 256 bytes".into(),
            ));
        }
        filters.push(format!("entity = {}", quote(e)));
    }
    let start = "CAST(window_start AS BIGINT)";
    if let Some(s) = &p.since {
        filters.push(format!("{start} >= {}", rfc3339_ms("since", s)?));
    }
    if let Some(u) = &p.until {
        filters.push(format!("{start} < {}", rfc3339_ms("until", u)?));
    }
    if let Some(c) = &p.cursor {
        let (ms, id) = cursor(c)?;
        filters.push(format!(
            "({start} < {ms} OR ({start} = {ms} AND anomaly_id < {}))",
            quote(&id)
        ));
    }
    let sql = format!(
        "SELECT anomaly_id, model_id, model_version, entity, {start} AS window_start_ms, \
         CAST(window_end AS BIGINT) AS window_end_ms, score, threshold, severity, features, \
         explanation FROM anomalies WHERE {} \
         ORDER BY window_start_ms DESC, anomaly_id DESC LIMIT {}",
        filters.join(" AND "),
        limit + 1
    );
    let result = state.sql.execute(&caller.tenant, &sql).await?;
    let mut rows = to_json_rows(&result.batches)?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    for r in &mut rows {
        for field in ["features", "explanation"] {
            if let Some(Value::String(s)) = r.get(field) {
                let parsed = serde_json::from_str(s).unwrap_or(Value::Null);
                r[field] = parsed;
            }
        }
    }
    let next = more.then(|| rows.last()).flatten().map(|r| {
        format!(
            "{}.{}",
            r["window_start_ms"],
            r["anomaly_id"].as_str().unwrap_or("")
        )
    });
    Ok(Json(json!({ "anomalies": rows, "next_cursor": next })))
}

pub(crate) fn to_json_rows(batches: &[arrow::array::RecordBatch]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut out);
        let refs: Vec<&arrow::array::RecordBatch> = batches.iter().collect();
        w.write_batches(&refs)
            .and_then(|_| w.finish())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    if out.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&out).map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    unread: Option<bool>,
    severity: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/notifications`
pub async fn notifications(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<NotificationParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let limit = limit(p.limit)?;
    let sev = severities(p.severity.as_deref())?;
    let before = p.cursor.as_deref().map(cursor).transpose()?;
    // Severity filtering happens here, so fetch pages until one is full.
    let mut items = Vec::new();
    let mut at = before.clone();
    loop {
        let page = state.store.list_notifications(
            &caller.tenant,
            p.unread.unwrap_or(false),
            at.as_ref().map(|(ms, id)| (*ms, id.as_str())),
            limit + 1,
        )?;
        let exhausted = page.len() <= limit;
        at = page.last().map(|n| (n.created_at, n.id.clone()));
        items.extend(
            page.into_iter()
                .filter(|n| sev.is_empty() || sev.contains(&n.severity.as_str())),
        );
        if exhausted || items.len() > limit {
            break;
        }
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next = more
        .then(|| items.last())
        .flatten()
        .map(|n| format!("{}.{}", n.created_at, n.id));
    let unread = state.store.unread_notifications(&caller.tenant)?;
    Ok(Json(json!({
        "notifications": items,
        "next_cursor": next,
        "unread": unread,
    })))
}

/// `POST /api/notifications/{id}/read`
pub async fn mark_read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.mark_notification_read(&caller.tenant, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated_before_sql() {
        assert_eq!(
            severities(Some("high, critical")).unwrap(),
            ["high", "critical"]
        );
        assert!(severities(Some("high' OR 1=1 --")).is_err());
        assert_eq!(quote("it's"), "'it''s'");
        assert!(cursor("17.abc-1").is_ok());
        assert!(cursor("17.abc' OR 1=1").is_err());
        assert!(cursor("x.abc").is_err());
        assert!(limit(Some(0)).is_err() && limit(Some(501)).is_err());
        assert!(rfc3339_ms("since", "2026-11-26T00:00:00Z").is_ok());
        assert!(rfc3339_ms("since", "yesterday").is_err());
    }
}
