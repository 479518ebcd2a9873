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

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

use rmpv::Value as Mp;
use sha2::{Digest, Sha512};

/// The record field that carries an API key.
pub const KEY_FIELD: &str = "securenet_key";

/// Length of the MessagePack value at the front of `buf`: `Ok(None)` while
/// it is incomplete. Only markers and lengths are read (nothing is
/// allocated), so a message arriving in many reads is scanned, not decoded,
/// until it is whole.
pub fn value_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut reader = Reader(buf);
    // Values still to read (arrays and maps add their children).
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        match reader.header() {
            Ok(Header::Array(n)) => pending += u64::from(n),
            Ok(Header::Map(n)) => pending += 2 * u64::from(n),
            Ok(_) => {}
            Err(ReadError::Truncated) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(buf.len() - reader.0.len()))
}

/// One decoded forward message.
#[derive(Debug, Default, PartialEq)]
pub struct Events {
    pub tag: String,
    pub entries: Vec<Entry>,
    /// `option.chunk`: the id to acknowledge.
    pub chunk: Option<String>,
    /// Entries that could not be read, by position.
    pub errors: Vec<String>,
}

/// One event: its time and its record, already JSON text.
#[derive(Debug, PartialEq)]
pub struct Entry {
    /// Event time, ms since the epoch.
    pub ms: i64,
    pub record: Record,
}

/// A record as the JSON object text the receivers' JSON mapping reads,
/// written straight from the MessagePack bytes (no value tree in between),
/// with where each member is in it — the mapping reads those instead of
/// parsing the text again — and without the key field, which is kept apart.
#[derive(Debug, Default, PartialEq)]
pub struct Record {
    pub text: String,
    /// Each member: its name (JSON string, quotes included) and its value.
    members: Vec<(Range<usize>, Range<usize>)>,
    /// [`KEY_FIELD`]: `Some(Ok(key))`, or `Some(Err(()))` when the field is
    /// there but not a UTF-8 string.
    pub key: Option<Result<String, ()>>,
}

impl Record {
    /// The members as the JSON mapping takes them (name, value text).
    pub(crate) fn entries(&self) -> Vec<(crate::json::Key<'_>, &str)> {
        self.members
            .iter()
            .map(|(name, value)| {
                let quoted = &self.text[name.clone()];
                let inner = &quoted[1..quoted.len() - 1];
                let name = if inner.contains('\\') {
                    // Escaped on the way in (quotes, control characters):
                    // the mapping compares names unescaped.
                    Cow::Owned(serde_json::from_str::<String>(quoted).unwrap_or_default())
                } else {
                    Cow::Borrowed(inner)
                };
                (crate::json::Key(name), &self.text[value.clone()])
            })
            .collect()
    }
}

/// How deep arrays and maps may nest inside a record.
const MAX_DEPTH: u32 = 64;

/// A forward message (any event mode), its whole MessagePack encoding →
/// its events. `max_inflate` bounds a `CompressedPackedForward`'s entries
/// once inflated.
pub fn decode(bytes: &[u8], max_inflate: usize) -> Result<Events, String> {
    let mut reader = Reader(bytes);
    let count = match reader.header()? {
        Header::Array(n) => n as usize,
        _ => return Err("a forward message is an array [tag, …]".into()),
    };
    if !(2..=4).contains(&count) {
        return Err(format!(
            "a forward message has 2 to 4 elements, not {count}"
        ));
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        parts.push(reader.value()?);
    }
    let tag = match Reader(parts[0]).header()? {
        Header::Str(s) => String::from_utf8(s.to_vec()).unwrap_or_default(),
        _ => return Err("the tag is not a string".into()),
    };
    let mut events = Events {
        tag,
        ..Events::default()
    };
    let mut second = Reader(parts[1]);
    let option_at = match second.header()? {
        Header::Array(n) => {
            for i in 0..n as usize {
                let entry = second.value()?;
                events.push_entry(i, entry);
            }
            2
        }
        Header::Bin(packed) | Header::Str(packed) => {
            let compressed = parts.get(2).and_then(|o| option(o, "compressed"));
            let packed = match compressed.as_deref() {
                None | Some("text") => Cow::Borrowed(packed),
                Some("gzip") => Cow::Owned(gunzip(packed, max_inflate)?),
                Some(other) => return Err(format!("compression {other:?} is not supported")),
            };
            let mut rest = &packed[..];
            let mut i = 0;
            while !rest.is_empty() {
                match value_len(rest) {
                    Ok(Some(len)) => {
                        let (entry, next) = rest.split_at(len);
                        events.push_entry(i, entry);
                        rest = next;
                    }
                    Ok(None) | Err(_) => {
                        events.errors.push(format!(
                            "entry {i}: packed entries end in the middle of a value"
                        ));
                        break;
                    }
                }
                i += 1;
            }
            2
        }
        _ => {
            // `Message`: [tag, time, record, option?].
            let record = parts.get(2).copied().unwrap_or(NIL);
            events.push_pair(0, parts[1], record);
            3
        }
    };
    events.chunk = parts.get(option_at).and_then(|o| option(o, "chunk"));
    Ok(events)
}

