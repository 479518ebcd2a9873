//! Loki push: `POST /loki/api/v1/push`, JSON or snappy-compressed protobuf.
//!
//! JSON: `{"streams": [{"stream": {labels}, "values": [["<unix ns>",
//! "<line>"], ["<unix ns>", "<line>", {structured metadata}]]}]}`.
//! Protobuf (`application/x-protobuf`, the default of Promtail, Grafana
//! Alloy and Fluent Bit's `loki` output): Loki's `push.proto`
//! `PushRequest`, snappy block-compressed, labels as a Prometheus label set
//! string (`{job="varlogs", host="web-1"}`). Labels are kept as fields:
//! `host`/`hostname`/`instance` fill `host`, `app`/`service_name`/`job`
//! fill `app`, `level`/`severity`/`detected_level` fill `severity`, every
//! label and metadata entry is kept in `structured_data`. The line is the
//! message, verbatim. Success is `204 No Content`, as in Loki; errors are
//! text.
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::logs::severity_from_name;
use schemas::{LogRecord, ParseStatus, TenantId};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

use super::{IngestState, text_error};
use crate::error::Error;

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(borrow)]
    streams: Vec<Stream<'a>>,
}

#[derive(Deserialize)]
struct Stream<'a> {
    #[serde(default)]
    stream: Map<String, Value>,
    #[serde(borrow)]
    values: Vec<Entry<'a>>,
}

/// A visitor's answer to every scalar it does not want (booleans,
/// numbers, strings, null): `$value`. The three lenient readers below
/// differ only in what they accept.
macro_rules! other_scalars {
    ($out:ty, $value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok($value)
        }
    };
}

/// One entry of `values`, read in place: `["<unix ns>", "<line>",
/// {structured metadata}?]` — or, when it is anything else, the reason,
/// which refuses that entry alone. No JSON tree per entry: the line is
/// moved into the record, the timestamp borrowed from the body.
enum Entry<'a> {
    Line {
        ts: Cow<'a, str>,
        line: String,
        metadata: Vec<(String, Value)>,
    },
    Bad(InvalidEntry),
}

impl<'de: 'a, 'a> Deserialize<'de> for Entry<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entry<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[\"<unix epoch ns>\", \"<line>\", {metadata}?]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entry<'a>, A::Error> {
                let ts = seq.next_element::<Text<'a>>()?.and_then(|t| t.0);
                let line = seq.next_element::<Text<'a>>()?.and_then(|t| t.0);
                let metadata = seq.next_element::<Metadata>()?.unwrap_or_default().0;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(match (ts, line) {
                    (Some(ts), Some(line)) => Entry::Line {
                        ts,
                        line: line.into_owned(),
                        metadata,
                    },
                    _ => Entry::Bad(InvalidEntry::Shape),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Entry::Bad(InvalidEntry::Shape))
            }
            other_scalars!(Entry<'a>, Entry::Bad(InvalidEntry::Shape));
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Entry<'a>, E> {
                Ok(Entry::Bad(InvalidEntry::Shape))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A JSON string (borrowed when it has no escapes), or `None` for any
/// other value, which is skipped.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            other_scalars!(Text<'a>, Text(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An entry's structured metadata: an object's members in order (no
/// sorted map per entry); anything else counts as none, as before.
#[derive(Default)]
struct Metadata(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Metadata;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of structured metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Metadata(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Metadata, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Metadata::default())
            }
            other_scalars!(Metadata, Metadata::default());
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Metadata, E> {
                Ok(Metadata::default())
            }
        }
        d.deserialize_any(V)
    }
}

