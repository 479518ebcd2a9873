//! A tenant's rules compiled into one [`RuleSet`] and evaluated on a batch.
//!
//! Compilation turns every rule into a tree of `and`/`or`/`not` over leaf
//! predicates, and shares what rules have in common: a leaf (a field and a
//! test) is one entry however many rules use it, and all plain-text tests
//! on one field (exact, contains, starts with, ends with; any case or
//! `cased`) go into one Aho-Corasick automaton. Per batch, each field is
//! read once (a column, or a key of `structured_data` parsed once per row
//! for all fields), lower-cased once if any test ignores case, scanned once
//! by its automaton (one pass answers all of its patterns in all four
//! anchorings), and every other leaf (glob, regex, CIDR, comparison,
//! presence) is computed once into a bitmap. Rules then combine bitmaps.
//!
//! Absent fields (a null column value, a missing JSON key) match no value
//! and no pattern, so `not selection` holds for them — Sigma's meaning, as
//! SIEMs read it; SQL's three-valued `NOT` (what a SQL backend generates)
//! drops such rows instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use arrow::array::BooleanBufferBuilder;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use ipnet::IpNet;
use regex::Regex;
use serde_json::Value;

use super::condition::Cond;
use super::fields::{FieldMap, Source};
use super::pattern::Shape;
use super::rule::{CmpOp, FieldTest, Matcher, Rule, Search};
use super::{SigmaError, SigmaResult};

/// Where a plain-text test anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Anchor {
    Exact,
    Contains,
    Starts,
    Ends,
}

#[derive(Debug, Clone)]
enum Leaf {
    /// Pattern `pattern` of literal group `group`, anchored.
    Text {
        group: usize,
        pattern: usize,
        anchor: Anchor,
    },
    /// The field has a value (a lone `*`, or `exists: true`).
    Present {
        field: usize,
    },
    /// The field is absent or null.
    Absent {
        field: usize,
    },
    /// The field equals the empty string.
    Empty {
        field: usize,
    },
    Like {
        field: usize,
        cased: bool,
        like: String,
    },
    Regex {
        field: usize,
        regex: Regex,
    },
    Cidr {
        field: usize,
        nets: Vec<IpNet>,
    },
    Compare {
        field: usize,
        op: CmpOp,
        value: f64,
    },
}

#[derive(Debug, Clone)]
enum Expr {
    Leaf(usize),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Const(bool),
}

/// Every plain-text pattern tested on one field with one case rule.
#[derive(Debug)]
struct TextGroup {
    field: usize,
    cased: bool,
    patterns: Vec<String>,
    automaton: Option<AhoCorasick>,
    /// Matching ignores ASCII case on the values as they are (no
    /// lower-cased copy): every pattern is ASCII, and an ASCII pattern
    /// matches a lower-cased value where it matches the value ignoring
    /// ASCII case — but for the two non-ASCII letters whose lower case is
    /// ASCII (the Kelvin sign, dotted capital I), which this misses. Other
    /// groups scan the lower-cased values.
    ascii_fold: bool,
}

/// Rules ready to evaluate on batches of one schema.
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    exprs: Vec<Expr>,
    leaves: Vec<Leaf>,
    fields: Vec<Source>,
    groups: Vec<TextGroup>,
    schema: Arc<Schema>,
}

/// The rows of a batch one rule matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatches {
    /// Index of the rule in [`RuleSet::rules`].
    pub rule: usize,
    pub rows: Vec<u32>,
}

struct Compiler<'a> {
    map: &'a FieldMap,
    schema: &'a Schema,
    leaves: Vec<Leaf>,
    leaf_ids: HashMap<String, usize>,
    fields: Vec<Source>,
    groups: Vec<TextGroup>,
}

