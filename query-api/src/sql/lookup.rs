//! Lookups filter while decoding.
//!
//! An analyst pivoting on one value (`WHERE source_ip = '…'`, `host IN
//! (…)`) keeps a handful of rows out of millions. Decoding every column of
//! every row and filtering afterwards spends the scan on rows nobody sees;
//! Parquet filter pushdown ("late materialisation") decodes the looked-up
//! column first and then only the pages of the other columns that hold
//! selected rows (the page index says which), skipping the rest inside
//! them. That pays because the lake's pages are small (64 KiB before
//! compression, `pipeline.parquet.data_page_bytes`): the 1,001 rows of the
//! benchmark's rarest address lie on 10 % of `message`'s pages, where with
//! 1 MiB pages they lay on 64 % and the pushed-down scan was slower than
//! decoding everything (docs/benchmarks.md).
//!
//! It pays only for a few rows and wide columns, so [`pays`] decides from
//! the footer of the scan's first file: the looked-up column holds
//! thousands of distinct values per value looked up, and the other
//! columns read are several times its size. A value among a few (`app =
//! 'sshd'`, 16 % of the rows) took 1.3–2.3× its time with pushdown, a
//! lookup of an address reading only `host` beside it 1.15×. Pushdown
//! stays off for every other scan: measured on the 10M-row bench lake, it
//! made aggregations over an `IS NOT NULL` filter 1.6× and the joins
//! (whose dynamic filters then run inside the scan) 2.9× slower. For the
//! same reason [`CompactViewsExec`] lets through to a lookup's scan only
//! the dynamic filters that read fixed-width columns.
//!
//! The rows a pushed-down scan hands over are string views into whole
//! decoded pages; [`CompactViewsExec`] copies such rows out of their pages
//! as they leave the scan, so a sort over a few rows does not hold (and
//! count against the query's memory) every page they came from.

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{Array, ArrayRef, AsArray, GenericByteViewArray, RecordBatch};
use arrow::datatypes::ByteViewType;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::Statistics;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, ChildPushdownResult, FilterDescription, FilterPushdownPhase,
    FilterPushdownPropagation,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};
use futures::Stream;

/// The columns `filters` (a scan's conjuncts) look values up in, each with
/// how many values it is compared with: those an equality (one) or an `IN`
/// list (its length) compares with literals — columns of the files, not
/// `partition_columns`, which only choose directories.
pub fn lookup_columns(filters: &[Expr], partition_columns: &[&str]) -> Vec<(String, usize)> {
    let in_files = |e: &Expr| match e {
        Expr::Column(c) if !partition_columns.contains(&c.name.as_str()) => Some(c.name.clone()),
        _ => None,
    };
    let literal = |e: &Expr| matches!(e, Expr::Literal(..));
    let mut columns: Vec<(String, usize)> = Vec::new();
    for f in filters {
        let looked_up = match f {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) if literal(right) => in_files(left).map(|c| (c, 1)),
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) if literal(left) => in_files(right).map(|c| (c, 1)),
            Expr::InList(list) if !list.negated && list.list.iter().all(literal) => {
                in_files(&list.expr).map(|c| (c, list.list.len()))
            }
            _ => None,
        };
        let Some((column, values)) = looked_up else {
            continue;
        };
        // Conjuncts on one column: the fewest values bound the rows.
        match columns.iter_mut().find(|(c, _)| *c == column) {
            Some((_, n)) => *n = (*n).min(values),
            None => columns.push((column, values)),
        }
    }
    columns
}

/// A looked-up column whose dictionary page takes at least this much
/// (compressed) for each value looked up holds thousands of distinct values
/// a row group per value: one value is then a few rows in 10,000 (the
/// bench's addresses: 8.4 KB for 2,746; its 6 hosts and 7 apps: ~65
/// bytes). Measured on the bench lake, pushdown paid for one address
/// (~0.05 % of the rows: 0.70× the time) and lost from five on (~0.24 %:
/// 1.29×, twenty 1.41×, two hundred 2.36×).
const RARE_DICTIONARY_BYTES: i64 = 4096;

/// The other columns read must hold at least this many times the bytes of
/// the looked-up ones, or decoding everything costs less than picking.
const WIDE_RATIO: i64 = 4;

