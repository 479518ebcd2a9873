//! API errors and their one mapping to HTTP statuses. 4xx messages say what
//! was wrong and how to fix it; 5xx details are logged, never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;
use serde_json::json;
use tracing::error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] control::Error),

    #[error("{0}")]
    Forbidden(String),

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    BadRequest(String),

    #[error("{0}")]
    UnsupportedMediaType(String),

    #[error("{0}")]
    MethodNotAllowed(String),

    #[error("request body is over this route's limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },

    #[error(
        "query exceeded the time limit of {limit_ms} ms; narrow it (e.g. filter on date or ts)"
    )]
    QueryTimeout { limit_ms: u64 },

    #[error("query exceeded its resource limits: {0}; narrow it (e.g. filter on date or ts)")]
    ResourcesExhausted(String),

    #[error("too many requests for this organization; retry in {} s", .0.retry_after_secs())]
    RateLimited(control::Limited),

    /// A bounded shared resource (query slots, training) is taken: retry.
    #[error("{0}")]
    TooBusy(String),

    /// The request conflicts with what exists (a per-organization cap
    /// reached, …).
    #[error("{0}")]
    Conflict(String),

    #[error("service unavailable: {0}")]
    Unavailable(String),

    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Bad ids and plan names in a request are the caller's (400).
impl From<schemas::Error> for ApiError {
    fn from(e: schemas::Error) -> Self {
        ApiError::Auth(control::Error::Schema(e))
    }
}

impl ApiError {
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(e) => {
                let (status, code) = e.http_status();
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    code,
                )
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::QueryTimeout { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "query_timeout"),
            ApiError::ResourcesExhausted(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "resources_exhausted")
            }
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooBusy(_) => (StatusCode::TOO_MANY_REQUESTS, "too_busy"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A body that could not be read: over `limit` (413), or broken (400).
    pub fn from_body(e: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(format!("failed to read the request body: {e}"))
        }
    }

    /// Classifies a DataFusion error: planning and SQL errors are the
    /// caller's, resource limits are theirs to narrow, the rest is ours.
    pub fn from_datafusion(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => ApiError::BadRequest(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(msg) => ApiError::ResourcesExhausted(msg.clone()),
            // Casts and arithmetic on the caller's data fail at execution time.
            DataFusionError::ArrowError(err, _)
                if matches!(
                    **err,
                    arrow::error::ArrowError::CastError(_)
                        | arrow::error::ArrowError::ComputeError(_)
                        | arrow::error::ArrowError::DivideByZero
                        | arrow::error::ArrowError::ArithmeticOverflow(_)
                        | arrow::error::ArrowError::InvalidArgumentError(_)
                ) =>
            {
                ApiError::BadRequest(e.strip_backtrace())
            }
            DataFusionError::Execution(_) => ApiError::BadRequest(e.strip_backtrace()),
            _ => ApiError::Internal(e.strip_backtrace()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let message = if status.is_server_error() {
            error!(error = %self, %status, "request failed");
            match &self {
                ApiError::Unavailable(_) | ApiError::Auth(_) => {
                    "service temporarily unavailable; retry later".to_string()
                }
                _ => "internal error".to_string(),
            }
        } else {
            self.to_string()
        };
        let retry_after = match &self {
            ApiError::RateLimited(l) => Some(l.retry_after_secs()),
            ApiError::TooBusy(_) => Some(1),
            _ => None,
        };
        let mut body = json!({ "error": message, "code": code });
        if let ApiError::Auth(control::Error::NotInPlan { feature, plan }) = &self {
            body["feature"] = json!(feature);
            body["plan"] = json!(plan);
            body["required_plan"] = json!(feature.lowest_plan());
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        match status {
            StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"securenet\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// The request's media type, lower-cased, without parameters (`""` if
/// absent).
pub fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}
