//! Sigma correlation rules: `event_count`, `value_count`, `temporal` and
//! `temporal_ordered` over event-time windows.
//!
//! A correlation names the rules it correlates (by `id` or `name`), the
//! fields that group events (`group-by`), a `timespan` and a condition.
//! In the stream it fires as soon as a group's events within `timespan` of
//! the group's newest event reach the condition's bound, then starts that
//! group afresh (one detection per burst, not one per further event).
//! Events are placed by their own time; an event older than the newest
//! event seen for the correlation by more than `timespan` + the lateness
//! allowed (the feature windows' policy) is late and ignored.
//!
//! What the stream cannot decide without waiting for a window to end —
//! counts *below* a bound (`lt`, `lte`, `eq`) — is refused at upload, as
//! are chained correlations and field `aliases`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::error::ArrowError;
use serde_json::{Map, Value};

use super::eval::read_fields;
use super::rule::{Level, scalar_text, text};
use super::{FieldMap, RuleMatches, SigmaError, SigmaResult};

/// Longest `timespan` accepted.
pub const MAX_TIMESPAN_MS: i64 = 7 * 86_400_000;
/// Largest bound of a condition (a group keeps at most this many events).
pub const MAX_BOUND: u64 = 10_000;
/// Groups one correlation keeps per organization; events of further groups
/// are dropped (and counted) until old groups expire.
pub const MAX_GROUPS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::EventCount => "event_count",
            Kind::ValueCount => "value_count",
            Kind::Temporal => "temporal",
            Kind::TemporalOrdered => "temporal_ordered",
        }
    }
}

/// A parsed correlation rule.
#[derive(Debug, Clone)]
pub struct Correlation {
    pub id: Option<String>,
    pub name: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub level: Level,
    pub tags: Vec<String>,
    pub kind: Kind,
    /// The correlated rules, by `id` or `name`, in the order written.
    pub rules: Vec<String>,
    pub group_by: Vec<String>,
    pub timespan_ms: i64,
    /// Fires when the count reaches this (`gte: n`, or `gt: n` as n + 1).
    pub at_least: u64,
    /// `value_count`: the field whose distinct values are counted.
    pub field: Option<String>,
    /// Whether the correlated rules' own matches are stored too.
    pub generate: bool,
}

/// `30s`, `5m`, `1h`, `2d` → milliseconds.
fn timespan(text: &str) -> SigmaResult<i64> {
    let bad = || {
        SigmaError::new(format!(
            "correlation.timespan {text:?}: a number and s, m, h or d (e.g. 5m)"
        ))
    };
    let total = schemas::time::parse_duration_ms(text).ok_or_else(bad)?;
    if total <= 0 || total > MAX_TIMESPAN_MS {
        return Err(SigmaError::new(format!(
            "correlation.timespan {text:?}: between 1s and 7d"
        )));
    }
    Ok(total)
}

fn strings(v: Option<&Value>, what: &str) -> SigmaResult<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                scalar_text(i).ok_or_else(|| SigmaError::new(format!("{what} must be strings")))
            })
            .collect(),
        Some(one) => scalar_text(one)
            .map(|s| vec![s])
            .ok_or_else(|| SigmaError::new(format!("{what} must be a list of strings"))),
    }
}

