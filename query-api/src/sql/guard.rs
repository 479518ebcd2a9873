//! Limits that keep one tenant's query from hurting anyone else: the size
//! of what is planned, and the time, cancellation and memory of what runs.
//!
//! - [`check_statement`] bounds the parsed query before planning: planning
//!   (and every optimizer pass) recurses over expressions, so a left-deep
//!   chain such as `1+1+…+1` or 20,000 `OR`s would overflow a thread stack
//!   and abort the process. Depth and size are capped (ClickHouse's
//!   `max_ast_depth`/`max_ast_elements` defaults) and the SQL runtime's
//!   threads get a stack sized for that depth ([`SQL_THREAD_STACK_BYTES`]).
//! - [`GuardExec`] wraps every operator of the physical plan: each batch
//!   any operator produces checks the query's deadline and cancellation
//!   flag, so a timed-out or abandoned query stops at its next batch
//!   (aborting the task alone cannot stop an operator that never yields),
//!   spends the task's tokio scheduling budget (so a CPU-bound query yields
//!   the runtime's threads to other tenants' queries regularly), and
//!   checks that the batch fits in what is left of the query's memory
//!   pool.

use std::fmt;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
use futures::Stream;

use crate::error::ApiError;

/// Deepest expression nesting accepted (ClickHouse's `max_ast_depth`).
pub const MAX_EXPR_DEPTH: usize = 1_000;
/// Most expression nodes in one statement (ClickHouse's `max_ast_elements`).
pub const MAX_EXPR_NODES: usize = 50_000;
/// Stack of the SQL runtime's threads. Planning a 1,000-deep expression
/// takes a few MiB in a debug build (about 5 KiB per level, measured); the
/// rest is headroom for dropping the deepest tree the SQL size limit admits.
/// Thread stacks are reserved, not committed: only touched pages cost memory.
pub const SQL_THREAD_STACK_BYTES: usize = 64 << 20;

