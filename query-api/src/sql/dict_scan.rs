//! String columns read as their Parquet dictionaries' keys.
//!
//! A dictionary-encoded column chunk stores each distinct string once and a
//! small integer a row. DataFusion's scan hands every row over as a string
//! (here a 16-byte view), so counting rows by the column — "events per
//! source" — hashes a view a row. Read as `Dictionary(Int32, Utf8)`, the
//! reader hands over the keys as they are stored and one dictionary array
//! shared by every batch of the chunk, and [`super::view_count`] counts rows
//! by key (or by pair of keys, for two columns) in an array: no hashing
//! until the chunk ends, when each distinct key is looked up once.
//!
//! This scan replaces a `DataSourceExec` only below `CountByViewExec` and
//! only when the scan reads nothing but the grouping columns of Parquet
//! files, without a limit: the files, their byte ranges (which row groups
//! each partition reads, as DataFusion decides them), the partitions and
//! the metadata cache are the scan's own. Predicates the scan held are not
//! evaluated here: below the count there are only those DataFusion keeps
//! for pruning (a `IS NOT NULL` the count applies itself, partition bounds
//! the listing applied, a join's dynamic filter the join applies); row
//! groups whose counted-when-not-null column is null throughout are
//! skipped. A file without a column (written before it existed) reads it
//! as nulls, as DataFusion's own scan reads it.

use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt, stream};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};

/// The type the column is read as.
fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// Whether a column of type `t` holds text the scan reads by key: strings,
/// or a dictionary of them (as another writer's Arrow schema may say).
/// Binary columns (which DataFusion would decode as text) are left out.
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// Reads string columns of Parquet files by dictionary key; see the
/// module documentation.
#[derive(Debug)]
pub struct DictScanExec {
    store: ObjectStoreUrl,
    /// The files of each output partition.
    partitions: Vec<Vec<PartitionedFile>>,
    /// The columns read, in output order.
    columns: Vec<String>,
    /// Skip row groups whose statistics say this column (an index into
    /// `columns`) is null throughout.
    skip_null_row_groups: Option<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DictScanExec {
    /// The dictionary scan replacing `plan`, when `plan` is a Parquet scan
    /// of nothing but string columns of the files (no partition column, no
    /// expression, no limit); `skip_null_row_groups` names the output
    /// column whose rows the reader's consumer drops when null.
    pub fn replacing(
        plan: &Arc<dyn ExecutionPlan>,
        skip_null_row_groups: Option<usize>,
    ) -> Option<Self> {
        let exec = plan.downcast_ref::<DataSourceExec>()?;
        let (config, _) = exec.downcast_to_file_source::<ParquetSource>()?;
        let projection = config.file_source.projection()?;
        if config.limit.is_some()
            || projection.as_ref().is_empty()
            || plan.schema().fields().len() != projection.as_ref().len()
        {
            return None;
        }
        let file_schema = config.file_schema();
        let mut columns = Vec::with_capacity(projection.as_ref().len());
        for projected in projection.as_ref() {
            let column = projected.expr.downcast_ref::<Column>()?;
            let field = file_schema.fields().get(column.index())?;
            if field.name() != column.name()
                || projected.alias != *field.name()
                || !is_text(field.data_type())
                || columns.contains(field.name())
            {
                return None;
            }
            columns.push(field.name().clone());
        }
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(c, dictionary_type(), true))
                .collect::<Vec<_>>(),
        ));
        let partitions: Vec<Vec<PartitionedFile>> = config
            .file_groups
            .iter()
            .map(|g| g.files().to_vec())
            .collect();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Some(Self {
            store: config.object_store_url.clone(),
            partitions,
            columns,
            skip_null_row_groups: skip_null_row_groups.filter(|&i| i < schema.fields().len()),
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// `plan` read by dictionary key, when it is a Parquet scan
/// [`DictScanExec::replacing`] takes or a round-robin repartition of one
/// (how DataFusion spreads a single file's batches over the partitions:
/// each partition's batches of a row group still share its dictionary).
pub fn read_by_key(
    plan: &Arc<dyn ExecutionPlan>,
    skip_null_row_groups: Option<usize>,
) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(scan) = DictScanExec::replacing(plan, skip_null_row_groups) {
        return Some(Arc::new(scan));
    }
    let repartition = plan.downcast_ref::<RepartitionExec>()?;
    if !matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
        || repartition.preserve_order()
    {
        return None;
    }
    let scan = DictScanExec::replacing(repartition.input(), skip_null_row_groups)?;
    Arc::clone(plan)
        .replace_children(
            vec![Arc::new(scan)],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
        .ok()
}

/// Whether `plan` is what [`read_by_key`] gives.
pub fn reads_by_key(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<DictScanExec>().is_some()
        || plan
            .downcast_ref::<RepartitionExec>()
            .is_some_and(|r| r.input().downcast_ref::<DictScanExec>().is_some())
}

impl DisplayAs for DictScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "DictScanExec: columns=[{}], files={files}, partitions={}, skip_null_row_groups={}",
            self.columns.join(", "),
            self.partitions.len(),
            self.skip_null_row_groups
                .map_or("none", |i| self.columns[i].as_str())
        )
    }
}

