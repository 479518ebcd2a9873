//! HTTP receivers.
//!
//! - `body.rs`: reading a request body within its limit, gzip, content type.
//! - `logs.rs`: `POST /api/ingest/logs` (NDJSON or a JSON array).
//!
//! Every answer is JSON. [`error_response`] is the one place an ingest error
//! becomes a status code.

mod body;
mod logs;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use control::MetaStore;
use serde_json::json;
use tracing::{debug, error};

use crate::batcher::Batcher;
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
}

/// The ingest routes.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/api/ingest/logs", post(logs::ingest_logs))
        .with_state(state)
}

/// Maps an ingest error to its status and a JSON body `{"error", "code"}`.
pub fn error_response(err: Error) -> Response {
    let (status, code) = match &err {
        Error::Auth(control::Error::MissingCredentials | control::Error::InvalidCredentials) => {
            (StatusCode::UNAUTHORIZED, "unauthorized")
        }
        Error::Auth(control::Error::Store(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "metadata_unavailable")
        }
        Error::Auth(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
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
        // Log the detail; never leak internals to the caller. Backpressure
        // is flow control, counted in metrics, not an error.
        if matches!(err, Error::Overloaded { .. }) {
            debug!(error = %err, "ingest request refused: pipeline saturated");
        } else {
            error!(error = %err, %status, "ingest request failed");
        }
        match &err {
            Error::Overloaded { .. } => err.to_string(),
            Error::Unavailable(_) | Error::Auth(_) => {
                "records could not be stored right now; nothing was acknowledged, retry later"
                    .into()
            }
            _ => "internal error".into(),
        }
    } else {
        err.to_string()
    };
    let mut response = (status, Json(json!({ "error": message, "code": code }))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let secs = match err {
            Error::Overloaded { retry_after_secs } => retry_after_secs,
            _ => 5,
        };
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"securenet\""),
        );
    }
    response
}
