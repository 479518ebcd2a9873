//! `count(*)` grouped by one string column, counted by the column's views.
//!
//! "Events per source / host / app / user" is the analyst's most common
//! query, and its grouping column nearly always has few distinct values.
//! DataFusion's partial aggregation hashes every row's string (and, with
//! `WHERE x IS NOT NULL`, a filter first copies every kept row): ~22 ns a
//! row, 121 ms of CPU for the 5.6 M addressed rows of "top 10 sources" at
//! 10M log rows (docs/benchmarks.md, analyst SQL).
//!
//! The Parquet reader decodes a dictionary-encoded column into string views
//! that all point into the dictionary page's buffer, which every batch of
//! the column chunk shares: rows with the same value carry the same view.
//! So this operator counts rows by the *view* — by its 16 bytes when the
//! string is inline (≤ 12 bytes), else by the address and length of the
//! bytes it points to — which is one integer hash a row, and looks the
//! string up only once per distinct view when it resolves the views into
//! groups. Equal strings in different buffers (a plain-encoded page, the
//! next row group's dictionary) are distinct views that resolve into the
//! same group, so the result is exact for any input; only the speed
//! depends on the sharing. The buffers are held until their views are
//! resolved, so an address cannot be reused for other bytes meanwhile;
//! views are resolved whenever a batch brings buffers not seen before.
//!
//! When the aggregation's input is a Parquet scan of nothing but the
//! grouping column (or such a scan's batches dealt round-robin, as
//! DataFusion spreads a single file), the rule also replaces the scan by
//! one that reads the column as its dictionary's keys
//! ([`super::dict_scan`]); rows are then
//! counted by key in an array while batches share a dictionary (a column
//! chunk's), and each key with rows is looked up once when the dictionary
//! changes — no hashing a row at all (top 10 sources at 10M rows: 26 ms of
//! counting instead of 87).
//!
//! Two string columns are counted only when the scan reads both by key
//! (else a pair of views a row would be hashed, as DataFusion's own
//! aggregation hashes them): rows by pair of keys in an array (a hash map
//! when the dictionaries are large), and when a dictionary changes each key
//! with rows is given an id of its string once and each pair with rows
//! adds to the group of its pair of ids. This is the pre-aggregation
//! `eager.rs` puts below a join grouped by an event column, such as
//! "events and distinct hosts per vulnerable address" (`source_ip`,
//! `host`).
//!
//! The rule replaces a `Partial` aggregation (the first of two phases) whose
//! grouping expressions are one or two `Utf8View` columns and whose
//! aggregates are all plain `count(*)` or `count(<a grouping column>)`; a
//! `<grouping column> IS NOT NULL` filter right below it is absorbed (its
//! null rows are skipped while counting). A partial aggregation may emit a group more than once — the
//! final phase adds them up — so memory stays bounded: views are resolved
//! when they or the buffers they hold grow large, and groups are emitted
//! when there are many, when their strings grow large, or when the
//! query's memory pool is full (as DataFusion's own partial aggregation
//! does; the query fails only if that frees too little).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, RecordBatch, StringViewArray,
};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Int32Type, SchemaRef};
use arrow::util::bit_chunk_iterator::BitChunks;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Constraints, HashMap};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, IsNotNullExpr, Literal};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::InputOrderMode;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

use super::dict_scan::{read_by_key, reads_by_key};

/// The rule; added to every tenant session ([`super::session`]) after
/// DataFusion's own physical rules.
#[derive(Debug, Default)]
pub struct CountByView;

