//! GELF (Graylog Extended Log Format) 1.1: the message → record mapping and
//! the transport details shared by the GELF listeners (`format = "gelf"` on
//! an `[[ingest.syslog]]` listener: UDP, TCP, TLS) and `POST /gelf`.
//!
//! - **Compression**: zlib or gzip, recognised by their magic bytes (UDP
//!   senders compress; pygelf's HTTP handler sends zlib while announcing
//!   `Content-Encoding: gzip,deflate`), inflated up to the listener's
//!   `max_frame_bytes` (a larger message is cut and marked `truncated`).
//! - **UDP chunks** ([`Assembler`]): `0x1e 0x0f`, an 8-byte message id, the
//!   sequence number and count (at most 128); a message whose chunks do not
//!   all arrive within 5 s, or that would exceed `max_frame_bytes`, is
//!   dropped and counted.
//! - **TCP/TLS**: messages end with a NUL byte.
//!
//! Fields: `host` → `host`, `short_message` → `message`, `timestamp`
//! (seconds, fractions allowed) → `ts`, `level` (syslog severity) →
//! `severity`, `_app`/`_application_name`/`_service`/
//! `_container_name`/`_tag`/`facility` → `app`, `_pid`/`_process_id` → `pid`; every
//! other field (`full_message`, `file`, `line`, additional `_fields` without
//! their underscore) is kept in `structured_data`. `_securenet_key` carries
//! the sender's API key where no header can (UDP, TCP, pygelf's HTTP
//! handler); it is removed before the record is stored.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::read::{GzDecoder, ZlibDecoder};
use schemas::logs::severity_from_name;
use schemas::{LogRecord, ParseStatus};
use serde_json::value::RawValue;

use crate::syslog::parse::{ParseContext, Parsed};

/// The additional field that carries an API key.
pub const KEY_FIELD: &str = "_securenet_key";

/// Chunks of a message must all arrive within this long (Graylog's value).
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most chunks in one message (the GELF specification's limit).
const MAX_CHUNKS: usize = 128;
/// Messages being reassembled at once per listener; beyond it the oldest
/// is dropped (a sender of endless first chunks cannot grow memory).
const MAX_PENDING: usize = 4096;

/// A payload as sent: zlib, gzip or plain, inflated up to `max` bytes.
/// `Ok((bytes, truncated))`; `Err` names what is wrong with the stream.
pub fn inflate(bytes: &[u8], max: usize) -> Result<(Cow<'_, [u8]>, bool), String> {
    fn read_bounded(
        mut reader: impl Read,
        max: usize,
        what: &str,
    ) -> Result<(Vec<u8>, bool), String> {
        let mut out = Vec::new();
        (&mut reader)
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("not valid {what}: {e}"))?;
        let truncated = out.len() > max;
        out.truncate(max);
        Ok((out, truncated))
    }
    match bytes {
        [0x1f, 0x8b, ..] => {
            read_bounded(GzDecoder::new(bytes), max, "gzip").map(|(b, t)| (Cow::Owned(b), t))
        }
        // zlib: CMF 0x78 and a header checksum that divides by 31.
        [0x78, flg, ..] if (0x7800u16 | u16::from(*flg)).is_multiple_of(31) => {
            read_bounded(ZlibDecoder::new(bytes), max, "zlib").map(|(b, t)| (Cow::Owned(b), t))
        }
        _ => Ok((Cow::Borrowed(bytes), false)),
    }
}

/// One GELF message → a record, lossless: what is not a GELF JSON object
/// is kept with `parse_status = error`, its text as the message.
pub fn parse(frame: &[u8], ctx: &ParseContext, max: usize) -> Parsed {
    let (payload, truncated) = match inflate(frame, max) {
        Ok(p) => p,
        Err(why) => return unparsed(frame, ctx, ParseStatus::Error, Some(why)),
    };
    let fields = match serde_json::from_slice::<Fields>(&payload) {
        Ok(fields) if !truncated => fields,
        Ok(_) => return unparsed(&payload, ctx, ParseStatus::Truncated, None),
        Err(_) if truncated => return unparsed(&payload, ctx, ParseStatus::Truncated, None),
        Err(e) => {
            return unparsed(
                &payload,
                ctx,
                ParseStatus::Error,
                Some(format!("not a GELF JSON object: {e}")),
            );
        }
    };
    let size = payload.len();
    let mut parsed = from_fields(fields, ctx);
    parsed.record.bytes = u32::try_from(size).unwrap_or(u32::MAX);
    parsed
}

