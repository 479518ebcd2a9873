/// Ingest errors. Each maps to exactly one HTTP status in
/// [`crate::http::error_response`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Control-plane errors (credentials, plan limits, conflicts, the
    /// store), answered as `control::Error::http_status` says, like the
    /// query API does.
    #[error(transparent)]
    Auth(#[from] control::Error),

    #[error("request body is {size} bytes, over this route's limit of {limit} bytes")]
    PayloadTooLarge { size: u64, limit: usize },

    #[error("unsupported content type {0:?}: send application/x-ndjson or application/json")]
    UnsupportedContentType(String),

    #[error("unsupported content encoding {0:?}: send gzip or no Content-Encoding")]
    UnsupportedEncoding(String),

    #[error("{0}")]
    BadRequest(String),

    #[error("{0}")]
    Forbidden(String),

    /// Too many items in one request (devices in an inventory…).
    #[error("{0}")]
    TooLarge(String),

    #[error("rate limit of {} requests/s for this organization exceeded; retry after {}s", .0.per_sec, .0.retry_after_secs())]
    RateLimited(control::Limited),

    #[error("the pipeline is saturated; retry after {retry_after_secs}s")]
    Overloaded { retry_after_secs: u64 },

    #[error("records could not be stored: {0}")]
    Unavailable(String),

    #[error("invalid configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
