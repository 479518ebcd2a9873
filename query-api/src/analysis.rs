//! Built-in analysis over the caller's data:
//!
//! - `POST /api/insights/summary` — log template mining
//!   ([`detectors::templates`]) over a time
//!   range: top templates with counts, templates new against the preceding
//!   range of equal length, anomalies; as JSON, or text with
//!   `{"format": "text"}`. With `api.llm` configured, an OpenAI-compatible
//!   model may add a `narrative` written from those facts; the facts are
//!   never replaced, and any LLM failure leaves the built-in summary alone.
//! - `POST /api/insights/threat-analysis` — per entity (host or IP):
//!   anomalies, authentication failures, findings, and a risk score with the
//!   reasons that make it up.
//! - `GET /api/insights/recommendations` — rules over findings, anomalies,
//!   authentication failures, ingest quality and plan usage, each with its
//!   evidence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use detectors::templates::{ShapeId, TemplateMiner};
use detectors::windows::AUTH_FAILURE_PATTERN;
use schemas::Severity;
use schemas::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::warn;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::{quote, rfc3339_ms, to_json_rows};
use crate::state::AppState;

/// Messages mined per range at most (the newest are kept): bounded work
/// per call whatever the range.
const MAX_MESSAGES: usize = 200_000;
const DEFAULT_RANGE_MS: i64 = 24 * 3600 * 1000;
const MAX_RANGE_MS: i64 = 90 * 24 * 3600 * 1000;

/// `[api.llm]`: an OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Base URL, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended).
    pub url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<schemas::Secret>,
    #[serde(default = "default_llm_timeout")]
    pub timeout_ms: u64,
}

fn default_llm_timeout() -> u64 {
    20_000
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    since: Option<String>,
    until: Option<String>,
    /// `json` (default) or `text` (summary only).
    format: Option<String>,
    /// How many templates to list (default 10, at most 100).
    top: Option<usize>,
    /// Threat analysis: one host or IP (default: the riskiest entities).
    entity: Option<String>,
}

/// `[since, until)` in ms: default the last 24 h; at most 90 days.
fn range(req: &RangeRequest) -> Result<(i64, i64)> {
    let until = match &req.until {
        Some(u) => rfc3339_ms("until", u)?,
        None => schemas::time::now_ms(),
    };
    let since = match &req.since {
        Some(s) => rfc3339_ms("since", s)?,
        None => until - DEFAULT_RANGE_MS,
    };
    if since >= until {
        return Err(ApiError::BadRequest("since must be before until".into()));
    }
    if until - since > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(
            "the range is longer than 90 days".into(),
        ));
    }
    Ok((since, until))
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

async fn query(state: &AppState, tenant: &TenantId, sql: &str) -> Result<Vec<Value>> {
    to_json_rows(&state.sql.execute(tenant, sql).await?.batches)
}

fn ts_between(since: i64, until: i64) -> String {
    format!("CAST(ts AS BIGINT) >= {since} AND CAST(ts AS BIGINT) < {until}")
}

async fn messages(
    state: &AppState,
    tenant: &TenantId,
    since: i64,
    until: i64,
) -> Result<Vec<String>> {
    let rows = query(
        state,
        tenant,
        &format!(
            "SELECT message FROM logs WHERE {} ORDER BY ts DESC LIMIT {MAX_MESSAGES}",
            ts_between(since, until)
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r["message"].as_str().map(str::to_string))
        .collect())
}

#[derive(Debug, Clone, Serialize)]
struct TemplateCount {
    template: String,
    count: u64,
    share: f64,
    example: String,
}

