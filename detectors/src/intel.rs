//! Threat-intelligence indicators matched against log batches.
//!
//! An organization keeps named lists of indicators — IP addresses, CIDR
//! ranges, domains, URLs, file hashes — each with an optional expiry,
//! uploaded as CSV, as JSON, or as a STIX 2.1 bundle of `indicator`
//! objects with simple patterns. An [`IndicatorSet`] compiles every
//! unexpired indicator of an organization once:
//!
//! - `source_ip` is parsed once per row and looked up in a hash set of
//!   addresses and, per prefix length present, a hash set of networks (so
//!   10,000 CIDR ranges cost a handful of lookups per row, not 10,000);
//! - `message` is scanned once by one Aho-Corasick automaton over every
//!   address, domain, URL and hash (ASCII case folded), each hit checked
//!   for token boundaries (`evil.com` matches `a.evil.com` and
//!   `evil.com:443`, not `devil.com` or `evil.community`; `10.0.0.1` not
//!   `10.0.0.12`; a hash not inside a longer hex run).
//!
//! A row matches at most once per set (its first indicator, `source_ip`
//! first); the detection names the indicator, its list and the field.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sigma::Level;

/// Indicators one upload may hold.
pub const MAX_INDICATORS: usize = 1_000_000;
/// Longest indicator value accepted.
const MAX_VALUE_BYTES: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Ip,
    Cidr,
    Domain,
    Url,
    Hash,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ip => "ip",
            Kind::Cidr => "cidr",
            Kind::Domain => "domain",
            Kind::Url => "url",
            Kind::Hash => "hash",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "ip" | "ipv4" | "ipv6" | "ipv4-addr" | "ipv6-addr" | "address" => Kind::Ip,
            "cidr" | "network" | "subnet" => Kind::Cidr,
            "domain" | "domain-name" | "hostname" | "fqdn" => Kind::Domain,
            "url" | "uri" => Kind::Url,
            "hash" | "md5" | "sha1" | "sha256" | "file" => Kind::Hash,
            _ => return None,
        })
    }
}

/// One indicator, normalized (addresses canonical, text lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indicator {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub value: String,
    /// ms since the epoch; gone from matching after it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

/// Why an upload was refused: every bad entry, by where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct IntelError(pub Vec<String>);

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn domain_like(s: &str) -> bool {
    s.contains('.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// `value` as an indicator of `kind` (inferred when `None`), normalized.
pub fn indicator(kind: Option<Kind>, value: &str) -> Result<(Kind, String), String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty value".into());
    }
    if v.len() > MAX_VALUE_BYTES {
        return Err(format!("value over {MAX_VALUE_BYTES} bytes"));
    }
    let inferred = match kind {
        Some(k) => k,
        None if v.parse::<IpAddr>().is_ok() => Kind::Ip,
        None if v.contains('/') && v.parse::<IpNet>().is_ok() => Kind::Cidr,
        None if v.contains("://") => Kind::Url,
        None if matches!(v.len(), 32 | 40 | 64 | 128) && is_hex(v) => Kind::Hash,
        None if domain_like(v) => Kind::Domain,
        None => {
            return Err(format!(
                "{v:?} is not an address, CIDR range, domain, URL or hash"
            ));
        }
    };
    let bad = |what: &str| Err(format!("{v:?} is not {what}"));
    match inferred {
        Kind::Ip => match v.parse::<IpAddr>() {
            Ok(ip) => Ok((Kind::Ip, ip.to_string())),
            Err(_) => bad("an IP address"),
        },
        Kind::Cidr => match v.parse::<IpNet>() {
            Ok(net) => Ok((Kind::Cidr, net.trunc().to_string())),
            Err(_) => bad("a CIDR range (e.g. 203.0.113.0/24)"),
        },
        Kind::Url => {
            let lower = v.to_ascii_lowercase();
            if lower.starts_with("http://")
                || lower.starts_with("https://")
                || lower.starts_with("ftp://")
            {
                Ok((Kind::Url, lower))
            } else {
                bad("a URL (http://, https:// or ftp://)")
            }
        }
        Kind::Hash => {
            if matches!(v.len(), 32 | 40 | 64 | 128) && is_hex(v) {
                Ok((Kind::Hash, v.to_ascii_lowercase()))
            } else {
                bad("an MD5, SHA-1, SHA-256 or SHA-512 hash in hex")
            }
        }
        Kind::Domain => {
            let lower = v.to_ascii_lowercase();
            if domain_like(&lower) {
                Ok((Kind::Domain, lower))
            } else {
                bad("a domain name")
            }
        }
    }
}

