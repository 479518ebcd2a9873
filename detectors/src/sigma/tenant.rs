//! One organization's rules, compiled: detection rules in one
//! [`RuleSet`], correlation rules resolved to the rules they correlate.

use std::sync::Arc;

use super::correlation::{Correlation, Resolved};
use super::{
    FieldMap, Level, Rule, RuleSet, SigmaError, compile_for, compile_for_logs, is_findings_rule,
};

/// A Sigma document: a detection rule or a correlation rule.
#[derive(Debug, Clone)]
pub enum Document {
    Rule(Rule),
    Correlation(Correlation),
}

impl Document {
    /// Parses one YAML document of either kind.
    pub fn parse(yaml: &str) -> Result<Self, SigmaError> {
        let doc = super::rule::document(yaml)?;
        if doc.contains_key("correlation") {
            Ok(Document::Correlation(Correlation::parse(&doc)?))
        } else {
            Ok(Document::Rule(Rule::from_document(&doc)?))
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Document::Rule(r) => r.id.as_deref(),
            Document::Correlation(c) => c.id.as_deref(),
        }
    }

    pub fn set_id(&mut self, id: String) {
        match self {
            Document::Rule(r) => r.id = Some(id),
            Document::Correlation(c) => c.id = Some(id),
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Document::Rule(r) => r.name.as_deref(),
            Document::Correlation(c) => c.name.as_deref(),
        }
    }

    pub fn title(&self) -> &str {
        match self {
            Document::Rule(r) => &r.title,
            Document::Correlation(c) => &c.title,
        }
    }

    pub fn level(&self) -> Level {
        match self {
            Document::Rule(r) => r.level,
            Document::Correlation(c) => c.level,
        }
    }

    pub fn tags(&self) -> &[String] {
        match self {
            Document::Rule(r) => &r.tags,
            Document::Correlation(c) => &c.tags,
        }
    }

    pub fn description(&self) -> Option<&str> {
        match self {
            Document::Rule(r) => r.description.as_deref(),
            Document::Correlation(c) => c.description.as_deref(),
        }
    }

    /// `rule` or `correlation`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Rule(_) => "rule",
            Document::Correlation(_) => "correlation",
        }
    }
}

/// Whether `reference` (a correlation's `rules` entry) names `doc`.
fn names(doc: &Document, reference: &str) -> bool {
    doc.id() == Some(reference) || doc.name() == Some(reference)
}

/// One organization's rules, ready for its batches.
pub struct TenantRules {
    /// The rules over logs.
    pub set: RuleSet,
    /// The rules over scan findings (`logsource: {category:
    /// vulnerability}`), compiled with [`FieldMap::findings`]; they store
    /// every match (correlations are over logs).
    pub findings: RuleSet,
    /// Per rule of `findings`: its tags as JSON.
    pub findings_tags: Vec<String>,
    pub correlations: Vec<Resolved>,
    /// Per rule of `set`: whether its own matches are stored (a rule that
    /// only feeds correlations without `generate: true` is not, as Sigma
    /// specifies).
    stored: Vec<bool>,
    pub map: FieldMap,
    /// Per rule of `set`: its tags as the JSON array detections carry
    /// (computed once here, not for every batch).
    pub tags: Vec<String>,
}

/// `tags` as a JSON array.
fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

impl TenantRules {
    /// Compiles `docs`. A document that does not compile, or a
    /// correlation whose rules are not all among `docs` as detection
    /// rules, is left out and returned with the reason: one bad rule costs
    /// only itself.
    pub fn compile(docs: &[Arc<Document>], map: &FieldMap) -> (Self, Vec<(String, SigmaError)>) {
        let (finding_rules, rules): (Vec<Arc<Rule>>, Vec<Arc<Rule>>) = docs
            .iter()
            .filter_map(|d| match d.as_ref() {
                Document::Rule(r) => Some(Arc::new(r.clone())),
                Document::Correlation(_) => None,
            })
            .partition(|r| is_findings_rule(r));
        let (set, bad) = compile_for_logs(rules, map);
        let (findings, bad_findings) = compile_for(
            schemas::RecordKind::Findings,
            finding_rules,
            &FieldMap::findings(),
        );
        let mut refused: Vec<(String, SigmaError)> = bad
            .into_iter()
            .chain(bad_findings)
            .map(|(r, e)| (super::detections::rule_key(&r).to_string(), e))
            .collect();
        let mut stored = vec![true; set.rules().len()];
        let mut referenced = vec![false; set.rules().len()];
        let mut generated = vec![false; set.rules().len()];
        let mut correlations = Vec::new();
        for doc in docs {
            let Document::Correlation(c) = doc.as_ref() else {
                continue;
            };
            match resolve(c, &set, docs) {
                Ok(rule_index) => {
                    for i in &rule_index {
                        referenced[*i] = true;
                        generated[*i] |= c.generate;
                    }
                    correlations.push(Resolved {
                        key: format!(
                            "{:?}/{:?}/{:?}/{:?}/{}/{}/{:?}",
                            c.id, c.kind, c.rules, c.group_by, c.timespan_ms, c.at_least, c.field
                        ),
                        tags: tags_json(&c.tags),
                        correlation: Arc::new(c.clone()),
                        rule_index,
                    });
                }
                Err(e) => refused.push((c.id.clone().unwrap_or_else(|| c.title.clone()), e)),
            }
        }
        let tags = set.rules().iter().map(|r| tags_json(&r.tags)).collect();
        let findings_tags = findings
            .rules()
            .iter()
            .map(|r| tags_json(&r.tags))
            .collect();
        for (i, s) in stored.iter_mut().enumerate() {
            *s = !referenced[i] || generated[i];
        }
        (
            TenantRules {
                set,
                findings,
                findings_tags,
                correlations,
                stored,
                tags,
                map: map.clone(),
            },
            refused,
        )
    }

    /// Stores none of the rules' own matches (a correlation's backtest
    /// reports what fires, not what feeds it).
    pub fn store_none(&mut self) {
        self.stored.iter_mut().for_each(|s| *s = false);
    }

    /// Whether rule `i` of the set stores its own matches.
    pub fn stores(&self, i: usize) -> bool {
        self.stored.get(i).copied().unwrap_or(true)
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.findings.is_empty()
    }

    /// Rules and correlations that run.
    pub fn len(&self) -> usize {
        self.set.rules().len() + self.findings.rules().len() + self.correlations.len()
    }
}

/// The index in `set` of each rule `c` correlates.
fn resolve(
    c: &Correlation,
    set: &RuleSet,
    docs: &[Arc<Document>],
) -> Result<Vec<usize>, SigmaError> {
    c.rules
        .iter()
        .map(|reference| {
            if let Some(i) = set
                .rules()
                .iter()
                .position(|r| r.id.as_deref() == Some(reference) || r.name.as_deref() == Some(reference))
            {
                return Ok(i);
            }
            if docs
                .iter()
                .any(|d| matches!(d.as_ref(), Document::Correlation(_)) && names(d, reference))
            {
                return Err(SigmaError::new(format!(
                    "correlation.rules: {reference:?} is a correlation; chained correlations are not supported"
                )));
            }
            if docs.iter().any(|d| {
                matches!(d.as_ref(), Document::Rule(r) if is_findings_rule(r)) && names(d, reference)
            }) {
                return Err(SigmaError::new(format!(
                    "correlation.rules: {reference:?} is a rule over scan findings; correlations are over logs"
                )));
            }
            Err(SigmaError::new(format!(
                "correlation.rules: no detection rule with id or name {reference:?} (upload it first)"
            )))
        })
        .collect()
}