/// `POST /api/insights/summary`
pub async fn summary(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: crate::extract::OptionalJsonBody<RangeRequest>,
) -> Result<Response> {
    let crate::extract::OptionalJsonBody(req) = req;
    let (since, until) = range(&req)?;
    let top = req.top.unwrap_or(10);
    if !(1..=100).contains(&top) {
        return Err(ApiError::BadRequest("top must be within 1..=100".into()));
    }
    let text_format = match req.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: json or text"
            )));
        }
    };
    let tenant = &caller.tenant;
    let baseline = messages(&state, tenant, since - (until - since), since).await?;
    let current = messages(&state, tenant, since, until).await?;
    let total = current.len();
    let (templates, new_templates, template_count) = tokio::task::spawn_blocking(move || {
        // One miner over both ranges, so a template is "new" exactly when
        // none of the preceding range's messages has it.
        let mut miner = TemplateMiner::default();
        let mut seen_before: HashSet<ShapeId> = HashSet::new();
        for m in baseline.iter().rev() {
            seen_before.extend(miner.add(m));
        }
        let mut shapes: HashMap<ShapeId, u64> = HashMap::new();
        for m in current.iter().rev() {
            if let Some(shape) = miner.add(m) {
                *shapes.entry(shape).or_default() += 1;
            }
        }
        let mined = miner.templates();
        let known: HashSet<u32> = seen_before
            .iter()
            .filter_map(|s| mined.of(*s).map(|t| t.id))
            .collect();
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for (shape, n) in &shapes {
            if let Some(t) = mined.of(*shape) {
                *counts.entry(t.id).or_default() += n;
            }
        }
        let by_id: HashMap<u32, &detectors::templates::Template> =
            mined.iter().map(|t| (t.id, t)).collect();
        let describe = |id: u32, count: u64| {
            by_id.get(&id).map(|t| TemplateCount {
                template: t.text.clone(),
                count,
                share: if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                },
                example: t.example.chars().take(512).collect(),
            })
        };
        let mut ranked: Vec<(u32, u64)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let templates: Vec<TemplateCount> = ranked
            .iter()
            .take(top)
            .filter_map(|(id, n)| describe(*id, *n))
            .collect();
        let new: Vec<TemplateCount> = ranked
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .take(top)
            .filter_map(|(id, n)| describe(*id, *n))
            .collect();
        (templates, new, ranked.len())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("template mining: {e}")))?;
    let window = format!(
        "CAST(window_start AS BIGINT) >= {since} AND CAST(window_start AS BIGINT) < {until}"
    );
    let anomalies = query(
        &state,
        tenant,
        &format!(
            "SELECT anomaly_id, entity, CAST(window_start AS BIGINT) AS window_start_ms, score, severity \
             FROM anomalies WHERE {window} ORDER BY score DESC, anomaly_id LIMIT 10"
        ),
    )
    .await?;
    let anomaly_count = query(
        &state,
        tenant,
        &format!("SELECT CAST(count(*) AS BIGINT) AS n FROM anomalies WHERE {window}"),
    )
    .await?
    .first()
    .and_then(|r| r["n"].as_i64())
    .unwrap_or(0);
    let facts = json!({
        "range": { "since": iso(since), "until": iso(until) },
        "messages": total,
        "truncated": total >= MAX_MESSAGES,
        "templates": template_count,
        "top_templates": templates,
        "new_templates": new_templates,
        "anomalies": { "count": anomaly_count, "top": anomalies },
    });
    let text = summary_text(&facts);
    let mut out = facts.clone();
    out["summary"] = json!(text);
    if let Some(llm) = &state.llm {
        match narrate(llm, &facts).await {
            Ok(narrative) => {
                out["narrative"] = json!(narrative);
                out["narrative_model"] = json!(llm.model);
            }
            Err(e) => {
                warn!(error = %e, "LLM summary failed; the built-in summary stands");
                out["narrative_error"] = json!(e);
            }
        }
    }
    if text_format {
        let mut t = text;
        if let Some(n) = out["narrative"].as_str() {
            t.push_str("\n\nNarrative (");
            t.push_str(out["narrative_model"].as_str().unwrap_or("llm"));
            t.push_str("):\n");
            t.push_str(n);
            t.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t).into_response());
    }
    Ok(Json(out).into_response())
}