impl Compiler<'_> {
    fn field(&mut self, name: Option<&str>) -> SigmaResult<usize> {
        let source = match name {
            Some(n) => self.map.resolve_checked(n, self.schema)?,
            None => self.map.keyword_source(),
        };
        Ok(match self.fields.iter().position(|f| *f == source) {
            Some(i) => i,
            None => {
                self.fields.push(source);
                self.fields.len() - 1
            }
        })
    }

    fn leaf(
        &mut self,
        key: String,
        make: impl FnOnce(&mut Self) -> SigmaResult<Leaf>,
    ) -> SigmaResult<usize> {
        if let Some(&id) = self.leaf_ids.get(&key) {
            return Ok(id);
        }
        let leaf = make(self)?;
        self.leaves.push(leaf);
        let id = self.leaves.len() - 1;
        self.leaf_ids.insert(key, id);
        Ok(id)
    }

    fn text(
        &mut self,
        field: usize,
        cased: bool,
        text: String,
        anchor: Anchor,
    ) -> SigmaResult<usize> {
        let key = format!("text/{field}/{cased}/{anchor:?}/{text}");
        self.leaf(key, |c| {
            let group = match c
                .groups
                .iter()
                .position(|g| g.field == field && g.cased == cased)
            {
                Some(g) => g,
                None => {
                    c.groups.push(TextGroup {
                        field,
                        cased,
                        patterns: Vec::new(),
                        automaton: None,
                        ascii_fold: false,
                    });
                    c.groups.len() - 1
                }
            };
            let patterns = &mut c.groups[group].patterns;
            let pattern = match patterns.iter().position(|p| *p == text) {
                Some(p) => p,
                None => {
                    patterns.push(text);
                    patterns.len() - 1
                }
            };
            Ok(Leaf::Text {
                group,
                pattern,
                anchor,
            })
        })
    }

    fn matcher(&mut self, field: usize, m: &Matcher) -> SigmaResult<Expr> {
        let id = match m {
            Matcher::Text { pattern, cased } => {
                let p = if *cased {
                    pattern.clone()
                } else {
                    pattern.lowercase()
                };
                match p.shape() {
                    Shape::Any => {
                        self.leaf(format!("present/{field}"), |_| Ok(Leaf::Present { field }))?
                    }
                    Shape::Exact(s) if s.is_empty() => {
                        self.leaf(format!("empty/{field}"), |_| Ok(Leaf::Empty { field }))?
                    }
                    Shape::Exact(s) => self.text(field, *cased, s, Anchor::Exact)?,
                    Shape::Contains(s) => self.text(field, *cased, s, Anchor::Contains)?,
                    Shape::StartsWith(s) => self.text(field, *cased, s, Anchor::Starts)?,
                    Shape::EndsWith(s) => self.text(field, *cased, s, Anchor::Ends)?,
                    Shape::Like(like) => {
                        let cased = *cased;
                        self.leaf(format!("like/{field}/{cased}/{like}"), |_| {
                            Ok(Leaf::Like { field, cased, like })
                        })?
                    }
                }
            }
            Matcher::Regex(source) => self.leaf(format!("re/{field}/{source}"), |_| {
                let regex = regex::RegexBuilder::new(source)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| SigmaError::new(e.to_string()))?;
                Ok(Leaf::Regex { field, regex })
            })?,
            Matcher::Cidr(nets) => self.leaf(format!("cidr/{field}/{nets:?}"), |_| {
                Ok(Leaf::Cidr {
                    field,
                    nets: nets.clone(),
                })
            })?,
            Matcher::Compare { op, value } => {
                let (op, value) = (*op, *value);
                self.leaf(format!("cmp/{field}/{op:?}/{value}"), |_| {
                    Ok(Leaf::Compare { field, op, value })
                })?
            }
            Matcher::Null => {
                self.leaf(format!("absent/{field}"), |_| Ok(Leaf::Absent { field }))?
            }
            Matcher::Exists(true) => {
                self.leaf(format!("present/{field}"), |_| Ok(Leaf::Present { field }))?
            }
            Matcher::Exists(false) => {
                self.leaf(format!("absent/{field}"), |_| Ok(Leaf::Absent { field }))?
            }
        };
        Ok(Expr::Leaf(id))
    }

    fn test(&mut self, test: &FieldTest) -> SigmaResult<Expr> {
        let field = self.field(test.field.as_deref())?;
        let values = test
            .values
            .iter()
            .map(|variants| {
                let parts = variants
                    .iter()
                    .map(|m| self.matcher(field, m))
                    .collect::<SigmaResult<Vec<_>>>()?;
                Ok(one_or(parts, Expr::Or))
            })
            .collect::<SigmaResult<Vec<_>>>()?;
        Ok(if test.all {
            one_or(values, Expr::And)
        } else {
            one_or(values, Expr::Or)
        })
    }

    fn search(&mut self, search: &Search) -> SigmaResult<Expr> {
        match search {
            Search::Keywords(test) => self.test(test),
            Search::Maps(maps) => {
                let alternatives = maps
                    .iter()
                    .map(|tests| {
                        let parts = tests
                            .iter()
                            .map(|t| self.test(t))
                            .collect::<SigmaResult<Vec<_>>>()?;
                        Ok(one_or(parts, Expr::And))
                    })
                    .collect::<SigmaResult<Vec<_>>>()?;
                Ok(one_or(alternatives, Expr::Or))
            }
        }
    }
}

