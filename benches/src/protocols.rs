//! The same generated log records in every forwarder protocol SecureNet
//! receives, for `loadgen --protocol` (benches/forwarders.sh): each batch of
//! events becomes one request (HTTP, gRPC) or one forward message (Fluent),
//! or a run of NUL-delimited messages (GELF over TCP).
//!
//! Every encoding carries the same fields as the NDJSON one: time, host,
//! app, pid, severity, facility, message, source IP, and the three fields
//! shippers attach (`env`, `dc`, `trace_id`).

use bytes::Bytes;
use ingest::testdata::{Event, Format};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::{Value, json};

/// Protocols the load generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `POST /api/ingest/logs`, NDJSON (the baseline).
    Ndjson,
    /// `POST /v1/logs`, OTLP protobuf.
    OtlpHttp,
    /// `POST /v1/logs`, OTLP/JSON.
    OtlpJson,
    /// `POST /v1/logs`, OTLP/JSON in the shape this bench sent before
    /// 2026-12-06 (kept for comparison, not a sender's shape): one empty
    /// resource, every attribute on every record, every default field
    /// written (opentelemetry-proto's serde output); the same attributes
    /// and bytes per record as before, `env` now third.
    OtlpJsonFlat,
    /// OTLP/gRPC `LogsService/Export`.
    OtlpGrpc,
    /// `POST /loki/api/v1/push`, snappy protobuf.
    LokiProtobuf,
    /// `POST /loki/api/v1/push`, JSON.
    LokiJson,
    /// `POST /gelf`, one GELF object per line.
    GelfHttp,
    /// GELF over TCP, NUL-delimited (no acknowledgement).
    GelfTcp,
    /// Fluent forward, `PackedForward` with an ack per chunk.
    Fluent,
}

impl Protocol {
    /// (path, content type) of the HTTP protocols.
    pub fn http(self) -> Option<(&'static str, &'static str)> {
        match self {
            Protocol::Ndjson => Some(("/api/ingest/logs", "application/x-ndjson")),
            Protocol::OtlpHttp => Some(("/v1/logs", "application/x-protobuf")),
            Protocol::OtlpJson | Protocol::OtlpJsonFlat => Some(("/v1/logs", "application/json")),
            Protocol::LokiProtobuf => Some(("/loki/api/v1/push", "application/x-protobuf")),
            Protocol::LokiJson => Some(("/loki/api/v1/push", "application/json")),
            Protocol::GelfHttp => Some(("/gelf", "application/json")),
            Protocol::OtlpGrpc | Protocol::GelfTcp | Protocol::Fluent => None,
        }
    }
}

/// One request's worth of events, encoded.
pub struct Payload {
    pub rows: usize,
    pub data: Bytes,
}

fn severity(e: &Event) -> &'static str {
    schemas::logs::SEVERITY_NAMES[e.severity as usize & 7]
}

fn facility(e: &Event) -> &'static str {
    schemas::logs::FACILITY_NAMES[(e.facility as usize).min(23)]
}

