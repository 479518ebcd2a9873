//! Fluent forward protocol v1 (what Fluent Bit's and Fluentd's `forward`
//! outputs and the fluent-logger libraries speak), on a TCP or TLS
//! listener with `format = "fluent"`.
//!
//! The stream is a sequence of MessagePack arrays, each one of the event
//! modes: `Message` `[tag, time, record, option?]`, `Forward` `[tag,
//! [[time, record], …], option?]`, `PackedForward` `[tag, bin, option?]`
//! (the entries concatenated as MessagePack) and `CompressedPackedForward`
//! (the same, gzip, `option.compressed = "gzip"`). Times are seconds
//! (integer or float) or `EventTime` (ext type 0: seconds and nanoseconds).
//! An `option.chunk` asks for `{"ack": chunk}` once the events are stored:
//! the listener answers only after the batcher reports them durable, and
//! not at all if they could not be stored (the sender resends).
//!
//! With `fluent_shared_key` set, a connection must first pass the
//! handshake: the server sends `HELO` with a nonce, the client `PING` with
//! `sha512_hex(salt + client_hostname + nonce + shared_key)`, the server
//! `PONG` with its own digest (or a refusal, and closes).
//!
//! Records become rows through the JSON mapping of the HTTP receivers
//! ([`crate::json`]: `message`/`log`/`msg`, `host`, `level`…); the event
//! time is the row's time, the tag is kept as `fluent_tag` (and is the
//! `app` when the record names none). A `securenet_key` field carries the
//! tenant's API key and is removed; without it the listener's `sources` and
//! `default_tenant` decide, as for syslog.

use std::io::Read;

use rmpv::Value as Mp;
use sha2::{Digest, Sha512};

/// The record field that carries an API key.
pub const KEY_FIELD: &str = "securenet_key";

