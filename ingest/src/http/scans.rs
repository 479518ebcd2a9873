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
        .organization(tenant)
        .await?
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
            super::authenticate(&state.store, headers).await?;
            return Err(Error::UnsupportedContentType(format!(
                "{media} (send nmap XML as application/xml or a JSON report as application/json)"
            )));
        }
    };
    let (principal, wire) = state
        .begin(headers, body, state.config.max_scan_body_bytes)
        .await?;
    let max_devices = state.config.max_devices_per_request;
    // Inflating and parsing XML is CPU work: off the async workers.
    let (report, bytes) = blocking(move || {
        let bytes = wire.decode()?;
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
        too_many(report.hosts.len(), max_devices, "hosts")?;
        Ok((report, bytes))
    })
    .await?;
    let org = organization(state, &principal.tenant).await?;
    let source = if xml { "nmap" } else { "report" };
    let summary = publish::publish_scan(
        report,
        &bytes,
        org,
        state.store.clone(),
        state.producer.as_ref(),
        schemas::time::now_ms(),
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
        super::authenticate(&state.store, headers).await?;
        return Err(Error::UnsupportedContentType(format!(
            "{media} (send application/json)"
        )));
    }
    let (principal, wire) = state
        .begin(headers, body, state.config.max_body_bytes)
        .await?;
    let max_devices = state.config.max_devices_per_request;
    let observations = blocking(move || {
        let bytes = wire.decode()?;
        let observations = report::parse_inventory(&bytes).map_err(Error::BadRequest)?;
        too_many(observations.len(), max_devices, "devices")?;
        Ok(observations)
    })
    .await?;
    if observations.is_empty() {
        return Err(Error::BadRequest("the inventory lists no devices".into()));
    }
    let org = organization(state, &principal.tenant).await?;
    let summary = publish::publish_inventory(
        observations,
        org,
        state.store.clone(),
        state.producer.as_ref(),
        schemas::time::now_ms(),
    )
    .await?;
    state
        .metrics
        .records
        .with_label_values(&["devices", "accepted"])
        .inc_by(summary.devices as u64);
    Ok(summary)
}

/// Runs CPU work (inflating, parsing) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("parsing task failed: {e}")))?
}

/// One request carries at most `max` devices (or hosts): the work of an
/// upsert is bounded per request.
fn too_many(n: usize, max: usize, what: &str) -> Result<(), Error> {
    if n > max {
        return Err(Error::TooLarge(format!(
            "the request carries {n} {what}, over the limit of {max} per request \
             (ingest.http.max_devices_per_request); send them in several requests"
        )));
    }
    Ok(())
}