/// Refuses statements too deep or too large to plan safely.
pub fn check_statement(statement: &DfStatement) -> Result<(), ApiError> {
    struct Measure {
        depth: usize,
        nodes: usize,
    }
    impl Visitor for Measure {
        type Break = &'static str;
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<Self::Break> {
            self.depth += 1;
            self.nodes += 1;
            // Breaking here stops the walk before it descends further, so
            // the visit itself never recurses deeper than the limit.
            if self.depth > MAX_EXPR_DEPTH {
                return ControlFlow::Break("depth");
            }
            if self.nodes > MAX_EXPR_NODES {
                return ControlFlow::Break("nodes");
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Self::Break> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut measure = Measure { depth: 0, nodes: 0 };
    let outcome = match statement {
        DfStatement::Statement(s) => s.visit(&mut measure),
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) => s.visit(&mut measure),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    match outcome {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break("depth") => Err(ApiError::BadRequest(format!(
            "the query nests expressions more than {MAX_EXPR_DEPTH} deep (a long chain of \
             operators such as a+b+…, a OR b OR …, a||b||… counts one level per operator); \
             use IN (…) for long lists of alternatives, or split the expression"
        ))),
        ControlFlow::Break(_) => Err(ApiError::BadRequest(format!(
            "the query has more than {MAX_EXPR_NODES} expression nodes; split it"
        ))),
    }
}

/// Why a running query must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    TimedOut,
    Cancelled,
}

/// Shared by a query's operators: its deadline and whether it was
/// cancelled (client gone, engine gave up).
#[derive(Debug)]
pub struct QueryGuard {
    deadline: Instant,
    stop: AtomicU8,
}

const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const CANCELLED: u8 = 2;

impl QueryGuard {
    pub fn new(deadline: Instant) -> Arc<Self> {
        Arc::new(Self {
            deadline,
            stop: AtomicU8::new(RUNNING),
        })
    }

    /// When the query must have ended.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn cancel(&self) {
        let _ =
            self.stop
                .compare_exchange(RUNNING, CANCELLED, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Why the query must stop, if it must (the deadline is checked here).
    pub fn stopped(&self) -> Option<StopReason> {
        match self.stop.load(Ordering::Relaxed) {
            TIMED_OUT => Some(StopReason::TimedOut),
            CANCELLED => Some(StopReason::Cancelled),
            _ if Instant::now() >= self.deadline => {
                let _ = self.stop.compare_exchange(
                    RUNNING,
                    TIMED_OUT,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.stopped()
            }
            _ => None,
        }
    }

    fn check(&self) -> DfResult<()> {
        match self.stopped() {
            None => Ok(()),
            Some(StopReason::TimedOut) => Err(DataFusionError::Execution(
                "query stopped: time limit reached".into(),
            )),
            Some(StopReason::Cancelled) => {
                Err(DataFusionError::Execution("query cancelled".into()))
            }
        }
    }
}

/// Cancels the query when dropped — e.g. when the HTTP request's future is
/// dropped because the client went away.
pub struct CancelOnDrop(pub Arc<QueryGuard>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Wraps every operator of `plan` in a [`GuardExec`].
pub fn guard_plan(
    plan: Arc<dyn ExecutionPlan>,
    guard: &Arc<QueryGuard>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    let plan = if children.is_empty() {
        plan
    } else {
        let guarded = children
            .into_iter()
            .map(|c| guard_plan(c, guard))
            .collect::<DfResult<Vec<_>>>()?;
        // The wrapper reports its input's properties, so the parent's stay valid.
        plan.replace_children(
            guarded,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
    };
    Ok(Arc::new(GuardExec {
        properties: plan.properties().clone(),
        input: plan,
        guard: guard.clone(),
    }))
}

/// The one child of an operator of ours that has exactly one.
pub(super) fn only_child(
    mut children: Vec<Arc<dyn ExecutionPlan>>,
    operator: &str,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    match children.len() {
        1 => Ok(children.swap_remove(0)),
        n => Err(DataFusionError::Internal(format!(
            "{operator} has exactly one child, not {n}"
        ))),
    }
}

/// Passes its input's batches through, checking the query's deadline,
/// cancellation and memory pool at each one. Invisible to downcasts.
#[derive(Debug)]
pub struct GuardExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    guard: Arc<QueryGuard>,
}

impl DisplayAs for GuardExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuardExec")
    }
}

impl ExecutionPlan for GuardExec {
    fn name(&self) -> &str {
        "GuardExec"
    }

    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.input.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
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
        let input = only_child(children, "GuardExec")?;
        Ok(Arc::new(GuardExec {
            properties: input.properties().clone(),
            input,
            guard: self.guard.clone(),
        }))
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
        self.guard.check()?;
        let pool = context.memory_pool().clone();
        let inner = self.input.execute(partition, context)?;
        Ok(Box::pin(GuardStream {
            schema: inner.schema(),
            inner,
            guard: self.guard.clone(),
            pool,
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
        Ok(input_stats[0].clone())
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}

struct GuardStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    guard: Arc<QueryGuard>,
    pool: Arc<dyn MemoryPool>,
}

impl GuardStream {
    /// A batch must fit in what the query's pool has left: operators that
    /// do not account their output (scalar functions, projections) are
    /// stopped here, one batch after they grew past the limit.
    fn fits(&self, batch: &RecordBatch) -> DfResult<()> {
        let probe = MemoryConsumer::new("GuardExec").register(&self.pool);
        probe.try_grow(batch.get_array_memory_size())
    }
}

impl Stream for GuardStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Err(e) = self.guard.check() {
            return Poll::Ready(Some(Err(e)));
        }
        // Every batch of every operator spends the task's scheduling
        // budget: a CPU-bound operator (a cross join feeding an aggregate
        // never waits on I/O) then yields to the runtime regularly, so the
        // other tenants' queries on the same threads get their turn.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if polled.is_ready() {
            coop.made_progress();
        }
        match polled {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(
                self.guard
                    .check()
                    .and_then(|()| self.fits(&batch))
                    .map(|()| batch),
            )),
            other => other,
        }
    }
}

impl RecordBatchStream for GuardStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn parse(sql: &str) -> DfStatement {
        DFParser::parse_sql(sql).unwrap().pop_front().unwrap()
    }

    #[test]
    fn deep_and_large_expressions_are_refused_before_planning() {
        let chain = |op: &str, n: usize| {
            let terms: Vec<String> = (0..n).map(|i| format!("{}", i % 10)).collect();
            format!("SELECT {}", terms.join(op))
        };
        assert!(check_statement(&parse(&chain("+", 500))).is_ok());
        let err = check_statement(&parse(&chain("+", 3_000))).unwrap_err();
        assert!(err.to_string().contains("more than 1000 deep"), "{err}");
        assert!(check_statement(&parse(&chain(" OR ", 20_000))).is_err());
        assert!(check_statement(&parse(&chain(" || ", 5_000))).is_err());
        // Wide is fine up to the node limit: a long IN list is one level.
        let list: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        let sql = format!("SELECT 1 WHERE 5 IN ({})", list.join(","));
        assert!(check_statement(&parse(&sql)).is_ok());
        let list: Vec<String> = (0..60_000).map(|i| i.to_string()).collect();
        let sql = format!("SELECT 1 WHERE 5 IN ({})", list.join(","));
        let err = check_statement(&parse(&sql)).unwrap_err();
        assert!(err.to_string().contains("expression nodes"), "{err}");
    }

    #[test]
    fn the_guard_times_out_and_cancels() {
        let g = QueryGuard::new(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(g.stopped(), None);
        drop(CancelOnDrop(g.clone()));
        assert_eq!(g.stopped(), Some(StopReason::Cancelled));
        let g = QueryGuard::new(Instant::now());
        assert_eq!(g.stopped(), Some(StopReason::TimedOut));
        // The first reason sticks.
        g.cancel();
        assert_eq!(g.stopped(), Some(StopReason::TimedOut));
    }
}
