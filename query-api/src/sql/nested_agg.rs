//! Small two-level aggregations in one pass a level, partitioned once.
//!
//! A grouped distinct count (`count(DISTINCT x) … GROUP BY k`) is planned
//! as two aggregations (DataFusion's `single_distinct_aggregation_to_group_by`,
//! or [`super::distinct`]): by `k, x`, then by `k`. Each level is a partial
//! aggregation in the scan's partitions, a hash repartition on its keys and
//! a final aggregation — four aggregations and two repartitions in all.
//! The partial aggregation by `k, x` saves nothing when most `(k, x)` pairs
//! are distinct, as they are for the billing query "devices a day"
//! (usage by day: 22,540 groups of 28,870 rows), yet every row is hashed
//! into it and its groups are hashed again by the final one; and for an
//! input that small the fixed cost of each operator is most of the query.
//!
//! Because the outer keys are some of the inner ones, rows that share the
//! outer keys also share them at the inner level. So the rule deals the
//! input's rows by the outer keys once and aggregates both levels in the
//! partition they land in, each in a single pass:
//!
//! ```text
//! FinalPartitioned(k)                 SinglePartitioned(k)
//!   Repartition(hash k)                 SinglePartitioned(k, x)
//!     Partial(k)                  →       Repartition(hash k)
//!       FinalPartitioned(k, x)              input
//!         Repartition(hash k, x)
//!           Partial(k, x)
//!             input
//! ```
//!
//! Exact for any input: every group of either level is computed whole in one
//! partition. Applied only when the input's statistics show at most
//! [`SMALL_INPUT_ROWS`] rows and it joins nothing (a join's estimate can
//! be far below what it yields): on a large input whose pairs repeat (distinct
//! hosts per day over millions of log rows) the partial aggregation shrinks
//! what is dealt out a thousandfold, and dealing by the outer keys alone
//! could leave one core with all the work.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{ExecutionPlan, InputOrderMode, Partitioning};

/// Inputs of at most this many rows (by their statistics, exact or
/// estimated) are aggregated this way. DataFusion gives a partial
/// aggregation 100,000 rows before it judges whether it reduces enough to
/// keep; an input this small never reaches that judgement.
pub const SMALL_INPUT_ROWS: usize = 100_000;

/// The rule; added to every tenant session ([`super::session`]).
#[derive(Debug, Default)]
pub struct NestedAggregationInOnePass;

