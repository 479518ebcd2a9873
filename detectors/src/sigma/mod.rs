//! Sigma rules (the public Sigma specification) evaluated on Arrow batches.
//!
//! - `rule.rs`: a rule's YAML → [`Rule`]: metadata, named searches (field
//!   matches with their modifiers, keyword lists) and the condition. What
//!   the engine does not support is refused here, naming the construct.
//! - `condition.rs`: the condition language (`and`/`or`/`not`,
//!   parentheses, `1 of x*`, `all of them`).
//! - `pattern.rs`: Sigma's string values (wildcards `*` `?`, escapes) and
//!   the modifiers that rewrite them (`contains`, `base64offset`,
//!   `windash`…).
//! - `eval.rs`: a [`RuleSet`] — every rule of a tenant compiled once into
//!   a tree of column predicates — evaluated on a batch with vectorized
//!   kernels: all plain substrings of all rules on one column are found
//!   in one Aho-Corasick pass, each leaf predicate is computed once per
//!   batch however many rules share it, and rules combine bitmaps.
//!   Nothing interprets a rule row by row.
//! - `correlation.rs`: correlation rules (`event_count`, `value_count`,
//!   `temporal`, `temporal_ordered`) and their event-time windows.
//! - `tenant.rs`: one organization's rules compiled together, correlations
//!   resolved to the rules they correlate.
//! - `detections.rs`: what a rule set matched in a `logs` batch as a
//!   `detections` batch, with ids that a replayed batch derives again.
//! - `fields.rs`: Sigma field names → record columns (or keys of the
//!   `structured_data` JSON object); the findings map for rules over scan
//!   findings (`logsource: {category: vulnerability}`).

mod condition;
pub mod correlation;
pub mod detections;
mod eval;
mod fields;
mod pattern;
mod rule;
pub mod tenant;

pub use correlation::Correlation;
pub use eval::{RuleMatches, RuleSet};
pub use fields::FieldMap;
pub use rule::{Level, LogSource, Rule};
pub use tenant::{Document, TenantRules};

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SigmaError(pub String);

impl SigmaError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SigmaError(message.into())
    }
}

pub type SigmaResult<T> = Result<T, SigmaError>;

/// Compiles `rules` for `logs` batches. A rule that does not compile is
/// left out and returned with its error, so one bad rule never costs the
/// others (rules are checked at upload; this is for rules a newer or
/// older build stored).
pub fn compile_for_logs(
    rules: Vec<std::sync::Arc<Rule>>,
    map: &FieldMap,
) -> (RuleSet, Vec<(std::sync::Arc<Rule>, SigmaError)>) {
    compile_for(schemas::RecordKind::Logs, rules, map)
}

/// Whether `rule` is over scan findings (`logsource: {category:
/// vulnerability}`) rather than logs.
pub fn is_findings_rule(rule: &Rule) -> bool {
    rule.logsource
        .category
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(fields::FINDINGS_CATEGORY))
}

/// [`compile_for_logs`] for batches of `kind`.
pub fn compile_for(
    kind: schemas::RecordKind,
    rules: Vec<std::sync::Arc<Rule>>,
    map: &FieldMap,
) -> (RuleSet, Vec<(std::sync::Arc<Rule>, SigmaError)>) {
    let schema = schemas::schema::schema(kind);
    if let Ok(set) = RuleSet::compile(rules.clone(), map, schema.clone()) {
        return (set, Vec::new());
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for rule in rules {
        match RuleSet::compile(vec![rule.clone()], map, schema.clone()) {
            Ok(_) => good.push(rule),
            Err(e) => bad.push((rule, e)),
        }
    }
    // Each of `good` compiled alone; together they only share leaves.
    let set =
        RuleSet::compile(good, map, schema.clone()).unwrap_or_else(|_| RuleSet::empty(schema));
    (set, bad)
}

#[cfg(test)]
mod tests;
