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
//! | the record's protobuf size (as received; an OTLP/JSON record as prost would encode it) | `bytes` (metered the same for JSON and protobuf) |
//!
//! Requests are decoded as borrowed views ([`view`]), protobuf and
//! OTLP/JSON alike, and mapped here.
//!
//! A record is refused (counted in `partial_success.rejected_log_records`,
//! named in `error_message`; the rest are stored) when its body is over
//! `ingest.http.max_record_bytes` or a `tenant_id` attribute names another
//! organization than the credential's.

pub mod grpc;
pub mod view;

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use schemas::logs::severity_from_name;
use schemas::{LogRecord, ParseStatus, TenantId};

use crate::error::Error;
use view::{KeyValue, Value};

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
    request: view::Request<'_>,
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
    resource: &'a [KeyValue<'a>],
    resource_json: Option<&'a str>,
    scope_json: Option<&'a str>,
}

fn record(
    mut log: view::Log<'_>,
    context: &Context<'_>,
    now_ms: i64,
    max_record: usize,
) -> Result<LogRecord, String> {
    let message = match log.body.take() {
        Some(Value::String(text)) => text.into_owned(),
        Some(value) => {
            let mut out = String::new();
            value_json(&mut out, &value);
            out
        }
        None => String::new(),
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
        msg_id: (!log.event_name.is_empty()).then(|| log.event_name.into_owned()),
        message,
        source_ip,
        structured_data,
        parse_status: ParseStatus::Ok,
        input: "otlp",
        bytes: u32::try_from(log.size).unwrap_or(u32::MAX),
        ..Default::default()
    })
}

/// The record's structured data: everything OTLP carries that has no
/// column of its own, as one JSON object (absent when there is nothing).
fn structured(log: &view::Log<'_>, context: &Context<'_>) -> Option<String> {
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
            out.push_str(&hex::encode(&id[..]));
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
fn value_size(value: Option<&Value<'_>>) -> usize {
    match value {
        Some(Value::String(s)) => s.len() + 2,
        _ => 24,
    }
}

fn string_attr<'a>(attributes: &'a [KeyValue<'_>], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()? {
            Value::String(s) => Some(&**s),
            _ => None,
        })
}

/// A string or integer attribute as text (`process.pid` is an int).
fn scalar_attr(attributes: &[KeyValue<'_>], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()? {
            Value::String(s) => Some(s.to_string()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        })
}

/// Key-values as a JSON object (a later duplicate key wins, as JSON
/// readers do).
fn object_json(attributes: &[KeyValue<'_>]) -> String {
    let mut out = String::new();
    write_object(&mut out, attributes);
    out
}

/// [`object_json`], appended to `out`.
fn write_object(out: &mut String, attributes: &[KeyValue<'_>]) {
    out.push('{');
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, &kv.key);
        out.push(':');
        match &kv.value {
            Some(value) => value_json(out, value),
            None => out.push_str("null"),
        }
    }
    out.push('}');
}