/// MessagePack `nil`.
const NIL: &[u8] = &[0xc0];

impl Events {
    /// A `[time, record]` pair (its encoding).
    fn push_entry(&mut self, i: usize, entry: &[u8]) {
        let mut reader = Reader(entry);
        let pair = match reader.header() {
            Ok(Header::Array(2)) => reader.value().and_then(|t| Ok((t, reader.value()?))).ok(),
            _ => None,
        };
        match pair {
            Some((time, record)) => self.push_pair(i, time, record),
            None => self
                .errors
                .push(format!("entry {i}: not a [time, record] pair")),
        }
    }

    fn push_pair(&mut self, i: usize, time: &[u8], record: &[u8]) {
        let Some(ms) = event_time_ms(time) else {
            self.errors.push(format!(
                "entry {i}: the time is not seconds or an EventTime"
            ));
            return;
        };
        match record_json(record) {
            Ok(record) => self.entries.push(Entry { ms, record }),
            Err(why) => self.errors.push(format!("entry {i}: {why}")),
        }
    }
}

/// Seconds (integer or float) or EventTime (ext 0: u32 seconds, u32 ns).
fn event_time_ms(time: &[u8]) -> Option<i64> {
    match Reader(time).header().ok()? {
        Header::Int(s) => Some(s.saturating_mul(1000)),
        Header::Uint(s) => Some(i64::try_from(s).ok()?.saturating_mul(1000)),
        Header::F64(f) if f.is_finite() => Some((f * 1000.0) as i64),
        Header::F32(f) if f.is_finite() => Some((f64::from(f) * 1000.0) as i64),
        Header::Ext(0, data) if data.len() == 8 => {
            let secs = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let nanos = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            Some(i64::from(secs) * 1000 + i64::from(nanos) / 1_000_000)
        }
        _ => None,
    }
}

/// A string entry of the option map (decoded as a value: options are small).
fn option(option: &[u8], key: &str) -> Option<String> {
    // (rmpv counts a level for each value, container and string: 16 is a
    // map of short strings with room to spare.)
    let Ok(Mp::Map(entries)) = rmpv::decode::read_value_with_max_depth(&mut &option[..], 16) else {
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

/// The head of one MessagePack value: scalars whole, strings/binary/ext
/// with their payload (borrowed), arrays and maps with their length (the
/// elements follow).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Header<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
    Array(u32),
    Map(u32),
}

/// Reads MessagePack from the front of a slice, borrowing payloads; the
/// one reading of the format's markers (whole values are found with
/// [`value_len`], which uses it too).
struct Reader<'a>(&'a [u8]);

/// Why a value could not be read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ReadError {
    /// The bytes end before the value does.
    Truncated,
    /// `0xc1`, the one byte that is no marker.
    NotMessagePack,
}

impl From<ReadError> for String {
    fn from(e: ReadError) -> String {
        match e {
            ReadError::Truncated => "the value ends early".into(),
            ReadError::NotMessagePack => "0xc1 is not a MessagePack marker".into(),
        }
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.0.len() {
            return Err(ReadError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A big-endian unsigned number of `n` bytes.
    fn be(&mut self, n: usize) -> Result<u64, ReadError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    fn header(&mut self) -> Result<Header<'a>, ReadError> {
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Header::Int(i64::from(marker)),
            0xe0..=0xff => Header::Int(i64::from(marker as i8)),
            0x80..=0x8f => Header::Map(u32::from(marker & 0x0f)),
            0x90..=0x9f => Header::Array(u32::from(marker & 0x0f)),
            0xa0..=0xbf => Header::Str(self.take(usize::from(marker & 0x1f))?),
            0xc0 => Header::Nil,
            0xc2 => Header::Bool(false),
            0xc3 => Header::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (marker - 0xc4))? as usize;
                Header::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (marker - 0xc7))? as usize;
                let kind = self.take(1)?[0] as i8;
                Header::Ext(kind, self.take(n)?)
            }
            0xca => Header::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Header::F64(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Header::Uint(self.be(1 << (marker - 0xcc))?),
            0xd0 => Header::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Header::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Header::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Header::Int(self.be(8)? as i64),
            0xd4..=0xd8 => {
                let kind = self.take(1)?[0] as i8;
                Header::Ext(kind, self.take(1 << (marker - 0xd4))?)
            }
            0xd9..=0xdb => {
                let n = self.be(1 << (marker - 0xd9))? as usize;
                Header::Str(self.take(n)?)
            }
            0xdc | 0xdd => Header::Array(self.be(2 << (marker - 0xdc))? as u32),
            0xde | 0xdf => Header::Map(self.be(2 << (marker - 0xde))? as u32),
            0xc1 => return Err(ReadError::NotMessagePack),
        })
    }

    /// The whole next value's encoding.
    fn value(&mut self) -> Result<&'a [u8], ReadError> {
        let len = value_len(self.0)
            .map_err(|_| ReadError::NotMessagePack)?
            .ok_or(ReadError::Truncated)?;
        self.take(len)
    }
}

