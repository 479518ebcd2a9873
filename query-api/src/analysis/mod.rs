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
//!
//! Layout: this file holds what the three share (ranges, queries);
//! `summary.rs`, `threat.rs` (the risk score) and `recommendations.rs`
//! hold one endpoint each, `llm.rs` the optional narrator.

mod llm;
mod recommendations;
mod summary;
#[cfg(test)]
mod tests;
mod threat;

pub use llm::LlmConfig;
pub use recommendations::recommendations;
pub use summary::summary;
pub use threat::threat_analysis;

use schemas::TenantId;
use schemas::time::DAY_MS;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::listing::{rfc3339_ms, to_json_rows};
use crate::sql::Bound;
use crate::state::AppState;

/// Messages mined per range at most (the newest are kept): bounded work
/// per call whatever the range.
const MAX_MESSAGES: usize = 200_000;
const DEFAULT_RANGE_MS: i64 = DAY_MS;
const MAX_RANGE_MS: i64 = 90 * DAY_MS;

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

async fn query(state: &AppState, tenant: &TenantId, query: Bound) -> Result<Vec<Value>> {
    to_json_rows(&state.sql.execute_bound(tenant, &query).await?.batches)
}

/// Rows read into `T` (by column name).
async fn query_as<T: serde::de::DeserializeOwned>(
    state: &AppState,
    tenant: &TenantId,
    q: Bound,
) -> Result<Vec<T>> {
    query(state, tenant, q)
        .await?
        .into_iter()
        .map(|row| {
            serde_json::from_value(row)
                .map_err(|e| ApiError::Internal(format!("reading an analysis row: {e}")))
        })
        .collect()
}

/// `column` (a timestamp) in `[since, until)`, both bound.
fn between(q: &mut Bound, column: &str, since: i64, until: i64) -> String {
    let (since, until) = (q.bind(since), q.bind(until));
    format!("CAST({column} AS BIGINT) >= {since} AND CAST({column} AS BIGINT) < {until}")
}

fn ts_between(q: &mut Bound, since: i64, until: i64) -> String {
    between(q, "ts", since, until)
}
