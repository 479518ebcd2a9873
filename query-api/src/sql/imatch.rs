//! `text ~* 'word|other words|…'`: case-insensitive matching of literal
//! alternatives, the shape of nearly every "find the failed logins" search.
//!
//! DataFusion compiles `(?i)pattern` and runs it on every row. The regex
//! crate finds case-sensitive literal alternatives with a vectorised
//! multi-substring search, but case-insensitively it falls back to its
//! automaton byte by byte: 2.6 s of CPU for the ten phrases of the bench's
//! failed-logins query over 10M messages. On ASCII text, matching
//! `(?i)` literals made of ASCII characters is exactly matching their
//! lower-case forms in the lower-cased text (Unicode case folding pairs an
//! ASCII letter only with its other case and with non-ASCII letters — the
//! Kelvin sign, the long s — which ASCII text does not contain), and that
//! is the fast case-sensitive search: 3× less CPU measured on the bench's
//! messages. Text with any non-ASCII byte is matched by the `(?i)` regex
//! itself, as DataFusion would.
//!
//! [`IMatchPlanner`] plans `~*` and `!~*` this way when the pattern is a
//! literal string of ASCII alternatives without any other regex syntax;
//! every other pattern keeps DataFusion's own planning. Result columns
//! keep the names DataFusion gives the operators.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// The literal alternatives of `pattern`, or `None` when it uses any other
/// regex syntax (or non-ASCII characters, or an empty alternative).
fn alternatives(pattern: &str) -> Option<Vec<&str>> {
    const SYNTAX: &[u8] = b"\\.+*?()[]{}^$#";
    if !pattern.is_ascii() || pattern.bytes().any(|b| SYNTAX.contains(&b)) {
        return None;
    }
    let parts: Vec<&str> = pattern.split('|').collect();
    (!parts.iter().any(|p| p.is_empty())).then_some(parts)
}

/// `~*` (or `!~*` when `negated`) of a literal alternation; see the module
/// documentation.
#[derive(Debug)]
struct IMatchLiterals {
    pattern: String,
    negated: bool,
    /// The lower-cased alternatives, matched in lower-cased ASCII text.
    lower: regex::bytes::Regex,
    /// `(?i)pattern`, for text that is not ASCII.
    folding: regex::Regex,
    signature: Signature,
}

impl PartialEq for IMatchLiterals {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.negated == other.negated
    }
}

impl Eq for IMatchLiterals {}

impl Hash for IMatchLiterals {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
        self.negated.hash(state);
    }
}

impl IMatchLiterals {
    /// `None` when `pattern` is not a literal alternation, or when either
    /// expression does not compile (past the regex crate's size limit):
    /// DataFusion's own planning then reports it as it would.
    fn new(pattern: &str, negated: bool) -> Option<Self> {
        let parts = alternatives(pattern)?;
        let lower: Vec<String> = parts
            .iter()
            .map(|p| regex::escape(&p.to_ascii_lowercase()))
            .collect();
        Some(Self {
            pattern: pattern.to_string(),
            negated,
            lower: regex::bytes::Regex::new(&lower.join("|")).ok()?,
            folding: regex::Regex::new(&format!("(?i){pattern}")).ok()?,
            signature: Signature::any(2, Volatility::Immutable),
        })
    }

    fn operator(&self) -> &'static str {
        if self.negated { "!~*" } else { "~*" }
    }

    /// Whether `text` matches, lower-casing ASCII text into `scratch`.
    fn matches(&self, text: &str, scratch: &mut Vec<u8>) -> bool {
        let found = if text.is_ascii() {
            scratch.clear();
            scratch.extend_from_slice(text.as_bytes());
            scratch.make_ascii_lowercase();
            self.lower.is_match(scratch)
        } else {
            self.folding.is_match(text)
        };
        found != self.negated
    }

    fn evaluate<'a>(&self, texts: impl Iterator<Item = Option<&'a str>>) -> BooleanArray {
        let mut scratch = Vec::new();
        texts
            .map(|t| t.map(|t| self.matches(t, &mut scratch)))
            .collect()
    }

    fn evaluate_array(&self, array: &ArrayRef) -> DfResult<BooleanArray> {
        Ok(match array.data_type() {
            DataType::Utf8View => self.evaluate(array.as_string_view().iter()),
            DataType::Utf8 => self.evaluate(array.as_string::<i32>().iter()),
            DataType::LargeUtf8 => self.evaluate(array.as_string::<i64>().iter()),
            DataType::Null => BooleanArray::new_null(array.len()),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "{} of a {other} column",
                    self.operator()
                )));
            }
        })
    }
}

