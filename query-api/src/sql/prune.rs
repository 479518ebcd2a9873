//! Date partitions pruned from predicates on the event time.
//!
//! Every lake object sits under `date=<UTC day of its ts>`, but a query says
//! `ts >= TIMESTAMP '…'` (or, as the API's own listings do,
//! `CAST(ts AS BIGINT) >= <ms>`), never `date`. DataFusion prunes listing
//! partitions only by predicates on the partition column itself, so without
//! help a one-hour window of a month opens the footer of every object of
//! the month. [`DatePartitioned`] wraps a listing table and, at scan time,
//! adds the `date` bounds that the pushed-down time predicates imply: the
//! listing then visits only those day directories (fewer LIST requests on
//! S3, no footers of other days). The time predicates stay as they were —
//! the date bounds are implied by them, so adding them never changes a
//! result, only what is read.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType, col, lit,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

const MS_PER_DAY: i64 = 86_400_000;

/// The listing partition column: the UTC day of the time column.
const PARTITION_COLUMN: &str = "date";

/// A listing table partitioned by `date` = the UTC day of `time_column`.
#[derive(Debug)]
pub struct DatePartitioned {
    inner: Arc<dyn TableProvider>,
    /// The same files read with filters evaluated while decoding, for
    /// scans that look values up (`super::lookup`).
    lookups: Arc<dyn TableProvider>,
    time_column: String,
}

impl DatePartitioned {
    pub fn new(
        inner: Arc<dyn TableProvider>,
        lookups: Arc<dyn TableProvider>,
        time_column: impl Into<String>,
    ) -> Self {
        Self {
            inner,
            lookups,
            time_column: time_column.into(),
        }
    }

    /// `filters` plus the `date` bounds they imply.
    fn with_date_bounds(&self, filters: &[Expr]) -> Vec<Expr> {
        let mut out = filters.to_vec();
        let mut range = Range::ALL;
        for f in filters {
            range = range.and(bounds(f, &self.time_column));
        }
        let day = |ms: i64| i32::try_from(ms.div_euclid(MS_PER_DAY)).ok();
        if let Some(d) = range.lower.and_then(day) {
            out.push(col(PARTITION_COLUMN).gt_eq(lit(ScalarValue::Date32(Some(d)))));
        }
        if let Some(d) = range.upper.and_then(day) {
            out.push(col(PARTITION_COLUMN).lt_eq(lit(ScalarValue::Date32(Some(d)))));
        }
        out
    }
}

#[async_trait]
impl TableProvider for DatePartitioned {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let looked_up = super::lookup::lookup_columns(filters, &[PARTITION_COLUMN]);
        let filters = self.with_date_bounds(filters);
        let scan = self.inner.scan(state, projection, &filters, limit).await?;
        if !looked_up.is_empty() && super::lookup::pays(state, &scan, &looked_up).await {
            let scan = self
                .lookups
                .scan(state, projection, &filters, limit)
                .await?;
            return Ok(Arc::new(super::lookup::CompactViewsExec::new(scan)));
        }
        Ok(scan)
    }
}

/// Inclusive bounds on the time column in milliseconds; `None` = open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lower: Option<i64>,
    upper: Option<i64>,
}

impl Range {
    const ALL: Range = Range {
        lower: None,
        upper: None,
    };

    /// Both hold: the tighter bound of each side.
    fn and(self, other: Range) -> Range {
        let tighter = |a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(pick(a, b)),
            (a, b) => a.or(b),
        };
        Range {
            lower: tighter(self.lower, other.lower, i64::max),
            upper: tighter(self.upper, other.upper, i64::min),
        }
    }

    /// Either holds: a side is bounded only if both are.
    fn or(self, other: Range) -> Range {
        let looser = |a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(pick(a, b)),
            _ => None,
        };
        Range {
            lower: looser(self.lower, other.lower, i64::min),
            upper: looser(self.upper, other.upper, i64::max),
        }
    }
}

/// The range of the time column (in ms) that rows passing `expr` lie in;
/// conservative: anything not understood bounds nothing.
fn bounds(expr: &Expr, time_column: &str) -> Range {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => bounds(left, time_column).and(bounds(right, time_column)),
            Operator::Or => bounds(left, time_column).or(bounds(right, time_column)),
            _ => {
                if let (true, Some(v)) = (is_time(left, time_column), literal_ms(right)) {
                    compare(*op, v)
                } else if let (true, Some(v), Some(op)) =
                    (is_time(right, time_column), literal_ms(left), op.swap())
                {
                    compare(op, v)
                } else {
                    Range::ALL
                }
            }
        },
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr, time_column) => match (literal_ms(low), literal_ms(high)) {
            (Some(low), Some(high)) => {
                compare(Operator::GtEq, low).and(compare(Operator::LtEq, high))
            }
            _ => Range::ALL,
        },
        _ => Range::ALL,
    }
}

/// Rows with `time op v` (v in ms, possibly fractional as `Ms`).
fn compare(op: Operator, v: Ms) -> Range {
    let (lower, upper) = match op {
        Operator::Eq => (Some(v.ceil), Some(v.floor)),
        Operator::GtEq => (Some(v.ceil), None),
        Operator::Gt => (v.floor.checked_add(1), None),
        Operator::LtEq => (None, Some(v.floor)),
        Operator::Lt => (None, v.ceil.checked_sub(1)),
        _ => (None, None),
    };
    Range { lower, upper }
}

/// A literal instant in milliseconds, rounded both ways (a microsecond or
/// nanosecond literal can fall between two milliseconds).
#[derive(Debug, Clone, Copy)]
struct Ms {
    floor: i64,
    ceil: i64,
}