/// A record (a MessagePack map's encoding) → [`Record`].
fn record_json(bytes: &[u8]) -> Result<Record, String> {
    let mut reader = Reader(bytes);
    let Ok(Header::Map(n)) = reader.header() else {
        return Err("the record is not a map".into());
    };
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4 + 16);
    let mut record = Record {
        members: Vec::with_capacity(n as usize),
        ..Record::default()
    };
    out.push(b'{');
    for _ in 0..n {
        let name = key_text(&mut reader, 1)?;
        if name == KEY_FIELD {
            let value = reader.value()?;
            record.key = Some(match Reader(value).header() {
                Ok(Header::Str(s)) => std::str::from_utf8(s).map(str::to_string).map_err(|_| ()),
                _ => Err(()),
            });
            continue;
        }
        if !record.members.is_empty() {
            out.push(b',');
        }
        let name_start = out.len();
        write_str(&mut out, &name);
        let name_end = out.len();
        out.push(b':');
        let value_start = out.len();
        write_json(&mut reader, &mut out, 1)?;
        record
            .members
            .push((name_start..name_end, value_start..out.len()));
    }
    out.push(b'}');
    // Only UTF-8 was written (strings are lossy-converted first).
    record.text = String::from_utf8(out).unwrap_or_default();
    Ok(record)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The next value as JSON: strings and binary as (lossy) text, ext as null,
