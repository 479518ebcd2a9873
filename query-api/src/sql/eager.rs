//! Aggregating the fact side of a join before the join.
//!
//! The analyst's join is a star: events (logs) joined to a dimension made
//! unique by a `GROUP BY` (a host's vulnerabilities, a device's name),
//! then counted per dimension attribute. DataFusion joins every event row
//! first and aggregates after: at 10M log rows, `logs ⋈ devices ⋈
//! findings` probes 5.6 M rows, emits 825,000 joined rows into the second
//! join and hashes 582,000 rows into the aggregation (docs/benchmarks.md,
//! analyst SQL). Counting the events per join key first turns those into
//! one row per distinct address:
//!
//! ```text
//! SELECT d.name, count(*) FROM logs l JOIN (… GROUP BY ip) d ON l.ip = d.ip GROUP BY d.name
//! →
//! SELECT d.name, coalesce(sum(c), 0)
//! FROM (SELECT ip, count(*) AS c FROM logs GROUP BY ip) l JOIN (…) d ON l.ip = d.ip
//! GROUP BY d.name
//! ```
//!
//! Exact for any inner equi-join (eager aggregation, Yan and Larson, VLDB
//! 1995): each pre-aggregated row stands for the rows of its group, and the
//! join repeats it exactly as often as it would have repeated each of them,
//! so counts and sums add up over the joined rows and `min`/`max` are
//! unchanged. The pre-aggregation groups by the side's join keys (and
//! the side's grouped columns) and computes the aggregates, whose
//! arguments must all be on that side (`count(*)`, `count`/`sum`/`min`/
//! `max` of a column).
//!
//! When it pays is a question of distinct counts, which Parquet does not
//! record, so the rule takes the shape that guarantees the other side adds
//! no rows: it rewrites only when the other side is unique on its join
//! keys (a `GROUP BY` of them, as DataFusion's functional dependencies
//! tell), the pre-aggregated side is not (else there is nothing to fold),
//! that side is not itself an aggregation, and the side's columns the
//! query groups by follow from its join keys (so the pre-aggregation has
//! one group per key; a single string key is counted by `view_count.rs`)
//! — or, grouped by one more string column, the side is a table scan whose
//! rows are only counted (`view_count.rs` counts them by the two columns'
//! dictionary keys, where a hash aggregation would cost more than the join
//! saves).
//! A join with a filter, a
//! `DISTINCT`, `FILTER` or ordered aggregate, or grouping by expressions
//! other than columns is left alone.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Dependency, ExprSchema, NullEquality};
use datafusion::error::Result as DfResult;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::logical_plan::builder::project;
use datafusion::logical_expr::{Aggregate, Expr, Join, JoinType, LogicalPlan, col, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule; added to every tenant session ([`super::session`]).
#[derive(Debug, Default)]
pub struct EagerAggregation;

/// One aggregate of the original, split in two.
struct Split {
    /// Computed per join key on the pre-aggregated side.
    inner: Expr,
    /// Combines the inner results over the joined rows.
    outer: Expr,
    /// A count: the outer sum is wrapped so that it stays a non-null 0.
    count: bool,
}

impl OptimizerRule for EagerAggregation {
    fn name(&self) -> &str {
        "securenet_eager_aggregation"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite(&aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(LogicalPlan::Aggregate(aggregate))),
        }
    }
}

