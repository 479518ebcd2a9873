//! Rule matches → `detections` records.
//!
//! The pipeline evaluates a tenant's [`RuleSet`] on each of its `logs`
//! batches and stores what matched as one `detections` batch per source
//! batch. Every id derives from the source batch's id, so a replayed
//! source batch (the bus redelivers what was not acknowledged) derives
//! the very same records, which the idempotent sinks store once.
//!
//! The backtest of `POST /api/detections/rules/{id}/test` runs the same
//! [`RuleSet`] over stored rows and reads the same key fields with
//! [`KeyFields`], so both paths report a match identically.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::error::ArrowError;
use schemas::envelope::constant_utf8;
use schemas::{Envelope, RecordKind};
use uuid::Uuid;

use std::borrow::Cow;
use std::collections::HashMap;

use super::Correlation;
use super::correlation::{Fire, State};
use super::tenant::TenantRules;
use crate::intel::IndicatorSet;

/// Namespace of detection ids (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x5ec0_4e7a_d37e_c7a0_0000_0000_0000_0019);

/// The id of the detections batch derived from source batch `source`.
pub fn detections_batch_id(source: Uuid) -> Uuid {
    Uuid::new_v5(&source, b"securenet.detections.v1")
}

/// The id of one match: rule `rule_id` on row `row` of batch `source`.
pub fn detection_id(source: Uuid, rule_id: &str, row: u32) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{source}/{rule_id}/{row}").as_bytes())
}

/// A rule's id as detections name it: the id it was stored under (the
/// rule's own `id`, set by whoever loaded it), else its title.
pub fn rule_key(rule: &super::Rule) -> &str {
    rule.id.as_deref().unwrap_or(&rule.title)
}

/// The columns of a `logs` batch a detection carries, as plain strings
/// whatever the batch's string encoding (the stream's batches hold `Utf8`,
/// DataFusion's may hold views or dictionaries).
pub struct KeyFields {
    pub ts: TimestampMillisecondArray,
    pub received_at: TimestampMillisecondArray,
    pub host: StringArray,
    pub app: StringArray,
    pub source_ip: StringArray,
    pub message: StringArray,
}

impl KeyFields {
    /// A `logs` batch's key fields, or a `findings` batch's in their place:
    /// `host` and `source_ip` its `ip`, `app` its `service`, `message` its
    /// `title`.
    pub fn of(batch: &RecordBatch) -> Result<Self, ArrowError> {
        let findings =
            batch.column_by_name("message").is_none() && batch.column_by_name("title").is_some();
        let text = |name: &str| -> Result<StringArray, ArrowError> {
            let name = match (findings, name) {
                (true, "host" | "source_ip") => "ip",
                (true, "app") => "service",
                (true, "message") => "title",
                _ => name,
            };
            text_column(batch, name)
        };
        let time = |name: &str| -> Result<TimestampMillisecondArray, ArrowError> {
            let c = batch
                .column_by_name(name)
                .ok_or_else(|| ArrowError::SchemaError(format!("no column {name:?}")))?;
            let millis = cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            Ok(millis
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                .clone())
        };
        Ok(Self {
            ts: time("ts")?,
            received_at: time("received_at")?,
            host: text("host")?,
            app: text("app")?,
            source_ip: text("source_ip")?,
            message: text("message")?,
        })
    }
}

/// Column `name` of `batch` as text (all null when absent).
fn text_column(batch: &RecordBatch, name: &str) -> Result<StringArray, ArrowError> {
    match batch.column_by_name(name) {
        Some(c) => Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone()),
        None => Ok(StringArray::new_null(batch.num_rows())),
    }
}

fn value(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// What one detections row says about the rule (or correlation) behind it.
struct Meta<'a> {
    id: Cow<'a, str>,
    title: Cow<'a, str>,
    level: &'static str,
    tags: Cow<'a, str>,
}

/// One detections row: the rule (index into the metas), the source row,
/// and, for a correlation, what it counted.
struct Hit {
    meta: usize,
    row: u32,
    context: Option<String>,
}

/// Correlation states of one organization, by correlation (see
/// [`super::correlation::State`]).
pub type States = HashMap<String, State>;