impl ExecutionPlan for DictScanExec {
    fn name(&self) -> &str {
        "DictScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DictScanExec has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let files = self.partitions.get(partition).cloned().unwrap_or_default();
        let runtime = context.runtime_env();
        let factory = Arc::new(CachedParquetFileReaderFactory::new(
            runtime.object_store(&self.store)?,
            runtime.cache_manager.get_file_metadata_cache(),
        ));
        let file = FileScan {
            factory,
            partition,
            columns: self.columns.clone(),
            skip_null_row_groups: self.skip_null_row_groups,
            schema: Arc::clone(&self.schema),
            batch_size: context.session_config().batch_size().max(1),
            metrics: self.metrics.clone(),
        };
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let batches = stream::iter(files)
            .then(move |f| {
                let file = file.clone();
                async move { file.open(f).await }
            })
            .try_flatten()
            .inspect_ok(move |b| baseline.record_output(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// What reading one file needs.
#[derive(Clone)]
struct FileScan {
    factory: Arc<CachedParquetFileReaderFactory>,
    partition: usize,
    columns: Vec<String>,
    skip_null_row_groups: Option<usize>,
    schema: SchemaRef,
    batch_size: usize,
    metrics: ExecutionPlanMetricsSet,
}

impl FileScan {
    /// The batches of the column in `file`'s row groups within its range.
    async fn open(
        self,
        file: PartitionedFile,
    ) -> DfResult<futures::stream::BoxStream<'static, DfResult<RecordBatch>>> {
        let range = file.range.clone();
        let mut reader: Box<dyn AsyncFileReader> = self.factory.create_reader(
            self.partition,
            file.clone(),
            file.metadata_size_hint,
            &self.metrics,
        )?;
        let options = ArrowReaderOptions::new();
        let metadata = ArrowReaderMetadata::load_async(&mut reader, options.clone()).await?;
        let parquet = Arc::clone(metadata.metadata());
        // The row groups this partition reads: those whose first page lies
        // in the file's byte range (DataFusion's own rule, so that a file
        // split over partitions is read once).
        let in_range = |rg: &parquet::file::metadata::RowGroupMetaData| {
            range.as_ref().is_none_or(|r| {
                let c = rg.column(0);
                r.contains(c.dictionary_page_offset().unwrap_or(c.data_page_offset()))
            })
        };
        let file_schema = Arc::clone(metadata.schema());
        // Each column's index in the file; a file written before a column
        // existed reads it as nulls.
        let indices: Vec<Option<usize>> = self
            .columns
            .iter()
            .map(|c| file_schema.index_of(c).ok())
            .collect();
        for (column, index) in self.columns.iter().zip(&indices) {
            if let Some(i) = *index
                && !is_text(file_schema.field(i).data_type())
            {
                return Err(DataFusionError::Execution(format!(
                    "column {column} of {} is {}, not a string",
                    file.object_meta.location,
                    file_schema.field(i).data_type()
                )));
            }
        }
        let skipped_is_missing = self
            .skip_null_row_groups
            .is_some_and(|i| indices[i].is_none());
        if skipped_is_missing || indices.iter().all(Option::is_none) {
            // Nothing stored: nulls, one batch a row group (none when the
            // nulls are dropped anyway).
            let rows: Vec<usize> = if skipped_is_missing {
                Vec::new()
            } else {
                parquet
                    .row_groups()
                    .iter()
                    .filter(|rg| in_range(rg))
                    .map(|rg| usize::try_from(rg.num_rows()).unwrap_or(0))
                    .collect()
            };
            let schema = self.schema;
            let batch_size = self.batch_size;
            let batches = rows.into_iter().flat_map(move |n| {
                let schema = Arc::clone(&schema);
                (0..n).step_by(batch_size).map(move |start| {
                    let len = batch_size.min(n - start);
                    let columns = schema
                        .fields()
                        .iter()
                        .map(|_| new_null_array(&dictionary_type(), len))
                        .collect();
                    Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
                })
            });
            return Ok(stream::iter(batches).boxed());
        }
        let fields: Vec<Arc<Field>> = file_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if indices.contains(&Some(i)) {
                    Arc::new(f.as_ref().clone().with_data_type(dictionary_type()))
                } else {
                    Arc::clone(f)
                }
            })
            .collect();
        let supplied = Arc::new(Schema::new_with_metadata(
            fields,
            file_schema.metadata().clone(),
        ));
        let metadata =
            ArrowReaderMetadata::try_new(Arc::clone(&parquet), options.with_schema(supplied))?;
        let descr = parquet.file_metadata().schema_descr();
        let skip_leaf = self.skip_null_row_groups.and_then(|i| {
            let name = self.columns[i].as_str();
            descr
                .columns()
                .iter()
                .position(|c| c.path().parts() == [name])
        });
        let row_groups: Vec<usize> = parquet
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, rg)| in_range(rg))
            .filter(|(_, rg)| {
                // Statistics that say every row is null: nothing to count.
                !skip_leaf.is_some_and(|l| {
                    rg.column(l)
                        .statistics()
                        .and_then(|s| s.null_count_opt())
                        .is_some_and(|n| i64::try_from(n).ok() == Some(rg.num_rows()))
                })
            })
            .map(|(i, _)| i)
            .collect();
        // The reader returns the columns in the file's order: each output
        // column's place among them, or `None` for a column the file lacks.
        let mut stored: Vec<usize> = indices.iter().flatten().copied().collect();
        stored.sort_unstable();
        let places: Vec<Option<usize>> = indices
            .iter()
            .map(|i| i.and_then(|i| stored.iter().position(|&s| s == i)))
            .collect();
        let mask = ProjectionMask::roots(descr, stored.iter().copied());
        let schema = self.schema;
        let batches = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
            .with_projection(mask)
            .with_row_groups(row_groups)
            .with_batch_size(self.batch_size)
            .build()?
            .map(move |batch| {
                // The file's fields may say "not null"; the scan's say
                // nullable (files that lack a column read it as nulls).
                let batch = batch?;
                let columns = places
                    .iter()
                    .map(|place| match place {
                        Some(p) => Arc::clone(batch.column(*p)),
                        None => new_null_array(&dictionary_type(), batch.num_rows()),
                    })
                    .collect();
                Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            });
        Ok(batches.boxed())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::sql::tests::answer_and_plan as run;

