//! Syslog message parsing: RFC 5424 and RFC 3164 (BSD), auto-detected per
//! message, into a [`LogRecord`].
//!
//! Lossless by construction: a message that cannot be parsed becomes a
//! record with `parse_status = error`, its lossy text as `message` and its
//! exact bytes as `raw`; invalid UTF-8 gives `invalid_utf8` with `raw` kept.
//! Parsing works on bytes and never panics or allocates beyond the message
//! (see the property tests).
//!
//! BSD variants handled: with or without PRI; `Mmm dd hh:mm:ss` with space-
//! or zero-padded day, optional fractional seconds and optional year
//! (`Mmm dd yyyy hh:mm:ss`); an RFC 3339 timestamp in place of the BSD one
//! (rsyslog); Cisco-style sequence numbers (`<189>42: `), `*`/`.` time
//! markers and a `:` after the timestamp; with or without hostname;
//! `tag[pid]:`, `tag:` or no tag at all.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use schemas::{LogRecord, ParseStatus};
use serde_json::{Map, Value};

/// SD-ID whose `key` parameter carries a SecureNet API key (the number is
/// the enterprise number space of RFC 5424 §7.2.2 examples; any private
/// number works, this one is ours by convention).
pub const KEY_SD_ID: &str = "securenet@32473";

/// The priority RFC 3164 §4.3.3 gives a message that has none: facility
/// user (1), severity notice (5).
const DEFAULT_PRI: u8 = 13;

/// What parsing needs to know besides the bytes.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// Zone of BSD timestamps, which carry none.
    pub bsd_zone: Tz,
    /// When the message arrived, ms since the epoch.
    pub received_ms: i64,
    /// Keep the exact bytes even when parsing succeeded.
    pub keep_raw: bool,
    pub source_ip: Option<String>,
    /// `syslog_udp`, `syslog_tcp`, `syslog_tls`.
    pub input: &'static str,
}

/// A parsed message, plus the API key it carried (removed from the stored
/// structured data: secrets are never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub record: LogRecord,
    pub api_key: Option<String>,
    /// The frame carries our SD element with a `key` parameter that cannot
    /// be read (cut off, unterminated): it must be rejected, never routed
    /// by its source or the listener's default.
    pub unreadable_key: bool,
}

/// Where our key sits in a frame, found without parsing the frame.
#[derive(Debug, PartialEq)]
enum KeyScan {
    None,
    Found(String),
    Unreadable,
}

/// Looks for `[securenet@32473 … key="…"` anywhere in `msg`. A frame that
/// fails strict parsing (a bad timestamp, a malformed neighbour element,
/// RFC 3164 with structured data pasted in, a cut-off frame) must still
/// reach its key's tenant or be rejected — never land in another tenant
/// with the key in its text.
fn scan_key(msg: &[u8]) -> KeyScan {
    let marker = format!("[{KEY_SD_ID}");
    let marker = marker.as_bytes();
    let mut from = 0;
    while let Some(at) = find(&msg[from..], marker) {
        let start = from + at + marker.len();
        let mut p = &msg[start..];
        let mut broken = false;
        while let [b' ', rest @ ..] = p {
            let Some(eq) = rest.iter().position(|c| *c == b'=') else {
                broken = true;
                break;
            };
            let name = &rest[..eq];
            let Some(value) = rest[eq + 1..].strip_prefix(b"\"") else {
                broken = true;
                break;
            };
            match sd_value(value) {
                Ok((v, after)) => {
                    if name == b"key" {
                        return if v.is_empty() {
                            KeyScan::Unreadable
                        } else {
                            KeyScan::Found(v)
                        };
                    }
                    p = after;
                }
                Err(()) => {
                    broken = true;
                    break;
                }
            }
        }
        // A broken element that mentions a key: it may be one we cannot read.
        if broken && find(&msg[start..], b"key=").is_some() {
            return KeyScan::Unreadable;
        }
        from = start;
    }
    KeyScan::None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Replaces every occurrence of `key` in `bytes` (stored text or raw
/// bytes) so a secret never reaches storage.
pub fn redact_key(bytes: &mut Vec<u8>, key: &str) {
    if key.is_empty() || find(bytes, key.as_bytes()).is_none() {
        return;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = &bytes[..];
    while let Some(at) = find(rest, key.as_bytes()) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(REDACTED.as_bytes());
        rest = &rest[at + key.len()..];
    }
    out.extend_from_slice(rest);
    *bytes = out;
}

const REDACTED: &str = "<redacted>";

/// Parses one syslog message (framing already removed).
pub fn parse(msg: &[u8], ctx: &ParseContext) -> Parsed {
    let msg = trim_end(msg);
    let utf8 = std::str::from_utf8(msg).is_ok();
    let mut parsed = parse_any(msg, ctx);
    let record = &mut parsed.record;
    record.received_ms = ctx.received_ms;
    record.input = ctx.input;
    record.bytes = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    if record.source_ip.is_none() {
        record.source_ip = ctx.source_ip.clone();
    }
    if !utf8 && record.parse_status == ParseStatus::Ok {
        record.parse_status = ParseStatus::InvalidUtf8;
    }
    if record.parse_status != ParseStatus::Ok || ctx.keep_raw {
        record.raw = Some(msg.to_vec());
    }
    if parsed.api_key.as_deref() == Some("") {
        parsed.api_key = None;
        parsed.unreadable_key = true;
    } else if parsed.api_key.is_none() {
        match scan_key(msg) {
            KeyScan::None => {}
            KeyScan::Found(key) => parsed.api_key = Some(key),
            KeyScan::Unreadable => parsed.unreadable_key = true,
        }
    }
    if let Some(key) = &parsed.api_key {
        let record = &mut parsed.record;
        if record.message.contains(key.as_str()) {
            record.message = record.message.replace(key.as_str(), REDACTED);
        }
        if let Some(raw) = &mut record.raw {
            redact_key(raw, key);
        }
    }
    parsed
}

fn parse_any(msg: &[u8], ctx: &ParseContext) -> Parsed {
    let (pri, rest) = match parse_pri(msg) {
        Ok(p) => p,
        Err(()) => return unparsed(msg, ctx),
    };
    let result = if rest.starts_with(b"1 ") {
        parse_5424(&rest[2..], ctx)
    } else {
        Ok(parse_3164(rest, ctx))
    };
    match result {
        Ok(mut p) => {
            // Without a PRI, RFC 3164 §4.3.3: a relay assigns 13 (user.notice).
            let pri = pri.unwrap_or(DEFAULT_PRI);
            p.record.facility = Some(pri / 8);
            p.record.severity = Some(pri % 8);
            p
        }
        Err(()) => unparsed(msg, ctx),
    }
}

/// A message we could not understand: kept whole.
fn unparsed(msg: &[u8], ctx: &ParseContext) -> Parsed {
    Parsed {
        record: LogRecord {
            ts_ms: ctx.received_ms,
            message: String::from_utf8_lossy(msg).into_owned(),
            parse_status: ParseStatus::Error,
            ..Default::default()
        },
        api_key: None,
        unreadable_key: false,
    }
}

fn trim_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | b'\0'] = b {
        b = rest;
    }
    b
}

