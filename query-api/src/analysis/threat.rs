//! `POST /api/insights/threat-analysis`: risk per entity, with its reasons.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use detectors::windows::AUTH_FAILURE_PATTERN;
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
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
    // ` AND (c1 = $n OR c2 = $n …)` for the entity asked for, plus
    // `extra` conditions ORed in; empty without an entity.
    let entity_filter = |q: &mut Bound, columns: &[&str], extra: &[String]| match &req.entity {
        Some(e) => {
            let e = q.bind(e.as_str());
            let mut any: Vec<String> = columns.iter().map(|c| format!("{c} = {e}")).collect();
            any.extend(extra.iter().cloned());
            format!(" AND ({})", any.join(" OR "))
        }
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
    #[derive(Deserialize)]
    struct Anomalies {
        entity: Option<String>,
        n: i64,
        s: Option<f64>,
    }
    for r in query_as::<Anomalies>(
        &state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT entity, CAST(count(*) AS BIGINT) AS n, max(score) AS s FROM anomalies \
                 WHERE {}{} GROUP BY entity",
                between(q, "window_start", since, until),
                entity_filter(q, &["entity"], &[])
            )
        }),
    )
    .await?
    {
        let Some(e) = r.entity else { continue };
        let risk = by.entry(e).or_default();
        risk.anomalies = r.n;
        risk.max_anomaly_score = r.s.unwrap_or(0.0);
    }
    #[derive(Deserialize)]
    struct Failures {
        e: Option<String>,
        n: i64,
    }
    for r in query_as::<Failures>(
        &state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT COALESCE(host, source_ip) AS e, CAST(count(*) AS BIGINT) AS n FROM logs \
                 WHERE {} AND message ~* {}{} GROUP BY COALESCE(host, source_ip)",
                ts_between(q, since, until),
                q.bind(AUTH_FAILURE_PATTERN),
                entity_filter(q, &["host", "source_ip"], &[])
            )
        }),
    )
    .await?
    {
        let Some(e) = r.e else { continue };
        by.entry(e).or_default().auth_failures = r.n;
    }
    #[derive(Deserialize)]
    struct Ip {
        ip: Option<String>,
    }
    // Findings by IP; an entity that is a hostname gets its devices' IPs.
    let exposure = until - 30 * DAY_MS;
    let hostname_ips: Vec<String> = match &req.entity {
        Some(e) => query_as::<Ip>(
            &state,
            tenant,
            Bound::with(|q| {
                format!(
                    "SELECT DISTINCT ip FROM devices WHERE hostname = {} AND ip IS NOT NULL",
                    q.bind(e.as_str())
                )
            }),
        )
        .await?
        .into_iter()
        .filter_map(|r| r.ip)
        .collect(),
        None => Vec::new(),
    };
    #[derive(Deserialize)]
    struct Findings {
        ip: Option<String>,
        severity: Option<String>,
        n: i64,
    }
    for r in query_as::<Findings>(
        &state,
        tenant,
        Bound::with(|q| {
            // The entity's hostname's IPs count as the entity.
            let ips: Vec<String> = hostname_ips.iter().map(|i| q.bind(i.as_str())).collect();
            let also = if ips.is_empty() {
                Vec::new()
            } else {
                vec![format!("ip IN ({})", ips.join(", "))]
            };
            format!(
                "SELECT ip, severity, CAST(count(DISTINCT concat(CAST(port AS VARCHAR), '/', protocol, '/', title)) AS BIGINT) AS n \
                 FROM findings WHERE {}{} AND ip IS NOT NULL GROUP BY ip, severity",
                ts_between(q, exposure, until),
                entity_filter(q, &["ip"], &also)
            )
        }),
    )
    .await?
    {
        let (Some(ip), Some(sev)) = (r.ip, r.severity) else { continue };
        // Reported under the entity asked for when it is a hostname.
        let key = match &req.entity {
            Some(e) if hostname_ips.contains(&ip) => e.clone(),
            _ => ip,
        };
        *by.entry(key).or_default().findings.entry(sev).or_default() += r.n;
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
