//! Splunk HTTP Event Collector: `/services/collector/event` (JSON events,
//! single or concatenated), `/services/collector/raw` (one event per line)
//! and `/services/collector/health`.
//!
//! Answers use HEC's shape and codes (`{"text": "Success", "code": 0}`), so
//! Splunk forwarders, Vector's and Fluent Bit's `splunk` outputs and the
//! Splunk logging libraries work unchanged. As everywhere in SecureNet, an
//! invalid event does not keep the valid events of the same request from
//! being stored; the answer then is HEC's 400 naming the first invalid event
//! (`invalid-event-number`), which HEC clients do not retry — so nothing is
//! stored twice.
//!
//! Mapping: `time` (epoch seconds) → `ts`; `host` → `host`; `event` — a
//! string is the message, an object is read like a JSON log object;
//! `source`, `sourcetype`, `index` and every entry of `fields` →
//! `structured_data`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{IngestState, classify, with_retry_headers};
use crate::error::Error;

/// HEC status codes (Splunk's documented table).
mod code {
    pub const SUCCESS: u16 = 0;
    pub const TOKEN_REQUIRED: u16 = 2;
    pub const INVALID_AUTHORIZATION: u16 = 3;
    pub const INVALID_TOKEN: u16 = 4;
    pub const NO_DATA: u16 = 5;
    pub const INVALID_DATA_FORMAT: u16 = 6;
    pub const INTERNAL_ERROR: u16 = 8;
    pub const SERVER_BUSY: u16 = 9;
    pub const EVENT_REQUIRED: u16 = 12;
    pub const EVENT_BLANK: u16 = 13;
    pub const HEALTHY: u16 = 17;
}

fn answer(status: StatusCode, text: &str, code: u16) -> Response {
    (status, Json(json!({ "text": text, "code": code }))).into_response()
}

/// Errors in HEC's shape.
fn hec_error(err: Error, headers: &HeaderMap) -> Response {
    let (status, _, message) = classify(&err);
    let (status, code) = match &err {
        Error::Auth(control::Error::MissingCredentials) => {
            if headers.contains_key(axum::http::header::AUTHORIZATION) {
                (StatusCode::UNAUTHORIZED, code::INVALID_AUTHORIZATION)
            } else {
                (StatusCode::UNAUTHORIZED, code::TOKEN_REQUIRED)
            }
        }
        Error::Auth(control::Error::InvalidCredentials) => {
            (StatusCode::FORBIDDEN, code::INVALID_TOKEN)
        }
        Error::Overloaded { .. } | Error::RateLimited(_) => (status, code::SERVER_BUSY),
        _ if status.is_server_error() => (status, code::INTERNAL_ERROR),
        _ => (status, code::INVALID_DATA_FORMAT),
    };
    let text = match code {
        code::TOKEN_REQUIRED => "Token is required".to_string(),
        code::INVALID_AUTHORIZATION => "Invalid authorization".to_string(),
        code::INVALID_TOKEN => "Invalid token".to_string(),
        code::SERVER_BUSY => format!("Server is busy: {message}"),
        _ => message,
    };
    with_retry_headers(answer(status, &text, code), &err)
}

/// Why one HEC event was not stored, in HEC's words and codes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidEvent {
    #[error("event is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("Invalid data format: an event must be a JSON object")]
    NotAnObject,
    #[error("Event field is required")]
    EventRequired,
    #[error("Event field cannot be blank")]
    EventBlank,
    #[error("Invalid data format: time {0} is not epoch seconds")]
    BadTime(Value),
    /// The rest of the body cannot be split into events.
    #[error("Invalid data format: {0}")]
    Unsplittable(serde_json::Error),
    #[error("Invalid data format: {0}")]
    Record(#[from] crate::json::RecordError),
}

impl InvalidEvent {
    /// HEC's status code for it.
    fn code(&self) -> u16 {
        match self {
            Self::EventRequired => code::EVENT_REQUIRED,
            Self::EventBlank => code::EVENT_BLANK,
            _ => code::INVALID_DATA_FORMAT,
        }
    }
}

type Invalid = Option<(usize, InvalidEvent)>;

