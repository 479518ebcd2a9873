//! `GET /api/reports/compliance?month=YYYY-MM[&format=html|pdf|json]` —
//! an organization's month for its auditors (the `compliance_reports`
//! feature, business plan and up), built from its own data with the same
//! queries and store calls as the API routes that show each figure:
//!
//! - devices and the findings of each device's latest scan, by severity
//!   (`/api/devices`, `/api/findings`);
//! - scans run (`/api/scans`; the billed count is usage's `scans`);
//! - retention in force (the plan's or the contract's days) and, as proof,
//!   the oldest record each retained table still holds;
//! - the audit log, summarised by who did what (`/api/audit-log`);
//! - detections, anomalies and notification deliveries
//!   (`/api/detections`, `/api/anomalies`, `/api/notifications/deliveries`);
//! - usage (`/api/billing/usage`).
//!
//! One [`Report`] is rendered three ways: JSON (for automation and the
//! tests that compare it with the API), HTML and PDF (under the
//! organization's letterhead: [`crate::document`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{Months, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::document::{Document, html_response, letterhead_for, pdf_response, utc};
use crate::error::{ApiError, Result};
use crate::listing::to_json_rows;
use crate::sql::Bound;
use crate::state::AppState;
use crate::usage::{parse_month, recorded};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// YYYY-MM (UTC); default the current month.
    #[param(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: Option<String>,
    /// `html` (default), `pdf` or `json`; `Accept: application/pdf` also
    /// asks for the PDF.
    #[param(pattern = "^(html|pdf|json)$")]
    format: Option<String>,
}

/// The most devices (and scans) a report lists one by one; the counts
/// cover all of them.
const MAX_LISTED: usize = 500;

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

#[derive(Debug, Serialize)]
pub struct DeviceLine {
    pub device_id: String,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub last_seen: Option<String>,
    /// Findings of the device's latest scan, by severity.
    pub findings: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct RetainedTable {
    pub table: String,
    /// The first day kept today under the policy.
    pub first_kept_day: String,
    /// The oldest record the table holds now (its event day), if any.
    pub oldest_day: Option<String>,
    pub within_policy: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub organization: String,
    pub organization_name: String,
    pub plan: String,
    pub month: String,
    pub generated_at: String,
    pub devices: Vec<DeviceLine>,
    pub devices_total: u64,
    /// Findings of every device's latest scan, by severity.
    pub findings_by_severity: BTreeMap<String, u64>,
    pub scans: Vec<Value>,
    pub scans_run: u64,
    pub retention_days: u32,
    pub retention: Vec<RetainedTable>,
    pub audit: Vec<control::audit::AuditSummary>,
    pub audit_entries: u64,
    pub detections: Vec<Value>,
    pub detections_total: u64,
    pub anomalies_by_severity: BTreeMap<String, u64>,
    pub deliveries: Vec<control::notify::DeliverySummary>,
    pub usage: BTreeMap<String, i64>,
}

/// `GET /api/reports/compliance`
pub async fn compliance(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    params: crate::extract::QueryParams<ReportParams>,
) -> Result<Response> {
    let crate::extract::QueryParams(p) = params;
    let format = match p.format.as_deref() {
        Some("json") => "json",
        Some("html") => "html",
        other => {
            if crate::document::wants_pdf(other, &headers)? {
                "pdf"
            } else {
                "html"
            }
        }
    };
    let org = state
        .entitled_org(&caller, schemas::Feature::ComplianceReports)
        .await?;
    let now = schemas::time::now_ms();
    let current = control::invoice::month_start(now);
    let first = match &p.month {
        Some(m) => parse_month(m)?,
        None => current,
    };
    if first > current {
        return Err(ApiError::BadRequest(
            "no compliance report for a future month".into(),
        ));
    }
    let report = build(&state, &org, first, now).await?;
    match format {
        "json" => Ok(Json(report).into_response()),
        "pdf" => {
            let doc = document(&report, letterhead_for(&state, &org).await?);
            Ok(pdf_response(
                doc.to_pdf(),
                &format!("compliance-{}-{}", report.organization, report.month),
            ))
        }
        _ => {
            let doc = document(&report, letterhead_for(&state, &org).await?);
            Ok(html_response(doc.to_html()))
        }
    }
}

fn month_ms(first: NaiveDate) -> Result<(i64, i64)> {
    let next = first
        .checked_add_months(Months::new(1))
        .ok_or_else(|| ApiError::BadRequest("month out of range".into()))?;
    let ms = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .ok_or_else(|| ApiError::Internal("month out of range".into()))
    };
    Ok((ms(first)?, ms(next)?))
}

