//! The tenant session: the caller's tables and nothing else.

use std::any::Any;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
    MemorySchemaProvider, SchemaProvider, TableProvider,
};
use datafusion::config::{ConfigEntry, ConfigExtension, ExtensionOptions, TableParquetOptions};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use pipeline::Lake;
use schemas::{RecordKind, TenantId, schema};

use super::SqlConfig;
use super::prune::DatePartitioned;
use crate::error::ApiError;

/// Everything of a tenant session but its tables and its query's runtime,
/// made once per engine: building DataFusion's state (its ~400 functions,
/// then wrapping each scalar one, `functions.rs`) and dropping it again
/// took a quarter of the CPU of a small query (`SELECT 1` profiled over
/// 400 queries: 25 % building, 9 % dropping). A query's session is a
/// copy of this one with the caller's tables and its own runtime.
pub struct SessionTemplate {
    state: SessionState,
    /// What every tenant's tables of a kind share, made once too.
    kinds: Vec<KindTables>,
}

/// How a record kind's table is read, whoever's it is.
struct KindTables {
    kind: RecordKind,
    /// With string and binary columns as views ([`view_schema`]).
    schema: SchemaRef,
    /// Column 1 of every kind is `ts`, whose UTC day names the partition.
    time_column: String,
    /// Whole columns decoded.
    scans: ListingOptions,
    /// Filters evaluated while decoding (`lookup.rs`), over the same files.
    lookups: ListingOptions,
}

impl KindTables {
    fn new(kind: RecordKind) -> Self {
        let stored = schema::schema(kind);
        let options = |format: ParquetFormat| {
            ListingOptions::new(Arc::new(format))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![("date".to_string(), DataType::Date32)])
        };
        let mut lookup_options = TableParquetOptions::default();
        lookup_options.global.pushdown_filters = true;
        lookup_options.global.reorder_filters = true;
        Self {
            kind,
            schema: view_schema(&stored),
            time_column: stored.field(1).name().clone(),
            scans: options(ParquetFormat::default()),
            lookups: options(ParquetFormat::default().with_options(lookup_options)),
        }
    }
}

/// The query's runtime (its memory pool, spill budget and the engine's
/// caches), carried in the session's options to where DataFusion gives
/// no other way in: scalar functions see only the options
/// ([`super::functions`] bounds their output by this pool) and the
/// template's state keeps the runtime it was built with, which plans but
/// never executes ([`query_runtime`]). Shared, not copied, on purpose:
/// the pool is what the query's operators account against. It has no
/// settable entries (and tenant sessions refuse `SET`).
#[derive(Debug, Clone)]
pub struct QueryRuntime(pub Arc<RuntimeEnv>);

impl ConfigExtension for QueryRuntime {
    const PREFIX: &'static str = "securenet_query_runtime";
}

impl ExtensionOptions for QueryRuntime {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, _value: &str) -> DfResult<()> {
        Err(DataFusionError::Configuration(format!(
            "{}.{key} cannot be set",
            Self::PREFIX
        )))
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        Vec::new()
    }
}

/// The runtime a session's query executes on: the one the session was
/// made for, else the state's own.
pub fn query_runtime(state: &SessionState) -> Arc<RuntimeEnv> {
    match state.config_options().extensions.get::<QueryRuntime>() {
        Some(QueryRuntime(runtime)) => Arc::clone(runtime),
        None => Arc::clone(state.runtime_env()),
    }
}