fn trace_id(e: &Event) -> String {
    let trace = (e.ts_ms as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ e.pid as u64;
    format!("{trace:016x}{:08x}", e.pid)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// OTLP as senders structure it: one `ResourceLogs` per resource — here
/// per (host, service), the resource attributes `host.name`,
/// `service.name` and `env` — and each record with its own attributes (as
/// the Loki encodings group entries into streams by their labels).
fn otlp(events: &[Event]) -> ExportLogsServiceRequest {
    let resource_logs = group_by(events, |e| (e.host.as_str(), e.app))
        .into_iter()
        .map(|((host, app), records)| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("host.name", host),
                    kv("service.name", app),
                    kv("env", "production"),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records.into_iter().map(|e| otlp_record(e, &[])).collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

/// [`otlp`]'s form before 2026-12-06: one resource without attributes,
/// theirs on every record.
fn otlp_flat(events: &[Event]) -> ExportLogsServiceRequest {
    let records = events
        .iter()
        .map(|e| {
            let resource = [
                kv("host.name", &e.host),
                kv("service.name", e.app),
                kv("env", "production"),
            ];
            otlp_record(e, &resource)
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A record with its own attributes, after `also` (resource attributes
/// carried by the record instead).
fn otlp_record(e: &Event, also: &[KeyValue]) -> LogRecord {
    let mut attributes = also.to_vec();
    attributes.extend([
        KeyValue {
            key: "process.pid".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(i64::from(e.pid))),
            }),
            ..Default::default()
        },
        kv("log.facility", facility(e)),
        kv("dc", "eu-west-1a"),
        kv("trace_id", &trace_id(e)),
    ]);
    if let Some(ip) = &e.source_ip {
        attributes.push(kv("client.address", ip));
    }
    // Syslog severity → OTLP severity number (the receiver's table read
    // backwards).
    let severity_number = match e.severity {
        0..=2 => 21,
        3 => 17,
        4 | 5 => 13,
        6 => 9,
        _ => 5,
    };
    LogRecord {
        time_unix_nano: e.ts_ms as u64 * 1_000_000,
        severity_number,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(e.message.clone())),
        }),
        attributes,
        ..Default::default()
    }
}

/// OTLP/JSON as senders write it: the protobuf JSON mapping, which leaves
/// out every field holding its default value (proto3 "JSON Mapping":
/// default values are omitted unless a printer is told otherwise).
/// opentelemetry-proto's serde types write every field — `"traceId": ""`,
/// `"observedTimeUnixNano": "0"`, `"droppedAttributesCount": 0`, … — so
/// their output is cleaned of defaults here. An `AnyValue` is a `oneof`,
/// whose member is written even when it holds its type's default
/// (`{"intValue": "0"}`), so its own field is kept.
fn otlp_json(request: &ExportLogsServiceRequest) -> Vec<u8> {
    fn is_default(key: &str, value: &Value) -> bool {
        match value {
            Value::Null | Value::Bool(false) => true,
            Value::Number(n) => n.as_f64() == Some(0.0),
            // 64-bit integers are strings in the mapping.
            Value::String(s) => s.is_empty() || (s == "0" && key.ends_with("UnixNano")),
            Value::Array(items) => items.is_empty(),
            Value::Bool(true) | Value::Object(_) => false,
        }
    }
    fn omit_defaults(value: &mut Value) {
        match value {
            Value::Object(map) => {
                let any_value = map.keys().any(|k| k.ends_with("Value"));
                if !any_value {
                    map.retain(|key, v| !is_default(key, v));
                }
                map.values_mut().for_each(omit_defaults);
            }
            Value::Array(items) => items.iter_mut().for_each(omit_defaults),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(request).unwrap_or_default();
    omit_defaults(&mut value);
    serde_json::to_vec(&value).unwrap_or_default()
}

/// A stream's label set, as (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

fn labels(e: &Event) -> Labels {
    vec![
        ("host", e.host.clone()),
        ("app", e.app.to_string()),
        ("env", "production".into()),
    ]
}

/// Loki streams: one per (host, app), entries in order.
fn loki_streams(events: &[Event]) -> Vec<(Labels, Vec<&Event>)> {
    group_by(events, labels)
}

/// Events grouped by `key`, groups in order of first appearance and events
/// in order within each (a batch holds few distinct keys).
fn group_by<'e, K: PartialEq>(
    events: &'e [Event],
    key: impl Fn(&'e Event) -> K,
) -> Vec<(K, Vec<&'e Event>)> {
    let mut groups: Vec<(K, Vec<&Event>)> = Vec::new();
    for e in events {
        let k = key(e);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(e),
            None => groups.push((k, vec![e])),
        }
    }
    groups
}

fn loki_metadata(e: &Event) -> Vec<(&'static str, String)> {
    let mut m = vec![
        ("pid", e.pid.to_string()),
        ("level", severity(e).to_string()),
        ("dc", "eu-west-1a".into()),
        ("trace_id", trace_id(e)),
    ];
    if let Some(ip) = &e.source_ip {
        m.push(("source_ip", ip.clone()));
    }
    m
}

fn gelf(e: &Event) -> Value {
    let mut g = json!({
        "version": "1.1",
        "host": e.host,
        "short_message": e.message,
        "timestamp": e.ts_ms as f64 / 1000.0,
        "level": e.severity,
        "_app": e.app,
        "_pid": e.pid,
        "_facility": facility(e),
        "_env": "production",
        "_dc": "eu-west-1a",
        "_trace_id": trace_id(e),
    });
    if let (Some(ip), Some(map)) = (&e.source_ip, g.as_object_mut()) {
        map.insert("_source_ip".into(), ip.clone().into());
    }
    g
}

/// The NDJSON object of an event, without its tenant (the key's decides).
fn ndjson(e: &Event) -> String {
    e.render(Format::Ndjson)
        .replacen(&format!(",\"tenant_id\":\"{}\"", e.tenant), "", 1)
}

fn fluent_entry(e: &Event, out: &mut Vec<u8>) {
    use rmpv::Value as Mp;
    let secs = (e.ts_ms / 1000) as u32;
    let nanos = ((e.ts_ms % 1000) * 1_000_000) as u32;
    let mut time = secs.to_be_bytes().to_vec();
    time.extend_from_slice(&nanos.to_be_bytes());
    let mut record = vec![
        (Mp::from("host"), Mp::from(e.host.as_str())),
        (Mp::from("app"), Mp::from(e.app)),
        (Mp::from("pid"), Mp::from(e.pid)),
        (Mp::from("severity"), Mp::from(severity(e))),
        (Mp::from("facility"), Mp::from(facility(e))),
        (Mp::from("log"), Mp::from(e.message.as_str())),
        (Mp::from("env"), Mp::from("production")),
        (Mp::from("dc"), Mp::from("eu-west-1a")),
        (Mp::from("trace_id"), Mp::from(trace_id(e))),
    ];
    if let Some(ip) = &e.source_ip {
        record.push((Mp::from("source_ip"), Mp::from(ip.as_str())));
    }
    let entry = Mp::Array(vec![Mp::Ext(0, time), Mp::Map(record)]);
    let _ = rmpv::encode::write_value(out, &entry);
}

/// Encodes one batch; `chunk` names a Fluent chunk to acknowledge.
pub fn encode(protocol: Protocol, events: &[Event], chunk: &str) -> Payload {
    let rows = events.len();
    let data = match protocol {
        Protocol::Ndjson => {
            let mut body = String::new();
            for e in events {
                body.push_str(&ndjson(e));
                body.push('\n');
            }
            body.into_bytes()
        }
        Protocol::OtlpHttp => otlp(events).encode_to_vec(),
        Protocol::OtlpJson => otlp_json(&otlp(events)),
        Protocol::OtlpJsonFlat => serde_json::to_vec(&otlp_flat(events)).unwrap_or_default(),
        Protocol::OtlpGrpc => otlp(events).encode_to_vec(),
        Protocol::LokiJson => {
            let streams: Vec<Value> = loki_streams(events)
                .into_iter()
                .map(|(labels, entries)| {
                    let stream: serde_json::Map<String, Value> = labels
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.into()))
                        .collect();
                    let values: Vec<Value> = entries
                        .iter()
                        .map(|e| {
                            let meta: serde_json::Map<String, Value> = loki_metadata(e)
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v.into()))
                                .collect();
                            json!([(e.ts_ms * 1_000_000).to_string(), e.message, meta])
                        })
                        .collect();
                    json!({"stream": stream, "values": values})
                })
                .collect();
            json!({ "streams": streams }).to_string().into_bytes()
        }
        Protocol::LokiProtobuf => {
            use ingest::loki_proto as p;
            let streams = loki_streams(events)
                .into_iter()
                .map(|(labels, entries)| {
                    let set: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    p::StreamAdapter {
                        labels: format!("{{{}}}", set.join(", ")),
                        entries: entries
                            .iter()
                            .map(|e| p::EntryAdapter {
                                timestamp: Some(p::Timestamp {
                                    seconds: e.ts_ms / 1000,
                                    nanos: ((e.ts_ms % 1000) * 1_000_000) as i32,
                                }),
                                line: e.message.clone(),
                                structured_metadata: loki_metadata(e)
                                    .into_iter()
                                    .map(|(name, value)| p::LabelPair {
                                        name: name.into(),
                                        value,
                                    })
                                    .collect(),
                            })
                            .collect(),
                    }
                })
                .collect();
            let raw = p::PushRequest { streams }.encode_to_vec();
            snap::raw::Encoder::new()
                .compress_vec(&raw)
                .unwrap_or_default()
        }
        Protocol::GelfHttp => {
            let mut body = String::new();
            for e in events {
                body.push_str(&gelf(e).to_string());
                body.push('\n');
            }
            body.into_bytes()
        }
        Protocol::GelfTcp => {
            let mut body = Vec::new();
            for e in events {
                body.extend_from_slice(gelf(e).to_string().as_bytes());
                body.push(0);
            }
            body
        }
        Protocol::Fluent => {
            use rmpv::Value as Mp;
            let mut entries = Vec::new();
            for e in events {
                fluent_entry(e, &mut entries);
            }
            let message = Mp::Array(vec![
                Mp::from("bench.logs"),
                Mp::Binary(entries),
                Mp::Map(vec![
                    (Mp::from("size"), Mp::from(rows as u64)),
                    (Mp::from("chunk"), Mp::from(chunk)),
                ]),
            ]);
            let mut out = Vec::new();
            let _ = rmpv::encode::write_value(&mut out, &message);
            out
        }
    };
    Payload {
        rows,
        data: Bytes::from(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::testdata::{GenConfig, Generator};
    use schemas::tenant::TenantId;

    #[test]
    fn otlp_json_without_defaults_carries_the_same_records() {
        let tenant = TenantId::new("acme").unwrap();
        let events: Vec<Event> = Generator::new(GenConfig {
            seed: 7,
            tenants: vec![tenant.clone()],
            rows: 300,
            anomalies: 0,
            start_ms: 1_795_651_200_000,
            duration_ms: 3_600_000,
        })
        .collect();
        let request = otlp(&events);
        let canonical = encode(Protocol::OtlpJson, &events, "").data;
        let every_field = serde_json::to_vec(&request).unwrap();
        let flat = encode(Protocol::OtlpJsonFlat, &events, "").data;
        let text = String::from_utf8(canonical.to_vec()).unwrap();
        for default in [
            "\"traceId\"",
            "\"observedTimeUnixNano\"",
            "\"droppedAttributesCount\"",
            "\"severityText\"",
            "null",
        ] {
            assert!(
                !text.contains(default),
                "{default} left in {}",
                &text[..400]
            );
        }
        assert!(canonical.len() < every_field.len() * 9 / 10);
        let map = |body: &[u8], json: bool| {
            let request = ingest::otlp::decode(body, json).unwrap();
            ingest::otlp::map_request(request, &tenant, 0, 1 << 16, &mut |_| Ok(())).unwrap()
        };
        let protobuf = map(&request.encode_to_vec(), false);
        let canonical = map(&canonical, true);
        let every_field = map(&every_field, true);
        let flat = map(&flat, true);
        assert_eq!(protobuf.records.len(), 300);
        assert!(protobuf.rejected.is_empty() && canonical.rejected.is_empty());
        assert_eq!(protobuf.records, canonical.records);
        // Grouped by resource, the records are the events, in another order.
        let mut stored: Vec<_> = protobuf
            .records
            .iter()
            .map(|r| {
                (
                    r.host.clone(),
                    r.app.clone(),
                    r.pid.clone(),
                    r.message.clone(),
                    r.source_ip.clone(),
                )
            })
            .collect();
        let mut sent: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    Some(e.host.clone()),
                    Some(e.app.to_string()),
                    Some(e.pid.to_string()),
                    e.message.clone(),
                    e.source_ip.clone(),
                )
            })
            .collect();
        stored.sort();
        sent.sort();
        assert_eq!(stored, sent);
        assert!(request.resource_logs.len() > 1 && request.resource_logs.len() < 100);
        assert_eq!(protobuf.records, every_field.records);
        // The flat shape stores the same columns (the resource's attributes
        // under "attributes" instead of "resource" in structured data).
        let columns = |m: &ingest::otlp::Mapped| {
            let mut c: Vec<_> = m
                .records
                .iter()
                .map(|r| {
                    (
                        r.ts_ms,
                        r.host.clone(),
                        r.app.clone(),
                        r.pid.clone(),
                        r.severity,
                        r.message.clone(),
                        r.source_ip.clone(),
                    )
                })
                .collect();
            c.sort();
            c
        };
        assert_eq!(columns(&flat), columns(&protobuf));
    }
}
