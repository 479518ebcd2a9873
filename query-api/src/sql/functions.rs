//! Scalar functions that cannot allocate past the query's memory pool.
//!
//! DataFusion accounts the memory of operators that hold data (hash tables,
//! sorts) but not of scalar functions: `repeat('x', 2147483647)` allocates
//! 2 GiB in one call, before anything is counted. Every scalar function of
//! a tenant session is wrapped ([`Limited`]): functions whose output size
//! is set by an argument (`repeat`, `lpad`, `rpad`, `replace`,
//! `regexp_replace`, `array_repeat`, `array_resize`, `range`,
//! `generate_series`) have their output size bounded from the arguments
//! *before* they run, and every function's output must fit in what is left
//! of the pool after it ran (which bounds growth through nesting to one
//! step). The `||` operator is planned as [`StrictConcat`], a function with
//! the operator's semantics (NULL if either side is NULL) and the same
//! check, since operators are not functions.

use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use super::session::QueryRuntime;

/// Functions left unwrapped: they only rearrange their inputs, and the
/// optimizer recognises them by type (struct field access, log/power
/// simplification).
const UNWRAPPED: &[&str] = &["get_field", "named_struct", "struct", "log", "power", "pow"];

/// Wraps every scalar function of `state` and plans `||` with the check.
/// Each call checks against its query's pool ([`QueryRuntime`] in the
/// options DataFusion hands it). A few of DataFusion's own calls come
/// without the session's options — partition pruning of listed files,
/// subquery decorrelation, outer-join null checks, all on arguments a
/// tenant writes — and are held to `fallback_bytes` instead: the smallest
/// memory limit any query may run under, so no plan gets more there than
/// in its own pool, and no pool shared between queries.
pub fn install(state: &mut SessionState, fallback_bytes: usize) -> DfResult<()> {
    let functions: Vec<Arc<ScalarUDF>> = state
        .scalar_functions()
        .values()
        .filter(|f| !UNWRAPPED.contains(&f.name()))
        .cloned()
        .collect();
    let mut seen = std::collections::HashSet::new();
    for f in functions {
        // Aliases map to the same function: wrap it once.
        if !seen.insert(f.name().to_string()) {
            continue;
        }
        // `date_trunc` gets its UTC fast path; the rest run as they are.
        let fast = (f.name() == "date_trunc").then_some(FastPath::UtcDateTrunc);
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(Limited {
            inner: UdfEq::from(f.inner().clone()),
            fallback_bytes,
            fast,
        })))?;
    }
    let concat = Arc::new(ScalarUDF::new_from_impl(Limited {
        inner: UdfEq::from(Arc::new(StrictConcat::new()) as Arc<dyn ScalarUDFImpl>),
        fallback_bytes,
        fast: None,
    }));
    state.register_udf(concat.clone())?;
    state.register_expr_planner(Arc::new(ConcatPlanner { udf: concat }))?;
    state.register_expr_planner(Arc::new(super::imatch::IMatchPlanner))?;
    Ok(())
}

/// `date_trunc` to a second, minute, hour or day of a UTC timestamp column
/// (every time column of the lake): integer arithmetic on the epoch value.
/// DataFusion 55 takes that path only for zone-less timestamps and
/// converts each value through the time zone when it is `UTC` (1.6 s for
/// `date_trunc('hour', ts)` over 10M rows against 0.29 s for the same
/// `date_bin`, docs/benchmarks.md) for the same answer: UTC has no offsets
/// to honour. `None`: not this case, the builtin answers.
fn utc_date_trunc(args: &ScalarFunctionArgs) -> DfResult<Option<ColumnarValue>> {
    use arrow::array::PrimitiveArray;
    use arrow::datatypes::{
        ArrowTimestampType, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    if args.args.len() != 2 {
        return Ok(None);
    }
    let (
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(granularity))
            | ScalarValue::Utf8View(Some(granularity))
            | ScalarValue::LargeUtf8(Some(granularity)),
        ),
        ColumnarValue::Array(array),
    ) = (&args.args[0], &args.args[1])
    else {
        return Ok(None);
    };
    let seconds: i64 = match granularity.to_ascii_lowercase().as_str() {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        _ => return Ok(None),
    };
    let DataType::Timestamp(unit, Some(tz)) = array.data_type() else {
        return Ok(None);
    };
    if !matches!(tz.as_ref(), "UTC" | "+00:00" | "Z") {
        return Ok(None);
    }
    fn truncate<T: ArrowTimestampType>(array: &ArrayRef, step: i64, tz: &Arc<str>) -> ArrayRef {
        let out: PrimitiveArray<T> = array.as_primitive::<T>().unary(|v| v - v.rem_euclid(step));
        Arc::new(out.with_timezone(Arc::clone(tz)))
    }
    let out = match unit {
        TimeUnit::Second => truncate::<TimestampSecondType>(array, seconds, tz),
        TimeUnit::Millisecond => truncate::<TimestampMillisecondType>(array, seconds * 1_000, tz),
        TimeUnit::Microsecond => {
            truncate::<TimestampMicrosecondType>(array, seconds * 1_000_000, tz)
        }
        TimeUnit::Nanosecond => {
            truncate::<TimestampNanosecondType>(array, seconds * 1_000_000_000, tz)
        }
    };
    Ok(Some(ColumnarValue::Array(out)))
}