/// Length of the MessagePack value at the front of `buf`: `Ok(None)` while
/// it is incomplete. Only markers and lengths are read (nothing is
/// allocated), so a message arriving in many reads is scanned, not decoded,
/// until it is whole.
pub fn value_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut pos = 0usize;
    // Values still to read (arrays and maps add their children).
    let mut pending: u64 = 1;
    let be = |at: usize, n: usize| -> Option<u64> {
        let bytes = buf.get(at..at + n)?;
        Some(bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    };
    while pending > 0 {
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        pending -= 1;
        // (header bytes after the marker, payload bytes, children)
        let (header, payload, children): (usize, u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, 0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (0, u64::from(marker & 0x1f), 0),
            0xc4 | 0xd9 => (1, 0, 0),
            0xc5 | 0xda => (2, 0, 0),
            0xc6 | 0xdb => (4, 0, 0),
            // ext 8/16/32: the length, then a type byte (counted below).
            0xc7 => (1, 0, 0),
            0xc8 => (2, 0, 0),
            0xc9 => (4, 0, 0),
            0xca => (0, 4, 0),
            0xcb => (0, 8, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xce | 0xd2 => (0, 4, 0),
            0xcf | 0xd3 => (0, 8, 0),
            0xd4 => (0, 2, 0),
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc | 0xde => (2, 0, 0),
            0xdd | 0xdf => (4, 0, 0),
            0xc1 => return Err("0xc1 is not a MessagePack marker".into()),
        };
        let Some(length) = (header > 0).then(|| be(pos + 1, header)) else {
            pos += 1 + payload as usize;
            pending += children;
            continue;
        };
        let Some(length) = length else {
            return Ok(None);
        };
        match marker {
            // Lengths of bin/str/ext payloads (ext: plus its type byte).
            0xc4..=0xc6 | 0xd9..=0xdb => pos += 1 + header + length as usize,
            0xc7..=0xc9 => pos += 1 + header + 1 + length as usize,
            0xdc | 0xdd => {
                pos += 1 + header;
                pending += length;
            }
            _ => {
                pos += 1 + header;
                pending += 2 * length;
            }
        }
    }
    Ok((pos <= buf.len()).then_some(pos))
}

/// One decoded forward message.
#[derive(Debug, Default, PartialEq)]
pub struct Events {
    pub tag: String,
    /// (event time in ms, the record's map entries)
    pub entries: Vec<(i64, Vec<(Mp, Mp)>)>,
    /// `option.chunk`: the id to acknowledge.
    pub chunk: Option<String>,
    /// Entries that could not be read, by position.
    pub errors: Vec<String>,
}

/// A forward message (any event mode) → its events. `max_inflate` bounds a
/// `CompressedPackedForward`'s entries once inflated.
pub fn decode(value: Mp, max_inflate: usize) -> Result<Events, String> {
    let Mp::Array(mut parts) = value else {
        return Err("a forward message is an array [tag, …]".into());
    };
    if parts.len() < 2 || parts.len() > 4 {
        return Err(format!(
            "a forward message has 2 to 4 elements, not {}",
            parts.len()
        ));
    }
    let tag = match &parts[0] {
        Mp::String(s) => s.as_str().unwrap_or_default().to_string(),
        _ => return Err("the tag is not a string".into()),
    };
    let mut events = Events {
        tag,
        ..Events::default()
    };
    let second = std::mem::replace(&mut parts[1], Mp::Nil);
    let option_at = match second {
        Mp::Array(entries) => {
            for (i, entry) in entries.into_iter().enumerate() {
                events.push_entry(i, entry);
            }
            2
        }
        Mp::Binary(_) | Mp::String(_) => {
            let bytes = match second {
                Mp::Binary(b) => b,
                Mp::String(s) => s.into_bytes(),
                _ => Vec::new(),
            };
            let compressed = parts.get(2).and_then(|o| option(o, "compressed"));
            let bytes = match compressed.as_deref() {
                None | Some("text") => bytes,
                Some("gzip") => gunzip(&bytes, max_inflate)?,
                Some(other) => return Err(format!("compression {other:?} is not supported")),
            };
            let mut rest = &bytes[..];
            let mut i = 0;
            while !rest.is_empty() {
                match rmpv::decode::read_value(&mut rest) {
                    Ok(entry) => events.push_entry(i, entry),
                    Err(e) => {
                        events
                            .errors
                            .push(format!("entry {i}: packed entries end in the middle: {e}"));
                        break;
                    }
                }
                i += 1;
            }
            2
        }
        time => {
            let record = std::mem::replace(parts.get_mut(2).unwrap_or(&mut Mp::Nil), Mp::Nil);
            events.push_entry(0, Mp::Array(vec![time, record]));
            3
        }
    };
    events.chunk = parts.get(option_at).and_then(|o| option(o, "chunk"));
    Ok(events)
}

impl Events {
    fn push_entry(&mut self, i: usize, entry: Mp) {
        match entry {
            Mp::Array(mut pair) if pair.len() == 2 => {
                let record = pair.pop().unwrap_or(Mp::Nil);
                let time = pair.pop().unwrap_or(Mp::Nil);
                match (event_time_ms(&time), record) {
                    (Some(ms), Mp::Map(record)) => self.entries.push((ms, record)),
                    (None, _) => self.errors.push(format!(
                        "entry {i}: the time is not seconds or an EventTime"
                    )),
                    (_, _) => self
                        .errors
                        .push(format!("entry {i}: the record is not a map")),
                }
            }
            _ => self
                .errors
                .push(format!("entry {i}: not a [time, record] pair")),
        }
    }
}

/// Seconds (integer or float) or EventTime (ext 0: u32 seconds, u32 ns).
fn event_time_ms(time: &Mp) -> Option<i64> {
    match time {
        Mp::Integer(i) => i.as_i64().map(|s| s.saturating_mul(1000)),
        Mp::F64(f) if f.is_finite() => Some((f * 1000.0) as i64),
        Mp::F32(f) if f.is_finite() => Some((f64::from(*f) * 1000.0) as i64),
        Mp::Ext(0, data) if data.len() == 8 => {
            let secs = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let nanos = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            Some(i64::from(secs) * 1000 + i64::from(nanos) / 1_000_000)
        }
        _ => None,
    }
}

fn option(option: &Mp, key: &str) -> Option<String> {
    let Mp::Map(entries) = option else {
        return None;
    };
    entries.iter().find_map(|(k, v)| {
        (k.as_str() == Some(key)).then(|| match v {
            Mp::String(s) => s.as_str().map(str::to_string),
            Mp::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })?
    })
}

fn gunzip(bytes: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("compressed entries are not valid gzip: {e}"))?;
    if out.len() > max {
        return Err(format!(
            "compressed entries inflate to more than {max} bytes"
        ));
    }
    Ok(out)
}