impl ScalarUDFImpl for IMatchLiterals {
    fn name(&self) -> &str {
        "securenet_imatch_literals"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        // Named like the operator it plans.
        match args {
            [l, r] => Ok(format!(
                "{} {} {}",
                l.schema_name(),
                self.operator(),
                r.schema_name()
            )),
            _ => Ok(self.operator().into()),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(text) = args.args.first() else {
            return Err(DataFusionError::Internal(format!(
                "{} without its text",
                self.operator()
            )));
        };
        match text {
            ColumnarValue::Array(array) => {
                Ok(ColumnarValue::Array(Arc::new(self.evaluate_array(array)?)))
            }
            ColumnarValue::Scalar(scalar) => {
                let out = self.evaluate_array(&scalar.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
        }
    }
}

/// Plans `~*` / `!~*` with a literal alternation as [`IMatchLiterals`].
#[derive(Debug)]
pub struct IMatchPlanner;

impl ExprPlanner for IMatchPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        let negated = match expr.op {
            BinaryOperator::PGRegexIMatch => false,
            BinaryOperator::PGRegexNotIMatch => true,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let pattern = match &expr.right {
            Expr::Literal(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::Utf8View(Some(p))
                | ScalarValue::LargeUtf8(Some(p)),
                _,
            ) => p.clone(),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        if !matches!(
            expr.left.get_type(schema)?,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            return Ok(PlannerResult::Original(expr));
        }
        let Some(udf) = IMatchLiterals::new(&pattern, negated) else {
            return Ok(PlannerResult::Original(expr));
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(
                Arc::new(ScalarUDF::new_from_impl(udf)),
                vec![expr.left, expr.right],
            ),
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{RecordBatch, StringArray, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::FunctionRegistry;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::sql::tests::answer_and_plan as run;

    /// Texts an outsider's logs hold: every case, non-ASCII letters that
    /// fold to ASCII ones (the Kelvin sign, the long s), other scripts,
    /// empty, null.
    const TEXTS: &[Option<&str>] = &[
        Some("Failed password for invalid user admin from 203.0.113.9 port 4242 ssh2"),
        Some("FAILED PASSWORD for root"),
        Some("pam_unix(sshd:auth): authentication failure; logname= uid=0"),
        Some("Accepted publickey for deploy"),
        Some("Failed paſsword for root"),
        Some("invalid \u{212A}ey for user"),
        Some("INVALID USER bob"),
        Some("Ошибка: failed password для root"),
        Some("ünauthorized Unauthorized"),
        Some("access-denied: a-b:c/d"),
        Some(""),
        None,
    ];

    fn session(fast: bool) -> SessionContext {
        let mut ctx = SessionContext::new();
        if fast {
            ctx.register_expr_planner(Arc::new(IMatchPlanner)).unwrap();
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Utf8View, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringViewArray::from(TEXTS.to_vec())),
                Arc::new(StringArray::from(TEXTS.to_vec())),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    #[tokio::test]
    async fn literal_alternations_match_as_datafusions_regex_does() {
        let (plain, fast) = (session(false), session(true));
        for pattern in [
            "failed password|invalid user",
            "FAILED PASSWORD",
            "password",
            "invalid key",
            "unauthorized",
            "a-b:c/d",
            "authentication fail|logon failure|access denied|not in sudoers",
            "k",
            "s",
        ] {
            for sql in [
                format!("SELECT v, v ~* '{pattern}', s ~* '{pattern}', v !~* '{pattern}' FROM t"),
                format!("SELECT count(*) FROM t WHERE v ~* '{pattern}'"),
                format!("SELECT count(*) FROM t WHERE s !~* '{pattern}'"),
            ] {
                let (want, _) = run(&plain, &sql).await;
                let (got, plan) = run(&fast, &sql).await;
                assert_eq!(got, want, "{sql}");
                assert!(plan.contains("securenet_imatch_literals"), "{sql}:\n{plan}");
            }
        }
        // A text literal on the left.
        let sql = "SELECT 'Failed Password' ~* 'password|x' AS m";
        assert_eq!(run(&fast, sql).await.0, run(&plain, sql).await.0);
    }

    #[tokio::test]
    async fn other_patterns_keep_datafusions_planning() {
        let fast = session(true);
        for sql in [
            "SELECT count(*) FROM t WHERE v ~* 'fail(ed)? password'",
            "SELECT count(*) FROM t WHERE v ~* '^failed'",
            "SELECT count(*) FROM t WHERE v ~* 'user\\s+bob'",
            "SELECT count(*) FROM t WHERE v ~* 'ошибка'",
            "SELECT count(*) FROM t WHERE v ~* 'failed|'",
            "SELECT count(*) FROM t WHERE v ~ 'failed'",
            "SELECT count(*) FROM t WHERE v ~* s",
        ] {
            let (_, plan) = run(&fast, sql).await;
            assert!(
                !plan.contains("securenet_imatch_literals"),
                "{sql}:\n{plan}"
            );
        }
    }

    #[tokio::test]
    async fn an_alternation_too_large_to_compile_fails_as_datafusions_does() {
        // Past the regex crate's size limit once case-folded: not planned
        // here, so DataFusion reports it as it would.
        let words: Vec<String> = (0..60_000).map(|i| format!("word{i:06}x")).collect();
        let sql = format!("SELECT count(*) FROM t WHERE v ~* '{}'", words.join("|"));
        let outcome = |ctx: SessionContext| {
            let sql = sql.clone();
            async move {
                match ctx.sql(&sql).await {
                    Ok(df) => df
                        .collect()
                        .await
                        .map(|b| b.len())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let (want, got) = (outcome(session(false)).await, outcome(session(true)).await);
        assert_eq!(got.is_ok(), want.is_ok(), "{got:?} / {want:?}");
        assert_eq!(
            IMatchLiterals::new(&words.join("|"), false).is_some(),
            want.is_ok()
        );
    }

    #[test]
    fn alternatives_are_only_plain_ascii_words() {
        assert_eq!(
            alternatives("failed login|login failed"),
            Some(vec!["failed login", "login failed"])
        );
        for pattern in [
            "a.b",
            "a|",
            "|a",
            "a||b",
            "(a)",
            "a*",
            "ünauthorized",
            "a\\b",
            "x{2}",
        ] {
            assert_eq!(alternatives(pattern), None, "{pattern}");
        }
    }
}