impl SessionTemplate {
    /// `planning`: the runtime plans are made on (the lake's store and the
    /// engine's caches; nothing executes on it).
    pub fn new(config: &SqlConfig, planning: Arc<RuntimeEnv>) -> DfResult<Self> {
        let mut session_config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(config.target_partitions.max(1))
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false);
        // Join sides are chosen from estimates that carry through joins
        // (DataFusion's statistics registry). Without it a join estimates its
        // output as left × right ÷ the larger side's rows (Parquet records no
        // distinct counts) — for a fact table joined to a dimension, the
        // dimension's size — and that output stays the next join's build side
        // whatever it holds: `logs ⋈ devices ⋈ findings` hashed every
        // matching log row instead of the few hundred vulnerable hosts
        // (docs/benchmarks.md, analyst SQL).
        session_config
            .options_mut()
            .optimizer
            .use_statistics_registry = true;
        // Rows whose join key is null can match nothing in an inner join, yet
        // the hash join hashes and looks each one up: with 44 % of the log
        // rows carrying no `source_ip`, dropping them before the join made
        // the two analyst joins of benches/sql.sh 0.77–0.79× their time.
        // DataFusion filters only the sides whose rows may be dropped (both
        // of an inner join, the non-preserved side of an outer one).
        session_config.options_mut().optimizer.filter_null_join_keys = true;
        let mut state = SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(planning)
            .with_default_features()
            // After DataFusion's own rules: it replaces the partial aggregations
            // they planned.
            .with_physical_optimizer_rule(Arc::new(super::view_count::CountByView))
            .with_physical_optimizer_rule(Arc::new(super::nested_agg::NestedAggregationInOnePass))
            .with_optimizer_rule(Arc::new(super::distinct::MixedDistinctToGroupBy))
            .with_optimizer_rule(Arc::new(super::eager::EagerAggregation))
            .build();
        super::functions::install(&mut state, config.smallest_memory_limit())?;
        let kinds = RecordKind::ALL.into_iter().map(KindTables::new).collect();
        Ok(Self { state, kinds })
    }

    /// A session in which only `tenant`'s tables exist, executing on
    /// `runtime` (the query's memory pool and spill budget), reading the
    /// lake through the planning runtime's store (the lake's, or the
    /// engine's cache of it).
    pub fn session(
        &self,
        lake: &Lake,
        tenant: &TenantId,
        runtime: Arc<RuntimeEnv>,
    ) -> DfResult<SessionState> {
        let mut state = self.state.clone();
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(QueryRuntime(runtime));
        // The query's start (`now()`) and its options for planning.
        state.mark_start_execution();
        let statistics = state.runtime_env().cache_manager.get_file_statistic_cache();
        let tables = MemorySchemaProvider::new();
        for k in &self.kinds {
            let table_url = ListingTableUrl::parse(lake.table_url(k.kind, tenant))?;
            let listing = |options: &ListingOptions| -> DfResult<Arc<dyn TableProvider>> {
                let table_config = ListingTableConfig::new(table_url.clone())
                    .with_listing_options(options.clone())
                    .with_schema(Arc::clone(&k.schema));
                Ok(Arc::new(
                    ListingTable::try_new(table_config)?.with_cache(statistics.clone()),
                ))
            };
            tables.register_table(
                k.kind.as_str().to_string(),
                Arc::new(DatePartitioned::new(
                    listing(&k.scans)?,
                    listing(&k.lookups)?,
                    k.time_column.clone(),
                )),
            )?;
        }
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(SCHEMA, Arc::new(tables))?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        state.register_catalog_list(Arc::new(catalogs));
        Ok(state)
    }
}

/// The only catalog and schema of a tenant session.
const CATALOG: &str = "securenet";
const SCHEMA: &str = "tenant";