impl Correlation {
    /// Parses a document that has a `correlation` section.
    pub(crate) fn parse(doc: &Map<String, Value>) -> SigmaResult<Self> {
        let title = text(doc, "title")?.ok_or_else(|| SigmaError::new("the rule has no title"))?;
        let level = match text(doc, "level")? {
            Some(l) => Level::parse_loose(&l)?,
            None => Level::Medium,
        };
        let tags = strings(doc.get("tags"), "tags")?;
        let Some(Value::Object(c)) = doc.get("correlation") else {
            return Err(SigmaError::new("correlation must be a mapping"));
        };
        if c.contains_key("aliases") {
            return Err(SigmaError::new(
                "correlation.aliases (field name aliases) are not supported",
            ));
        }
        let kind = match text(c, "type")?.as_deref() {
            Some("event_count") => Kind::EventCount,
            Some("value_count") => Kind::ValueCount,
            Some("temporal") => Kind::Temporal,
            Some("temporal_ordered") => Kind::TemporalOrdered,
            Some(other) => {
                return Err(SigmaError::new(format!(
                    "correlation.type {other:?}: event_count, value_count, temporal or temporal_ordered"
                )));
            }
            None => return Err(SigmaError::new("correlation.type is missing")),
        };
        let rules = strings(c.get("rules"), "correlation.rules")?;
        if rules.is_empty() {
            return Err(SigmaError::new("correlation.rules names no rule"));
        }
        let group_by = strings(c.get("group-by"), "correlation.group-by")?;
        let timespan_ms = match text(c, "timespan")? {
            Some(t) => timespan(&t)?,
            None => return Err(SigmaError::new("correlation.timespan is missing")),
        };
        let generate = match doc.get("generate").or_else(|| c.get("generate")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(SigmaError::new("generate must be true or false")),
        };
        let (at_least, field) = match c.get("condition") {
            None | Some(Value::Null) if matches!(kind, Kind::Temporal | Kind::TemporalOrdered) => {
                (rules.len() as u64, None)
            }
            Some(Value::Object(cond)) => condition(cond, kind)?,
            _ => {
                return Err(SigmaError::new(
                    "correlation.condition is missing (e.g. gte: 20)",
                ));
            }
        };
        if kind == Kind::TemporalOrdered && at_least != rules.len() as u64 {
            return Err(SigmaError::new(
                "temporal_ordered: every rule must match in order; a condition other than all of them is not supported",
            ));
        }
        if matches!(kind, Kind::Temporal | Kind::TemporalOrdered) && at_least > rules.len() as u64 {
            return Err(SigmaError::new(format!(
                "correlation.condition: at most {} rules can match",
                rules.len()
            )));
        }
        Ok(Correlation {
            id: text(doc, "id")?,
            name: text(doc, "name")?,
            title,
            description: text(doc, "description")?,
            level,
            tags,
            kind,
            rules,
            group_by,
            timespan_ms,
            at_least,
            field,
            generate,
        })
    }
}

/// `{gte: n}` or `{gt: n}` (and `field` for value_count) → (bound, field).
fn condition(cond: &Map<String, Value>, kind: Kind) -> SigmaResult<(u64, Option<String>)> {
    let field = text(cond, "field")?;
    match (kind, &field) {
        (Kind::ValueCount, None) => {
            return Err(SigmaError::new(
                "value_count: correlation.condition.field names the field whose values are counted",
            ));
        }
        (Kind::ValueCount, Some(_)) => {}
        (_, Some(_)) => {
            return Err(SigmaError::new(
                "correlation.condition.field belongs to value_count only",
            ));
        }
        _ => {}
    }
    let mut bound = None;
    for (op, v) in cond {
        if op == "field" {
            continue;
        }
        let n = v.as_u64().ok_or_else(|| {
            SigmaError::new(format!("correlation.condition.{op} must be a whole number"))
        })?;
        let at_least = match op.as_str() {
            "gte" => n,
            "gt" => n.saturating_add(1),
            "lt" | "lte" | "eq" => {
                return Err(SigmaError::new(format!(
                    "correlation.condition.{op}: counts below a bound are only known when a window ends; \
                     the stream fires when a count reaches a bound (gt, gte)"
                )));
            }
            other => {
                return Err(SigmaError::new(format!(
                    "correlation.condition.{other}: gt or gte"
                )));
            }
        };
        if bound.replace(at_least).is_some() {
            return Err(SigmaError::new(
                "correlation.condition: one bound (gt or gte)",
            ));
        }
    }
    let at_least =
        bound.ok_or_else(|| SigmaError::new("correlation.condition has no gt or gte"))?;
    if at_least == 0 || at_least > MAX_BOUND {
        return Err(SigmaError::new(format!(
            "correlation.condition: a bound from 1 to {MAX_BOUND}"
        )));
    }
    Ok((at_least, field))
}

/// A correlation with its rules resolved to positions in a rule set.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub correlation: Arc<Correlation>,
    /// For each of `correlation.rules`, the rule's index in the set.
    pub rule_index: Vec<usize>,
    /// Identifies the correlation and its definition (its state is kept
    /// across reloads while this stays the same).
    pub key: String,
    /// The correlation's tags as the JSON array detections carry.
    pub tags: String,
}

