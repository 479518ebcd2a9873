//! `count(*)` beside `count(DISTINCT x)` as two plain aggregations.
//!
//! DataFusion evaluates a grouped `count(DISTINCT x)` with one hash set
//! per group behind a row-at-a-time adapter, unless every other aggregate
//! of the query is `sum`, `min` or `max` — then its own rule
//! (`single_distinct_aggregation_to_group_by`) groups by `x` first and
//! counts the groups instead. Analysts write `count(*)` beside the distinct
//! count ("events, and from how many hosts"), which that rule does not
//! take, and the adapter then costs ~150 ns a row: 82 ms of CPU for the
//! 553,000 joined rows of `logs ⋈ findings` at 10M log rows
//! (docs/benchmarks.md, analyst SQL). This rule takes those too:
//!
//! ```text
//! SELECT k, count(*), count(DISTINCT x), max(y) FROM t GROUP BY k
//! →
//! SELECT k, coalesce(sum(c), 0), count(x), max(m)
//! FROM (SELECT k, x, count(*) AS c, max(y) AS m FROM t GROUP BY k, x)
//! GROUP BY k
//! ```
//!
//! Exact because each group of the outer aggregation is the union of its
//! inner groups: counts add up, `min`/`max`/`sum` of partial results are
//! those of the rows, and the inner groups of one `k` are the distinct
//! values of `x` (a null `x` is one group, which `count(x)` skips as
//! `count(DISTINCT x)` does). Only grouped aggregations are rewritten (a
//! global `count(DISTINCT x)` is one hash set already), and only when
//! every distinct aggregate has the same single argument and no `FILTER`
//! or `ORDER BY`.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result as DfResult;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::logical_plan::builder::project;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, col, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule; added to every tenant session ([`super::session`]).
#[derive(Debug, Default)]
pub struct MixedDistinctToGroupBy;

const DISTINCT_ALIAS: &str = "__securenet_distinct";

/// How each aggregate of the original is computed from the inner one.
enum Outer {
    /// `f(DISTINCT x)` → `f(x)` over the inner groups.
    Distinct,
    /// `count(…)` → the sum of the inner counts.
    Count,
    /// `sum`, `min`, `max` → the same function over the inner results.
    Same,
}

fn classify(aggr_expr: &[Expr]) -> Option<Vec<Outer>> {
    let mut distinct_arg: Option<&Expr> = None;
    let mut kinds = Vec::with_capacity(aggr_expr.len());
    for e in aggr_expr {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
            return None;
        };
        if params.filter.is_some() || !params.order_by.is_empty() {
            return None;
        }
        let name = func.name().to_ascii_lowercase();
        if params.distinct {
            let [arg] = params.args.as_slice() else {
                return None;
            };
            match distinct_arg {
                Some(seen) if seen != arg => return None,
                _ => distinct_arg = Some(arg),
            }
            kinds.push(Outer::Distinct);
        } else if name == "count" {
            kinds.push(Outer::Count);
        } else if matches!(name.as_str(), "sum" | "min" | "max") {
            kinds.push(Outer::Same);
        } else {
            return None;
        }
    }
    // Without a count beside it DataFusion's own rule already applies.
    let takes = distinct_arg.is_some() && kinds.iter().any(|k| matches!(k, Outer::Count));
    takes.then_some(kinds)
}