/// A JSON object's members in the order they came, read without building
/// a map or a value per member: names borrowed (unless escaped), values
/// left as their JSON text — a GELF message is read once, front to back,
/// and what goes to the structured data is copied as it came, as the NDJSON
/// receiver does.
pub struct Fields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some((key, value)) =
                    map.next_entry::<crate::json::Key<'de>, &'de RawValue>()?
                {
                    out.push((key.0, value));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A JSON string's text (borrowed when it has no escapes), from its raw
/// JSON; `None` for any other value.
fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get();
    if !t.starts_with('"') {
        return None;
    }
    if !t.contains('\\') {
        // Validated JSON without escapes: the text between the quotes.
        return Some(Cow::Borrowed(&t[1..t.len() - 1]));
    }
    serde_json::from_str::<String>(t).ok().map(Cow::Owned)
}

/// An additional field's name without its underscore.
fn name(k: &str) -> &str {
    k.strip_prefix('_').unwrap_or(k)
}

/// A number's JSON text, as it came.
fn raw_number(raw: &RawValue) -> Option<&str> {
    let t = raw.get();
    t.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then_some(t)
}

/// A GELF object → a record and the key it carried. A member repeated in
/// the object counts once, its last value (as a JSON object read into a
/// map would have it).
pub fn from_fields(fields: Fields<'_>, ctx: &ParseContext) -> Parsed {
    let pairs = fields.0;
    // Where each name is last found.
    let at = |name: &str| pairs.iter().rposition(|(k, _)| k == name);
    // Strings as themselves, numbers as their text.
    let text = |raw: &RawValue| {
        raw_str(raw)
            .map(Cow::into_owned)
            .or_else(|| raw_number(raw).map(str::to_string))
    };
    let mut taken = vec![false; pairs.len()];
    let mut take = |i: Option<usize>| -> Option<&RawValue> {
        let i = i?;
        taken[i] = true;
        Some(pairs[i].1)
    };
    let (api_key, unreadable_key) = match take(at(KEY_FIELD)).map(raw_str) {
        Some(Some(key)) => (Some(key.into_owned()), false),
        Some(None) => (None, true),
        None => (None, false),
    };
    let host = take(at("host")).and_then(text);
    let message = take(at("short_message")).and_then(text);
    let pid = take(at("_pid").or_else(|| at("_process_id"))).and_then(text);
    let ts_ms = take(at("timestamp"))
        .and_then(|raw| match raw_number(raw) {
            Some(n) => n.parse::<f64>().ok(),
            None => raw_str(raw).and_then(|s| s.parse::<f64>().ok()),
        })
        .filter(|s| s.is_finite() && s.abs() < 1e13)
        .map_or(ctx.received_ms, |s| (s * 1000.0).round() as i64);
    let severity = take(at("level")).and_then(|raw| match raw_number(raw) {
        Some(n) => n.parse::<u64>().ok().filter(|l| *l <= 7).map(|l| l as u8),
        None => raw_str(raw).and_then(|s| severity_from_name(&s)),
    });
    take(at("version"));
    // The field `app` came from stays in structured data too (Docker's
    // container name, tag and image belong together there).
    let app = [
        "_app",
        "_application_name",
        "_service",
        "_container_name",
        "_tag",
        "facility",
    ]
    .iter()
    .find_map(|n| at(n).and_then(|i| text(pairs[i].1)));
    // Additional fields lose their underscore; the rest keep their names.
    // A name met again later (as written, or once its underscore is
    // gone) is written once, with the later value.
    let mut structured: Vec<u8> = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if taken[i] {
            continue;
        }
        let written = name(k);
        // The same member again later (whatever became of it), or a later
        // kept member written under the same name.
        let later = pairs[i + 1..]
            .iter()
            .enumerate()
            .any(|(j, (k2, _))| k2 == k || (!taken[i + 1 + j] && name(k2) == written));
        if later {
            continue;
        }
        structured.push(if structured.is_empty() { b'{' } else { b',' });
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut structured, written);
        structured.push(b':');
        structured.extend_from_slice(v.get().as_bytes());
    }
    if !structured.is_empty() {
        structured.push(b'}');
    }
    // Only UTF-8 was written (JSON text and serde_json's strings).
    let structured = String::from_utf8(structured).unwrap_or_default();
    let status = if message.is_some() {
        ParseStatus::Ok
    } else {
        ParseStatus::Error
    };
    Parsed {
        record: LogRecord {
            ts_ms,
            received_ms: ctx.received_ms,
            host,
            app,
            pid,
            severity,
            message: message.unwrap_or_default(),
            source_ip: ctx.source_ip.clone(),
            structured_data: (!structured.is_empty()).then_some(structured),
            parse_status: status,
            input: ctx.input,
            ..Default::default()
        },
        api_key,
        unreadable_key,
    }
}

