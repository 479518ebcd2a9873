//! `POST /api/insights/summary`: log templates, new templates, anomalies.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use detectors::templates::{ShapeId, TemplateMiner};
use schemas::TenantId;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::warn;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

use super::llm::narrate;
use super::*;

async fn messages(
    state: &AppState,
    tenant: &TenantId,
    since: i64,
    until: i64,
) -> Result<Vec<String>> {
    let rows = query(
        state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT message FROM logs WHERE {} ORDER BY ts DESC LIMIT {MAX_MESSAGES}",
                ts_between(q, since, until)
            )
        }),
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
    let anomalies = query(
        &state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT anomaly_id, entity, CAST(window_start AS BIGINT) AS window_start_ms, score, severity \
                 FROM anomalies WHERE {} ORDER BY score DESC, anomaly_id LIMIT 10",
                between(q, "window_start", since, until)
            )
        }),
    )
    .await?;
    let anomaly_count = query(
        &state,
        tenant,
        Bound::with(|q| {
            format!(
                "SELECT CAST(count(*) AS BIGINT) AS n FROM anomalies WHERE {}",
                between(q, "window_start", since, until)
            )
        }),
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
pub(super) fn summary_text(facts: &Value) -> String {
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