/// A faster way to answer some calls of a function than the function's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FastPath {
    /// [`utc_date_trunc`].
    UtcDateTrunc,
}

impl FastPath {
    /// The answer, or `None` when the function itself must answer.
    fn answer(self, args: &ScalarFunctionArgs) -> DfResult<Option<ColumnarValue>> {
        match self {
            FastPath::UtcDateTrunc => utc_date_trunc(args),
        }
    }
}

/// A scalar function with its output bounded by the query's memory pool.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Limited {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    /// The bound where the options carry no query's runtime ([`install`]).
    fallback_bytes: usize,
    fast: Option<FastPath>,
}

impl Limited {
    /// The pool of the query `args` belong to, if DataFusion passed it on.
    fn pool(args: &ScalarFunctionArgs) -> Option<Arc<dyn MemoryPool>> {
        args.config_options
            .extensions
            .get::<QueryRuntime>()
            .map(|QueryRuntime(runtime)| Arc::clone(&runtime.memory_pool))
    }

    fn reserve(
        &self,
        pool: Option<&Arc<dyn MemoryPool>>,
        bytes: usize,
        what: &str,
    ) -> DfResult<()> {
        let fits = match pool {
            Some(pool) => MemoryConsumer::new(format!("function {}", self.inner.name()))
                .register(pool)
                .try_grow(bytes)
                .is_ok(),
            None => bytes <= self.fallback_bytes,
        };
        if fits {
            return Ok(());
        }
        Err(DataFusionError::ResourcesExhausted(format!(
            "{}() {what} about {} bytes, more than the query's memory limit has left",
            self.inner.name(),
            bytes
        )))
    }
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Limited {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> DfResult<String> {
        #[expect(deprecated)]
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let pool = Self::pool(&args);
        if let Some(bound) = output_bound(self.inner.name(), &args.args, args.number_rows)? {
            self.reserve(pool.as_ref(), bound, "would produce")?;
        }
        let fast = match self.fast {
            Some(fast) => fast.answer(&args)?,
            None => None,
        };
        let out = match fast {
            Some(out) => out,
            None => self.inner.invoke_with_args(args)?,
        };
        let size = match &out {
            ColumnarValue::Array(a) => a.get_array_memory_size(),
            ColumnarValue::Scalar(s) => s.size(),
        };
        self.reserve(pool.as_ref(), size, "produced")?;
        Ok(out)
    }

    fn with_updated_config(
        &self,
        _config: &datafusion::common::config::ConfigOptions,
    ) -> Option<ScalarUDF> {
        None
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> DfResult<datafusion::logical_expr::preimage::PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> DfResult<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> DfResult<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<datafusion::logical_expr::StructFieldMapping> {
        self.inner.struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(
        &self,
        args: &[datafusion::logical_expr::ExpressionPlacement],
    ) -> datafusion::logical_expr::ExpressionPlacement {
        self.inner.placement(args)
    }
}

/// One argument, row by row.
struct Arg<'a> {
    value: &'a ColumnarValue,
    ints: Option<ArrayRef>,
}

impl<'a> Arg<'a> {
    fn new(value: &'a ColumnarValue) -> Self {
        Self { value, ints: None }
    }

    /// Byte length of a text/binary value (0 for NULL and other types).
    fn len(&self, row: usize) -> usize {
        match self.value {
            ColumnarValue::Scalar(s) => match s {
                ScalarValue::Utf8(Some(v))
                | ScalarValue::LargeUtf8(Some(v))
                | ScalarValue::Utf8View(Some(v)) => v.len(),
                ScalarValue::Binary(Some(v))
                | ScalarValue::LargeBinary(Some(v))
                | ScalarValue::BinaryView(Some(v)) => v.len(),
                other if other.is_null() => 0,
                other => other.size(),
            },
            ColumnarValue::Array(a) => {
                if a.is_null(row) {
                    return 0;
                }
                match a.data_type() {
                    DataType::Utf8 => a.as_string::<i32>().value(row).len(),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(row).len(),
                    DataType::Utf8View => a.as_string_view().value(row).len(),
                    DataType::Binary => a.as_binary::<i32>().value(row).len(),
                    DataType::LargeBinary => a.as_binary::<i64>().value(row).len(),
                    DataType::BinaryView => a.as_binary_view().value(row).len(),
                    _ => a.get_array_memory_size() / a.len().max(1),
                }
            }
        }
    }

    /// Text value (for flags and replacement patterns); empty otherwise.
    fn text(&self, row: usize) -> &str {
        match self.value {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(v))
                | ScalarValue::LargeUtf8(Some(v))
                | ScalarValue::Utf8View(Some(v)),
            ) => v,
            ColumnarValue::Array(a) if !a.is_null(row) => match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(row),
                DataType::LargeUtf8 => a.as_string::<i64>().value(row),
                DataType::Utf8View => a.as_string_view().value(row),
                _ => "",
            },
            _ => "",
        }
    }

    /// An integer argument as i64 (NULL and non-numbers as 0).
    fn int(&mut self, row: usize) -> i64 {
        match self.value {
            ColumnarValue::Scalar(s) => scalar_i64(s),
            ColumnarValue::Array(a) => {
                if self.ints.is_none() {
                    self.ints = arrow::compute::cast(a, &DataType::Int64).ok();
                }
                match &self.ints {
                    Some(ints) if !ints.is_null(row) => ints.as_primitive::<Int64Type>().value(row),
                    _ => 0,
                }
            }
        }
    }
}

