//! HTTP receivers.
//!
//! - `body.rs`: reading a request body within its limit, gzip, content type.
//! - `logs.rs`: `POST /api/ingest/logs` (NDJSON or a JSON array).
//! - `hec.rs`: Splunk HEC (`/services/collector/...`).
//! - `bulk.rs`: Elasticsearch `_bulk` (`/api/ingest/_bulk`).
//! - `loki.rs`: Loki push (`/loki/api/v1/push`, JSON or snappy protobuf).
//! - `otlp.rs`: OpenTelemetry logs (`/v1/logs`, protobuf or JSON).
//! - `gelf.rs`: GELF over HTTP (`/gelf`, Graylog's GELF HTTP input).
//! - `scans.rs`: scan reports (nmap XML, JSON) and device inventories.
//!
//! Every route authenticates first — ingesting needs the `member` role or
//! higher: a viewer key reads, it does not add billable data — then checks
//! the tenant's rate limit, then reads its body within the route's limit
//! (gzip accepted everywhere). Inflating and parsing run on a blocking
//! thread, charging every record to the in-flight budget as it is built
//! ([`crate::batcher::Reservation`]).
//! [`error_response`] maps errors to statuses for the SecureNet-shaped
//! routes; HEC, bulk and Loki answer in their own protocol's shape.

mod body;
pub(crate) mod bulk;
mod gelf;
pub(crate) mod hec;
pub(crate) mod logs;
pub(crate) mod loki;
mod otlp;
mod scans;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, head, post};
use control::{MetaStore, Principal, RateLimits, Role};
use pipeline::BusProducer;
use schemas::api::RouteDoc;
use schemas::{LogRecord, TenantId};
use serde_json::json;
use tracing::{debug, error};

use crate::batcher::{Batcher, Reservation};
use crate::config::HttpIngestConfig;
use crate::error::Error;
use crate::metrics::IngestMetrics;

/// What the HTTP receivers share.
#[derive(Clone)]
pub struct IngestState {
    pub batcher: Batcher,
    pub store: Arc<MetaStore>,
    pub config: HttpIngestConfig,
    pub metrics: IngestMetrics,
    pub limits: Arc<RateLimits>,
    /// Scans and inventories are published directly (they are not batched
    /// with other requests: each report is its own set of envelopes).
    pub producer: Arc<dyn BusProducer>,
}

/// Error statuses of the SecureNet-shaped routes (and of the protocol
/// routes, in their own shape); 402 and 409 only where limits and scan ids
/// apply.
const ERRORS: &[u16] = &[400, 401, 402, 403, 409, 413, 415, 429, 503];
const PROTOCOL_ERRORS: &[u16] = &[400, 401, 403, 413, 415, 429, 503];
const JSON: &[&str] = &["application/json", "application/x-ndjson"];
const ANY: &[&str] = &["application/json", "text/plain"];

/// A member-authenticated JSON route answering 200 with SecureNet-shaped
/// errors; the table below changes what differs.
fn doc(
    method: schemas::api::Method,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        tag,
        role: Some(INGEST_ROLE.as_str()),
        consumes: JSON,
        success: 200,
        produces: "application/json",
        errors: ERRORS,
        error_shape: schemas::api::ErrorShape::SecureNet,
    }
}