fn expiry(text: &str) -> Result<Option<i64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    schemas::time::parse_rfc3339_ms(t)
        .map(Some)
        .ok_or_else(|| format!("expires_at {t:?} is not an RFC 3339 time"))
}

fn finish(out: Vec<Indicator>, errors: Vec<String>) -> Result<Vec<Indicator>, IntelError> {
    if !errors.is_empty() {
        let more = errors.len().saturating_sub(20);
        let mut shown: Vec<String> = errors.into_iter().take(20).collect();
        if more > 0 {
            shown.push(format!("and {more} more"));
        }
        return Err(IntelError(shown));
    }
    if out.is_empty() {
        return Err(IntelError(vec!["no indicators".into()]));
    }
    if out.len() > MAX_INDICATORS {
        return Err(IntelError(vec![format!(
            "{} indicators, over the limit of {MAX_INDICATORS} per list",
            out.len()
        )]));
    }
    Ok(out)
}

/// CSV with a header naming `value` and optionally `type`,
/// `expires_at`, `description` (any order, other columns ignored), or
/// one value per line with no header (types inferred).
pub fn parse_csv(text: &str) -> Result<Vec<Indicator>, IntelError> {
    let first = text.lines().next().unwrap_or_default().to_ascii_lowercase();
    let has_header = first
        .split(',')
        .any(|h| matches!(h.trim().trim_matches('"'), "value" | "indicator"));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(has_header)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let column = |name: &[&str]| -> Option<usize> {
        if !has_header {
            return None;
        }
        first
            .split(',')
            .position(|h| name.contains(&h.trim().trim_matches('"')))
    };
    let (value_at, type_at, expires_at, description_at) = (
        column(&["value", "indicator"]).unwrap_or(0),
        column(&["type", "kind"]),
        column(&["expires_at", "expires", "valid_until"]),
        column(&["description", "comment"]),
    );
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 1 + usize::from(has_header);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or_default();
        let kind = match field(type_at) {
            "" => None,
            t => match Kind::parse(t) {
                Some(k) => Some(k),
                None => {
                    errors.push(format!(
                        "line {line}: type {t:?} is not ip, cidr, domain, url or hash"
                    ));
                    continue;
                }
            },
        };
        let entry = indicator(kind, field(Some(value_at))).and_then(|(kind, value)| {
            Ok(Indicator {
                kind,
                value,
                expires_at: expiry(field(expires_at))?,
                description: Some(field(description_at).to_string()).filter(|d| !d.is_empty()),
            })
        });
        match entry {
            Ok(i) => out.push(i),
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    finish(out, errors)
}

/// `{"indicators": [{"type"?, "value", "expires_at"?, "description"?}]}`,
/// or a STIX 2.1 bundle whose `indicator` objects have patterns of one
/// comparison (`[ipv4-addr:value = '…']`, `ipv6-addr`, `domain-name`,
/// `url`, `file:hashes.'SHA-256'` …; `valid_until` as the expiry).
pub fn parse_json(text: &str) -> Result<Vec<Indicator>, IntelError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| IntelError(vec![format!("not JSON: {e}")]))?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    if doc.get("type").and_then(Value::as_str) == Some("bundle") {
        let objects = doc
            .get("objects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, o) in objects.iter().enumerate() {
            if o.get("type").and_then(Value::as_str) != Some("indicator") {
                continue;
            }
            let pattern = o.get("pattern").and_then(Value::as_str).unwrap_or_default();
            let entry = stix_pattern(pattern).and_then(|(kind, value)| {
                let (kind, value) = indicator(Some(kind), &value)?;
                Ok(Indicator {
                    kind,
                    value,
                    expires_at: expiry(
                        o.get("valid_until")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    )?,
                    description: o
                        .get("name")
                        .or_else(|| o.get("description"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
            });
            match entry {
                Ok(ind) => out.push(ind),
                Err(e) => errors.push(format!("objects[{i}]: {e}")),
            }
        }
        return finish(out, errors);
    }
    let Some(items) = doc.get("indicators").and_then(Value::as_array) else {
        return Err(IntelError(vec![
            "expected {\"indicators\": [...]} or a STIX bundle ({\"type\": \"bundle\", \"objects\": [...]})".into(),
        ]));
    };
    for (i, item) in items.iter().enumerate() {
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
        let kind = match text("type") {
            "" => None,
            t => match Kind::parse(t) {
                Some(k) => Some(k),
                None => {
                    errors.push(format!(
                        "indicators[{i}]: type {t:?} is not ip, cidr, domain, url or hash"
                    ));
                    continue;
                }
            },
        };
        let entry = indicator(kind, text("value")).and_then(|(kind, value)| {
            Ok(Indicator {
                kind,
                value,
                expires_at: expiry(text("expires_at"))?,
                description: Some(text("description").to_string()).filter(|d| !d.is_empty()),
            })
        });
        match entry {
            Ok(ind) => out.push(ind),
            Err(e) => errors.push(format!("indicators[{i}]: {e}")),
        }
    }
    finish(out, errors)
}

/// `[ipv4-addr:value = '198.51.100.1']` → (kind, value). Only one
/// comparison with `=`; anything else is refused by name.
fn stix_pattern(pattern: &str) -> Result<(Kind, String), String> {
    let p = pattern.trim();
    let inner = p
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| format!("pattern {p:?}: one [object:property = 'value'] comparison"))?;
    if inner.contains(" AND ") || inner.contains(" OR ") || p.matches('[').count() > 1 {
        return Err(format!(
            "pattern {p:?}: compound patterns are not supported"
        ));
    }
    let (path, value) = inner
        .split_once('=')
        .ok_or_else(|| format!("pattern {p:?}: only '=' comparisons are supported"))?;
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or_else(|| format!("pattern {p:?}: the value must be quoted"))?
        .replace("\\'", "'");
    let path = path.trim();
    let kind = if path.starts_with("ipv4-addr:value") || path.starts_with("ipv6-addr:value") {
        if value.contains('/') {
            Kind::Cidr
        } else {
            Kind::Ip
        }
    } else if path.starts_with("domain-name:value") {
        Kind::Domain
    } else if path.starts_with("url:value") {
        Kind::Url
    } else if path.starts_with("file:hashes") {
        Kind::Hash
    } else {
        return Err(format!(
            "pattern {p:?}: object path {path:?} is not supported"
        ));
    };
    Ok((kind, value))
}

/// One organization's list, as the engine takes it.
#[derive(Debug, Clone)]
pub struct IntelList {
    pub name: String,
    pub level: Level,
    pub indicators: Vec<Indicator>,
}

/// Where a match came from: (list, indicator) indexes.
type Origin = (u32, u32);

/// An indicator found in a row.
#[derive(Debug, Clone, PartialEq)]
pub struct IntelHit {
    pub row: u32,
    pub list: usize,
    pub indicator: usize,
    /// `source_ip` or `message`.
    pub field: &'static str,
}

/// Every unexpired indicator of an organization, compiled.
pub struct IndicatorSet {
    lists: Vec<Arc<IntelList>>,
    ips: HashMap<IpAddr, Origin>,
    /// Prefix length → network → origin.
    networks: Vec<(u8, bool, HashMap<IpNet, Origin>)>,
    automaton: Option<AhoCorasick>,
    patterns: Vec<(Origin, Kind)>,
    /// The earliest expiry still ahead (the set must be rebuilt then).
    pub next_expiry: Option<i64>,
    count: usize,
}

impl IndicatorSet {
    /// Compiles the indicators of `lists` not expired at `now_ms`.
    pub fn compile(lists: Vec<Arc<IntelList>>, now_ms: i64) -> Result<Self, String> {
        let mut ips = HashMap::new();
        let mut nets: HashMap<(u8, bool), HashMap<IpNet, Origin>> = HashMap::new();
        let mut texts: Vec<String> = Vec::new();
        let mut patterns = Vec::new();
        let mut seen: HashSet<(Kind, &str)> = HashSet::new();
        let mut next_expiry: Option<i64> = None;
        let mut count = 0;
        for (l, list) in lists.iter().enumerate() {
            for (i, ind) in list.indicators.iter().enumerate() {
                if let Some(at) = ind.expires_at {
                    if at <= now_ms {
                        continue;
                    }
                    next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
                }
                count += 1;
                // The first list naming an indicator reports it.
                if !seen.insert((ind.kind, ind.value.as_str())) {
                    continue;
                }
                let origin = (l as u32, i as u32);
                match ind.kind {
                    Kind::Ip => {
                        if let Ok(ip) = ind.value.parse::<IpAddr>() {
                            ips.insert(ip, origin);
                        }
                        texts.push(ind.value.clone());
                        patterns.push((origin, Kind::Ip));
                    }
                    Kind::Cidr => {
                        if let Ok(net) = ind.value.parse::<IpNet>() {
                            let v6 = matches!(net, IpNet::V6(_));
                            nets.entry((net.prefix_len(), v6))
                                .or_default()
                                .insert(net, origin);
                        }
                    }
                    Kind::Domain | Kind::Url | Kind::Hash => {
                        texts.push(ind.value.clone());
                        patterns.push((origin, ind.kind));
                    }
                }
            }
        }
        let automaton = if texts.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(true)
                    .build(&texts)
                    .map_err(|e| format!("indicators: {e}"))?,
            )
        };
        let mut networks: Vec<(u8, bool, HashMap<IpNet, Origin>)> = nets
            .into_iter()
            .map(|((len, v6), m)| (len, v6, m))
            .collect();
        // Most specific first: a row reports its narrowest range.
        networks.sort_by_key(|n| std::cmp::Reverse(n.0));
        Ok(Self {
            lists,
            ips,
            networks,
            automaton,
            patterns,
            next_expiry,
            count,
        })
    }

    /// Unexpired indicators compiled.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn list(&self, i: usize) -> &IntelList {
        &self.lists[i]
    }

    fn network(&self, ip: IpAddr) -> Option<Origin> {
        let v6 = ip.is_ipv6();
        self.networks
            .iter()
            .filter(|(_, is_v6, _)| *is_v6 == v6)
            .find_map(|(len, _, nets)| {
                let net = IpNet::new(ip, *len).ok()?.trunc();
                nets.get(&net).copied()
            })
    }

    /// The rows of `batch` an indicator matches, at most one hit per row.
    pub fn matches(&self, batch: &RecordBatch) -> Result<Vec<IntelHit>, ArrowError> {
        if self.is_empty() || batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let text = |name: &str| -> Result<Option<StringArray>, ArrowError> {
            batch
                .column_by_name(name)
                .map(|c| {
                    cast(c, &DataType::Utf8)
                        .map(|a| a.as_any().downcast_ref::<StringArray>().cloned())
                })
                .transpose()
                .map(Option::flatten)
        };
        let mut hits: Vec<IntelHit> = Vec::new();
        let mut done = vec![false; batch.num_rows()];
        let hit = |row: usize, (list, indicator): Origin, field| IntelHit {
            row: row as u32,
            list: list as usize,
            indicator: indicator as usize,
            field,
        };
        if (!self.ips.is_empty() || !self.networks.is_empty())
            && let Some(ips) = text("source_ip")?
        {
            for (row, v) in ips.iter().enumerate() {
                let Some(ip) = v.and_then(|v| v.trim().parse::<IpAddr>().ok()) else {
                    continue;
                };
                if let Some(o) = self.ips.get(&ip).copied().or_else(|| self.network(ip)) {
                    hits.push(hit(row, o, "source_ip"));
                    done[row] = true;
                }
            }
        }
        if let (Some(ac), Some(messages)) = (&self.automaton, text("message")?) {
            for (row, m) in messages.iter().enumerate() {
                let Some(m) = m else { continue };
                if done[row] {
                    continue;
                }
                let found = ac.find_overlapping_iter(m).find(|f| {
                    let (_, kind) = self.patterns[f.pattern().as_usize()];
                    bounded(m.as_bytes(), f.start(), f.end(), kind)
                });
                if let Some(f) = found {
                    hits.push(hit(row, self.patterns[f.pattern().as_usize()].0, "message"));
                }
            }
        }
        hits.sort_by_key(|h| h.row);
        Ok(hits)
    }
}

