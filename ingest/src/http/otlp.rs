//! OTLP/HTTP logs: `POST /v1/logs`, the path every OpenTelemetry SDK and the
//! Collector's `otlphttp` exporter append to their endpoint.
//!
//! Bodies are `application/x-protobuf` or `application/json` (OTLP/JSON),
//! optionally gzip; the answer is in the same encoding: 200 with an
//! `ExportLogsServiceResponse` (its `partial_success` counts and names the
//! refused records — the rest are stored), or an error status with a
//! `google.rpc.Status` body. 429 and 503 carry `Retry-After`, which the
//! SDKs honour when they retry. The mapping is in [`crate::otlp`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use serde_json::{Value, json};

use super::{IngestState, classify, with_retry_headers};
use crate::error::Error;

/// `google.rpc.Status`, the body of OTLP/HTTP error answers.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Self, Error> {
        match super::body::media_type(headers).as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            other => Err(Error::UnsupportedContentType(format!(
                "{other} (OTLP/HTTP bodies are application/x-protobuf or application/json)"
            ))),
        }
    }

    /// An answer: `protobuf` is the message, `json` its proto3 JSON form.
    fn answer(self, status: StatusCode, protobuf: &impl prost::Message, json: Value) -> Response {
        let (media, body) = match self {
            Encoding::Protobuf => ("application/x-protobuf", protobuf.encode_to_vec()),
            Encoding::Json => ("application/json", json.to_string().into_bytes()),
        };
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
        response
    }
}

/// The proto3 JSON form of an export answer: fields left at their defaults
/// are omitted and int64 is a string, as protobuf's JSON mapping says
/// (the generated serde form writes `null` and numbers).
fn response_json(response: &ExportLogsServiceResponse) -> Value {
    match &response.partial_success {
        Some(partial) => json!({"partialSuccess": {
            "rejectedLogRecords": partial.rejected_log_records.to_string(),
            "errorMessage": partial.error_message,
        }}),
        None => json!({}),
    }
}

fn otlp_error(encoding: Encoding, err: Error) -> Response {
    let (status, _, message) = classify(&err);
    let code = crate::otlp::grpc_code(status) as i32;
    let json = json!({"code": code, "message": message});
    let body = RpcStatus { code, message };
    with_retry_headers(encoding.answer(status, &body, json), &err)
}

pub async fn export(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let encoding = match Encoding::of(&headers) {
        Ok(e) => e,
        Err(e) => {
            let json = super::body::media_type(&headers).contains("json");
            return otlp_error(
                if json {
                    Encoding::Json
                } else {
                    Encoding::Protobuf
                },
                e,
            );
        }
    };
    let (principal, wire) = match state
        .begin(&headers, body, state.config.max_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => return otlp_error(encoding, e),
    };
    let now = schemas::time::now_ms();
    let tenant = principal.tenant.clone();
    let max_record = state.config.max_record_bytes;
    let json = matches!(encoding, Encoding::Json);
    let parsed = state
        .parse(wire, move |bytes, charge| {
            let request = crate::otlp::decode(bytes, json)?;
            crate::otlp::map_request(request, &tenant, now, max_record, charge)
        })
        .await;
    let (mapped, reservation) = match parsed {
        Ok(p) => p,
        Err(e) => return otlp_error(encoding, e),
    };
    let response = mapped.response();
    let rejected = mapped.rejected.len();
    if (!mapped.records.is_empty() || rejected > 0)
        && let Err(e) = state
            .store_records(
                principal.tenant,
                "otlp_http",
                mapped.records,
                rejected,
                reservation,
            )
            .await
    {
        return otlp_error(encoding, e);
    }
    encoding.answer(StatusCode::OK, &response, response_json(&response))
}
