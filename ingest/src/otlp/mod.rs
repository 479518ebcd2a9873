//! OpenTelemetry logs (OTLP): the mapping of an `ExportLogsServiceRequest`
//! to records, shared by OTLP/HTTP (`POST /v1/logs`, [`crate::http::otlp`])
//! and OTLP/gRPC (`LogsService/Export`, [`grpc`]).
//!
//! | OTLP | record column |
//! | --- | --- |
//! | `time_unix_nano`, else `observed_time_unix_nano`, else arrival | `ts` |
//! | attribute `host.name` (record, else resource) | `host` |
//! | attribute `service.name` (record, else resource) | `app` |
//! | attribute `process.pid` | `pid` |
//! | `severity_number` 1–8 / 9–12 / 13–16 / 17–20 / 21–24 | `severity` 7 debug / 6 info / 4 warning / 3 err / 2 crit |
//! | `severity_text` when `severity_number` is 0 (`ERROR`, `warn`…) | `severity` by name |
//! | `event_name` | `msg_id` |
//! | `body`: a string verbatim; any other AnyValue as JSON (maps as objects, bytes as base64) | `message` |
//! | attribute `client.address` / `source.address` / `network.peer.address`, when an IP | `source_ip` |
//! | record attributes, resource attributes, scope name/version/attributes, `trace_id`/`span_id` (hex), `severity_text`, `severity_number`, `flags` | `structured_data` (JSON: `attributes`, `resource`, `scope`, `trace_id`, …) |
//! | the record's protobuf size | `bytes` (metered the same for JSON and protobuf) |
//!
//! A record is refused (counted in `partial_success.rejected_log_records`,
//! named in `error_message`; the rest are stored) when its body is over
//! `ingest.http.max_record_bytes` or a `tenant_id` attribute names another
//! organization than the credential's.

pub mod grpc;

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message as _;
use schemas::logs::severity_from_name;
use schemas::{LogRecord, ParseStatus, TenantId};

use crate::error::Error;

/// What one export request became.
#[derive(Debug, Default)]
pub struct Mapped {
    pub records: Vec<LogRecord>,
    /// Why records were refused, each naming its place in the request.
    pub rejected: Vec<String>,
}

impl Mapped {
    /// The OTLP answer: `partial_success` only when something was refused.
    pub fn response(&self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (!self.rejected.is_empty()).then(|| ExportLogsPartialSuccess {
                rejected_log_records: self.rejected.len() as i64,
                error_message: rejected_message(&self.rejected),
            }),
        }
    }
}

/// The first refusals, joined (a request of 10,000 bad records must not
/// answer with 10,000 reasons).
fn rejected_message(rejected: &[String]) -> String {
    let mut text = format!("{} log records rejected: ", rejected.len());
    for (i, reason) in rejected.iter().take(20).enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(reason);
    }
    text
}

/// Maps a request to records, charging each as it is built.
pub fn map_request(
    request: ExportLogsServiceRequest,
    tenant: &TenantId,
    now_ms: i64,
    max_record: usize,
    charge: &mut dyn FnMut(&LogRecord) -> Result<(), Error>,
) -> Result<Mapped, Error> {
    let mut mapped = Mapped::default();
    for (r, resource_logs) in request.resource_logs.into_iter().enumerate() {
        let resource = resource_logs
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let resource_tenant = string_attr(&resource, "tenant_id");
        let resource_json = (!resource.is_empty()).then(|| object_json(&resource));
        for (s, scope_logs) in resource_logs.scope_logs.into_iter().enumerate() {
            let scope_json = scope_logs
                .scope
                .filter(|scope| !scope.name.is_empty() || !scope.attributes.is_empty())
                .map(|scope| {
                    let mut out = String::from("{\"name\":");
                    json_str(&mut out, &scope.name);
                    if !scope.version.is_empty() {
                        out.push_str(",\"version\":");
                        json_str(&mut out, &scope.version);
                    }
                    if !scope.attributes.is_empty() {
                        out.push_str(",\"attributes\":");
                        out.push_str(&object_json(&scope.attributes));
                    }
                    out.push('}');
                    out
                });
            let context = Context {
                resource: &resource,
                resource_json: resource_json.as_deref(),
                scope_json: scope_json.as_deref(),
            };
            for (l, log) in scope_logs.log_records.into_iter().enumerate() {
                let claimed = string_attr(&log.attributes, "tenant_id").or(resource_tenant);
                if let Some(claimed) = claimed
                    && claimed != tenant.as_str()
                {
                    mapped.rejected.push(format!(
                        "resource {r} scope {s} record {l}: attribute tenant_id {claimed:?} does not match the organization of the credential ({tenant})"
                    ));
                    continue;
                }
                match record(log, &context, now_ms, max_record) {
                    Ok(record) => {
                        charge(&record)?;
                        mapped.records.push(record);
                    }
                    Err(why) => mapped
                        .rejected
                        .push(format!("resource {r} scope {s} record {l}: {why}")),
                }
            }
        }
    }
    Ok(mapped)
}