/// Concatenated HEC event objects → records (each charged as built), the
/// first invalid event and how many were rejected.
pub(crate) fn parse_events(
    bytes: &[u8],
    tenant: &schemas::TenantId,
    now: i64,
    max_record: usize,
    charge: &mut dyn FnMut(&schemas::LogRecord) -> Result<(), Error>,
) -> Result<(Vec<schemas::LogRecord>, Invalid, usize), Error> {
    let mut records = Vec::new();
    let mut first_invalid: Invalid = None;
    let mut rejected = 0;
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<&RawValue>();
    let mut index = 0;
    loop {
        let item = match stream.next() {
            None => break,
            Some(Ok(raw)) => raw,
            Some(Err(e)) => {
                // The rest of the body cannot be split into events.
                rejected += 1;
                first_invalid.get_or_insert((index, InvalidEvent::Unsplittable(e)));
                break;
            }
        };
        match event_record(item.get(), tenant, now, max_record) {
            Ok(r) => {
                charge(&r)?;
                records.push(r);
            }
            Err(invalid) => {
                rejected += 1;
                first_invalid.get_or_insert((index, invalid));
            }
        }
        index += 1;
    }
    Ok((records, first_invalid, rejected))
}

#[derive(Debug, Default, Deserialize)]
pub struct RawParams {
    host: Option<String>,
    source: Option<String>,
    sourcetype: Option<String>,
    index: Option<String>,
}

/// `POST /services/collector/event`
pub async fn event(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let (principal, wire) = match state
        .begin(&headers, body, state.config.max_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => return hec_error(e, &headers),
    };
    let now = schemas::time::now_ms();
    let tenant = principal.tenant.clone();
    let max_record = state.config.max_record_bytes;
    let parsed = state
        .parse(wire, move |bytes, charge| {
            parse_events(bytes, &tenant, now, max_record, charge)
        })
        .await;
    let ((records, first_invalid, rejected), reservation) = match parsed {
        Ok(p) => p,
        Err(e) => return hec_error(e, &headers),
    };
    if records.is_empty() && first_invalid.is_none() {
        return answer(StatusCode::BAD_REQUEST, "No data", code::NO_DATA);
    }
    if let Err(e) = state
        .store_records(principal.tenant, "hec", records, rejected, reservation)
        .await
    {
        return hec_error(e, &headers);
    }
    match first_invalid {
        None => answer(StatusCode::OK, "Success", code::SUCCESS),
        Some((index, invalid)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "text": invalid.to_string(),
                "code": invalid.code(),
                "invalid-event-number": index,
            })),
        )
            .into_response(),
    }
}

/// One HEC event → a record.
fn event_record(
    text: &str,
    tenant: &schemas::TenantId,
    now_ms: i64,
    max_record: usize,
) -> Result<schemas::LogRecord, InvalidEvent> {
    if text.len() > max_record {
        return Err(InvalidEvent::TooLarge {
            size: text.len(),
            limit: max_record,
        });
    }
    let Ok(Value::Object(mut envelope)) = serde_json::from_str::<Value>(text) else {
        return Err(InvalidEvent::NotAnObject);
    };
    let event = match envelope.remove("event") {
        None | Some(Value::Null) => return Err(InvalidEvent::EventRequired),
        Some(Value::String(s)) if s.is_empty() => return Err(InvalidEvent::EventBlank),
        Some(e) => e,
    };
    let mut object = match event {
        Value::Object(o) => o,
        Value::String(s) => Map::from_iter([("message".to_string(), Value::String(s))]),
        other => Map::from_iter([("message".to_string(), Value::String(other.to_string()))]),
    };
    if let Some(time) = envelope.remove("time") {
        // HEC time is epoch seconds, as a number or a numeric string.
        let seconds = match &time {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse::<f64>().ok(),
            _ => None,
        };
        match seconds {
            Some(s) => {
                object.insert("ts".into(), json!((s * 1000.0).round() as i64));
            }
            None => return Err(InvalidEvent::BadTime(time)),
        }
    }
    if let Some(host) = envelope.remove("host") {
        object.entry("host").or_insert(host);
    }
    if let Some(Value::Object(fields)) = envelope.remove("fields") {
        for (k, v) in fields {
            object.entry(k).or_insert(v);
        }
    }
    for key in ["source", "sourcetype", "index"] {
        if let Some(v) = envelope.remove(key) {
            object.entry(key).or_insert(v);
        }
    }
    let mut record = crate::json::to_record(&Value::Object(object), tenant, now_ms, "hec")?;
    record.bytes = u32::try_from(text.len()).unwrap_or(u32::MAX);
    Ok(record)
}