/// The built-in summary: every figure from `facts`, nothing else.
fn summary_text(facts: &Value) -> String {
    let mut t = format!(
        "Log summary {} to {}: {} messages in {} templates.\n",
        facts["range"]["since"].as_str().unwrap_or(""),
        facts["range"]["until"].as_str().unwrap_or(""),
        facts["messages"],
        facts["templates"]
    );
    let list = |t: &mut String, title: &str, items: &Value| {
        let items = items.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return;
        }
        t.push_str(title);
        for i in items {
            // A JSON value ignores the width: format the number itself.
            t.push_str(&format!(
                "  {:>8}  {}\n",
                i["count"].as_i64().unwrap_or(0),
                i["template"].as_str().unwrap_or("")
            ));
        }
    };
    list(&mut t, "Top templates:\n", &facts["top_templates"]);
    list(
        &mut t,
        "New templates (not seen in the preceding range):\n",
        &facts["new_templates"],
    );
    let n = facts["anomalies"]["count"].as_i64().unwrap_or(0);
    t.push_str(&format!("Anomalies: {n}.\n"));
    for a in facts["anomalies"]["top"]
        .as_array()
        .into_iter()
        .flatten()
        .take(5)
    {
        t.push_str(&format!(
            "  {} {} score {:.3}\n",
            a["severity"].as_str().unwrap_or(""),
            a["entity"].as_str().unwrap_or(""),
            a["score"].as_f64().unwrap_or(0.0)
        ));
    }
    t
}

/// Asks the configured model to narrate `facts` (and nothing else).
async fn narrate(llm: &LlmConfig, facts: &Value) -> std::result::Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(llm.timeout_ms))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client
        .post(format!("{}/chat/completions", llm.url.trim_end_matches('/')))
        .json(&json!({
            "model": llm.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "You summarise security log statistics for an analyst. Use only the facts given; do not invent numbers, hosts or events. At most 150 words."},
                {"role": "user", "content": facts.to_string()},
            ],
        }));
    if let Some(key) = &llm.api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the LLM endpoint answered {status}"));
    }
    let v: Value = response.json().await.map_err(|e| e.to_string())?;
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| "the LLM answer has no choices[0].message.content".into())
}

/// One entity's evidence and risk.
#[derive(Debug, Default, Clone, Serialize)]
struct EntityRisk {
    entity: String,
    anomalies: i64,
    max_anomaly_score: f64,
    auth_failures: i64,
    findings: BTreeMap<String, i64>,
    risk_score: i64,
    risk_level: &'static str,
    reasons: Vec<String>,
}

