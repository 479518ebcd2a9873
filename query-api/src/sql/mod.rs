//! `POST /api/sql`: analyst SQL over the caller's own tables.
//!
//! - `session.rs`: the tenant session — only the caller's tables exist in
//!   it, and only read-only queries are planned.
//! - `guard.rs`: what keeps a query from hurting other tenants — bounded
//!   expression depth (planning recurses), a deadline and cancellation
//!   checked at every batch of every operator, batches checked against the
//!   memory pool.
//! - `functions.rs`: scalar functions (and `||`) bounded by the pool.
//! - `format.rs`: results as JSON, CSV or an Arrow IPC stream, bounded.
//! - `prune.rs`: `date=` partitions pruned from predicates on `ts`.
//!
//! Tenancy is enforced by construction, not by filtering: the session has
//! one listing table per record kind rooted at
//! `<kind>/tenant_id=<caller>/`, no catalog of other tenants, no URL tables,
//! no information_schema, and DDL, DML, COPY and SET are refused before
//! planning. Queries run on their organization's lane (`lanes.rs`: threads
//! of its own, not axum's, with a stack sized for the deepest expression
//! admitted; the kernel shares the cores between organizations), each with
//! its own memory pool, a deadline enforced inside execution, and a slot
//! from [`FairSlots`]: one organization holds at most
//! `max_concurrent_queries_per_org` of the `max_concurrent_queries` slots,
//! and no more than an even split of them while others wait. A slot is
//! released when the query's work ends, not when its request does.

mod dict_scan;
mod distinct;
mod eager;
pub mod format;
pub mod functions;
pub mod guard;
mod imatch;
mod lanes;
mod lookup;
mod nested_agg;
mod object_cache;
mod prune;
mod session;
mod view_count;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use datafusion::execution::cache::TableScopedPath;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::cache::cache_manager::{
    CachedFileMetadata, CachedFileMetadataEntry, FileMetadataCache, FileStatisticsCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use pipeline::Lake;
use schemas::TenantId;
use schemas::plans::Plan;
use serde::{Deserialize, Serialize};

pub use format::OutputFormat;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::fair::{FairSlots, Refused};
use crate::state::AppState;
use guard::{CancelOnDrop, QueryGuard, StopReason};
use lanes::Lanes;

/// Limits of analyst queries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Wall-clock limit per query, planning included; waiting for a slot
    /// is bounded by the same amount.
    pub timeout_ms: u64,
    /// Memory pool per query; operators, scalar functions and the
    /// collected result that exceed it fail the query.
    pub memory_limit_bytes: usize,
    /// Disk a query's spill files may take at most (0: no spilling). Sorts
    /// and aggregations over the pool spill into a directory of their own
    /// under `$TMPDIR` (created at the first spill, removed when the query
    /// ends) before they give up. (Most such queries still fail: the pool
    /// is full when they spill, and the next batch any operator accounts
    /// is refused — docs/decisions.md.)
    pub max_spill_bytes: u64,
    /// Rows returned at most; more are cut and the answer says `truncated`.
    pub max_result_rows: usize,
    /// Result bytes returned at most (in memory and encoded); more rows are
    /// cut and the answer says `truncated`.
    pub max_result_bytes: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Longest accepted SQL text (ClickHouse's `max_query_size` default).
    pub max_sql_bytes: usize,
    /// Queries executing at once, all organizations together.
    pub max_concurrent_queries: usize,
    /// Queries one organization may execute at once.
    pub max_concurrent_queries_per_org: usize,
    /// Queries one organization may have waiting for a slot; more get 429.
    pub max_queued_queries_per_org: usize,
    /// DataFusion partitions per query (parallelism), and the threads of
    /// each organization's lane.
    pub target_partitions: usize,
    /// Memory for lake objects kept between queries (0: none). Objects of
    /// at most `object_cache_max_object_bytes` are read whole once and then
    /// served from memory (`object_cache.rs`): a request per object and
    /// query saved on S3, a file open and read on a local lake.
    pub object_cache_bytes: usize,
    /// Largest object kept in that memory; larger ones are read by range
    /// at every query.
    pub object_cache_max_object_bytes: u64,
    /// What differs by plan (`[api.sql.plans.<plan>]`): each value given
    /// replaces the one above for organizations on that plan, read at every
    /// query, so a plan change applies to the next query.
    pub plans: SqlPlans,
}

/// `[api.sql.plans]`: the SQL limits of each plan. A plan's table, when
/// given, replaces that plan's defaults whole; what it leaves out follows
/// `[api.sql]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlPlans {
    pub starter: SqlPlanLimits,
    pub professional: SqlPlanLimits,
    pub business: SqlPlanLimits,
    pub enterprise: SqlPlanLimits,
    pub msp: SqlPlanLimits,
}