impl PhysicalOptimizerRule for CountByView {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            match CountByViewExec::try_from_aggregate(agg, &node)? {
                Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "securenet_count_by_view"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What one output count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// `count(*)` (or of a non-null literal): every row of the group.
    Rows,
    /// `count(x)` of the grouping column at this position: 0 for the
    /// groups where it is null.
    Values(usize),
}

/// Counts rows by one `Utf8View` column, or by two read by dictionary
/// key; see the module documentation.
#[derive(Debug)]
pub struct CountByViewExec {
    /// The aggregation replaced (an `AggregateExec`): its schema and
    /// properties are this operator's, and it is rebuilt over new children.
    aggregate: Arc<dyn ExecutionPlan>,
    /// The absorbed `IS NOT NULL` filter's predicate, if any.
    not_null: Option<Arc<dyn PhysicalExpr>>,
    input: Arc<dyn ExecutionPlan>,
    /// The grouping columns' indices in the input (one or two).
    columns: Vec<usize>,
    /// The grouping column (a position in `columns`) whose null rows are
    /// not counted: the one the absorbed filter tests.
    skip_nulls: Option<usize>,
    counts: Vec<Counts>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CountByViewExec {
    /// The replacement for `agg`, when it qualifies.
    fn try_from_aggregate(
        agg: &AggregateExec,
        node: &Arc<dyn ExecutionPlan>,
    ) -> DfResult<Option<Self>> {
        if *agg.mode() != AggregateMode::Partial
            || *agg.input_order_mode() != InputOrderMode::Linear
            || agg.limit_options().is_some()
            || !agg.group_expr().is_single()
            || agg.filter_expr().iter().any(Option::is_some)
            || agg.aggr_expr().is_empty()
        {
            return Ok(None);
        }
        let input_schema = agg.input().schema();
        let mut groups: Vec<&Column> = Vec::with_capacity(2);
        for (group, _) in agg.group_expr().expr() {
            let Some(group) = group.downcast_ref::<Column>() else {
                return Ok(None);
            };
            if input_schema.field(group.index()).data_type() != &DataType::Utf8View
                || groups.contains(&group)
            {
                return Ok(None);
            }
            groups.push(group);
        }
        if groups.is_empty() || groups.len() > 2 {
            return Ok(None);
        }
        let mut counts = Vec::with_capacity(agg.aggr_expr().len());
        for a in agg.aggr_expr() {
            if !a.fun().name().eq_ignore_ascii_case("count")
                || a.is_distinct()
                || !a.order_bys().is_empty()
            {
                return Ok(None);
            }
            let args = a.expressions();
            let [arg] = args.as_slice() else {
                return Ok(None);
            };
            counts.push(
                if arg
                    .downcast_ref::<Literal>()
                    .is_some_and(|l| !l.value().is_null())
                {
                    Counts::Rows
                } else if let Some(i) = arg
                    .downcast_ref::<Column>()
                    .and_then(|c| groups.iter().position(|g| *g == c))
                {
                    Counts::Values(i)
                } else {
                    return Ok(None);
                },
            );
        }
        // The partial state of `count` is one Int64 per aggregate.
        let schema = agg.schema();
        if schema.fields().len() != groups.len() + counts.len()
            || schema.fields().iter().enumerate().any(|(i, f)| {
                f.data_type()
                    != if i < groups.len() {
                        &DataType::Utf8View
                    } else {
                        &DataType::Int64
                    }
            })
        {
            return Ok(None);
        }
        let (input, not_null) = match not_null_filter(agg.input(), &groups) {
            Some((below, position, predicate)) => (below, Some((position, predicate))),
            None => (Arc::clone(agg.input()), None),
        };
        let skip_nulls = not_null.as_ref().map(|(position, _)| *position);
        // A scan of nothing but the grouping columns is read by dictionary
        // key (super::dict_scan), when it is a Parquet scan. Two columns
        // are counted only so: by their views, a pair of them a row would
        // be hashed, which DataFusion's own aggregation does as well.
        // The scan's columns are the input's (the filter projects none).
        let skipped_column = skip_nulls.map(|position| groups[position].index());
        let input = match read_by_key(&input, skipped_column) {
            Some(scan) => scan,
            None if groups.len() == 1 => input,
            None => return Ok(None),
        };
        Ok(Some(Self {
            aggregate: Arc::clone(node),
            not_null: not_null.map(|(_, predicate)| predicate),
            input,
            columns: groups.iter().map(|g| g.index()).collect(),
            skip_nulls,
            counts,
            properties: without_uniqueness(agg.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// `properties` without the constraints an aggregation declares (its group
/// key unique): a partial count may emit a group more than once.
fn without_uniqueness(properties: &Arc<PlanProperties>) -> Arc<PlanProperties> {
    let eq = properties
        .eq_properties
        .clone()
        .with_constraints(Constraints::default());
    Arc::new(properties.as_ref().clone().with_eq_properties(eq))
}

/// A filter's input, the position of the column it tests, its predicate.
type NotNullFilter = (Arc<dyn ExecutionPlan>, usize, Arc<dyn PhysicalExpr>);

/// The input of `plan` when it is a `FilterExec` of exactly `column IS NOT
/// NULL` for one of `columns` (no projection, no limit), with that
/// column's position in `columns` and the predicate.
fn not_null_filter(plan: &Arc<dyn ExecutionPlan>, columns: &[&Column]) -> Option<NotNullFilter> {
    let filter = plan.downcast_ref::<FilterExec>()?;
    if filter.projection().is_some() || filter.fetch().is_some() {
        return None;
    }
    let arg = filter.predicate().downcast_ref::<IsNotNullExpr>()?.arg();
    let c = arg.downcast_ref::<Column>()?;
    let position = columns.iter().position(|g| *g == c)?;
    Some((
        Arc::clone(filter.input()),
        position,
        Arc::clone(filter.predicate()),
    ))
}

impl DisplayAs for CountByViewExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schema = self.aggregate.schema();
        let names: Vec<&str> = (0..self.columns.len())
            .map(|i| schema.field(i).name().as_str())
            .collect();
        write!(
            f,
            "CountByViewExec: gby=[{}], counts={}, skip_nulls={}",
            names.join(", "),
            self.counts.len(),
            self.not_null.is_some()
        )
    }
}

impl ExecutionPlan for CountByViewExec {
    fn name(&self) -> &str {
        "CountByViewExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.not_null {
            Some(predicate) => f(predicate),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = super::guard::only_child(children, "CountByViewExec")?;
        let mut aggregate = Arc::clone(&self.aggregate);
        let mut properties = self.properties.clone();
        // Over a dictionary scan (which only this rule puts below it, with
        // the partitions of the scan it replaced) the aggregation's
        // properties stand; the aggregation could not be rebuilt over its
        // dictionary-typed column.
        if options.children_properties == ChildrenPropertiesMode::Recompute && !reads_by_key(&input)
        {
            // The aggregation over the same new input gives the properties.
            let agg_input: Arc<dyn ExecutionPlan> = match &self.not_null {
                Some(p) => Arc::new(FilterExec::try_new(Arc::clone(p), Arc::clone(&input))?),
                None => Arc::clone(&input),
            };
            aggregate = Arc::clone(&self.aggregate).replace_children(
                vec![agg_input],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?;
            properties = without_uniqueness(aggregate.properties());
        }
        Ok(Arc::new(Self {
            aggregate,
            not_null: self.not_null.clone(),
            input,
            columns: self.columns.clone(),
            skip_nulls: self.skip_nulls,
            counts: self.counts.clone(),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    #[allow(deprecated)]
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
        let reservation = MemoryConsumer::new(format!("CountByViewExec[{partition}]"))
            .register(context.memory_pool());
        let input = self.input.execute(partition, Arc::clone(&context))?;
        Ok(Box::pin(CountStream {
            input: Some(input),
            schema: self.aggregate.schema(),
            columns: self.columns.clone(),
            skip_nulls: self.skip_nulls,
            counts: self.counts.clone(),
            counter: if self.columns.len() == 1 {
                Counter::One(ViewCounter::default())
            } else {
                Counter::Two(PairCounter::default())
            },
            reservation,
            batch_size: context.session_config().batch_size().max(1),
            ready: VecDeque::new(),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            resolves: MetricBuilder::new(&self.metrics).counter("resolves", partition),
            views_resolved: MetricBuilder::new(&self.metrics).counter("views_resolved", partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Resolve the views when this many distinct ones are waiting …
const MAX_VIEWS: usize = 1 << 16;
/// … or the buffers they point into hold this many bytes.
const MAX_HELD_BYTES: usize = 64 << 20;
/// Emit the groups (a partial result) once there are this many, or their
/// strings hold this many bytes.
const MAX_GROUPS: usize = 1 << 16;
const MAX_GROUP_BYTES: usize = 16 << 20;

/// A view's count until it is resolved, and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Pending {
    rows: u64,
    /// Index into [`ViewCounter::held`]; `u32::MAX` for an inline string.
    held: u32,
    offset: u32,
}

/// The views waiting to be resolved, with the default, randomly seeded
/// hasher: an inline view is the string's own bytes, which whoever sends
/// the logs chooses, so an unkeyed hash (FxHash, faster on integers) would
/// let crafted values collide and stall the tenant's queries.
type ViewMap = HashMap<u128, Pending>;

#[derive(Debug, Default)]
struct ViewCounter {
    /// Keyed by the view itself (inline strings: the length, in the low 32
    /// bits, is ≤ 12) or by the bytes' address and length (length > 12):
    /// the two kinds cannot collide.
    views: ViewMap,
    held: Vec<Buffer>,
    /// Address of a held buffer → its index in `held`.
    held_at: HashMap<usize, u32>,
    held_bytes: usize,
    groups: HashMap<Box<str>, u64>,
    /// The bytes of the groups' strings.
    group_bytes: usize,
    /// Input read by dictionary key ([`super::dict_scan`]): the dictionary of
    /// the batches counted so far (one column chunk's, shared by its
    /// batches) and the rows counted by each of its keys.
    dictionary: Option<ArrayRef>,
    key_rows: Vec<u64>,
    null_rows: u64,
    /// Resolutions and views resolved, for the operator's metrics.
    resolves: usize,
    views_resolved: usize,
}

/// Counts one view: by itself when the string is inline, else by the
/// address and length of its bytes (`bases`: each data buffer's address,
/// `slots`: its index among the held buffers).
#[inline(always)]
fn count_view(views: &mut ViewMap, v: u128, bases: &[usize], slots: &[u32]) {
    let len = v as u32;
    let (key, held, offset) = if len <= 12 {
        (v, u32::MAX, 0)
    } else {
        let buffer = (v >> 64) as u32 as usize;
        let offset = (v >> 96) as u32;
        let at = bases[buffer] + offset as usize;
        (((at as u128) << 32) | len as u128, slots[buffer], offset)
    };
    views
        .entry(key)
        .or_insert(Pending {
            rows: 0,
            held,
            offset,
        })
        .rows += 1;
}

impl ViewCounter {
    fn add(&mut self, array: &StringViewArray, skip_nulls: bool) -> DfResult<()> {
        let buffers = array.data_buffers();
        // A batch that brings new buffers (the next column chunk's
        // dictionary, a plain page) first resolves the views counted so
        // far: the map then only holds the views of the buffers in use —
        // one dictionary's worth, which stays in the CPU's cache. Keeping
        // every row group's views until a size limit made each lookup a
        // cache miss (131 ms for 10M rows instead of ~20).
        let known = |b: &Buffer| {
            self.held_at
                .get(&(b.as_ptr() as usize))
                .is_some_and(|&slot| self.held[slot as usize].len() >= b.len())
        };
        if !self.views.is_empty() && !buffers.iter().all(known) {
            self.resolve()?;
        }
        let mut slots = Vec::with_capacity(buffers.len());
        for b in buffers {
            let at = b.as_ptr() as usize;
            let slot = match self.held_at.get(&at) {
                Some(&slot) if self.held[slot as usize].len() >= b.len() => slot,
                _ => {
                    let slot = u32::try_from(self.held.len())
                        .map_err(|_| DataFusionError::Internal("too many buffers held".into()))?;
                    self.held.push(b.clone());
                    self.held_bytes += b.capacity();
                    self.held_at.insert(at, slot);
                    slot
                }
            };
            slots.push(slot);
        }
        let views = array.views();
        let bases: Vec<usize> = buffers.iter().map(|b| b.as_ptr() as usize).collect();
        let map = &mut self.views;
        match array.nulls() {
            None => views
                .iter()
                .for_each(|&v| count_view(map, v, &bases, &slots)),
            Some(nulls) => {
                nulls
                    .valid_indices()
                    .for_each(|i| count_view(map, views[i], &bases, &slots));
                if !skip_nulls {
                    self.null_rows += nulls.null_count() as u64;
                }
            }
        }
        if self.views.len() > MAX_VIEWS || self.held_bytes > MAX_HELD_BYTES {
            self.resolve()?;
        }
        Ok(())
    }

    /// Moves the views' counts into their strings' groups and lets the
    /// buffers go.
    fn resolve(&mut self) -> DfResult<()> {
        if !self.views.is_empty() {
            self.resolves += 1;
            self.views_resolved += self.views.len();
        }
        for (key, p) in self.views.drain() {
            let len = key as u32 as usize;
            let inline;
            let bytes: &[u8] = if p.held == u32::MAX {
                inline = key.to_le_bytes();
                &inline[4..4 + len]
            } else {
                let start = p.offset as usize;
                &self.held[p.held as usize].as_slice()[start..start + len]
            };
            let s = std::str::from_utf8(bytes)
                .map_err(|e| DataFusionError::Internal(format!("a Utf8View value: {e}")))?;
            add_group(&mut self.groups, &mut self.group_bytes, s, p.rows);
        }
        self.held.clear();
        self.held_at.clear();
        self.held_bytes = 0;
        Ok(())
    }

    /// Counts the rows of a batch read by dictionary key: by key while the
    /// batches share a dictionary, into the groups when it changes.
    fn add_keys(&mut self, array: &DictionaryArray<Int32Type>, skip_nulls: bool) -> DfResult<()> {
        let values = array.values();
        if !self
            .dictionary
            .as_ref()
            .is_some_and(|held| same_dictionary(held, values))
        {
            self.resolve_keys()?;
            self.key_rows.resize(values.len(), 0);
            self.dictionary = Some(Arc::clone(values));
        }
        let rows = &mut self.key_rows;
        let keys = array.keys();
        match keys.nulls() {
            None => {
                for &k in keys.values() {
                    // A valid key is below the dictionary's length (the
                    // array was validated when it was built).
                    if let Some(n) = rows.get_mut(k as usize) {
                        *n += 1;
                    }
                }
            }
            Some(nulls) => {
                // The key of a null row is arbitrary: counted as 0 rows.
                for (&k, valid) in keys.values().iter().zip(nulls.inner().iter()) {
                    if let Some(n) = rows.get_mut(k as usize) {
                        *n += u64::from(valid);
                    }
                }
                if !skip_nulls {
                    self.null_rows += nulls.null_count() as u64;
                }
            }
        }
        Ok(())
    }

    /// Moves the rows counted by key into their strings' groups.
    fn resolve_keys(&mut self) -> DfResult<()> {
        let Some(dictionary) = self.dictionary.take() else {
            return Ok(());
        };
        let values = dictionary_strings(&dictionary)?;
        self.resolves += 1;
        for (k, rows) in self.key_rows.drain(..).enumerate() {
            if rows == 0 {
                continue;
            }
            self.views_resolved += 1;
            if values.is_null(k) {
                self.null_rows += rows;
            } else {
                add_group(
                    &mut self.groups,
                    &mut self.group_bytes,
                    values.value(k),
                    rows,
                );
            }
        }
        Ok(())
    }

    /// Gives back the memory of the (empty) maps.
    fn shrink(&mut self) {
        self.key_rows.shrink_to_fit();
        self.views.shrink_to_fit();
        self.held_at.shrink_to_fit();
        self.groups.shrink_to_fit();
    }

    fn memory(&self) -> usize {
        self.views.capacity() * (16 + std::mem::size_of::<Pending>())
            + self.held_bytes
            + self.held_at.capacity() * 16
            + self.groups.capacity() * (16 + 8)
            + self.group_bytes
            + self.key_rows.capacity() * 8
            + self
                .dictionary
                .as_ref()
                .map_or(0, |d| d.get_array_memory_size())
    }

    /// The groups counted so far as batches of at most `batch_size` rows;
    /// the counter is empty after.
    fn take(
        &mut self,
        schema: &SchemaRef,
        counts: &[Counts],
        batch_size: usize,
    ) -> DfResult<Vec<RecordBatch>> {
        self.resolve()?;
        self.resolve_keys()?;
        let mut groups: Vec<(Option<Box<str>>, u64)> =
            self.groups.drain().map(|(k, n)| (Some(k), n)).collect();
        self.group_bytes = 0;
        if self.null_rows > 0 {
            groups.push((None, std::mem::take(&mut self.null_rows)));
        }
        groups
            .chunks(batch_size)
            .map(|chunk| {
                let keys: StringViewArray = chunk.iter().map(|(k, _)| k.as_deref()).collect();
                let mut columns: Vec<ArrayRef> = vec![Arc::new(keys)];
                columns.extend(count_columns(
                    counts,
                    chunk.iter().map(|(k, n)| ([k.is_none(), false], *n)),
                ));
                Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
            })
            .collect()
    }
}

/// The output counts of groups given as (which grouping columns are null,
/// rows): `count(x)` is 0 where `x` is null.
fn count_columns(
    counts: &[Counts],
    groups: impl Iterator<Item = ([bool; 2], u64)> + Clone,
) -> Vec<ArrayRef> {
    counts
        .iter()
        .map(|c| {
            let values: Int64Array = groups
                .clone()
                .map(|(null, n)| match c {
                    Counts::Values(i) if null.get(*i).copied().unwrap_or(false) => Some(0),
                    _ => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                })
                .collect();
            Arc::new(values) as ArrayRef
        })
        .collect()
}

/// Whether `d`, a batch's dictionary, is the one `held` for the batches
/// counted so far: the reader builds each batch's dictionary array anew
/// over the same buffers, so the same dictionary is the same buffers (held
/// while counted by key, so their addresses are not reused).
fn same_dictionary(held: &ArrayRef, d: &ArrayRef) -> bool {
    Arc::ptr_eq(held, d) || held.to_data().ptr_eq(&d.to_data())
}

/// The strings of a dictionary read by key (`Dictionary(Int32, Utf8)`).
fn dictionary_strings(d: &ArrayRef) -> DfResult<&arrow::array::StringArray> {
    d.as_string_opt::<i32>()
        .ok_or_else(|| DataFusionError::Internal("CountByViewExec's dictionary is not Utf8".into()))
}

/// Adds `rows` to the group of `s`.
fn add_group(groups: &mut HashMap<Box<str>, u64>, group_bytes: &mut usize, s: &str, rows: u64) {
    match groups.get_mut(s) {
        Some(n) => *n += rows,
        None => {
            *group_bytes += s.len();
            groups.insert(s.into(), rows);
        }
    }
}

/// Count cells of a pair of dictionaries above this many are kept in a
/// hash map instead of an array (8 MiB of counts).
const MAX_CELLS: usize = 1 << 20;

/// The id of a null value in [`Strings`].
const NULL_ID: u32 = u32::MAX;

/// The distinct strings of one grouping column, each with a small id.
#[derive(Debug, Default)]
struct Strings {
    ids: HashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
    bytes: usize,
}

impl Strings {
    fn id(&mut self, s: &str) -> DfResult<u32> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        let id = u32::try_from(self.values.len())
            .ok()
            .filter(|&id| id != NULL_ID)
            .ok_or_else(|| DataFusionError::Internal("too many groups".into()))?;
        self.bytes += s.len();
        self.values.push(s.into());
        self.ids.insert(s.into(), id);
        Ok(id)
    }

    fn value(&self, id: u32) -> Option<&str> {
        self.values.get(id as usize).map(AsRef::as_ref)
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.values.clear();
        self.bytes = 0;
    }

    fn memory(&self) -> usize {
        self.ids.capacity() * (16 + 4) + self.values.capacity() * 16 + 2 * self.bytes
    }
}

/// Rows by pair of string ids: in an array at `(first + 1) * stride +
/// (second + 1)` (0 for null) while that takes at most [`MAX_CELLS`]
/// cells — the pairs of one first string then share a cache line or a few,
/// where a hash map's lookups missed the cache for half the resolving
/// time — else in a hash map of `first << 32 | second`.
#[derive(Debug, Default)]
struct PairGroups {
    dense: Vec<u64>,
    stride: usize,
    /// Cells of `dense` with rows.
    dense_groups: usize,
    map: HashMap<u64, u64>,
}

impl PairGroups {
    fn add(&mut self, first: u32, second: u32, rows: u64) {
        let slot = |id: u32| if id == NULL_ID { 0 } else { id as usize + 1 };
        let (r, c) = (slot(first), slot(second));
        if self.map.is_empty() && self.make_room(r, c) {
            if let Some(cell) = self.dense.get_mut(r * self.stride + c) {
                self.dense_groups += usize::from(*cell == 0);
                *cell += rows;
            }
        } else {
            self.spill();
            *self
                .map
                .entry((u64::from(first) << 32) | u64::from(second))
                .or_insert(0) += rows;
        }
    }

    /// Makes `dense` hold cell `(r, c)`; false when that would take more
    /// than [`MAX_CELLS`] cells.
    fn make_room(&mut self, r: usize, c: usize) -> bool {
        let rows = self.dense.len().checked_div(self.stride).unwrap_or(0);
        let needed_rows = rows.max(r + 1);
        let stride = if c < self.stride {
            self.stride
        } else {
            (c + 1).next_power_of_two().max(2 * self.stride).max(4)
        };
        if needed_rows.saturating_mul(stride) > MAX_CELLS {
            return false;
        }
        if stride != self.stride {
            let mut dense = vec![0; needed_rows * stride];
            if self.stride > 0 {
                for (row, cells) in self.dense.chunks(self.stride).enumerate() {
                    dense[row * stride..row * stride + self.stride].copy_from_slice(cells);
                }
            }
            self.dense = dense;
            self.stride = stride;
        } else if needed_rows > rows {
            self.dense.resize(needed_rows * stride, 0);
        }
        true
    }

    /// Moves the array's groups into the map.
    fn spill(&mut self) {
        for (x, y, rows) in self.take_dense() {
            self.map.insert((u64::from(x) << 32) | u64::from(y), rows);
        }
    }

    /// The array's groups (first id, second id, rows); the array is empty
    /// after.
    fn take_dense(&mut self) -> Vec<(u32, u32, u64)> {
        let id = |slot: usize| {
            slot.checked_sub(1)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(NULL_ID)
        };
        let mut groups = Vec::with_capacity(self.dense_groups);
        for (cell, &rows) in self.dense.iter().enumerate() {
            if rows > 0
                && let (Some(r), Some(c)) =
                    (cell.checked_div(self.stride), cell.checked_rem(self.stride))
            {
                groups.push((id(r), id(c), rows));
            }
        }
        self.dense.clear();
        self.stride = 0;
        self.dense_groups = 0;
        groups
    }

    /// Every group (first id, second id, rows); empty after.
    fn drain(&mut self) -> Vec<(u32, u32, u64)> {
        let mut groups = self.take_dense();
        groups.extend(
            self.map
                .drain()
                .map(|(k, rows)| ((k >> 32) as u32, k as u32, rows)),
        );
        groups
    }

    fn len(&self) -> usize {
        self.dense_groups + self.map.len()
    }

    fn memory(&self) -> usize {
        self.dense.capacity() * 8 + self.map.capacity() * 16
    }

    fn shrink(&mut self) {
        self.dense.shrink_to_fit();
        self.map.shrink_to_fit();
    }
}

/// Counts rows by two columns read by dictionary key: by pair of keys in
/// an array (`cells`) while the batches share their dictionaries (a row
/// group's), then — when either dictionary changes — each key with rows is
/// given its string's id once and each pair of keys with rows adds to the
/// group of its pair of ids (a hash of one integer, not of two strings).
#[derive(Debug, Default)]
struct PairCounter {
    dictionaries: Option<[ArrayRef; 2]>,
    /// Each dictionary's length; a null key counts as this (one past the
    /// last key).
    lengths: [usize; 2],
    /// Rows by pair of keys, `first * (lengths[1] + 1) + second`, and a
    /// last row of cells for the rows not counted; empty when that would be
    /// more than [`MAX_CELLS`] cells, and `sparse` counts.
    cells: Vec<u64>,
    sparse: HashMap<u64, u64>,
    strings: [Strings; 2],
    groups: PairGroups,
    resolves: usize,
    views_resolved: usize,
}

impl PairCounter {
    /// Counts a batch's rows; `skip_nulls` names the column whose null rows
    /// are not counted.
    fn add(
        &mut self,
        first: &DictionaryArray<Int32Type>,
        second: &DictionaryArray<Int32Type>,
        skip_nulls: Option<usize>,
    ) -> DfResult<()> {
        let (a, b) = (first.values(), second.values());
        if !self
            .dictionaries
            .as_ref()
            .is_some_and(|[x, y]| same_dictionary(x, a) && same_dictionary(y, b))
        {
            self.resolve()?;
            self.lengths = [a.len(), b.len()];
            // One row of cells more: the rows not counted.
            let cells = (a.len() + 2).saturating_mul(b.len() + 1);
            if cells <= MAX_CELLS {
                self.cells.resize(cells, 0);
            }
            self.dictionaries = Some([Arc::clone(a), Arc::clone(b)]);
        }
        let trash = (self.lengths[0] as u64 + 1) * (self.lengths[1] as u64 + 1);
        if self.cells.is_empty() {
            let sparse = &mut self.sparse;
            for_each_cell(first, second, self.lengths, skip_nulls, |cell| {
                if cell < trash {
                    *sparse.entry(cell).or_insert(0) += 1;
                }
            });
        } else {
            let cells = &mut self.cells;
            for_each_cell(first, second, self.lengths, skip_nulls, |cell| {
                if let Some(c) = cells.get_mut(cell as usize) {
                    *c += 1;
                }
            });
        }
        Ok(())
    }

    /// Moves the rows counted by pair of keys into the groups.
    fn resolve(&mut self) -> DfResult<()> {
        let Some([a, b]) = self.dictionaries.take() else {
            return Ok(());
        };
        let dictionaries = [dictionary_strings(&a)?, dictionary_strings(&b)?];
        self.resolves += 1;
        let width = self.lengths[1] + 1;
        let counted = (self.lengths[0] + 1) * width;
        let mut pairs: Vec<(usize, usize, u64)> = Vec::new();
        for (cell, rows) in self.cells.iter_mut().take(counted).enumerate() {
            if *rows > 0 {
                pairs.push((cell / width, cell % width, std::mem::take(rows)));
            }
        }
        pairs.extend(self.sparse.drain().map(|(cell, rows)| {
            let cell = usize::try_from(cell).unwrap_or(usize::MAX);
            (cell / width, cell % width, rows)
        }));
        self.cells.clear();
        // Each key's string id, found once: `None` until then.
        let mut ids: [Vec<Option<u32>>; 2] = [
            vec![None; self.lengths[0] + 1],
            vec![None; self.lengths[1] + 1],
        ];
        for (x, y, rows) in pairs {
            self.views_resolved += 1;
            let mut id = |side: usize, k: usize| -> DfResult<u32> {
                if let Some(Some(id)) = ids[side].get(k) {
                    return Ok(*id);
                }
                let d = &dictionaries[side];
                let id = if k < d.len() && !d.is_null(k) {
                    self.strings[side].id(d.value(k))?
                } else {
                    NULL_ID
                };
                if let Some(slot) = ids[side].get_mut(k) {
                    *slot = Some(id);
                }
                Ok(id)
            };
            let (first, second) = (id(0, x)?, id(1, y)?);
            self.groups.add(first, second, rows);
        }
        Ok(())
    }

    fn group_bytes(&self) -> usize {
        self.strings[0].bytes + self.strings[1].bytes
    }

    fn memory(&self) -> usize {
        self.cells.capacity() * 8
            + self.sparse.capacity() * 16
            + self.groups.memory()
            + self.strings[0].memory()
            + self.strings[1].memory()
            + self.dictionaries.as_ref().map_or(0, |[a, b]| {
                a.get_array_memory_size() + b.get_array_memory_size()
            })
    }

    fn shrink(&mut self) {
        self.cells.shrink_to_fit();
        self.sparse.shrink_to_fit();
        self.groups.shrink();
        for s in &mut self.strings {
            s.ids.shrink_to_fit();
            s.values.shrink_to_fit();
        }
    }

    /// The groups counted so far as batches of at most `batch_size` rows;
    /// the counter is empty after.
    fn take(
        &mut self,
        schema: &SchemaRef,
        counts: &[Counts],
        batch_size: usize,
    ) -> DfResult<Vec<RecordBatch>> {
        self.resolve()?;
        let groups = self.groups.drain();
        let [first, second] = &self.strings;
        let batches = groups
            .chunks(batch_size)
            .map(|chunk| {
                let a: StringViewArray = chunk.iter().map(|g| first.value(g.0)).collect();
                let b: StringViewArray = chunk.iter().map(|g| second.value(g.1)).collect();
                let mut columns: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b)];
                columns.extend(count_columns(
                    counts,
                    chunk
                        .iter()
                        .map(|&(x, y, n)| ([x == NULL_ID, y == NULL_ID], n)),
                ));
                Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
            })
            .collect::<DfResult<Vec<_>>>();
        for s in &mut self.strings {
            s.clear();
        }
        batches
    }
}

/// Calls `count` with each row's cell, `first * width + second` for keys
/// of dictionaries of `lengths` (`width` = the second's length + 1; a null
/// key is one past the dictionary's last); a row not counted (a null of
/// the `skip_nulls` column) gets a cell at or past `(lengths[0] + 1) *
/// width`. One pass over both columns and their validity, 64 rows a word,
/// without a branch a row: nulls are as frequent as not in an address
/// column, and a branch on each cost more than the counting.
fn for_each_cell(
    first: &DictionaryArray<Int32Type>,
    second: &DictionaryArray<Int32Type>,
    lengths: [usize; 2],
    skip_nulls: Option<usize>,
    mut count: impl FnMut(u64),
) {
    let [n1, n2] = lengths.map(|n| n as u64);
    let width = n2 + 1;
    let trash = (n1 + 1) * width;
    // A skipped null of the first column lands past the last row of cells.
    let null1 = if skip_nulls == Some(0) { n1 + 1 } else { n1 };
    // All ones: a null of the second column is counted (as the null key).
    let keep2 = if skip_nulls == Some(1) { 0 } else { u64::MAX };
    let (k1, k2) = (first.keys(), second.keys());
    let (v1, v2) = (k1.values(), k2.values());
    let len = v1.len().min(v2.len());
    let chunks1 = k1.nulls().map(|n| n.inner().bit_chunks());
    let chunks2 = k2.nulls().map(|n| n.inner().bit_chunks());
    let key = |k: i32, n: u64| u64::from(k as u32).min(n);
    for ((start, bits1), bits2) in (0..len)
        .step_by(64)
        .zip(validity_words(&chunks1))
        .zip(validity_words(&chunks2))
    {
        let end = (start + 64).min(len);
        for (j, (&a, &b)) in v1[start..end].iter().zip(&v2[start..end]).enumerate() {
            // All ones for a valid row, all zeros for a null one.
            let valid1 = ((bits1 >> j) & 1).wrapping_neg();
            let valid2 = ((bits2 >> j) & 1).wrapping_neg();
            let x = (key(a, n1) & valid1) | (null1 & !valid1);
            let y = (key(b, n2) & valid2) | (n2 & !valid2);
            let counted = valid2 | keep2;
            count(((x * width + y) & counted) | (trash & !counted));
        }
    }
}

/// A column's validity 64 rows a word (all ones past its end, or without
/// nulls).
fn validity_words<'a>(chunks: &'a Option<BitChunks<'a>>) -> impl Iterator<Item = u64> + 'a {
    chunks
        .iter()
        .flat_map(|c| c.iter().chain(std::iter::once(c.remainder_bits())))
        .chain(std::iter::repeat(u64::MAX))
}

/// The counter of one or of two grouping columns.
#[derive(Debug)]
enum Counter {
    One(ViewCounter),
    Two(PairCounter),
}

impl Counter {
    fn groups(&self) -> (usize, usize) {
        match self {
            Self::One(c) => (c.groups.len(), c.group_bytes),
            Self::Two(c) => (c.groups.len(), c.group_bytes()),
        }
    }

    /// Resolutions and keys resolved since last asked.
    fn take_metrics(&mut self) -> (usize, usize) {
        let (resolves, resolved) = match self {
            Self::One(c) => (&mut c.resolves, &mut c.views_resolved),
            Self::Two(c) => (&mut c.resolves, &mut c.views_resolved),
        };
        (std::mem::take(resolves), std::mem::take(resolved))
    }

    fn memory(&self) -> usize {
        match self {
            Self::One(c) => c.memory(),
            Self::Two(c) => c.memory(),
        }
    }

    fn shrink(&mut self) {
        match self {
            Self::One(c) => c.shrink(),
            Self::Two(c) => c.shrink(),
        }
    }

    fn take(
        &mut self,
        schema: &SchemaRef,
        counts: &[Counts],
        batch_size: usize,
    ) -> DfResult<Vec<RecordBatch>> {
        match self {
            Self::One(c) => c.take(schema, counts, batch_size),
            Self::Two(c) => c.take(schema, counts, batch_size),
        }
    }
}

/// A grouping column of a batch as a dictionary: as read by key, or (any
/// other input, which the rule does not plan but a rebuilt plan could
/// give) cast into one, a dictionary a batch.
fn as_dictionary(column: &ArrayRef) -> DfResult<DictionaryArray<Int32Type>> {
    if let Some(d) = column.as_dictionary_opt::<Int32Type>() {
        return Ok(d.clone());
    }
    let cast = arrow::compute::cast(
        column,
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
    )?;
    cast.as_dictionary_opt::<Int32Type>()
        .cloned()
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "CountByViewExec's column is {}, not a string",
                column.data_type()
            ))
        })
}

struct CountStream {
    /// `None` once the input is exhausted.
    input: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    columns: Vec<usize>,
    skip_nulls: Option<usize>,
    counts: Vec<Counts>,
    counter: Counter,
    reservation: MemoryReservation,
    batch_size: usize,
    ready: VecDeque<RecordBatch>,
    baseline: BaselineMetrics,
    /// How often the views were resolved into groups, and how many: with
    /// shared dictionary buffers, once per column chunk and about as many
    /// views as the chunk has distinct values.
    resolves: Count,
    views_resolved: Count,
}

impl CountStream {
    fn count_batch(&mut self, batch: &RecordBatch) -> DfResult<()> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        match (&mut self.counter, self.columns.as_slice()) {
            (Counter::One(counter), &[c]) => {
                let column = batch.column(c);
                let skip_nulls = self.skip_nulls.is_some();
                if let Some(array) = column.as_string_view_opt() {
                    counter.add(array, skip_nulls)?;
                } else if let Some(array) = column.as_dictionary_opt::<Int32Type>() {
                    counter.add_keys(array, skip_nulls)?;
                } else {
                    return Err(DataFusionError::Internal(format!(
                        "CountByViewExec's column is {}, not Utf8View or a dictionary",
                        column.data_type()
                    )));
                }
            }
            (Counter::Two(counter), &[a, b]) => {
                let (a, b) = (
                    as_dictionary(batch.column(a))?,
                    as_dictionary(batch.column(b))?,
                );
                counter.add(&a, &b, self.skip_nulls)?;
            }
            _ => {
                return Err(DataFusionError::Internal(
                    "CountByViewExec's counter does not match its columns".into(),
                ));
            }
        }
        let (groups, group_bytes) = self.counter.groups();
        if groups > MAX_GROUPS || group_bytes > MAX_GROUP_BYTES {
            self.emit()?;
        }
        let (resolves, resolved) = self.counter.take_metrics();
        self.resolves.add(resolves);
        self.views_resolved.add(resolved);
        // Over the query's memory, a partial result is emitted (as
        // DataFusion's own partial aggregation does) and the counter
        // starts over; only if that is not enough does the query fail.
        if self.reservation.try_resize(self.counter.memory()).is_err() {
            self.emit()?;
            self.counter.shrink();
            self.reservation.try_resize(self.counter.memory())?;
        }
        Ok(())
    }

    /// Queues the groups counted so far as output and empties the counter.
    fn emit(&mut self) -> DfResult<()> {
        let batches = self
            .counter
            .take(&self.schema, &self.counts, self.batch_size)?;
        self.ready.extend(batches);
        Ok(())
    }
}

impl Stream for CountStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                self.baseline.record_output(batch.num_rows());
                return Poll::Ready(Some(Ok(batch)));
            }
            let Some(input) = self.input.as_mut() else {
                self.reservation.free();
                return Poll::Ready(None);
            };
            match std::task::ready!(input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    if let Err(e) = self.count_batch(&batch) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.input = None;
                    let this = &mut *self;
                    match this
                        .counter
                        .take(&this.schema, &this.counts, this.batch_size)
                    {
                        Ok(batches) => this.ready.extend(batches),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                    let (resolves, resolved) = this.counter.take_metrics();
                    this.resolves.add(resolves);
                    this.views_resolved.add(resolved);
                }
            }
        }
    }
}

impl RecordBatchStream for CountStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{StringArray, UInt32Array};
    use arrow::compute::take;
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::sql::tests::answer_and_plan as run;

    /// Values of every kind: inline (≤ 12 bytes) and not, one only 13
    /// bytes long, an empty string, nulls.
    fn dictionary() -> StringViewArray {
        let mut values: Vec<Option<String>> = (0..40)
            .map(|i| match i % 4 {
                0 => Some(format!("10.0.0.{i}")),
                1 => Some(format!("2001:db8::{i:x}:{i:x}:{i:x}")),
                2 => Some(format!("host-{i}-of-a-rather-long-fleet.example.org")),
                _ => Some(format!("203.0.113.{:03}", i)),
            })
            .collect();
        values.push(Some(String::new()));
        // Either side of the inline limit.
        values.push(Some("exactly12byt".into()));
        values.push(Some("exactly13byte".into()));
        values.push(None);
        values.into_iter().collect()
    }

    /// Batches as the Parquet reader hands them over: some whose views all
    /// point into one shared buffer (dictionary pages), some with their own
    /// copies of the same strings (plain pages), spread over partitions.
    fn table(partitions: usize, batches: usize) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let dict = dictionary();
        let mut parts = vec![Vec::new(); partitions];
        for b in 0..batches {
            let idx: UInt32Array = (0..1000u32)
                .map(|i| (i * 7 + b as u32 * 13) % dict.len() as u32)
                .collect();
            let mut keys = take(&dict, &idx, None).unwrap();
            if b % 3 == 2 {
                // Plain: each value copied into this batch's own buffer.
                let plain: StringArray = keys.as_string_view().iter().collect();
                keys = Arc::new(StringViewArray::from_iter(plain.iter()));
            }
            let n: Int64Array = (0..1000).map(|i| i as i64).collect();
            let mut batch = RecordBatch::try_new(schema.clone(), vec![keys, Arc::new(n)]).unwrap();
            if b % 5 == 4 {
                // A slice: its views' buffers hold rows it does not.
                batch = batch.slice(100, 800);
            }
            parts[b % partitions].push(batch);
        }
        Arc::new(MemTable::try_new(schema, parts).unwrap())
    }

