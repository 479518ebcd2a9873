//! `securenet usage reconcile`: recompute a tenant's usage for a month from
//! the raw records in the Parquet lake and compare it with the `usage`
//! records the pipeline emitted. Any difference is printed and makes the
//! command fail, so billing runs can gate on it.
//!
//! Both sides are computed with DataFusion over the tenant's tables (the
//! same session analysts get), day by day and for the whole month; days are
//! UTC days of `received_at`, as the counter uses (docs/detectors.md#usage).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use chrono::{Months, NaiveDate};
use detectors::usage::Metric;
use pipeline::Lake;
use query_api::sql::SqlEngine;
use schemas::TenantId;
use serde::Serialize;

use crate::cli::UsageCommand;
use crate::config::Config;

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
    /// Every figure compared (days with any usage, and the month totals).
    pub checked: usize,
    pub differences: Vec<Figure>,
    pub month_totals: BTreeMap<&'static str, i64>,
}

pub fn run(config: &Config, command: UsageCommand) -> anyhow::Result<()> {
    let UsageCommand::Reconcile {
        tenant,
        month,
        json,
    } = command;
    let tenant = TenantId::new(&tenant)?;
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .with_context(|| format!("--month {month:?}: expected YYYY-MM"))?;
    let runtime = query_api::sql::build_runtime(None)?;
    let report = runtime.block_on(reconcile(config, &tenant, first))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if !report.differences.is_empty() {
        bail!(
            "usage of {} for {} differs from the raw data in {} figure(s)",
            report.tenant,
            report.month,
            report.differences.len()
        );
    }
    Ok(())
}

fn print_text(r: &Reconciliation) {
    println!(
        "usage of {} for {}: {} figures checked, {} differences",
        r.tenant,
        r.month,
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

pub async fn reconcile(
    config: &Config,
    tenant: &TenantId,
    first: NaiveDate,
) -> anyhow::Result<Reconciliation> {
    let next = first
        .checked_add_months(Months::new(1))
        .context("month out of range")?;
    let mut sql_config = config.sql.clone();
    // An operator's batch job, not an analyst's query: no interactive limits.
    sql_config.timeout_ms = Duration::from_secs(3600).as_millis() as u64;
    sql_config.max_result_rows = 1 << 40;
    let lake = Lake::local(&config.lake_dir())?;
    let engine = SqlEngine::new(sql_config, lake, tokio::runtime::Handle::current());
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
    let in_month = |column: &str| {
        format!(
            "CAST({column} AS DATE) >= DATE '{first}' AND CAST({column} AS DATE) < DATE '{next}'"
        )
    };
    let by_day = |expr: &str, table: &str| {
        format!(
            "SELECT CAST(CAST(received_at AS DATE) AS VARCHAR) AS day, CAST({expr} AS BIGINT) AS v \
             FROM {table} WHERE {} GROUP BY 1",
            in_month("received_at")
        )
    };
    let whole = |expr: &str, table: &str| {
        format!(
            "SELECT 'month' AS day, CAST({expr} AS BIGINT) AS v FROM {table} WHERE {}",
            in_month("received_at")
        )
    };

    // The raw side, metric by metric.
    let mut raw: BTreeMap<(Option<String>, &'static str), i64> = BTreeMap::new();
    let sources = [
        (Metric::LogEvents, "count(*)", "logs"),
        (Metric::LogBytes, "sum(bytes)", "logs"),
        (Metric::Scans, "count(*)", "scans"),
        (Metric::Findings, "count(*)", "findings"),
        (Metric::Devices, "count(DISTINCT device_id)", "devices"),
        (Metric::ApiRequests, "count(*)", "api_requests"),
    ];
    for (metric, expr, table) in sources {
        for sql in [by_day(expr, table), whole(expr, table)] {
            for (day, v) in pairs(&query(sql).await?)? {
                raw.insert((day, metric.as_str()), v);
            }
        }
    }

    // The recorded side: the `usage` records, as billing reads them.
    let usage = query_api::usage::recorded(&engine, tenant, first)
        .await
        .map_err(|e| anyhow::anyhow!("reading recorded usage: {e}"))?;
    let mut recorded: BTreeMap<(Option<String>, &'static str), i64> = BTreeMap::new();
    for d in usage.daily {
        recorded.insert((Some(d.day), d.metric), d.value);
    }
    for (metric, v) in usage.totals {
        recorded.insert((None, metric), v);
    }
    // Zero is the absence of a figure on both sides.
    recorded.retain(|_, v| *v != 0);

    let keys: std::collections::BTreeSet<_> = raw.keys().chain(recorded.keys()).cloned().collect();
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
        checked: keys.len(),
        differences,
        month_totals,
    })
}

/// `(day, v)` rows; `day` "month" becomes `None`. An aggregate over no rows
/// (sum of nothing) is null and skipped: zero is the absence of a figure.
fn pairs(batches: &[RecordBatch]) -> anyhow::Result<Vec<(Option<String>, i64)>> {
    let mut out = Vec::new();
    for b in batches {
        // VARCHAR may plan as Utf8View: normalise.
        let day = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let day = day.as_string::<i32>();
        let v = b
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .context("usage query returned a non-integer")?;
        for i in 0..b.num_rows() {
            if v.is_null(i) || v.value(i) == 0 {
                continue;
            }
            let d = day.value(i);
            out.push(((d != "month").then(|| d.to_string()), v.value(i)));
        }
    }
    Ok(out)
}