/// A record as the JSON object text the receivers' JSON mapping reads,
/// written straight from MessagePack (no JSON tree in between), without the
/// key field, which is returned apart: `Some(Ok(key))`, or `Some(Err(()))`
/// when the field is there but not a string.
pub fn record_text(record: Vec<(Mp, Mp)>) -> (String, Option<Result<String, ()>>) {
    let mut out = Vec::with_capacity(256);
    let mut key = None;
    out.push(b'{');
    let mut first = true;
    for (k, v) in record {
        let name = key_text(k);
        if name == KEY_FIELD {
            key = Some(match v {
                Mp::String(s) => s.into_str().ok_or(()),
                _ => Err(()),
            });
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(&mut out, &name);
        out.push(b':');
        write_json(&mut out, v);
    }
    out.push(b'}');
    // Only UTF-8 was written (strings are lossy-converted first).
    (String::from_utf8(out).unwrap_or_default(), key)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_json(out: &mut Vec<u8>, value: Mp) {
    use std::io::Write as _;
    match value {
        Mp::Nil | Mp::Ext(..) => out.extend_from_slice(b"null"),
        Mp::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Mp::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Mp::F32(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Mp::F64(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Mp::F32(_) | Mp::F64(_) => out.extend_from_slice(b"null"),
        Mp::String(s) => write_str(out, &lossy(s.into_bytes())),
        Mp::Binary(b) => write_str(out, &lossy(b)),
        Mp::Array(items) => {
            out.push(b'[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Mp::Map(entries) => {
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let name = key_text(k);
                write_str(out, &name);
                out.push(b':');
                write_json(out, v);
            }
            out.push(b'}');
        }
    }
}

/// A map key as text: strings (binary from older clients) as they are,
/// anything else as MessagePack's display of it.
fn key_text(key: Mp) -> String {
    match key {
        Mp::String(s) => lossy(s.into_bytes()),
        Mp::Binary(b) => lossy(b),
        other => other.to_string(),
    }
}

/// Text as sent, invalid UTF-8 replaced (never dropped).
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn encode(value: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// `{"ack": chunk}`.
pub fn ack(chunk: &str) -> Vec<u8> {
    encode(&Mp::Map(vec![(Mp::from("ack"), Mp::from(chunk))]))
}

/// The server's `HELO`: a nonce, no user authentication, keepalive.
pub fn helo(nonce: &[u8]) -> Vec<u8> {
    encode(&Mp::Array(vec![
        Mp::from("HELO"),
        Mp::Map(vec![
            (Mp::from("nonce"), Mp::Binary(nonce.to_vec())),
            (Mp::from("auth"), Mp::Binary(Vec::new())),
            (Mp::from("keepalive"), Mp::Boolean(true)),
        ]),
    ]))
}

fn digest(salt: &[u8], hostname: &str, nonce: &[u8], shared_key: &str) -> String {
    let mut h = Sha512::new();
    h.update(salt);
    h.update(hostname.as_bytes());
    h.update(nonce);
    h.update(shared_key.as_bytes());
    hex::encode(h.finalize())
}

fn bytes_of(v: &Mp) -> Option<Vec<u8>> {
    match v {
        Mp::String(s) => Some(s.as_bytes().to_vec()),
        Mp::Binary(b) => Some(b.clone()),
        _ => None,
    }
}

/// Checks a client's `PING`; the `PONG` to send, and whether it passed.
pub fn answer_ping(
    ping: &Mp,
    nonce: &[u8],
    shared_key: &str,
    server_hostname: &str,
) -> (Vec<u8>, bool) {
    let fields = match ping {
        Mp::Array(f) if f.len() >= 4 && f[0].as_str() == Some("PING") => f,
        _ => return (pong(false, "expected PING", server_hostname, ""), false),
    };
    let (Some(hostname), Some(salt), Some(presented)) = (
        bytes_of(&fields[1]),
        bytes_of(&fields[2]),
        bytes_of(&fields[3]),
    ) else {
        return (pong(false, "malformed PING", server_hostname, ""), false);
    };
    let hostname = String::from_utf8_lossy(&hostname).into_owned();
    let expected = digest(&salt, &hostname, nonce, shared_key);
    // Constant time, as for API keys.
    let ok = expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok {
        return (
            pong(false, "shared key mismatch", server_hostname, ""),
            false,
        );
    }
    let own = digest(&salt, server_hostname, nonce, shared_key);
    (pong(true, "", server_hostname, &own), true)
}

fn pong(ok: bool, reason: &str, server_hostname: &str, digest: &str) -> Vec<u8> {
    encode(&Mp::Array(vec![
        Mp::from("PONG"),
        Mp::Boolean(ok),
        Mp::from(reason),
        Mp::from(server_hostname),
        Mp::from(digest),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(value: &Mp) -> Vec<u8> {
        encode(value)
    }

    fn record(msg: &str) -> Mp {
        Mp::Map(vec![(Mp::from("log"), Mp::from(msg))])
    }

    fn event_time(secs: u32, nanos: u32) -> Mp {
        let mut data = secs.to_be_bytes().to_vec();
        data.extend_from_slice(&nanos.to_be_bytes());
        Mp::Ext(0, data)
    }

    #[test]
    fn every_event_mode_decodes() {
        let chunk = Mp::Map(vec![(Mp::from("chunk"), Mp::from("c1"))]);
        let message = Mp::Array(vec![
            Mp::from("app.web"),
            event_time(1_795_687_200, 250_000_000),
            record("one"),
            chunk.clone(),
        ]);
        let e = decode(message, 1 << 20).unwrap();
        assert_eq!(e.tag, "app.web");
        assert_eq!(e.entries[0].0, 1_795_687_200_250);
        let (text, key) = record_text(e.entries[0].1.clone());
        assert_eq!((text.as_str(), key), (r#"{"log":"one"}"#, None));
        assert_eq!(e.chunk.as_deref(), Some("c1"));

        let pair = |t: u64, m: &str| Mp::Array(vec![Mp::from(t), record(m)]);
        let forward = Mp::Array(vec![
            Mp::from("t"),
            Mp::Array(vec![pair(1, "a"), pair(2, "b"), Mp::from(3)]),
        ]);
        let e = decode(forward, 1 << 20).unwrap();
        assert_eq!(e.entries.len(), 2);
        assert_eq!(e.entries[1].0, 2000);
        assert_eq!(e.errors, ["entry 2: not a [time, record] pair"]);
        assert_eq!(e.chunk, None);

        let mut packed = mp(&pair(1, "a"));
        packed.extend(mp(&pair(2, "b")));
        let e = decode(
            Mp::Array(vec![Mp::from("t"), Mp::Binary(packed.clone())]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(e.entries.len(), 2);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &packed).unwrap();
        let option = Mp::Map(vec![
            (Mp::from("compressed"), Mp::from("gzip")),
            (Mp::from("chunk"), Mp::from("c2")),
        ]);
        let compressed = Mp::Array(vec![
            Mp::from("t"),
            Mp::Binary(gz.finish().unwrap()),
            option,
        ]);
        let e = decode(compressed.clone(), 1 << 20).unwrap();
        assert_eq!((e.entries.len(), e.chunk.as_deref()), (2, Some("c2")));
        assert!(
            decode(compressed, 8)
                .unwrap_err()
                .contains("more than 8 bytes")
        );
    }

    #[test]
    fn records_become_json_text_and_give_up_their_key() {
        let record = vec![
            (Mp::from("log"), Mp::from("say \"hi\"")),
            (Mp::from("securenet_key"), Mp::from("sn_k")),
            (Mp::Binary(b"n".to_vec()), Mp::from(-3)),
            (Mp::from("f"), Mp::F64(f64::NAN)),
            (
                Mp::from("m"),
                Mp::Map(vec![(
                    Mp::from("a"),
                    Mp::Array(vec![Mp::Nil, Mp::Boolean(true), Mp::F64(1.5)]),
                )]),
            ),
            (Mp::from("bad"), Mp::Binary(vec![0xff, b'x'])),
        ];
        let (text, key) = record_text(record);
        assert_eq!(key, Some(Ok("sn_k".to_string())));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"log": "say \"hi\"", "n": -3, "f": null,
                               "m": {"a": [null, true, 1.5]}, "bad": "\u{fffd}x"})
        );
        let (_, key) = record_text(vec![(Mp::from("securenet_key"), Mp::from(5))]);
        assert_eq!(key, Some(Err(())));
    }

    #[test]
    fn bad_messages_are_named() {
        assert!(decode(Mp::from(1), 1024).is_err());
        assert!(decode(Mp::Array(vec![Mp::from(1), Mp::from(2)]), 1024).is_err());
        // Packed entries cut in the middle of a [time, record] pair.
        let cut = Mp::Binary(vec![0x92, 0x01]);
        let e = decode(Mp::Array(vec![Mp::from("t"), cut, Mp::from(3)]), 1024).unwrap();
        assert!(e.errors[0].contains("packed entries end"), "{:?}", e.errors);
        let e = decode(Mp::Array(vec![Mp::from("t"), Mp::Nil, record("x")]), 1024).unwrap();
        assert!(e.errors[0].contains("time"), "{:?}", e.errors);
    }

    #[test]
    fn value_len_finds_whole_values_without_decoding() {
        let values = [
            Mp::Array(vec![
                Mp::from("tag"),
                event_time(1, 2),
                record(&"x".repeat(300)),
            ]),
            Mp::Map(vec![(
                Mp::from("k"),
                Mp::Array(vec![Mp::from(-5), Mp::F64(1.5), Mp::Nil]),
            )]),
            Mp::Binary(vec![7; 70_000]),
            Mp::from(u64::MAX),
            Mp::Ext(5, vec![1, 2, 3]),
        ];
        for v in &values {
            let bytes = mp(v);
            assert_eq!(value_len(&bytes), Ok(Some(bytes.len())), "{v:?}");
            for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(value_len(&bytes[..cut]), Ok(None), "{v:?} cut at {cut}");
            }
            let mut two = bytes.clone();
            two.extend_from_slice(&bytes);
            assert_eq!(value_len(&two), Ok(Some(bytes.len())));
        }
        assert!(value_len(&[0xc1]).is_err());
        // A huge declared array of nothing is incomplete, not an allocation.
        assert_eq!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]), Ok(None));
    }

    #[test]
    fn the_handshake_accepts_the_shared_key_only() {
        let nonce = b"0123456789abcdef";
        let ping = |key: &str| {
            Mp::Array(vec![
                Mp::from("PING"),
                Mp::from("client-1"),
                Mp::from("salt"),
                Mp::from(digest(b"salt", "client-1", nonce, key)),
                Mp::from(""),
                Mp::from(""),
            ])
        };
        let (answer, ok) = answer_ping(&ping("s3cret"), nonce, "s3cret", "securenet");
        assert!(ok);
        let pong = rmpv::decode::read_value(&mut &answer[..]).unwrap();
        assert_eq!(pong[1], Mp::Boolean(true));
        assert_eq!(
            pong[4].as_str(),
            Some(digest(b"salt", "securenet", nonce, "s3cret").as_str())
        );
        let (answer, ok) = answer_ping(&ping("guess"), nonce, "s3cret", "securenet");
        assert!(!ok);
        let pong = rmpv::decode::read_value(&mut &answer[..]).unwrap();
        assert_eq!(pong[2].as_str(), Some("shared key mismatch"));
        assert!(!answer_ping(&Mp::from("PING"), nonce, "s3cret", "x").1);
    }

    use proptest::prelude::*;

    /// MessagePack values of every kind, nested.
    fn values() -> impl Strategy<Value = Mp> {
        let leaf = prop_oneof![
            Just(Mp::Nil),
            any::<bool>().prop_map(Mp::Boolean),
            any::<i64>().prop_map(Mp::from),
            any::<u64>().prop_map(Mp::from),
            any::<f64>().prop_map(Mp::F64),
            any::<f32>().prop_map(Mp::F32),
            ".{0,300}".prop_map(|s: String| Mp::from(s)),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Mp::Binary),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, d)| Mp::Ext(t, d)),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Mp::Array),
                proptest::collection::vec((inner.clone(), inner), 0..10).prop_map(Mp::Map),
            ]
        })
    }

    proptest! {
        // The scanner agrees with the encoder on where every value ends,
        // and calls every cut-off prefix incomplete.
        #[test]
        fn value_len_is_the_encoded_length(value in values(), cut in any::<prop::sample::Index>()) {
            let bytes = mp(&value);
            prop_assert_eq!(value_len(&bytes), Ok(Some(bytes.len())));
            let at = cut.index(bytes.len());
            prop_assert_eq!(value_len(&bytes[..at]), Ok(None));
        }

        // Whatever a sender writes, the scanner answers (never panics), and
        // a length it reports is inside the buffer.
        #[test]
        fn value_len_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some(n)) = value_len(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }

        // Whatever decodes, decode() turns into events or named errors.
        #[test]
        fn decode_never_panics(value in values()) {
            let _ = decode(value, 1 << 16);
        }
    }
}