impl PhysicalOptimizerRule for NestedAggregationInOnePass {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| match collapse(&node)? {
            Some(collapsed) => Ok(Transformed::yes(collapsed)),
            None => Ok(Transformed::no(node)),
        })
        .data()
    }

    fn name(&self) -> &str {
        "securenet_nested_aggregation_in_one_pass"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` as an aggregation of `mode` with one plain grouping (no grouping
/// sets), no limit and no input order to keep.
fn aggregate(node: &Arc<dyn ExecutionPlan>, mode: AggregateMode) -> Option<&AggregateExec> {
    let agg = node.downcast_ref::<AggregateExec>()?;
    (*agg.mode() == mode
        && agg.group_expr().is_single()
        && !agg.group_expr().is_empty()
        && agg.limit_options().is_none()
        && *agg.input_order_mode() == InputOrderMode::Linear)
        .then_some(agg)
}

/// The input of a hash repartition that keeps no order, with its
/// partition count.
fn hash_repartitioned(node: &Arc<dyn ExecutionPlan>) -> Option<(&Arc<dyn ExecutionPlan>, usize)> {
    let repartition = node.downcast_ref::<RepartitionExec>()?;
    match repartition.partitioning() {
        Partitioning::Hash(_, n) if !repartition.preserve_order() => {
            Some((repartition.input(), *n))
        }
        _ => None,
    }
}

/// Whether `plan` joins anywhere below: a join's output is estimated from
/// its inputs' and can be far larger than the estimate (a key joined to
/// many rows), so no input with a join counts as small.
fn has_join(plan: &dyn ExecutionPlan) -> bool {
    plan.name().ends_with("JoinExec") || plan.children().into_iter().any(|c| has_join(c.as_ref()))
}

/// The one-pass form of the two-level aggregation rooted at `node`, if it is
/// one over a small input.
fn collapse(node: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(outer_final) = aggregate(node, AggregateMode::FinalPartitioned) else {
        return Ok(None);
    };
    let Some((outer_partial, partitions)) = hash_repartitioned(outer_final.input()) else {
        return Ok(None);
    };
    let Some(outer_partial) = aggregate(outer_partial, AggregateMode::Partial) else {
        return Ok(None);
    };
    let Some(inner_final) = aggregate(outer_partial.input(), AggregateMode::FinalPartitioned)
    else {
        return Ok(None);
    };
    let Some((inner_partial, _)) = hash_repartitioned(inner_final.input()) else {
        return Ok(None);
    };
    let Some(inner_partial) = aggregate(inner_partial, AggregateMode::Partial) else {
        return Ok(None);
    };
    // The outer keys must be inner keys as they are (columns of the inner
    // aggregation's output, whose grouping columns come first): then the
    // expressions the inner aggregation computes them with deal the rows.
    let inner_keys = inner_partial.group_expr().expr();
    let mut deal_by: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for (expr, _) in outer_partial.group_expr().expr() {
        let Some(column) = expr.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let Some((inner_expr, _)) = inner_keys.get(column.index()) else {
            return Ok(None);
        };
        deal_by.push(Arc::clone(inner_expr));
    }
    let input = inner_partial.input();
    if has_join(input.as_ref()) {
        return Ok(None);
    }
    // No statistics, no rewrite: the plan DataFusion made stays.
    let Ok(statistics) = StatisticsContext::new().compute(input.as_ref(), &StatisticsArgs::new())
    else {
        return Ok(None);
    };
    if statistics
        .num_rows
        .get_value()
        .is_none_or(|&n| n > SMALL_INPUT_ROWS)
    {
        return Ok(None);
    }
    let dealt: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        Arc::clone(input),
        Partitioning::Hash(deal_by, partitions),
    )?);
    let inner = in_one_pass(inner_partial, dealt)?;
    let outer = in_one_pass(outer_partial, inner)?;
    // The plan above expects the names and types the final aggregation gave.
    if outer.schema() != node.schema() {
        return Ok(None);
    }
    Ok(Some(outer))
}

/// The whole aggregation `partial` began, in one pass over `input`, whose
/// rows are dealt by its keys (or some of them) and which yields what
/// `partial`'s input did.
fn in_one_pass(
    partial: &AggregateExec,
    input: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        partial.group_expr().clone(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        input,
        partial.input_schema(),
    )?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// `rows` rows in two partitions: 7 keys (one null), `hosts` hosts
    /// (some null), values with nulls.
    fn table(rows: i64, hosts: i64) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("host", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let k: StringArray = (0..rows)
            .map(|i| (i % 7 != 3).then(|| format!("k{}", i % 7)))
            .collect();
        let host: StringArray = (0..rows)
            .map(|i| (i % 11 != 0).then(|| format!("h{}", (i * 7) % hosts)))
            .collect();
        let v: Int64Array = (0..rows).map(|i| (i % 5 != 0).then_some(i % 97)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(k), Arc::new(host), Arc::new(v)],
        )
        .unwrap();
        let cut = rows as usize * 2 / 5;
        let (a, b) = (batch.slice(0, cut), batch.slice(cut, rows as usize - cut));
        Arc::new(MemTable::try_new(schema, vec![vec![a], vec![b]]).unwrap())
    }

    fn session(with_rule: bool, rows: i64) -> SessionContext {
        let mut state = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(NestedAggregationInOnePass));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.add_optimizer_rule(Arc::new(super::super::distinct::MixedDistinctToGroupBy));
        ctx.register_table("t", table(rows, 400)).unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    const QUERIES: [&str; 5] = [
        "SELECT k, count(DISTINCT host) AS hosts, sum(v) AS total FROM t GROUP BY k ORDER BY k",
        "SELECT k, CASE WHEN k = 'k1' THEN count(DISTINCT host) ELSE sum(v) END AS value \
         FROM t GROUP BY k ORDER BY k",
        "SELECT k, count(*), count(DISTINCT host), max(v) FROM t GROUP BY k ORDER BY k",
        "SELECT lower(k) AS lk, v % 3 AS r, count(DISTINCT upper(host)) FROM t \
         GROUP BY lower(k), v % 3 ORDER BY 1, 2",
        "SELECT k, count(DISTINCT v) FROM t WHERE host > 'h2' GROUP BY k ORDER BY k",
    ];

    #[tokio::test]
    async fn small_inputs_answer_as_before_in_one_pass_a_level() {
        let (with, without) = (session(true, 5_000), session(false, 5_000));
        for sql in QUERIES {
            assert_eq!(
                answer(&with, sql).await,
                answer(&without, sql).await,
                "{sql}"
            );
            let plan = answer(&with, &format!("EXPLAIN {sql}")).await;
            assert_eq!(
                plan.matches("mode=SinglePartitioned").count(),
                2,
                "{sql}\n{plan}"
            );
            assert_eq!(
                plan.matches("RepartitionExec: partitioning=Hash").count(),
                1,
                "{plan}"
            );
            assert!(!plan.contains("mode=Partial"), "{plan}");
        }
    }

    #[tokio::test]
    async fn large_inputs_keep_their_partial_aggregations() {
        let rows = SMALL_INPUT_ROWS as i64 + 1;
        let (with, without) = (session(true, rows), session(false, rows));
        // Not the filtered one: its input is estimated at a fifth of the rows.
        for sql in &QUERIES[..4] {
            let plan = answer(&with, &format!("EXPLAIN {sql}")).await;
            assert!(!plan.contains("mode=SinglePartitioned"), "{sql}\n{plan}");
            assert_eq!(plan.matches("mode=Partial").count(), 2, "{plan}");
        }
        assert_eq!(
            answer(&with, QUERIES[0]).await,
            answer(&without, QUERIES[0]).await
        );
    }

    #[tokio::test]
    async fn joined_inputs_keep_their_partial_aggregations() {
        // 5,000 rows joined on a key of 7 values: millions of rows, whatever
        // the estimate says.
        let sql = "EXPLAIN SELECT a.k, count(DISTINCT b.host) FROM t a JOIN t b ON a.k = b.k \
                   GROUP BY a.k";
        let plan = answer(&session(true, 5_000), sql).await;
        assert!(plan.contains("HashJoinExec"), "{plan}");
        assert!(!plan.contains("mode=SinglePartitioned"), "{plan}");
    }
}