/// What a record's resource and scope contribute, rendered once for all of
/// their records.
struct Context<'a> {
    resource: &'a [KeyValue],
    resource_json: Option<&'a str>,
    scope_json: Option<&'a str>,
}

fn record(
    mut log: opentelemetry_proto::tonic::logs::v1::LogRecord,
    context: &Context<'_>,
    now_ms: i64,
    max_record: usize,
) -> Result<LogRecord, String> {
    let size = log.encoded_len();
    // Moved out, not copied: the request is ours.
    let message = match log.body.take() {
        Some(AnyValue {
            value: Some(Value::StringValue(text)),
        }) => text,
        Some(AnyValue { value: Some(value) }) => {
            let mut out = String::new();
            value_json(&mut out, &value);
            out
        }
        _ => String::new(),
    };
    if message.len() > max_record {
        return Err(format!(
            "body is {} bytes, over the limit of {max_record} bytes",
            message.len()
        ));
    }
    let nanos = match (log.time_unix_nano, log.observed_time_unix_nano) {
        (0, 0) => None,
        (0, observed) => Some(observed),
        (time, _) => Some(time),
    };
    // u64 nanoseconds / 10^6 always fits an i64 of milliseconds.
    let ts_ms = nanos.map_or(now_ms, |ns| (ns / 1_000_000) as i64);
    let attr = |key: &str| string_attr(&log.attributes, key).or(string_attr(context.resource, key));
    let host = attr("host.name").map(str::to_string);
    let app = attr("service.name").map(str::to_string);
    let pid = scalar_attr(&log.attributes, "process.pid")
        .or_else(|| scalar_attr(context.resource, "process.pid"));
    let source_ip = ["client.address", "source.address", "network.peer.address"]
        .iter()
        .filter_map(|key| attr(key))
        .find(|value| value.parse::<IpAddr>().is_ok())
        .map(str::to_string);
    let severity = match log.severity_number {
        1..=8 => Some(7),
        9..=12 => Some(6),
        13..=16 => Some(4),
        17..=20 => Some(3),
        21..=24 => Some(2),
        _ => severity_from_name(&log.severity_text),
    };
    let structured_data = structured(&log, context);
    Ok(LogRecord {
        ts_ms,
        received_ms: now_ms,
        host,
        app,
        pid,
        severity,
        msg_id: (!log.event_name.is_empty()).then(|| std::mem::take(&mut log.event_name)),
        message,
        source_ip,
        structured_data,
        parse_status: ParseStatus::Ok,
        input: "otlp",
        bytes: u32::try_from(size).unwrap_or(u32::MAX),
        ..Default::default()
    })
}

/// The record's structured data: everything OTLP carries that has no
/// column of its own, as one JSON object (absent when there is nothing).
fn structured(
    log: &opentelemetry_proto::tonic::logs::v1::LogRecord,
    context: &Context<'_>,
) -> Option<String> {
    // Sized once for what will be written (attributes, resource, scope,
    // ids): grown from empty it took ~7 reallocations and copies a record.
    let attributes: usize = log
        .attributes
        .iter()
        .map(|kv| kv.key.len() + 4 + value_size(kv.value.as_ref()))
        .sum();
    let mut out = String::with_capacity(
        128 + attributes
            + context.resource_json.map_or(0, str::len)
            + context.scope_json.map_or(0, str::len)
            + log.severity_text.len(),
    );
    out.push('{');
    let field = |out: &mut String, name: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    };
    if !log.attributes.is_empty() {
        field(&mut out, "attributes");
        write_object(&mut out, &log.attributes);
    }
    if let Some(resource) = context.resource_json {
        field(&mut out, "resource");
        out.push_str(resource);
    }
    if let Some(scope) = context.scope_json {
        field(&mut out, "scope");
        out.push_str(scope);
    }
    for (name, id, len) in [
        ("trace_id", &log.trace_id, 16),
        ("span_id", &log.span_id, 8),
    ] {
        // All zeroes or another length is "no id" (OTLP spec).
        if id.len() == len && id.iter().any(|b| *b != 0) {
            field(&mut out, name);
            out.push('"');
            out.push_str(&hex::encode(id));
            out.push('"');
        }
    }
    if !log.severity_text.is_empty() {
        field(&mut out, "severity_text");
        json_str(&mut out, &log.severity_text);
    }
    if log.severity_number != 0 {
        field(&mut out, "severity_number");
        let _ = write!(out, "{}", log.severity_number);
    }
    if log.flags != 0 {
        field(&mut out, "flags");
        let _ = write!(out, "{}", log.flags);
    }
    if out.len() == 1 {
        return None;
    }
    out.push('}');
    Some(out)
}

