//! Loki push, JSON: `POST /loki/api/v1/push`.
//!
//! `{"streams": [{"stream": {labels}, "values": [["<unix ns>", "<line>"],
//! ["<unix ns>", "<line>", {structured metadata}]]}]}` — what Promtail,
//! Grafana Alloy, Vector's `loki` sink and Fluent Bit's `loki` output send
//! with JSON encoding. Labels are kept as fields: `host`/`hostname`/
//! `instance` fill `host`, `app`/`service_name`/`job` fill `app`,
//! `level`/`severity`/`detected_level` fill `severity`, every label and
//! metadata entry is kept in `structured_data`. The line is the message,
//! verbatim. Success is `204 No Content`, as in Loki; errors are text.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::logs::severity_from_name;
use schemas::{LogRecord, ParseStatus, TenantId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{IngestState, classify, with_retry_headers};
use crate::error::Error;

#[derive(Deserialize)]
struct Push {
    streams: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    #[serde(default)]
    stream: Map<String, Value>,
    values: Vec<Vec<Value>>,
}

fn loki_error(err: Error) -> Response {
    let (status, _, message) = classify(&err);
    with_retry_headers((status, format!("{message}\n")).into_response(), &err)
}

pub async fn push(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let (principal, wire) = match state
        .begin(&headers, body, state.config.max_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => return loki_error(e),
    };
    let media = super::body::media_type(&headers);
    if !(media.is_empty() || media == "application/json") {
        return loki_error(Error::UnsupportedContentType(format!(
            "{media} (only JSON pushes are supported; set your client to JSON encoding)"
        )));
    }
    let now = schemas::time::now_ms();
    let tenant = principal.tenant.clone();
    let max_record = state.config.max_record_bytes;
    let parsed = state
        .parse(wire, move |bytes, charge| {
            parse_push(bytes, &tenant, now, max_record, charge)
        })
        .await;
    let ((records, errors), reservation) = match parsed {
        Ok(p) => p,
        Err(e) => return loki_error(e),
    };
    if records.is_empty() && errors.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if let Err(e) = state
        .store_records(principal.tenant, "loki", records, errors.len(), reservation)
        .await
    {
        return loki_error(e);
    }
    if errors.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // The valid entries are stored; Loki clients do not retry a 400.
        let shown: Vec<_> = errors.iter().take(20).cloned().collect();
        let text = format!("{} entries rejected: {}\n", errors.len(), shown.join("; "));
        (StatusCode::BAD_REQUEST, text).into_response()
    }
}

/// A Loki JSON push → records (each charged as built) and per-entry errors.
pub(crate) fn parse_push(
    bytes: &[u8],
    tenant: &TenantId,
    now: i64,
    max_record: usize,
    charge: &mut dyn FnMut(&LogRecord) -> Result<(), Error>,
) -> Result<(Vec<LogRecord>, Vec<String>), Error> {
    let push: Push = serde_json::from_slice(bytes)
        .map_err(|e| Error::BadRequest(format!("body is not a Loki JSON push: {e}")))?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (s, stream) in push.streams.iter().enumerate() {
        for (v, entry) in stream.values.iter().enumerate() {
            match entry_record(&stream.stream, entry, tenant, now, max_record) {
                Ok(r) => {
                    charge(&r)?;
                    records.push(r);
                }
                Err(e) => errors.push(format!("stream {s} entry {v}: {e}")),
            }
        }
    }
    Ok((records, errors))
}

/// Why one Loki entry was not stored.
#[derive(Debug, thiserror::Error)]
enum InvalidEntry {
    #[error("expected [\"<unix epoch ns>\", \"<line>\"]")]
    Shape,
    #[error("line is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("timestamp {0:?} is not unix epoch nanoseconds")]
    NotNanoseconds(String),
    #[error("timestamp {0} is out of range")]
    OutOfRange(String),
    #[error(
        "label tenant_id {found:?} does not match the organization of the API key ({expected})"
    )]
    WrongTenant { found: String, expected: TenantId },
}

fn entry_record(
    labels: &Map<String, Value>,
    entry: &[Value],
    tenant: &TenantId,
    now_ms: i64,
    max_record: usize,
) -> Result<LogRecord, InvalidEntry> {
    let (ts, line) = match entry {
        [Value::String(ts), Value::String(line), ..] => (ts, line),
        _ => return Err(InvalidEntry::Shape),
    };
    if line.len() > max_record {
        return Err(InvalidEntry::TooLarge {
            size: line.len(),
            limit: max_record,
        });
    }
    let ns: i128 = ts
        .parse()
        .map_err(|_| InvalidEntry::NotNanoseconds(ts.clone()))?;
    let ts_ms = i64::try_from(ns / 1_000_000).map_err(|_| InvalidEntry::OutOfRange(ts.clone()))?;
    let mut fields = labels.clone();
    if let Some(Value::Object(meta)) = entry.get(2) {
        for (k, v) in meta {
            fields.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(Value::String(t)) = fields.get("tenant_id")
        && t != tenant.as_str()
    {
        return Err(InvalidEntry::WrongTenant {
            found: t.clone(),
            expected: tenant.clone(),
        });
    }
    let pick = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| fields.get(*n).and_then(Value::as_str).map(str::to_string))
    };
    let host = pick(&["host", "hostname", "instance"]);
    let app = pick(&["app", "service_name", "job", "application"]);
    let severity =
        pick(&["level", "severity", "detected_level"]).and_then(|l| severity_from_name(&l));
    Ok(LogRecord {
        ts_ms,
        received_ms: now_ms,
        host,
        app,
        severity,
        message: line.clone(),
        structured_data: (!fields.is_empty()).then(|| Value::Object(fields).to_string()),
        parse_status: ParseStatus::Ok,
        input: "loki",
        bytes: u32::try_from(line.len()).unwrap_or(u32::MAX),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_become_fields() {
        let labels = json!({"job": "varlogs", "host": "web-1", "level": "error", "env": "prod"});
        let entry = [
            json!("1795687200123456789"),
            json!("boom"),
            json!({"trace_id": "abc"}),
        ];
        let r = entry_record(
            labels.as_object().unwrap(),
            &entry,
            &TenantId::new("acme").unwrap(),
            0,
            1024,
        )
        .unwrap();
        assert_eq!(r.ts_ms, 1_795_687_200_123);
        assert_eq!(
            (r.host.as_deref(), r.app.as_deref(), r.severity),
            (Some("web-1"), Some("varlogs"), Some(3))
        );
        assert_eq!(r.message, "boom");
        let sd: Value = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(
            (sd["env"].as_str(), sd["trace_id"].as_str()),
            (Some("prod"), Some("abc"))
        );
    }

    #[test]
    fn bad_entries_name_the_problem() {
        let t = TenantId::new("acme").unwrap();
        let empty = Map::new();
        assert!(
            entry_record(&empty, &[json!("soon"), json!("x")], &t, 0, 1024)
                .unwrap_err()
                .to_string()
                .contains("nanoseconds")
        );
        assert!(
            entry_record(&empty, &[json!(1)], &t, 0, 1024)
                .unwrap_err()
                .to_string()
                .contains("expected")
        );
    }
}