/// The ingest routes: each one's documentation (for the OpenAPI document)
/// beside its handler, so the router and the document cannot disagree.
fn routes() -> Vec<(RouteDoc, MethodRouter<IngestState>)> {
    use schemas::api::ErrorShape::{Protocol, Text};
    use schemas::api::Method::{Get, Head, Post};
    let hec = |path, summary, consumes| RouteDoc {
        consumes,
        errors: PROTOCOL_ERRORS,
        error_shape: Protocol,
        ..doc(Post, path, summary, "hec")
    };
    // Public JSON answers (health and cluster info for clients' probes).
    let public = |method, path, summary, tag| RouteDoc {
        role: None,
        consumes: &[],
        errors: &[],
        error_shape: Protocol,
        ..doc(method, path, summary, tag)
    };
    let bulk = |path| RouteDoc {
        consumes: &["application/x-ndjson", "application/json"],
        errors: PROTOCOL_ERRORS,
        error_shape: Protocol,
        ..doc(
            Post,
            path,
            "Elasticsearch _bulk: index/create actions with their documents",
            "elasticsearch",
        )
    };
    let event = "Splunk HEC events (concatenated JSON objects)";
    let raw = "Splunk HEC raw lines (host, source, sourcetype, index from the query)";
    let health = "Splunk HEC health";
    let info = "Elasticsearch cluster info (for Beats, Logstash, Vector)";
    vec![
        (
            doc(
                Post,
                "/api/ingest/logs",
                "JSON log objects (NDJSON or an array)",
                "ingest",
            ),
            post(logs::ingest_logs),
        ),
        (
            RouteDoc {
                consumes: &["application/xml", "text/xml", "application/json"],
                success: 201,
                ..doc(
                    Post,
                    "/api/ingest/scans",
                    "a scan report (nmap XML or JSON)",
                    "ingest",
                )
            },
            post(scans::scans),
        ),
        (
            RouteDoc {
                consumes: &["application/json"],
                success: 201,
                ..doc(
                    Post,
                    "/api/ingest/devices",
                    "a device inventory (JSON)",
                    "ingest",
                )
            },
            post(scans::devices),
        ),
        (hec("/services/collector", event, ANY), post(hec::event)),
        (
            hec("/services/collector/event", event, ANY),
            post(hec::event),
        ),
        (
            hec("/services/collector/event/1.0", event, ANY),
            post(hec::event),
        ),
        (
            hec("/services/collector/raw", raw, &["text/plain"]),
            post(hec::raw),
        ),
        (
            hec("/services/collector/raw/1.0", raw, &["text/plain"]),
            post(hec::raw),
        ),
        (
            public(Get, "/services/collector/health", health, "hec"),
            get(hec::health),
        ),
        (
            public(Get, "/services/collector/health/1.0", health, "hec"),
            get(hec::health),
        ),
        (
            public(Get, "/api/ingest", info, "elasticsearch"),
            get(bulk::info),
        ),
        (
            public(Head, "/api/ingest", info, "elasticsearch"),
            head(bulk::info),
        ),
        (
            public(Get, "/api/ingest/", info, "elasticsearch"),
            get(bulk::info),
        ),
        (
            public(Head, "/api/ingest/", info, "elasticsearch"),
            head(bulk::info),
        ),
        (
            public(
                Get,
                "/api/ingest/_cluster/health",
                "Elasticsearch cluster health",
                "elasticsearch",
            ),
            get(bulk::cluster_health),
        ),
        (bulk("/api/ingest/_bulk"), post(bulk::bulk)),
        (bulk("/api/ingest/{index}/_bulk"), post(bulk::bulk_index)),
        (
            RouteDoc {
                success: 204,
                produces: "text/plain",
                errors: PROTOCOL_ERRORS,
                error_shape: Text,
                consumes: &["application/x-protobuf", "application/json"],
                ..doc(
                    Post,
                    "/loki/api/v1/push",
                    "Loki push (snappy protobuf or JSON streams)",
                    "loki",
                )
            },
            post(loki::push),
        ),
        (
            RouteDoc {
                success: 202,
                produces: "text/plain",
                errors: PROTOCOL_ERRORS,
                error_shape: Text,
                ..doc(
                    Post,
                    "/gelf",
                    "GELF messages (one, or one per line; plain, gzip or zlib)",
                    "gelf",
                )
            },
            post(gelf::gelf),
        ),
        (
            RouteDoc {
                consumes: &["application/x-protobuf", "application/json"],
                produces: "application/x-protobuf",
                errors: PROTOCOL_ERRORS,
                error_shape: schemas::api::ErrorShape::Otlp,
                ..doc(
                    Post,
                    "/v1/logs",
                    "OpenTelemetry logs (OTLP/HTTP, protobuf or JSON)",
                    "otlp",
                )
            },
            post(otlp::export),
        ),
    ]
}

/// The ingest routes.
pub fn router(state: IngestState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (doc, handler)| {
            router.route(doc.path, handler)
        })
        .with_state(state)
}

/// How the ingest routes are documented (the query API's OpenAPI document
/// lists them).
pub fn route_docs() -> Vec<RouteDoc> {
    routes().into_iter().map(|(doc, _)| doc).collect()
}

/// The role an ingest credential needs.
pub const INGEST_ROLE: Role = Role::Member;

/// Authenticates for ingest: a valid credential with the member role or
/// higher.
pub(crate) async fn authenticate(
    store: &MetaStore,
    headers: &HeaderMap,
) -> Result<Principal, Error> {
    let principal = match control::authenticate(store, headers).await {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, control::Error::InvalidCredentials)
                && let Some(presented) = control::auth::presented_key(headers)
            {
                store
                    .record_failed_authentication(presented, "POST", "ingest")
                    .await;
            }
            return Err(e.into());
        }
    };
    if principal.role < INGEST_ROLE {
        return Err(Error::Forbidden(format!(
            "ingesting needs the {INGEST_ROLE} role; this credential has {} (viewer keys read, they do not ingest)",
            principal.role
        )));
    }
    Ok(principal)
}