fn rewrite(aggregate: &Aggregate) -> DfResult<Option<LogicalPlan>> {
    if matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_))) {
        return Ok(None);
    }
    // The join, under at most a projection of its columns.
    let below = match aggregate.input.as_ref() {
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            p.input.as_ref()
        }
        other => other,
    };
    let LogicalPlan::Join(join) = below else {
        return Ok(None);
    };
    if join.join_type != JoinType::Inner
        || join.filter.is_some()
        || join.on.is_empty()
        || join.null_equality != NullEquality::NullEqualsNothing
        || join.null_aware
    {
        return Ok(None);
    }
    let mut left_keys = Vec::with_capacity(join.on.len());
    let mut right_keys = Vec::with_capacity(join.on.len());
    for (l, r) in &join.on {
        let (Expr::Column(l), Expr::Column(r)) = (l, r) else {
            return Ok(None);
        };
        left_keys.push(l.clone());
        right_keys.push(r.clone());
    }
    let mut group_columns = Vec::with_capacity(aggregate.group_expr.len());
    for g in &aggregate.group_expr {
        match g {
            Expr::Column(c) => group_columns.push(c.clone()),
            Expr::Alias(a) => match a.expr.as_ref() {
                Expr::Column(c) => group_columns.push(c.clone()),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    let Some(arguments) = aggregate_arguments(&aggregate.aggr_expr) else {
        return Ok(None);
    };

    for left_side in [true, false] {
        let (side, other, side_keys, other_keys) = if left_side {
            (&join.left, &join.right, &left_keys, &right_keys)
        } else {
            (&join.right, &join.left, &right_keys, &left_keys)
        };
        // The side's columns the query groups by must follow from its join
        // keys, so the pre-aggregation has as many groups as keys: grouping
        // `logs ⋈ findings` by address *and* host made it 1.5× slower — a
        // two-column hash aggregation over 5.6 M rows costs more than the
        // join it saves (docs/benchmarks.md). Unless the pre-aggregation
        // counts the rows of a scan by two of its string columns, which
        // `view_count.rs` does by the Parquet dictionaries' keys.
        let side_groups: Vec<Column> = group_columns
            .iter()
            .filter(|c| side.schema().has_column(c))
            .cloned()
            .collect();
        let follows = side_groups
            .iter()
            .all(|c| side_keys.contains(c) || determined_by(side, side_keys, c));
        if !(follows || counted_by_key_pair(side, side_keys, &side_groups, &arguments))
            || !arguments
                .iter()
                .flatten()
                .all(|c| side.schema().has_column(c))
            || is_aggregation(side)
            || !unique_on(other, other_keys)
            || unique_on(side, side_keys)
        {
            continue;
        }
        // A plan that cannot be built (a user column named like ours) or
        // would change a type leaves the query as it was, or tries the
        // other side.
        if let Ok(Some(rewritten)) = build(aggregate, join, left_side, side_keys, &side_groups) {
            return Ok(Some(rewritten));
        }
    }
    Ok(None)
}

/// The column each aggregate reads (`None` for `count(*)`), when every
/// aggregate is one the rule splits.
fn aggregate_arguments(aggr_expr: &[Expr]) -> Option<Vec<Option<Column>>> {
    aggr_expr
        .iter()
        .map(|e| {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(e) else {
                return None;
            };
            if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
                return None;
            }
            let name = func.name().to_ascii_lowercase();
            match (name.as_str(), params.args.as_slice()) {
                ("count", [Expr::Literal(v, _)]) if !v.is_null() => Some(None),
                ("count" | "sum" | "min" | "max", [Expr::Column(c)]) => Some(Some(c.clone())),
                _ => None,
            }
        })
        .collect()
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// Whether the pre-aggregation of `side` would count rows (`count(*)`
/// alone) by exactly two string columns of a table scan whose filters test
/// nothing but those columns: the shape `view_count.rs` counts by the
/// Parquet dictionaries' keys (when the table is Parquet; else DataFusion
/// aggregates, as slowly as the doc of `rewrite` says).
fn counted_by_key_pair(
    side: &LogicalPlan,
    keys: &[Column],
    groups: &[Column],
    arguments: &[Option<Column>],
) -> bool {
    let mut columns: Vec<&Column> = Vec::with_capacity(2);
    for c in keys.iter().chain(groups) {
        if !columns.contains(&c) {
            columns.push(c);
        }
    }
    let schema = side.schema();
    columns.len() == 2
        && arguments.iter().all(Option::is_none)
        && columns.iter().all(|c| {
            schema.field_from_column(c).is_ok_and(|f| {
                matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                )
            })
        })
        && scans_only(
            side,
            &columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        )
}

/// Whether `plan` is a scan of a table (no limit) under renames, column
/// projections and filters, where every filter reads only `names`.
fn scans_only(plan: &LogicalPlan, names: &[&str]) -> bool {
    let reads_only = |e: &Expr| {
        e.column_refs()
            .iter()
            .all(|c| names.contains(&c.name.as_str()))
    };
    match plan {
        LogicalPlan::SubqueryAlias(a) => scans_only(&a.input, names),
        LogicalPlan::Projection(p) => {
            p.expr.iter().all(|e| matches!(e, Expr::Column(_))) && scans_only(&p.input, names)
        }
        LogicalPlan::Filter(f) => reads_only(&f.predicate) && scans_only(&f.input, names),
        LogicalPlan::TableScan(t) => t.fetch.is_none() && t.filters.iter().all(reads_only),
        _ => false,
    }
}

/// Whether `plan` is an aggregation under renames, projections and filters.
fn is_aggregation(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(_) => true,
        LogicalPlan::Projection(p) => is_aggregation(&p.input),
        LogicalPlan::SubqueryAlias(a) => is_aggregation(&a.input),
        LogicalPlan::Filter(f) => is_aggregation(&f.input),
        _ => false,
    }
}