fn scalar_i64(s: &ScalarValue) -> i64 {
    match s.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(v))) => v,
        _ => 0,
    }
}

/// Sums `f` over the rows, saturating.
fn sum_rows(rows: usize, a: &mut [Arg], mut f: impl FnMut(usize, &mut [Arg]) -> u128) -> usize {
    let total = (0..rows).fold(0u128, |acc, r| acc.saturating_add(f(r, a)));
    usize::try_from(total).unwrap_or(usize::MAX)
}

fn count(v: i64) -> u128 {
    v.max(0) as u128
}

/// Upper bound of what `name(args)` allocates, for the functions whose
/// output is sized by an argument; `None` for the rest.
fn output_bound(name: &str, args: &[ColumnarValue], rows: usize) -> DfResult<Option<usize>> {
    let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        1
    } else {
        rows
    };
    let mut a: Vec<Arg> = args.iter().map(Arg::new).collect();
    Ok(Some(match (name, a.len()) {
        ("repeat", 2) => sum_rows(rows, &mut a, |r, a| {
            (a[0].len(r) as u128).saturating_mul(count(a[1].int(r)))
        }),
        // n characters of up to 4 bytes each.
        ("lpad" | "rpad", 2 | 3) => sum_rows(rows, &mut a, |r, a| {
            count(a[1].int(r)).saturating_mul(4) + a[0].len(r) as u128
        }),
        ("replace", 3) => sum_rows(rows, &mut a, |r, a| {
            let (len, from, to) = (
                a[0].len(r) as u128,
                a[1].len(r) as u128,
                a[2].len(r) as u128,
            );
            len + (len / from.max(1) + 1) * to
        }),
        ("regexp_replace", 3 | 4) => sum_rows(rows, &mut a, |r, a| {
            let len = a[0].len(r) as u128;
            let rep = a[2].text(r);
            // Each `$n`/`\n` in the replacement can copy the whole input.
            let refs = rep.matches(['$', '\\']).count() as u128;
            let per_match = rep.len() as u128 + refs * len;
            let global = a.get(3).is_some_and(|f| f.text(r).contains('g'));
            if global {
                len + (len + 1) * per_match
            } else {
                len + per_match
            }
        }),
        ("array_repeat", 2) => sum_rows(rows, &mut a, |r, a| {
            count(a[1].int(r)).saturating_mul(a[0].len(r) as u128 + 8)
        }),
        ("array_resize", 2 | 3) => sum_rows(rows, &mut a, |r, a| {
            let fill = a.get(2).map_or(8, |f| f.len(r)) as u128;
            count(a[1].int(r)).saturating_mul(fill + 8)
        }),
        ("range" | "generate_series", 1..=3) => {
            let Some(per_row) = series_len_fn(args) else {
                return Ok(None);
            };
            sum_rows(rows, &mut a, |r, a| per_row(r, a).saturating_mul(8))
        }
        _ => return Ok(None),
    }))
}

type SeriesLen = Box<dyn Fn(usize, &mut [Arg]) -> u128>;

