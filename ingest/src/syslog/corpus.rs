//! The real-world corpus (`tests/data/syslog/corpus.jsonl`): syslog shapes
//! of the daemons, network gear and Windows forwarders users run, each with
//! the fields a careful operator expects. Every frame must parse to them;
//! the end-to-end suite sends the same corpus through the UDP, TCP and TLS
//! listeners.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::parse::{ParseContext, parse};

pub const CORPUS: &str = include_str!("../../../tests/data/syslog/corpus.jsonl");

/// Fields of `frame` that differ from `expect` (empty when all match).
/// `received_ms` anchors year-less BSD timestamps.
pub fn mismatches(frame: &str, expect: &Value, received_ms: i64) -> Vec<String> {
    let ctx = ParseContext {
        bsd_zone: chrono_tz::Tz::UTC,
        received_ms,
        keep_raw: false,
        source_ip: None,
        input: "test",
    };
    let r = parse(frame.as_bytes(), &ctx).record;
    let mut out = Vec::new();
    let Some(expect) = expect.as_object() else {
        return vec!["expect is not an object".into()];
    };
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    for (key, want) in expect {
        let got = match key.as_str() {
            "host" => text(&r.host),
            "app" => text(&r.app),
            "pid" => text(&r.pid),
            "msg_id" => text(&r.msg_id),
            "message" => Value::String(r.message.clone()),
            "facility" => r.facility.map_or(Value::Null, Value::from),
            "severity" => r.severity.map_or(Value::Null, Value::from),
            "ts" => {
                let want_ms = want
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.timestamp_millis());
                if want_ms != Some(r.ts_ms) {
                    out.push(format!(
                        "ts: want {want}, got {}",
                        DateTime::<Utc>::from_timestamp_millis(r.ts_ms).unwrap_or_default()
                    ));
                }
                continue;
            }
            "ts_md" => {
                let got = DateTime::<Utc>::from_timestamp_millis(r.ts_ms)
                    .unwrap_or_default()
                    .format("%m-%d %H:%M:%S")
                    .to_string();
                Value::String(got)
            }
            other => {
                out.push(format!("unknown expected field {other}"));
                continue;
            }
        };
        // Absent (null) expected means the parser must not invent a value.
        if &got != want {
            out.push(format!("{key}: want {want}, got {got}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26T10:00:00Z: year-less timestamps of the corpus are in the
    /// past year, so they resolve to 2026 (or 2025 for December ones).
    const RECEIVED: i64 = 1_795_687_200_000;

    #[test]
    fn every_corpus_frame_parses_to_its_expected_fields() {
        let mut failures = Vec::new();
        let mut n = 0;
        for line in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
            let case: Value = serde_json::from_str(line).unwrap();
            n += 1;
            let frame = case["frame"].as_str().unwrap();
            let wrong = mismatches(frame, &case["expect"], RECEIVED);
            if !wrong.is_empty() {
                failures.push(format!("{}: {}", case["name"], wrong.join("; ")));
            }
        }
        assert!(n >= 100, "{n} frames");
        assert!(
            failures.is_empty(),
            "{} of {n} frames:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
