//! How an HTTP route is documented when it is served outside the query API
//! (the ingest receivers): plain data, so `ingest` can describe its routes
//! and `query-api` can put them in the one OpenAPI document without either
//! crate importing the other (the binary hands one to the other).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
}

/// The shape of a route's error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// SecureNet's `{"error", "code"}`.
    SecureNet,
    /// The emulated protocol's own (Splunk HEC, Elasticsearch): a JSON
    /// object its clients read.
    Protocol,
    /// Plain text (Loki's push API).
    Text,
    /// OTLP/HTTP: answers (a `google.rpc.Status` for errors) in the
    /// request's encoding, protobuf or JSON.
    Otlp,
}

#[derive(Debug, Clone)]
pub struct RouteDoc {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    /// The OpenAPI tag (group) it is listed under.
    pub tag: &'static str,
    /// The least role a credential needs; `None`: public.
    pub role: Option<&'static str>,
    /// Request media types; empty when the route takes no body.
    pub consumes: &'static [&'static str],
    /// The success status and its media type.
    pub success: u16,
    pub produces: &'static str,
    /// Error statuses it answers besides the success status.
    pub errors: &'static [u16],
    pub error_shape: ErrorShape,
}