/// `<PRI>` → (Some(pri), rest); no `<` → (None, msg); a broken PRI is an error.
fn parse_pri(msg: &[u8]) -> Result<(Option<u8>, &[u8]), ()> {
    let Some(rest) = msg.strip_prefix(b"<") else {
        return Ok((None, msg));
    };
    let digits = rest
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 3 || rest.get(digits) != Some(&b'>') {
        return Err(());
    }
    let pri: u16 = ascii_num(&rest[..digits]).ok_or(())?;
    if pri > 191 {
        return Err(());
    }
    Ok((Some(pri as u8), &rest[digits + 1..]))
}

fn ascii_num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Splits off the next space-delimited field.
fn field(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|c| *c == b' ').unwrap_or(b.len());
    if end == 0 {
        return None;
    }
    let rest = b.get(end + 1..).unwrap_or(&[]);
    Some((&b[..end], rest))
}

fn nil_or(b: &[u8]) -> Option<String> {
    (b != b"-").then(|| text(b))
}

// ---------------------------------------------------------------- RFC 5424

fn parse_5424(b: &[u8], ctx: &ParseContext) -> Result<Parsed, ()> {
    let (ts, b) = field(b).ok_or(())?;
    let ts_ms = if ts == b"-" {
        ctx.received_ms
    } else {
        let s = std::str::from_utf8(ts).map_err(|_| ())?;
        DateTime::parse_from_rfc3339(s)
            .map_err(|_| ())?
            .timestamp_millis()
    };
    let (host, b) = field(b).ok_or(())?;
    let (app, b) = field(b).ok_or(())?;
    let (pid, b) = field(b).ok_or(())?;
    let (msg_id, b) = field(b).ok_or(())?;
    // Structured data that does not follow RFC 5424's grammar (Check
    // Point's exporter writes `[key:"value"; …]`) is kept as the message:
    // the header is still good.
    let (sd, api_key, rest) = parse_sd(b).unwrap_or((None, None, b));
    let message = match rest {
        [] => String::new(),
        [b' ', m @ ..] => text(m.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(m)),
        // No space after the structured data: what follows is the message.
        m => text(m),
    };
    Ok(Parsed {
        record: LogRecord {
            ts_ms,
            host: nil_or(host),
            app: nil_or(app),
            pid: nil_or(pid),
            msg_id: nil_or(msg_id),
            message,
            structured_data: sd,
            ..Default::default()
        },
        api_key,
        unreadable_key: false,
    })
}