/// A payload that is not a GELF object (or could not be inflated).
fn unparsed(bytes: &[u8], ctx: &ParseContext, status: ParseStatus, why: Option<String>) -> Parsed {
    let message = String::from_utf8_lossy(bytes).into_owned();
    // A key we cannot read must never route the message by its source.
    let unreadable_key = memchr::memmem::find(bytes, KEY_FIELD.as_bytes()).is_some();
    Parsed {
        record: LogRecord {
            ts_ms: ctx.received_ms,
            received_ms: ctx.received_ms,
            message,
            source_ip: ctx.source_ip.clone(),
            structured_data: why.map(|w| serde_json::json!({ "gelf_error": w }).to_string()),
            raw: Some(bytes.to_vec()),
            parse_status: status,
            input: ctx.input,
            bytes: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            ..Default::default()
        },
        api_key: None,
        unreadable_key,
    }
}

/// What became of one UDP datagram.
#[derive(Debug, PartialEq)]
pub enum Datagram {
    /// A whole message (a datagram that was not chunked, or the last
    /// missing chunk of one).
    Complete(Bytes),
    /// A chunk of a message still incomplete.
    Partial,
    /// A chunk that cannot be used, and why (`gelf_bad_chunk`,
    /// `gelf_too_large`).
    Refused(&'static str),
}

struct Pending {
    parts: Vec<Option<Bytes>>,
    have: usize,
    bytes: usize,
    started: Instant,
}

/// Reassembles chunked UDP messages of one listener.
pub struct Assembler {
    max_bytes: usize,
    pending: HashMap<(IpAddr, [u8; 8]), Pending>,
    /// Arrival order of the pending messages, for expiry and eviction.
    order: VecDeque<(Instant, (IpAddr, [u8; 8]))>,
}

impl Assembler {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            pending: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes one datagram from `peer`.
    pub fn accept(&mut self, peer: IpAddr, datagram: &[u8], now: Instant) -> Datagram {
        let [0x1e, 0x0f, rest @ ..] = datagram else {
            return Datagram::Complete(Bytes::copy_from_slice(datagram));
        };
        let (Some(id), Some(&seq), Some(&count)) = (rest.get(..8), rest.get(8), rest.get(9)) else {
            return Datagram::Refused("gelf_bad_chunk");
        };
        let (seq, count) = (seq as usize, count as usize);
        if count == 0 || count > MAX_CHUNKS || seq >= count {
            return Datagram::Refused("gelf_bad_chunk");
        }
        let data = &rest[10..];
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(id);
        let key = (peer, key_id);
        if !self.pending.contains_key(&key) {
            // Evict the oldest message still pending; entries of messages
            // that completed meanwhile are skipped (they free nothing).
            while self.pending.len() >= MAX_PENDING {
                let Some((started, oldest)) = self.order.pop_front() else {
                    break;
                };
                if self
                    .pending
                    .get(&oldest)
                    .is_some_and(|p| p.started == started)
                {
                    self.pending.remove(&oldest);
                }
            }
            self.pending.insert(
                key,
                Pending {
                    parts: vec![None; count],
                    have: 0,
                    bytes: 0,
                    started: now,
                },
            );
            self.order.push_back((now, key));
        }
        let Some(message) = self.pending.get_mut(&key) else {
            return Datagram::Refused("gelf_bad_chunk");
        };
        if message.parts.len() != count {
            self.pending.remove(&key);
            return Datagram::Refused("gelf_bad_chunk");
        }
        if message.parts[seq].is_none() {
            message.bytes += data.len();
            message.have += 1;
            message.parts[seq] = Some(Bytes::copy_from_slice(data));
        }
        if message.bytes > self.max_bytes {
            self.pending.remove(&key);
            return Datagram::Refused("gelf_too_large");
        }
        if message.have < count {
            return Datagram::Partial;
        }
        let Some(message) = self.pending.remove(&key) else {
            return Datagram::Refused("gelf_bad_chunk");
        };
        let mut whole = Vec::with_capacity(message.bytes);
        for part in message.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        Datagram::Complete(Bytes::from(whole))
    }