impl Default for SqlPlans {
    /// Starter runs one query at a time; enterprise and MSP, whose
    /// analysts and BI tools pull the most, may fetch up to a million rows
    /// (still within `max_result_bytes`); the rest follows `[api.sql]`. No
    /// default raises memory or concurrency above `[api.sql]`, which the
    /// operator sized for the machine: an organization allowed more than
    /// half of `max_concurrent_queries` can hold every slot while alone,
    /// and another's first query then waits for one to free.
    fn default() -> Self {
        let large = SqlPlanLimits {
            max_result_rows: Some(1_000_000),
            ..SqlPlanLimits::default()
        };
        Self {
            starter: SqlPlanLimits {
                max_concurrent_queries_per_org: Some(1),
                ..SqlPlanLimits::default()
            },
            professional: SqlPlanLimits::default(),
            business: SqlPlanLimits::default(),
            enterprise: large.clone(),
            msp: large,
        }
    }
}

impl SqlPlans {
    fn of(&self, plan: Plan) -> &SqlPlanLimits {
        match plan {
            Plan::Starter => &self.starter,
            Plan::Professional => &self.professional,
            Plan::Business => &self.business,
            Plan::Enterprise => &self.enterprise,
            Plan::Msp => &self.msp,
        }
    }
}

/// One plan's SQL limits; unset values follow `[api.sql]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlPlanLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries_per_org: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_result_rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The limits one query runs under: `[api.sql]` with its organization's
/// plan's values in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent_queries_per_org: usize,
    pub memory_limit_bytes: usize,
    pub max_result_rows: usize,
    pub timeout_ms: u64,
}

impl SqlConfig {
    /// The smallest memory limit a query may run under, whatever its
    /// organization's plan.
    pub fn smallest_memory_limit(&self) -> usize {
        Plan::ALL
            .into_iter()
            .map(|p| self.limits(Some(p)).memory_limit_bytes)
            .fold(self.memory_limit_bytes, usize::min)
    }

    /// The limits of a query by an organization on `plan` (`None`: an
    /// operator's query, or an organization unknown to this engine).
    pub fn limits(&self, plan: Option<Plan>) -> Limits {
        let own = plan.map(|p| self.plans.of(p).clone()).unwrap_or_default();
        Limits {
            max_concurrent_queries_per_org: own
                .max_concurrent_queries_per_org
                .unwrap_or(self.max_concurrent_queries_per_org),
            memory_limit_bytes: own.memory_limit_bytes.unwrap_or(self.memory_limit_bytes),
            max_result_rows: own.max_result_rows.unwrap_or(self.max_result_rows),
            timeout_ms: own.timeout_ms.unwrap_or(self.timeout_ms),
        }
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            memory_limit_bytes: 512 << 20,
            max_spill_bytes: 2 << 30,
            max_result_rows: 100_000,
            max_result_bytes: 64 << 20,
            max_body_bytes: 1 << 20,
            max_sql_bytes: 256 << 10,
            max_concurrent_queries: 4,
            max_concurrent_queries_per_org: 2,
            max_queued_queries_per_org: 16,
            target_partitions: 2,
            object_cache_bytes: 256 << 20,
            object_cache_max_object_bytes: 8 << 20,
            plans: SqlPlans::default(),
        }
    }
}

impl SqlConfig {
    /// Settings that cannot work together, named.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // An object over half the budget would push every other one out
        // (and one over the whole budget would be fetched whole at every
        // read and never kept).
        if self.object_cache_bytes > 0
            && self.object_cache_max_object_bytes > self.object_cache_bytes as u64 / 2
        {
            return Err(format!(
                "api.sql.object_cache_max_object_bytes ({}) must be at most half of \
                 api.sql.object_cache_bytes ({}), or set object_cache_bytes = 0",
                self.object_cache_max_object_bytes, self.object_cache_bytes
            ));
        }
        Ok(())
    }
}

