//! `POST /api/ingest/scans` (nmap XML or the JSON report) and
//! `POST /api/ingest/devices` (device inventory JSON).
//!
//! Answers `201` with what was recorded once every envelope is durable;
//! `402` when the tenant's plan limit (devices, scans per month) would be
//! exceeded — the message names the limit, the current count and the plan —
//! in which case nothing is recorded.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use control::Organization;

use super::{IngestState, body, error_response};
use crate::error::Error;
use crate::scans::{nmap, publish, report};

async fn organization(
    state: &IngestState,
    tenant: &schemas::TenantId,
) -> Result<Organization, Error> {
    state
        .store
        .organization(tenant)?
        .ok_or_else(|| Error::Auth(control::Error::InvalidCredentials))
}

pub async fn scans(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    match handle_scan(&state, &headers, body).await {
        Ok(summary) => (StatusCode::CREATED, Json(summary)).into_response(),
        Err(e) => error_response(e),
    }
}

async fn handle_scan(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<publish::ScanSummary, Error> {
    let media = body::media_type(headers);
    let xml = match media.as_str() {
        "application/xml" | "text/xml" => true,
        "application/json" => false,
        _ => {
            control::authenticate(&state.store, headers)?;
            return Err(Error::UnsupportedContentType(format!(
                "{media} (send nmap XML as application/xml or a JSON report as application/json)"
            )));
        }
    };
    let (principal, bytes) = state
        .begin(headers, body, state.config.max_scan_body_bytes)
        .await?;
    let report = if xml {
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::BadRequest(format!(
                "nmap XML is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        nmap::parse(text).map_err(Error::BadRequest)?
    } else {
        report::parse_report(&bytes).map_err(Error::BadRequest)?
    };
    let org = organization(state, &principal.tenant).await?;
    let source = if xml { "nmap" } else { "report" };
    let summary = publish::publish_scan(
        report,
        &bytes,
        org,
        state.store.clone(),
        state.producer.as_ref(),
        Utc::now().timestamp_millis(),
        source,
    )
    .await?;
    let m = &state.metrics;
    m.records.with_label_values(&["scans", "accepted"]).inc();
    m.records
        .with_label_values(&["devices", "accepted"])
        .inc_by(summary.devices as u64);
    m.records
        .with_label_values(&["findings", "accepted"])
        .inc_by(summary.findings as u64);
    Ok(summary)
}

pub async fn devices(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    match handle_devices(&state, &headers, body).await {
        Ok(summary) => (StatusCode::CREATED, Json(summary)).into_response(),
        Err(e) => error_response(e),
    }
}

async fn handle_devices(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<publish::InventorySummary, Error> {
    let media = body::media_type(headers);
    if media != "application/json" {
        control::authenticate(&state.store, headers)?;
        return Err(Error::UnsupportedContentType(format!(
            "{media} (send application/json)"
        )));
    }
    let (principal, bytes) = state
        .begin(headers, body, state.config.max_body_bytes)
        .await?;
    let observations = report::parse_inventory(&bytes).map_err(Error::BadRequest)?;
    if observations.is_empty() {
        return Err(Error::BadRequest("the inventory lists no devices".into()));
    }
    let org = organization(state, &principal.tenant).await?;
    let summary = publish::publish_inventory(
        observations,
        org,
        state.store.clone(),
        state.producer.as_ref(),
        Utc::now().timestamp_millis(),
    )
    .await?;
    state
        .metrics
        .records
        .with_label_values(&["devices", "accepted"])
        .inc_by(summary.devices as u64);
    Ok(summary)
}
