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
            Protocol::OtlpJson => Some(("/v1/logs", "application/json")),
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

fn otlp(events: &[Event]) -> ExportLogsServiceRequest {
    let records = events
        .iter()
        .map(|e| {
            let mut attributes = vec![
                kv("host.name", &e.host),
                kv("service.name", e.app),
                KeyValue {
                    key: "process.pid".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(i64::from(e.pid))),
                    }),
                    ..Default::default()
                },
                kv("log.facility", facility(e)),
                kv("env", "production"),
                kv("dc", "eu-west-1a"),
                kv("trace_id", &trace_id(e)),
            ];
            if let Some(ip) = &e.source_ip {
                attributes.push(kv("client.address", ip));
            }
            // Syslog severity → OTLP severity number (the receiver's table
            // read backwards).
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
    let mut streams: Vec<(Labels, Vec<&Event>)> = Vec::new();
    for e in events {
        let l = labels(e);
        match streams.iter_mut().find(|(k, _)| *k == l) {
            Some((_, entries)) => entries.push(e),
            None => streams.push((l, vec![e])),
        }
    }
    streams
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
        Protocol::OtlpJson => serde_json::to_vec(&otlp(events)).unwrap_or_default(),
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