/// STRUCTURED-DATA: `-` or `[id p="v" ...]...`. Returns the elements as a
/// JSON object `{"id": {"p": "v"}}` (without our key), the API key if one
/// was carried, and what follows.
#[allow(clippy::type_complexity)]
fn parse_sd(b: &[u8]) -> Result<(Option<String>, Option<String>, &[u8]), ()> {
    if let Some(rest) = b.strip_prefix(b"-") {
        return Ok((None, None, rest));
    }
    if b.first() != Some(&b'[') {
        return Err(());
    }
    let mut elements = Map::new();
    let mut api_key = None;
    let mut b = b;
    while let Some(rest) = b.strip_prefix(b"[") {
        let id_end = rest
            .iter()
            .position(|c| *c == b' ' || *c == b']')
            .ok_or(())?;
        if id_end == 0 {
            return Err(());
        }
        let id = text(&rest[..id_end]);
        let mut params = Map::new();
        let mut p = &rest[id_end..];
        loop {
            match p {
                [b']', after @ ..] => {
                    p = after;
                    break;
                }
                [b' ', after @ ..] => {
                    let eq = after.iter().position(|c| *c == b'=').ok_or(())?;
                    let name = text(&after[..eq]);
                    let value = after.get(eq + 1..).ok_or(())?;
                    let value = value.strip_prefix(b"\"").ok_or(())?;
                    let (v, after_value) = sd_value(value)?;
                    if id == KEY_SD_ID && name == "key" {
                        api_key = Some(v);
                    } else {
                        params.insert(name, Value::String(v));
                    }
                    p = after_value;
                }
                _ => return Err(()),
            }
        }
        if !(id == KEY_SD_ID && params.is_empty()) {
            match elements.get_mut(&id) {
                Some(Value::Object(existing)) => existing.extend(params),
                _ => {
                    elements.insert(id, Value::Object(params));
                }
            }
        }
        b = p;
    }
    let sd = (!elements.is_empty()).then(|| Value::Object(elements).to_string());
    Ok((sd, api_key, b))
}

/// A PARAM-VALUE after its opening quote: `\"`, `\\` and `\]` are escapes.
fn sd_value(b: &[u8]) -> Result<(String, &[u8]), ()> {
    let mut out = Vec::with_capacity(b.len().min(64));
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if matches!(b.get(i + 1), Some(b'"' | b'\\' | b']')) => {
                out.push(b[i + 1]);
                i += 2;
            }
            b'"' => return Ok((String::from_utf8_lossy(&out).into_owned(), &b[i + 1..])),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(())
}

// ---------------------------------------------------------------- RFC 3164

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn parse_3164(b: &[u8], ctx: &ParseContext) -> Parsed {
    // Docker's syslog driver puts a space after the PRI.
    let mut b = b.strip_prefix(b" ").unwrap_or(b);
    // NX-OS: "<190>: 2024 Jan 15 …".
    b = b.strip_prefix(b": ").unwrap_or(b);
    // Cisco: "<189>42: " sequence numbers (two with service
    // sequence-numbers).
    for _ in 0..2 {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 && b.get(digits..digits + 2) == Some(b": ") {
            b = &b[digits + 2..];
        }
    }
    // Cisco `logging origin-id hostname`: "HOST: " before the time.
    let mut host = None;
    if let Some((first, rest)) = field(b)
        && let Some(name) = first.strip_suffix(b":")
        && !name.is_empty()
        && timestamp(strip_marker(rest), ctx).is_some()
    {
        host = Some(text(name));
        b = rest;
    }
    b = strip_marker(b);
    // Cisco uptime stamps ("00:05:41: ", "1d02h: "): no wall-clock time.
    if let Some(rest) = strip_uptime(b) {
        b = rest;
    }
    let (ts_ms, mut b) = match timestamp(b, ctx) {
        Some((ts, rest)) => (Some(ts), rest),
        None => (None, b),
    };
    if ts_ms.is_some() {
        // Cisco puts a colon after the timestamp.
        b = b.strip_prefix(b":").unwrap_or(b);
        b = b.strip_prefix(b" ").unwrap_or(b);
    }
    if ts_ms.is_some()
        && host.is_none()
        && let Some((first, rest)) = field(b)
    {
        if !looks_like_tag(first) {
            host = Some(text(first));
            b = rest;
        } else if first.contains(&b',') {
            // UniFi: "model,mac,version: program: …" — the device, then
            // the program.
            host = Some(text(first.strip_suffix(b":").unwrap_or(first)));
            b = rest;
        }
    }
    if host.is_some() {
        // Cisco ASA/FTD: "host : %ASA-…".
        b = b.strip_prefix(b": ").unwrap_or(b);
        // F5 BIG-IP: a severity word before the program.
        if let Some((word, rest)) = field(b)
            && is_severity_word(word)
            && tag(rest).is_some()
        {
            b = rest;
        }
    }
    if ts_ms.is_none()
        && host.is_none()
        && let Some(at) = find(b, b"\tMSWinEventLog\t")
        && !b[..at].contains(&b' ')
    {
        // Snare for Windows without a syslog header: "HOST<TAB>MSWinEventLog…".
        host = Some(text(&b[..at]));
        b = &b[at + 1..];
    }
    let (app, pid, version, message) = match tag(b) {
        Some(t) => (Some(text(t.name)), t.pid.map(text), t.version, t.message),
        None => (None, None, None, b),
    };
    let structured_data = version.map(|v| {
        let mut sd = Map::new();
        sd.insert("version".into(), Value::String(text(v)));
        Value::Object(sd).to_string()
    });
    Parsed {
        record: LogRecord {
            ts_ms: ts_ms.unwrap_or(ctx.received_ms),
            host,
            app,
            pid,
            message: text(message),
            structured_data,
            ..Default::default()
        },
        api_key: None,
        unreadable_key: false,
    }
}