fn one_or(mut parts: Vec<Expr>, combine: fn(Vec<Expr>) -> Expr) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        combine(parts)
    }
}

fn condition(cond: &Cond, searches: &HashMap<&str, Expr>) -> Expr {
    let get = |name: &str| searches.get(name).cloned().unwrap_or(Expr::Const(false));
    match cond {
        Cond::And(parts) => Expr::And(parts.iter().map(|c| condition(c, searches)).collect()),
        Cond::Or(parts) => Expr::Or(parts.iter().map(|c| condition(c, searches)).collect()),
        Cond::Not(inner) => Expr::Not(Box::new(condition(inner, searches))),
        Cond::Search(name) => get(name),
        Cond::Of {
            all,
            searches: names,
        } => {
            let parts = names.iter().map(|n| get(n)).collect();
            if *all {
                Expr::And(parts)
            } else {
                Expr::Or(parts)
            }
        }
    }
}

impl RuleSet {
    /// Compiles `rules` for batches of `schema`, fields resolved by `map`.
    pub fn compile(
        rules: Vec<Arc<Rule>>,
        map: &FieldMap,
        schema: Arc<Schema>,
    ) -> SigmaResult<Self> {
        let mut c = Compiler {
            map,
            schema: &schema,
            leaves: Vec::new(),
            leaf_ids: HashMap::new(),
            fields: Vec::new(),
            groups: Vec::new(),
        };
        let mut exprs = Vec::with_capacity(rules.len());
        for rule in &rules {
            let mut searches = HashMap::new();
            for (name, search) in &rule.searches {
                searches.insert(name.as_str(), c.search(search)?);
            }
            let detection = condition(&rule.condition, &searches);
            // The rule sees only records of its log source: each term the
            // map knows is one more search every match must pass.
            let mut parts = map
                .logsource_searches(&rule.logsource)
                .into_iter()
                .map(|s| c.search(s))
                .collect::<SigmaResult<Vec<_>>>()?;
            if parts.is_empty() {
                exprs.push(detection);
            } else {
                parts.push(detection);
                exprs.push(Expr::And(parts));
            }
        }
        let Compiler {
            leaves,
            fields,
            mut groups,
            ..
        } = c;
        for g in &mut groups {
            g.ascii_fold = !g.cased && g.patterns.iter().all(|p| p.is_ascii());
            g.automaton = Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(g.ascii_fold)
                    .build(&g.patterns)
                    .map_err(|e| SigmaError::new(format!("too many patterns: {e}")))?,
            );
        }
        Ok(RuleSet {
            rules,
            exprs,
            leaves,
            fields,
            groups,
            schema,
        })
    }

    /// A set of no rules (matches nothing).
    pub fn empty(schema: Arc<Schema>) -> Self {
        RuleSet {
            rules: Vec::new(),
            exprs: Vec::new(),
            leaves: Vec::new(),
            fields: Vec::new(),
            groups: Vec::new(),
            schema,
        }
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rows of `batch` each rule matches (rules matching none left
    /// out). `batch` must have the schema the set was compiled for, or
    /// one with the same column names (string columns may be views).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<Vec<RuleMatches>, ArrowError> {
        if self.rules.is_empty() || batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut ctx = Batch::new(self, batch)?;
        let mut out = Vec::new();
        for (rule, expr) in self.exprs.iter().enumerate() {
            let hits = ctx.eval(expr)?;
            if hits.count_set_bits() > 0 {
                out.push(RuleMatches {
                    rule,
                    rows: hits.set_indices().map(|i| i as u32).collect(),
                });
            }
        }
        Ok(out)
    }

    /// The schema the set was compiled for.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }
}