impl EntityRisk {
    fn score(&mut self) {
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
    let exposure = until - 30 * 24 * 3600 * 1000;
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

/// Services that should not face a network without a reason.
const RISKY_PORTS: &[(i64, &str)] = &[
    (21, "FTP"),
    (23, "Telnet"),
    (445, "SMB"),
    (3389, "RDP"),
    (3306, "MySQL"),
    (5432, "PostgreSQL"),
    (6379, "Redis"),
    (9200, "Elasticsearch"),
    (27017, "MongoDB"),
];

/// `GET /api/insights/recommendations`
pub async fn recommendations(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    let tenant = &caller.tenant;
    let now = schemas::time::now_ms();
    let day = 24 * 3600 * 1000;
    let mut out: Vec<Value> = Vec::new();
    let mut push = |id: &str, priority: &str, title: String, action: &str, evidence: Value| {
        out.push(json!({"id": id, "priority": priority, "title": title, "action": action, "evidence": evidence}));
    };

    let vulns = query(
        &state,
        tenant,
        &format!(
            "SELECT title, severity, max(cve) AS cve, CAST(count(DISTINCT ip) AS BIGINT) AS hosts, \
             array_agg(DISTINCT concat(ip, ':', CAST(port AS VARCHAR))) AS targets FROM findings \
             WHERE {} AND severity IN ('critical', 'high') GROUP BY title, severity \
             ORDER BY CASE severity WHEN 'critical' THEN 0 ELSE 1 END, hosts DESC, title LIMIT 20",
            ts_between(now - 30 * day, now + day)
        ),
    )
    .await?;
    for v in vulns {
        let sev = v["severity"].as_str().unwrap_or("high");
        push(
            "patch-vulnerability",
            sev,
            format!(
                "Patch \"{}\" on {} host(s)",
                v["title"].as_str().unwrap_or(""),
                v["hosts"]
            ),
            "apply the vendor fix or mitigate, then rescan to confirm",
            json!({"severity": sev, "cve": v["cve"], "targets": v["targets"]}),
        );
    }
    let ports: Vec<String> = RISKY_PORTS.iter().map(|(p, _)| p.to_string()).collect();
    let exposed = query(
        &state,
        tenant,
        &format!(
            "SELECT port, array_agg(DISTINCT ip) AS ips FROM findings WHERE {} AND port IN ({}) \
             GROUP BY port ORDER BY port",
            ts_between(now - 30 * day, now + day),
            ports.join(", ")
        ),
    )
    .await?;
    for e in exposed {
        let port = e["port"].as_i64().unwrap_or(0);
        let name = RISKY_PORTS
            .iter()
            .find(|(p, _)| *p == port)
            .map_or("service", |(_, n)| n);
        push(
            "close-risky-port",
            "high",
            format!("{name} (port {port}) is reachable"),
            "firewall the port or restrict it to a management network",
            json!({"port": port, "ips": e["ips"]}),
        );
    }
    let brute = query(
        &state,
        tenant,
        &format!(
            "SELECT COALESCE(host, source_ip) AS e, CAST(count(*) AS BIGINT) AS n FROM logs \
             WHERE {} AND message ~* {} GROUP BY COALESCE(host, source_ip) HAVING count(*) >= 20 \
             ORDER BY n DESC LIMIT 10",
            ts_between(now - day, now + 60_000),
            quote(AUTH_FAILURE_PATTERN)
        ),
    )
    .await?;
    for b in brute {
        push(
            "harden-authentication",
            "high",
            format!(
                "{} authentication failures on {} in 24 h",
                b["n"],
                b["e"].as_str().unwrap_or("")
            ),
            "enforce MFA or keys, rate-limit logins (fail2ban), and review the sources",
            json!({"entity": b["e"], "auth_failures_24h": b["n"]}),
        );
    }
    let anomalous = query(
        &state,
        tenant,
        &format!(
            "SELECT entity, CAST(count(*) AS BIGINT) AS n, max(score) AS s, max(anomaly_id) AS example \
             FROM anomalies WHERE CAST(window_start AS BIGINT) >= {} GROUP BY entity ORDER BY s DESC LIMIT 10",
            now - 7 * day
        ),
    )
    .await?;
    for a in anomalous {
        push(
            "investigate-anomalies",
            "medium",
            format!(
                "Investigate {} anomalous window(s) on {}",
                a["n"],
                a["entity"].as_str().unwrap_or("")
            ),
            "review the entity's logs around the windows (GET /api/anomalies?entity=…)",
            json!({"entity": a["entity"], "anomalies_7d": a["n"], "max_score": a["s"], "example_anomaly": a["example"]}),
        );
    }
    let quality = query(
        &state,
        tenant,
        &format!(
            "SELECT CAST(count(*) AS BIGINT) AS total, \
             CAST(sum(CASE WHEN parse_status <> 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS failed \
             FROM logs WHERE {}",
            ts_between(now - day, now + 60_000)
        ),
    )
    .await?;
    if let Some(q) = quality.first() {
        let (total, failed) = (
            q["total"].as_i64().unwrap_or(0),
            q["failed"].as_i64().unwrap_or(0),
        );
        if total >= 100 && failed * 10 >= total {
            push(
                "fix-log-format",
                "low",
                format!("{failed} of {total} log lines in 24 h did not parse"),
                "check the forwarder's format (docs/forwarders.md): RFC 5424 or JSON parse best",
                json!({"log_lines_24h": total, "parse_failures_24h": failed}),
            );
        }
    }
    let org = state
        .store
        .organization(tenant)?
        .ok_or_else(|| ApiError::NotFound(format!("organization {tenant} no longer exists")))?;
    let devices = state.store.device_count(&org, now)?;
    let scans = state.store.scans_in_month(&org, now)?;
    for (what, used, max) in [
        ("devices", devices, org.limits.max_devices),
        ("scans this month", scans, org.limits.max_scans_per_month),
    ] {
        if max > 0 && used * 10 >= max * 8 {
            push(
                "plan-capacity",
                if used >= max { "medium" } else { "low" },
                format!("{used} of {max} {what} on the {} plan", org.plan),
                "upgrade the plan (POST /api/billing/upgrade) or expect overage",
                json!({"what": what, "used": used, "limit": max, "plan": org.plan}),
            );
        }
    }
    let last_scan = query(
        &state,
        tenant,
        "SELECT CAST(max(ts) AS BIGINT) AS last FROM scans",
    )
    .await?
    .first()
    .and_then(|r| r["last"].as_i64());
    if last_scan.is_none_or(|t| now - t > 30 * day) {
        push(
            "schedule-scans",
            "low",
            "No network scan in the last 30 days".into(),
            "schedule nmap scans and post them to /api/ingest/scans",
            json!({"last_scan": last_scan.map(iso)}),
        );
    }
    // Most urgent first; anything unknown ranks with `low`.
    out.sort_by_key(|r| {
        let priority = r["priority"].as_str().and_then(Severity::parse);
        std::cmp::Reverse(priority.map_or(Severity::Low, |p| p.max(Severity::Low)))
    });
    Ok(Json(json!({ "recommendations": out })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn risk(findings: &[(&str, i64)], anomalies: i64, auth_failures: i64) -> EntityRisk {
        let mut r = EntityRisk {
            entity: "web-1".into(),
            anomalies,
            auth_failures,
            findings: findings.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            ..Default::default()
        };
        r.score();
        r
    }

    #[test]
    fn risk_adds_its_documented_points_and_says_why() {
        // 20·critical + 10·high + 3·medium + 8·anomalies + failures/5 (≤ 30).
        let r = risk(
            &[("critical", 1), ("high", 1), ("medium", 2), ("low", 9)],
            1,
            52,
        );
        assert_eq!(r.risk_score, 20 + 10 + 6 + 8 + 10);
        assert_eq!(r.risk_level, "high");
        assert_eq!(r.reasons.len(), 5, "{:?}", r.reasons);
        assert!(r.reasons[0].starts_with("+20: 1 critical"));
        // Low findings and a handful of failures add nothing.
        let quiet = risk(&[("low", 9)], 0, 4);
        assert_eq!((quiet.risk_score, quiet.risk_level), (0, "low"));
        assert!(quiet.reasons.is_empty());
    }

    #[test]
    fn risk_caps_failures_at_30_and_the_score_at_100() {
        assert_eq!(risk(&[], 0, 1_000_000).risk_score, 30);
        let worst = risk(&[("critical", 10)], 50, 1_000);
        assert_eq!((worst.risk_score, worst.risk_level), (100, "critical"));
        // The level boundaries: 15, 40, 70.
        assert_eq!(risk(&[("medium", 5)], 0, 0).risk_level, "medium");
        assert_eq!(risk(&[("medium", 4)], 0, 10).risk_level, "low");
        assert_eq!(risk(&[("high", 4)], 0, 0).risk_level, "high");
        assert_eq!(risk(&[("high", 7)], 0, 0).risk_level, "critical");
    }

    #[test]
    fn ranges_default_to_a_day_and_refuse_bad_ones() {
        let req = |since: Option<&str>, until: Option<&str>| RangeRequest {
            since: since.map(String::from),
            until: until.map(String::from),
            ..Default::default()
        };
        let (since, until) = range(&req(None, Some("2026-12-02T00:00:00Z"))).unwrap();
        assert_eq!(until - since, DEFAULT_RANGE_MS);
        assert!(
            range(&req(
                Some("2026-12-02T00:00:00Z"),
                Some("2026-12-01T00:00:00Z")
            ))
            .is_err()
        );
        assert!(
            range(&req(
                Some("2026-01-01T00:00:00Z"),
                Some("2026-12-01T00:00:00Z")
            ))
            .is_err()
        );
        assert!(range(&req(Some("yesterday"), None)).is_err());
    }

    #[test]
    fn the_built_in_summary_lists_templates_and_anomalies() {
        let facts = serde_json::json!({
            "range": {"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z"},
            "messages": 1200, "templates": 7,
            "top_templates": [{"count": 900, "template": "Accepted password for <*> from <IP>"}],
            "new_templates": [{"count": 3, "template": "Failed password for invalid user <*>"}],
            "anomalies": {"count": 1, "top": [{"severity": "high", "entity": "web-1", "score": 0.7123}]},
        });
        let text = summary_text(&facts);
        assert!(text.starts_with("Log summary 2026-12-01T00:00:00Z to 2026-12-02T00:00:00Z: 1200 messages in 7 templates."));
        assert!(
            text.contains("     900  Accepted password for <*> from <IP>"),
            "{text}"
        );
        assert!(
            text.contains("New templates (not seen in the preceding range):\n         3  Failed"),
            "{text}"
        );
        assert!(
            text.contains("Anomalies: 1.\n  high web-1 score 0.712"),
            "{text}"
        );
    }
}
