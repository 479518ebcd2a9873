//! GELF over HTTP: `POST /gelf`, as Graylog's GELF HTTP input takes it.
//!
//! The body is one GELF JSON object, or several one after another (Graylog's
//! bulk form: one per line), plain, gzip or zlib — recognised by their magic
//! bytes rather than `Content-Encoding`, since pygelf's HTTP handler sends
//! zlib while announcing `gzip,deflate`. The credential is the usual header
//! or, for senders that cannot set headers, the `_securenet_key` field of
//! the messages (crate::gelf). Success is `202 Accepted` with no body, as in
//! Graylog; messages without `short_message`, over
//! `ingest.http.max_record_bytes` or carrying another key are refused by
//! position (400, text) and the others stored.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::{LogRecord, ParseStatus};

use super::{IngestState, authenticate, text_error};
use crate::error::Error;
use crate::syslog::parse::{ParseContext, Parsed};

/// The messages of a body, each parsed or refused.
struct Messages {
    /// Each with its position in the body.
    parsed: Vec<(usize, Parsed)>,
    errors: Vec<String>,
}

pub async fn gelf(State(state): State<IngestState>, headers: HeaderMap, body: Body) -> Response {
    match receive(&state, headers, body).await {
        // Empty, as Graylog answers (typed, as every answer of the API is).
        Ok(errors) if errors.is_empty() => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "",
        )
            .into_response(),
        Ok(errors) => {
            let shown: Vec<_> = errors.iter().take(20).cloned().collect();
            let text = format!("{} messages rejected: {}\n", errors.len(), shown.join("; "));
            (StatusCode::BAD_REQUEST, text).into_response()
        }
        Err(e) => text_error(e),
    }
}

async fn receive(
    state: &IngestState,
    headers: HeaderMap,
    body: Body,
) -> Result<Vec<String>, Error> {
    // With a credential header, refuse a bad one before reading the body.
    let presented = control::auth::presented_key(&headers).map(str::to_string);
    let early = match &presented {
        Some(_) => Some(authenticate(&state.store, &headers).await?),
        None => None,
    };
    let mut plain = headers.clone();
    plain.remove(header::CONTENT_ENCODING);
    let limit = state.config.max_body_bytes;
    let wire = super::body::read_wire(&plain, body, limit).await?;
    let max_record = state.config.max_record_bytes;
    let now = schemas::time::now_ms();
    let (messages, reservation) = state
        .parse(wire, move |bytes, charge| {
            let messages = parse_body(bytes, limit, max_record, now);
            for (_, p) in &messages.parsed {
                charge(&p.record)?;
            }
            Ok(messages)
        })
        .await?;
    let Messages { parsed, mut errors } = messages;
    // The request's key: the header's, else the first one a message carries.
    let key = presented.or_else(|| parsed.iter().find_map(|(_, p)| p.api_key.clone()));
    let principal = match (early, &key) {
        (Some(p), _) => p,
        (None, Some(key)) => {
            let mut keyed = HeaderMap::new();
            keyed.insert(
                "x-api-key",
                HeaderValue::from_str(key).map_err(|_| control::Error::InvalidCredentials)?,
            );
            authenticate(&state.store, &keyed).await?
        }
        (None, None) => return Err(control::Error::MissingCredentials.into()),
    };
    state
        .limits
        .check(&principal.tenant)
        .map_err(Error::RateLimited)?;
    let mut records: Vec<LogRecord> = Vec::with_capacity(parsed.len());
    for (i, p) in parsed {
        match (&p.api_key, p.unreadable_key) {
            (_, true) => errors.push(format!("message {i}: _securenet_key is not a string")),
            (Some(k), _) if Some(k) != key.as_ref() => errors.push(format!(
                "message {i}: carries another API key than the request's credential"
            )),
            _ => records.push(p.record),
        }
    }
    if !records.is_empty() || !errors.is_empty() {
        state
            .store_records(
                principal.tenant,
                "gelf_http",
                records,
                errors.len(),
                reservation,
            )
            .await?;
    }
    Ok(errors)
}

/// A body → messages: inflated by its magic bytes, then JSON objects one
/// after another. A syntax error ends the body (what follows cannot be
/// framed); the messages before it are kept.
fn parse_body(bytes: &[u8], limit: usize, max_record: usize, now: i64) -> Messages {
    let ctx = ParseContext {
        bsd_zone: chrono_tz::Tz::UTC,
        received_ms: now,
        keep_raw: false,
        source_ip: None,
        input: "gelf_http",
    };
    let mut out = Messages {
        parsed: Vec::new(),
        errors: Vec::new(),
    };
    let payload = match crate::gelf::inflate(bytes, limit) {
        Ok((_, true)) => {
            out.errors
                .push(format!("the body inflates to more than {limit} bytes"));
            return out;
        }
        Ok((payload, false)) => payload,
        Err(why) => {
            out.errors.push(format!("the body is {why}"));
            return out;
        }
    };
    let stream = serde_json::Deserializer::from_slice(&payload).into_iter::<crate::gelf::Fields>();
    for (i, message) in stream.enumerate() {
        match message {
            Ok(fields) => {
                let p = crate::gelf::from_fields(fields, &ctx);
                if p.record.parse_status != ParseStatus::Ok {
                    out.errors
                        .push(format!("message {i}: short_message is missing"));
                } else if p.record.message.len() > max_record {
                    out.errors.push(format!(
                        "message {i}: short_message is {} bytes, over the limit of {max_record} bytes",
                        p.record.message.len()
                    ));
                } else {
                    let mut p = p;
                    p.record.bytes = u32::try_from(p.record.message.len()).unwrap_or(u32::MAX);
                    out.parsed.push((i, p));
                }
            }
            Err(e) => {
                out.errors
                    .push(format!("message {i}: not a GELF JSON object: {e}"));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_bodies_keep_the_good_messages_and_name_the_bad() {
        let body = br#"{"version":"1.1","host":"a","short_message":"one","_securenet_key":"k"}
{"version":"1.1","host":"b"}
{"version":"1.1","host":"c","short_message":"three","level":2}
{"broken": "#;
        let m = parse_body(body, 1 << 20, 1024, 0);
        let messages: Vec<_> = m
            .parsed
            .iter()
            .map(|(i, p)| (*i, p.record.message.as_str()))
            .collect();
        assert_eq!(messages, [(0, "one"), (2, "three")]);
        assert_eq!(m.parsed[0].1.api_key.as_deref(), Some("k"));
        assert_eq!(m.parsed[1].1.record.severity, Some(2));
        assert_eq!(m.errors.len(), 2, "{:?}", m.errors);
        assert!(m.errors[0].starts_with("message 1: short_message is missing"));
        assert!(m.errors[1].starts_with("message 3: not a GELF JSON object"));
    }

    #[test]
    fn oversized_messages_and_bodies_are_named() {
        let body = format!(r#"{{"short_message":"{}"}}"#, "x".repeat(100));
        let m = parse_body(body.as_bytes(), 1 << 20, 64, 0);
        assert!(m.parsed.is_empty() && m.errors[0].contains("100 bytes, over the limit of 64"));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, body.as_bytes()).unwrap();
        let m = parse_body(&z.finish().unwrap(), 32, 1024, 0);
        assert!(m.errors[0].contains("more than 32 bytes"), "{:?}", m.errors);
    }
}