pub async fn push(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    let (principal, wire) = match state
        .begin(&headers, body, state.config.max_body_bytes)
        .await
    {
        Ok(b) => b,
        Err(e) => return text_error(e),
    };
    let media = super::body::media_type(&headers);
    let protobuf = match media.as_str() {
        "" | "application/json" => false,
        "application/x-protobuf" | "application/protobuf" => true,
        _ => {
            return text_error(Error::UnsupportedContentType(format!(
                "{media} (Loki pushes are application/x-protobuf, snappy-compressed, or application/json)"
            )));
        }
    };
    let now = schemas::time::now_ms();
    let tenant = principal.tenant.clone();
    let max_record = state.config.max_record_bytes;
    let max_body = state.config.max_body_bytes;
    let parsed = state
        .parse(wire, move |bytes, charge| match protobuf {
            true => parse_protobuf(bytes, max_body, &tenant, now, max_record, charge),
            false => parse_push(bytes, &tenant, now, max_record, charge),
        })
        .await;
    let ((records, errors), reservation) = match parsed {
        Ok(p) => p,
        Err(e) => return text_error(e),
    };
    if records.is_empty() && errors.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if let Err(e) = state
        .store_records(principal.tenant, "loki", records, errors.len(), reservation)
        .await
    {
        return text_error(e);
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
    for (s, stream) in push.streams.into_iter().enumerate() {
        let base = StreamBase::new(&stream.stream, tenant, now);
        for (v, entry) in stream.values.into_iter().enumerate() {
            let built = match entry {
                // No structured metadata: the stream's shared fields.
                Entry::Line {
                    ts, line, metadata, ..
                } if metadata.is_empty() => {
                    entry_ts(&ts).and_then(|ts_ms| base.record(ts_ms, line, max_record))
                }
                Entry::Line { ts, line, metadata } => entry_ts(&ts).and_then(|ts_ms| {
                    record(
                        &stream.stream,
                        metadata,
                        ts_ms,
                        line,
                        tenant,
                        now,
                        max_record,
                    )
                    .map_err(|e| e.to_string())
                }),
                Entry::Bad(why) => Err(why.to_string()),
            };
            match built {
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

/// Loki's `push.proto` (package `logproto`), the messages a push carries.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// A snappy protobuf push → records and per-entry errors.
pub(crate) fn parse_protobuf(
    bytes: &[u8],
    max_body: usize,
    tenant: &TenantId,
    now: i64,
    max_record: usize,
    charge: &mut dyn FnMut(&LogRecord) -> Result<(), Error>,
) -> Result<(Vec<LogRecord>, Vec<String>), Error> {
    use prost::Message as _;
    // The uncompressed size is in the block's header: refuse before
    // inflating what would not fit.
    let size = snap::raw::decompress_len(bytes)
        .map_err(|e| Error::BadRequest(format!("body is not snappy-compressed: {e}")))?;
    if size > max_body {
        return Err(Error::PayloadTooLarge {
            size: size as u64,
            limit: max_body,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(bytes)
        .map_err(|e| Error::BadRequest(format!("body is not snappy-compressed: {e}")))?;
    let push = proto::PushRequest::decode(&raw[..])
        .map_err(|e| Error::BadRequest(format!("body is not a Loki protobuf push: {e}")))?;
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (s, stream) in push.streams.into_iter().enumerate() {
        let labels = match parse_labels(&stream.labels) {
            Ok(labels) => labels,
            Err(e) => {
                errors.extend(
                    (0..stream.entries.len()).map(|v| format!("stream {s} entry {v}: {e}")),
                );
                continue;
            }
        };
        let base = StreamBase::new(&labels, tenant, now);
        for (v, entry) in stream.entries.into_iter().enumerate() {
            let ts_ms = entry
                .timestamp
                .map_or(now, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
            let built = if entry.structured_metadata.is_empty() {
                base.record(ts_ms, entry.line, max_record)
            } else {
                let metadata = entry
                    .structured_metadata
                    .into_iter()
                    .map(|pair| (pair.name, Value::String(pair.value)));
                record(
                    &labels, metadata, ts_ms, entry.line, tenant, now, max_record,
                )
                .map_err(|e| e.to_string())
            };
            match built {
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

/// A Prometheus label set as Loki sends it: `{name="value", ...}`, values
/// with Go escapes (`\"`, `\\`, `\n`).
fn parse_labels(text: &str) -> Result<Map<String, Value>, String> {
    let bad = |why: &str| format!("labels {text:?} are not a label set: {why}");
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| bad("expected {name=\"value\", ...}"))?;
    let mut labels = Map::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or_else(|| bad("expected ="))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(bad(&format!("{name:?} is not a label name")));
        }
        let mut chars = after.trim_start().char_indices();
        let quoted = after.trim_start();
        if !matches!(chars.next(), Some((_, '"'))) {
            return Err(bad("label values are quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, other)) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| bad("unterminated value"))?;
        labels.insert(name.to_string(), Value::String(value));
        rest = quoted[end..].trim_start();
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err(bad("expected , between labels")),
        };
    }
    Ok(labels)
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

/// What every entry of a stream without structured metadata of its own
/// shares — the labels as `structured_data` JSON, host, app, severity, or
/// the stream's error (a foreign `tenant_id`) — built once per stream
/// rather than once per entry.
struct StreamBase(Result<LogRecord, String>);

impl StreamBase {
    fn new(labels: &Map<String, Value>, tenant: &TenantId, now_ms: i64) -> Self {
        Self(
            record(
                labels,
                Map::new(),
                0,
                String::new(),
                tenant,
                now_ms,
                usize::MAX,
            )
            .map_err(|e| e.to_string()),
        )
    }

    fn record(&self, ts_ms: i64, line: String, max_record: usize) -> Result<LogRecord, String> {
        if line.len() > max_record {
            return Err(InvalidEntry::TooLarge {
                size: line.len(),
                limit: max_record,
            }
            .to_string());
        }
        let base = self.0.as_ref().map_err(Clone::clone)?;
        Ok(LogRecord {
            ts_ms,
            bytes: u32::try_from(line.len()).unwrap_or(u32::MAX),
            message: line,
            ..base.clone()
        })
    }
}

/// An entry's timestamp: nanoseconds since the epoch, as a string.
fn entry_ts(ts: &str) -> Result<i64, String> {
    let ns: i128 = ts
        .parse()
        .map_err(|_| InvalidEntry::NotNanoseconds(ts.to_string()).to_string())?;
    i64::try_from(ns / 1_000_000).map_err(|_| InvalidEntry::OutOfRange(ts.to_string()).to_string())
}

/// One entry of a stream, either encoding: labels and the entry's
/// structured metadata become fields.
fn record(
    labels: &Map<String, Value>,
    metadata: impl IntoIterator<Item = (String, Value)>,
    ts_ms: i64,
    line: String,
    tenant: &TenantId,
    now_ms: i64,
    max_record: usize,
) -> Result<LogRecord, InvalidEntry> {
    if line.len() > max_record {
        return Err(InvalidEntry::TooLarge {
            size: line.len(),
            limit: max_record,
        });
    }
    // Labels, then the entry's metadata under names the labels do not
    // have (a label wins; a repeated metadata name counts once, its first
    // value), sorted by name — a handful of fields, no map per entry.
    let metadata: Vec<(String, Value)> = metadata.into_iter().collect();
    let mut fields: Vec<(&str, &Value)> = labels.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for (k, v) in &metadata {
        if !fields.iter().any(|(name, _)| name == k) {
            fields.push((k, v));
        }
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let get = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    if let Some(Value::String(t)) = get("tenant_id")
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
            .find_map(|n| get(n).and_then(Value::as_str).map(str::to_string))
    };
    let host = pick(&["host", "hostname", "instance"]);
    let app = pick(&["app", "service_name", "job", "application"]);
    let severity =
        pick(&["level", "severity", "detected_level"]).and_then(|l| severity_from_name(&l));
    let structured_data = (!fields.is_empty()).then(|| {
        let mut out = Vec::with_capacity(32 * fields.len());
        out.push(b'{');
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, name);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, value);
        }
        out.push(b'}');
        String::from_utf8(out).unwrap_or_default()
    });
    Ok(LogRecord {
        ts_ms,
        received_ms: now_ms,
        host,
        app,
        severity,
        bytes: u32::try_from(line.len()).unwrap_or(u32::MAX),
        message: line,
        structured_data,
        parse_status: ParseStatus::Ok,
        input: "loki",
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(body: Value) -> (Vec<LogRecord>, Vec<String>) {
        let t = TenantId::new("acme").unwrap();
        parse_push(body.to_string().as_bytes(), &t, 0, 1024, &mut |_| Ok(())).unwrap()
    }

    #[test]
    fn labels_become_fields() {
        let (records, errors) = push(json!({"streams": [{
            "stream": {"job": "varlogs", "host": "web-1", "level": "error", "env": "prod"},
            "values": [
                ["1795687200123456789", "boom", {"trace_id": "abc", "env": "ignored", "level": "debug"}],
                ["1795687200123456790", "say \"hi\""],
            ]
        }]}));
        assert!(errors.is_empty(), "{errors:?}");
        let r = &records[0];
        assert_eq!(r.ts_ms, 1_795_687_200_123);
        assert_eq!(
            (r.host.as_deref(), r.app.as_deref(), r.severity),
            (Some("web-1"), Some("varlogs"), Some(3))
        );
        assert_eq!(r.message, "boom");
        // Labels win over metadata of the same name; fields sorted by name.
        assert_eq!(
            r.structured_data.as_deref(),
            Some(
                r#"{"env":"prod","host":"web-1","job":"varlogs","level":"error","trace_id":"abc"}"#
            )
        );
        assert_eq!(records[1].message, "say \"hi\"");
        assert_eq!(
            records[1].structured_data.as_deref(),
            Some(r#"{"env":"prod","host":"web-1","job":"varlogs","level":"error"}"#)
        );
    }

    #[test]
    fn label_sets_parse_with_escapes() {
        let labels = parse_labels(r#"{job="varlogs", host="web-1",msg="say \"hi\"\\n"}"#).unwrap();
        assert_eq!(labels["job"], "varlogs");
        assert_eq!(labels["host"], "web-1");
        assert_eq!(labels["msg"], "say \"hi\"\\n");
        assert!(parse_labels("{}").unwrap().is_empty());
        for bad in [
            "job=\"x\"",
            "{job=x}",
            "{job=\"x}",
            "{=\"x\"}",
            "{a=\"1\" b=\"2\"}",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn protobuf_pushes_decode_and_name_bad_streams() {
        use prost::Message as _;
        let push = proto::PushRequest {
            streams: vec![
                proto::StreamAdapter {
                    labels: r#"{job="varlogs", level="warn"}"#.into(),
                    entries: vec![proto::EntryAdapter {
                        timestamp: Some(proto::Timestamp {
                            seconds: 1_795_687_200,
                            nanos: 123_456_789,
                        }),
                        line: "disk full".into(),
                        structured_metadata: vec![proto::LabelPair {
                            name: "trace_id".into(),
                            value: "abc".into(),
                        }],
                    }],
                },
                proto::StreamAdapter {
                    labels: "job=broken".into(),
                    entries: vec![proto::EntryAdapter::default()],
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&push.encode_to_vec())
            .unwrap();
        let t = TenantId::new("acme").unwrap();
        let (records, errors) =
            parse_protobuf(&body, 1 << 20, &t, 0, 1024, &mut |_| Ok(())).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(
            (r.ts_ms, r.app.as_deref(), r.severity, r.message.as_str()),
            (1_795_687_200_123, Some("varlogs"), Some(4), "disk full")
        );
        assert!(
            r.structured_data
                .as_deref()
                .unwrap()
                .contains("\"trace_id\":\"abc\"")
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("stream 1 entry 0: labels"),
            "{errors:?}"
        );
        // Over the body limit once inflated: refused before inflating.
        assert!(matches!(
            parse_protobuf(&body, 8, &t, 0, 1024, &mut |_| Ok(())),
            Err(Error::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            parse_protobuf(b"not snappy at all", 1 << 20, &t, 0, 1024, &mut |_| Ok(())),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn bad_entries_name_the_problem_and_lose_nothing_else() {
        let (records, errors) = push(json!({"streams": [
            {"stream": {"tenant_id": "globex"}, "values": [["1", "theirs"]]},
            {"stream": {"job": "a"}, "values": [
                ["soon", "x"],
                [1],
                {"ts": "1", "line": "x"},
                "1 x",
                ["1000000", {"not": "a line"}],
                ["2000000", "kept", "metadata that is not an object", "extra"],
                ["3000000", "also kept", {"tenant_id": "globex"}],
            ]},
        ]}));
        assert_eq!(records.len(), 1, "{errors:?}");
        assert_eq!((records[0].ts_ms, records[0].message.as_str()), (2, "kept"));
        assert_eq!(errors.len(), 7, "{errors:?}");
        assert!(
            errors[0].starts_with("stream 0 entry 0: label tenant_id \"globex\""),
            "{errors:?}"
        );
        assert!(errors[1].contains("nanoseconds"), "{errors:?}");
        for e in &errors[2..6] {
            assert!(e.contains("expected [\"<unix epoch ns>\""), "{errors:?}");
        }
        assert!(
            errors[6].starts_with("stream 1 entry 6: label tenant_id"),
            "{errors:?}"
        );
        // A body that is not a push at all is one error for the request.
        let t = TenantId::new("acme").unwrap();
        assert!(parse_push(b"{\"streams\": 5}", &t, 0, 1024, &mut |_| Ok(())).is_err());
    }
}
