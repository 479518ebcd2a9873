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
//! Every filter value is validated (severities from a fixed set, times and
//! cursors parsed) and then bound to a placeholder of the query
//! ([`crate::sql::Bound`]): nothing the caller sends becomes SQL text.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use schemas::Severity;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::{Cursor, limit, page, rfc3339_ms, to_json_rows};
use crate::sql::Bound;
use crate::state::AppState;

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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnomalyParams {
    /// Comma-separated: low, medium, high, critical.
    severity: Option<String>,
    /// One host or address.
    entity: Option<String>,
    /// Windows starting at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Windows starting before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
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
    let mut query = Bound::default();
    let mut filters = vec!["1 = 1".to_string()];
    let sev = severities(p.severity.as_deref())?;
    if !sev.is_empty() {
        let list: Vec<String> = sev.iter().map(|s| query.bind(*s)).collect();
        filters.push(format!("severity IN ({})", list.join(", ")));
    }
    if let Some(e) = &p.entity {
        if e.len() > 256 {
            return Err(ApiError::BadRequest(
                "entity is longer than 256 bytes".into(),
            ));
        }
        filters.push(format!("entity = {}", query.bind(e.as_str())));
    }
    let start = "CAST(window_start AS BIGINT)";
    if let Some(s) = &p.since {
        filters.push(format!(
            "{start} >= {}",
            query.bind(rfc3339_ms("since", s)?)
        ));
    }
    if let Some(u) = &p.until {
        filters.push(format!("{start} < {}", query.bind(rfc3339_ms("until", u)?)));
    }
    if let Some(Cursor { at_ms: ms, id, .. }) = Cursor::param(p.cursor.as_deref())? {
        let (ms, id) = (query.bind(ms), query.bind(id.as_str()));
        filters.push(format!(
            "({start} < {ms} OR ({start} = {ms} AND anomaly_id < {id}))"
        ));
    }
    query.sql = format!(
        "SELECT anomaly_id, model_id, model_version, entity, {start} AS window_start_ms, \
         CAST(window_end AS BIGINT) AS window_end_ms, score, threshold, severity, features, \
         explanation FROM anomalies WHERE {} \
         ORDER BY window_start_ms DESC, anomaly_id DESC LIMIT {}",
        filters.join(" AND "),
        limit + 1
    );
    let result = state.sql.execute_bound(&caller.tenant, &query).await?;
    let (mut rows, next) = page(to_json_rows(&result.batches)?, limit, |r| {
        let at_ms = r["window_start_ms"].as_i64().unwrap_or_default();
        Cursor::new(at_ms, r["anomaly_id"].as_str().unwrap_or_default()).to_string()
    });
    for r in &mut rows {
        for field in ["features", "explanation"] {
            if let Some(Value::String(s)) = r.get(field) {
                let parsed = serde_json::from_str(s).unwrap_or(Value::Null);
                r[field] = parsed;
            }
        }
    }
    Ok(Json(json!({ "anomalies": rows, "next_cursor": next })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationParams {
    /// Only notifications not yet read.
    unread: Option<bool>,
    /// Comma-separated: low, medium, high, critical.
    severity: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
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
    let before = Cursor::param(p.cursor.as_deref())?;
    // Severity filtering happens here, so fetch pages until one is full.
    let mut items = Vec::new();
    let mut at = before.clone();
    loop {
        let fetched = state
            .store
            .list_notifications(
                &caller.tenant,
                p.unread.unwrap_or(false),
                at.as_ref().map(|c| (c.at_ms, c.id.as_str())),
                limit + 1,
            )
            .await?;
        let exhausted = fetched.len() <= limit;
        at = fetched
            .last()
            .map(|n| Cursor::new(n.created_at, n.id.clone()));
        items.extend(
            fetched
                .into_iter()
                .filter(|n| sev.is_empty() || sev.contains(&n.severity.as_str())),
        );
        if exhausted || items.len() > limit {
            break;
        }
    }
    let (items, next) = page(items, limit, |n| {
        Cursor::new(n.created_at, n.id.clone()).to_string()
    });
    let unread = state.store.unread_notifications(&caller.tenant).await?;
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
    state
        .store
        .mark_notification_read(&caller.tenant, &id)
        .await?;
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
        assert!(Cursor::parse("17.abc-1").is_ok());
        assert!(Cursor::parse("17.abc' OR 1=1").is_err());
        assert!(Cursor::parse("x.abc").is_err());
        assert!(limit(Some(0)).is_err() && limit(Some(501)).is_err());
        assert!(rfc3339_ms("since", "2026-11-26T00:00:00Z").is_ok());
        assert!(rfc3339_ms("since", "yesterday").is_err());
    }
}