impl OptimizerRule for MixedDistinctToGroupBy {
    fn name(&self) -> &str {
        "securenet_mixed_distinct_to_group_by"
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
        let grouped = !aggregate.group_expr.is_empty()
            && !matches!(aggregate.group_expr.first(), Some(Expr::GroupingSet(_)));
        let kinds = if grouped {
            classify(&aggregate.aggr_expr)
        } else {
            None
        };
        let Some(kinds) = kinds else {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        };
        let original = aggregate.clone();
        let Aggregate {
            input,
            group_expr,
            aggr_expr,
            schema,
            ..
        } = aggregate;

        // Inner: the original keys (named, so the outer one can refer to
        // them whatever they are), the distinct argument, the partials.
        let groups = group_expr.len();
        let mut inner_groups = Vec::with_capacity(groups + 1);
        let mut outer_groups = Vec::with_capacity(groups);
        for (i, g) in group_expr.into_iter().enumerate() {
            let name = format!("__securenet_group_{i}");
            inner_groups.push(g.alias(&name));
            outer_groups.push(col(name));
        }
        let mut inner_aggr = Vec::new();
        let mut outer_aggr = Vec::with_capacity(aggr_expr.len());
        let mut finish = Vec::with_capacity(aggr_expr.len());
        for (i, (e, kind)) in aggr_expr.into_iter().zip(kinds).enumerate() {
            let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
                unreachable!("classify accepted only aggregate functions");
            };
            let AggregateFunctionParams {
                mut args,
                null_treatment,
                ..
            } = params;
            let name = format!("__securenet_aggregate_{i}");
            let (outer, total) = match kind {
                Outer::Distinct => {
                    if inner_groups.len() == groups {
                        inner_groups.push(args.swap_remove(0).alias(DISTINCT_ALIAS));
                    }
                    let f = AggregateFunction::new_udf(
                        func,
                        vec![col(DISTINCT_ALIAS)],
                        false,
                        None,
                        vec![],
                        null_treatment,
                    );
                    (Expr::AggregateFunction(f), None)
                }
                Outer::Count | Outer::Same => {
                    let partial = format!("__securenet_partial_{i}");
                    let inner = AggregateFunction::new_udf(
                        Arc::clone(&func),
                        args,
                        false,
                        None,
                        vec![],
                        null_treatment,
                    );
                    inner_aggr.push(Expr::AggregateFunction(inner).alias(&partial));
                    let is_count = matches!(kind, Outer::Count);
                    let f = if is_count { sum_udaf() } else { func };
                    let outer = AggregateFunction::new_udf(
                        f,
                        vec![col(partial)],
                        false,
                        None,
                        vec![],
                        None,
                    );
                    (Expr::AggregateFunction(outer), is_count.then_some(()))
                }
            };
            outer_aggr.push(outer.alias(&name));
            // A count stays a non-null Int64 (every outer group has rows,
            // so the sum is never null; the schema says so too).
            finish.push(match total {
                Some(()) => coalesce(vec![col(name), lit(0i64)]),
                None => col(name),
            });
        }

