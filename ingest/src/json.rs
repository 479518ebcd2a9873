//! JSON log object → [`LogRecord`].
//!
//! Field names follow what forwarders send (Vector, Fluent Bit, Logstash,
//! ECS, plain application loggers); the first alias present wins, the rest of
//! the object is kept as `structured_data`. A record without a message is
//! valid (structured events); a record that is not an object, or whose
//! well-known fields have the wrong type, is an error for that record only.

use chrono::DateTime;
use schemas::logs::severity_from_name;
use schemas::{LogRecord, TenantId};
use serde_json::{Map, Value};

const TS: &[&str] = &["ts", "timestamp", "@timestamp", "time", "date"];
const HOST: &[&str] = &["host", "hostname"];
const APP: &[&str] = &["app", "program", "appname", "app_name", "ident", "service"];
const PID: &[&str] = &["pid", "procid"];
const SEVERITY: &[&str] = &["severity", "level", "log.level", "loglevel"];
const FACILITY: &[&str] = &["facility"];
const MSG_ID: &[&str] = &["msg_id", "msgid"];
const MESSAGE: &[&str] = &["message", "msg", "log", "_raw"];
const SOURCE_IP: &[&str] = &["source_ip", "src_ip", "client_ip"];

/// Facility names of RFC 5424 §6.2.1, by number.
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// Converts one JSON value into a record for `tenant`.
///
/// `received_ms` stamps the record and is the event time when the object
/// has none; `bytes` is its size as received.
pub fn to_record(
    value: Value,
    tenant: &TenantId,
    received_ms: i64,
    bytes: usize,
    input: &'static str,
) -> Result<LogRecord, String> {
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "expected a JSON object, found {}",
            type_name(&value)
        ));
    };
    if let Some(t) = obj.remove("tenant_id") {
        let matches = t.as_str().is_some_and(|s| s == tenant.as_str());
        if !matches {
            return Err(format!(
                "tenant_id {t} does not match the organization of the API key ({tenant})"
            ));
        }
    }
    let ts_ms = match take(&mut obj, TS) {
        None | Some(Value::Null) => received_ms,
        Some(v) => parse_time(&v)?,
    };
    let host = take_string(&mut obj, HOST)?;
    let app = take_string(&mut obj, APP)?;
    let pid = match take(&mut obj, PID) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s),
        Some(v) => {
            return Err(format!(
                "field pid: expected a string or number, found {}",
                type_name(&v)
            ));
        }
    };
    let severity = match take(&mut obj, SEVERITY) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s @ 0..=7) => Some(s as u8),
            _ => {
                return Err(format!(
                    "field severity: {n} is not a syslog severity 0..=7"
                ));
            }
        },
        Some(Value::String(s)) => Some(
            severity_from_name(&s).ok_or_else(|| format!("field severity: unknown level {s:?}"))?,
        ),
        Some(v) => {
            return Err(format!(
                "field severity: expected a number or name, found {}",
                type_name(&v)
            ));
        }
    };
    let facility = match take(&mut obj, FACILITY) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(f @ 0..=23) => Some(f as u8),
            _ => {
                return Err(format!(
                    "field facility: {n} is not a syslog facility 0..=23"
                ));
            }
        },
        Some(Value::String(s)) => Some(
            FACILITIES
                .iter()
                .position(|f| f.eq_ignore_ascii_case(&s))
                .ok_or_else(|| format!("field facility: unknown facility {s:?}"))?
                as u8,
        ),
        Some(v) => {
            return Err(format!(
                "field facility: expected a number or name, found {}",
                type_name(&v)
            ));
        }
    };
    let msg_id = take_string(&mut obj, MSG_ID)?;
    let message = take_string(&mut obj, MESSAGE)?.unwrap_or_default();
    let source_ip = take_string(&mut obj, SOURCE_IP)?;
    let structured_data = (!obj.is_empty()).then(|| Value::Object(obj).to_string());
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
        bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
    })
}

fn take(obj: &mut Map<String, Value>, names: &[&str]) -> Option<Value> {
    names.iter().find_map(|n| obj.remove(*n))
}

fn take_string(obj: &mut Map<String, Value>, names: &[&str]) -> Result<Option<String>, String> {
    let Some(name) = names.iter().find(|n| obj.contains_key(**n)) else {
        return Ok(None);
    };
    match obj.remove(*name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        // ECS-style `host: {"name": ...}`.
        Some(Value::Object(mut o)) if *name == "host" => match o.remove("name") {
            Some(Value::String(s)) => Ok(Some(s)),
            _ => Err("field host: expected a string or an object with a name".into()),
        },
        Some(v) => Err(format!(
            "field {name}: expected a string, found {}",
            type_name(&v)
        )),
    }
}

/// RFC 3339 text, or a Unix epoch number in seconds, milliseconds,
/// microseconds or nanoseconds (told apart by magnitude, as Vector does).
fn parse_time(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| format!("field ts: {s:?} is not an RFC 3339 timestamp ({e})")),
        Value::Number(n) => {
            let f = n
                .as_f64()
                .ok_or_else(|| format!("field ts: {n} is not a number"))?;
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
                return Err(format!("field ts: {n} is out of range"));
            }
            Ok(ms as i64)
        }
        other => Err(format!(
            "field ts: expected an RFC 3339 string or epoch number, found {}",
            type_name(other)
        )),
    }
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
    use serde_json::json;

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn rec(v: Value) -> Result<LogRecord, String> {
        to_record(v, &acme(), 1_000, 42, "http")
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
        assert_eq!(r.bytes, 42);
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
                "field severity: unknown level \"loud\"",
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
            let err = rec(v.clone()).unwrap_err();
            assert!(err.starts_with(want), "{v}: {err}");
        }
    }
}
