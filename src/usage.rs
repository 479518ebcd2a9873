//! `securenet usage reconcile`: recompute an organization's usage for a
//! month from the raw records in the Parquet lake and compare it with the
//! `usage` records the pipeline emitted. Any difference is printed and the
//! command exits with status 2 (1 means the check itself failed), so
//! billing runs can gate on it.
//!
//! The comparison is **batch by batch**: each usage record names its source
//! batch (`usage_batch_id(source)`), so only batches whose last record was
//! received before a watermark (`--settle-secs`, 300 s by default) are
//! compared, with exactly their usage records. On a live system a batch and
//! its usage record become visible moments apart; comparing whole days gave
//! differences that vanished once the system was stopped. Usage records
//! whose source batch is not in the lake at all count as differences when
//! their day is before the watermark's (nothing can still be in flight for
//! it). Days are UTC days of `received_at`, as the counter uses
//! (docs/detectors.md#usage).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use chrono::{Months, NaiveDate};
use detectors::usage::{Metric, usage_batch_id};
use query_api::sql::SqlEngine;
use schemas::TenantId;
use serde::Serialize;
use uuid::Uuid;

use crate::cli::UsageCommand;
use crate::config::Config;

/// Exit status of a reconciliation that found differences.
pub const DIFFERENCES_EXIT: u8 = 2;

/// The check ran and found differences (exit status 2, not 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DifferencesFound(pub String);

/// One figure: a metric for a day, or for the month (`day` = `None`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Figure {
    pub day: Option<String>,
    pub metric: &'static str,
    pub recorded: i64,
    pub raw: i64,
}

#[derive(Debug, Serialize)]
pub struct Reconciliation {
    pub tenant: String,
    pub month: String,
    /// Batches received before this instant (RFC 3339) were compared.
    pub watermark: String,
    /// Source batches compared, and those left for a later run.
    pub batches_compared: usize,
    pub batches_too_recent: usize,
    /// Every figure compared (days with any usage, and the month totals).
    pub checked: usize,
    pub differences: Vec<Figure>,
    pub month_totals: BTreeMap<&'static str, i64>,
}