/// non-finite floats as null, maps' non-string keys as their display.
fn write_json(reader: &mut Reader<'_>, out: &mut Vec<u8>, depth: u32) -> Result<(), String> {
    use std::io::Write as _;
    if depth > MAX_DEPTH {
        return Err(format!("the record nests deeper than {MAX_DEPTH} levels"));
    }
    match reader.header()? {
        Header::Nil | Header::Ext(..) => out.extend_from_slice(b"null"),
        Header::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Header::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Header::Uint(u) => {
            let _ = write!(out, "{u}");
        }
        Header::F32(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Header::F64(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Header::F32(_) | Header::F64(_) => out.extend_from_slice(b"null"),
        Header::Str(s) | Header::Bin(s) => write_str(out, &String::from_utf8_lossy(s)),
        Header::Array(n) => {
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_json(reader, out, depth + 1)?;
            }
            out.push(b']');
        }
        Header::Map(n) => {
            out.push(b'{');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                let name = key_text(reader, depth + 1)?;
                write_str(out, &name);
                out.push(b':');
                write_json(reader, out, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// A map key as text: strings (binary from older clients) as they are,
/// anything else as MessagePack's display of it.
fn key_text<'a>(reader: &mut Reader<'a>, depth: u32) -> Result<Cow<'a, str>, String> {
    let start = reader.0;
    match reader.header()? {
        Header::Str(s) | Header::Bin(s) => Ok(String::from_utf8_lossy(s)),
        _ => {
            // Rare: decode the key as a value for its display.
            reader.0 = start;
            let whole = reader.value()?;
            // rmpv counts several levels per nesting (value, container,
            // string): four per level left.
            let room = 4 * (MAX_DEPTH.saturating_sub(depth) as usize + 1);
            let key = rmpv::decode::read_value_with_max_depth(&mut &whole[..], room)
                .map_err(|e| format!("a map key is not readable: {e}"))?;
            Ok(Cow::Owned(key.to_string()))
        }
    }
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
        let e = decode(&mp(&message), 1 << 20).unwrap();
        assert_eq!(e.tag, "app.web");
        assert_eq!(e.entries[0].ms, 1_795_687_200_250);
        let first = &e.entries[0].record;
        assert_eq!(
            (first.text.as_str(), &first.key),
            (r#"{"log":"one"}"#, &None)
        );
        assert_eq!(e.chunk.as_deref(), Some("c1"));

        let pair = |t: u64, m: &str| Mp::Array(vec![Mp::from(t), record(m)]);
        let forward = Mp::Array(vec![
            Mp::from("t"),
            Mp::Array(vec![pair(1, "a"), pair(2, "b"), Mp::from(3)]),
        ]);
        let e = decode(&mp(&forward), 1 << 20).unwrap();
        assert_eq!(e.entries.len(), 2);
        assert_eq!(e.entries[1].ms, 2000);
        assert_eq!(e.errors, ["entry 2: not a [time, record] pair"]);
        assert_eq!(e.chunk, None);

        let mut packed = mp(&pair(1, "a"));
        packed.extend(mp(&pair(2, "b")));
        let e = decode(
            &mp(&Mp::Array(vec![Mp::from("t"), Mp::Binary(packed.clone())])),
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
        let compressed = mp(&compressed);
        let e = decode(&compressed, 1 << 20).unwrap();
        assert_eq!((e.entries.len(), e.chunk.as_deref()), (2, Some("c2")));
        assert!(
            decode(&compressed, 8)
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
        let Record { text, key, .. } = record_json(&mp(&Mp::Map(record))).unwrap();
        assert_eq!(key, Some(Ok("sn_k".to_string())));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"log": "say \"hi\"", "n": -3, "f": null,
                               "m": {"a": [null, true, 1.5]}, "bad": "\u{fffd}x"})
        );
        let odd_key = Mp::Map(vec![(Mp::from("securenet_key"), Mp::from(5))]);
        assert_eq!(record_json(&mp(&odd_key)).unwrap().key, Some(Err(())));
        // A key of another type still reads as text, and a member whose
        // name needs escaping is named unescaped to the mapping.
        let odd = Mp::Map(vec![
            (Mp::from(7), Mp::from("seven")),
            (Mp::from("a\"b"), Mp::from(1)),
        ]);
        let record = record_json(&mp(&odd)).unwrap();
        assert_eq!(record.text, r#"{"7":"seven","a\"b":1}"#);
        let names: Vec<String> = record
            .entries()
            .iter()
            .map(|(k, _)| k.0.to_string())
            .collect();
        assert_eq!(names, ["7", "a\"b"]);
    }

    #[test]
    fn bad_messages_are_named() {
        assert!(decode(&mp(&Mp::from(1)), 1024).is_err());
        assert!(decode(&mp(&Mp::Array(vec![Mp::from(1), Mp::from(2)])), 1024).is_err());
        // Packed entries cut in the middle of a [time, record] pair.
        let cut = Mp::Binary(vec![0x92, 0x01]);
        let e = decode(&mp(&Mp::Array(vec![Mp::from("t"), cut, Mp::from(3)])), 1024).unwrap();
        assert!(e.errors[0].contains("packed entries end"), "{:?}", e.errors);
        let nil_time = Mp::Array(vec![Mp::from("t"), Mp::Nil, record("x")]);
        let e = decode(&mp(&nil_time), 1024).unwrap();
        assert!(e.errors[0].contains("time"), "{:?}", e.errors);
        // A record nested deeper than allowed is that entry's error only.
        let mut deep = Mp::from("bottom");
        for _ in 0..100 {
            deep = Mp::Array(vec![deep]);
        }
        let forward = Mp::Array(vec![
            Mp::from("t"),
            Mp::Array(vec![
                Mp::Array(vec![Mp::from(1), Mp::Map(vec![(Mp::from("d"), deep)])]),
                Mp::Array(vec![Mp::from(2), record("fine")]),
            ]),
        ]);
        let e = decode(&mp(&forward), 1024).unwrap();
        assert_eq!(e.entries.len(), 1);
        assert!(e.errors[0].contains("deeper than 64"), "{:?}", e.errors);
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
            let _ = decode(&mp(&value), 1 << 16);
        }

        // A record's text is one JSON object whose members are where the
        // record says they are: the JSON mapping reading those sees what
        // parsing the text gives.
        #[test]
        fn record_text_and_members_agree(
            members in proptest::collection::vec((".{0,12}", values()), 0..12)
        ) {
            let map = Mp::Map(members.into_iter().map(|(k, v)| (Mp::from(k), v)).collect());
            let record = record_json(&mp(&map)).unwrap();
            let parsed: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&record.text).unwrap();
            let entries = record.entries();
            for (name, value) in &entries {
                // A repeated name keeps its last value in the parsed map.
                if entries.iter().filter(|(n, _)| n.0 == name.0).count() > 1 {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(value).unwrap();
                prop_assert_eq!(parsed.get(name.0.as_ref()), Some(&value));
            }
        }
    }
}