/// A query's text, with `$1`, `$2`… placeholders, and the values bound to
/// them. The text is built only from the API's own column names and
/// placeholders; every value a caller sent is bound.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub sql: String,
    pub params: Vec<ScalarValue>,
}

impl Bound {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// The query `build` writes, binding its values as it goes:
    /// `Bound::with(|q| format!("… WHERE entity = {}", q.bind(e)))`.
    pub fn with(build: impl FnOnce(&mut Bound) -> String) -> Self {
        let mut query = Self::default();
        query.sql = build(&mut query);
        query
    }

    /// Binds `value` and returns its placeholder, for the query text.
    pub fn bind(&mut self, value: impl Into<ScalarValue>) -> String {
        self.params.push(value.into());
        format!("${}", self.params.len())
    }
}

/// Runs tenant queries, each organization's on its own lane.
pub struct SqlEngine {
    config: SqlConfig,
    lake: Lake,
    lanes: Arc<Lanes>,
    slots: Arc<FairSlots>,
    /// Where an organization's plan is looked up, at every query; without
    /// it (an operator's command) `[api.sql]` applies as it is.
    store: Option<Arc<control::MetaStore>>,
    /// Small lake objects kept between queries (`object_cache.rs`); none
    /// when `object_cache_bytes` is 0.
    object_cache: Option<Arc<object_cache::ObjectCache>>,
    /// Parquet footers (and page indexes) read by earlier queries, shared
    /// by every session: lake objects are written whole and never changed,
    /// so an entry (checked against the object's size and time) stays
    /// right; keyed by the full path, so a session finds only entries of
    /// objects its own listing returned. Saves a request per object and
    /// query on object stores.
    metadata_cache: Arc<FileMetadataCache>,
    /// Each file's statistics as DataFusion plans with them (row counts,
    /// min/max/nulls per column, from the footer above), shared the same
    /// way: without it every query converted them again for every file it
    /// listed. An entry is used only for the object it was made from (path,
    /// size and time checked) and the table schema it was made under.
    /// Listings are not cached: a query sees every object written before it
    /// started.
    statistics_cache: Arc<FileStatisticsCache>,
    /// Where every runtime of the engine finds the lake's store (or the
    /// object cache over it): planning lists through it, execution reads.
    object_stores: Arc<dyn ObjectStoreRegistry>,
    /// Tenant sessions are copies of this one (`session.rs`).
    template: session::SessionTemplate,
}

/// Memory for [`SqlEngine`]'s shared Parquet metadata cache (least
/// recently used entries go first).
const METADATA_CACHE_BYTES: usize = 64 << 20;
/// Memory for [`SqlEngine`]'s shared per-file statistics cache.
const STATISTICS_CACHE_BYTES: usize = 32 << 20;

/// How a result handed on by [`SqlEngine::stream_bound`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every row was handed on.
    Complete,
    /// The receiver went away; the query stopped.
    Abandoned,
    /// The result was over `max_rows` rows (the organization's limit) or
    /// `api.sql.max_result_bytes`; the query stopped there.
    OverLimit { max_rows: usize },
}

/// A finished query.
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub truncated: bool,
    /// The row limit it ran under (its organization's plan's).
    pub max_rows: usize,
    pub elapsed: Duration,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

