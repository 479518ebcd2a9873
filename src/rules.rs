//! Sigma rules between the metadata store and the pipeline.
//!
//! - [`OperatorRules`]: the operator's rule pack (`pipeline.rules.rules_dir`:
//!   detection and correlation rules), read once at start, applied to every
//!   organization; listed (read-only) by the query API.
//! - [`spawn_refresher`]: polls the store's rule version and the
//!   organization list every `refresh_ms` and, when either changed,
//!   compiles each organization's set — the operator pack, its own rules,
//!   its MSP's pack — and swaps the pipeline's [`RuleBook`]. Organizations
//!   with the same rules share one compiled set.
//! - [`NotifySink`]: a sink beside Parquet and ClickHouse that turns each
//!   `detections` batch into notifications (one per rule and batch,
//!   throttled per rule), recorded before the source batch is
//!   acknowledged; ids derive from the batch, so a replay adds none.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use control::MetaStore;
use control::notify::Notification;
use control::rules::{DetectionRule, RuleScope};
use detectors::intel::{Indicator, IndicatorSet, IntelList};
use detectors::sigma::{Document, FieldMap, Level, TenantRules};
use futures::FutureExt;
use futures::future::BoxFuture;
use pipeline::rules::{RuleBook, RulesConfig, TenantDetection};
use pipeline::{Error as PipelineError, Sink};
use query_api::detections::OperatorRule;
use schemas::time::now_ms;
use schemas::{Envelope, RecordKind, TenantId};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// The operator's rules, by id.
pub type OperatorRules = Arc<Vec<OperatorRule>>;

