//! Data listings: `GET /api/logs`, `/api/devices`, `/api/scans`,
//! `/api/findings` — newest first, cursor-paginated, filtered, over the
//! caller's tables (the same DataFusion session as `POST /api/sql`).
//!
//! Log rows have no id of their own, so the cursor is the position after
//! the last row: `<ts ms>.<batch id>.<rows of that (ts, batch) already
//! returned>`. Rows are ordered by `ts DESC, batch_id DESC` and then by
//! their content, so a page boundary inside a group of equal `(ts, batch)`
//! rows resumes exactly after it — no row is skipped or repeated while the
//! data does not change, and rows arriving later land in their place.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::{Cursor, limit, rfc3339_ms, to_json_rows};
use crate::sql::Bound;
use crate::state::AppState;

/// A listable table: its columns, the filters it takes (query parameter →
/// column, and whether the column is numeric) and the tie-break order.
struct Listing {
    table: &'static str,
    columns: &'static str,
    filters: &'static [(&'static str, &'static str, bool)],
    tie_break: &'static str,
}

const LOGS: Listing = Listing {
    table: "logs",
    columns: "ts, received_at, batch_id, host, app, pid, severity, facility, msg_id, message, \
              source_ip, structured_data, parse_status, input, bytes, source_country, source_asn, \
              source_as_org",
    filters: &[
        ("host", "host", false),
        ("app", "app", false),
        ("severity", "severity", false),
        ("source_ip", "source_ip", false),
        ("source_country", "source_country", false),
        ("input", "input", false),
        ("parse_status", "parse_status", false),
    ],
    tie_break: "message, host, app, raw",
};

const DEVICES: Listing = Listing {
    table: "devices",
    columns: "ts, received_at, batch_id, device_id, ip, mac, hostname, os, vendor, first_seen, \
              last_seen, source",
    filters: &[
        ("device_id", "device_id", false),
        ("ip", "ip", false),
        ("mac", "mac", false),
        ("hostname", "hostname", false),
    ],
    tie_break: "device_id, ip",
};

const SCANS: Listing = Listing {
    table: "scans",
    columns: "ts, received_at, batch_id, scan_id, target, scanner, started, finished, hosts_up, \
              hosts_total, status",
    filters: &[
        ("scan_id", "scan_id", false),
        ("status", "status", false),
        ("scanner", "scanner", false),
    ],
    tie_break: "scan_id",
};

const FINDINGS: Listing = Listing {
    table: "findings",
    columns: "ts, received_at, batch_id, finding_id, scan_id, device_id, ip, port, protocol, \
              service, product, severity, cvss, title, cve",
    filters: &[
        ("severity", "severity", false),
        ("ip", "ip", false),
        ("port", "port", true),
        ("scan_id", "scan_id", false),
        ("device_id", "device_id", false),
        ("cve", "cve", false),
    ],
    tie_break: "finding_id",
};

/// A listing's query parameters for the OpenAPI document, from the same
/// definition `list` reads them by.
fn listing_params(listing: &Listing) -> Vec<utoipa::openapi::path::Parameter> {
    use crate::openapi::query_param;
    let mut out = vec![
        query_param("since", "string"),
        query_param("until", "string"),
        query_param("limit", "integer"),
        query_param("cursor", "string"),
    ];
    for (name, _, numeric) in listing.filters {
        out.push(query_param(
            name,
            if *numeric { "integer" } else { "string" },
        ));
    }
    if listing.table == "logs" {
        out.push(query_param("q", "string"));
    }
    out
}

pub fn logs_params() -> Vec<utoipa::openapi::path::Parameter> {
    listing_params(&LOGS)
}

pub fn devices_params() -> Vec<utoipa::openapi::path::Parameter> {
    listing_params(&DEVICES)
}

pub fn scans_params() -> Vec<utoipa::openapi::path::Parameter> {
    listing_params(&SCANS)
}

pub fn findings_params() -> Vec<utoipa::openapi::path::Parameter> {
    listing_params(&FINDINGS)
}