/// Cisco's `*` (clock not synchronized) and `.` (not authoritative) markers.
fn strip_marker(b: &[u8]) -> &[u8] {
    match b {
        [b'*' | b'.', rest @ ..] => rest,
        _ => b,
    }
}

/// Any timestamp form a BSD-style header carries.
fn timestamp<'a>(b: &'a [u8], ctx: &ParseContext) -> Option<(i64, &'a [u8])> {
    bsd_time(b, ctx)
        .or_else(|| year_first_time(b, ctx))
        .or_else(|| iso_time(b))
}

/// `00:05:41: ` or `1d02h: ` / `2w3d: ` (device uptime, not a time of day).
fn strip_uptime(b: &[u8]) -> Option<&[u8]> {
    let (token, rest) = field(b)?;
    let t = token.strip_suffix(b":")?;
    let clock = t.len() >= 7
        && t.split(|c| *c == b':').count() == 3
        && t.split(|c| *c == b':')
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    let units = t.len() >= 3
        && t[0].is_ascii_digit()
        && t.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'y' | b'w' | b'd' | b'h' | b'm'))
        && t.iter().any(|c| matches!(c, b'y' | b'w' | b'd' | b'h'));
    (clock || units).then_some(rest)
}

/// Syslog severity keywords (F5 writes one before the program).
fn is_severity_word(w: &[u8]) -> bool {
    matches!(
        w,
        b"emerg"
            | b"alert"
            | b"crit"
            | b"err"
            | b"error"
            | b"warning"
            | b"warn"
            | b"notice"
            | b"info"
            | b"debug"
    )
}

/// A token that ends in `:` or contains `[...]:` is a tag, not a hostname.
fn looks_like_tag(token: &[u8]) -> bool {
    token.ends_with(b":") || (token.contains(&b'[') && token.ends_with(b"]:"))
}

struct Tag<'a> {
    name: &'a [u8],
    pid: Option<&'a [u8]>,
    /// `syslogd 1.4.1:` — a version between the name and the colon.
    version: Option<&'a [u8]>,
    message: &'a [u8],
}

/// `TAG[PID]: MSG` or `TAG: MSG`. Tag characters are what real senders use
/// (`postfix/smtpd`, `systemd-logind`, `CRON`, `kernel`), including a
/// parenthesised part as PAM modules log it — `sshd(pam_unix)[19939]:` is
/// app `sshd(pam_unix)`, pid `19939`, as rsyslog's `programname` has it.
/// A version after the name (`syslogd 1.4.1: restart.`) is kept as
/// `version` beside the tag.
fn tag(b: &[u8]) -> Option<Tag<'_>> {
    // CEF and LEEF payloads start like a tag ("CEF:0|…"): they are messages.
    if b.starts_with(b"CEF:") || b.starts_with(b"LEEF:") {
        return None;
    }
    if let Some(t) = whole_token_tag(b) {
        return Some(t);
    }
    let end = b.iter().take(64).position(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/' | b'@' | b'(' | b')'))
    })?;
    if end == 0 {
        return None;
    }
    let name = &b[..end];
    // A parenthesised part must be balanced: `(root)` alone is no tag.
    let opens = name.iter().filter(|c| **c == b'(').count();
    let closes = name.iter().filter(|c| **c == b')').count();
    if opens != closes || name[0] == b'(' {
        return None;
    }
    let mut rest = &b[end..];
    let mut version = None;
    if let Some(after) = rest.strip_prefix(b" ") {
        // `name 1.4.1:`: a version, digits and dots, then the colon.
        let v = after
            .iter()
            .take(16)
            .take_while(|c| c.is_ascii_digit() || **c == b'.')
            .count();
        if v > 0 && after[0].is_ascii_digit() && after.get(v) == Some(&b':') {
            version = Some(&after[..v]);
            rest = &after[v..];
        }
    }
    let (pid, rest) = match rest.strip_prefix(b"[") {
        Some(r) => {
            let close = r.iter().take(32).position(|c| *c == b']')?;
            (Some(&r[..close]), &r[close + 1..])
        }
        None => (None, rest),
    };
    let msg = match rest.strip_prefix(b":") {
        Some(m) => m,
        None => {
            // macOS: `sudo[4567] <Notice>: …` (a level label) and
            // `launchd[1] (label[12345]): …` (no colon after the pid).
            let pid = pid.filter(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))?;
            let after = rest.strip_prefix(b" ")?;
            let m = match after.strip_prefix(b"<") {
                Some(label) => {
                    let close = label.iter().take(16).position(|c| *c == b'>')?;
                    label[close + 1..].strip_prefix(b":")?
                }
                None => after,
            };
            return Some(Tag {
                name,
                pid: Some(pid),
                version: None,
                message: m.strip_prefix(b" ").unwrap_or(m),
            });
        }
    };
    Some(Tag {
        name,
        pid,
        version,
        message: msg.strip_prefix(b" ").unwrap_or(msg),
    })
}