/// One batch's fields and the leaves computed so far.
struct Batch<'a> {
    set: &'a RuleSet,
    rows: usize,
    /// Each field's values as text (None: absent in every row).
    values: Vec<Option<StringArray>>,
    lower: Vec<Option<StringArray>>,
    /// Per group: per pattern, the rows matching it in each of the four
    /// anchorings (exact, contains, starts, ends), ascending.
    text: Vec<Option<Vec<[Vec<u32>; 4]>>>,
    leaves: Vec<Option<BooleanBuffer>>,
}

impl<'a> Batch<'a> {
    fn new(set: &'a RuleSet, batch: &RecordBatch) -> Result<Self, ArrowError> {
        let rows = batch.num_rows();
        let mut values: Vec<Option<StringArray>> = vec![None; set.fields.len()];
        let mut json: Vec<(usize, &[String])> = Vec::new();
        for (i, source) in set.fields.iter().enumerate() {
            match source {
                Source::Column(name) => {
                    if let Some(col) = batch.column_by_name(name) {
                        values[i] = Some(as_text(col)?);
                    }
                }
                Source::Json(keys) => json.push((i, keys)),
            }
        }
        if !json.is_empty()
            && let Some(sd) = batch.column_by_name("structured_data")
        {
            let sd = as_text(sd)?;
            for (i, column) in extract_json(&sd, &json) {
                values[i] = Some(column);
            }
        }
        Ok(Batch {
            set,
            rows,
            lower: vec![None; set.fields.len()],
            values,
            text: vec![None; set.groups.len()],
            leaves: vec![None; set.leaves.len()],
        })
    }

    fn lower(&mut self, field: usize) -> Option<&StringArray> {
        if self.lower[field].is_none() {
            let v = self.values[field].as_ref()?;
            let lowered: StringArray = v
                .iter()
                .map(|s| {
                    s.map(|s| {
                        if s.is_ascii() {
                            s.to_ascii_lowercase()
                        } else {
                            s.to_lowercase()
                        }
                    })
                })
                .collect();
            self.lower[field] = Some(lowered);
        }
        self.lower[field].as_ref()
    }

    fn zeros(&self) -> BooleanBuffer {
        BooleanBuffer::new_unset(self.rows)
    }