/// The table schema with string and binary columns as views: the Parquet
/// reader then decodes them without copying each value (2–3× faster scans
/// of text columns on 10M rows). Results are cast back to the stored types
/// ([`plain_types`]), so clients never see view types.
fn view_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8 => DataType::Utf8View,
                DataType::Binary => DataType::BinaryView,
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The plain type of a view type (`Utf8View` → `Utf8`, `BinaryView` →
/// `Binary`); `None` for the others.
fn plain(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

/// `schema` with its top-level view columns as plain types: what
/// [`plain_types`] turns results into.
pub fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| plain(f.data_type()).is_some())
    {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = plain(f.data_type()).unwrap_or_else(|| f.data_type().clone());
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Casts view columns (`Utf8View`, `BinaryView`) of query results back to
/// `Utf8` / `Binary`, top-level columns only.
pub fn plain_types(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
    let out_schema = plain_schema(&schema);
    if Arc::ptr_eq(&out_schema, &schema) {
        return Ok((schema, batches));
    }
    let internal = |e: arrow::error::ArrowError| ApiError::Internal(e.to_string());
    let batches = batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(out_schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c.clone())
                    } else {
                        arrow::compute::cast(c, f.data_type()).map_err(internal)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(out_schema.clone(), columns).map_err(internal)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out_schema, batches))
}

/// Parses `sql`, refuses anything but a query (or EXPLAIN of one), and
/// plans it with DDL, DML and statements disabled as a second line of
/// defence; `params` replace its placeholders.
pub async fn plan_read_only(
    state: SessionState,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<DataFrame, ApiError> {
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(ApiError::from_datafusion)?;
    ensure_read_only(&statement)?;
    super::guard::check_statement(&statement)?;
    let mut plan = state
        .statement_to_plan(statement)
        .await
        .map_err(ApiError::from_datafusion)?;
    if !params.is_empty() {
        plan = plan
            .with_param_values(params)
            .map_err(ApiError::from_datafusion)?;
    }
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| {
            ApiError::Forbidden(format!(
                "only read-only queries are allowed: {}",
                e.strip_backtrace()
            ))
        })?;
    Ok(DataFrame::new(state, plan))
}

fn ensure_read_only(statement: &DfStatement) -> Result<(), ApiError> {
    let refuse = |what: &str| {
        Err(ApiError::Forbidden(format!(
            "{what} is not allowed: tenant sessions are read-only; use SELECT over your tables (logs, devices, scans, findings, anomalies, usage, api_requests)"
        )))
    };
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) => Ok(()),
            Statement::Explain { statement, .. } => match statement.as_ref() {
                Statement::Query(_) => Ok(()),
                _ => refuse("EXPLAIN of a non-query"),
            },
            other => refuse(statement_kind(other)),
        },
        DfStatement::Explain(e) => ensure_read_only(&e.statement),
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DfStatement::CopyTo(_) => refuse("COPY"),
        DfStatement::Reset(_) => refuse("RESET"),
    }
}

fn statement_kind(s: &Statement) -> &'static str {
    match s {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::Drop { .. } => "DROP",
        Statement::Set(_) => "SET",
        Statement::ShowTables { .. } | Statement::ShowColumns { .. } => "SHOW",
        _ => "this statement",
    }
}

/// EXPLAIN output names files by their path in the store; show them
/// relative to the lake root so no server path reaches the caller.
pub fn redact_paths(batches: Vec<RecordBatch>, root: &str) -> Result<Vec<RecordBatch>, ApiError> {
    use arrow::array::{Array, AsArray, StringArray};
    let prefixes = [format!("/{root}/"), format!("{root}/")];
    let redact = |s: &str| {
        let mut out = s.to_string();
        for p in &prefixes {
            out = out.replace(p.as_str(), "");
        }
        out
    };
    batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .map(|c| -> Result<arrow::array::ArrayRef, ApiError> {
                    let text = match c.data_type() {
                        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                            arrow::compute::cast(c, &DataType::Utf8)
                                .map_err(|e| ApiError::Internal(e.to_string()))?
                        }
                        _ => return Ok(c.clone()),
                    };
                    let text = text.as_string::<i32>();
                    let redacted: StringArray = (0..text.len())
                        .map(|i| (!text.is_null(i)).then(|| redact(text.value(i))))
                        .collect();
                    arrow::compute::cast(&redacted, c.data_type())
                        .map_err(|e| ApiError::Internal(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(b.schema(), columns).map_err(|e| ApiError::Internal(e.to_string()))
        })
        .collect()
}