/// A first token that ends in `]:` and holds a colon of its own: Docker
/// tags name images (`registry/app:1.42.0/…/3f2a9c1b7d4e[1187]:`), so the
/// whole token up to the pid is the program.
fn whole_token_tag(b: &[u8]) -> Option<Tag<'_>> {
    let end = b.iter().take(256).position(|c| *c == b' ')?;
    let token = &b[..end];
    let head = token.strip_suffix(b"]:")?;
    let open = head.iter().rposition(|c| *c == b'[')?;
    let (name, pid) = (&head[..open], &head[open + 1..]);
    if !name.contains(&b':')
        || pid.is_empty()
        || !pid.iter().all(u8::is_ascii_digit)
        || !name.iter().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/' | b'@' | b':')
        })
    {
        return None;
    }
    let rest = &b[end + 1..];
    Some(Tag {
        name,
        pid: Some(pid),
        version: None,
        message: rest,
    })
}

/// `Mmm dd hh:mm:ss[.frac] ` or `Mmm dd yyyy hh:mm:ss `, in `ctx.bsd_zone`.
fn bsd_time<'a>(b: &'a [u8], ctx: &ParseContext) -> Option<(i64, &'a [u8])> {
    let month = MONTHS.iter().position(|m| b.get(..3) == Some(&m[..]))? as u32 + 1;
    let mut p = b.get(3..)?.strip_prefix(b" ")?;
    p = p.strip_prefix(b" ").unwrap_or(p); // space-padded day
    let day_len = p.iter().take(2).take_while(|c| c.is_ascii_digit()).count();
    let day: u32 = ascii_num(p.get(..day_len)?)?;
    p = p.get(day_len..)?.strip_prefix(b" ")?;
    let mut year = None;
    if p.len() >= 5 && p[..4].iter().all(u8::is_ascii_digit) && p[4] == b' ' {
        year = Some(ascii_num::<i32>(&p[..4])?);
        p = &p[5..];
    }
    let (h, m, s) = (p.get(0..2)?, p.get(3..5)?, p.get(6..8)?);
    if p.get(2) != Some(&b':') || p.get(5) != Some(&b':') {
        return None;
    }
    let (h, m, s): (u32, u32, u32) = (ascii_num(h)?, ascii_num(m)?, ascii_num(s)?);
    p = &p[8..];
    let mut millis = 0;
    if let Some(frac) = p.strip_prefix(b".") {
        let n = frac
            .iter()
            .take(9)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 {
            return None;
        }
        let mut digits = frac[..n.min(3)].to_vec();
        digits.resize(3, b'0');
        millis = ascii_num::<i64>(&digits)?;
        p = &frac[n..];
    }
    if !(p.is_empty() || p.starts_with(b" ") || p.starts_with(b":")) {
        return None;
    }
    // Junos, Comware, Aruba: the year after the time.
    if year.is_none()
        && let Some(after) = p.strip_prefix(b" ")
        && after.len() >= 5
        && after[..4].iter().all(u8::is_ascii_digit)
        && matches!(after[4], b' ' | b':')
    {
        year = Some(ascii_num::<i32>(&after[..4])?);
        p = &after[4..];
    }
    // A zone name after the time (Cisco `show-timezone`): UTC and GMT are
    // read as such; other names are ambiguous, so the listener's zone holds.
    let mut utc = false;
    if let Some(after) = p.strip_prefix(b" ")
        && let Some((zone, rest)) = zone_name(after)
    {
        utc = zone == b"UTC" || zone == b"GMT";
        p = rest;
    }
    let p = p.strip_prefix(b" ").unwrap_or(p);
    let zone = if utc { Tz::UTC } else { ctx.bsd_zone };
    let local = |y: i32| -> Option<i64> {
        let naive = NaiveDate::from_ymd_opt(y, month, day)?.and_hms_opt(h, m, s)?;
        Some(to_utc(naive, zone)? + millis)
    };
    let ts = match year {
        Some(y) => local(y)?,
        None => {
            // No year: this year, unless that is more than a day in the
            // future (a December message read in January).
            let now = DateTime::<Utc>::from_timestamp_millis(ctx.received_ms)?;
            let this_year = local(now.year())?;
            if this_year > ctx.received_ms + 86_400_000 {
                local(now.year() - 1)?
            } else {
                this_year
            }
        }
    };
    Some((ts, p))
}