/// Whether `scan` (the plain listing's plan of the same files) is better
/// read with its filters evaluated while decoding: one of its looked-up
/// `columns` (with the number of values looked up) holds rare values and
/// the other columns it reads are wide. Without
/// that, pushdown loses — measured on the 10M-row bench lake, `app =
/// 'sshd'` (16 % of the rows) took 1.3–2.3× and a lookup reading only a
/// dictionary column beside it (`GROUP BY host`) 1.15× the time. Judged
/// on the first row group of the scan's first file, from its footer
/// (cached by then: the listing read it for its statistics).
pub async fn pays(
    state: &dyn Session,
    scan: &Arc<dyn ExecutionPlan>,
    columns: &[(String, usize)],
) -> bool {
    let Some(exec) = scan.downcast_ref::<DataSourceExec>() else {
        return false;
    };
    let Some((config, _)) = exec.downcast_to_file_source::<ParquetSource>() else {
        return false;
    };
    let Some(file) = config.file_groups.iter().flat_map(|g| g.files()).next() else {
        return false;
    };
    let runtime = state.runtime_env();
    let Ok(store) = runtime.object_store(&config.object_store_url) else {
        return false;
    };
    let factory =
        CachedParquetFileReaderFactory::new(store, runtime.cache_manager.get_file_metadata_cache());
    let Ok(mut reader) =
        factory.create_reader(0, file.clone(), None, &ExecutionPlanMetricsSet::new())
    else {
        return false;
    };
    let Ok(metadata) = reader.get_metadata(None).await else {
        return false;
    };
    let Some(group) = metadata.row_groups().first() else {
        return false;
    };
    let read: Vec<String> = scan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let (mut looked_up, mut others, mut rare) = (0i64, 0i64, false);
    for chunk in group.columns() {
        let name = chunk.column_descr().name();
        if let Some((_, values)) = columns.iter().find(|(c, _)| c == name) {
            looked_up += chunk.uncompressed_size();
            let enough = RARE_DICTIONARY_BYTES.saturating_mul(*values as i64);
            rare |= chunk
                .dictionary_page_offset()
                .is_none_or(|d| chunk.data_page_offset() - d >= enough);
        } else if read.iter().any(|c| c == name) {
            others += chunk.uncompressed_size();
        }
    }
    rare && others >= WIDE_RATIO * looked_up.max(1)
}

/// Copies string and binary views out of the buffers they point into when
/// those buffers are more than twice what the rows use.
#[derive(Debug)]
pub struct CompactViewsExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl CompactViewsExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            properties: input.properties().clone(),
            input,
        }
    }
}

impl DisplayAs for CompactViewsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompactViewsExec")
    }
}