impl IngestState {
    /// Authenticate, rate-limit, read the body as sent: the start of every
    /// route.
    pub(crate) async fn begin(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<(Principal, body::Wire), Error> {
        let principal = authenticate(&self.store, headers).await?;
        self.limits
            .check(&principal.tenant)
            .map_err(Error::RateLimited)?;
        let wire = body::read_wire(headers, body, limit).await?;
        Ok((principal, wire))
    }

    /// Inflates and parses `wire` on a blocking thread; `parse` gets the
    /// body and a `charge` to call with every record it builds, which
    /// reserves the record's size in the in-flight budget (waiting for
    /// room up to the backpressure limit).
    pub(crate) async fn parse<T: Send + 'static>(
        &self,
        wire: body::Wire,
        parse: impl FnOnce(&[u8], &mut dyn FnMut(&LogRecord) -> Result<(), Error>) -> Result<T, Error>
        + Send
        + 'static,
    ) -> Result<(T, Reservation), Error> {
        self.build(wire, move |wire, charge| parse(&wire.decode()?, charge))
            .await
    }

    /// Builds records from `input` on a blocking thread, charging each to
    /// the in-flight budget as [`Self::parse`] does (for input that is
    /// already decoded, such as a gRPC message).
    pub(crate) async fn build<I: Send + 'static, T: Send + 'static>(
        &self,
        input: I,
        build: impl FnOnce(I, &mut dyn FnMut(&LogRecord) -> Result<(), Error>) -> Result<T, Error>
        + Send
        + 'static,
    ) -> Result<(T, Reservation), Error> {
        let mut reservation = self.batcher.reservation();
        tokio::task::spawn_blocking(move || {
            let built = build(input, &mut |r| reservation.charge(r))?;
            Ok((built, reservation))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("parsing task failed: {e}")))?
    }

    /// Stores `records` for `tenant` and counts them; resolves once durable.
    pub(crate) async fn store_records(
        &self,
        tenant: TenantId,
        input: &'static str,
        records: Vec<LogRecord>,
        rejected: usize,
        reservation: Reservation,
    ) -> Result<(), Error> {
        let metrics = &self.metrics;
        metrics
            .records
            .with_label_values(&[input, "rejected"])
            .inc_by(rejected as u64);
        let accepted = records.len() as u64;
        let bytes: u64 = records.iter().map(|r| r.bytes as u64).sum();
        self.batcher
            .submit_reserved(tenant, records, reservation)
            .await?;
        metrics
            .records
            .with_label_values(&[input, "accepted"])
            .inc_by(accepted);
        metrics.bytes.with_label_values(&[input]).inc_by(bytes);
        Ok(())
    }
}

/// Status, stable code and client-facing message of an error. 5xx details
/// are logged here and replaced by a generic message.
pub(crate) fn classify(err: &Error) -> (StatusCode, &'static str, String) {
    let (status, code) = match err {
        Error::Auth(e) => {
            let (status, code) = e.http_status();
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
            )
        }
        Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Error::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Error::UnsupportedContentType(_) | Error::UnsupportedEncoding(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        Error::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Error::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let message = if status.is_server_error() {
        // Backpressure is flow control, counted in metrics, not an error.
        if matches!(err, Error::Overloaded { .. }) {
            debug!(error = %err, "ingest request refused: pipeline saturated");
            err.to_string()
        } else {
            error!(error = %err, %status, "ingest request failed");
            match err {
                Error::Unavailable(_) | Error::Auth(_) => {
                    "records could not be stored right now; nothing was acknowledged, retry later"
                        .into()
                }
                _ => "internal error".into(),
            }
        }
    } else {
        err.to_string()
    };
    (status, code, message)
}

/// Adds `Retry-After` / `WWW-Authenticate` where the status calls for it.
pub(crate) fn with_retry_headers(mut response: Response, err: &Error) -> Response {
    if let Some(secs) = retry_after_secs(err) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"securenet\""),
        );
    }
    response
}

/// An error as plain text (the Loki and GELF routes answer so), with its
/// retry headers.
pub(crate) fn text_error(err: Error) -> Response {
    let (status, _, message) = classify(&err);
    with_retry_headers((status, format!("{message}\n")).into_response(), &err)
}

/// When a client should retry after an error, in seconds (none: it should
/// not retry the same request).
pub(crate) fn retry_after_secs(err: &Error) -> Option<u64> {
    match err {
        Error::Overloaded { retry_after_secs } => Some(*retry_after_secs),
        Error::RateLimited(limited) => Some(limited.retry_after_secs()),
        Error::Unavailable(_) | Error::Auth(control::Error::Store(_)) => Some(5),
        _ => None,
    }
}

/// Maps an ingest error to its status and a JSON body `{"error", "code"}`.
pub fn error_response(err: Error) -> Response {
    let (status, code, message) = classify(&err);
    let response = (status, Json(json!({ "error": message, "code": code }))).into_response();
    with_retry_headers(response, &err)
}