/// Elements of `range`/`generate_series` per row: integers, or dates and
/// timestamps stepped by an interval (a month counted as 28 days, so the
/// bound stays an upper bound).
fn series_len_fn(args: &[ColumnarValue]) -> Option<SeriesLen> {
    let types: Vec<DataType> = args.iter().map(ColumnarValue::data_type).collect();
    let integer = types.iter().all(|t| t.is_integer() || t.is_null());
    if integer {
        return Some(Box::new(|r, a: &mut [Arg]| {
            let (start, stop, step) = match a.len() {
                1 => (0, a[0].int(r), 1),
                2 => (a[0].int(r), a[1].int(r), 1),
                _ => (a[0].int(r), a[1].int(r), a[2].int(r)),
            };
            let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
            let step = i128::from(step).unsigned_abs().max(1);
            span / step + 1
        }));
    }
    // Temporal: start and stop in nanoseconds, step an interval.
    let unit_nanos = |t: &DataType| -> Option<i128> {
        Some(match t {
            DataType::Date32 => 86_400_000_000_000,
            DataType::Date64 => 1_000_000,
            DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
            DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
            DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
            _ => return None,
        })
    };
    if args.len() != 3 || !matches!(types[2], DataType::Interval(_)) {
        return None;
    }
    let (u0, u1) = (unit_nanos(&types[0])?, unit_nanos(&types[1])?);
    let step = match &args[2] {
        ColumnarValue::Scalar(s) => interval_nanos(s)?,
        // A step per row: assume the smallest (a nanosecond) is not
        // plausible; refuse to guess and let the post-check bound it.
        ColumnarValue::Array(_) => return None,
    };
    Some(Box::new(move |r, a: &mut [Arg]| {
        let span = (i128::from(a[1].int(r)) * u1 - i128::from(a[0].int(r)) * u0).unsigned_abs();
        span / step + 1
    }))
}

/// An interval's length in nanoseconds, months counted as 28 days.
fn interval_nanos(s: &ScalarValue) -> Option<u128> {
    const DAY: i128 = 86_400_000_000_000;
    let n = match s {
        ScalarValue::IntervalYearMonth(Some(m)) => i128::from(*m) * 28 * DAY,
        ScalarValue::IntervalDayTime(Some(v)) => {
            i128::from(v.days) * DAY + i128::from(v.milliseconds) * 1_000_000
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            i128::from(v.months) * 28 * DAY + i128::from(v.days) * DAY + i128::from(v.nanoseconds)
        }
        _ => return None,
    };
    Some(n.unsigned_abs().max(1))
}

/// `a || b` on text: NULL when either side is NULL (unlike `concat`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct StrictConcat {
    signature: Signature,
}

impl StrictConcat {
    fn new() -> Self {
        Self {
            signature: Signature::string(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for StrictConcat {
    fn name(&self) -> &str {
        "securenet_string_concat"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        // Named like the operator it plans, so result columns keep the
        // names DataFusion gives `a || b`.
        match args {
            [l, r] => Ok(format!("{} || {}", l.schema_name(), r.schema_name())),
            _ => Ok("||".into()),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(match arg_types.first() {
            Some(t @ (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)) => t.clone(),
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let target = args.return_type().clone();
        let arrays = args
            .args
            .iter()
            .map(|a| {
                let array = a.to_array(if scalar { 1 } else { args.number_rows })?;
                Ok(if array.data_type() == &target {
                    array
                } else {
                    arrow::compute::cast(&array, &target)?
                })
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        let out =
            arrow::compute::kernels::concat_elements::concat_elements_dyn(&arrays[0], &arrays[1])?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// Plans `a || b` on text as [`StrictConcat`]; lists and binary keep
/// DataFusion's planning.
#[derive(Debug)]
struct ConcatPlanner {
    udf: Arc<ScalarUDF>,
}

impl ExprPlanner for ConcatPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        if expr.op != BinaryOperator::StringConcat {
            return Ok(PlannerResult::Original(expr));
        }
        let (lt, rt) = (expr.left.get_type(schema)?, expr.right.get_type(schema)?);
        let other = |t: &DataType| {
            t.is_nested()
                || matches!(
                    t,
                    DataType::Binary
                        | DataType::LargeBinary
                        | DataType::BinaryView
                        | DataType::FixedSizeBinary(_)
                )
        };
        if other(&lt) || other(&rt) {
            return Ok(PlannerResult::Original(expr));
        }
        let text = |e: Expr, t: &DataType| -> DfResult<Expr> {
            Ok(match t {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => e,
                _ => e.cast_to(&DataType::Utf8, schema)?,
            })
        };
        let args = vec![text(expr.left, &lt)?, text(expr.right, &rt)?];
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(self.udf.clone(), args),
        )))
    }
}