    /// Writes `rows` rows of `k` (with `n`, and `j`: other values of the
    /// same kinds) into `path`, `k` and `j` as the writer `props` encode
    /// them; `k: None` writes a file without either.
    fn write(path: &std::path::Path, k: Option<Vec<Option<String>>>, props: WriterProperties) {
        let (schema, columns): (Schema, Vec<ArrayRef>) = match k {
            Some(k) => {
                let n: Int64Array = (0..k.len() as i64).collect();
                let j = values(k.len(), k.len() % 7);
                (
                    knj_schema(),
                    vec![
                        Arc::new(StringArray::from(k)),
                        Arc::new(n),
                        Arc::new(StringArray::from(j)),
                    ],
                )
            }
            None => (
                Schema::new(vec![Field::new("n", DataType::Int64, false)]),
                vec![Arc::new((0..777i64).collect::<Int64Array>())],
            ),
        };
        write_batch(path, Arc::new(schema), columns, props);
    }

    /// The files' schema: strings `k` and `j`, and `n`.
    fn knj_schema() -> Schema {
        Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("j", DataType::Utf8, true),
        ])
    }

    /// Writes one batch of `columns` into a Parquet file at `path`.
    fn write_batch(
        path: &std::path::Path,
        schema: Arc<Schema>,
        columns: Vec<ArrayRef>,
        props: WriterProperties,
    ) {
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// Values of every kind: addresses, long host names, an empty string,
    /// nulls; `skew` moves which value is most frequent.
    fn values(rows: usize, skew: usize) -> Vec<Option<String>> {
        (0..rows)
            .map(|i| match (i * 7 + skew) % 11 {
                0 | 1 => None,
                2 => Some(String::new()),
                3..=5 => Some(format!("10.0.{}.{}", i % 3, i % 5)),
                6 => Some(format!(
                    "host-{}-of-a-rather-long-fleet.example.org",
                    i % 13
                )),
                _ => Some(format!("198.51.100.{}", (i + skew) % 17)),
            })
            .collect()
    }

    /// A lake directory of eight files: dictionary-encoded in several row
    /// groups, a dictionary that falls back to plain pages, no dictionary,
    /// one without the columns, a row group of nulls alone, one whose
    /// Arrow schema declares `k` a dictionary (and has no `j`), one with
    /// `j` but no `k`, and one whose `j` is null throughout.
    fn lake() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let small_groups = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        write(
            &dir.path().join("a.parquet"),
            Some(values(3500, 0)),
            small_groups,
        );
        let fallback = WriterProperties::builder()
            .set_dictionary_page_size_limit(64)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        write(
            &dir.path().join("b.parquet"),
            Some(values(2000, 3)),
            fallback,
        );
        let plain = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build();
        write(&dir.path().join("c.parquet"), Some(values(1500, 5)), plain);
        write(&dir.path().join("d.parquet"), None, WriterProperties::new());
        let nulls = WriterProperties::builder()
            .set_max_row_group_row_count(Some(500))
            .build();
        let mut k = vec![None; 500];
        k.extend(values(600, 9));
        write(&dir.path().join("e.parquet"), Some(k), nulls);
        // Another writer's file whose Arrow schema says dictionary.
        let k: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
            values(700, 4).iter().map(Option::as_deref).collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "k",
            Array::data_type(&k).clone(),
            true,
        )]));
        write_batch(
            &dir.path().join("f.parquet"),
            schema,
            vec![Arc::new(k)],
            WriterProperties::new(),
        );
        let j: StringArray = values(400, 6).into_iter().collect();
        let schema = Arc::new(Schema::new(vec![Field::new("j", DataType::Utf8, true)]));
        write_batch(
            &dir.path().join("g.parquet"),
            schema,
            vec![Arc::new(j)],
            WriterProperties::new(),
        );
        // `j` null throughout, `k` not: row groups skipped when only `j`'s
        // nulls are not counted.
        let k: StringArray = values(600, 2).into_iter().collect();
        let j: StringArray = (0..600).map(|_| None::<&str>).collect();
        write_batch(
            &dir.path().join("h.parquet"),
            Arc::new(knj_schema()),
            vec![
                Arc::new(k),
                Arc::new((0..600i64).collect::<Int64Array>()),
                Arc::new(j),
            ],
            WriterProperties::builder()
                .set_max_row_group_row_count(Some(300))
                .build(),
        );
        dir
    }

    /// A session over the lake, as the tenant session reads it (strings as
    /// views), with or without the count-by-view rule; `split` makes
    /// DataFusion read files in byte ranges over three partitions.
    async fn session(dir: &tempfile::TempDir, rule: bool, split: bool) -> SessionContext {
        session_batches(dir, rule, split, 8192)
    }

    fn session_batches(
        dir: &tempfile::TempDir,
        rule: bool,
        split: bool,
        batch_size: usize,
    ) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_target_partitions(if split { 3 } else { 2 })
            .with_batch_size(batch_size);
        if split {
            config.options_mut().optimizer.repartition_file_min_size = 1;
        }
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if rule {
            builder = builder
                .with_physical_optimizer_rule(Arc::new(super::super::view_count::CountByView));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let url = ListingTableUrl::parse(format!("{}/", dir.path().display())).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
            Field::new("j", DataType::Utf8View, true),
        ]));
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let table = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(schema),
        )
        .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    #[tokio::test]
    async fn counts_by_one_or_two_dictionary_keys_equal_datafusions_own() {
        let dir = lake();
        let one: &[&str] = &["DictScanExec: columns=[k]"];
        let two: &[&str] = &[
            "DictScanExec: columns=[k, j]",
            "DictScanExec: columns=[j, k]",
        ];
        for split in [false, true] {
            let plain = session(&dir, false, split).await;
            let fast = session(&dir, true, split).await;
            for (sql, scans) in [
                (
                    "SELECT k, count(*) AS c FROM t GROUP BY k ORDER BY c DESC, k",
                    one,
                ),
                (
                    "SELECT k, count(*) AS c FROM t WHERE k IS NOT NULL GROUP BY k ORDER BY c DESC, k LIMIT 5",
                    one,
                ),
                (
                    "SELECT k, count(k) AS v, count(*) AS c FROM t GROUP BY k ORDER BY k",
                    one,
                ),
                (
                    "SELECT count(*) AS groups, sum(c) AS rows FROM (SELECT k, count(*) AS c FROM t GROUP BY k)",
                    one,
                ),
                (
                    "SELECT k, j, count(*) AS c FROM t GROUP BY k, j ORDER BY k, j",
                    two,
                ),
                (
                    "SELECT j, k, count(*) AS c FROM t WHERE k IS NOT NULL GROUP BY j, k ORDER BY c DESC, j, k LIMIT 7",
                    two,
                ),
                (
                    "SELECT k, j, count(*) AS c FROM t WHERE j IS NOT NULL GROUP BY k, j ORDER BY k, j",
                    two,
                ),
                (
                    "SELECT k, j, count(k) AS a, count(j) AS b, count(*) AS c FROM t GROUP BY k, j ORDER BY k, j",
                    two,
                ),
                (
                    "SELECT count(*) AS groups, sum(c) AS rows FROM (SELECT k, j, count(*) AS c FROM t GROUP BY k, j)",
                    two,
                ),
            ] {
                let (want, _) = run(&plain, sql).await;
                let (got, plan) = run(&fast, sql).await;
                assert_eq!(got, want, "{sql} (split: {split})\n{plan}");
                assert!(scans.iter().any(|s| plan.contains(s)), "{sql}:\n{plan}");
            }
            // Every row is counted once, whichever partition reads it.
            for sql in [
                "SELECT sum(c) AS rows FROM (SELECT k, count(*) AS c FROM t GROUP BY k)",
                "SELECT sum(c) AS rows FROM (SELECT k, j, count(*) AS c FROM t GROUP BY k, j)",
            ] {
                let (total, _) = run(&fast, sql).await;
                assert!(total.contains("| 10577 |"), "{sql}: {total}");
            }
        }
    }

    #[tokio::test]
    async fn pairs_of_large_dictionaries_are_counted_in_a_map() {
        // 1,500 × 1,200 distinct values in one row group: more pairs of keys
        // than the counter keeps in an array.
        let dir = tempfile::tempdir().unwrap();
        for (file, skew) in [("a.parquet", 0), ("b.parquet", 1)] {
            let k: StringArray = (0..6000)
                .map(|i| (i % 97 != 0).then(|| format!("10.{}.{}.1", skew, i % 1500)))
                .collect();
            let j: StringArray = (0..6000)
                .map(|i| Some(format!("host-{}", (i * 7) % 1200)))
                .collect();
            let n: Int64Array = (0..6000).collect();
            let schema = Arc::new(knj_schema());
            let props = WriterProperties::builder()
                .set_dictionary_page_size_limit(1 << 20)
                .build();
            write_batch(
                &dir.path().join(file),
                schema,
                vec![Arc::new(k), Arc::new(n), Arc::new(j)],
                props,
            );
        }
        let plain = session(&dir, false, false).await;
        let fast = session(&dir, true, false).await;
        for sql in [
            "SELECT count(*) AS groups, sum(c) AS rows, min(c) AS lo, max(c) AS hi FROM (SELECT k, j, count(*) AS c FROM t GROUP BY k, j)",
            "SELECT k, j, count(*) AS c FROM t WHERE k IS NOT NULL GROUP BY k, j ORDER BY c DESC, k, j LIMIT 10",
        ] {
            let (want, _) = run(&plain, sql).await;
            let (got, plan) = run(&fast, sql).await;
            assert_eq!(got, want, "{sql}\n{plan}");
            assert!(
                plan.contains("DictScanExec: columns=[k, j]"),
                "{sql}:\n{plan}"
            );
        }
    }

    #[tokio::test]
    async fn a_single_file_dealt_round_robin_is_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(700))
            .build();
        write(&dir.path().join("a.parquet"), Some(values(3000, 4)), props);
        let plain = session(&dir, false, false).await;
        let fast = session(&dir, true, false).await;
        // With a filter, DataFusion deals the batches round-robin.
        for (sql, dealt) in [
            (
                "SELECT k, count(*) AS c FROM t WHERE k IS NOT NULL GROUP BY k ORDER BY c DESC, k",
                true,
            ),
            (
                "SELECT k, j, count(*) AS c FROM t WHERE j IS NOT NULL GROUP BY k, j ORDER BY k, j",
                true,
            ),
            (
                "SELECT k, j, count(*) AS c FROM t GROUP BY k, j ORDER BY k, j",
                false,
            ),
        ] {
            let (want, _) = run(&plain, sql).await;
            let (got, plan) = run(&fast, sql).await;
            assert_eq!(got, want, "{sql}\n{plan}");
            assert_eq!(plan.contains("RoundRobinBatch"), dealt, "{sql}:\n{plan}");
            assert!(plan.contains("DictScanExec: columns=["), "{sql}:\n{plan}");
        }
    }

    /// The named metric of the plan's `CountByViewExec`s, summed.
    fn count_metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
        let own = if plan.name() == "CountByViewExec" {
            plan.metrics()
                .and_then(|m| m.sum_by_name(name))
                .map_or(0, |v| v.as_usize())
        } else {
            0
        };
        own + plan
            .children()
            .into_iter()
            .map(|c| count_metric(c, name))
            .sum::<usize>()
    }

    #[tokio::test]
    async fn a_column_chunk_is_resolved_once_however_many_batches_it_spans() {
        let dir = tempfile::tempdir().unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .build();
        // Two files, one a partition (a single file's batches would be
        // dealt round-robin, alternately to each partition).
        write(
            &dir.path().join("a.parquet"),
            Some(values(2000, 1)),
            props.clone(),
        );
        write(&dir.path().join("b.parquet"), Some(values(2000, 2)), props);
        // Ten batches a row group.
        let ctx = session_batches(&dir, true, false, 100);
        let df = ctx
            .sql("SELECT k, count(*) FROM t GROUP BY k")
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        assert!(!batches.is_empty());
        let explain = datafusion::physical_plan::displayable(plan.as_ref()).indent(true);
        assert!(explain.to_string().contains("DictScanExec"), "{explain}");
        assert_eq!(count_metric(&plan, "resolves"), 4, "one a row group");
        // Each row group's distinct values, looked up once each.
        let distinct: usize = [values(2000, 1), values(2000, 2)]
            .iter()
            .flat_map(|v| v.chunks(1000))
            .map(|g| {
                g.iter()
                    .flatten()
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            })
            .sum();
        assert_eq!(count_metric(&plan, "views_resolved"), distinct);
    }

    #[tokio::test]
    async fn scans_of_more_than_the_counted_column_are_left_alone() {
        let dir = lake();
        let fast = session(&dir, true, false).await;
        for sql in [
            // The filter on another column is not absorbed: the scan reads two.
            "SELECT k, count(*) FROM t WHERE n > 5 GROUP BY k",
            "SELECT k, sum(n) FROM t GROUP BY k",
            "SELECT upper(k), count(*) FROM t GROUP BY upper(k)",
        ] {
            let (_, plan) = run(&fast, sql).await;
            assert!(!plan.contains("DictScanExec"), "{sql}:\n{plan}");
        }
    }
}