pub fn run(config: &Config, command: UsageCommand) -> anyhow::Result<()> {
    let UsageCommand::Reconcile {
        org,
        month,
        settle_secs,
        json,
    } = command;
    let tenant = TenantId::new(&org)?;
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .with_context(|| format!("--month {month:?}: expected YYYY-MM"))?;
    let watermark = schemas::time::now_ms()
        - i64::try_from(settle_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let runtime = crate::cli_runtime()?;
    let report = runtime.block_on(reconcile(config, &tenant, first, watermark))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if !report.differences.is_empty() {
        return Err(DifferencesFound(format!(
            "usage of {} for {} differs from the raw data in {} figure(s)",
            report.tenant,
            report.month,
            report.differences.len()
        ))
        .into());
    }
    Ok(())
}

fn print_text(r: &Reconciliation) {
    println!(
        "usage of {} for {} (batches received before {}): {} batches compared, {} too recent, {} figures checked, {} differences",
        r.tenant,
        r.month,
        r.watermark,
        r.batches_compared,
        r.batches_too_recent,
        r.checked,
        r.differences.len()
    );
    for (metric, value) in &r.month_totals {
        println!("  {metric:<13} {value}");
    }
    if !r.differences.is_empty() {
        println!(
            "{:<11} {:<13} {:>14} {:>14}",
            "day", "metric", "recorded", "raw"
        );
        for d in &r.differences {
            println!(
                "{:<11} {:<13} {:>14} {:>14}",
                d.day.as_deref().unwrap_or("month"),
                d.metric,
                d.recorded,
                d.raw
            );
        }
    }
}

/// Per (day, metric) sums, and per (day) device sets, of one side.
#[derive(Default)]
struct Side {
    sums: BTreeMap<(String, &'static str), i64>,
    devices: BTreeSet<(String, String)>,
}

impl Side {
    fn add(&mut self, day: &str, metric: &'static str, v: i64) {
        *self.sums.entry((day.to_string(), metric)).or_default() += v;
    }

    /// (day or month, metric) → value, zeros dropped.
    fn figures(&self) -> BTreeMap<(Option<String>, &'static str), i64> {
        let mut out = BTreeMap::new();
        for ((day, metric), v) in &self.sums {
            *out.entry((Some(day.clone()), *metric)).or_default() += v;
            *out.entry((None, *metric)).or_default() += v;
        }
        let devices = Metric::Devices.as_str();
        let mut per_day: BTreeMap<&String, i64> = BTreeMap::new();
        let mut month: HashSet<&String> = HashSet::new();
        for (day, id) in &self.devices {
            *per_day.entry(day).or_default() += 1;
            month.insert(id);
        }
        for (day, n) in per_day {
            out.insert((Some(day.clone()), devices), n);
        }
        if !month.is_empty() {
            out.insert((None, devices), month.len() as i64);
        }
        out.retain(|_, v| *v != 0);
        out
    }
}

pub async fn reconcile(
    config: &Config,
    tenant: &TenantId,
    first: NaiveDate,
    watermark_ms: i64,
) -> anyhow::Result<Reconciliation> {
    let next = first
        .checked_add_months(Months::new(1))
        .context("month out of range")?;
    let mut sql_config = config.api.sql.clone();
    // An operator's batch job, not an analyst's query: no interactive limits.
    sql_config.timeout_ms = Duration::from_secs(3600).as_millis() as u64;
    sql_config.max_result_rows = 1 << 40;
    sql_config.max_result_bytes = usize::MAX;
    let lake = config.lake()?;
    let engine = SqlEngine::new(sql_config, lake).map_err(|e| anyhow::anyhow!("{e}"))?;
    let query = |sql: String| {
        let engine = &engine;
        async move {
            engine
                .execute(tenant, &sql)
                .await
                .map(|r| r.batches)
                .map_err(|e| anyhow::anyhow!("{e}: {sql}"))
        }
    };
    let in_month = format!(
        "CAST(received_at AS DATE) >= DATE '{first}' AND CAST(received_at AS DATE) < DATE '{next}'"
    );

    // The raw side, per source batch and day; a batch is compared when its
    // last record is older than the watermark.
    let sources = [
        (Metric::LogEvents, "count(*)", "logs"),
        (Metric::LogBytes, "sum(bytes)", "logs"),
        (Metric::Scans, "count(*)", "scans"),
        (Metric::Findings, "count(*)", "findings"),
        (Metric::ApiRequests, "count(*)", "api_requests"),
    ];
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    let mut raw_rows: Vec<(String, String, &'static str, i64)> = Vec::new();
    for (metric, expr, table) in sources {
        tracing::info!(%tenant, month = %first, table, metric = metric.as_str(), "reconcile: reading the raw records");
        let sql = format!(
            "SELECT batch_id, CAST(CAST(received_at AS DATE) AS VARCHAR) AS day, \
             CAST({expr} AS BIGINT) AS v, CAST(max(received_at) AS BIGINT) AS last \
             FROM {table} WHERE {in_month} GROUP BY 1, 2"
        );
        for row in rows4(&query(sql).await?)? {
            let (batch, day, v, last) = row;
            let seen = last_seen.entry(batch.clone()).or_insert(i64::MIN);
            *seen = (*seen).max(last);
            raw_rows.push((batch, day, metric.as_str(), v));
        }
    }
    let device_sql = format!(
        "SELECT batch_id, CAST(CAST(received_at AS DATE) AS VARCHAR) AS day, device_id, \
         CAST(max(received_at) AS BIGINT) AS last \
         FROM devices WHERE {in_month} GROUP BY 1, 2, 3"
    );
    tracing::info!(%tenant, month = %first, table = "devices", "reconcile: reading the raw records");
    let mut raw_devices: Vec<(String, String, String)> = Vec::new();
    for b in query(device_sql).await? {
        let col = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let (batch, day, device) = (col(0)?, col(1)?, col(2)?);
        let last = b
            .column(3)
            .as_primitive_opt::<Int64Type>()
            .context("device query returned a non-integer")?;
        for i in 0..b.num_rows() {
            let id = batch.as_string::<i32>().value(i).to_string();
            let seen = last_seen.entry(id.clone()).or_insert(i64::MIN);
            *seen = (*seen).max(last.value(i));
            raw_devices.push((
                id,
                day.as_string::<i32>().value(i).to_string(),
                device.as_string::<i32>().value(i).to_string(),
            ));
        }
    }
    let compared: HashSet<&String> = last_seen
        .iter()
        .filter(|(_, last)| **last < watermark_ms)
        .map(|(b, _)| b)
        .collect();
    let too_recent = last_seen.len() - compared.len();
    let mut raw = Side::default();
    for (batch, day, metric, v) in &raw_rows {
        if compared.contains(batch) {
            raw.add(day, metric, *v);
        }
    }
    for (batch, day, device) in &raw_devices {
        if compared.contains(batch) {
            raw.devices.insert((day.clone(), device.clone()));
        }
    }

    // The recorded side: usage records of the compared batches, and those
    // whose source batch is nowhere in the lake if their day is past.
    let usage_of: HashMap<String, &String> = last_seen
        .keys()
        .filter_map(|b| Some((usage_batch_id(Uuid::parse_str(b).ok()?).to_string(), b)))
        .collect();
    let watermark_day = chrono::DateTime::from_timestamp_millis(watermark_ms)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default();
    let usage_sql = format!(
        "SELECT batch_id, CAST(day AS VARCHAR) AS day, metric, CAST(value AS BIGINT) AS v, subject \
         FROM usage WHERE day >= DATE '{first}' AND day < DATE '{next}'"
    );
    tracing::info!(%tenant, month = %first, batches = compared.len(), too_recent, "reconcile: reading the usage records");
    let mut recorded = Side::default();
    for b in query(usage_sql).await? {
        let text = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let (batch, day, metric, subject) = (text(0)?, text(1)?, text(2)?, text(4)?);
        let v = b
            .column(3)
            .as_primitive_opt::<Int64Type>()
            .context("usage query returned a non-integer")?;
        for i in 0..b.num_rows() {
            let usage_id = batch.as_string::<i32>().value(i);
            let day = day.as_string::<i32>().value(i);
            let counted = match usage_of.get(usage_id) {
                Some(source) => compared.contains(*source),
                None => day < watermark_day.as_str(),
            };
            if !counted {
                continue;
            }
            let Some(metric) = Metric::ALL
                .iter()
                .find(|m| m.as_str() == metric.as_string::<i32>().value(i))
            else {
                continue;
            };
            if *metric == Metric::Devices {
                let s = subject.as_string::<i32>();
                if !s.is_null(i) {
                    recorded
                        .devices
                        .insert((day.to_string(), s.value(i).to_string()));
                }
            } else {
                recorded.add(day, metric.as_str(), v.value(i));
            }
        }
    }

    let raw = raw.figures();
    let recorded = recorded.figures();
    let keys: BTreeSet<_> = raw.keys().chain(recorded.keys()).cloned().collect();
    let mut differences = Vec::new();
    let mut month_totals = BTreeMap::new();
    for (day, metric) in &keys {
        let r = recorded.get(&(day.clone(), metric)).copied().unwrap_or(0);
        let w = raw.get(&(day.clone(), metric)).copied().unwrap_or(0);
        if day.is_none() {
            month_totals.insert(*metric, w);
        }
        if r != w {
            differences.push(Figure {
                day: day.clone(),
                metric,
                recorded: r,
                raw: w,
            });
        }
    }
    Ok(Reconciliation {
        tenant: tenant.to_string(),
        month: first.format("%Y-%m").to_string(),
        watermark: chrono::DateTime::from_timestamp_millis(watermark_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default(),
        batches_compared: compared.len(),
        batches_too_recent: too_recent,
        checked: keys.len(),
        differences,
        month_totals,
    })
}

/// `(batch_id, day, v, last)` rows; null aggregates (a sum of nothing) skip.
fn rows4(batches: &[RecordBatch]) -> anyhow::Result<Vec<(String, String, i64, i64)>> {
    let mut out = Vec::new();
    for b in batches {
        let batch = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let day = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
        let v = b
            .column(2)
            .as_primitive_opt::<Int64Type>()
            .context("usage query returned a non-integer")?;
        let last = b
            .column(3)
            .as_primitive_opt::<Int64Type>()
            .context("usage query returned a non-integer")?;
        for i in 0..b.num_rows() {
            if v.is_null(i) {
                continue;
            }
            out.push((
                batch.as_string::<i32>().value(i).to_string(),
                day.as_string::<i32>().value(i).to_string(),
                v.value(i),
                last.value(i),
            ));
        }
    }
    Ok(out)
}