impl SqlEngine {
    pub fn new(config: SqlConfig, lake: Lake) -> Result<Self> {
        let slots = FairSlots::new(
            config.max_concurrent_queries,
            config.max_concurrent_queries_per_org,
            config.max_queued_queries_per_org,
        );
        // Every lane busy at once has a slot; as many idle ones kept.
        let lanes = Lanes::new(config.target_partitions, config.max_concurrent_queries);
        let object_cache = (config.object_cache_bytes > 0).then(|| {
            Arc::new(object_cache::ObjectCache::new(
                lake.store(),
                config.object_cache_bytes,
                config.object_cache_max_object_bytes,
            ))
        });
        let objects: Arc<dyn object_store::ObjectStore> = match &object_cache {
            Some(cache) => Arc::clone(cache) as Arc<dyn object_store::ObjectStore>,
            None => lake.store(),
        };
        let url = url::Url::parse(lake.store_url())
            .map_err(|e| ApiError::Internal(format!("the lake's URL: {e}")))?;
        let object_stores: Arc<dyn ObjectStoreRegistry> =
            Arc::new(DefaultObjectStoreRegistry::new());
        object_stores.register_store(&url, objects);
        let metadata_cache: Arc<FileMetadataCache> = Arc::new(
            DefaultCache::<object_store::path::Path, CachedFileMetadataEntry>::new(
                METADATA_CACHE_BYTES,
            )
            .with_name("securenet parquet metadata"),
        );
        let statistics_cache: Arc<FileStatisticsCache> = Arc::new(
            DefaultCache::<TableScopedPath, CachedFileMetadata>::new(STATISTICS_CACHE_BYTES)
                .with_name("securenet file statistics"),
        );
        // Plans are made on a runtime of their own (nothing executes on it).
        let planning = runtime_env(
            &config,
            config.memory_limit_bytes,
            &object_stores,
            &metadata_cache,
            &statistics_cache,
        )
        .map_err(ApiError::from_datafusion)?;
        let template =
            session::SessionTemplate::new(&config, planning).map_err(ApiError::from_datafusion)?;
        Ok(Self {
            config,
            lake,
            object_cache,
            lanes,
            slots,
            store: None,
            metadata_cache,
            statistics_cache,
            object_stores,
            template,
        })
    }

    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Shows the object cache's counters on `registry` (`/metrics`); one
    /// engine a registry.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        match &self.object_cache {
            Some(cache) => cache.register(registry),
            None => Ok(()),
        }
    }

    /// Applies each organization's plan's limits (`[api.sql.plans]`).
    pub fn with_plans_from(mut self, store: Arc<control::MetaStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// `tenant`'s session for a query that may use `memory_limit_bytes`.
    fn session(&self, tenant: &TenantId, memory_limit_bytes: usize) -> Result<SessionState> {
        runtime_env(
            &self.config,
            memory_limit_bytes,
            &self.object_stores,
            &self.metadata_cache,
            &self.statistics_cache,
        )
        .and_then(|runtime| self.template.session(&self.lake, tenant, runtime))
        .map_err(ApiError::from_datafusion)
    }

    /// The limits `tenant`'s next query runs under.
    pub async fn limits(&self, tenant: &TenantId) -> Result<Limits> {
        let plan = match &self.store {
            Some(store) => store.organization(tenant).await?.map(|o| o.plan),
            None => None,
        };
        Ok(self.config.limits(plan))
    }

    fn lane(&self, tenant: &TenantId) -> Result<lanes::InLane> {
        self.lanes.enter(tenant).map_err(|e| {
            ApiError::TooBusy(format!("no thread could be started for the query: {e}"))
        })
    }

    /// Queries of `tenant` executing now.
    pub fn running(&self, tenant: &TenantId) -> usize {
        self.slots.running(tenant)
    }

    /// The schema `query` answers with (as [`Self::execute_bound`] returns
    /// it) and the types of its `$n` placeholders, planned but not run:
    /// what Flight SQL announces before a client fetches. Planning is
    /// bounded like a query's (text size, expression depth, the time limit)
    /// but takes no query slot: it reads no data.
    pub async fn describe(
        &self,
        tenant: &TenantId,
        query: &Bound,
    ) -> Result<(SchemaRef, SchemaRef)> {
        if query.sql.len() > self.config.max_sql_bytes {
            return Err(ApiError::BadRequest(format!(
                "the query text is {} bytes, over the limit of {} (api.sql.max_sql_bytes)",
                query.sql.len(),
                self.config.max_sql_bytes
            )));
        }
        let state = self.session(tenant, self.config.memory_limit_bytes)?;
        let (sql, params) = (query.sql.clone(), query.params.clone());
        let lane = self.lane(tenant)?;
        let task = lane.handle().clone().spawn(async move {
            let _lane = lane;
            let df = session::plan_read_only(state, &sql, params).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut placeholders: Vec<(usize, String, Option<arrow::datatypes::DataType>)> = df
                .logical_plan()
                .get_parameter_types()
                .map_err(ApiError::from_datafusion)?
                .into_iter()
                .map(|(name, t)| {
                    let n = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                    (n, name, t)
                })
                .collect();
            placeholders.sort();
            let parameters = arrow::datatypes::Schema::new(
                placeholders
                    .into_iter()
                    .map(|(_, name, t)| {
                        arrow::datatypes::Field::new(
                            name,
                            t.unwrap_or(arrow::datatypes::DataType::Null),
                            true,
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            Ok::<_, ApiError>((schema, Arc::new(parameters)))
        });
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let (schema, parameters) = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(planned)) => planned?,
            Ok(Err(join)) => return Err(ApiError::Internal(format!("planning failed: {join}"))),
            Err(_) => {
                return Err(ApiError::QueryTimeout {
                    limit_ms: self.config.timeout_ms,
                });
            }
        };
        Ok((
            session::plain_schema(&schema),
            session::plain_schema(&parameters),
        ))
    }

    /// Plans and runs `sql` for `tenant` within the configured limits.
    /// Dropping the returned future cancels the query.
    pub async fn execute(&self, tenant: &TenantId, sql: &str) -> Result<QueryResult> {
        self.execute_bound(tenant, &Bound::new(sql)).await
    }

    /// [`Self::execute`] with values bound to the query's `$1`, `$2`…
    /// placeholders: the API's own queries (listings, analysis) never put
    /// a caller's value into SQL text.
    pub async fn execute_bound(&self, tenant: &TenantId, query: &Bound) -> Result<QueryResult> {
        let started = Instant::now();
        let max_bytes = self.config.max_result_bytes;
        let root = self.lake.root().to_string();
        let ((schema, batches, truncated), limits) = self
            .run_in_lane(tenant, query, move |df, guard, pool, limits| async move {
                let max_rows = limits.max_result_rows;
                let schema = Arc::new(df.schema().as_arrow().clone());
                // One row past the limit tells whether the result was cut.
                // EXPLAIN must stay the plan's root (and its output is small).
                let explain = matches!(
                    df.logical_plan(),
                    datafusion::logical_expr::LogicalPlan::Explain(_)
                        | datafusion::logical_expr::LogicalPlan::Analyze(_)
                );
                let run = |df: datafusion::prelude::DataFrame| {
                    let (guard, pool) = (guard.clone(), pool.clone());
                    async move {
                        let stream = guarded_stream(df, &guard).await?;
                        collect(stream, max_rows, max_bytes, &pool).await
                    }
                };
                let (mut batches, truncated) = if explain {
                    run(df).await?
                } else {
                    // The limit lets DataFusion stop early (TopK instead of a
                    // full sort). A plan it breaks (DISTINCT over a window
                    // function: "Ordering direction required for DISTINCT with
                    // limit", a DataFusion bug) runs again without it;
                    // `collect` cuts the rows either way.
                    let limited = df
                        .clone()
                        .limit(0, Some(max_rows + 1))
                        .map_err(ApiError::from_datafusion)?;
                    match run(limited).await {
                        Err(ApiError::Internal(_)) if guard.stopped().is_none() => run(df).await?,
                        other => other?,
                    }
                };
                if explain {
                    batches = session::redact_paths(batches, &root)?;
                }
                Ok((schema, batches, truncated))
            })
            .await?;
        let (schema, batches) = session::plain_types(schema, batches)?;
        Ok(QueryResult {
            schema,
            batches,
            truncated,
            max_rows: limits.max_result_rows,
            elapsed: started.elapsed(),
        })
    }

    /// Runs `query` for `tenant` like [`Self::execute_bound`] (same slot,
    /// lane, memory pool and deadline) but hands each result batch to
    /// `visit` instead of collecting it, until the result ends or `visit`
    /// returns `false`: for work over more rows than a result may hold
    /// (a detection rule's backtest). Batches keep DataFusion's types
    /// (string columns may be views).
    pub async fn scan_bound<S, F>(
        &self,
        tenant: &TenantId,
        query: &Bound,
        state: S,
        mut visit: F,
    ) -> Result<S>
    where
        S: Send + 'static,
        F: FnMut(&mut S, RecordBatch) -> Result<bool> + Send + 'static,
    {
        let (state, _) = self
            .run_in_lane(tenant, query, move |df, guard, _, _| async move {
                let mut state = state;
                let mut stream = guarded_stream(df, &guard).await?;
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(ApiError::from_datafusion)?;
                    if batch.num_rows() > 0 && !visit(&mut state, batch)? {
                        break;
                    }
                }
                Ok(state)
            })
            .await?;
        Ok(state)
    }

    /// Runs `query` for `tenant` like [`Self::execute_bound`] (same slot,
    /// lane, memory pool and deadline) but hands the result on as it is
    /// made: its schema to `schema` once planned, then each batch to
    /// `batches`, both with plain string types. A result over the row or
    /// byte limit ends with [`StreamEnd::OverLimit`] after the batches
    /// within them, without the batch that crossed them. The deadline
    /// covers the sending too: a client that reads slowly holds its query
    /// slot until the deadline, no longer; one that goes away (`batches`
    /// dropped) stops the query at its next batch. Nothing is collected, so
    /// the result is bounded by the channel's capacity, not by
    /// `max_result_bytes` held in memory.
    pub async fn stream_bound(
        &self,
        tenant: &TenantId,
        query: &Bound,
        schema: tokio::sync::oneshot::Sender<SchemaRef>,
        batches: tokio::sync::mpsc::Sender<RecordBatch>,
    ) -> Result<StreamEnd> {
        let max_bytes = self.config.max_result_bytes;
        let root = self.lake.root().to_string();
        let (end, _) = self
            .run_in_lane(tenant, query, move |df, guard, pool, limits| async move {
                let max_rows = limits.max_result_rows;
                let raw = Arc::new(df.schema().as_arrow().clone());
                if schema.send(session::plain_schema(&raw)).is_err() {
                    return Ok(StreamEnd::Abandoned);
                }
                let plain = |batch: RecordBatch| {
                    let (_, mut one) = session::plain_types(raw.clone(), vec![batch])?;
                    one.pop()
                        .ok_or_else(|| ApiError::Internal("a batch lost in type conversion".into()))
                };
                if matches!(
                    df.logical_plan(),
                    datafusion::logical_expr::LogicalPlan::Explain(_)
                        | datafusion::logical_expr::LogicalPlan::Analyze(_)
                ) {
                    // A plan, small, and its paths redacted as a whole.
                    let stream = guarded_stream(df, &guard).await?;
                    let (out, truncated) = collect(stream, max_rows, max_bytes, &pool).await?;
                    for batch in session::redact_paths(out, &root)? {
                        if !hand_on(&batches, plain(batch)?, &guard, limits.timeout_ms).await? {
                            return Ok(StreamEnd::Abandoned);
                        }
                    }
                    return Ok(if truncated {
                        StreamEnd::OverLimit { max_rows }
                    } else {
                        StreamEnd::Complete
                    });
                }
                // As in `execute_bound`: the limit lets DataFusion stop early,
                // and a plan it breaks runs again without it — only while
                // nothing has been sent yet.
                let limited = df
                    .clone()
                    .limit(0, Some(max_rows + 1))
                    .map_err(ApiError::from_datafusion)?;
                let (mut rows, mut bytes) = (0usize, 0usize);
                let mut attempts = vec![df, limited];
                while let Some(plan) = attempts.pop() {
                    let retry = !attempts.is_empty();
                    let mut stream = match guarded_stream(plan, &guard).await {
                        Ok(stream) => stream,
                        Err(ApiError::Internal(_)) if retry && guard.stopped().is_none() => {
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let mut broke_early = false;
                    while let Some(batch) = stream.next().await {
                        let batch = match batch.map_err(ApiError::from_datafusion) {
                            Ok(batch) => batch,
                            Err(ApiError::Internal(_))
                                if retry && rows == 0 && guard.stopped().is_none() =>
                            {
                                broke_early = true;
                                break;
                            }
                            Err(e) => return Err(e),
                        };
                        if batch.num_rows() == 0 {
                            continue;
                        }
                        rows += batch.num_rows();
                        bytes += batch.get_array_memory_size();
                        if rows > max_rows || bytes > max_bytes {
                            return Ok(StreamEnd::OverLimit { max_rows });
                        }
                        if !hand_on(&batches, plain(batch)?, &guard, limits.timeout_ms).await? {
                            return Ok(StreamEnd::Abandoned);
                        }
                    }
                    if !broke_early {
                        return Ok(StreamEnd::Complete);
                    }
                }
                Ok(StreamEnd::Complete)
            })
            .await?;
        Ok(end)
    }

    /// Plans `query` in `tenant`'s session on its lane, with a query slot,
    /// its plan's memory pool and deadline, and runs `body` on the planned
    /// frame there. Dropping the returned future cancels the work.
    async fn run_in_lane<T, F, Fut>(
        &self,
        tenant: &TenantId,
        query: &Bound,
        body: F,
    ) -> Result<(T, Limits)>
    where
        T: Send + 'static,
        F: FnOnce(
                datafusion::prelude::DataFrame,
                Arc<QueryGuard>,
                Arc<dyn MemoryPool>,
                Limits,
            ) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        let (sql, params) = (query.sql.as_str(), query.params.clone());
        if sql.len() > self.config.max_sql_bytes {
            return Err(ApiError::BadRequest(format!(
                "the query text is {} bytes, over the limit of {} (api.sql.max_sql_bytes)",
                sql.len(),
                self.config.max_sql_bytes
            )));
        }
        let limits = self.limits(tenant).await?;
        let timeout = Duration::from_millis(limits.timeout_ms);
        let slot = self
            .slots
            .acquire_up_to(tenant, limits.max_concurrent_queries_per_org, timeout)
            .await
            .map_err(|refused| match refused {
                Refused::QueueFull { queued } => ApiError::TooBusy(format!(
                    "this organization already has {queued} queries waiting for a slot; \
                     retry when some have finished"
                )),
                Refused::Timeout { waited } => ApiError::TooBusy(format!(
                    "no query slot became free within {} ms",
                    waited.as_millis()
                )),
            })?;
        let guard = QueryGuard::new(Instant::now() + timeout);
        // The request going away (client disconnect, handler dropped)
        // stops the query at its next batch.
        let _cancel = CancelOnDrop(guard.clone());
        let state = self.session(tenant, limits.memory_limit_bytes)?;
        let sql = sql.to_string();
        let task_guard = guard.clone();
        let lane = self.lane(tenant)?;
        let task_limits = limits;
        let task = lane.handle().clone().spawn(async move {
            // The slot and the lane belong to the work: they come back when
            // this task ends, however the request ended.
            let _slot = slot;
            let _lane = lane;
            let pool = Arc::clone(&session::query_runtime(&state).memory_pool);
            let df = session::plan_read_only(state, &sql, params).await?;
            body(df, task_guard, pool, task_limits).await
        });
        let grace = Duration::from_millis(200);
        let outcome = tokio::time::timeout(timeout + grace, task).await;
        let stopped = |e: ApiError| match guard.stopped() {
            Some(StopReason::TimedOut) => ApiError::QueryTimeout {
                limit_ms: limits.timeout_ms,
            },
            _ => e,
        };
        match outcome {
            Ok(Ok(Ok(result))) => Ok((result, limits)),
            Ok(Ok(Err(e))) => Err(stopped(e)),
            Ok(Err(join)) => Err(ApiError::Internal(format!("query task failed: {join}"))),
            Err(_) => {
                // Planning does not poll: the task notices at its first
                // batch and ends then, releasing its slot.
                guard.cancel();
                Err(ApiError::QueryTimeout {
                    limit_ms: limits.timeout_ms,
                })
            }
        }
    }
}

/// A runtime: a memory pool of `memory_limit_bytes`, the spill budget, the
/// engine's shared Parquet metadata and statistics caches and its stores.
fn runtime_env(
    config: &SqlConfig,
    memory_limit_bytes: usize,
    object_stores: &Arc<dyn ObjectStoreRegistry>,
    metadata_cache: &Arc<FileMetadataCache>,
    statistics_cache: &Arc<FileStatisticsCache>,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    // The OS temporary directory (`$TMPDIR`), created only when a query
    // first spills — not a directory per query made and removed on
    // every query, and nothing written by a role that never spills.
    let disk = match config.max_spill_bytes {
        0 => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        limit => DiskManagerBuilder::default().with_max_temp_directory_size(limit),
    };
    // No listing cache: every query lists the tenant's prefix, so what
    // the sinks wrote a moment ago is in it (see SqlEngine's caches).
    let caches = CacheManagerConfig::default()
        .with_file_metadata_cache(Some(Arc::clone(metadata_cache)))
        .with_metadata_cache_limit(metadata_cache.cache_limit())
        .with_file_statistics_cache(Some(Arc::clone(statistics_cache)))
        .with_file_statistics_cache_limit(statistics_cache.cache_limit())
        .with_list_files_cache_limit(0);
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(memory_limit_bytes)))
        .with_disk_manager_builder(disk)
        .with_cache_manager(caches)
        .with_object_store_registry(Arc::clone(object_stores))
        .build_arc()
}