/// Reads every rule file of `dir` (refusing the start if one is not a rule
/// this build runs, or a correlation names a rule the pack lacks: an
/// operator pack is all or nothing). A rule's id is its own `id`, else its
/// file name without the extension.
pub fn load_operator_rules(dir: Option<&Path>, map: &FieldMap) -> anyhow::Result<OperatorRules> {
    let Some(dir) = dir else {
        return Ok(Arc::default());
    };
    let mut out = Vec::new();
    for file in crate::sigma::rule_files(&[dir.to_path_buf()])? {
        let yaml = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let mut rule =
            Document::parse(&yaml).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = rule.id().map_or(stem, str::to_string);
        rule.set_id(id.clone());
        out.push(OperatorRule {
            id,
            yaml,
            rule: Arc::new(rule),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    let docs: Vec<Arc<Document>> = out.iter().map(|o| o.rule.clone()).collect();
    let (_, refused) = TenantRules::compile(&docs, map);
    if let Some((id, e)) = refused.first() {
        anyhow::bail!("{}: rule {id}: {e}", dir.display());
    }
    info!(dir = %dir.display(), rules = out.len(), "operator Sigma rules loaded");
    Ok(Arc::new(out))
}

/// A stored rule as the engine runs it (under the id it was stored as).
pub fn stored_rule(r: &DetectionRule) -> Result<Arc<Document>, detectors::sigma::SigmaError> {
    let mut rule = Document::parse(&r.yaml)?;
    rule.set_id(r.id.clone());
    Ok(Arc::new(rule))
}

/// What the refresher compared last time.
#[derive(PartialEq)]
struct Seen {
    version: (i64, i64),
    intel: (i64, i64),
    orgs: Vec<(TenantId, Option<TenantId>)>,
    /// The earliest indicator expiry ahead: the sets are rebuilt then.
    expiry: Option<i64>,
}

/// Rule sets by the stored rules they were compiled from.
type RuleCache = BTreeMap<Vec<(String, String, i64)>, Arc<TenantRules>>;

/// Per organization: its lists' (name, updated_at) and their compiled set.
type IntelCache = HashMap<TenantId, (Vec<(String, i64)>, Arc<IndicatorSet>)>;

/// What the refresher keeps between reloads: compiled sets by what they
/// were compiled from, so a change recompiles (and an indicator list is
/// fetched) only where something changed — one organization re-uploading
/// a large list costs the others nothing.
#[derive(Default)]
struct Cache {
    seen: Option<Seen>,
    rules: RuleCache,
    /// Per organization: its lists' (name, updated_at) and their set.
    intel: IntelCache,
}

pub fn spawn_refresher(
    store: Arc<MetaStore>,
    book: Arc<RuleBook>,
    config: &RulesConfig,
    map: FieldMap,
    operator: OperatorRules,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let every = Duration::from_millis(config.refresh_ms.max(100));
    tokio::spawn(async move {
        let mut cache = Cache::default();
        loop {
            match refresh(&store, &book, &operator, &map, &mut cache).await {
                Ok(true) => info!("Sigma rules reloaded"),
                Ok(false) => {}
                Err(error) => {
                    warn!(%error, "reloading Sigma rules failed; keeping the rules loaded")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// Reloads when rules, lists or organizations changed, or an indicator
/// expired; returns whether it did.
async fn refresh(
    store: &MetaStore,
    book: &RuleBook,
    operator: &OperatorRules,
    map: &FieldMap,
    cache: &mut Cache,
) -> anyhow::Result<bool> {
    let version = store.detection_rules_version().await?;
    let intel = store.threat_lists_version().await?;
    let orgs: Vec<(TenantId, Option<TenantId>)> = store
        .list_organizations()
        .await?
        .into_iter()
        .map(|o| (o.id, o.parent_id))
        .collect();
    let now_ms = schemas::time::now_ms();
    if let Some(s) = cache.seen.as_ref()
        && (s.version, s.intel) == (version, intel)
        && s.orgs == orgs
        && s.expiry.is_none_or(|at| at > now_ms)
    {
        return Ok(false);
    }
    let stored = store.enabled_detection_rules().await?;
    let rules = compile_all(&orgs, &stored, operator, &mut cache.rules, map);
    let expiry = refresh_intel(store, &mut cache.intel, now_ms).await?;
    let empty = Arc::new(TenantRules::compile(&[], map).0);
    let mut book_sets: HashMap<TenantId, Arc<TenantDetection>> = HashMap::new();
    for (org, _) in &orgs {
        let rules = rules.get(org).cloned();
        let intel = cache.intel.get(org).map(|(_, set)| set.clone());
        if rules.is_none() && intel.is_none() {
            continue;
        }
        book_sets.insert(
            org.clone(),
            Arc::new(TenantDetection {
                rules: rules.unwrap_or_else(|| empty.clone()),
                intel,
            }),
        );
    }
    book.replace(book_sets);
    cache.seen = Some(Seen {
        version,
        intel,
        orgs,
        expiry,
    });
    Ok(true)
}

/// Brings `sets` up to the stored lists: an organization's set is
/// recompiled (its lists fetched) only when its lists changed or one of
/// its indicators expired. Returns the earliest expiry still ahead.
async fn refresh_intel(
    store: &MetaStore,
    sets: &mut IntelCache,
    now_ms: i64,
) -> anyhow::Result<Option<i64>> {
    let mut by_org: HashMap<TenantId, Vec<(String, i64)>> = HashMap::new();
    for i in store.all_threat_list_infos().await? {
        by_org
            .entry(i.org_id)
            .or_default()
            .push((i.name, i.updated_at));
    }
    sets.retain(|org, _| by_org.contains_key(org));
    let mut expiry: Option<i64> = None;
    for (org, lists) in by_org {
        let current = sets.get(&org).is_some_and(|(key, set)| {
            key == &lists && set.next_expiry.is_none_or(|at| at > now_ms)
        });
        if !current {
            let mut parsed = Vec::new();
            for (name, _) in &lists {
                let Some(list) = store.threat_list(&org, name).await? else {
                    continue;
                };
                match serde_json::from_str::<Vec<Indicator>>(&list.indicators) {
                    Ok(indicators) => parsed.push(Arc::new(IntelList {
                        name: name.clone(),
                        level: Level::parse_name(&list.info.level).unwrap_or(Level::High),
                        indicators,
                    })),
                    Err(error) => warn!(%org, list = %name, %error,
                        "a stored threat-intel list does not parse; left out"),
                }
            }
            match IndicatorSet::compile(parsed, now_ms) {
                Ok(set) => {
                    sets.insert(org.clone(), (lists, Arc::new(set)));
                }
                Err(error) => {
                    warn!(%org, %error, "threat-intel lists do not compile; left out");
                    sets.remove(&org);
                }
            }
        }
        if let Some(at) = sets.get(&org).and_then(|(_, s)| s.next_expiry) {
            expiry = Some(expiry.map_or(at, |e| e.min(at)));
        }
    }
    Ok(expiry)
}

/// Each organization's set: the operator pack, its own rules (scope
/// `own`), its parent's pack (scope `children`).
fn compile_all(
    orgs: &[(TenantId, Option<TenantId>)],
    stored: &[DetectionRule],
    operator: &OperatorRules,
    compiled: &mut RuleCache,
    map: &FieldMap,
) -> HashMap<TenantId, Arc<TenantRules>> {
    let mut by_org: HashMap<(&TenantId, RuleScope), Vec<&DetectionRule>> = HashMap::new();
    for r in stored {
        by_org.entry((&r.org_id, r.scope)).or_default().push(r);
    }
    // Sets by the rules they hold: organizations with the same rules (the
    // operator pack alone, an MSP's children) share one compiled set, and
    // a set compiled by an earlier reload is kept while its rules are.
    let mut used: std::collections::BTreeSet<Vec<(String, String, i64)>> = Default::default();
    let mut out = HashMap::new();
    for (org, parent) in orgs {
        let mut mine: Vec<&DetectionRule> = by_org
            .get(&(org, RuleScope::Own))
            .cloned()
            .unwrap_or_default();
        if let Some(p) = parent {
            mine.extend(by_org.get(&(p, RuleScope::Children)).into_iter().flatten());
        }
        if mine.is_empty() && operator.is_empty() {
            continue;
        }
        let key: Vec<(String, String, i64)> = mine
            .iter()
            .map(|r| (r.org_id.to_string(), r.id.clone(), r.updated_at))
            .collect();
        used.insert(key.clone());
        let set = compiled
            .entry(key)
            .or_insert_with(|| {
                let mut rules: Vec<Arc<Document>> =
                    operator.iter().map(|o| o.rule.clone()).collect();
                for r in &mine {
                    match stored_rule(r) {
                        Ok(rule) => rules.push(rule),
                        Err(error) => warn!(org = %r.org_id, rule = %r.id, %error,
                            "a stored Sigma rule does not parse; left out"),
                    }
                }
                let (set, bad) = TenantRules::compile(&rules, map);
                for (rule, error) in bad {
                    warn!(org = %org, %rule, %error,
                        "a stored Sigma rule does not compile; left out");
                }
                Arc::new(set)
            })
            .clone();
        out.insert(org.clone(), set);
    }
    compiled.retain(|key, _| used.contains(key));
    out
}

/// Turns `detections` batches into notifications.
pub struct NotifySink {
    store: Arc<MetaStore>,
    min_level: Level,
    interval_ms: i64,
    /// (organization, rule) → when it last notified (this process).
    last: Mutex<HashMap<(TenantId, String), i64>>,
}

impl NotifySink {
    pub fn new(store: Arc<MetaStore>, config: &RulesConfig) -> anyhow::Result<Self> {
        let min_level = Level::parse_name(&config.notify_min_level).ok_or_else(|| {
            anyhow::anyhow!(
                "pipeline.rules.notify_min_level {:?}: expected low, medium, high or critical",
                config.notify_min_level
            )
        })?;
        anyhow::ensure!(
            min_level > Level::Informational,
            "pipeline.rules.notify_min_level: informational rules are never notified; use low or above"
        );
        Ok(Self {
            store,
            min_level,
            interval_ms: i64::try_from(config.notify_interval_ms).unwrap_or(i64::MAX),
            last: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `(tenant, rule)` may notify now (and, if so, marks it).
    fn due(&self, tenant: &TenantId, rule: &str, now: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.clone(), rule.to_string());
        match last.get(&key) {
            Some(at) if now - at < self.interval_ms => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }

    async fn notify(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let now = now_ms();
        for hit in first_match_per_rule(envelope.batch())? {
            let Some(level) = Level::parse_name(&hit.level) else {
                continue;
            };
            if level < self.min_level || !self.due(envelope.tenant(), &hit.rule_id, now) {
                continue;
            }
            let id = Uuid::new_v5(&envelope.batch_id(), hit.rule_id.as_bytes()).to_string();
            self.store
                .add_notification(&Notification {
                    id: id.clone(),
                    org_id: envelope.tenant().clone(),
                    kind: "detection".into(),
                    severity: level.as_str().into(),
                    title: format!("Sigma rule \"{}\" matched {} event(s)", hit.title, hit.count),
                    body: json!({
                        "rule_id": hit.rule_id,
                        "rule_title": hit.title,
                        "level": hit.level,
                        "tags": serde_json::from_str::<serde_json::Value>(&hit.tags).unwrap_or_default(),
                        "matches": hit.count,
                        "detections_batch_id": envelope.batch_id(),
                        "first": {
                            "detection_id": hit.detection_id,
                            "ts": hit.ts,
                            "host": hit.host,
                            "app": hit.app,
                            "source_ip": hit.source_ip,
                            "message": hit.message,
                        },
                    }),
                    ref_id: id,
                    created_at: now,
                    read_at: None,
                })
                .await?;
        }
        Ok(())
    }
}

/// A rule's first match in a batch, and how many rows it matched.
struct RuleHit {
    rule_id: String,
    title: String,
    level: String,
    tags: String,
    count: usize,
    detection_id: String,
    ts: i64,
    host: Option<String>,
    app: Option<String>,
    source_ip: Option<String>,
    message: Option<String>,
}

fn first_match_per_rule(batch: &RecordBatch) -> anyhow::Result<Vec<RuleHit>> {
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| anyhow::anyhow!("detections batch without a {name} column"))
    };
    let ts = batch
        .column_by_name("ts")
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampMillisecondType>())
        .ok_or_else(|| anyhow::anyhow!("detections batch without a ts column"))?;
    let (rule, title, level, tags, id) = (
        text("rule_id")?,
        text("rule_title")?,
        text("level")?,
        text("tags")?,
        text("detection_id")?,
    );
    let (host, app, ip, message) = (
        text("host")?,
        text("app")?,
        text("source_ip")?,
        text("message")?,
    );
    let opt =
        |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let mut hits: Vec<RuleHit> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for i in 0..batch.num_rows() {
        if let Some(at) = index.get(rule.value(i)) {
            hits[*at].count += 1;
            continue;
        }
        index.insert(rule.value(i), hits.len());
        hits.push(RuleHit {
            rule_id: rule.value(i).to_string(),
            title: title.value(i).to_string(),
            level: level.value(i).to_string(),
            tags: tags.value(i).to_string(),
            count: 1,
            detection_id: id.value(i).to_string(),
            ts: ts.value(i),
            host: opt(host, i),
            app: opt(app, i),
            source_ip: opt(ip, i),
            message: opt(message, i).map(|m| m.chars().take(512).collect()),
        });
    }
    Ok(hits)
}

impl Sink for NotifySink {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, pipeline::Result<()>> {
        async move {
            if envelope.kind() != RecordKind::Detections {
                return Ok(());
            }
            self.notify(envelope)
                .await
                .map_err(|e| PipelineError::Sink {
                    sink: "notifications",
                    message: e.to_string(),
                })
        }
        .boxed()
    }

    fn healthcheck(&self) -> BoxFuture<'_, pipeline::Result<()>> {
        // The metadata store has a health check of its own.
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(org: &str, id: &str, scope: RuleScope, yaml: &str) -> DetectionRule {
        DetectionRule {
            org_id: TenantId::new(org).unwrap(),
            id: id.into(),
            title: id.into(),
            level: "high".into(),
            yaml: yaml.into(),
            enabled: true,
            scope,
            created_at: 1,
            updated_at: 1,
        }
    }

    const RULE: &str = "title: T\nlevel: high\nlogsource: {product: linux}\n\
        detection:\n  sel:\n    message|contains: x\n  condition: sel\n";

    #[test]
    fn organizations_get_their_own_rules_their_msps_pack_and_the_operators() {
        let t = |s: &str| TenantId::new(s).unwrap();
        let orgs = vec![
            (t("msp"), None),
            (t("child-a"), Some(t("msp"))),
            (t("child-b"), Some(t("msp"))),
            (t("solo"), None),
            (t("bare"), None),
        ];
        let rules = vec![
            stored("msp", "pack", RuleScope::Children, RULE),
            stored("child-a", "own-a", RuleScope::Own, RULE),
            stored("solo", "own-s", RuleScope::Own, RULE),
            stored("solo", "broken", RuleScope::Own, "title: [unclosed"),
        ];
        let ids = |set: &TenantRules| -> Vec<String> {
            set.set
                .rules()
                .iter()
                .map(|r| r.id.clone().unwrap_or_default())
                .collect()
        };
        let none: OperatorRules = Arc::default();
        let sets = compile_all(
            &orgs,
            &rules,
            &none,
            &mut RuleCache::new(),
            &FieldMap::default(),
        );
        assert!(!sets.contains_key(&t("msp")), "a pack is not the MSP's own");
        assert_eq!(ids(&sets[&t("child-a")]), ["own-a", "pack"]);
        assert_eq!(ids(&sets[&t("child-b")]), ["pack"]);
        assert_eq!(
            ids(&sets[&t("solo")]),
            ["own-s"],
            "a broken rule costs only itself"
        );
        assert!(!sets.contains_key(&t("bare")));

        let mut op = Document::parse(RULE).unwrap();
        op.set_id("op".into());
        let operator: OperatorRules = Arc::new(vec![OperatorRule {
            id: "op".into(),
            yaml: RULE.into(),
            rule: Arc::new(op),
        }]);
        let sets = compile_all(
            &orgs,
            &rules,
            &operator,
            &mut RuleCache::new(),
            &FieldMap::default(),
        );
        assert_eq!(ids(&sets[&t("bare")]), ["op"]);
        assert_eq!(ids(&sets[&t("child-a")]), ["op", "own-a", "pack"]);
        assert!(
            Arc::ptr_eq(&sets[&t("bare")], &sets[&t("msp")]),
            "same rules, one set"
        );
        // A reload with nothing changed reuses the sets compiled before;
        // sets no organization uses any more are dropped.
        let mut cache = RuleCache::new();
        let first = compile_all(&orgs, &rules, &operator, &mut cache, &FieldMap::default());
        let again = compile_all(&orgs, &rules, &operator, &mut cache, &FieldMap::default());
        assert!(Arc::ptr_eq(&first[&t("solo")], &again[&t("solo")]));
        let before = cache.len();
        compile_all(
            &orgs,
            &rules[..1],
            &operator,
            &mut cache,
            &FieldMap::default(),
        );
        assert!(
            cache.len() < before,
            "{} sets kept of {before}",
            cache.len()
        );
    }
}
