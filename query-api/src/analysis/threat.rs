//! `POST /api/insights/threat-analysis`: risk per entity, with its reasons.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use detectors::windows::AUTH_FAILURE_PATTERN;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::quote;
use crate::state::AppState;

use super::*;

/// One entity's evidence and risk.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct EntityRisk {
    pub(super) entity: String,
    pub(super) anomalies: i64,
    pub(super) max_anomaly_score: f64,
    pub(super) auth_failures: i64,
    pub(super) findings: BTreeMap<String, i64>,
    pub(super) risk_score: i64,
    pub(super) risk_level: &'static str,
    pub(super) reasons: Vec<String>,
}

impl EntityRisk {
    pub(super) fn score(&mut self) {
        let f = |s: &str| self.findings.get(s).copied().unwrap_or(0);
        let mut reasons = Vec::new();
        let mut add = |points: i64, why: String| {
            if points > 0 {
                reasons.push(format!("+{points}: {why}"));
            }
            points
        };
        let score = add(
            20 * f("critical"),
            format!("{} critical findings (20 each)", f("critical")),
        ) + add(
            10 * f("high"),
            format!("{} high findings (10 each)", f("high")),
        ) + add(
            3 * f("medium"),
            format!("{} medium findings (3 each)", f("medium")),
        ) + add(
            8 * self.anomalies,
            format!("{} anomalous windows (8 each)", self.anomalies),
        ) + add(
            (self.auth_failures / 5).min(30),
            format!(
                "{} authentication failures (1 per 5, at most 30)",
                self.auth_failures
            ),
        );
        self.risk_score = score.min(100);
        self.risk_level = match self.risk_score {
            70.. => "critical",
            40..=69 => "high",
            15..=39 => "medium",
            _ => "low",
        };
        self.reasons = reasons;
    }
}

/// `POST /api/insights/threat-analysis` — risk per entity over a range
/// (default 24 h): `{"entity"?, "since"?, "until"?}`. Findings count over
/// the 30 days before `until` (they describe exposure, not events). Risk =
/// 20·critical + 10·high + 3·medium findings + 8·anomalies + auth
/// failures ÷ 5 (at most 30), capped at 100.
pub async fn threat_analysis(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: crate::extract::OptionalJsonBody<RangeRequest>,
) -> Result<Json<Value>> {
    let crate::extract::OptionalJsonBody(req) = req;
    let (since, until) = range(&req)?;
    if req.format.is_some() || req.top.is_some() {
        return Err(ApiError::BadRequest(
            "threat-analysis takes entity, since and until".into(),
        ));
    }
    let tenant = &caller.tenant;
    let entity_filter = |columns: &[&str]| match &req.entity {
        Some(e) => format!(
            " AND ({})",
            columns
                .iter()
                .map(|c| format!("{c} = {}", quote(e)))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        None => String::new(),
    };
    if req
        .entity
        .as_ref()
        .is_some_and(|e| e.is_empty() || e.len() > 256)
    {
        return Err(ApiError::BadRequest("entity must be 1 to 256 bytes".into()));
    }
    let mut by: BTreeMap<String, EntityRisk> = BTreeMap::new();
    for r in query(
        &state,
        tenant,
        &format!(
            "SELECT entity, CAST(count(*) AS BIGINT) AS n, max(score) AS s FROM anomalies \
             WHERE CAST(window_start AS BIGINT) >= {since} AND CAST(window_start AS BIGINT) < {until}{} \
             GROUP BY entity",
            entity_filter(&["entity"])
        ),
    )
    .await?
    {
        let Some(e) = r["entity"].as_str() else { continue };
        let risk = by.entry(e.into()).or_default();
        risk.anomalies = r["n"].as_i64().unwrap_or(0);
        risk.max_anomaly_score = r["s"].as_f64().unwrap_or(0.0);
    }
    for r in query(
        &state,
        tenant,
        &format!(
            "SELECT COALESCE(host, source_ip) AS e, CAST(count(*) AS BIGINT) AS n FROM logs \
             WHERE {} AND message ~* {}{} GROUP BY COALESCE(host, source_ip)",
            ts_between(since, until),
            quote(AUTH_FAILURE_PATTERN),
            entity_filter(&["host", "source_ip"])
        ),
    )
    .await?
    {
        let Some(e) = r["e"].as_str() else { continue };
        by.entry(e.into()).or_default().auth_failures = r["n"].as_i64().unwrap_or(0);
    }
    // Findings by IP; an entity that is a hostname gets its devices' IPs.
    let exposure = until - 30 * DAY_MS;
    let hostname_ips: Vec<String> = match &req.entity {
        Some(e) => query(
            &state,
            tenant,
            &format!(
                "SELECT DISTINCT ip FROM devices WHERE hostname = {} AND ip IS NOT NULL",
                quote(e)
            ),
        )
        .await?
        .iter()
        .filter_map(|r| r["ip"].as_str().map(str::to_string))
        .collect(),
        None => Vec::new(),
    };
    let mut ip_filter = entity_filter(&["ip"]);
    if !hostname_ips.is_empty() {
        let list: Vec<String> = hostname_ips.iter().map(|i| quote(i)).collect();
        ip_filter = format!(
            "{} OR ip IN ({}))",
            ip_filter.trim_end_matches(')'),
            list.join(", ")
        );
    }
    for r in query(
        &state,
        tenant,
        &format!(
            "SELECT ip, severity, CAST(count(DISTINCT concat(CAST(port AS VARCHAR), '/', protocol, '/', title)) AS BIGINT) AS n \
             FROM findings WHERE {}{} AND ip IS NOT NULL GROUP BY ip, severity",
            ts_between(exposure, until),
            ip_filter
        ),
    )
    .await?
    {
        let (Some(ip), Some(sev)) = (r["ip"].as_str(), r["severity"].as_str()) else { continue };
        // Reported under the entity asked for when it is a hostname.
        let key = match &req.entity {
            Some(e) if hostname_ips.iter().any(|i| i == ip) => e.clone(),
            _ => ip.to_string(),
        };
        *by.entry(key).or_default().findings.entry(sev.into()).or_default() += r["n"].as_i64().unwrap_or(0);
    }
    let mut entities: Vec<EntityRisk> = by
        .into_iter()
        .map(|(e, mut r)| {
            r.entity = e;
            r.score();
            r
        })
        .collect();
    entities.sort_by(|a, b| {
        b.risk_score
            .cmp(&a.risk_score)
            .then(a.entity.cmp(&b.entity))
    });
    if req.entity.is_none() {
        entities.truncate(20);
    }
    if let Some(e) = &req.entity
        && entities.is_empty()
    {
        let mut r = EntityRisk {
            entity: e.clone(),
            ..Default::default()
        };
        r.score();
        entities.push(r);
    }
    Ok(Json(json!({
        "range": { "since": iso(since), "until": iso(until) },
        "entities": entities,
        "scoring": "20·critical + 10·high + 3·medium findings (30 days) + 8·anomalies + auth failures ÷ 5 (≤ 30), capped at 100",
    })))
}