/// A time-zone abbreviation (`UTC`, `CET`, `PDT`) followed by `:` or a
/// space; returns it and what follows its separator's position.
fn zone_name(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = b
        .iter()
        .take(6)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    if !(2..=5).contains(&n) || !matches!(b.get(n), Some(b':' | b' ')) {
        return None;
    }
    Some((&b[..n], &b[n..]))
}

/// NX-OS: `yyyy Mmm dd hh:mm:ss[.frac] [ZONE]`.
fn year_first_time<'a>(b: &'a [u8], ctx: &ParseContext) -> Option<(i64, &'a [u8])> {
    if !(b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b' ') {
        return None;
    }
    let year = &b[..4];
    let rest = &b[5..];
    // Reuse the BSD reader on "Mmm dd yyyy hh:mm:ss…".
    let month_day = rest.get(..6)?;
    let time = rest.get(7..)?;
    let mut rebuilt = Vec::with_capacity(b.len() + 1);
    rebuilt.extend_from_slice(month_day);
    rebuilt.push(b' ');
    rebuilt.extend_from_slice(year);
    rebuilt.push(b' ');
    rebuilt.extend_from_slice(time);
    let (ts, after) = bsd_time(&rebuilt, ctx)?;
    // Map the remainder back onto the original bytes (same length).
    let consumed = rebuilt.len() - after.len();
    Some((ts, &b[consumed..]))
}

fn to_utc(naive: NaiveDateTime, zone: Tz) -> Option<i64> {
    // In a DST fold, take the earlier instant; in a gap, the zone cannot
    // have produced this time, so fall back to reading it as UTC.
    let t = zone
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| naive.and_utc().timestamp_millis());
    Some(t)
}