impl ExecutionPlan for CompactViewsExec {
    fn name(&self) -> &str {
        "CompactViewsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    // It does keep the order (its properties say so), but answering `true`
    // lets DataFusion push a sort below it, and the sort then buffers the
    // scan's batches with their whole decoded pages: the copy must come
    // first. `false` keeps every operator above it.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = super::guard::only_child(children, "CompactViewsExec")?;
        Ok(Arc::new(Self::new(input)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let inner = self.input.execute(partition, context)?;
        Ok(Box::pin(CompactStream {
            schema: inner.schema(),
            inner,
        }))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        input_stats.first().cloned().ok_or_else(|| {
            DataFusionError::Internal("CompactViewsExec has one input's statistics".into())
        })
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    // The query's own filters pass through to the scan: that is where they
    // are pushed. Filters made while the query runs (a TopK's threshold, a
    // join's key set, `max(col)`'s running maximum) pass only when they
    // read no string column: the scan evaluates whatever it gets row by
    // row, so a threshold on `message` (`ORDER BY …, message` under the
    // API's row limit) decoded that column whole for every row — the
    // needle lookup took twice its time.
    fn gather_filters_for_pushdown(
        &self,
        phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> DfResult<FilterDescription> {
        if phase == FilterPushdownPhase::Pre {
            return FilterDescription::from_children(parent_filters, &self.children());
        }
        let fixed_width: HashSet<usize> = self
            .input
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.data_type().is_primitive() || f.data_type() == &DataType::Boolean)
            .map(|(i, _)| i)
            .collect();
        Ok(FilterDescription::new().with_child(
            ChildFilterDescription::from_child_with_allowed_indices(
                &parent_filters,
                fixed_width,
                &self.input,
            )?,
        ))
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> DfResult<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

struct CompactStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
}

/// `column` copied out of its buffers if they hold more than twice the
/// bytes its rows refer to (inline values refer to none).
fn compact(column: &ArrayRef) -> ArrayRef {
    fn compacted<T: ByteViewType + ?Sized>(a: &GenericByteViewArray<T>) -> Option<ArrayRef> {
        let buffers: usize = a.data_buffers().iter().map(|b| b.len()).sum();
        (buffers > 2 * a.total_buffer_bytes_used().max(1024)).then(|| Arc::new(a.gc()) as ArrayRef)
    }
    let copy = match column.data_type() {
        DataType::Utf8View => compacted(column.as_string_view()),
        DataType::BinaryView => compacted(column.as_binary_view()),
        _ => None,
    };
    copy.unwrap_or_else(|| column.clone())
}

impl Stream for CompactStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let columns: Vec<ArrayRef> = batch.columns().iter().map(compact).collect();
                let out = RecordBatch::try_new(batch.schema(), columns)
                    .map_err(|e| DataFusionError::ArrowError(Box::new(e), None));
                Poll::Ready(Some(out))
            }
            other => other,
        }
    }
}

impl RecordBatchStream for CompactStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringViewArray;
    use datafusion::logical_expr::{col, lit};

    use super::*;

    #[test]
    fn lookups_are_equalities_and_in_lists_of_literals() {
        let lookup = |filters: &[Expr]| !lookup_columns(filters, &["date"]).is_empty();
        assert!(lookup(&[col("source_ip").eq(lit("10.0.0.1"))]));
        assert!(lookup(&[lit("h1").eq(col("host"))]));
        assert!(lookup(&[
            col("host").in_list(vec![lit("a"), lit("b")], false)
        ]));
        assert!(lookup(&[col("x").is_not_null(), col("host").eq(lit("a"))]));
        assert_eq!(
            lookup_columns(
                &[
                    col("host").eq(lit("a")),
                    col("app").in_list(vec![lit("b")], false),
                    lit("c").eq(col("host")),
                    col("date").eq(lit("2026-10-05")),
                ],
                &["date"]
            ),
            [("host".to_string(), 1), ("app".to_string(), 1)]
        );
        assert_eq!(
            lookup_columns(
                &[
                    col("ip").in_list(vec![lit("a"), lit("b"), lit("c")], false),
                    col("ip").in_list(vec![lit("a"), lit("b")], false),
                ],
                &[]
            ),
            [("ip".to_string(), 2)]
        );
        for not in [
            col("source_ip").is_not_null(),
            col("host").in_list(vec![lit("a")], true),
            col("a").eq(col("b")),
            col("ts").gt_eq(lit(5)),
            col("message").like(lit("%x%")),
            // The partition column picks directories, not rows.
            col("date").eq(lit("2026-10-05")),
            col("date").in_list(vec![lit("2026-10-05")], false),
        ] {
            assert!(!lookup(std::slice::from_ref(&not)), "{not}");
        }
    }

    #[test]
    fn views_into_mostly_unused_buffers_are_copied_out_and_equal() {
        let long: Vec<String> = (0..10_000)
            .map(|i| format!("a fairly long value {i:08}"))
            .collect();
        let all = StringViewArray::from_iter_values(long.iter());
        // Three rows kept of 10,000: the slice still points into everything.
        let kept: ArrayRef = Arc::new(all.slice(5, 3));
        let out = compact(&kept);
        let out = out.as_string_view();
        assert_eq!(out, kept.as_string_view());
        let bytes: usize = out.data_buffers().iter().map(|b| b.len()).sum();
        assert!(bytes < 1024, "{bytes} bytes kept");
        // Dense ones are passed through as they are.
        let dense: ArrayRef = Arc::new(all);
        assert!(Arc::ptr_eq(&compact(&dense), &dense));
    }
}