    fn text_group(&mut self, g: usize) -> &Vec<[Vec<u32>; 4]> {
        if self.text[g].is_none() {
            let group = &self.set.groups[g];
            let mut hits: Vec<[Vec<u32>; 4]> = (0..group.patterns.len())
                .map(|_| Default::default())
                .collect();
            let column = if group.cased || group.ascii_fold {
                self.values[group.field].clone()
            } else {
                self.lower(group.field).cloned()
            };
            if let (Some(column), Some(ac)) = (column, group.automaton.as_ref()) {
                let mark = |list: &mut Vec<u32>, row: u32| {
                    if list.last() != Some(&row) {
                        list.push(row);
                    }
                };
                for (row, value) in column.iter().enumerate() {
                    let Some(value) = value else { continue };
                    let row = row as u32;
                    for m in ac.find_overlapping_iter(value) {
                        let h = &mut hits[m.pattern().as_usize()];
                        mark(&mut h[1], row);
                        let starts = m.start() == 0;
                        let ends = m.end() == value.len();
                        if starts {
                            mark(&mut h[2], row);
                        }
                        if ends {
                            mark(&mut h[3], row);
                        }
                        if starts && ends {
                            mark(&mut h[0], row);
                        }
                    }
                }
            }
            self.text[g] = Some(hits);
        }
        self.text[g].as_ref().expect("computed above")
    }

    fn leaf(&mut self, id: usize) -> Result<BooleanBuffer, ArrowError> {
        if let Some(b) = &self.leaves[id] {
            return Ok(b.clone());
        }
        let set = self.set;
        let bits = match &set.leaves[id] {
            Leaf::Text {
                group,
                pattern,
                anchor,
            } => {
                let slot = match anchor {
                    Anchor::Exact => 0,
                    Anchor::Contains => 1,
                    Anchor::Starts => 2,
                    Anchor::Ends => 3,
                };
                let n = self.rows;
                bits(n, &self.text_group(*group)[*pattern][slot])
            }
            Leaf::Present { field } => match &self.values[*field] {
                Some(v) => valid(v),
                None => self.zeros(),
            },
            Leaf::Absent { field } => match &self.values[*field] {
                Some(v) => !&valid(v),
                None => BooleanBuffer::new_set(self.rows),
            },
            Leaf::Empty { field } => match &self.values[*field] {
                Some(v) => BooleanBuffer::from_iter(v.iter().map(|s| s == Some(""))),
                None => self.zeros(),
            },
            Leaf::Like { field, cased, like } => match &self.values[*field] {
                Some(column) => {
                    let pattern = arrow::array::Scalar::new(StringArray::from(vec![like.as_str()]));
                    let hit = if *cased {
                        arrow::compute::kernels::comparison::like(column, &pattern)?
                    } else {
                        arrow::compute::kernels::comparison::ilike(column, &pattern)?
                    };
                    no_nulls(&hit)
                }
                None => self.zeros(),
            },
            Leaf::Regex { field, regex } => match &self.values[*field] {
                Some(v) => {
                    BooleanBuffer::from_iter(v.iter().map(|s| s.is_some_and(|s| regex.is_match(s))))
                }
                None => self.zeros(),
            },
            Leaf::Cidr { field, nets } => match &self.values[*field] {
                Some(v) => BooleanBuffer::from_iter(v.iter().map(|s| {
                    s.and_then(|s| s.trim().parse::<IpAddr>().ok())
                        .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
                })),
                None => self.zeros(),
            },
            Leaf::Compare { field, op, value } => match &self.values[*field] {
                Some(v) => BooleanBuffer::from_iter(v.iter().map(|s| {
                    s.and_then(|s| s.trim().parse::<f64>().ok())
                        .is_some_and(|x| match op {
                            CmpOp::Lt => x < *value,
                            CmpOp::Lte => x <= *value,
                            CmpOp::Gt => x > *value,
                            CmpOp::Gte => x >= *value,
                        })
                })),
                None => self.zeros(),
            },
        };
        self.leaves[id] = Some(bits.clone());
        Ok(bits)
    }