/// `sql` with `$1` bound to `value`.
fn bound(sql: String, value: i64) -> Bound {
    let mut q = Bound::default();
    let p = q.bind(value);
    q.sql = sql.replace("$1", &p);
    q
}

async fn query(state: &AppState, org: &control::Organization, q: &Bound) -> Result<Vec<Value>> {
    let result = state.sql.execute_bound(&org.id, q).await?;
    to_json_rows(&result.batches)
}

fn text(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn number(v: &Value, field: &str) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(0)
}

pub async fn build(
    state: &AppState,
    org: &control::Organization,
    first: NaiveDate,
    now: i64,
) -> Result<Report> {
    let (from, until) = month_ms(first)?;
    let in_month = |column: &str, q: &mut Bound| {
        let (a, b) = (q.bind(from), q.bind(until));
        format!("CAST({column} AS BIGINT) >= {a} AND CAST({column} AS BIGINT) < {b}")
    };

    // Devices known by the end of the month (counted in SQL: the listing
    // stops at MAX_LISTED), and the findings of each one's latest scan
    // that reported findings on it, up to then.
    let known = "SELECT device_id FROM devices WHERE CAST(ts AS BIGINT) < $1 GROUP BY device_id";
    let count = |rows: Vec<Value>| rows.first().map_or(0, |r| number(r, "n"));
    let devices_total = count(
        query(
            state,
            org,
            &bound(format!("SELECT count(*) AS n FROM ({known}) AS d"), until),
        )
        .await?,
    );
    let device_rows = query(
        state,
        org,
        &bound(
            format!(
                "SELECT device_id, max(ip) AS ip, max(hostname) AS hostname, \
                 max(CAST(ts AS BIGINT)) AS seen_ms FROM devices \
                 WHERE CAST(ts AS BIGINT) < $1 GROUP BY device_id ORDER BY device_id \
                 LIMIT {MAX_LISTED}"
            ),
            until,
        ),
    )
    .await?;
    let latest = "WITH f AS (SELECT device_id, severity, CAST(ts AS BIGINT) AS t FROM findings \
                  WHERE CAST(ts AS BIGINT) < $1), \
                  latest AS (SELECT device_id, max(t) AS t FROM f GROUP BY device_id), \
                  l AS (SELECT f.device_id, f.severity FROM f \
                  JOIN latest ON f.device_id = latest.device_id AND f.t = latest.t)";
    let mut findings_by_severity: BTreeMap<String, u64> =
        SEVERITIES.iter().map(|s| (s.to_string(), 0)).collect();
    for r in query(
        state,
        org,
        &bound(
            format!("{latest} SELECT severity, count(*) AS n FROM l GROUP BY severity"),
            until,
        ),
    )
    .await?
    {
        if let Some(severity) = text(&r, "severity") {
            *findings_by_severity.entry(severity).or_default() += number(&r, "n");
        }
    }
    let mut findings: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let listed: Vec<String> = device_rows
        .iter()
        .filter_map(|r| text(r, "device_id"))
        .collect();
    if !listed.is_empty() {
        let mut q = Bound::default();
        let end = q.bind(until);
        let ids: Vec<String> = listed.iter().map(|d| q.bind(d.as_str())).collect();
        q.sql = format!(
            "{} SELECT device_id, severity, count(*) AS n FROM l WHERE device_id IN ({}) \
             GROUP BY device_id, severity",
            latest.replace("$1", &end),
            ids.join(", ")
        );
        for r in query(state, org, &q).await? {
            let (Some(device), Some(severity)) = (text(&r, "device_id"), text(&r, "severity"))
            else {
                continue;
            };
            *findings
                .entry(device)
                .or_default()
                .entry(severity)
                .or_default() += number(&r, "n");
        }
    }
    let devices = device_rows
        .iter()
        .map(|r| {
            let device_id = text(r, "device_id").unwrap_or_default();
            DeviceLine {
                findings: findings.remove(&device_id).unwrap_or_default(),
                ip: text(r, "ip"),
                hostname: text(r, "hostname"),
                last_seen: r.get("seen_ms").and_then(Value::as_i64).map(utc),
                device_id,
            }
        })
        .collect();

    // Scans of the month (by the scan's time, as `/api/scans` filters).
    let mut q = Bound::default();
    let cond = in_month("ts", &mut q);
    q.sql = format!("SELECT count(*) AS n FROM scans WHERE {cond}");
    let scans_run = count(query(state, org, &q).await?);
    let mut q = Bound::default();
    let cond = in_month("ts", &mut q);
    q.sql = format!(
        "SELECT scan_id, target, scanner, status, hosts_up, hosts_total, \
         CAST(ts AS BIGINT) AS ts_ms FROM scans WHERE {cond} ORDER BY ts_ms, scan_id \
         LIMIT {MAX_LISTED}"
    );
    let scans = query(state, org, &q).await?;

    // Retention in force and the oldest record each retained table holds.
    let today = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .date_naive();
    let policy = pipeline::maintenance::retention::TenantPolicy {
        tenant: org.id.clone(),
        retention_days: org.limits.log_retention_days,
    };
    let first_kept = policy.first_kept_day(today);
    let mut retention = Vec::new();
    for kind in pipeline::maintenance::retention::RETAINED {
        let table = kind.as_str();
        let q = Bound::new(format!(
            // Event time: the lake's `date=` partitions, which retention
            // drops, are by `ts`.
            "SELECT min(CAST(ts AS BIGINT)) AS oldest FROM {table}"
        ));
        let oldest = query(state, org, &q)
            .await?
            .first()
            .and_then(|r| r.get("oldest").and_then(Value::as_i64))
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.date_naive());
        retention.push(RetainedTable {
            table: table.to_string(),
            first_kept_day: first_kept.to_string(),
            oldest_day: oldest.map(|d| d.to_string()),
            within_policy: oldest.is_none_or(|d| d >= first_kept),
        });
    }

    // Detections and anomalies of the month.
    let mut q = Bound::default();
    let cond = in_month("ts", &mut q);
    q.sql = format!(
        "SELECT rule_id, rule_title, level, count(*) AS n FROM detections WHERE {cond} \
         GROUP BY rule_id, rule_title, level ORDER BY n DESC, rule_id"
    );
    let detections = query(state, org, &q).await?;
    let detections_total = detections.iter().map(|r| number(r, "n")).sum();
    let mut q = Bound::default();
    let cond = in_month("window_start", &mut q);
    q.sql = format!("SELECT severity, count(*) AS n FROM anomalies WHERE {cond} GROUP BY severity");
    let mut anomalies_by_severity: BTreeMap<String, u64> = BTreeMap::new();
    for r in query(state, org, &q).await? {
        if let Some(s) = text(&r, "severity") {
            *anomalies_by_severity.entry(s).or_default() += number(&r, "n");
        }
    }

    let audit = state.store.audit_summary(&org.id, from, until).await?;
    let audit_entries = audit.iter().map(|a| a.count).sum();
    let deliveries = state.store.delivery_summary(&org.id, from, until).await?;
    let usage = recorded(&state.sql, &org.id, first).await?.totals;

    Ok(Report {
        organization: org.id.to_string(),
        organization_name: org.name.clone(),
        plan: org.plan.to_string(),
        month: first.format("%Y-%m").to_string(),
        generated_at: utc(now),
        devices,
        devices_total,
        findings_by_severity,
        scans,
        scans_run,
        retention_days: org.limits.log_retention_days,
        retention,
        audit,
        audit_entries,
        detections,
        detections_total,
        anomalies_by_severity,
        deliveries,
        usage: usage.into_iter().map(|(m, v)| (m.to_string(), v)).collect(),
    })
}