    /// Drops messages whose chunks did not all arrive in time; how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((started, key)) = self.order.front().copied() {
            if now.duration_since(started) < CHUNK_TIMEOUT {
                break;
            }
            self.order.pop_front();
            // Only if it is still the same message (not completed and
            // started again under the same id).
            if self.pending.get(&key).is_some_and(|p| p.started == started) {
                self.pending.remove(&key);
                expired += 1;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use serde_json::Value;

    fn ctx() -> ParseContext {
        ParseContext {
            bsd_zone: chrono_tz::Tz::UTC,
            received_ms: 7,
            keep_raw: false,
            source_ip: Some("192.0.2.1".into()),
            input: "gelf_udp",
        }
    }

    // What Docker's GELF logging driver sends for a container's stderr line.
    const DOCKER: &str = r#"{"version":"1.1","host":"docker-host-1","short_message":"GET /health 500","timestamp":1795687200.123,"level":3,"_command":"nginx -g daemon off;","_container_id":"1a2b3c","_container_name":"web","_created":"2026-12-01T10:00:00Z","_image_id":"sha256:abc","_image_name":"nginx:1.27","_tag":"web-tag","_securenet_key":"sn_k"}"#;

    #[test]
    fn dockers_gelf_messages_map_to_columns_and_give_up_their_key() {
        let p = parse(DOCKER.as_bytes(), &ctx(), 65_536);
        let r = &p.record;
        assert_eq!(p.api_key.as_deref(), Some("sn_k"));
        assert!(!p.unreadable_key);
        assert_eq!(
            (
                r.host.as_deref(),
                r.app.as_deref(),
                r.severity,
                r.ts_ms,
                r.message.as_str(),
                r.parse_status
            ),
            (
                Some("docker-host-1"),
                Some("web"),
                Some(3),
                1_795_687_200_123,
                "GET /health 500",
                ParseStatus::Ok
            )
        );
        let sd: Value = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["container_name"], "web");
        assert_eq!(sd["image_name"], "nginx:1.27");
        assert!(
            sd.get("securenet_key").is_none()
                && !r.structured_data.as_deref().unwrap().contains("sn_k")
        );
    }

    #[test]
    fn repeated_members_count_once_with_their_last_value() {
        let msg = br#"{"version":"1.1","host":"a","short_message":"first","_pid":1,
            "_process_id":2,"_user":"x","user":"y","_user":"z","short_message":"second",
            "_pid":3,"level":"warning","empty":{}}"#;
        let p = parse(msg, &ctx(), 65_536);
        let r = &p.record;
        assert_eq!(r.message, "second");
        assert_eq!(r.pid.as_deref(), Some("3"));
        assert_eq!(r.severity, Some(4));
        let sd: serde_json::Map<String, Value> =
            serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        // `_user` (last: "z") and `user` both write `user`: the later one.
        assert_eq!(
            Value::Object(sd),
            serde_json::json!({"process_id": 2, "user": "z", "empty": {}})
        );
        let text = r.structured_data.as_deref().unwrap();
        assert_eq!(text.matches("\"user\"").count(), 1, "{text}");
    }