/// Hands `batch` on within the query's deadline (`false`: the receiver is
/// gone): a receiver that stops taking batches — a client that stopped
/// reading — cannot hold the query and its slot past it.
async fn hand_on(
    batches: &tokio::sync::mpsc::Sender<RecordBatch>,
    batch: RecordBatch,
    guard: &QueryGuard,
    limit_ms: u64,
) -> Result<bool> {
    let deadline = tokio::time::Instant::from_std(guard.deadline());
    match tokio::time::timeout_at(deadline, batches.send(batch)).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => Err(ApiError::QueryTimeout { limit_ms }),
    }
}

/// `df` planned, its plan guarded (deadline, cancellation, memory), and
/// started.
async fn guarded_stream(
    df: datafusion::prelude::DataFrame,
    guard: &Arc<QueryGuard>,
) -> Result<SendableRecordBatchStream> {
    let (state, plan) = df.into_parts();
    let plan = state
        .create_physical_plan(&plan)
        .await
        .map_err(ApiError::from_datafusion)?;
    // The query's own runtime, not the template's. Executing plans look
    // functions up by the handles they hold, never by name: the task
    // needs no copy of the session's function registry.
    let task_ctx = Arc::new(TaskContext::new(
        None,
        state.session_id().to_string(),
        state.config().clone(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        session::query_runtime(&state),
    ));
    let plan = guard::guard_plan(plan, guard).map_err(ApiError::from_datafusion)?;
    datafusion::physical_plan::execute_stream(plan, task_ctx).map_err(ApiError::from_datafusion)
}

/// Collects a result of at most `max_rows` rows and `max_bytes` bytes
/// (the rest is cut: `truncated`), accounting what it holds in the query's
/// memory pool.
async fn collect(
    mut stream: SendableRecordBatchStream,
    max_rows: usize,
    max_bytes: usize,
    pool: &Arc<dyn MemoryPool>,
) -> Result<(Vec<RecordBatch>, bool)> {
    let held = MemoryConsumer::new("query result").register(pool);
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(ApiError::from_datafusion)?;
        if batch.num_rows() == 0 {
            continue;
        }
        let size = batch.get_array_memory_size();
        let mut take = batch.num_rows().min(max_rows.saturating_sub(rows));
        if bytes + size > max_bytes {
            // Rows of this batch that fit in the byte budget, by its
            // average row size.
            let per_row = (size / batch.num_rows()).max(1);
            take = take.min(max_bytes.saturating_sub(bytes) / per_row);
        }
        if take < batch.num_rows() {
            if take > 0 {
                held.try_grow(size).map_err(ApiError::from_datafusion)?;
                out.push(batch.slice(0, take));
            }
            return Ok((out, true));
        }
        held.try_grow(size).map_err(ApiError::from_datafusion)?;
        rows += take;
        bytes += size;
        out.push(batch);
    }
    Ok((out, false))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatParam {
    /// json, csv or arrow (overrides the body's `format` and Accept).
    format: Option<String>,
}

/// `POST /api/sql` with `{"sql": "...", "format": "json|csv|arrow"}`, or the
/// SQL text itself as `text/plain` / `application/sql`. The format may also
/// come from `?format=` or the Accept header.
pub async fn handler(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::extract::QueryParams(param): crate::extract::QueryParams<FormatParam>,
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
    format::respond(format, result, state.sql.config().max_result_bytes)
}

#[cfg(test)]
mod tests;