    fn eval(&mut self, expr: &Expr) -> Result<BooleanBuffer, ArrowError> {
        Ok(match expr {
            Expr::Const(true) => BooleanBuffer::new_set(self.rows),
            Expr::Const(false) => self.zeros(),
            Expr::Leaf(id) => self.leaf(*id)?,
            Expr::Not(inner) => !&self.eval(inner)?,
            Expr::And(parts) => {
                let mut acc = BooleanBuffer::new_set(self.rows);
                for p in parts {
                    acc = &acc & &self.eval(p)?;
                    // Nothing left to narrow: the other parts need not be
                    // computed for this rule.
                    if acc.count_set_bits() == 0 {
                        break;
                    }
                }
                acc
            }
            Expr::Or(parts) => {
                let mut acc = self.zeros();
                for p in parts {
                    acc = &acc | &self.eval(p)?;
                }
                acc
            }
        })
    }
}

/// A bitmap of `n` rows with `rows` set.
fn bits(n: usize, rows: &[u32]) -> BooleanBuffer {
    let mut b = BooleanBufferBuilder::new(n);
    b.append_n(n, false);
    for &r in rows {
        b.set_bit(r as usize, true);
    }
    b.finish()
}

/// Rows with a value.
fn valid(v: &StringArray) -> BooleanBuffer {
    match v.nulls() {
        Some(n) => n.inner().clone(),
        None => BooleanBuffer::new_set(v.len()),
    }
}

fn no_nulls(b: &BooleanArray) -> BooleanBuffer {
    match b.nulls() {
        Some(n) => b.values() & n.inner(),
        None => b.values().clone(),
    }
}

/// A column as `Utf8` text (numbers in their decimal form).
/// The values of the Sigma fields `names` in `batch`, as text (all null
/// where a field is absent), read as rules read them.
pub(crate) fn read_fields(
    map: &FieldMap,
    batch: &RecordBatch,
    names: &[String],
) -> Result<Vec<StringArray>, ArrowError> {
    let schema = batch.schema();
    let mut out: Vec<Option<StringArray>> = vec![None; names.len()];
    let mut json: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match map.resolve(name, &schema) {
            Source::Column(c) => {
                if let Some(col) = batch.column_by_name(&c) {
                    out[i] = Some(as_text(col)?);
                }
            }
            Source::Json(keys) => json.push((i, keys)),
        }
    }
    if !json.is_empty()
        && let Some(sd) = batch.column_by_name("structured_data")
    {
        let sd = as_text(sd)?;
        let refs: Vec<(usize, &[String])> = json.iter().map(|(i, k)| (*i, k.as_slice())).collect();
        for (i, column) in extract_json(&sd, &refs) {
            out[i] = Some(column);
        }
    }
    Ok(out
        .into_iter()
        .map(|c| c.unwrap_or_else(|| StringArray::new_null(batch.num_rows())))
        .collect())
}

fn as_text(col: &ArrayRef) -> Result<StringArray, ArrowError> {
    if col.data_type() == &DataType::Utf8 {
        return Ok(col.as_string::<i32>().clone());
    }
    let cast = arrow::compute::cast(col, &DataType::Utf8)?;
    Ok(cast.as_string::<i32>().clone())
}

/// The values of `fields` (column index, candidate keys) from a column of
/// JSON objects, each row parsed once.
fn extract_json(sd: &StringArray, fields: &[(usize, &[String])]) -> Vec<(usize, StringArray)> {
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(sd.len()); fields.len()];
    for value in sd.iter() {
        let parsed = value.and_then(|s| serde_json::from_str::<Value>(s).ok());
        for (k, (_, keys)) in fields.iter().enumerate() {
            let found = parsed.as_ref().and_then(|doc| {
                keys.iter()
                    .find_map(|key| lookup(doc, key))
                    .and_then(json_text)
            });
            columns[k].push(found);
        }
    }
    fields
        .iter()
        .zip(columns)
        .map(|((i, _), values)| (*i, StringArray::from(values)))
        .collect()
}

/// `key` in `doc`: as written, or as a dotted path into nested objects.
fn lookup<'v>(doc: &'v Value, key: &str) -> Option<&'v Value> {
    if let Some(v) = doc.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    key.split('.').try_fold(doc, |v, part| v.get(part))
}

fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}
