//! `POST /api/ingest/logs`: NDJSON (`application/x-ndjson`,
//! `application/jsonl`) or JSON (`application/json`: one object, an array of
//! objects, or NDJSON sent with the JSON type, as many shippers do).
//!
//! Each line/element is parsed on its own: a malformed one gets an error in
//! the answer with its 1-based line (or array index) and does not keep the
//! valid ones from being stored. The answer is sent only once the valid
//! records are durable.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::{LogRecord, TenantId};
use serde::Serialize;

use super::{IngestState, body, error_response};
use crate::error::Error;

/// At most this many per-record errors are listed in one answer.
const MAX_LISTED_ERRORS: usize = 100;

#[derive(Debug, Serialize)]
pub struct RecordError {
    /// 1-based line number (NDJSON) or array position (JSON array).
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct IngestAnswer {
    pub accepted: usize,
    pub rejected: usize,
    pub errors: Vec<RecordError>,
}

pub async fn ingest_logs(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, &headers, body).await {
        Ok((status, answer)) => (status, Json(answer)).into_response(),
        Err(e) => error_response(e),
    }
}

async fn handle(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, IngestAnswer), Error> {
    let media = body::media_type(headers);
    let array_allowed = match media.as_str() {
        "application/json" => true,
        "application/x-ndjson"
        | "application/jsonl"
        | "application/json-lines"
        | "application/x-jsonlines" => false,
        _ => {
            // Authenticate before telling an anonymous caller anything.
            super::authenticate(&state.store, headers).await?;
            return Err(Error::UnsupportedContentType(media));
        }
    };
    let (principal, wire) = state
        .begin(headers, body, state.config.max_body_bytes)
        .await?;
    let now = schemas::time::now_ms();
    let tenant = principal.tenant.clone();
    let max_record = state.config.max_record_bytes;
    let (parsed, reservation) = state
        .parse(wire, move |bytes, charge| {
            parse(bytes, array_allowed, &tenant, now, max_record, charge)
        })
        .await?;
    let accepted = parsed.records.len();
    state
        .store_records(
            principal.tenant,
            "http",
            parsed.records,
            parsed.rejected,
            reservation,
        )
        .await?;
    let answer = IngestAnswer {
        accepted,
        rejected: parsed.rejected,
        errors: parsed.errors,
    };
    // Nothing stored and something wrong: the request as a whole failed.
    let status = if accepted == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, answer))
}

pub struct Parsed {
    pub records: Vec<LogRecord>,
    pub rejected: usize,
    pub errors: Vec<RecordError>,
    /// Records already charged to the budget.
    charged: usize,
}

impl Parsed {
    fn reject(&mut self, line: usize, error: String) {
        self.rejected += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(RecordError { line, error });
        }
    }
}

/// Parses a body into records; per-record problems are collected, a body
/// that cannot be split into records at all is a `BadRequest`. `charge`
/// is called with each record as it is built (the in-flight budget); its
/// error stops parsing.
pub fn parse(
    bytes: &[u8],
    array_allowed: bool,
    tenant: &TenantId,
    now_ms: i64,
    max_record_bytes: usize,
    charge: &mut dyn FnMut(&LogRecord) -> Result<(), Error>,
) -> Result<Parsed, Error> {
    let mut out = Parsed {
        records: Vec::new(),
        rejected: 0,
        errors: Vec::new(),
        charged: 0,
    };
    let first = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Err(Error::BadRequest(
            "request body is empty: send at least one log object".into(),
        ));
    };
    if array_allowed && bytes[first] == b'[' {
        // Element by element: nothing is built for the whole array first.
        let mut stopped: Option<Error> = None;
        let walked = each_element(bytes, &mut |i, raw| {
            push(
                &mut out,
                i + 1,
                raw.get().as_bytes(),
                tenant,
                now_ms,
                max_record_bytes,
            );
            charge_last(&mut out, charge).map_err(|e| {
                stopped = Some(e);
            })
        });
        if let Some(e) = stopped {
            return Err(e);
        }
        walked.map_err(|e| Error::BadRequest(format!("body is not a valid JSON array: {e}")))?;
        return Ok(out);
    }
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        push(&mut out, i + 1, line, tenant, now_ms, max_record_bytes);
        charge_last(&mut out, charge)?;
    }
    Ok(out)
}