fn value_json(out: &mut String, value: &Value<'_>) {
    match value {
        Value::String(s) => json_str(out, s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        // JSON has no NaN or infinities: those become strings.
        Value::Double(d) if d.is_finite() => {
            let _ = write!(out, "{d}");
        }
        Value::Double(d) => json_str(out, &d.to_string()),
        Value::Array(values) => {
            out.push('[');
            for (i, item) in values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Some(v) => value_json(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push(']');
        }
        Value::Kvlist(values) => write_object(out, values),
        Value::Bytes(bytes) => json_str(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        Value::Strindex(i) => {
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

/// Decodes an export request: protobuf (OTLP/gRPC, OTLP/HTTP), or OTLP/JSON.
pub fn decode(bytes: &[u8], json: bool) -> Result<view::Request<'_>, Error> {
    if json {
        view::Request::from_json(bytes)
            .map_err(|e| Error::BadRequest(format!("body is not an OTLP/JSON logs request: {e}")))
    } else {
        view::Request::decode(bytes).map_err(|e| {
            Error::BadRequest(format!("body is not an OTLP protobuf logs request: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message as _;
    use serde_json::Value as Json;

    fn tenant() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn map(request: view::Request<'_>) -> Mapped {
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
        // The same request encoded by prost (from opentelemetry-proto's own
        // reading of the JSON) maps to the same record, metered the same.
        let owned: ExportLogsServiceRequest = serde_json::from_str(SPEC_EXAMPLE).unwrap();
        let protobuf = owned.encode_to_vec();
        let again = map(decode(&protobuf, false).unwrap());
        assert_eq!(again.records, mapped.records);
    }

    /// A request using every field and value type, nested, as the
    /// generated types hold it.
    fn rich_request() -> ExportLogsServiceRequest {
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
            any_value::Value as V,
        };
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let any = |v: V| Some(AnyValue { value: Some(v) });
        let kv = |key: &str, v: V| KeyValue {
            key: key.into(),
            value: any(v),
            ..Default::default()
        };
        let nested = V::KvlistValue(KeyValueList {
            values: vec![
                kv(
                    "list",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(V::IntValue(-7)),
                            },
                            AnyValue { value: None },
                            AnyValue {
                                value: Some(V::StringValue("é \"q\"\n".into())),
                            },
                        ],
                    }),
                ),
                kv("raw", V::BytesValue(vec![0, 1, 2, 255])),
            ],
        });
        let record = LogRecord {
            time_unix_nano: 1_700_000_000_123_456_789,
            observed_time_unix_nano: 1_700_000_001_000_000_000,
            severity_number: 13,
            severity_text: "WARN".into(),
            body: any(nested.clone()),
            attributes: vec![
                kv("host.name", V::StringValue("db-7".into())),
                kv("process.pid", V::IntValue(4242)),
                kv("ratio", V::DoubleValue(0.25)),
                kv("ok", V::BoolValue(false)),
                kv("client.address", V::StringValue("2001:db8::1".into())),
                kv("tree", nested),
            ],
            dropped_attributes_count: 0,
            flags: 1,
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            event_name: "login.failed".into(),
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", V::StringValue("auth".into()))],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "2".into(),
                        ..Default::default()
                    }),
                    log_records: vec![record.clone(), LogRecord::default(), record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn protobuf_and_json_forms_of_every_value_type_map_alike() {
        let owned = rich_request();
        let protobuf = owned.encode_to_vec();
        // opentelemetry-proto's serde writes the JSON form.
        let json = serde_json::to_vec(&owned).unwrap();
        let map =
            |request| map_request(request, &tenant(), 1_000, 1 << 16, &mut |_| Ok(())).unwrap();
        let from_protobuf = map(decode(&protobuf, false).unwrap());
        let from_json = map(decode(&json, true).unwrap());
        assert!(from_protobuf.rejected.is_empty());
        assert_eq!(from_protobuf.records, from_json.records);
        let records = &from_protobuf.records;
        assert_eq!(records.len(), 3);
        // Metered as prost sizes the record.
        assert_eq!(
            records[0].bytes as usize,
            owned.resource_logs[0].scope_logs[0].log_records[0].encoded_len()
        );
        let r = &records[0];
        assert_eq!(r.ts_ms, 1_700_000_000_123);
        assert_eq!(
            (r.host.as_deref(), r.app.as_deref(), r.pid.as_deref()),
            (Some("db-7"), Some("auth"), Some("4242"))
        );
        assert_eq!(r.source_ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(
            (r.severity, r.msg_id.as_deref()),
            (Some(4), Some("login.failed"))
        );
        let body: Json = serde_json::from_str(&r.message).unwrap();
        assert_eq!(body["list"], serde_json::json!([-7, null, "é \"q\"\n"]));
        assert_eq!(body["raw"], "AAEC/w==");
        let sd: Json = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["attributes"]["ratio"], 0.25);
        assert_eq!(sd["attributes"]["ok"], false);
        assert_eq!(sd["attributes"]["tree"], body);
        assert_eq!(sd["trace_id"], "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(sd["span_id"], "0102030405060708");
        assert_eq!(
            (sd["flags"].clone(), sd["scope"]["version"].clone()),
            (1.into(), "2".into())
        );
        // An empty record: arrival time, no columns, nothing structured.
        let empty = &records[1];
        assert_eq!((empty.ts_ms, empty.message.as_str()), (1_000, ""));
        assert_eq!(
            empty.structured_data.as_deref(),
            Some(r#"{"resource":{"service.name":"auth"},"scope":{"name":"lib","version":"2"}}"#)
        );
    }

    #[test]
    fn json_in_the_mappings_other_spellings_is_read() {
        // Proto field names, 64-bit integers as numbers, the severity as
        // its enum name, doubles JSON cannot write as numbers, nulls.
        let json = r#"{"resource_logs":[{"scope_logs":[{"log_records":[{
            "time_unix_nano": 1700000000000000000,
            "severityNumber": "SEVERITY_NUMBER_ERROR",
            "body": {"doubleValue": "-Infinity"},
            "attributes": [{"key": "n", "value": {"int_value": 12}},
                           {"key": "nan", "value": {"doubleValue": "NaN"}},
                           {"key": "none", "value": null},
                           {"key": "unknown", "value": {"futureValue": {"a": [1]}}}],
            "someFutureField": {"x": 1}
        }]}]}]}"#;
        let mapped = map(decode(json.as_bytes(), true).unwrap());
        let r = &mapped.records[0];
        assert_eq!((r.ts_ms, r.severity), (1_700_000_000_000, Some(3)));
        assert_eq!(r.message, "\"-inf\"");
        let sd: Json = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["attributes"]["n"], 12);
        assert_eq!(sd["attributes"]["nan"], "NaN");
        assert_eq!(sd["attributes"]["none"], Json::Null);
        assert_eq!(sd["attributes"]["unknown"], Json::Null);
    }

    #[test]
    fn hostile_protobuf_is_refused_not_crashed_on() {
        let bad = |bytes: &[u8]| match decode(bytes, false) {
            Err(Error::BadRequest(why)) => why,
            other => panic!("{other:?}"),
        };
        let protobuf = rich_request().encode_to_vec();
        // Truncated anywhere inside.
        for cut in [1, 10, protobuf.len() / 2, protobuf.len() - 1] {
            bad(&protobuf[..cut]);
        }
        // A string that is not UTF-8: resource_logs { scope_logs { log_records { severity_text } } }.
        let text = [0x1a, 0x02, 0xc3, 0x28];
        let nest = |tag: u8, inner: &[u8]| [&[tag, inner.len() as u8][..], inner].concat();
        let request = nest(0x0a, &nest(0x12, &nest(0x12, &text)));
        assert!(bad(&request).contains("UTF-8"), "{}", bad(&request));
        // The body's field with the wrong wire type (a varint for a message).
        bad(&nest(0x0a, &nest(0x12, &nest(0x12, &[0x28, 0x01]))));
        // Arrays nested 200 deep: refused at prost's limit, no stack overflow.
        let mut value = vec![0x10, 0x01];
        for _ in 0..200 {
            // AnyValue { array_value (5) { values (1) { value } } }
            let array = [&[0x0a][..], &varint(value.len()), &value].concat();
            value = [&[0x2a][..], &varint(array.len()), &array].concat();
        }
        let log = [&[0x2a][..], &varint(value.len()), &value].concat();
        let scope = [&[0x12][..], &varint(log.len()), &log].concat();
        let resource = [&[0x12][..], &varint(scope.len()), &scope].concat();
        let request = [&[0x0a][..], &varint(resource.len()), &resource].concat();
        assert!(bad(&request).contains("recursion"), "{}", bad(&request));
        // Unknown fields of every wire type are skipped.
        let unknown = [
            0xf8, 0x01, 0x05, // field 31 varint
            0xfd, 0x01, 1, 2, 3, 4, // field 31 fixed32
            0xf9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, // field 31 fixed64
            0xfa, 0x01, 0x01, 0x00, // field 31 bytes
        ];
        let with_unknown = nest(
            0x0a,
            &nest(
                0x12,
                &nest(0x12, &[&unknown[..], &text[..2], b"ok"].concat()),
            ),
        );
        let mapped = map(decode(&with_unknown, false).unwrap());
        assert_eq!(mapped.records.len(), 1);
    }

    fn varint(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(n as u64, &mut out);
        out
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
        // Invalid UTF-8 inside a string, and outside one.
        for body in [
            &b"{\"resourceLogs\": [], \"x\": \"\xc3\x28\"}"[..],
            b"{\xff}",
        ] {
            match decode(body, true) {
                Err(Error::BadRequest(why)) => assert!(why.contains("not UTF-8"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