        let inner = LogicalPlan::Aggregate(Aggregate::try_new(input, inner_groups, inner_aggr)?);
        let outer = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::new(inner),
            outer_groups.clone(),
            outer_aggr,
        )?);
        // The original names and qualifiers, in the original order.
        let named = outer_groups
            .into_iter()
            .chain(finish)
            .enumerate()
            .map(|(i, e)| {
                let (qualifier, field) = schema.qualified_field(i);
                e.alias_qualified(qualifier.cloned(), field.name())
            });
        let rewritten = project(outer, named)?;
        // A sum of sums can widen the type (decimals gain precision each
        // time): then the plan stays as it was.
        let same_types = rewritten
            .schema()
            .fields()
            .iter()
            .zip(schema.fields())
            .all(|(a, b)| a.data_type() == b.data_type());
        if !same_types {
            return Ok(Transformed::no(LogicalPlan::Aggregate(original)));
        }
        Ok(Transformed::yes(rewritten))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// 1,000 rows: 7 keys (one null), 13 hosts (some null), values with nulls.
    fn table() -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let rows = 0..1000i64;
        let k: StringArray = rows
            .clone()
            .map(|i| (i % 7 != 3).then(|| format!("k{}", i % 7)))
            .collect();
        let host: StringArray = rows
            .clone()
            .map(|i| (i % 11 != 0).then(|| format!("h{}", (i * 7) % 13)))
            .collect();
        let v: Int64Array = rows.map(|i| (i % 5 != 0).then_some(i % 97)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(k), Arc::new(host), Arc::new(v)],
        )
        .unwrap();
        // Two partitions, so partial and final aggregation both run.
        let (a, b) = (batch.slice(0, 400), batch.slice(400, 600));
        Arc::new(MemTable::try_new(schema, vec![vec![a], vec![b]]).unwrap())
    }

    fn session(with_rule: bool) -> SessionContext {
        let ctx = SessionContext::new();
        if with_rule {
            ctx.add_optimizer_rule(Arc::new(MixedDistinctToGroupBy));
        }
        ctx.register_table("t", table()).unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let schema = format!("{:?}", df.schema().as_arrow());
        let batches = df.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), schema)
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let (text, _) = answer(ctx, &format!("EXPLAIN {sql}")).await;
        text
    }

    #[tokio::test]
    async fn answers_names_and_types_are_those_without_the_rule() {
        let queries = [
            "SELECT k, count(*) AS n, count(DISTINCT host) AS hosts FROM t GROUP BY k ORDER BY k",
            "SELECT k, count(DISTINCT host), count(v), count(*), sum(v), min(v), max(v) \
             FROM t GROUP BY k ORDER BY k",
            "SELECT lower(k) AS lk, count(*), count(DISTINCT upper(host)), max(DISTINCT upper(host)) \
             FROM t GROUP BY lower(k) ORDER BY 1",
            "SELECT k, sum(CAST(v AS DECIMAL(10, 2))), count(*), count(DISTINCT host) FROM t \
             GROUP BY k ORDER BY k",
            "SELECT k, host IS NULL AS nohost, count(*), count(DISTINCT v) FROM t \
             GROUP BY k, host IS NULL ORDER BY 1, 2",
            "SELECT t.k, count(*) FILTER (WHERE v > 3), count(DISTINCT host) FROM t GROUP BY t.k ORDER BY 1",
            "SELECT count(*), count(DISTINCT host) FROM t",
            // The distinct argument is the key itself.
            "SELECT k, count(*), count(DISTINCT k) FROM t GROUP BY k ORDER BY k",
            "SELECT k, count(*) AS n, count(DISTINCT host) FROM t WHERE v > 1000 GROUP BY k",
        ];
        let (with, without) = (session(true), session(false));
        for sql in queries {
            let got = answer(&with, sql).await;
            assert_eq!(got, answer(&without, sql).await, "{sql}");
            assert!(
                got.0.lines().count() > 3 || sql.contains("v > 1000"),
                "{sql}: {}",
                got.0
            );
        }
    }

    #[tokio::test]
    async fn a_count_beside_a_distinct_count_becomes_two_groupings() {
        let ctx = session(true);
        let sql = "SELECT k, count(*), count(DISTINCT host), max(v) FROM t GROUP BY k";
        let text = plan(&ctx, sql).await;
        // No aggregation is distinct any more (the output keeps its name).
        let aggregations = text.lines().filter(|l| l.contains("Aggregate"));
        assert!(aggregations.clone().count() >= 2, "{text}");
        assert!(
            aggregations.clone().all(|l| !l.contains("DISTINCT")),
            "{text}"
        );
        assert!(text.contains("__securenet_distinct"), "{text}");
        // Not taken: a FILTER, two distinct arguments, no grouping, avg.
        for sql in [
            "SELECT k, count(*) FILTER (WHERE v > 3), count(DISTINCT host) FROM t GROUP BY k",
            "SELECT k, count(*), count(DISTINCT host), count(DISTINCT v) FROM t GROUP BY k",
            "SELECT count(*), count(DISTINCT host) FROM t",
            "SELECT k, avg(v), count(*), count(DISTINCT host) FROM t GROUP BY k",
            // A sum of decimal sums would be a wider decimal.
            "SELECT k, sum(CAST(v AS DECIMAL(10, 2))), count(*), count(DISTINCT host) FROM t GROUP BY k",
        ] {
            let text = plan(&ctx, sql).await;
            assert!(!text.contains("__securenet"), "{sql}: {text}");
        }
    }
}