/// An RFC 3339 timestamp used in a BSD message (rsyslog's high-precision
/// template).
fn iso_time(b: &[u8]) -> Option<(i64, &[u8])> {
    if !(b.len() >= 19 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-') {
        return None;
    }
    let (token, rest) = field(b)?;
    let s = std::str::from_utf8(token).ok()?.trim_end_matches(':');
    // RFC 3339, or ISO 8601 with a `+hhmm` offset (journalctl short-iso).
    let t = DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?;
    Some((t.timestamp_millis(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ParseContext {
        ParseContext {
            bsd_zone: Tz::UTC,
            // 2026-11-26T12:00:00Z
            received_ms: 1_795_694_400_000,
            keep_raw: false,
            source_ip: Some("192.0.2.7".into()),
            input: "syslog_tcp",
        }
    }

    fn p(msg: &str) -> LogRecord {
        parse(msg.as_bytes(), &ctx()).record
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn rfc5424_full() {
        let m = "<165>1 2026-11-26T10:14:15.003Z mymachine.example.com evntslog 8710 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\\\"lication\" eventID=\"1011\"][other@1 a=\"\\]\"] \u{feff}An application event";
        let r = p(m);
        assert_eq!(r.parse_status, ParseStatus::Ok);
        assert_eq!((r.facility, r.severity), (Some(20), Some(5)));
        assert_eq!(r.ts_ms, ms("2026-11-26T10:14:15.003Z"));
        assert_eq!(r.host.as_deref(), Some("mymachine.example.com"));
        assert_eq!(r.app.as_deref(), Some("evntslog"));
        assert_eq!(r.pid.as_deref(), Some("8710"));
        assert_eq!(r.msg_id.as_deref(), Some("ID47"));
        assert_eq!(r.message, "An application event");
        let sd: Value = serde_json::from_str(r.structured_data.as_deref().unwrap()).unwrap();
        assert_eq!(sd["exampleSDID@32473"]["eventSource"], "App\"lication");
        assert_eq!(sd["other@1"]["a"], "]");
        assert_eq!(r.source_ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(r.bytes as usize, m.len());
        assert!(r.raw.is_none());
    }

    #[test]
    fn rfc5424_nil_values_zones_and_no_message() {
        let r = p("<34>1 2026-11-26T12:14:15.000003+02:00 - - - - -");
        assert_eq!(r.ts_ms, ms("2026-11-26T10:14:15Z"));
        assert_eq!(
            (r.host.clone(), r.app.clone(), r.pid.clone()),
            (None, None, None)
        );
        assert_eq!(r.message, "");
        assert_eq!(r.parse_status, ParseStatus::Ok);
        let r = p("<34>1 - host app - - - no timestamp");
        assert_eq!(r.ts_ms, ctx().received_ms);
        assert_eq!(r.message, "no timestamp");
    }

    #[test]
    fn api_key_is_extracted_and_never_stored() {
        let parsed = parse(
            b"<14>1 2026-11-26T10:00:00Z h a - - [securenet@32473 key=\"sn_abc\" env=\"prod\"] hello",
            &ctx(),
        );
        assert_eq!(parsed.api_key.as_deref(), Some("sn_abc"));
        let sd = parsed.record.structured_data.unwrap();
        assert!(!sd.contains("sn_abc"), "{sd}");
        assert!(sd.contains("\"env\":\"prod\""), "{sd}");
        let parsed = parse(b"<14>1 - h a - - [securenet@32473 key=\"k\"] x", &ctx());
        assert_eq!(parsed.record.structured_data, None);
    }

    /// Frames that fail strict parsing still give up their key (routing by
    /// it), and the key is never left in `message` or `raw`.
    #[test]
    fn a_key_in_a_frame_that_fails_strict_parsing_is_found_and_redacted() {
        let key = "sn_0123456789abcdef_0123456789abcdef0123456789abcdef";
        for frame in [
            // Invalid timestamp.
            format!("<14>1 2026-13-45T99:00:00Z h a - - [securenet@32473 key=\"{key}\"] m"),
            // No space after the structured data.
            format!("<14>1 - h a - - [securenet@32473 key=\"{key}\"]m"),
            // A malformed second element.
            format!("<14>1 - h a - - [securenet@32473 key=\"{key}\"][bad m"),
            // RFC 3164 with the element pasted into the message.
            format!("<13>Nov 26 09:01:02 h app: [securenet@32473 key=\"{key}\"] m"),
            // No PRI at all.
            format!("garbage [securenet@32473 env=\"x\" key=\"{key}\"] m"),
        ] {
            let ctx = ParseContext {
                keep_raw: true,
                ..ctx()
            };
            let parsed = parse(frame.as_bytes(), &ctx);
            assert_eq!(parsed.api_key.as_deref(), Some(key), "{frame}");
            assert!(!parsed.unreadable_key);
            let r = &parsed.record;
            assert!(!r.message.contains(key), "{frame}: {}", r.message);
            let raw = String::from_utf8_lossy(r.raw.as_deref().unwrap()).into_owned();
            assert!(!raw.contains(key), "{frame}: {raw}");
            assert!(!r.structured_data.clone().unwrap_or_default().contains(key));
        }
        // Cut off inside the key, or an unterminated value: unreadable.
        for frame in [
            "<14>1 - h a - - [securenet@32473 key=\"sn_0123",
            "<14>1 - h a - - [securenet@32473 key=sn_0123] m",
            "<14>1 - h a - - [securenet@32473 key=\"\"] m",
        ] {
            let parsed = parse(frame.as_bytes(), &ctx());
            assert!(parsed.api_key.is_none() && parsed.unreadable_key, "{frame}");
        }
        // Our element without a key is not a keyed frame.
        let parsed = parse(b"<14>1 - h a - - [securenet@32473 env=\"prod\"] m", &ctx());
        assert!(parsed.api_key.is_none() && !parsed.unreadable_key);
        // Invalid UTF-8 with a key: raw is kept, redacted.
        let mut frame = format!("<14>1 - h a - - [securenet@32473 key=\"{key}\"] ").into_bytes();
        frame.extend_from_slice(b"\xff\xfe");
        let parsed = parse(&frame, &ctx());
        assert_eq!(parsed.api_key.as_deref(), Some(key));
        let raw = parsed.record.raw.unwrap();
        assert!(find(&raw, key.as_bytes()).is_none());
    }

    #[test]
    fn rfc3164_classic_and_variants() {
        let r =
            p("<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8");
        assert_eq!((r.facility, r.severity), (Some(4), Some(2)));
        assert_eq!(r.ts_ms, ms("2026-10-11T22:14:15Z"));
        assert_eq!(r.host.as_deref(), Some("mymachine"));
        assert_eq!(r.app.as_deref(), Some("su"));
        assert_eq!(r.pid.as_deref(), Some("230"));
        assert_eq!(r.message, "'su root' failed for lonvick on /dev/pts/8");

        // Space-padded day, no pid.
        let r = p("<13>Nov  6 09:01:02 web-01 CRON: (root) CMD (true)");
        assert_eq!(r.ts_ms, ms("2026-11-06T09:01:02Z"));
        assert_eq!((r.app.as_deref(), r.pid.as_deref()), (Some("CRON"), None));
        assert_eq!(r.message, "(root) CMD (true)");

        // Year and milliseconds.
        let r = p("<13>Nov 26 2025 09:01:02.250 h app: m");
        assert_eq!(r.ts_ms, ms("2025-11-26T09:01:02.250Z"));

        // No hostname (tag right after the time).
        let r = p("<13>Nov 26 09:01:02 sshd[99]: Accepted");
        assert_eq!(
            (r.host, r.app.as_deref(), r.pid.as_deref()),
            (None, Some("sshd"), Some("99"))
        );

        // No PRI: RFC 3164's default, user.notice.
        let r = p("Nov 26 09:01:02 h kernel: eth0 up");
        assert_eq!((r.facility, r.severity), (Some(1), Some(5)));
        assert_eq!(r.app.as_deref(), Some("kernel"));

        // PAM modules' parenthesised tags (43% of a public Linux sample).
        let r = p(
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0",
        );
        assert_eq!(r.host.as_deref(), Some("combo"));
        assert_eq!(
            (r.app.as_deref(), r.pid.as_deref()),
            (Some("sshd(pam_unix)"), Some("19939"))
        );
        assert_eq!(r.message, "authentication failure; logname= uid=0");
        let r = p(
            "Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
        );
        assert_eq!(r.app.as_deref(), Some("su(pam_unix)"));
        // A version after the program name.
        let r = p("Jun 18 02:23:10 combo syslogd 1.4.1: restart.");
        assert_eq!(
            (r.host.as_deref(), r.app.as_deref()),
            (Some("combo"), Some("syslogd"))
        );
        assert_eq!(r.message, "restart.");
        assert_eq!(r.structured_data.as_deref(), Some(r#"{"version":"1.4.1"}"#));
        // Mark lines and messages that start with dashes have no tag.
        let r = p("Jun 17 07:07:00 combo -- MARK --");
        assert_eq!((r.host.as_deref(), r.app.as_deref()), (Some("combo"), None));
        assert_eq!(r.message, "-- MARK --");
        // Parentheses alone are not a tag.
        let r = p("<13>Nov  6 09:01:02 web-01 (root) CMD (true)");
        assert_eq!(
            (r.host.as_deref(), r.app.as_deref()),
            (Some("web-01"), None)
        );
        assert_eq!(r.message, "(root) CMD (true)");

        // Cisco: sequence number, '*' marker, colon after the time.
        let r = p("<189>52: *Nov 26 09:01:02.123: %SYS-5-CONFIG_I: Configured from console");
        assert_eq!(r.ts_ms, ms("2026-11-26T09:01:02.123Z"));
        assert_eq!(r.message, "%SYS-5-CONFIG_I: Configured from console");

        // rsyslog high-precision timestamp.
        let r = p("<30>2026-11-26T09:01:02.123456+01:00 h systemd[1]: Started x.");
        assert_eq!(r.ts_ms, ms("2026-11-26T08:01:02.123Z"));
        assert_eq!(r.app.as_deref(), Some("systemd"));

        // Only a message.
        let r = p("<13>just some text");
        assert_eq!(r.message, "just some text");
        assert_eq!(r.ts_ms, ctx().received_ms);
        assert_eq!(r.parse_status, ParseStatus::Ok);
    }

    #[test]
    fn bsd_zone_and_year_rollover() {
        let c = ParseContext {
            bsd_zone: "Europe/Berlin".parse().unwrap(),
            ..ctx()
        };
        let r = parse(b"<13>Nov 26 11:00:00 h a: m", &c).record;
        assert_eq!(r.ts_ms, ms("2026-11-26T10:00:00Z"));
        // Received on 2027-01-01: a Dec 31 message is from 2026.
        let c = ParseContext {
            received_ms: ms("2027-01-01T00:00:30Z"),
            ..ctx()
        };
        let r = parse(b"<13>Dec 31 23:59:59 h a: m", &c).record;
        assert_eq!(r.ts_ms, ms("2026-12-31T23:59:59Z"));
    }

    #[test]
    fn broken_messages_are_kept_whole() {
        for m in [
            &b"<999>1 x"[..],
            b"<12",
            b"<>x",
            b"<13>1 notatime h a - - - m",
        ] {
            let r = parse(m, &ctx()).record;
            assert_eq!(
                r.parse_status,
                ParseStatus::Error,
                "{:?}",
                String::from_utf8_lossy(m)
            );
            assert_eq!(r.raw.as_deref(), Some(m));
            assert_eq!(r.message, String::from_utf8_lossy(m));
            assert_eq!(r.ts_ms, ctx().received_ms);
        }
        // A good RFC 5424 header with broken structured data keeps the
        // header; the rest is the message.
        let r = parse(b"<13>1 2026-11-26T10:00:00Z h a - - [unterminated", &ctx()).record;
        assert_eq!(
            (r.host.as_deref(), r.app.as_deref()),
            (Some("h"), Some("a"))
        );
        assert_eq!(r.message, "[unterminated");
    }

    #[test]
    fn invalid_utf8_is_kept_lossy_with_raw_bytes() {
        let m = b"<13>Nov 26 09:01:02 h app: caf\xe9 \xff";
        let r = parse(m, &ctx()).record;
        assert_eq!(r.parse_status, ParseStatus::InvalidUtf8);
        assert_eq!(r.raw.as_deref(), Some(&m[..]));
        assert_eq!(r.message, "caf\u{fffd} \u{fffd}");
        assert_eq!(r.app.as_deref(), Some("app"));
    }

    #[test]
    fn keep_raw_and_trailing_newlines() {
        let c = ParseContext {
            keep_raw: true,
            ..ctx()
        };
        let r = parse(b"<13>Nov 26 09:01:02 h a: m\r\n", &c).record;
        assert_eq!(r.raw.as_deref(), Some(&b"<13>Nov 26 09:01:02 h a: m"[..]));
        assert_eq!(r.message, "m");
    }
}