/// Whether the values of `keys` determine those of `column` in `plan`
/// (one value per key, however many rows carry it).
fn determined_by(plan: &LogicalPlan, keys: &[Column], column: &Column) -> bool {
    let schema = plan.schema();
    let (Ok(indices), Ok(target)) = (
        keys.iter()
            .map(|k| schema.index_of_column(k))
            .collect::<DfResult<Vec<usize>>>(),
        schema.index_of_column(column),
    ) else {
        return false;
    };
    schema.functional_dependencies().iter().any(|d| {
        d.source_indices.iter().all(|i| indices.contains(i)) && d.target_indices.contains(&target)
    })
}

/// Whether no two rows of `plan` share the values of `keys`.
fn unique_on(plan: &LogicalPlan, keys: &[Column]) -> bool {
    let schema = plan.schema();
    let Ok(indices) = keys
        .iter()
        .map(|k| schema.index_of_column(k))
        .collect::<DfResult<Vec<usize>>>()
    else {
        return false;
    };
    schema.functional_dependencies().iter().any(|d| {
        d.mode == Dependency::Single && d.source_indices.iter().all(|i| indices.contains(i))
    })
}

fn build(
    aggregate: &Aggregate,
    join: &Join,
    left_side: bool,
    side_keys: &[Column],
    side_groups: &[Column],
) -> DfResult<Option<LogicalPlan>> {
    let side = if left_side { &join.left } else { &join.right };
    // Pre-aggregation keys: the side's join keys, then the side's columns
    // the query groups by (each determined by the join keys, see `rewrite`).
    let mut keys: Vec<Column> = Vec::new();
    for c in side_keys.iter().chain(side_groups) {
        if !keys.contains(c) {
            keys.push(c.clone());
        }
    }
    let mut splits = Vec::with_capacity(aggregate.aggr_expr.len());
    for (i, e) in aggregate.aggr_expr.iter().enumerate() {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = unalias(e) else {
            return Ok(None);
        };
        let AggregateFunctionParams {
            args,
            null_treatment,
            ..
        } = params;
        let partial = format!("__securenet_eager_{i}");
        let inner = Expr::AggregateFunction(AggregateFunction::new_udf(
            Arc::clone(func),
            args.clone(),
            false,
            None,
            vec![],
            *null_treatment,
        ))
        .alias(&partial);
        let name = func.name().to_ascii_lowercase();
        let count = name == "count";
        let combine = if count || name == "sum" {
            sum_udaf()
        } else {
            Arc::clone(func)
        };
        let outer = Expr::AggregateFunction(AggregateFunction::new_udf(
            combine,
            vec![col(partial)],
            false,
            None,
            vec![],
            None,
        ));
        splits.push(Split {
            inner,
            outer,
            count,
        });
    }
    let pre = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::clone(side),
        keys.into_iter().map(Expr::Column).collect(),
        splits.iter().map(|s| s.inner.clone()).collect(),
    )?);
    let (left, right) = if left_side {
        (Arc::new(pre), Arc::clone(&join.right))
    } else {
        (Arc::clone(&join.left), Arc::new(pre))
    };
    let joined = LogicalPlan::Join(Join::try_new(
        left,
        right,
        join.on.clone(),
        None,
        JoinType::Inner,
        join.join_constraint,
        join.null_equality,
        false,
    )?);
    let outer_names: Vec<String> = (0..splits.len())
        .map(|i| format!("__securenet_eager_out_{i}"))
        .collect();
    let outer = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::new(joined),
        aggregate.group_expr.clone(),
        splits
            .iter()
            .zip(&outer_names)
            .map(|(s, n)| s.outer.clone().alias(n))
            .collect(),
    )?);
    // The original names and qualifiers, in the original order; a count
    // stays a non-null Int64 (every group has rows, so its sum is never
    // null — the schema says so too).
    let groups = aggregate.group_expr.len();
    let outer_schema = Arc::clone(outer.schema());
    let named = (0..groups)
        .map(|i| {
            let (q, f) = outer_schema.qualified_field(i);
            Expr::Column(Column::new(q.cloned(), f.name()))
        })
        .chain(splits.iter().zip(&outer_names).map(|(s, n)| {
            if s.count {
                coalesce(vec![col(n), lit(0i64)])
            } else {
                col(n)
            }
        }))
        .enumerate()
        .map(|(i, e)| {
            let (q, f) = aggregate.schema.qualified_field(i);
            e.alias_qualified(q.cloned(), f.name())
        });
    let rewritten = project(outer, named)?;
    // A sum of sums can widen the type (decimals gain precision): then the
    // plan stays as it was.
    let same_types = rewritten
        .schema()
        .fields()
        .iter()
        .zip(aggregate.schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type());
    Ok(same_types.then_some(rewritten))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// Events `f` (3,000 rows over 40 addresses, some null, values with
    /// nulls) in two partitions, and a dimension `d` with two rows for
    /// some addresses and some addresses no event has.
    fn session(eager: bool) -> SessionContext {
        let config = SessionConfig::new().with_target_partitions(2);
        let ctx = SessionContext::new_with_config(config);
        ctx.add_optimizer_rule(Arc::new(super::super::distinct::MixedDistinctToGroupBy));
        if eager {
            ctx.add_optimizer_rule(Arc::new(EagerAggregation));
        }
        let fs = Arc::new(Schema::new(vec![
            Field::new("ip", DataType::Utf8, true),
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let part = |range: std::ops::Range<i64>| {
            let ip: StringArray = range
                .clone()
                .map(|i| (i % 17 != 0).then(|| format!("10.0.0.{}", (i * 7) % 40)))
                .collect();
            let host: StringArray = range.clone().map(|i| Some(format!("h{}", i % 5))).collect();
            let v: Int64Array = range.map(|i| (i % 4 != 0).then_some(i % 101)).collect();
            RecordBatch::try_new(fs.clone(), vec![Arc::new(ip), Arc::new(host), Arc::new(v)])
                .unwrap()
        };
        let f = MemTable::try_new(
            fs.clone(),
            vec![vec![part(0..1500)], vec![part(1500..3000)]],
        );
        ctx.register_table("f", Arc::new(f.unwrap())).unwrap();
        let ds = Arc::new(Schema::new(vec![
            Field::new("ip", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Int64, true),
        ]));
        let ip: StringArray = (0..60)
            .map(|i| (i != 7).then(|| format!("10.0.0.{}", (i * 3) % 50)))
            .collect();
        let name: StringArray = (0..60).map(|i| Some(format!("dev-{}", i % 9))).collect();
        let score: Int64Array = (0..60).map(|i| Some(i % 13)).collect();
        let d = RecordBatch::try_new(
            ds.clone(),
            vec![Arc::new(ip), Arc::new(name), Arc::new(score)],
        );
        let d = MemTable::try_new(ds, vec![vec![d.unwrap()]]).unwrap();
        ctx.register_table("d", Arc::new(d)).unwrap();
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df
            .clone()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        let batches = df.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), plan)
    }

    const DIM: &str =
        "WITH dim AS (SELECT ip, max(name) AS name, min(score) AS score FROM d GROUP BY ip)";

    #[tokio::test]
    async fn pre_aggregated_joins_give_the_same_answers() {
        let plain = session(false);
        let eager = session(true);
        let cases = [
            format!(
                "{DIM} SELECT dim.name, count(*) AS n FROM f JOIN dim ON f.ip = dim.ip GROUP BY dim.name ORDER BY 1"
            ),
            format!(
                "{DIM} SELECT dim.name, count(*) AS n, count(f.v) AS c, sum(f.v) AS s, \
                     min(f.v) AS lo, max(f.v) AS hi FROM f JOIN dim ON f.ip = dim.ip \
                     GROUP BY dim.name ORDER BY 1"
            ),
            format!(
                "{DIM} SELECT dim.ip AS addr, dim.score, f.ip, count(*) AS n, max(f.host) AS last \
                     FROM dim JOIN f ON dim.ip = f.ip GROUP BY dim.ip, dim.score, f.ip \
                     ORDER BY n DESC, addr"
            ),
            format!(
                "{DIM}, hot AS (SELECT ip, count(*) AS k FROM d WHERE score > 3 GROUP BY ip) \
                     SELECT dim.name, hot.k, count(*) AS n FROM f JOIN dim ON f.ip = dim.ip \
                     JOIN hot ON hot.ip = dim.ip GROUP BY 1, 2 ORDER BY n DESC, 1, 2 LIMIT 5"
            ),
            format!("{DIM} SELECT count(*) AS n, sum(f.v) AS s FROM f JOIN dim ON f.ip = dim.ip"),
            // Grouped by another string column of the events and only
            // counted (by the two columns' keys, view_count.rs), also as a
            // distinct count and with a filter on the two columns.
            format!(
                "{DIM} SELECT dim.name, f.host, count(*) AS n FROM f JOIN dim ON f.ip = dim.ip \
                     GROUP BY dim.name, f.host ORDER BY 1, 2"
            ),
            format!(
                "{DIM} SELECT dim.name, dim.score, count(*) AS n, count(DISTINCT f.host) AS hosts \
                     FROM f JOIN dim ON f.ip = dim.ip GROUP BY dim.name, dim.score \
                     ORDER BY n DESC, 1, 2"
            ),
            format!(
                "{DIM} SELECT dim.name, count(*) AS n, count(DISTINCT f.host) AS hosts \
                     FROM f JOIN dim ON f.ip = dim.ip WHERE f.host <> 'h3' GROUP BY dim.name ORDER BY 1"
            ),
            // No event matches: a count is 0 and a sum null, as without the rule.
            format!(
                "{DIM} SELECT count(*) AS n, sum(f.v) AS s FROM f JOIN dim ON f.ip = dim.ip \
                     WHERE dim.score > 100"
            ),
        ];
        for sql in &cases {
            let (want, _) = run(&plain, sql).await;
            let (got, plan) = run(&eager, sql).await;
            assert_eq!(got, want, "{sql}");
            assert!(plan.contains("__securenet_eager_0"), "{sql}:\n{plan}");
        }
    }

    #[tokio::test]
    async fn a_column_named_like_the_rules_own_does_not_break_the_query() {
        let sql = "WITH dim AS (SELECT ip, max(name) AS __securenet_eager_0 FROM d GROUP BY ip) \
                   SELECT dim.__securenet_eager_0 AS name, count(*) AS n \
                   FROM f JOIN dim ON f.ip = dim.ip GROUP BY 1 ORDER BY 1";
        let (want, _) = run(&session(false), sql).await;
        let (got, _) = run(&session(true), sql).await;
        assert_eq!(got, want);
        assert!(got.contains("dev-"), "{got}");
    }

    #[tokio::test]
    async fn joins_that_could_grow_or_need_the_other_side_are_left_alone() {
        let plain = session(false);
        let eager = session(true);
        let cases = [
            // The dimension is not unique on the key.
            "SELECT d.name, count(*) FROM f JOIN d ON f.ip = d.ip GROUP BY d.name ORDER BY 1",
            // An aggregate of the dimension's column.
            "WITH dim AS (SELECT ip, max(score) AS score FROM d GROUP BY ip) \
             SELECT f.host, sum(dim.score) FROM f JOIN dim ON f.ip = dim.ip GROUP BY f.host ORDER BY 1",
            // Grouped by another column of the events, but not only
            // counted, or not a string, or filtered by a third column.
            "WITH dim AS (SELECT ip, max(name) AS name FROM d GROUP BY ip) \
             SELECT dim.name, f.host, sum(f.v) FROM f JOIN dim ON f.ip = dim.ip \
             GROUP BY dim.name, f.host ORDER BY 1, 2",
            "WITH dim AS (SELECT ip, max(name) AS name FROM d GROUP BY ip) \
             SELECT dim.name, f.v, count(*) FROM f JOIN dim ON f.ip = dim.ip \
             GROUP BY dim.name, f.v ORDER BY 1, 2",
            "WITH dim AS (SELECT ip, max(name) AS name FROM d GROUP BY ip) \
             SELECT dim.name, count(*), count(DISTINCT f.host) FROM f JOIN dim ON f.ip = dim.ip \
             WHERE f.v > 10 GROUP BY dim.name ORDER BY 1",
            // A join filter; an outer join; a grouping expression.
            "WITH dim AS (SELECT ip, max(score) AS score FROM d GROUP BY ip) \
             SELECT f.host, count(*) FROM f JOIN dim ON f.ip = dim.ip AND f.v > dim.score GROUP BY f.host ORDER BY 1",
            "WITH dim AS (SELECT ip, max(score) AS score FROM d GROUP BY ip) \
             SELECT dim.score, count(*) FROM f LEFT JOIN dim ON f.ip = dim.ip GROUP BY dim.score ORDER BY 1",
            "WITH dim AS (SELECT ip, max(name) AS name FROM d GROUP BY ip) \
             SELECT upper(dim.name), count(*) FROM f JOIN dim ON f.ip = dim.ip GROUP BY upper(dim.name) ORDER BY 1",
        ];
        for sql in cases {
            let (want, _) = run(&plain, sql).await;
            let (got, plan) = run(&eager, sql).await;
            assert_eq!(got, want, "{sql}");
            assert!(!plan.contains("__securenet_eager"), "{sql}:\n{plan}");
        }
    }
}