fn document(r: &Report, letterhead: crate::document::Letterhead) -> Document {
    let mut doc = Document::new(letterhead, format!("Compliance report {}", r.month));
    doc.subtitle
        .push(format!("{} ({})", r.organization_name, r.organization));
    doc.subtitle.push(format!(
        "Period: {} (UTC), plan {}; generated {}",
        r.month, r.plan, r.generated_at
    ));

    doc.heading("Summary").facts([
        ("Devices", r.devices_total.to_string()),
        ("Scans run", r.scans_run.to_string()),
        (
            "Open findings (latest scans)",
            SEVERITIES
                .iter()
                .map(|s| format!("{s} {}", r.findings_by_severity.get(*s).unwrap_or(&0)))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("Detections", r.detections_total.to_string()),
        (
            "Anomalies",
            r.anomalies_by_severity.values().sum::<u64>().to_string(),
        ),
        ("Audit-log entries", r.audit_entries.to_string()),
        ("Log retention", format!("{} days", r.retention_days)),
    ]);

    doc.heading("Devices and their latest findings");
    if r.devices_total as usize > r.devices.len() {
        doc.paragraph(format!(
            "The first {} of {} devices by id; the totals above cover all.",
            r.devices.len(),
            r.devices_total
        ));
    }
    let mut columns = vec!["device", "ip", "hostname", "last seen (UTC)"];
    columns.extend(["crit", "high", "med", "low", "info"]);
    let rows = r
        .devices
        .iter()
        .map(|d| {
            let mut row = vec![
                d.device_id.clone(),
                d.ip.clone().unwrap_or_default(),
                d.hostname.clone().unwrap_or_default(),
                d.last_seen
                    .as_deref()
                    .map(|t| t.get(..16).unwrap_or(t).to_string())
                    .unwrap_or_default(),
            ];
            row.extend(
                SEVERITIES
                    .iter()
                    .map(|s| d.findings.get(*s).unwrap_or(&0).to_string()),
            );
            row
        })
        .collect();
    doc.table(&columns, rows);

    doc.heading("Scans run");
    let rows = r
        .scans
        .iter()
        .take(MAX_LISTED)
        .map(|s| {
            vec![
                text(s, "scan_id").unwrap_or_default(),
                text(s, "target").unwrap_or_default(),
                text(s, "scanner").unwrap_or_default(),
                text(s, "status").unwrap_or_default(),
                format!("{}/{}", number(s, "hosts_up"), number(s, "hosts_total")),
                s.get("ts_ms")
                    .and_then(Value::as_i64)
                    .map(utc)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    doc.table(
        &[
            "scan", "target", "scanner", "status", "hosts up", "received",
        ],
        rows,
    );

    doc.heading("Retention and its enforcement");
    doc.paragraph(format!(
        "Retention in force: {} days. Records received before the first kept day are deleted \
         by the maintenance pass; the oldest record each retained table holds at the time of \
         this report is the evidence.",
        r.retention_days
    ));
    let rows = r
        .retention
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                t.first_kept_day.clone(),
                t.oldest_day.clone().unwrap_or_else(|| "(empty)".into()),
                if t.within_policy { "yes" } else { "NO" }.to_string(),
            ]
        })
        .collect();
    doc.table(
        &["table", "first kept day", "oldest record", "within policy"],
        rows,
    );

    doc.heading("Audit log: who did what");
    let rows = r
        .audit
        .iter()
        .map(|a| {
            vec![
                a.key_id.clone(),
                a.role.clone(),
                format!("{} {}", a.method, a.route),
                a.count.to_string(),
                utc(a.last_at),
            ]
        })
        .collect();
    doc.table(&["key or user", "role", "action", "times", "last"], rows);

    doc.heading("Detections and anomalies");
    let rows = r
        .detections
        .iter()
        .map(|d| {
            vec![
                text(d, "rule_title").unwrap_or_default(),
                text(d, "level").unwrap_or_default(),
                number(d, "n").to_string(),
            ]
        })
        .collect();
    doc.table(&["rule", "level", "matches"], rows);
    let rows = r
        .anomalies_by_severity
        .iter()
        .map(|(s, n)| vec![s.clone(), n.to_string()])
        .collect();
    doc.table(&["anomaly severity", "count"], rows);

    doc.heading("Notification deliveries");
    let rows = r
        .deliveries
        .iter()
        .map(|d| {
            vec![
                d.channel_kind.clone(),
                d.status.clone(),
                d.count.to_string(),
            ]
        })
        .collect();
    doc.table(&["channel", "status", "deliveries"], rows);

    doc.heading("Usage");
    let rows = r
        .usage
        .iter()
        .map(|(m, v)| vec![m.clone(), v.to_string()])
        .collect();
    doc.table(&["metric", "month total"], rows);
    doc
}
