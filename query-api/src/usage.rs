//! Recorded usage (the `usage` records the pipeline emits) per tenant and
//! month, and its routes:
//!
//! - `GET /api/billing/usage?month=YYYY-MM` — daily figures and month
//!   totals as JSON (default: the current UTC month).
//! - `GET /api/metrics/usage/export?month=YYYY-MM&format=csv|json|parquet`
//!   — the daily figures as a download.
//!
//! Additive metrics are sums; `devices` is the number of distinct devices
//! (per day, and for the month — not a sum of days). `securenet usage
//! reconcile` compares the same figures with the raw records.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Months, NaiveDate, Utc};
use detectors::usage::Metric;
use schemas::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::sql::SqlEngine;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DailyUsage {
    pub day: String,
    pub metric: &'static str,
    pub value: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonthlyUsage {
    pub month: String,
    pub daily: Vec<DailyUsage>,
    pub totals: BTreeMap<&'static str, i64>,
}

/// Parses `YYYY-MM` into the month's first day.
pub fn parse_month(month: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map_err(|_| ApiError::BadRequest(format!("month {month:?}: expected YYYY-MM")))
}

fn metric(name: &str) -> Option<&'static str> {
    Metric::ALL.iter().map(|m| m.as_str()).find(|m| *m == name)
}

/// The recorded usage of `tenant` for the month starting `first`.
pub async fn recorded(
    engine: &SqlEngine,
    tenant: &TenantId,
    first: NaiveDate,
) -> Result<MonthlyUsage> {
    let next = first
        .checked_add_months(Months::new(1))
        .ok_or_else(|| ApiError::BadRequest("month out of range".into()))?;
    let value = "CAST(CASE WHEN metric = 'devices' THEN count(DISTINCT subject) \
                 ELSE sum(value) END AS BIGINT)";
    let filter = format!("day >= DATE '{first}' AND day < DATE '{next}'");
    let daily_sql = format!(
        "SELECT CAST(day AS VARCHAR) AS day, metric, {value} AS v FROM usage \
         WHERE {filter} GROUP BY day, metric ORDER BY day, metric"
    );
    let totals_sql = format!(
        "SELECT 'month' AS day, metric, {value} AS v FROM usage WHERE {filter} GROUP BY metric"
    );
    let mut daily = Vec::new();
    for row in rows(&engine.execute(tenant, &daily_sql).await?.batches)? {
        daily.push(row);
    }
    let totals = rows(&engine.execute(tenant, &totals_sql).await?.batches)?
        .into_iter()
        .map(|r| (r.metric, r.value))
        .collect();
    Ok(MonthlyUsage {
        month: first.format("%Y-%m").to_string(),
        daily,
        totals,
    })
}

/// `(day, metric, v)` rows; unknown metrics and empty values are skipped.
fn rows(batches: &[RecordBatch]) -> Result<Vec<DailyUsage>> {
    let mut out = Vec::new();
    for b in batches {
        // VARCHAR may plan as Utf8View: normalise.
        let cast = |i: usize| {
            arrow::compute::cast(b.column(i), &DataType::Utf8)
                .map_err(|e| ApiError::Internal(e.to_string()))
        };
        let (day, name) = (cast(0)?, cast(1)?);
        let (day, name) = (day.as_string::<i32>(), name.as_string::<i32>());
        let v = b
            .column(2)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| ApiError::Internal("usage value is not an integer".into()))?;
        for i in 0..b.num_rows() {
            if v.is_null(i) {
                continue;
            }
            if let Some(metric) = metric(name.value(i)) {
                out.push(DailyUsage {
                    day: day.value(i).to_string(),
                    metric,
                    value: v.value(i),
                });
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// YYYY-MM (UTC); default the current month.
    #[param(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: Option<String>,
    /// Export only: csv, json or parquet.
    format: Option<String>,
}

fn month_of(p: &UsageParams) -> Result<NaiveDate> {
    match &p.month {
        Some(m) => parse_month(m),
        None => {
            let now = Utc::now().date_naive();
            NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
                .ok_or_else(|| ApiError::Internal("no current month".into()))
        }
    }
}

/// `GET /api/billing/usage`
pub async fn billing_usage(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<UsageParams>,
) -> Result<Json<serde_json::Value>> {
    let crate::extract::QueryParams(p) = params;
    if p.format.is_some() {
        return Err(ApiError::BadRequest(
            "format is for /api/metrics/usage/export".into(),
        ));
    }
    let usage = recorded(&state.sql, &caller.tenant, month_of(&p)?).await?;
    Ok(Json(json!({
        "organization": caller.tenant,
        "month": usage.month,
        "daily": usage.daily,
        "totals": usage.totals,
    })))
}

/// `GET /api/metrics/usage/export`
pub async fn export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<UsageParams>,
) -> Result<Response> {
    let crate::extract::QueryParams(p) = params;
    let usage = recorded(&state.sql, &caller.tenant, month_of(&p)?).await?;
    let name = format!("usage-{}-{}", caller.tenant, usage.month);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("day", DataType::Utf8, false),
            Field::new("metric", DataType::Utf8, false),
            Field::new("value", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(
                usage.daily.iter().map(|d| d.day.as_str()),
            )) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                usage.daily.iter().map(|d| d.metric),
            )),
            Arc::new(Int64Array::from_iter_values(
                usage.daily.iter().map(|d| d.value),
            )),
        ],
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let internal = |e: &dyn std::fmt::Display| ApiError::Internal(e.to_string());
    let (media, ext, body) = match p.format.as_deref().unwrap_or("csv") {
        "csv" => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::Writer::new(&mut out);
                let batch =
                    crate::sql::format::neutralize_formulas(&batch).map_err(|e| internal(&e))?;
                w.write(&batch).map_err(|e| internal(&e))?;
            }
            ("text/csv; charset=utf-8", "csv", out)
        }
        "json" => (
            "application/json",
            "json",
            serde_json::to_vec(&usage.daily).map_err(|e| internal(&e))?,
        ),
        "parquet" => {
            let mut out = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
                .map_err(|e| internal(&e))?;
            w.write(&batch).map_err(|e| internal(&e))?;
            w.close().map_err(|e| internal(&e))?;
            ("application/vnd.apache.parquet", "parquet", out)
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: use csv, json or parquet"
            )));
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, media.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}
