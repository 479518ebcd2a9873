//! `POST /api/sql`: analyst SQL over the caller's own tables.
//!
//! - `session.rs`: the tenant session — only the caller's tables exist in
//!   it, and only read-only queries are planned.
//! - `format.rs`: results as JSON, CSV or an Arrow IPC stream.
//!
//! Tenancy is enforced by construction, not by filtering: the session has
//! one listing table per record kind rooted at
//! `<kind>/tenant_id=<caller>/`, no catalog of other tenants, no URL tables,
//! no information_schema, and DDL, DML, COPY and SET are refused before
//! planning. Queries run on a dedicated runtime (not axum's) with a memory
//! pool and a deadline per query.

pub mod format;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use pipeline::Lake;
use schemas::TenantId;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub use format::OutputFormat;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// Limits of analyst queries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Wall-clock limit per query, planning included.
    pub timeout_ms: u64,
    /// Memory pool per query; operators that exceed it fail the query.
    pub memory_limit_bytes: usize,
    /// Rows returned at most; more are cut and the answer says `truncated`.
    pub max_result_rows: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Queries executing at once; later ones wait.
    pub max_concurrent_queries: usize,
    /// DataFusion partitions per query (parallelism).
    pub target_partitions: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            memory_limit_bytes: 512 << 20,
            max_result_rows: 100_000,
            max_body_bytes: 1 << 20,
            max_concurrent_queries: 4,
            target_partitions: 2,
        }
    }
}

/// Runs tenant queries on its own runtime.
pub struct SqlEngine {
    config: SqlConfig,
    lake: Lake,
    runtime: tokio::runtime::Handle,
    slots: Semaphore,
}

/// A finished query.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub truncated: bool,
    pub elapsed: Duration,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

impl SqlEngine {
    /// `runtime` should be a runtime dedicated to CPU-heavy query work.
    pub fn new(config: SqlConfig, lake: Lake, runtime: tokio::runtime::Handle) -> Self {
        let slots = Semaphore::new(config.max_concurrent_queries.max(1));
        Self {
            config,
            lake,
            runtime,
            slots,
        }
    }

    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Plans and runs `sql` for `tenant` within the configured limits.
    pub async fn execute(&self, tenant: &TenantId, sql: &str) -> Result<QueryResult> {
        let started = Instant::now();
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("query engine is shutting down".into()))?;
        let ctx = session::tenant_session(&self.config, &self.lake, tenant)
            .map_err(ApiError::from_datafusion)?;
        let sql = sql.to_string();
        let limit = self.config.max_result_rows;
        let mut task = self.runtime.spawn(async move {
            let df = session::plan_read_only(&ctx, &sql).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            // One row past the limit tells whether the result was cut.
            // EXPLAIN must stay the plan's root (and its output is small).
            let explain = matches!(
                df.logical_plan(),
                datafusion::logical_expr::LogicalPlan::Explain(_)
                    | datafusion::logical_expr::LogicalPlan::Analyze(_)
            );
            let df = if explain {
                df
            } else {
                df.limit(0, Some(limit + 1))
                    .map_err(ApiError::from_datafusion)?
            };
            let batches = df.collect().await.map_err(ApiError::from_datafusion)?;
            Ok::<_, ApiError>((schema, batches))
        });
        let deadline = Duration::from_millis(self.config.timeout_ms);
        let (schema, batches) = match tokio::time::timeout(deadline, &mut task).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => return Err(ApiError::Internal(format!("query task failed: {join}"))),
            Err(_) => {
                // Dropping the plan's streams cancels the work.
                task.abort();
                return Err(ApiError::QueryTimeout {
                    limit_ms: self.config.timeout_ms,
                });
            }
        };
        let (batches, truncated) = cut(batches, limit);
        let (schema, batches) = session::plain_types(schema, batches)?;
        Ok(QueryResult {
            schema,
            batches,
            truncated,
            elapsed: started.elapsed(),
        })
    }
}

/// Keeps the first `limit` rows.
fn cut(batches: Vec<RecordBatch>, limit: usize) -> (Vec<RecordBatch>, bool) {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total <= limit {
        return (batches, false);
    }
    let mut left = limit;
    let mut out = Vec::new();
    for b in batches {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        out.push(b.slice(0, take));
        left -= take;
    }
    (out, true)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FormatParam {
    format: Option<String>,
}

/// `POST /api/sql` with `{"sql": "...", "format": "json|csv|arrow"}`, or the
/// SQL text itself as `text/plain` / `application/sql`. The format may also
/// come from `?format=` or the Accept header.
pub async fn handler(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(param): Query<FormatParam>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let body = body.map_err(|e| ApiError::from_body(e, state.sql.config().max_body_bytes))?;
    let media = crate::error::media_type(&headers);
    let (sql, body_format) = match media.as_str() {
        "application/json" => {
            let req: SqlRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::BadRequest(format!("body must be {{\"sql\": \"...\"}}: {e}"))
            })?;
            (req.sql, req.format)
        }
        "text/plain" | "application/sql" => {
            let sql = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::BadRequest("SQL text is not valid UTF-8".into()))?;
            (sql, None)
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "unsupported content type {other:?}: send application/json ({{\"sql\": \"...\"}}) or text/plain"
            )));
        }
    };
    if sql.trim().is_empty() {
        return Err(ApiError::BadRequest("sql is empty".into()));
    }
    let format = OutputFormat::negotiate(body_format.or(param.format).as_deref(), &headers)?;
    let result = state.sql.execute(&caller.tenant, &sql).await?;
    format::respond(format, result)
}

#[cfg(test)]
mod tests;