/// Evaluates `rules` on `source` (a `logs` envelope): the matches of the
/// rules that store their own, what correlations fire, fed from the
/// matches into `states` (event-time windows with `lateness_ms` allowed),
/// and the rows an `intel` indicator matches. `None` when nothing is to be
/// stored.
pub fn derive(
    rules: &TenantRules,
    intel: Option<&IndicatorSet>,
    states: &std::sync::Mutex<States>,
    lateness_ms: i64,
    source: &Envelope,
) -> Result<Option<Envelope>, Error> {
    let intel = intel.filter(|i| !i.is_empty());
    if source.kind() == RecordKind::Findings {
        return derive_findings(rules, source);
    }
    if source.kind() != RecordKind::Logs || (rules.set.is_empty() && intel.is_none()) {
        return Ok(None);
    }
    let batch = source.batch();
    let matches = rules.set.evaluate(batch)?;
    let lock = || states.lock().unwrap_or_else(|p| p.into_inner());
    lock().retain(|key, _| rules.correlations.iter().any(|c| &c.key == key));
    let mut metas = rule_metas(&rules.set, &rules.tags);
    let mut hits: Vec<Hit> = matches
        .iter()
        .filter(|m| rules.stores(m.rule))
        .flat_map(|m| {
            m.rows.iter().map(|row| Hit {
                meta: m.rule,
                row: *row,
                context: None,
            })
        })
        .collect();
    for c in &rules.correlations {
        let events = c.events(&rules.map, batch, &matches, |row| row as usize)?;
        if events.is_empty() {
            continue;
        }
        let corr = &c.correlation;
        let fired = lock()
            .entry(c.key.clone())
            .or_default()
            .feed(corr, lateness_ms, events);
        if fired.is_empty() {
            continue;
        }
        let meta = metas.len();
        metas.push(Meta {
            id: Cow::Borrowed(corr.id.as_deref().unwrap_or(&corr.title)),
            title: Cow::Borrowed(&corr.title),
            level: corr.level.as_str(),
            tags: Cow::Borrowed(&c.tags),
        });
        for f in fired {
            hits.push(Hit {
                meta,
                row: f.origin as u32,
                context: Some(fire_context(corr, &f)),
            });
        }
    }
    if let Some(intel) = intel {
        let mut meta_of: HashMap<usize, usize> = HashMap::new();
        for h in intel.matches(batch)? {
            let list = intel.list(h.list);
            let meta = *meta_of.entry(h.list).or_insert_with(|| {
                metas.push(Meta {
                    id: Cow::Owned(format!("intel:{}", list.name)),
                    title: Cow::Owned(format!("Threat intel: {}", list.name)),
                    level: list.level.as_str(),
                    tags: Cow::Borrowed(r#"["threat-intel"]"#),
                });
                metas.len() - 1
            });
            let ind = &list.indicators[h.indicator];
            hits.push(Hit {
                meta,
                row: h.row,
                context: Some(
                    serde_json::json!({
                        "intel": list.name,
                        "indicator": ind.value,
                        "type": ind.kind.as_str(),
                        "field": h.field,
                        "description": ind.description,
                    })
                    .to_string(),
                ),
            });
        }
    }
    if hits.is_empty() {
        return Ok(None);
    }
    detections_envelope(&metas, &hits, source).map(Some)
}

/// The finding columns a detection of a rule over scan findings keeps in
/// its `context` (its key fields hold the address, service and title).
const FINDING_CONTEXT: [&str; 7] = [
    "finding_id",
    "device_id",
    "port",
    "product",
    "severity",
    "cvss",
    "cve",
];

/// What the rules over scan findings matched in a `findings` batch: every
/// match stored (no correlation is over findings), the finding's own
/// fields in `context`.
pub fn derive_findings(rules: &TenantRules, source: &Envelope) -> Result<Option<Envelope>, Error> {
    if rules.findings.is_empty() {
        return Ok(None);
    }
    let batch = source.batch();
    let matches = rules.findings.evaluate(batch)?;
    let metas = rule_metas(&rules.findings, &rules.findings_tags);
    let columns = FINDING_CONTEXT
        .iter()
        .map(|c| text_column(batch, c))
        .collect::<Result<Vec<_>, _>>()?;
    let context = |row: usize| {
        let fields: serde_json::Map<String, serde_json::Value> = FINDING_CONTEXT
            .iter()
            .zip(&columns)
            .filter_map(|(name, col)| value(col, row).map(|v| (name.to_string(), v.into())))
            .collect();
        serde_json::Value::Object(fields).to_string()
    };
    let hits: Vec<Hit> = matches
        .iter()
        .flat_map(|m| {
            m.rows.iter().map(|row| Hit {
                meta: m.rule,
                row: *row,
                context: Some(context(*row as usize)),
            })
        })
        .collect();
    if hits.is_empty() {
        return Ok(None);
    }
    detections_envelope(&metas, &hits, source).map(Some)
}

/// The metadata of each rule of `set` as its detections carry it.
fn rule_metas<'a>(set: &'a super::RuleSet, tags: &'a [String]) -> Vec<Meta<'a>> {
    set.rules()
        .iter()
        .zip(tags)
        .map(|(r, tags)| Meta {
            id: Cow::Borrowed(rule_key(r)),
            title: Cow::Borrowed(&r.title),
            level: r.level.as_str(),
            tags: Cow::Borrowed(tags),
        })
        .collect()
}

/// The `detections` envelope of `hits` in `source` (a `logs` or
/// `findings` envelope), with an id its replay derives again.
fn detections_envelope(metas: &[Meta], hits: &[Hit], source: &Envelope) -> Result<Envelope, Error> {
    let id = detections_batch_id(source.batch_id());
    let out = detections_batch(
        metas,
        hits,
        source.tenant().as_str(),
        (source.kind(), source.batch_id()),
        id,
        source.batch(),
    )?;
    Ok(Envelope::new(
        source.tenant().clone(),
        RecordKind::Detections,
        id,
        out,
    )?)
}

/// What a correlation detection says beside the firing row's fields.
pub fn fire_context(c: &Correlation, f: &Fire) -> String {
    let values: Vec<serde_json::Value> = serde_json::from_str(&f.group).unwrap_or_default();
    let group: serde_json::Map<String, serde_json::Value> =
        c.group_by.iter().cloned().zip(values).collect();
    serde_json::json!({
        "correlation": c.kind.as_str(),
        "rules": c.rules,
        "group": group,
        "count": f.count,
        "field": c.field,
        "first_ts": f.first_ts,
        "timespan_ms": c.timespan_ms,
    })
    .to_string()
}

/// A detection not derived from a log row (a scheduled SQL alert's run).
pub struct Standalone<'a> {
    /// The run's id: the batch's and the source's.
    pub id: Uuid,
    /// When it happened (ms): `ts` and `received_at`.
    pub at: i64,
    pub rule_id: &'a str,
    pub title: &'a str,
    pub level: &'a str,
    /// JSON array.
    pub tags: &'a str,
    pub source_kind: &'a str,
    pub message: &'a str,
    /// JSON: what fired.
    pub context: &'a str,
}

