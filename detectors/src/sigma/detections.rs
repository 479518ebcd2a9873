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

use super::{RuleMatches, RuleSet};

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
    pub fn of(batch: &RecordBatch) -> Result<Self, ArrowError> {
        let text = |name: &str| -> Result<StringArray, ArrowError> {
            match batch.column_by_name(name) {
                Some(c) => Ok(cast(c, &DataType::Utf8)?.as_string::<i32>().clone()),
                None => Ok(StringArray::new_null(batch.num_rows())),
            }
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

fn value(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// The `detections` envelope for what `set` matched in `source` (a `logs`
/// envelope), or `None` when nothing matched.
pub fn detections_envelope(set: &RuleSet, source: &Envelope) -> Result<Option<Envelope>, Error> {
    if source.kind() != RecordKind::Logs || set.is_empty() {
        return Ok(None);
    }
    let batch = source.batch();
    let matches = set.evaluate(batch)?;
    if matches.is_empty() {
        return Ok(None);
    }
    let id = detections_batch_id(source.batch_id());
    let out = detections_batch(
        set,
        source.tenant().as_str(),
        source.batch_id(),
        id,
        batch,
        &matches,
    )?;
    Ok(Some(Envelope::new(
        source.tenant().clone(),
        RecordKind::Detections,
        id,
        out,
    )?))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Schema(#[from] schemas::Error),
}

fn detections_batch(
    set: &RuleSet,
    tenant: &str,
    source: Uuid,
    id: Uuid,
    batch: &RecordBatch,
    matches: &[RuleMatches],
) -> Result<RecordBatch, ArrowError> {
    let keys = KeyFields::of(batch)?;
    // (rule index, row) in rule order, then row order.
    let hits: Vec<(usize, u32)> = matches
        .iter()
        .flat_map(|m| m.rows.iter().map(move |r| (m.rule, *r)))
        .collect();
    let n = hits.len();
    let rule = |i: usize| &set.rules()[i];
    let tags: Vec<String> = set
        .rules()
        .iter()
        .map(|r| serde_json::Value::from(r.tags.clone()).to_string())
        .collect();
    let times = |a: &TimestampMillisecondArray| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(
                hits.iter().map(|(_, row)| a.value(*row as usize)),
            )
            .with_timezone("UTC"),
        )
    };
    let texts = |a: &StringArray| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            hits.iter().map(|(_, row)| value(a, *row as usize)),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        constant_utf8(tenant, n),
        times(&keys.ts),
        times(&keys.received_at),
        constant_utf8(&id.to_string(), n),
        Arc::new(StringArray::from_iter_values(hits.iter().map(
            |(r, row)| detection_id(source, rule_key(rule(*r)), *row).to_string(),
        ))),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|(r, _)| rule_key(rule(*r))),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|(r, _)| rule(*r).title.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|(r, _)| rule(*r).level.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            hits.iter().map(|(r, _)| tags[*r].as_str()),
        )),
        constant_utf8(RecordKind::Logs.as_str(), n),
        constant_utf8(&source.to_string(), n),
        Arc::new(UInt32Array::from_iter_values(
            hits.iter().map(|(_, row)| *row),
        )),
        texts(&keys.host),
        texts(&keys.app),
        texts(&keys.source_ip),
        texts(&keys.message),
    ];
    RecordBatch::try_new(schemas::schema::schema(RecordKind::Detections), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::{FieldMap, Rule};
    use schemas::{LogBatchBuilder, LogRecord, TenantId};

    fn logs(tenant: &TenantId, messages: &[&str]) -> Envelope {
        let mut b = LogBatchBuilder::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            b.append(&LogRecord {
                ts_ms: 1_700_000_000_000 + i as i64,
                received_ms: 1_700_000_000_500,
                input: "test",
                host: Some(format!("web-{i}")),
                app: Some("sshd".into()),
                source_ip: Some("10.0.0.9".into()),
                message: m.to_string(),
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

    fn set(yaml: &[&str]) -> RuleSet {
        let rules = yaml
            .iter()
            .map(|y| Arc::new(Rule::parse(y).unwrap()))
            .collect();
        RuleSet::compile(
            rules,
            &FieldMap::default(),
            schemas::schema::schema(RecordKind::Logs),
        )
        .unwrap()
    }

    const FAILED: &str = "title: Failed SSH password\nid: ssh-failed\nlevel: medium\n\
        tags: [attack.credential_access, attack.t1110]\n\
        logsource: {product: linux, service: sshd}\n\
        detection:\n  sel:\n    message|contains: 'Failed password'\n  condition: sel\n";
    const ROOT: &str = "title: Root login\nlevel: high\nlogsource: {product: linux}\n\
        detection:\n  keywords: ['for root']\n  condition: keywords\n";

    #[test]
    fn matches_become_rows_with_stable_ids() {
        let acme = TenantId::new("acme").unwrap();
        let src = logs(
            &acme,
            &[
                "Accepted publickey for alice",
                "Failed password for root from 10.0.0.9",
                "Failed password for bob",
            ],
        );
        let rules = set(&[FAILED, ROOT]);
        let env = detections_envelope(&rules, &src).unwrap().unwrap();
        assert_eq!(env.kind(), RecordKind::Detections);
        assert_eq!(env.batch_id(), detections_batch_id(src.batch_id()));
        let b = env.batch();
        assert_eq!(b.num_rows(), 3);
        let col = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let rule_ids = col("rule_id");
        let rule_ids: Vec<_> = rule_ids.iter().map(Option::unwrap).collect();
        assert_eq!(rule_ids, ["ssh-failed", "ssh-failed", "Root login"]);
        assert_eq!(col("level").value(2), "high");
        assert_eq!(
            col("tags").value(0),
            r#"["attack.credential_access","attack.t1110"]"#
        );
        assert_eq!(col("host").value(0), "web-1");
        assert_eq!(col("message").value(1), "Failed password for bob");
        let rows = b
            .column_by_name("source_row")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt32Type>();
        assert_eq!(rows.values().to_vec(), [1, 2, 1]);
        let ts = b
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_700_000_000_001);
        // The same source batch derives the same records.
        let again = detections_envelope(&rules, &src).unwrap().unwrap();
        assert_eq!(again.batch(), env.batch());
        assert_eq!(
            col("detection_id").value(0),
            detection_id(src.batch_id(), "ssh-failed", 1).to_string()
        );
    }

    #[test]
    fn nothing_matched_or_other_kinds_derive_nothing() {
        let acme = TenantId::new("acme").unwrap();
        let rules = set(&[FAILED]);
        assert!(
            detections_envelope(&rules, &logs(&acme, &["all quiet"]))
                .unwrap()
                .is_none()
        );
        let empty = set(&[]);
        assert!(
            detections_envelope(&empty, &logs(&acme, &["Failed password"]))
                .unwrap()
                .is_none()
        );
    }
}
