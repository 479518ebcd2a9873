//! JSON log object → [`LogRecord`].
//!
//! Field names follow what forwarders send (Vector, Fluent Bit, Logstash,
//! ECS, plain application loggers); the first alias present wins, the rest of
//! the object is kept as `structured_data`. A record without a message is
//! valid (structured events); a record that is not an object, or whose
//! well-known fields have the wrong type, is an error for that record only.

use chrono::DateTime;
use schemas::logs::{facility_from_name, severity_from_name};
use schemas::{LogRecord, TenantId};
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

const TS: &[&str] = &["ts", "timestamp", "@timestamp", "time", "date"];
const HOST: &[&str] = &["host", "hostname"];
const APP: &[&str] = &["app", "program", "appname", "app_name", "ident", "service"];
const PID: &[&str] = &["pid", "procid"];
const SEVERITY: &[&str] = &["severity", "level", "log.level", "loglevel"];
const FACILITY: &[&str] = &["facility"];
const MSG_ID: &[&str] = &["msg_id", "msgid"];
const MESSAGE: &[&str] = &["message", "msg", "log", "_raw"];
const SOURCE_IP: &[&str] = &["source_ip", "src_ip", "client_ip"];

/// The well-known columns a JSON key can fill.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Tenant,
    Ts,
    Host,
    App,
    Pid,
    Severity,
    Facility,
    MsgId,
    Message,
    SourceIp,
}

const COLUMNS: [(Column, &[&str]); 10] = [
    (Column::Tenant, &["tenant_id"]),
    (Column::Ts, TS),
    (Column::Host, HOST),
    (Column::App, APP),
    (Column::Pid, PID),
    (Column::Severity, SEVERITY),
    (Column::Facility, FACILITY),
    (Column::MsgId, MSG_ID),
    (Column::Message, MESSAGE),
    (Column::SourceIp, SOURCE_IP),
];

/// Which column `key` fills (index into [`COLUMNS`]) and its alias rank
/// (0 = preferred). A `match` compiles to a few length/byte comparisons;
/// this runs for every key of every record.
fn column_of(key: &str) -> Option<(usize, usize)> {
    Some(match key {
        "tenant_id" => (0, 0),
        "ts" => (1, 0),
        "timestamp" => (1, 1),
        "@timestamp" => (1, 2),
        "time" => (1, 3),
        "date" => (1, 4),
        "host" => (2, 0),
        "hostname" => (2, 1),
        "app" => (3, 0),
        "program" => (3, 1),
        "appname" => (3, 2),
        "app_name" => (3, 3),
        "ident" => (3, 4),
        "service" => (3, 5),
        "pid" => (4, 0),
        "procid" => (4, 1),
        "severity" => (5, 0),
        "level" => (5, 1),
        "log.level" => (5, 2),
        "loglevel" => (5, 3),
        "facility" => (6, 0),
        "msg_id" => (7, 0),
        "msgid" => (7, 1),
        "message" => (8, 0),
        "msg" => (8, 1),
        "log" => (8, 2),
        "_raw" => (8, 3),
        "source_ip" => (9, 0),
        "src_ip" => (9, 1),
        "client_ip" => (9, 2),
        _ => return None,
    })
}

/// A JSON object key, borrowed from the input unless it had escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level entries of a JSON object, values left unparsed (their
/// JSON text).
struct Entries<'a>(Vec<(Key<'a>, &'a str)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Entries<'de>, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((key, value.get()));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Why one JSON log object was not stored; its text is what the client
/// reads for that record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("tenant_id {found} does not match the organization of the API key ({expected})")]
    WrongTenant { found: String, expected: TenantId },
    /// A well-known field of the wrong type or out of range.
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

fn field_error(field: &'static str, problem: impl std::fmt::Display) -> RecordError {
    RecordError::Field {
        field,
        problem: problem.to_string(),
    }
}

/// Parses one JSON log object (its text) into a record for `tenant`.
///
/// Single pass, no intermediate JSON tree: well-known fields are decoded
/// from their raw text, every other field is copied verbatim into
/// `structured_data`. `received_ms` stamps the record and is the event time
/// when the object has none; the record's size is the text's length.
pub fn parse_record(
    text: &str,
    tenant: &TenantId,
    received_ms: i64,
    input: &'static str,
) -> Result<LogRecord, RecordError> {
    parse_record_with(text, tenant, received_ms, input, &[])
}