/// Whether `text[start..end]` stands as a whole token of its kind.
fn bounded(text: &[u8], start: usize, end: usize, kind: Kind) -> bool {
    let before = start.checked_sub(1).map(|i| text[i]);
    let after = text.get(end).copied();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    match kind {
        // `a.evil.com` is evil.com's; `devil.com` and `evil.community` are not.
        Kind::Domain => !before.is_some_and(word) && !after.is_some_and(word),
        // 10.0.0.1 is not 10.0.0.12 nor 110.0.0.1.
        Kind::Ip => {
            let part = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
            !before.is_some_and(part)
                && !after.is_some_and(|b| {
                    b.is_ascii_hexdigit()
                        || b == b':'
                        || (b == b'.' && text.get(end + 1).is_some_and(u8::is_ascii_digit))
                })
        }
        Kind::Hash => {
            !before.is_some_and(|b| b.is_ascii_hexdigit())
                && !after.is_some_and(|b| b.is_ascii_hexdigit())
        }
        // A URL matches where it starts; anything may follow it.
        Kind::Url => !before.is_some_and(word),
        Kind::Cidr => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};

    fn batch(rows: &[(&str, &str)]) -> RecordBatch {
        let t = TenantId::new("acme").unwrap();
        let mut b = LogBatchBuilder::with_capacity(rows.len());
        for (ip, m) in rows {
            b.append(&LogRecord {
                ts_ms: 1,
                received_ms: 1,
                source_ip: (!ip.is_empty()).then(|| ip.to_string()),
                message: m.to_string(),
                input: "test",
                ..Default::default()
            });
        }
        let id = uuid::Uuid::now_v7();
        Envelope::new(t.clone(), RecordKind::Logs, id, b.finish(&t, id).unwrap())
            .unwrap()
            .batch()
            .clone()
    }

    fn set(csv: &str, now: i64) -> IndicatorSet {
        let list = IntelList {
            name: "feed".into(),
            level: Level::High,
            indicators: parse_csv(csv).unwrap(),
        };
        IndicatorSet::compile(vec![Arc::new(list)], now).unwrap()
    }

    #[test]
    fn csv_json_and_stix_parse_with_errors_by_line() {
        let got = parse_csv("type,value,expires_at,description\nip,203.0.113.7,,scanner\ncidr,198.51.100.0/24,2027-01-01T00:00:00Z,\ndomain,Evil.Example.COM,,\n").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].description.as_deref(), Some("scanner"));
        assert_eq!(got[1].expires_at, Some(1_798_761_600_000));
        assert_eq!(got[2].value, "evil.example.com");
        let bare = parse_csv("203.0.113.7\nexample.org\nhttps://x.test/a\nd41d8cd98f00b204e9800998ecf8427e\n10.0.0.0/8\n").unwrap();
        let kinds: Vec<Kind> = bare.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Ip, Kind::Domain, Kind::Url, Kind::Hash, Kind::Cidr]
        );
        let err = parse_csv("type,value\nip,999.1.1.1\nbanana,x\nhash,abc\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2: \"999.1.1.1\" is not an IP address"),
            "{err}"
        );
        assert!(err.contains("line 3: type \"banana\""), "{err}");
        assert!(err.contains("line 4: \"abc\" is not an MD5"), "{err}");
        let json = parse_json(r#"{"indicators": [{"value": "203.0.113.9"}, {"type": "domain", "value": "bad.test", "expires_at": "2020-01-01T00:00:00Z"}]}"#).unwrap();
        assert_eq!(json.len(), 2);
        let stix = parse_json(r#"{"type": "bundle", "id": "bundle--1", "objects": [
            {"type": "indicator", "pattern": "[ipv4-addr:value = '198.51.100.3']", "pattern_type": "stix", "valid_until": "2030-01-01T00:00:00Z", "name": "C2"},
            {"type": "indicator", "pattern": "[file:hashes.'SHA-256' = 'E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855']"},
            {"type": "malware", "name": "ignored"}]}"#).unwrap();
        assert_eq!(stix[0].kind, Kind::Ip);
        assert_eq!(stix[0].description.as_deref(), Some("C2"));
        assert_eq!(stix[1].kind, Kind::Hash);
        let err = parse_json(r#"{"type": "bundle", "objects": [{"type": "indicator", "pattern": "[ipv4-addr:value = '1.2.3.4'] AND [url:value = 'http://x']"}]}"#).unwrap_err();
        assert!(err.to_string().contains("compound"), "{err}");
        assert!(parse_json("{}").is_err());
        assert!(parse_csv("").is_err());
    }

    #[test]
    fn addresses_ranges_and_tokens_match_on_their_boundaries() {
        let s = set(
            "value\n203.0.113.7\n198.51.100.0/24\n2001:db8::/32\nevil.example.com\nhttps://phish.test/login\nd41d8cd98f00b204e9800998ecf8427e\n10.0.0.1\n",
            0,
        );
        let b = batch(&[
            ("203.0.113.7", "connection"),                    // 0 ip
            ("198.51.100.200", "connection"),                 // 1 cidr
            ("2001:db8::5", "v6"),                            // 2 cidr v6
            ("192.0.2.1", "GET http://a.evil.example.com/x"), // 3 subdomain
            ("192.0.2.1", "resolved devil.example.com"),      // 4 no
            ("192.0.2.1", "evil.example.community"),          // 5 no
            ("", "visit HTTPS://PHISH.TEST/login?u=1"),       // 6 url, case
            ("", "md5=D41D8CD98F00B204E9800998ECF8427E ok"),  // 7 hash
            ("", "md5=d41d8cd98f00b204e9800998ecf8427e0"),    // 8 longer hex: no
            ("", "from 10.0.0.12 port 22"),                   // 9 no
            ("", "from 10.0.0.1 port 22"),                    // 10 ip in text
            ("", "to 10.0.0.1.5"),                            // 11 no
        ]);
        let rows: Vec<(u32, &str)> = s
            .matches(&b)
            .unwrap()
            .iter()
            .map(|h| (h.row, h.field))
            .collect();
        assert_eq!(
            rows,
            [
                (0, "source_ip"),
                (1, "source_ip"),
                (2, "source_ip"),
                (3, "message"),
                (6, "message"),
                (7, "message"),
                (10, "message")
            ]
        );
    }

    #[test]
    fn expired_indicators_do_not_match_and_the_next_expiry_is_known() {
        let csv = "value,expires_at\n203.0.113.7,2026-01-01T00:00:00Z\n203.0.113.8,2027-01-01T00:00:00Z\n203.0.113.9,\n";
        let now = schemas::time::parse_rfc3339_ms("2026-06-01T00:00:00Z").unwrap();
        let s = set(csv, now);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.next_expiry,
            schemas::time::parse_rfc3339_ms("2027-01-01T00:00:00Z")
        );
        let b = batch(&[
            ("203.0.113.7", "x"),
            ("203.0.113.8", "x"),
            ("203.0.113.9", "x"),
        ]);
        let rows: Vec<u32> = s.matches(&b).unwrap().iter().map(|h| h.row).collect();
        assert_eq!(rows, [1, 2]);
    }
}