    fn session(rule: bool, table: Arc<MemTable>) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(CountByView));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("t", table).unwrap();
        ctx
    }

    /// The rows the plan's `CountByViewExec` operators emitted.
    fn partial_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let own = match plan.downcast_ref::<CountByViewExec>() {
            Some(exec) => exec
                .metrics()
                .and_then(|m| m.output_rows())
                .unwrap_or_default(),
            None => 0,
        };
        own + plan.children().into_iter().map(partial_rows).sum::<usize>()
    }

    #[tokio::test]
    async fn counts_by_view_equal_datafusions_own() {
        for (partitions, batches) in [(1, 5), (2, 12), (3, 30)] {
            let table = table(partitions, batches);
            let plain = session(false, table.clone());
            let fast = session(true, table);
            for sql in [
                "SELECT k, count(*) AS c FROM t GROUP BY k ORDER BY c DESC, k",
                "SELECT k, count(*) AS c FROM t WHERE k IS NOT NULL GROUP BY k ORDER BY c DESC, k LIMIT 7",
                "SELECT k, count(k) AS v, count(*) AS c, count(1) AS o FROM t GROUP BY k ORDER BY k",
                "SELECT k, count(*) AS c FROM t WHERE n % 3 = 1 GROUP BY k ORDER BY k",
                "SELECT count(*) AS groups, sum(c) AS rows FROM (SELECT k, count(*) AS c FROM t GROUP BY k)",
            ] {
                let (want, _) = run(&plain, sql).await;
                let (got, plan) = run(&fast, sql).await;
                assert_eq!(got, want, "{sql} over {partitions} partitions");
                if partitions > 1 {
                    assert!(plan.contains("CountByViewExec"), "{sql}:\n{plan}");
                }
            }
        }
    }

    #[tokio::test]
    async fn only_plain_counts_by_one_string_column_are_replaced() {
        let fast = session(true, table(2, 8));
        for sql in [
            "SELECT k, sum(n) FROM t GROUP BY k",
            "SELECT k, count(DISTINCT n) FROM t GROUP BY k",
            "SELECT k, count(n) FROM t GROUP BY k",
            "SELECT k, n, count(*) FROM t GROUP BY k, n",
            "SELECT upper(k), count(*) FROM t GROUP BY upper(k)",
            "SELECT n, count(*) FROM t GROUP BY n",
            "SELECT k, count(*) FILTER (WHERE n > 5) FROM t GROUP BY k",
        ] {
            let (_, plan) = run(&fast, sql).await;
            assert!(!plan.contains("CountByViewExec"), "{sql}:\n{plan}");
        }
        let (_, plan) = run(
            &fast,
            "SELECT k, count(*) FROM t WHERE k IS NOT NULL GROUP BY k",
        )
        .await;
        assert!(plan.contains("skip_nulls=true"), "{plan}");
        assert!(
            !plan.contains("FilterExec"),
            "the filter is absorbed:\n{plan}"
        );
    }

    #[tokio::test]
    async fn many_groups_are_emitted_as_partial_results_and_still_add_up() {
        // More distinct values than a partial result keeps, each in several
        // batches and partitions, so one group is emitted more than once.
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8View, true)]));
        let distinct = MAX_GROUPS * 3 / 2;
        let mut parts = vec![Vec::new(), Vec::new()];
        for round in 0..3 {
            let keys: StringViewArray = (0..distinct)
                .map(|i| {
                    Some(format!(
                        "user-{:08}@corp.example",
                        (i * 7919 + round) % distinct
                    ))
                })
                .collect();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(keys)]).unwrap();
            parts[round % 2].push(batch);
        }
        let table = Arc::new(MemTable::try_new(schema, parts).unwrap());
        let sql = "SELECT count(*) AS groups, min(c) AS least, max(c) AS most, sum(c) AS rows \
                   FROM (SELECT k, count(*) AS c FROM t GROUP BY k)";
        let (want, _) = run(&session(false, table.clone()), sql).await;
        let fast = session(true, table);
        let (got, plan) = run(&fast, sql).await;
        assert!(plan.contains("CountByViewExec"), "{plan}");
        assert_eq!(got, want);
        // Some groups were emitted by more than one partial result.
        let plan = fast
            .sql("SELECT k, count(*) FROM t GROUP BY k")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        datafusion::physical_plan::collect(plan.clone(), fast.task_ctx())
            .await
            .unwrap();
        let emitted = partial_rows(&plan);
        assert!(
            emitted > distinct,
            "{emitted} partial rows for {distinct} groups"
        );
        let rows = 3 * distinct;
        assert!(
            got.contains(&format!("| {distinct}  | 3     | 3    | {rows} |")),
            "{got}"
        );
    }
}