/// [`parse_record`], adding `extra` string fields to `structured_data`
/// (e.g. the Elasticsearch index or Splunk sourcetype a record came with);
/// a field of the same name in the object itself wins.
pub fn parse_record_with(
    text: &str,
    tenant: &TenantId,
    received_ms: i64,
    input: &'static str,
    extra: &[(&str, &str)],
) -> Result<LogRecord, RecordError> {
    let first = text.trim_start().as_bytes().first().copied();
    if first != Some(b'{') {
        return match serde_json::from_str::<Value>(text) {
            Ok(v) => Err(RecordError::NotAnObject(type_name(&v))),
            Err(e) => Err(RecordError::InvalidJson(e.to_string())),
        };
    }
    let Entries(entries) =
        serde_json::from_str(text).map_err(|e| RecordError::InvalidJson(e.to_string()))?;
    map_entries(&entries, text.len(), tenant, received_ms, input, extra)
}

/// The mapping of [`parse_record_with`] over an object's top-level entries
/// (key, value's JSON text), for receivers that wrote the text themselves
/// and know where its members are (Fluent's MessagePack): `size` is the
/// object text's length.
pub(crate) fn map_entries(
    entries: &[(Key<'_>, &str)],
    size: usize,
    tenant: &TenantId,
    received_ms: i64,
    input: &'static str,
    extra: &[(&str, &str)],
) -> Result<LogRecord, RecordError> {
    // Best-ranked entry per column.
    let mut chosen: [Option<(usize, usize)>; COLUMNS.len()] = [None; COLUMNS.len()];
    for (i, (key, _)) in entries.iter().enumerate() {
        if let Some((c, rank)) = column_of(&key.0)
            && chosen[c].is_none_or(|(r, _)| rank < r)
        {
            chosen[c] = Some((rank, i));
        }
    }
    let raw = |c: Column| {
        let idx = COLUMNS.iter().position(|(col, _)| *col == c)?;
        chosen[idx].map(|(_, i)| entries[i].1)
    };
    if let Some(t) = raw(Column::Tenant) {
        let matches = serde_json::from_str::<&str>(t).is_ok_and(|s| s == tenant.as_str())
            || serde_json::from_str::<String>(t).is_ok_and(|s| s == tenant.as_str());
        if !matches {
            return Err(RecordError::WrongTenant {
                found: t.to_string(),
                expected: tenant.clone(),
            });
        }
    }
    let ts_ms = match raw(Column::Ts) {
        None | Some("null") => received_ms,
        Some(v) => parse_time(v)?,
    };
    let host = match raw(Column::Host) {
        Some(v) if v.starts_with('{') => {
            // ECS-style `host: {"name": ...}`.
            let obj: Value = serde_json::from_str(v).map_err(|e| field_error("host", e))?;
            match obj.get("name") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => {
                    return Err(field_error(
                        "host",
                        "expected a string or an object with a name",
                    ));
                }
            }
        }
        v => text_field("host", v)?,
    };
    let app = text_field("app", raw(Column::App))?;
    let pid = text_field("pid", raw(Column::Pid))?;
    let severity = syslog_number(raw(Column::Severity), SYSLOG_SEVERITY)?;
    let facility = syslog_number(raw(Column::Facility), SYSLOG_FACILITY)?;
    let msg_id = text_field("msg_id", raw(Column::MsgId))?;
    let message = text_field("message", raw(Column::Message))?.unwrap_or_default();
    let source_ip = text_field("source_ip", raw(Column::SourceIp))?;

    // Everything not chosen above, verbatim.
    let used: Vec<usize> = chosen.iter().flatten().map(|(_, i)| *i).collect();
    let mut rest = String::new();
    for (i, (key, value)) in entries.iter().enumerate() {
        if used.contains(&i) {
            continue;
        }
        rest.push(if rest.is_empty() { '{' } else { ',' });
        match key.0 {
            // Keys without escapes are copied as they came.
            Cow::Borrowed(k) => {
                rest.push('"');
                rest.push_str(k);
                rest.push('"');
            }
            Cow::Owned(ref k) => rest.push_str(&Value::from(k.as_str()).to_string()),
        }
        rest.push(':');
        rest.push_str(value);
    }
    for (key, value) in extra {
        if entries.iter().any(|(k, _)| k.0 == *key) {
            continue;
        }
        rest.push(if rest.is_empty() { '{' } else { ',' });
        rest.push_str(&Value::from(*key).to_string());
        rest.push(':');
        rest.push_str(&Value::from(*value).to_string());
    }
    let structured_data = (!rest.is_empty()).then(|| {
        rest.push('}');
        rest
    });
    Ok(LogRecord {
        ts_ms,
        received_ms,
        host,
        app,
        pid,
        severity,
        facility,
        msg_id,
        message,
        source_ip,
        structured_data,
        raw: None,
        parse_status: schemas::ParseStatus::Ok,
        input,
        bytes: u32::try_from(size).unwrap_or(u32::MAX),
    })
}

/// Converts a JSON value into a record (for receivers that already hold a
/// parsed value, e.g. a HEC `event` object).
pub fn to_record(
    value: &Value,
    tenant: &TenantId,
    received_ms: i64,
    input: &'static str,
) -> Result<LogRecord, RecordError> {
    parse_record(&value.to_string(), tenant, received_ms, input)
}

/// A syslog number field: its name in messages, its maximum, and how to
/// read a name.
struct SyslogNumber {
    field: &'static str,
    what: &'static str,
    max: u64,
    by_name: fn(&str) -> Option<u8>,
}

const SYSLOG_SEVERITY: SyslogNumber = SyslogNumber {
    field: "severity",
    what: "syslog severity",
    max: 7,
    by_name: severity_from_name,
};

const SYSLOG_FACILITY: SyslogNumber = SyslogNumber {
    field: "facility",
    what: "syslog facility",
    max: 23,
    by_name: facility_from_name,
};

/// Decodes a severity or facility given as a number or a name.
fn syslog_number(raw: Option<&str>, n: SyslogNumber) -> Result<Option<u8>, RecordError> {
    let field = n.field;
    match raw {
        None | Some("null") => Ok(None),
        Some(v) if v.starts_with('"') => {
            let s: String = serde_json::from_str(v).map_err(|e| field_error(field, e))?;
            (n.by_name)(&s)
                .map(Some)
                .ok_or_else(|| field_error(field, format!("unknown name {s:?}")))
        }
        Some(v) if looks_numeric(v) => match v.parse::<u64>() {
            Ok(x) if x <= n.max => Ok(Some(x as u8)),
            _ => Err(field_error(
                field,
                format!("{v} is not a {} 0..={}", n.what, n.max),
            )),
        },
        Some(v) => Err(field_error(
            field,
            format!("expected a number or name, found {}", raw_type_name(v)),
        )),
    }
}

/// Decodes a text column from raw JSON: strings as themselves, numbers and
/// booleans as their text, null as absent.
fn text_field(name: &'static str, raw: Option<&str>) -> Result<Option<String>, RecordError> {
    match raw {
        None | Some("null") => Ok(None),
        // A validated JSON string without backslashes has no escapes: its
        // text is the content between the quotes.
        Some(v) if v.starts_with('"') && !v.contains('\\') => {
            Ok(Some(v[1..v.len() - 1].to_string()))
        }
        Some(v) if v.starts_with('"') => serde_json::from_str::<String>(v)
            .map(Some)
            .map_err(|e| field_error(name, e)),
        Some(v) if v == "true" || v == "false" || looks_numeric(v) => Ok(Some(v.to_string())),
        Some(v) => Err(field_error(
            name,
            format!("expected a string, found {}", raw_type_name(v)),
        )),
    }
}

fn looks_numeric(v: &str) -> bool {
    v.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

fn raw_type_name(v: &str) -> &'static str {
    match v.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// RFC 3339 text, or a Unix epoch number in seconds, milliseconds,
/// microseconds or nanoseconds (told apart by magnitude, as Vector does).
fn parse_time(raw: &str) -> Result<i64, RecordError> {
    if raw.starts_with('"') {
        let s: String = serde_json::from_str(raw).map_err(|e| field_error("ts", e))?;
        return DateTime::parse_from_rfc3339(&s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| field_error("ts", format!("{s:?} is not an RFC 3339 timestamp ({e})")));
    }
    if !looks_numeric(raw) {
        return Err(field_error(
            "ts",
            format!(
                "expected an RFC 3339 string or epoch number, found {}",
                raw_type_name(raw)
            ),
        ));
    }
    let f: f64 = raw
        .parse()
        .map_err(|_| field_error("ts", format!("{raw} is not a number")))?;
    let abs = f.abs();
    let ms = if abs < 1e11 {
        f * 1e3
    } else if abs < 1e14 {
        f
    } else if abs < 1e17 {
        f / 1e3
    } else {
        f / 1e6
    };
    // Beyond ±100k years chrono cannot represent the date.
    if !ms.is_finite() || ms.abs() > 3.0e15 {
        return Err(field_error("ts", format!("{raw} is out of range")));
    }
    Ok(ms as i64)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_table_and_match_agree() {
        for (c, (_, aliases)) in COLUMNS.iter().enumerate() {
            for (rank, alias) in aliases.iter().enumerate() {
                assert_eq!(column_of(alias), Some((c, rank)), "{alias}");
            }
        }
        assert_eq!(column_of("user"), None);
    }

    #[test]
    fn escaped_strings_decode() {
        let r = parse_record(
            r#"{"message": "a\"b\u00e9\n", "host": "h\\1"}"#,
            &acme(),
            0,
            "http",
        )
        .unwrap();
        assert_eq!(r.message, "a\"b\u{e9}\n");
        assert_eq!(r.host.as_deref(), Some("h\\1"));
    }
    use serde_json::json;

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn rec(v: Value) -> Result<LogRecord, RecordError> {
        to_record(&v, &acme(), 1_000, "http")
    }

    #[test]
    fn maps_well_known_fields_and_keeps_the_rest() {
        let r = rec(json!({
            "@timestamp": "2026-11-26T10:00:00.250Z",
            "host": {"name": "web-1"},
            "program": "sshd",
            "pid": 4242,
            "level": "WARN",
            "facility": "authpriv",
            "msg": "Failed password for root",
            "src_ip": "203.0.113.9",
            "user": "root",
            "tenant_id": "acme"
        }))
        .unwrap();
        assert_eq!(r.ts_ms, 1_795_687_200_250);
        assert_eq!(r.host.as_deref(), Some("web-1"));
        assert_eq!(r.app.as_deref(), Some("sshd"));
        assert_eq!(r.pid.as_deref(), Some("4242"));
        assert_eq!(r.severity, Some(4));
        assert_eq!(r.facility, Some(10));
        assert_eq!(r.message, "Failed password for root");
        assert_eq!(r.source_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(r.structured_data.as_deref(), Some(r#"{"user":"root"}"#));
        assert_eq!(r.received_ms, 1_000);
        assert!(r.bytes > 0);
    }

    #[test]
    fn unknown_fields_are_kept_verbatim_in_order() {
        let text = r#"{"z": 1, "message": "m", "ctx": {"b": [1, 2], "a": "x"}, "msg": "alias", "k\"q": true}"#;
        let r = parse_record(text, &acme(), 5, "http").unwrap();
        assert_eq!(r.message, "m");
        assert_eq!(
            r.structured_data.as_deref(),
            Some(r#"{"z":1,"ctx":{"b": [1, 2], "a": "x"},"msg":"alias","k\"q":true}"#)
        );
        assert_eq!(r.bytes as usize, text.len());
        let sd: Value = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["k\"q"], true);
    }

    #[test]
    fn epoch_numbers_by_magnitude() {
        for (v, ms) in [
            (json!(1_700_000_000), 1_700_000_000_000),
            (json!(1_700_000_000.5), 1_700_000_000_500),
            (json!(1_700_000_000_123_i64), 1_700_000_000_123),
            (json!(1_700_000_000_123_456_i64), 1_700_000_000_123),
            (json!(1_700_000_000_123_456_789_i64), 1_700_000_000_123),
        ] {
            assert_eq!(
                rec(json!({"ts": v, "message": "x"})).unwrap().ts_ms,
                ms,
                "{v}"
            );
        }
        assert_eq!(rec(json!({"message": "x"})).unwrap().ts_ms, 1_000);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([1, 2]), "expected a JSON object, found an array"),
            (
                json!({"ts": true}),
                "field ts: expected an RFC 3339 string or epoch number, found a boolean",
            ),
            (
                json!({"ts": "yesterday"}),
                "field ts: \"yesterday\" is not an RFC 3339 timestamp",
            ),
            (
                json!({"severity": 9}),
                "field severity: 9 is not a syslog severity 0..=7",
            ),
            (
                json!({"level": "loud"}),
                "field severity: unknown name \"loud\"",
            ),
            (
                json!({"message": {"a": 1}}),
                "field message: expected a string, found an object",
            ),
            (
                json!({"tenant_id": "globex"}),
                "tenant_id \"globex\" does not match the organization of the API key (acme)",
            ),
        ];
        for (v, want) in cases {
            let err = rec(v.clone()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{v}: {err}");
        }
    }
}