/// About how many bytes an attribute's value takes as JSON (exact for
/// strings without escapes, the usual case).
fn value_size(value: Option<&AnyValue>) -> usize {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.len() + 2,
        _ => 24,
    }
}

fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// A string or integer attribute as text (`process.pid` is an int).
fn scalar_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

/// Key-values as a JSON object (a later duplicate key wins, as JSON
/// readers do).
fn object_json(attributes: &[KeyValue]) -> String {
    let mut out = String::new();
    write_object(&mut out, attributes);
    out
}

/// [`object_json`], appended to `out`.
fn write_object(out: &mut String, attributes: &[KeyValue]) {
    out.push('{');
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, &kv.key);
        out.push(':');
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(value) => value_json(out, value),
            None => out.push_str("null"),
        }
    }
    out.push('}');
}

fn value_json(out: &mut String, value: &Value) {
    match value {
        Value::StringValue(s) => json_str(out, s),
        Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        // JSON has no NaN or infinities: those become strings.
        Value::DoubleValue(d) if d.is_finite() => {
            let _ = write!(out, "{d}");
        }
        Value::DoubleValue(d) => json_str(out, &d.to_string()),
        Value::ArrayValue(array) => {
            out.push('[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match &item.value {
                    Some(v) => value_json(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
        Value::KvlistValue(list) => write_object(out, &list.values),
        Value::BytesValue(bytes) => json_str(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        // Only meaningful for profiles (a string-table index).
        Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
    }
}

fn json_str(out: &mut String, s: &str) {
    // Most keys and values need no escaping: copied as they are (this runs
    // for every attribute of every record).
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's escaping; writing a &str into a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// The gRPC code of an answer's HTTP status, as the OTLP specification
/// pairs them (OTLP/gRPC answers with it; OTLP/HTTP error bodies carry it):
/// refusals a retry cannot fix are `INVALID_ARGUMENT`, `UNAUTHENTICATED`
/// or `PERMISSION_DENIED`; the organization's rate limit is
/// `RESOURCE_EXHAUSTED` and backpressure `UNAVAILABLE` (both retried).
pub fn grpc_code(status: axum::http::StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        500..=599 => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// Decodes an OTLP/HTTP body: protobuf, or OTLP/JSON.
pub fn decode(bytes: &[u8], json: bool) -> Result<ExportLogsServiceRequest, Error> {
    if json {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("body is not an OTLP/JSON logs request: {e}")))
    } else {
        ExportLogsServiceRequest::decode(bytes).map_err(|e| {
            Error::BadRequest(format!("body is not an OTLP protobuf logs request: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn tenant() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn map(request: ExportLogsServiceRequest) -> Mapped {
        map_request(request, &tenant(), 1_000, 64, &mut |_| Ok(())).unwrap()
    }

    // The OTLP/JSON example of the specification's repository
    // (opentelemetry-proto/examples/logs.json), as collectors send it.
    const SPEC_EXAMPLE: &str = r#"{
      "resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeLogs": [{
          "scope": {"name": "my.library", "version": "1.0.0",
                    "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
          "logRecords": [{
            "timeUnixNano": "1544712660300000000",
            "observedTimeUnixNano": "1544712660300000000",
            "severityNumber": 10,
            "severityText": "Information",
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "body": {"stringValue": "Example log record"},
            "attributes": [
              {"key": "string.attribute", "value": {"stringValue": "some string"}},
              {"key": "boolean.attribute", "value": {"boolValue": true}},
              {"key": "int.attribute", "value": {"intValue": "10"}},
              {"key": "double.attribute", "value": {"doubleValue": 637.704}},
              {"key": "array.attribute", "value": {"arrayValue": {"values": [{"stringValue": "many"}, {"stringValue": "values"}]}}},
              {"key": "map.attribute", "value": {"kvlistValue": {"values": [{"key": "some.map.key", "value": {"stringValue": "some value"}}]}}}
            ]
          }]
        }]
      }]
    }"#;

    #[test]
    fn the_specifications_json_example_maps_to_columns() {
        let request = decode(SPEC_EXAMPLE.as_bytes(), true).unwrap();
        let mapped = map(request);
        assert!(mapped.rejected.is_empty());
        let [r] = &mapped.records[..] else {
            panic!("one record")
        };
        assert_eq!(r.ts_ms, 1_544_712_660_300);
        assert_eq!(r.app.as_deref(), Some("my.service"));
        assert_eq!(r.severity, Some(6));
        assert_eq!(r.message, "Example log record");
        let sd: Json = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["trace_id"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(sd["span_id"], "eee19b7ec3c1b174");
        assert_eq!(sd["attributes"]["int.attribute"], 10);
        assert_eq!(sd["attributes"]["double.attribute"], 637.704);
        assert_eq!(sd["attributes"]["array.attribute"][1], "values");
        assert_eq!(
            sd["attributes"]["map.attribute"]["some.map.key"],
            "some value"
        );
        assert_eq!(sd["resource"]["service.name"], "my.service");
        assert_eq!(sd["scope"]["version"], "1.0.0");
        assert_eq!(sd["severity_text"], "Information");
        // The protobuf form of the same request maps to the same record.
        let request = decode(SPEC_EXAMPLE.as_bytes(), true).unwrap();
        let again = map(decode(&request.encode_to_vec(), false).unwrap());
        assert_eq!(again.records[0].structured_data, r.structured_data);
        assert_eq!(again.records[0].bytes, r.bytes);
    }

    #[test]
    fn bodies_of_every_type_and_bad_records_are_named() {
        let body = |json: &str| {
            format!(
                r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{json},"severityText":"warn"}}]}}]}}]}}"#
            )
        };
        let one = |json: &str| map(decode(body(json).as_bytes(), true).unwrap());
        let r =
            &one(r#"{"kvlistValue":{"values":[{"key":"a","value":{"intValue":1}}]}}"#).records[0];
        assert_eq!(r.message, r#"{"a":1}"#);
        assert_eq!((r.severity, r.ts_ms), (Some(4), 1_000));
        assert_eq!(
            one(r#"{"bytesValue":"AAEC"}"#).records[0].message,
            "\"AAEC\""
        );
        assert_eq!(one("{}").records[0].message, "");
        let big = one(&format!(r#"{{"stringValue":"{}"}}"#, "x".repeat(65)));
        assert!(big.records.is_empty());
        assert!(
            big.rejected[0].contains("record 0: body is 65 bytes"),
            "{:?}",
            big.rejected
        );
        let response = big.response().partial_success.unwrap();
        assert_eq!(response.rejected_log_records, 1);
        assert!(
            response
                .error_message
                .starts_with("1 log records rejected: ")
        );
    }

    #[test]
    fn another_tenants_records_are_refused_and_the_rest_kept() {
        let json = r#"{"resourceLogs":[
          {"resource":{"attributes":[{"key":"tenant_id","value":{"stringValue":"globex"}}]},
           "scopeLogs":[{"logRecords":[{"body":{"stringValue":"theirs"}}]}]},
          {"resource":{"attributes":[{"key":"tenant_id","value":{"stringValue":"acme"}},
                                     {"key":"host.name","value":{"stringValue":"web-1"}},
                                     {"key":"process.pid","value":{"intValue":"42"}}]},
           "scopeLogs":[{"logRecords":[{"body":{"stringValue":"ours"},"severityNumber":17,
             "attributes":[{"key":"client.address","value":{"stringValue":"10.0.0.9"}}]}]}]}]}"#;
        let mapped = map(decode(json.as_bytes(), true).unwrap());
        assert_eq!(mapped.records.len(), 1);
        let r = &mapped.records[0];
        assert_eq!(
            (
                r.message.as_str(),
                r.host.as_deref(),
                r.pid.as_deref(),
                r.severity,
                r.source_ip.as_deref()
            ),
            ("ours", Some("web-1"), Some("42"), Some(3), Some("10.0.0.9"))
        );
        assert!(mapped.rejected[0].contains("\"globex\" does not match"));
    }

    #[test]
    fn undecodable_bodies_are_bad_requests() {
        assert!(matches!(
            decode(b"\xff\xff\xff", false),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            decode(b"{\"resourceLogs\": 3}", true),
            Err(Error::BadRequest(_))
        ));
    }
}
