//! A Sigma rule's YAML → [`Rule`].
//!
//! Supported: named searches as maps (every field must match) or lists of
//! maps (any map), keyword lists, field values as scalars or lists (any
//! value; every value with `all`), `null` (the field is absent), and the
//! modifiers `contains`, `startswith`, `endswith`, `all`, `re` (with `i`,
//! `m`, `s`), `cidr`, `base64`, `base64offset`, `windash`, `exists`, `lt`,
//! `lte`, `gt`, `gte`, `cased`. Refused with a message naming it: any
//! other modifier (`wide`/`utf16*`, `expand`, `fieldref`…), correlation
//! rules and multi-document rule collections (not yet), aggregations in
//! the condition, regular expressions the `regex` crate cannot compile
//! (look-around, back-references), values of the wrong kind for their
//! modifier.

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::condition::{self, Cond};
use super::pattern::{self, Pattern};
use super::{SigmaError, SigmaResult};

/// Largest rule text accepted.
pub const MAX_RULE_BYTES: usize = 256 << 10;
/// Values of one rule at most (after `windash`/`base64offset` expand them).
pub(crate) const MAX_VALUES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    /// The level named exactly `s` (as stored and as detections carry it).
    pub fn parse_name(s: &str) -> Option<Self> {
        [
            Level::Informational,
            Level::Low,
            Level::Medium,
            Level::High,
            Level::Critical,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }

    pub(crate) fn parse_loose(s: &str) -> SigmaResult<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "informational" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            other => {
                return Err(SigmaError::new(format!(
                    "level {other:?}: expected informational, low, medium, high or critical"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSource {
    pub product: Option<String>,
    pub service: Option<String>,
    pub category: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Option<String>,
    /// What correlation rules may refer to it by, beside its id.
    pub name: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub status: Option<String>,
    pub level: Level,
    pub tags: Vec<String>,
    pub logsource: LogSource,
    pub(crate) searches: Vec<(String, Search)>,
    pub(crate) condition: Cond,
}

/// A named search.
#[derive(Debug, Clone)]
pub(crate) enum Search {
    /// Any of these maps; each map: all of its field tests.
    Maps(Vec<Vec<FieldTest>>),
    /// Any (or, with `all`, every) of these values in the keyword field.
    Keywords(FieldTest),
}

/// One `field|modifiers: values` entry.
#[derive(Debug, Clone)]
pub(crate) struct FieldTest {
    /// `None`: the keyword field.
    pub field: Option<String>,
    /// Every value must match (`all`), rather than any.
    pub all: bool,
    /// One entry per value written; a value's variants (`windash`,
    /// `base64offset` spellings) match if any does.
    pub values: Vec<Vec<Matcher>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    Text {
        pattern: Pattern,
        cased: bool,
    },
    Regex(String),
    Cidr(Vec<IpNet>),
    Compare {
        op: CmpOp,
        value: f64,
    },
    /// The field is absent or null.
    Null,
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CmpOp {
    Lt,
    Lte,
    Gt,
    Gte,
}

/// One YAML document as a mapping: size, form and YAML checked.
pub(crate) fn document(yaml: &str) -> SigmaResult<Map<String, Value>> {
    if yaml.len() > MAX_RULE_BYTES {
        return Err(SigmaError::new(format!(
            "the rule is {} bytes, over the limit of {MAX_RULE_BYTES}",
            yaml.len()
        )));
    }
    if yaml.lines().any(|l| l.trim_end() == "---") {
        return Err(SigmaError::new(
            "multi-document rule collections ('---') are not supported: upload each rule on its own",
        ));
    }
    let doc: Value = serde_saphyr::from_str(yaml)
        .map_err(|e| SigmaError::new(format!("not valid YAML: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(SigmaError::new("a rule is a YAML mapping"));
    };
    if doc.get("action").is_some() {
        return Err(SigmaError::new(
            "rule collections (action: global/repeat/reset) are not supported",
        ));
    }
    Ok(doc)
}

impl Rule {
    /// Parses one detection rule (a correlation rule is refused: parse it
    /// as a [`super::Document`]).
    pub fn parse(yaml: &str) -> SigmaResult<Rule> {
        let doc = document(yaml)?;
        if doc.contains_key("correlation") {
            return Err(SigmaError::new(
                "this is a correlation rule, not a detection rule",
            ));
        }
        Rule::from_document(&doc)
    }

    /// A detection rule from its parsed document.
    pub(crate) fn from_document(doc: &Map<String, Value>) -> SigmaResult<Rule> {
        let title = text(doc, "title")?.ok_or_else(|| SigmaError::new("the rule has no title"))?;
        let level = match text(doc, "level")? {
            Some(l) => Level::parse_loose(&l)?,
            None => Level::Medium,
        };
        let tags = match doc.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tags)) => tags
                .iter()
                .map(|t| scalar_text(t).ok_or_else(|| SigmaError::new("tags must be strings")))
                .collect::<SigmaResult<_>>()?,
            Some(_) => return Err(SigmaError::new("tags must be a list")),
        };
        let logsource = match doc.get("logsource") {
            Some(Value::Object(ls)) => LogSource {
                product: text(ls, "product")?,
                service: text(ls, "service")?,
                category: text(ls, "category")?,
            },
            _ => return Err(SigmaError::new("the rule has no logsource mapping")),
        };
        let Some(Value::Object(detection)) = doc.get("detection") else {
            return Err(SigmaError::new("the rule has no detection mapping"));
        };
        if detection.contains_key("timeframe") {
            return Err(SigmaError::new(
                "detection.timeframe is not supported: write a Sigma correlation rule instead",
            ));
        }
        let mut budget = MAX_VALUES;
        let mut searches = Vec::new();
        for (name, body) in detection {
            if name == "condition" {
                continue;
            }
            let search = parse_search(name, body, &mut budget)
                .map_err(|e| SigmaError::new(format!("detection.{name}: {}", e.0)))?;
            searches.push((name.clone(), search));
        }
        let names: Vec<String> = searches.iter().map(|(n, _)| n.clone()).collect();
        let condition = match detection.get("condition") {
            Some(Value::String(c)) => condition::parse(c, &names)?,
            Some(Value::Array(list)) if !list.is_empty() => {
                let parts = list
                    .iter()
                    .map(|c| match c {
                        Value::String(c) => condition::parse(c, &names),
                        _ => Err(SigmaError::new("each condition must be a string")),
                    })
                    .collect::<SigmaResult<Vec<_>>>()?;
                Cond::Or(parts)
            }
            _ => return Err(SigmaError::new("detection has no condition")),
        };
        Ok(Rule {
            id: text(doc, "id")?,
            name: text(doc, "name")?,
            title,
            description: text(doc, "description")?,
            status: text(doc, "status")?,
            level,
            tags,
            logsource,
            searches,
            condition,
        })
    }
}

pub(crate) fn text(map: &Map<String, Value>, key: &str) -> SigmaResult<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_text(v)
            .map(Some)
            .ok_or_else(|| SigmaError::new(format!("{key} must be a string"))),
    }
}

pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn parse_search(name: &str, body: &Value, budget: &mut usize) -> SigmaResult<Search> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(SigmaError::new(
            "a search name cannot be empty or contain spaces",
        ));
    }
    match body {
        Value::Object(map) => Ok(Search::Maps(vec![parse_map(map, budget)?])),
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let maps = items
                .iter()
                .filter_map(Value::as_object)
                .map(|m| parse_map(m, budget))
                .collect::<SigmaResult<_>>()?;
            Ok(Search::Maps(maps))
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            Ok(Search::Keywords(parse_test(None, &[], body, budget)?))
        }
        Value::Array(_) => Err(SigmaError::new(
            "a list must hold only maps (any of them) or only values (keywords)",
        )),
        scalar => Ok(Search::Keywords(parse_test(None, &[], scalar, budget)?)),
    }
}