    #[test]
    fn zlib_and_gzip_payloads_inflate_and_their_size_is_bounded() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(DOCKER.as_bytes()).unwrap();
        let zlib = z.finish().unwrap();
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        g.write_all(DOCKER.as_bytes()).unwrap();
        let gzip = g.finish().unwrap();
        for body in [&zlib, &gzip] {
            assert_eq!(
                parse(body, &ctx(), 65_536).record.message,
                "GET /health 500"
            );
            // Over the limit once inflated: cut and marked, never parsed.
            let cut = parse(body, &ctx(), 64);
            assert_eq!(cut.record.parse_status, ParseStatus::Truncated);
            assert_eq!(cut.record.message.len(), 64);
            assert!(cut.unreadable_key || !cut.record.message.contains(KEY_FIELD));
        }
        let broken = parse(&[0x1f, 0x8b, 0, 1, 2], &ctx(), 1024);
        assert_eq!(broken.record.parse_status, ParseStatus::Error);
        assert!(
            broken
                .record
                .structured_data
                .unwrap()
                .contains("not valid gzip")
        );
    }

    #[test]
    fn what_is_not_gelf_is_kept_as_an_error_and_a_stray_key_is_unreadable() {
        let p = parse(b"plain text line", &ctx(), 1024);
        assert_eq!(p.record.parse_status, ParseStatus::Error);
        assert_eq!(p.record.message, "plain text line");
        let p = parse(
            br#"{"short_message": "x", "_securenet_key": 5}"#,
            &ctx(),
            1024,
        );
        assert!(p.unreadable_key);
        let p = parse(
            br#"{"_securenet_key": "sn_k", "short_message": "#,
            &ctx(),
            1024,
        );
        assert!(p.unreadable_key && p.api_key.is_none());
        // No short_message: stored, flagged.
        let p = parse(br#"{"host": "h", "level": "warning"}"#, &ctx(), 1024);
        assert_eq!(
            (p.record.parse_status, p.record.severity),
            (ParseStatus::Error, Some(4))
        );
    }

    fn chunk(id: u8, seq: u8, count: u8, data: &[u8]) -> Vec<u8> {
        let mut c = vec![0x1e, 0x0f, id, 0, 0, 0, 0, 0, 0, 0, seq, count];
        c.extend_from_slice(data);
        c
    }

    #[test]
    fn pending_messages_stay_bounded_whatever_completes_in_between() {
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let mut a = Assembler::new(1024);
        let first = |id: u32| {
            let mut c = vec![0x1e, 0x0f];
            c.extend_from_slice(&u64::from(id).to_be_bytes());
            c.extend_from_slice(&[0, 2, b'x']);
            c
        };
        // Many messages complete (their order entries go stale), then more
        // than the bound stay incomplete: eviction must not stop at the
        // stale entries.
        let n = MAX_PENDING as u32;
        for id in 0..2 * n {
            a.accept(peer, &first(id), t0);
            let mut second = first(id);
            second[10] = 1;
            assert!(matches!(a.accept(peer, &second, t0), Datagram::Complete(_)));
        }
        for id in 2 * n..3 * n + 1000 {
            assert_eq!(a.accept(peer, &first(id), t0), Datagram::Partial);
        }
        assert!(a.pending.len() <= MAX_PENDING, "{}", a.pending.len());
    }

    #[test]
    fn chunks_reassemble_in_any_order_per_sender_and_expire() {
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let mut a = Assembler::new(1024);
        assert_eq!(a.accept(peer, &chunk(1, 2, 3, b"c"), t0), Datagram::Partial);
        assert_eq!(
            a.accept(other, &chunk(1, 0, 3, b"X"), t0),
            Datagram::Partial
        );
        assert_eq!(a.accept(peer, &chunk(1, 0, 3, b"a"), t0), Datagram::Partial);
        // A duplicate changes nothing.
        assert_eq!(a.accept(peer, &chunk(1, 0, 3, b"a"), t0), Datagram::Partial);
        assert_eq!(
            a.accept(peer, &chunk(1, 1, 3, b"b"), t0),
            Datagram::Complete(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            a.accept(peer, b"{\"plain\":1}", t0),
            Datagram::Complete(Bytes::from_static(b"{\"plain\":1}"))
        );
        for bad in [
            chunk(2, 3, 3, b"x"),
            chunk(2, 0, 0, b"x"),
            chunk(2, 0, 129, b"x"),
            vec![0x1e, 0x0f, 1],
        ] {
            assert_eq!(
                a.accept(peer, &bad, t0),
                Datagram::Refused("gelf_bad_chunk")
            );
        }
        assert_eq!(
            a.accept(peer, &chunk(3, 0, 2, &[0; 1000]), t0),
            Datagram::Partial
        );
        assert_eq!(
            a.accept(peer, &chunk(3, 1, 2, &[0; 100]), t0),
            Datagram::Refused("gelf_too_large")
        );
        // The other sender's message never completes: expired after 5 s.
        assert_eq!(a.expire(t0 + Duration::from_secs(1)), 0);
        assert_eq!(a.expire(t0 + CHUNK_TIMEOUT), 1);
        assert!(a.pending.is_empty());
    }
}