/// `d` as a one-row `detections` envelope of `tenant`.
pub fn standalone_detection(tenant: &schemas::TenantId, d: &Standalone) -> Result<Envelope, Error> {
    let time = || -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![d.at]).with_timezone("UTC"))
    };
    let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let none = || -> ArrayRef { Arc::new(StringArray::new_null(1)) };
    let id = d.id.to_string();
    let columns: Vec<ArrayRef> = vec![
        text(tenant.as_str()),
        time(),
        time(),
        text(&id),
        text(&detection_id(d.id, d.rule_id, 0).to_string()),
        text(d.rule_id),
        text(d.title),
        text(d.level),
        text(d.tags),
        text(d.source_kind),
        text(&id),
        Arc::new(UInt32Array::from(vec![0u32])),
        none(),
        none(),
        none(),
        text(d.message),
        text(d.context),
    ];
    let batch = RecordBatch::try_new(schemas::schema::schema(RecordKind::Detections), columns)?;
    Ok(Envelope::new(
        tenant.clone(),
        RecordKind::Detections,
        d.id,
        batch,
    )?)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Schema(#[from] schemas::Error),
}

fn detections_batch(
    metas: &[Meta],
    hits: &[Hit],
    tenant: &str,
    (kind, source): (RecordKind, Uuid),
    id: Uuid,
    batch: &RecordBatch,
) -> Result<RecordBatch, ArrowError> {
    let keys = KeyFields::of(batch)?;
    let n = hits.len();
    let meta = |h: &Hit| &metas[h.meta];
    let times = |a: &TimestampMillisecondArray| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(
                hits.iter().map(|h| a.value(h.row as usize)),
            )
            .with_timezone("UTC"),
        )
    };
    let texts = |a: &StringArray| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            hits.iter().map(|h| value(a, h.row as usize)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        constant_utf8(tenant, n),
        times(&keys.ts),
        times(&keys.received_at),
        constant_utf8(&id.to_string(), n),
        Arc::new(StringArray::from_iter_values(
            hits.iter()
                .map(|h| detection_id(source, &meta(h).id, h.row).to_string()),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|h| meta(h).id.as_ref()),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|h| meta(h).title.as_ref()),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|h| meta(h).level),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|h| meta(h).tags.as_ref()),
        )),
        constant_utf8(kind.as_str(), n),
        constant_utf8(&source.to_string(), n),
        Arc::new(UInt32Array::from_iter_values(hits.iter().map(|h| h.row))),
        texts(&keys.host),
        texts(&keys.app),
        texts(&keys.source_ip),
        texts(&keys.message),
        Arc::new(StringArray::from_iter(
            hits.iter().map(|h| h.context.as_deref()),
        )),
    ];
    RecordBatch::try_new(schemas::schema::schema(RecordKind::Detections), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::{Document, FieldMap};
    use schemas::{LogBatchBuilder, LogRecord, TenantId};

    /// A logs envelope: (seconds after t0, host, source ip, message).
    fn logs(tenant: &TenantId, lines: &[(i64, &str, &str, &str)]) -> Envelope {
        let mut b = LogBatchBuilder::with_capacity(lines.len());
        for (at, host, ip, m) in lines {
            b.append(&LogRecord {
                ts_ms: 1_700_000_000_000 + at * 1000,
                received_ms: 1_700_000_000_500,
                host: Some(host.to_string()),
                app: Some("sshd".into()),
                source_ip: Some(ip.to_string()),
                message: m.to_string(),
                input: "test",
                ..Default::default()
            });
        }
        let id = Uuid::now_v7();
        Envelope::new(
            tenant.clone(),
            RecordKind::Logs,
            id,
            b.finish(tenant, id).unwrap(),
        )
        .unwrap()
    }

    fn rules(yaml: &[&str]) -> TenantRules {
        let docs: Vec<Arc<Document>> = yaml
            .iter()
            .map(|y| Arc::new(Document::parse(y).unwrap()))
            .collect();
        let (rules, refused) = TenantRules::compile(&docs, &FieldMap::default());
        assert!(refused.is_empty(), "{refused:?}");
        rules
    }

    fn column(env: &Envelope, name: &str) -> Vec<Option<String>> {
        env.batch()
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    const FAILED: &str = "title: Failed SSH password\nid: ssh-failed\nname: ssh_failed\nlevel: medium\n\
        tags: [attack.credential_access, attack.t1110]\n\
        logsource: {product: linux, service: sshd}\n\
        detection:\n  sel:\n    message|contains: 'Failed password'\n  condition: sel\n";
    const ROOT: &str = "title: Root login\nlevel: high\nlogsource: {product: linux}\n\
        detection:\n  keywords: ['for root']\n  condition: keywords\n";
    const BRUTE: &str = "title: SSH brute force\nid: ssh-brute\nlevel: high\ncorrelation:\n  \
        type: event_count\n  rules: [ssh_failed]\n  group-by: [source_ip]\n  \
        timespan: 5m\n  condition: {gte: 3}\n";

    #[test]
    fn matches_become_rows_with_stable_ids() {
        let acme = TenantId::new("acme").unwrap();
        let src = logs(
            &acme,
            &[
                (0, "web-0", "10.0.0.9", "Accepted publickey for alice"),
                (
                    1,
                    "web-1",
                    "10.0.0.9",
                    "Failed password for root from 10.0.0.9",
                ),
                (2, "web-2", "10.0.0.9", "Failed password for bob"),
            ],
        );
        let rules = rules(&[FAILED, ROOT]);
        let env = derive(&rules, None, &std::sync::Mutex::new(States::new()), 0, &src)
            .unwrap()
            .unwrap();
        assert_eq!(env.kind(), RecordKind::Detections);
        assert_eq!(env.batch_id(), detections_batch_id(src.batch_id()));
        assert_eq!(env.num_rows(), 3);
        let ids: Vec<_> = column(&env, "rule_id").into_iter().flatten().collect();
        assert_eq!(ids, ["ssh-failed", "ssh-failed", "Root login"]);
        assert_eq!(column(&env, "level")[2].as_deref(), Some("high"));
        assert_eq!(
            column(&env, "tags")[0].as_deref(),
            Some(r#"["attack.credential_access","attack.t1110"]"#)
        );
        assert_eq!(column(&env, "host")[0].as_deref(), Some("web-1"));
        assert_eq!(column(&env, "context")[0], None);
        let rows = env
            .batch()
            .column_by_name("source_row")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt32Type>();
        assert_eq!(rows.values().to_vec(), [1, 2, 1]);
        // The same source batch derives the same records.
        let again = derive(&rules, None, &std::sync::Mutex::new(States::new()), 0, &src)
            .unwrap()
            .unwrap();
        assert_eq!(again.batch(), env.batch());
        assert_eq!(
            column(&env, "detection_id")[0].as_deref(),
            Some(
                detection_id(src.batch_id(), "ssh-failed", 1)
                    .to_string()
                    .as_str()
            )
        );
    }

    fn findings(tenant: &TenantId, rows: &[(&str, u16, f32, &str, Option<&str>)]) -> Envelope {
        let rows: Vec<schemas::inventory::FindingRow> = rows
            .iter()
            .enumerate()
            .map(
                |(i, (ip, port, cvss, title, cve))| schemas::inventory::FindingRow {
                    ts_ms: 1_700_000_000_000,
                    received_ms: 1_700_000_000_500,
                    finding_id: format!("f-{i}"),
                    device_id: Some(format!("dev-{ip}")),
                    ip: Some(ip.to_string()),
                    port: Some(*port),
                    protocol: Some("tcp".into()),
                    service: Some("ssh".into()),
                    product: Some("OpenSSH 9.2".into()),
                    severity: "high".into(),
                    cvss: Some(*cvss),
                    title: title.to_string(),
                    cve: cve.map(str::to_string),
                    ..Default::default()
                },
            )
            .collect();
        let id = Uuid::now_v7();
        let batch = schemas::inventory::findings_batch(tenant, id, &rows).unwrap();
        Envelope::new(tenant.clone(), RecordKind::Findings, id, batch).unwrap()
    }

    #[test]
    fn rules_over_scan_findings_see_findings_only_with_the_finding_in_context() {
        let t = TenantId::new("acme").unwrap();
        let rules = rules(&[
            "title: Critical SSH\nid: crit-ssh\nlevel: critical\nlogsource: {category: vulnerability}\n\
             detection:\n  sel:\n    DestinationPort: 22\n    cvss|gte: 9\n  condition: sel\n",
            "title: Terrapin\nid: terrapin\nlevel: medium\nlogsource: {category: vulnerability}\n\
             detection:\n  sel:\n    vulnerability.id: CVE-2023-48795\n  kw:\n    - '*prefix*'\n  condition: sel or kw\n",
            "title: Any log\nid: any-log\nlevel: low\nlogsource: {product: linux}\n\
             detection:\n  sel:\n    message|contains: 'ssh'\n  condition: sel\n",
        ]);
        assert_eq!(rules.findings.rules().len(), 2);
        assert_eq!(rules.set.rules().len(), 1);
        let batch = findings(
            &t,
            &[
                ("10.0.0.5", 22, 9.8, "old sshd", None),
                (
                    "10.0.0.6",
                    22,
                    5.9,
                    "Terrapin prefix truncation",
                    Some("CVE-2023-48795"),
                ),
                ("10.0.0.7", 443, 9.1, "tls", None),
            ],
        );
        let out = derive(&rules, None, &Default::default(), 0, &batch)
            .unwrap()
            .expect("matches");
        let b = out.batch();
        let col = |name: &str| -> Vec<Option<String>> {
            let a = cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
            a.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        let mut found: Vec<(String, String)> = col("rule_id")
            .into_iter()
            .zip(col("host"))
            .map(|(r, h)| (r.unwrap(), h.unwrap()))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("crit-ssh".to_string(), "10.0.0.5".to_string()),
                ("terrapin".to_string(), "10.0.0.6".to_string())
            ]
        );
        assert!(
            col("source_kind")
                .iter()
                .all(|k| k.as_deref() == Some("findings"))
        );
        let terrapin = col("rule_id")
            .iter()
            .position(|r| r.as_deref() == Some("terrapin"))
            .unwrap();
        assert_eq!(
            col("message")[terrapin].as_deref(),
            Some("Terrapin prefix truncation")
        );
        assert_eq!(col("app")[terrapin].as_deref(), Some("ssh"));
        let context: serde_json::Value =
            serde_json::from_str(col("context")[terrapin].as_deref().unwrap()).unwrap();
        assert_eq!(context["cve"], "CVE-2023-48795");
        assert_eq!(context["port"], "22");
        assert_eq!(context["finding_id"], "f-1");
        // The log rule never sees findings, the finding rules never logs.
        let log = logs(
            &t,
            &[(0, "web-1", "10.0.0.9", "sshd: old sshd CVE-2023-48795")],
        );
        let out = derive(&rules, None, &Default::default(), 0, &log)
            .unwrap()
            .unwrap();
        assert_eq!(col_of(&out, "rule_id"), [Some("any-log".to_string())]);
    }

    fn col_of(env: &Envelope, name: &str) -> Vec<Option<String>> {
        let a = cast(env.batch().column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn a_rule_over_findings_may_name_finding_fields_only() {
        let docs = vec![Arc::new(
            Document::parse(
                "title: Bad\nid: bad\nlogsource: {category: vulnerability}\n\
                 detection:\n  sel:\n    CommandLine|contains: x\n  condition: sel\n",
            )
            .unwrap(),
        )];
        let (rules, refused) = TenantRules::compile(&docs, &FieldMap::default());
        assert!(rules.is_empty());
        assert_eq!(refused.len(), 1);
        let message = refused[0].1.to_string();
        assert!(
            message.contains("\"CommandLine\" is not a finding field"),
            "{message}"
        );
        assert!(message.contains("cve"), "{message}");
    }

    #[test]
    fn nothing_matched_or_no_rules_derive_nothing() {
        let acme = TenantId::new("acme").unwrap();
        let quiet = logs(&acme, &[(0, "h", "10.0.0.1", "all quiet")]);
        assert!(
            derive(
                &rules(&[FAILED]),
                None,
                &std::sync::Mutex::new(States::new()),
                0,
                &quiet
            )
            .unwrap()
            .is_none()
        );
        let loud = logs(&acme, &[(0, "h", "10.0.0.1", "Failed password")]);
        assert!(
            derive(
                &rules(&[]),
                None,
                &std::sync::Mutex::new(States::new()),
                0,
                &loud
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn a_correlation_fires_once_per_burst_and_hides_its_rules_own_matches() {
        let acme = TenantId::new("acme").unwrap();
        let rules = rules(&[FAILED, BRUTE]);
        let states = std::sync::Mutex::new(States::new());
        // Two failures from .9 and one from .7: below the bound.
        let first = logs(
            &acme,
            &[
                (0, "b", "203.0.113.9", "Failed password for root"),
                (10, "b", "203.0.113.7", "Failed password for admin"),
                (20, "b", "203.0.113.9", "Failed password for admin"),
            ],
        );
        assert!(
            derive(&rules, None, &states, 60_000, &first)
                .unwrap()
                .is_none()
        );
        // The third from .9 within 5 minutes fires; the fourth does not
        // fire again (the group starts afresh).
        let second = logs(
            &acme,
            &[
                (30, "b", "203.0.113.9", "Failed password for oracle"),
                (40, "b", "203.0.113.9", "Failed password for test"),
            ],
        );
        let env = derive(&rules, None, &states, 60_000, &second)
            .unwrap()
            .unwrap();
        assert_eq!(env.num_rows(), 1);
        assert_eq!(column(&env, "rule_id")[0].as_deref(), Some("ssh-brute"));
        assert_eq!(
            column(&env, "message")[0].as_deref(),
            Some("Failed password for oracle")
        );
        let context: serde_json::Value =
            serde_json::from_str(column(&env, "context")[0].as_deref().unwrap()).unwrap();
        assert_eq!(context["correlation"], "event_count");
        assert_eq!(context["group"]["source_ip"], "203.0.113.9");
        assert_eq!(context["count"], 3);
        assert_eq!(context["first_ts"], 1_700_000_000_000i64);
    }
}