fn parse_map(map: &Map<String, Value>, budget: &mut usize) -> SigmaResult<Vec<FieldTest>> {
    if map.is_empty() {
        return Err(SigmaError::new("an empty map matches nothing useful"));
    }
    map.iter()
        .map(|(key, values)| {
            let mut parts = key.split('|');
            let field = parts.next().unwrap_or_default().trim();
            let modifiers: Vec<&str> = parts.collect();
            let field = (!field.is_empty()).then(|| field.to_string());
            parse_test(field, &modifiers, values, budget)
                .map_err(|e| SigmaError::new(format!("{key}: {}", e.0)))
        })
        .collect()
}

/// What the modifiers of one entry ask.
#[derive(Default)]
struct Modifiers {
    contains: bool,
    startswith: bool,
    endswith: bool,
    all: bool,
    cased: bool,
    re: bool,
    re_flags: String,
    cidr: bool,
    exists: bool,
    compare: Option<CmpOp>,
    /// `windash`, `base64`, `base64offset` in the order written.
    transforms: Vec<&'static str>,
}

fn modifiers(list: &[&str]) -> SigmaResult<Modifiers> {
    let mut m = Modifiers::default();
    for name in list {
        match *name {
            "contains" => m.contains = true,
            "startswith" => m.startswith = true,
            "endswith" => m.endswith = true,
            "all" => m.all = true,
            "cased" => m.cased = true,
            "re" => m.re = true,
            "i" | "m" | "s" if m.re => m.re_flags.push_str(name),
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "lt" => m.compare = Some(CmpOp::Lt),
            "lte" => m.compare = Some(CmpOp::Lte),
            "gt" => m.compare = Some(CmpOp::Gt),
            "gte" => m.compare = Some(CmpOp::Gte),
            "windash" => m.transforms.push("windash"),
            "base64" => m.transforms.push("base64"),
            "base64offset" => m.transforms.push("base64offset"),
            other => {
                return Err(SigmaError::new(format!(
                    "the modifier '{other}' is not supported"
                )));
            }
        }
    }
    let kinds = [m.re, m.cidr, m.exists, m.compare.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    let wraps = [m.contains, m.startswith, m.endswith]
        .iter()
        .filter(|b| **b)
        .count();
    if kinds > 1 || (kinds == 1 && (wraps > 0 || !m.transforms.is_empty())) || wraps > 1 {
        return Err(SigmaError::new(format!(
            "the modifiers {list:?} cannot be combined"
        )));
    }
    Ok(m)
}

fn parse_test(
    field: Option<String>,
    modifier_names: &[&str],
    values: &Value,
    budget: &mut usize,
) -> SigmaResult<FieldTest> {
    let mut m = modifiers(modifier_names)?;
    // Keywords are full-text search: a keyword anywhere in the message.
    if field.is_none()
        && !(m.startswith || m.endswith || m.re || m.cidr || m.exists || m.compare.is_some())
    {
        m.contains = true;
    }
    let list: Vec<&Value> = match values {
        Value::Array(items) => items.iter().collect(),
        v => vec![v],
    };
    if list.is_empty() {
        return Err(SigmaError::new("an empty list of values"));
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let matchers = value_matchers(v, &m)?;
        if matchers.len() > *budget {
            return Err(SigmaError::new(format!(
                "more than {MAX_VALUES} values in one rule"
            )));
        }
        *budget -= matchers.len();
        out.push(matchers);
    }
    Ok(FieldTest {
        field,
        all: m.all,
        values: out,
    })
}

/// One written value as matchers (several for its `windash` and
/// `base64offset` spellings).
fn value_matchers(v: &Value, m: &Modifiers) -> SigmaResult<Vec<Matcher>> {
    if m.exists {
        return match v {
            Value::Bool(b) => Ok(vec![Matcher::Exists(*b)]),
            _ => Err(SigmaError::new("exists takes true or false")),
        };
    }
    if let Some(op) = m.compare {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| SigmaError::new(format!("{op:?} takes a number, not {v}")))?;
        return Ok(vec![Matcher::Compare { op, value: n }]);
    }
    let raw = match v {
        Value::Null => {
            if !m.transforms.is_empty()
                || m.contains
                || m.startswith
                || m.endswith
                || m.cidr
                || m.re
            {
                return Err(SigmaError::new("null cannot take modifiers"));
            }
            return Ok(vec![Matcher::Null]);
        }
        v => scalar_text(v).ok_or_else(|| SigmaError::new(format!("unsupported value {v}")))?,
    };
    if m.cidr {
        let nets = raw
            .split(',')
            .map(|n| {
                let n = n.trim();
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| SigmaError::new(format!("{n:?} is not a CIDR network")))
            })
            .collect::<SigmaResult<Vec<_>>>()?;
        return Ok(vec![Matcher::Cidr(nets)]);
    }
    if m.re {
        let mut source = String::new();
        if !m.re_flags.is_empty() {
            source = format!("(?{})", m.re_flags);
        }
        source.push_str(&raw);
        regex::RegexBuilder::new(&source)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| SigmaError::new(format!("regular expression {raw:?}: {e}")))?;
        return Ok(vec![Matcher::Regex(source)]);
    }
    // Strings: transforms in order, each turning a value into variants
    // (`true`: already literal text, no wildcards to read).
    let mut variants = vec![(raw, false)];
    for t in &m.transforms {
        let mut next = Vec::new();
        for (value, literal) in variants {
            match *t {
                "windash" => {
                    next.extend(pattern::windash(&value)?.into_iter().map(|v| (v, literal)))
                }
                "base64" | "base64offset" => {
                    let plain = if literal {
                        value
                    } else {
                        Pattern::parse(&value).text().ok_or_else(|| {
                            SigmaError::new(format!(
                                "{t}: the value {value:?} has wildcards, which cannot be encoded"
                            ))
                        })?
                    };
                    if *t == "base64" {
                        next.push((pattern::base64(&plain), true));
                    } else {
                        next.extend(pattern::base64offset(&plain).into_iter().map(|e| (e, true)));
                    }
                }
                _ => unreachable!("transforms are named in `modifiers`"),
            }
        }
        variants = next;
    }
    Ok(variants
        .into_iter()
        .map(|(value, literal)| {
            let p = if literal {
                Pattern::literal(&value)
            } else {
                Pattern::parse(&value)
            };
            Matcher::Text {
                pattern: p.wrapped(m.contains || m.endswith, m.contains || m.startswith),
                cased: m.cased,
            }
        })
        .collect())
}