/// The time column itself, or its cast to BIGINT (milliseconds, as the
/// column is stored).
fn is_time(expr: &Expr, time_column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == time_column,
        Expr::Cast(c) if c.field.data_type() == &DataType::Int64 => {
            matches!(c.expr.as_ref(), Expr::Column(c) if c.name == time_column)
        }
        Expr::TryCast(c) if c.field.data_type() == &DataType::Int64 => {
            matches!(c.expr.as_ref(), Expr::Column(c) if c.name == time_column)
        }
        _ => false,
    }
}

fn literal_ms(expr: &Expr) -> Option<Ms> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let scaled = |v: i64, unit: TimeUnit| -> Option<Ms> {
        let per_ms = match unit {
            TimeUnit::Second => {
                return v.checked_mul(1000).map(|ms| Ms {
                    floor: ms,
                    ceil: ms,
                });
            }
            TimeUnit::Millisecond => 1,
            TimeUnit::Microsecond => 1_000,
            TimeUnit::Nanosecond => 1_000_000,
        };
        let floor = v.div_euclid(per_ms);
        let ceil = if v.rem_euclid(per_ms) == 0 {
            floor
        } else {
            floor + 1
        };
        Some(Ms { floor, ceil })
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => scaled(*v, TimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(v), _) => scaled(*v, TimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(Some(v), _) => scaled(*v, TimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(Some(v), _) => scaled(*v, TimeUnit::Nanosecond),
        // Compared with CAST(ts AS BIGINT): milliseconds.
        ScalarValue::Int64(Some(v)) => scaled(*v, TimeUnit::Millisecond),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::cast;

    fn ts(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    const DAY: i64 = MS_PER_DAY;

    #[test]
    fn comparisons_bound_the_time_column_exactly() {
        let r = |e: Expr| bounds(&e, "ts");
        assert_eq!(r(col("ts").gt_eq(ts(5))).lower, Some(5));
        assert_eq!(r(col("ts").gt(ts(5))).lower, Some(6));
        assert_eq!(r(col("ts").lt(ts(5))).upper, Some(4));
        assert_eq!(r(col("ts").lt_eq(ts(5))).upper, Some(5));
        assert_eq!(
            r(col("ts").eq(ts(5))),
            Range {
                lower: Some(5),
                upper: Some(5)
            }
        );
        // Literal on the left.
        assert_eq!(r(ts(5).gt(col("ts"))).upper, Some(4));
        // CAST(ts AS BIGINT), as the API's listings filter.
        assert_eq!(
            r(cast(col("ts"), DataType::Int64).gt_eq(lit(7_i64))).lower,
            Some(7)
        );
        // A nanosecond literal between two milliseconds.
        let ns = lit(ScalarValue::TimestampNanosecond(Some(5_500_000), None));
        assert_eq!(r(col("ts").gt_eq(ns.clone())).lower, Some(6));
        assert_eq!(r(col("ts").lt(ns)).upper, Some(5));
        // Other columns, NULL literals and negations bound nothing.
        assert_eq!(r(col("received_at").gt_eq(ts(5))), Range::ALL);
        assert_eq!(
            r(col("ts").gt_eq(lit(ScalarValue::TimestampMillisecond(None, None)))),
            Range::ALL
        );
        assert_eq!(r(Expr::Not(Box::new(col("ts").gt_eq(ts(5))))), Range::ALL);
    }

    #[test]
    fn and_tightens_or_loosens() {
        let r = |e: Expr| bounds(&e, "ts");
        let window = col("ts").gt_eq(ts(10)).and(col("ts").lt(ts(20)));
        assert_eq!(
            r(window.clone()),
            Range {
                lower: Some(10),
                upper: Some(19)
            }
        );
        assert_eq!(
            r(col("ts").between(ts(10), ts(20))),
            Range {
                lower: Some(10),
                upper: Some(20)
            }
        );
        // The listing's cursor: (ts < m OR (ts = m AND batch_id <= b)).
        let cursor = col("ts")
            .lt(ts(50))
            .or(col("ts").eq(ts(50)).and(col("batch_id").lt_eq(lit("x"))));
        assert_eq!(r(cursor).upper, Some(50));
        // One arm unbounded: the OR is unbounded on that side.
        assert_eq!(
            r(col("ts").lt(ts(50)).or(col("host").eq(lit("a")))),
            Range::ALL
        );
    }

    #[test]
    fn date_bounds_are_the_utc_days_of_the_range() {
        let empty: Arc<dyn TableProvider> =
            Arc::new(datafusion::datasource::empty::EmptyTable::new(Arc::new(
                arrow::datatypes::Schema::empty(),
            )));
        let table = DatePartitioned::new(empty.clone(), empty, "ts");
        // 2026-10-05T23:00 .. before 2026-10-07T00:00.
        let d5 = 20_731;
        let filters = [col("ts")
            .gt_eq(ts(d5 * DAY + 23 * 3_600_000))
            .and(col("ts").lt(ts((d5 + 2) * DAY)))];
        let out = table.with_date_bounds(&filters);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[1],
            col("date").gt_eq(lit(ScalarValue::Date32(Some(d5 as i32))))
        );
        assert_eq!(
            out[2],
            col("date").lt_eq(lit(ScalarValue::Date32(Some(d5 as i32 + 1))))
        );
        // Before 1970: days round down.
        let out = table.with_date_bounds(&[col("ts").gt_eq(ts(-1))]);
        assert_eq!(
            out[1],
            col("date").gt_eq(lit(ScalarValue::Date32(Some(-1))))
        );
        // Nothing about time: nothing added.
        assert_eq!(table.with_date_bounds(&[col("host").eq(lit("a"))]).len(), 1);
    }
}