/// `POST /services/collector/raw`: each line of the body is one event;
/// `host`, `source`, `sourcetype` and `index` come from the query string.
pub async fn raw(
    State(state): State<IngestState>,
    Query(params): Query<RawParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (principal, wire) = match state
        .begin(&headers, body, state.config.max_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => return hec_error(e, &headers),
    };
    let now = schemas::time::now_ms();
    let extra: Vec<(&str, &str)> = [
        ("source", params.source.as_deref()),
        ("sourcetype", params.sourcetype.as_deref()),
        ("index", params.index.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let structured = (!extra.is_empty()).then(|| {
        Value::Object(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(*v)))
                .collect(),
        )
        .to_string()
    });
    let host = params.host.clone();
    let parsed = state
        .parse(wire, move |bytes, charge| {
            let mut records = Vec::new();
            for line in bytes.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let utf8 = std::str::from_utf8(line).is_ok();
                let record = schemas::LogRecord {
                    ts_ms: now,
                    received_ms: now,
                    host: host.clone(),
                    message: String::from_utf8_lossy(line).into_owned(),
                    structured_data: structured.clone(),
                    raw: (!utf8).then(|| line.to_vec()),
                    parse_status: if utf8 {
                        schemas::ParseStatus::Ok
                    } else {
                        schemas::ParseStatus::InvalidUtf8
                    },
                    input: "hec",
                    bytes: u32::try_from(line.len()).unwrap_or(u32::MAX),
                    ..Default::default()
                };
                charge(&record)?;
                records.push(record);
            }
            Ok(records)
        })
        .await;
    let (records, reservation) = match parsed {
        Ok(p) => p,
        Err(e) => return hec_error(e, &headers),
    };
    if records.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "No data", code::NO_DATA);
    }
    match state
        .store_records(principal.tenant, "hec", records, 0, reservation)
        .await
    {
        Ok(()) => answer(StatusCode::OK, "Success", code::SUCCESS),
        Err(e) => hec_error(e, &headers),
    }
}

/// `GET /services/collector/health`: unauthenticated, as in Splunk.
pub async fn health() -> Response {
    answer(StatusCode::OK, "HEC is healthy", code::HEALTHY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> schemas::TenantId {
        schemas::TenantId::new("acme").unwrap()
    }

    #[test]
    fn maps_envelope_fields() {
        let text = r#"{"time": 1795687200.25, "host": "web-1", "source": "/var/log/auth.log", "sourcetype": "linux_secure", "index": "main", "fields": {"dc": "fra"}, "event": {"message": "Failed password", "user": "root"}}"#;
        let r = event_record(text, &acme(), 0, 1 << 20).unwrap();
        assert_eq!(r.ts_ms, 1_795_687_200_250);
        assert_eq!(r.host.as_deref(), Some("web-1"));
        assert_eq!(r.message, "Failed password");
        let sd: Value = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["sourcetype"], "linux_secure");
        assert_eq!(sd["index"], "main");
        assert_eq!(sd["dc"], "fra");
        assert_eq!(sd["user"], "root");
        assert_eq!(r.input, "hec");
        assert_eq!(r.bytes as usize, text.len());
    }

    #[test]
    fn string_events_and_errors() {
        let r = event_record(r#"{"event": "plain text"}"#, &acme(), 7, 1 << 20).unwrap();
        assert_eq!((r.message.as_str(), r.ts_ms), ("plain text", 7));
        assert_eq!(
            event_record(r#"{"host": "x"}"#, &acme(), 0, 1 << 20)
                .unwrap_err()
                .code(),
            code::EVENT_REQUIRED
        );
        assert_eq!(
            event_record(r#"{"event": ""}"#, &acme(), 0, 1 << 20)
                .unwrap_err()
                .code(),
            code::EVENT_BLANK
        );
        assert_eq!(
            event_record(r#"{"event": "x", "time": "soon"}"#, &acme(), 0, 1 << 20)
                .unwrap_err()
                .code(),
            code::INVALID_DATA_FORMAT
        );
        assert_eq!(
            event_record("[1]", &acme(), 0, 1 << 20).unwrap_err().code(),
            code::INVALID_DATA_FORMAT
        );
    }
}