/// One matched row as a correlation sees it.
#[derive(Debug, Clone)]
pub struct Event {
    pub ts: i64,
    /// Position of the matching rule in the correlation's `rules`.
    pub pos: usize,
    /// The group-by values, as a JSON array.
    pub group: String,
    pub value: Option<String>,
    /// Where the event came from (the caller's index: a row, a match).
    pub origin: usize,
}

/// A correlation reaching its bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub group: String,
    pub count: u64,
    pub first_ts: i64,
    /// When the event that made it fire happened.
    pub ts: i64,
    /// The origin of the event that made it fire.
    pub origin: usize,
}

impl Resolved {
    /// The events of `batch` for this correlation: every row a correlated
    /// rule matched, with its group and counted value, in time order.
    pub fn events(
        &self,
        map: &FieldMap,
        batch: &RecordBatch,
        matches: &[RuleMatches],
        origin: impl Fn(u32) -> usize,
    ) -> Result<Vec<Event>, ArrowError> {
        let c = &self.correlation;
        let mut rows: Vec<(u32, usize)> = Vec::new();
        for (pos, rule) in self.rule_index.iter().enumerate() {
            if let Some(m) = matches.iter().find(|m| m.rule == *rule) {
                rows.extend(m.rows.iter().map(|r| (*r, pos)));
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut names = c.group_by.clone();
        names.extend(c.field.iter().cloned());
        let fields = read_fields(map, batch, &names)?;
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
            .ok_or_else(|| ArrowError::SchemaError("no ts column".into()))?;
        let value = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
        let mut out: Vec<Event> = rows
            .into_iter()
            .map(|(row, pos)| {
                let i = row as usize;
                let group: Vec<Value> = fields[..c.group_by.len()]
                    .iter()
                    .map(|f| value(f, i).map_or(Value::Null, Value::String))
                    .collect();
                Event {
                    ts: ts.value(i),
                    pos,
                    group: Value::Array(group).to_string(),
                    value: c
                        .field
                        .as_ref()
                        .and_then(|_| value(&fields[c.group_by.len()], i)),
                    origin: origin(row),
                }
            })
            .collect();
        out.sort_by_key(|e| (e.ts, e.origin));
        Ok(out)
    }
}

/// One correlation's open groups.
#[derive(Debug, Default)]
pub struct State {
    groups: HashMap<String, VecDeque<Event>>,
    /// Newest event time seen.
    watermark: Option<i64>,
    pub late: u64,
    pub dropped: u64,
}

impl State {
    /// Feeds events (in time order) and returns what fired.
    pub fn feed(&mut self, c: &Correlation, lateness_ms: i64, events: Vec<Event>) -> Vec<Fire> {
        let mut fired = Vec::new();
        for e in events {
            let horizon = c.timespan_ms.saturating_add(lateness_ms);
            if let Some(w) = self.watermark
                && e.ts < w.saturating_sub(horizon)
            {
                self.late += 1;
                continue;
            }
            self.watermark = Some(self.watermark.map_or(e.ts, |w| w.max(e.ts)));
            if !self.groups.contains_key(&e.group) && self.groups.len() >= MAX_GROUPS {
                self.dropped += 1;
                continue;
            }
            let group = e.group.clone();
            // The event that makes a group fire is the detection's row (it is
            // in the batch being evaluated; older events may not be).
            let (trigger_ts, trigger) = (e.ts, e.origin);
            let events = self.groups.entry(group.clone()).or_default();
            if !keep(c, events, &e) {
                continue;
            }
            // Mostly in order: insert from the back.
            let at = events
                .iter()
                .rposition(|x| x.ts <= e.ts)
                .map_or(0, |p| p + 1);
            events.insert(at, e);
            let newest = events.back().map_or(i64::MIN, |x| x.ts);
            while events
                .front()
                .is_some_and(|x| x.ts < newest - c.timespan_ms)
            {
                events.pop_front();
            }
            if c.kind == Kind::TemporalOrdered {
                while events.len() > MAX_ORDERED_EVENTS {
                    events.pop_front();
                }
            }
            if let Some(count) = reached(c, events) {
                if let Some(first) = events.front() {
                    fired.push(Fire {
                        group,
                        count,
                        first_ts: first.ts,
                        ts: trigger_ts,
                        origin: trigger,
                    });
                }
                events.clear();
            }
        }
        // Groups whose newest event is beyond any window: gone.
        if let Some(w) = self.watermark {
            let horizon = c.timespan_ms.saturating_add(lateness_ms);
            self.groups
                .retain(|_, ev| ev.back().is_some_and(|x| x.ts >= w.saturating_sub(horizon)));
        }
        fired
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

/// Events a `temporal_ordered` group keeps (the newest).
const MAX_ORDERED_EVENTS: usize = 1_000;

/// Whether `e` joins `events`; makes room for it. A group keeps only what
/// can still count: for `value_count` the newest event of each value (and
/// none without a value), for `temporal` the newest of each rule. An
/// `event_count` group never holds more than its bound (it fires and
/// empties when it gets there).
fn keep(c: &Correlation, events: &mut VecDeque<Event>, e: &Event) -> bool {
    let same = match c.kind {
        Kind::ValueCount => {
            let Some(v) = &e.value else {
                return false;
            };
            events.iter().position(|x| x.value.as_ref() == Some(v))
        }
        Kind::Temporal => events.iter().position(|x| x.pos == e.pos),
        Kind::EventCount | Kind::TemporalOrdered => None,
    };
    match same {
        Some(i) if events[i].ts >= e.ts => false,
        Some(i) => {
            events.remove(i);
            true
        }
        None => true,
    }
}

/// The count that reached the bound, if it did.
fn reached(c: &Correlation, events: &VecDeque<Event>) -> Option<u64> {
    let count = match c.kind {
        Kind::EventCount => events.len() as u64,
        Kind::ValueCount => events
            .iter()
            .filter_map(|e| e.value.as_deref())
            .collect::<HashSet<_>>()
            .len() as u64,
        Kind::Temporal => events.iter().map(|e| e.pos).collect::<HashSet<_>>().len() as u64,
        Kind::TemporalOrdered => {
            // The rules' events in the order written, each after the last.
            let mut next = 0;
            for e in events {
                if e.pos == next {
                    next += 1;
                    if next == c.rules.len() {
                        break;
                    }
                }
            }
            next as u64
        }
    };
    (count >= c.at_least).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::Document;

    fn corr(body: &str) -> SigmaResult<Correlation> {
        match Document::parse(&format!(
            "title: C\nid: c\nlevel: high\ncorrelation:\n{body}"
        ))? {
            Document::Correlation(c) => Ok(c),
            Document::Rule(_) => panic!("not a correlation"),
        }
    }

    fn event(ts_s: i64, pos: usize, group: &str, value: Option<&str>) -> Event {
        Event {
            ts: ts_s * 1000,
            pos,
            group: format!("[\"{group}\"]"),
            value: value.map(str::to_string),
            origin: ts_s as usize,
        }
    }

    #[test]
    fn refusals_name_what_is_not_supported() {
        let cases = [
            (
                "  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {lt: 3}\n",
                "condition.lt",
            ),
            (
                "  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {eq: 3}\n",
                "condition.eq",
            ),
            (
                "  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 3}\n  aliases: {ip: {a: x}}\n",
                "aliases",
            ),
            (
                "  type: value_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 3}\n",
                "condition.field",
            ),
            (
                "  type: event_count\n  rules: [a]\n  timespan: 5 minutes\n  condition: {gte: 3}\n",
                "timespan",
            ),
            (
                "  type: event_count\n  rules: [a]\n  timespan: 30d\n  condition: {gte: 3}\n",
                "7d",
            ),
            (
                "  type: sequence\n  rules: [a]\n  timespan: 5m\n",
                "correlation.type",
            ),
            (
                "  type: event_count\n  rules: []\n  timespan: 5m\n  condition: {gte: 3}\n",
                "no rule",
            ),
            (
                "  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 100000}\n",
                "bound",
            ),
            (
                "  type: temporal_ordered\n  rules: [a, b]\n  timespan: 5m\n  condition: {gte: 1}\n",
                "in order",
            ),
        ];
        for (body, says) in cases {
            let err = corr(body).unwrap_err().to_string();
            assert!(err.contains(says), "{says:?} not in {err:?} for\n{body}");
        }
        let c = corr("  type: event_count\n  rules: [a]\n  group-by: [source_ip]\n  timespan: 90s\n  condition: {gt: 19}\n").unwrap();
        assert_eq!(
            (c.kind, c.at_least, c.timespan_ms),
            (Kind::EventCount, 20, 90_000)
        );
        let t = corr("  type: temporal\n  rules: [a, b, c]\n  timespan: 1h\n").unwrap();
        assert_eq!(t.at_least, 3);
    }

    #[test]
    fn event_count_fires_within_the_timespan_per_group() {
        let c = corr("  type: event_count\n  rules: [a]\n  group-by: [ip]\n  timespan: 60s\n  condition: {gte: 3}\n").unwrap();
        let mut s = State::default();
        // Three events of x, but the first falls out of the 60 s window.
        let fired = s.feed(
            &c,
            0,
            vec![
                event(0, 0, "x", None),
                event(50, 0, "x", None),
                event(61, 0, "x", None),
            ],
        );
        assert!(fired.is_empty());
        let fired = s.feed(
            &c,
            0,
            vec![event(62, 0, "y", None), event(65, 0, "x", None)],
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].count, fired[0].first_ts, fired[0].ts),
            (3, 50_000, 65_000)
        );
        assert_eq!(fired[0].group, "[\"x\"]");
        // The group starts afresh.
        assert!(s.feed(&c, 0, vec![event(66, 0, "x", None)]).is_empty());
    }

    #[test]
    fn late_events_are_ignored_and_out_of_order_ones_counted() {
        let c = corr("  type: event_count\n  rules: [a]\n  timespan: 60s\n  condition: {gte: 2}\n")
            .unwrap();
        let mut s = State::default();
        assert!(
            s.feed(&c, 30_000, vec![event(1000, 0, "x", None)])
                .is_empty()
        );
        // 100 s older than the newest event: beyond 60 s + 30 s lateness.
        assert!(
            s.feed(&c, 30_000, vec![event(900, 0, "x", None)])
                .is_empty()
        );
        assert_eq!(s.late, 1);
        // 20 s older: within the window, counted.
        assert_eq!(s.feed(&c, 30_000, vec![event(980, 0, "x", None)]).len(), 1);
    }

    #[test]
    fn value_count_counts_distinct_values() {
        let c = corr("  type: value_count\n  rules: [a]\n  group-by: [ip]\n  timespan: 5m\n  condition: {field: user, gte: 3}\n").unwrap();
        let mut s = State::default();
        let same = (0..10).map(|i| event(i, 0, "x", Some("root"))).collect();
        assert!(s.feed(&c, 0, same).is_empty());
        assert!(
            s.feed(&c, 0, vec![event(20, 0, "x", None)]).is_empty(),
            "no value, not counted"
        );
        let fired = s.feed(
            &c,
            0,
            vec![
                event(21, 0, "x", Some("admin")),
                event(22, 0, "x", Some("oracle")),
            ],
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].count, 3);
    }

    #[test]
    fn temporal_wants_every_rule_and_ordered_their_order() {
        let any = corr("  type: temporal\n  rules: [a, b]\n  group-by: [host]\n  timespan: 5m\n")
            .unwrap();
        let mut s = State::default();
        assert!(
            s.feed(
                &any,
                0,
                vec![event(0, 1, "h", None), event(1, 1, "h", None)]
            )
            .is_empty()
        );
        assert_eq!(
            s.feed(&any, 0, vec![event(2, 0, "h", None)]).len(),
            1,
            "b then a is fine"
        );
        let ordered =
            corr("  type: temporal_ordered\n  rules: [a, b]\n  group-by: [host]\n  timespan: 5m\n")
                .unwrap();
        let mut s = State::default();
        assert!(
            s.feed(
                &ordered,
                0,
                vec![event(0, 1, "h", None), event(1, 0, "h", None)]
            )
            .is_empty()
        );
        assert_eq!(
            s.feed(&ordered, 0, vec![event(2, 1, "h", None)]).len(),
            1,
            "a then b"
        );
        // Too far apart.
        let mut s = State::default();
        assert!(
            s.feed(
                &ordered,
                0,
                vec![event(0, 0, "h", None), event(400, 1, "h", None)]
            )
            .is_empty()
        );
    }
}