async fn list(
    state: &AppState,
    caller: &control::Principal,
    listing: &Listing,
    params: BTreeMap<String, String>,
) -> Result<Value> {
    let mut query = Bound::default();
    let mut filters = vec!["1 = 1".to_string()];
    let mut limit_param = None;
    let mut cursor = None;
    for (k, v) in &params {
        match k.as_str() {
            "limit" => {
                limit_param =
                    Some(v.parse::<usize>().map_err(|_| {
                        ApiError::BadRequest(format!("limit {v:?} is not a number"))
                    })?);
            }
            "cursor" => cursor = Some(Cursor::parse(v)?),
            "since" => filters.push(format!(
                "CAST(ts AS BIGINT) >= {}",
                query.bind(rfc3339_ms("since", v)?)
            )),
            "until" => filters.push(format!(
                "CAST(ts AS BIGINT) < {}",
                query.bind(rfc3339_ms("until", v)?)
            )),
            "q" if listing.table == "logs" => {
                if v.len() > 256 {
                    return Err(ApiError::BadRequest("q is longer than 256 bytes".into()));
                }
                // strpos, not LIKE: no wildcard escaping to get wrong.
                filters.push(format!("strpos(message, {}) > 0", query.bind(v.as_str())));
            }
            other => {
                let Some((_, column, numeric)) =
                    listing.filters.iter().find(|(name, _, _)| *name == other)
                else {
                    let known: Vec<&str> = listing.filters.iter().map(|f| f.0).collect();
                    return Err(ApiError::BadRequest(format!(
                        "unknown parameter {other:?}; {} takes limit, cursor, since, until{}, {}",
                        listing.table,
                        if listing.table == "logs" { ", q" } else { "" },
                        known.join(", ")
                    )));
                };
                if v.len() > 256 {
                    return Err(ApiError::BadRequest(format!(
                        "{other} is longer than 256 bytes"
                    )));
                }
                let value = if *numeric {
                    query.bind(v.parse::<i64>().map_err(|_| {
                        ApiError::BadRequest(format!("{other} {v:?} is not a number"))
                    })?)
                } else {
                    query.bind(v.as_str())
                };
                filters.push(format!("{column} = {value}"));
            }
        }
    }
    let limit = limit(limit_param)?;
    let skip = cursor.as_ref().map_or(0, |c| c.skip);
    if let Some(c) = &cursor {
        filters.push(format!(
            "(CAST(ts AS BIGINT) < {ms} OR (CAST(ts AS BIGINT) = {ms} AND batch_id <= {b}))",
            ms = query.bind(c.at_ms),
            b = query.bind(c.id.as_str())
        ));
    }
    query.sql = format!(
        "SELECT CAST(ts AS BIGINT) AS ts_ms, {} FROM {} WHERE {} \
         ORDER BY ts DESC, batch_id DESC, {} LIMIT {}",
        listing.columns,
        listing.table,
        filters.join(" AND "),
        listing.tie_break,
        skip + limit + 1
    );
    let result = state.sql.execute_bound(&caller.tenant, &query).await?;
    let mut rows = to_json_rows(&result.batches)?;
    // The first `skip` rows were on the previous page (same ts and batch).
    let rows_after: Vec<Value> = rows.drain(..).skip(skip).collect();
    let more = rows_after.len() > limit;
    let mut rows = rows_after;
    rows.truncate(limit);
    let next = match (more, rows.last()) {
        (true, Some(last)) => {
            let ts = last["ts_ms"].as_i64().unwrap_or_default();
            let batch = last["batch_id"].as_str().unwrap_or_default().to_string();
            let mut same = rows
                .iter()
                .rev()
                .take_while(|r| {
                    r["ts_ms"].as_i64() == Some(ts) && r["batch_id"].as_str() == Some(&batch)
                })
                .count();
            // The whole page in the previous page's group: count those too.
            if let Some(c) = &cursor
                && same == rows.len()
                && c.at_ms == ts
                && c.id == batch
            {
                same += c.skip;
            }
            Some(Cursor::new(ts, batch).with_skip(same).to_string())
        }
        _ => None,
    };
    for r in &mut rows {
        if let Some(obj) = r.as_object_mut() {
            obj.remove("ts_ms");
        }
    }
    Ok(json!({ listing.table: rows, "next_cursor": next }))
}

type Params = crate::extract::QueryParams<BTreeMap<String, String>>;

fn params(p: Params) -> Result<BTreeMap<String, String>> {
    Ok(p.0)
}

/// `GET /api/logs`
pub async fn logs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    p: Params,
) -> Result<Json<Value>> {
    Ok(Json(list(&state, &caller, &LOGS, params(p)?).await?))
}

/// `GET /api/devices`
pub async fn devices(
    State(state): State<AppState>,
    Caller(caller): Caller,
    p: Params,
) -> Result<Json<Value>> {
    Ok(Json(list(&state, &caller, &DEVICES, params(p)?).await?))
}

/// `GET /api/scans`
pub async fn scans(
    State(state): State<AppState>,
    Caller(caller): Caller,
    p: Params,
) -> Result<Json<Value>> {
    Ok(Json(list(&state, &caller, &SCANS, params(p)?).await?))
}

/// `GET /api/findings`
pub async fn findings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    p: Params,
) -> Result<Json<Value>> {
    Ok(Json(list(&state, &caller, &FINDINGS, params(p)?).await?))
}

/// `DELETE /api/devices/{id}` (admin) — retires a device.
pub async fn retire_device(
    State(state): State<AppState>,
    Caller(caller): Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::http::StatusCode> {
    state
        .store
        .retire_device(&caller.tenant, &id, schemas::time::now_ms())
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