/// Calls `f` with each element of the JSON array `bytes`, in order, as
/// the array is read; `Err(())` from `f` stops the walk.
fn each_element<'a>(
    bytes: &'a [u8],
    f: &mut dyn FnMut(usize, &'a serde_json::value::RawValue) -> Result<(), ()>,
) -> Result<(), serde_json::Error> {
    use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};
    struct Each<'f, 'a>(
        &'f mut dyn FnMut(usize, &'a serde_json::value::RawValue) -> Result<(), ()>,
    );
    impl<'a> Visitor<'a> for Each<'_, 'a> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of log objects")
        }
        fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(raw) = seq.next_element::<&'a serde_json::value::RawValue>()? {
                (self.0)(i, raw).map_err(|()| A::Error::custom("stopped"))?;
                i += 1;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_seq(Each(f))?;
    de.end()
}

/// Charges the record just pushed, if the last line made one.
fn charge_last(
    out: &mut Parsed,
    charge: &mut dyn FnMut(&LogRecord) -> Result<(), Error>,
) -> Result<(), Error> {
    if out.charged < out.records.len() {
        out.charged = out.records.len();
        if let Some(r) = out.records.last() {
            charge(r)?;
        }
    }
    Ok(())
}

fn push(out: &mut Parsed, line: usize, raw: &[u8], tenant: &TenantId, now_ms: i64, max: usize) {
    if raw.len() > max {
        out.reject(
            line,
            format!(
                "record is {} bytes, over the limit of {max} bytes",
                raw.len()
            ),
        );
        return;
    }
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => {
            out.reject(
                line,
                format!(
                    "record is not valid UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            );
            return;
        }
    };
    match crate::json::parse_record(text, tenant, now_ms, "http") {
        Ok(r) => out.records.push(r),
        Err(e) => out.reject(line, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn free(_: &LogRecord) -> Result<(), Error> {
        Ok(())
    }

    /// The budget is consulted as records are built: parsing stops at the
    /// first record that does not fit.
    #[test]
    fn parsing_stops_when_the_budget_says_so() {
        let body = "{}\n".repeat(1000);
        let mut charged = 0usize;
        let mut budget = |r: &LogRecord| {
            charged += r.approx_size();
            if charged > 10_000 {
                Err(Error::Overloaded {
                    retry_after_secs: 1,
                })
            } else {
                Ok(())
            }
        };
        let r = parse(body.as_bytes(), false, &acme(), 0, 1024, &mut budget);
        assert!(matches!(r, Err(Error::Overloaded { .. })));
        // A `{}` record is charged its real size, not 64 bytes.
        assert!(charged / 10_000 <= 1 && charged > 10_000);
        let one = parse(b"{}", false, &acme(), 0, 1024, &mut free).unwrap();
        assert!(one.records[0].approx_size() >= std::mem::size_of::<LogRecord>());
    }

    #[test]
    fn ndjson_with_bad_lines_keeps_the_good_ones() {
        let body = b"{\"message\":\"a\"}\n{oops\n\n{\"message\":\"b\"}\r\n\xff\xfe\n[1]\n";
        let p = parse(body, true, &acme(), 0, 1024, &mut free).unwrap();
        let msgs: Vec<_> = p.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(msgs, ["a", "b"]);
        assert_eq!(p.rejected, 3);
        let lines: Vec<_> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5, 6]);
        assert!(
            p.errors[0].error.starts_with("invalid JSON"),
            "{}",
            p.errors[0].error
        );
        assert!(p.errors[1].error.contains("UTF-8"));
        assert!(p.errors[2].error.contains("expected a JSON object"));
    }

    #[test]
    fn json_array_elements_are_records() {
        let body = br#" [{"message":"a"}, 7, {"message":"c"}]"#;
        let p = parse(body, true, &acme(), 0, 1024, &mut free).unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.errors[0].line, 2);
        // An array is not NDJSON: with the NDJSON type it is one bad line.
        let p = parse(body, false, &acme(), 0, 1024, &mut free).unwrap();
        assert_eq!((p.records.len(), p.rejected), (0, 1));
    }

    #[test]
    fn broken_array_and_empty_body_are_bad_requests() {
        assert!(matches!(
            parse(b"[{\"a\":1},", true, &acme(), 0, 1024, &mut free),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            parse(b" \n ", true, &acme(), 0, 1024, &mut free),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn oversized_record_is_rejected_alone() {
        let big = format!("{{\"message\":\"{}\"}}", "x".repeat(2000));
        let body = format!("{big}\n{{\"message\":\"small\"}}\n");
        let p = parse(body.as_bytes(), false, &acme(), 0, 1024, &mut free).unwrap();
        assert_eq!(p.records.len(), 1);
        assert!(p.errors[0].error.contains("over the limit of 1024 bytes"));
    }
}
