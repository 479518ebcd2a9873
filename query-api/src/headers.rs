//! Security headers on every response (../shared/API.md).
//!
//! `X-XSS-Protection: 0`: the XSS auditor of old browsers is itself an
//! attack vector and modern ones ignore it; OWASP recommends disabling it
//! explicitly and relying on the Content-Security-Policy instead.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

const HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("content-security-policy", "default-src 'self'"),
    ("x-xss-protection", "0"),
    ("referrer-policy", "no-referrer"),
];

/// Middleware: `router.layer(axum::middleware::from_fn(security_headers))`.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        // A page that needs its own policy (Swagger UI) sets it; every
        // other header is the same everywhere.
        headers
            .entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    response
}
