//! Decimal `+`, `-` and `*` without a checked 128-bit operation per row.
//!
//! Arrow computes every Decimal128 sum and product with checked i128
//! arithmetic, one fallible call per row; in TPC-H's
//! `l_extendedprice * (1 - l_discount) * (1 + l_tax)` that is most of the
//! query's time. When every operand of a batch fits in an i64 (any
//! decimal of precision 18 or less does), neither a product nor a sum of
//! operands rescaled by at most 10^18 can overflow an i128, so the result
//! is computed with plain arithmetic. A batch with a wider operand goes to
//! Arrow's kernel, so results and overflow errors are Arrow's in every
//! case. A physical optimizer rule puts the expression in place of the
//! decimal `BinaryExpr`s of projections and of aggregate arguments.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow_array::types::Decimal128Type;
use arrow_array::{Array, ArrayRef, PrimitiveArray, RecordBatch};
use arrow_schema::{DataType, Schema};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::kernels::numeric::{add_wrapping, mul_wrapping, sub_wrapping};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_expr_common::datum::apply;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::optimizer::row_exprs::rewrite_row_exprs;

/// `left op right` over two Decimal128 operands, giving the type and
/// values Arrow's kernel gives.
#[derive(Debug, Clone, Eq)]
pub(crate) struct DecimalArithExpr {
    op: Operator,
    left: Arc<dyn PhysicalExpr>,
    right: Arc<dyn PhysicalExpr>,
    /// Factors bringing each side to the result's scale (1 for `*`).
    left_factor: i128,
    right_factor: i128,
    precision: u8,
    scale: i8,
}

impl PartialEq for DecimalArithExpr {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
            && self.left.eq(&other.left)
            && self.right.eq(&other.right)
            && (self.precision, self.scale) == (other.precision, other.scale)
    }
}

impl Hash for DecimalArithExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.left.hash(state);
        self.op.hash(state);
        self.right.hash(state);
    }
}

/// Rescaling by more than 10^18 could overflow an i128 from an i64.
const MAX_FACTOR_DIGITS: i8 = 18;

impl DecimalArithExpr {
    /// The expression for `binary`, if it is decimal `+`, `-` or `*`.
    fn of(binary: &BinaryExpr, schema: &Schema) -> Result<Option<DecimalArithExpr>> {
        let op = *binary.op();
        if !matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply) {
            return Ok(None);
        }
        let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) = (
            binary.left().data_type(schema)?,
            binary.right().data_type(schema)?,
        ) else {
            return Ok(None);
        };
        // Arrow's result type (Hive's rules), as in `decimal_op`.
        let (precision, scale, left_digits, right_digits) = if op == Operator::Multiply {
            let scale = s1.saturating_add(s2);
            if scale > 38 {
                return Ok(None);
            }
            (p1.saturating_add(p2 + 1).min(38), scale, 0, 0)
        } else {
            let scale = s1.max(s2);
            let integral = (p1 as i8 - s1).max(p2 as i8 - s2);
            let precision = (scale.saturating_add(integral) as u8)
                .saturating_add(1)
                .min(38);
            (precision, scale, scale - s1, scale - s2)
        };
        if !(0..=MAX_FACTOR_DIGITS).contains(&left_digits)
            || !(0..=MAX_FACTOR_DIGITS).contains(&right_digits)
            || binary.data_type(schema)? != DataType::Decimal128(precision, scale)
        {
            return Ok(None);
        }
        Ok(Some(DecimalArithExpr {
            op,
            left: binary.left().clone(),
            right: binary.right().clone(),
            left_factor: 10i128.pow(left_digits as u32),
            right_factor: 10i128.pow(right_digits as u32),
            precision,
            scale,
        }))
    }

    /// Arrow's kernel, as `BinaryExpr` calls it.
    fn by_arrow(&self, left: &ColumnarValue, right: &ColumnarValue) -> Result<ColumnarValue> {
        match self.op {
            Operator::Plus => apply(left, right, add_wrapping),
            Operator::Minus => apply(left, right, sub_wrapping),
            _ => apply(left, right, mul_wrapping),
        }
    }

    fn narrow(&self, left: &Operand, right: &Operand, rows: usize) -> ArrayRef {
        let (lf, rf) = (self.left_factor, self.right_factor);
        let values: Vec<i128> = match self.op {
            Operator::Plus => combine(left, right, rows, |a, b| a * lf + b * rf),
            Operator::Minus => combine(left, right, rows, |a, b| a * lf - b * rf),
            _ => combine(left, right, rows, |a, b| a * b),
        };
        let nulls = NullBuffer::union(left.nulls(), right.nulls());
        Arc::new(
            PrimitiveArray::<Decimal128Type>::new(values.into(), nulls)
                .with_data_type(DataType::Decimal128(self.precision, self.scale)),
        )
    }
}

/// One side of the operation once evaluated: a column, or a constant.
enum Operand<'a> {
    Column(&'a PrimitiveArray<Decimal128Type>),
    Constant(i128),
}

impl<'a> Operand<'a> {
    /// `None` when a value does not fit in an i64, or for a NULL constant.
    fn narrow(value: &'a ColumnarValue) -> Option<Operand<'a>> {
        match value {
            ColumnarValue::Array(array) => {
                let column = array
                    .as_any()
                    .downcast_ref::<PrimitiveArray<Decimal128Type>>()?;
                // NULL slots are checked too: their values are whatever
                // was there, and a wide one only costs the fast path.
                let wide = column
                    .values()
                    .iter()
                    .fold(0u128, |wide, &v| wide | beyond_i64(v));
                (wide == 0).then_some(Operand::Column(column))
            }
            ColumnarValue::Scalar(ScalarValue::Decimal128(Some(v), _, _)) if fits_i64(*v) => {
                Some(Operand::Constant(*v))
            }
            ColumnarValue::Scalar(_) => None,
        }
    }

    fn nulls(&self) -> Option<&NullBuffer> {
        match self {
            Operand::Column(column) => column.nulls(),
            Operand::Constant(_) => None,
        }
    }
}

fn fits_i64(value: i128) -> bool {
    beyond_i64(value) == 0
}

/// Non-zero when `value` is outside the i64 range; a branch-free form so
/// that checking a column vectorizes.
fn beyond_i64(value: i128) -> u128 {
    (value as u128).wrapping_add(1 << 63) >> 64
}

/// `f` over the rows; operands are known to fit in an i64, so `f` (a
/// product, or a sum of operands scaled by at most 10^18) cannot overflow.
fn combine(
    left: &Operand,
    right: &Operand,
    rows: usize,
    f: impl Fn(i128, i128) -> i128,
) -> Vec<i128> {
    // Widening from i64 lets the multiplication be a single instruction.
    let wide = |v: i128| v as i64 as i128;
    match (left, right) {
        (Operand::Column(l), Operand::Column(r)) => {
            let (l, r) = (l.values(), r.values());
            (0..rows).map(|i| f(wide(l[i]), wide(r[i]))).collect()
        }
        (Operand::Column(l), Operand::Constant(b)) => {
            l.values().iter().map(|&a| f(wide(a), *b)).collect()
        }
        (Operand::Constant(a), Operand::Column(r)) => {
            r.values().iter().map(|&b| f(*a, wide(b))).collect()
        }
        (Operand::Constant(a), Operand::Constant(b)) => vec![f(*a, *b); rows],
    }
}

impl fmt::Display for DecimalArithExpr {
    /// As `BinaryExpr` shows itself, so plans read the same.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let precedence = self.op.precedence();
        write_operand(f, &self.left, precedence)?;
        write!(f, " {} ", self.op)?;
        write_operand(f, &self.right, precedence)
    }
}

fn write_operand(
    f: &mut fmt::Formatter,
    expr: &Arc<dyn PhysicalExpr>,
    precedence: u8,
) -> fmt::Result {
    let inner = expr
        .downcast_ref::<BinaryExpr>()
        .map(|b| b.op().precedence())
        .or_else(|| {
            expr.downcast_ref::<DecimalArithExpr>()
                .map(|d| d.op.precedence())
        });
    match inner {
        Some(p) if p == 0 || p < precedence => write!(f, "({expr})"),
        _ => write!(f, "{expr}"),
    }
}

impl PhysicalExpr for DecimalArithExpr {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Decimal128(self.precision, self.scale))
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        Ok(self.left.nullable(input_schema)? || self.right.nullable(input_schema)?)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let left = self.left.evaluate(batch)?;
        let right = self.right.evaluate(batch)?;
        let both_constant = matches!(
            (&left, &right),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        match (Operand::narrow(&left), Operand::narrow(&right)) {
            (Some(l), Some(r)) if !both_constant => {
                Ok(ColumnarValue::Array(self.narrow(&l, &r, batch.num_rows())))
            }
            _ => self.by_arrow(&left, &right),
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.left, &self.right]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let [left, right]: [Arc<dyn PhysicalExpr>; 2] = children.try_into().map_err(|_| {
            DataFusionError::Internal("decimal arithmetic takes two operands".into())
        })?;
        Ok(Arc::new(DecimalArithExpr {
            left,
            right,
            ..(*self).clone()
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.left.fmt_sql(f)?;
        write!(f, " {} ", self.op)?;
        self.right.fmt_sql(f)
    }
}

/// Puts [`DecimalArithExpr`] in place of decimal `BinaryExpr`s in the
/// expressions evaluated per row.
#[derive(Debug, Default)]
pub(crate) struct NarrowDecimalArithmetic;

impl PhysicalOptimizerRule for NarrowDecimalArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|plan| rewrite_row_exprs(plan, &narrow_decimals))
            .data()
    }

    fn name(&self) -> &str {
        "narrow_decimal_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn narrow_decimals(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|expr| {
        let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(expr));
        };
        Ok(match DecimalArithExpr::of(binary, schema)? {
            Some(narrow) => Transformed::yes(Arc::new(narrow) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(expr),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Decimal128Array;
    use arrow_schema::Field;
    use datafusion::physical_expr::expressions::{col, lit};

    /// Columns a: decimal(15,2), b: decimal(12,4), c: decimal(38,2) with
    /// values beyond an i64, d: decimal(15,2) mostly NULL.
    fn batch(rows: usize) -> RecordBatch {
        let mut next = crate::test_rng::xorshift();
        let mut column = |precision: u8, scale: i8, value: &mut dyn FnMut(u64) -> Option<i128>| {
            let values: Decimal128Array = (0..rows).map(|_| value(next())).collect();
            values.with_precision_and_scale(precision, scale).unwrap()
        };
        let a = column(15, 2, &mut |r| {
            (r % 11 != 0).then_some((r % 2_000_000_000) as i128 - 1_000_000_000)
        });
        let b = column(12, 4, &mut |r| {
            (r % 7 != 0).then_some((r % 100_000_000) as i128 - 50_000_000)
        });
        let c = column(38, 2, &mut |r| Some(((r as i128) << 60) - (1 << 66)));
        let d = column(15, 2, &mut |r| (r % 97 == 0).then_some(r as i128 % 1000));
        let fields = [("a", 15, 2), ("b", 12, 4), ("c", 38, 2), ("d", 15, 2)]
            .map(|(name, p, s)| Field::new(name, DataType::Decimal128(p, s), true));
        let columns: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b), Arc::new(c), Arc::new(d)];
        RecordBatch::try_new(Arc::new(Schema::new(fields.to_vec())), columns).unwrap()
    }

    fn decimal(value: i128, precision: u8, scale: i8) -> Arc<dyn PhysicalExpr> {
        lit(ScalarValue::Decimal128(Some(value), precision, scale))
    }

    /// Each operand pair, with each operator, gives what `BinaryExpr` gives:
    /// same type, values, NULLs and errors.
    #[test]
    fn results_are_arrows() {
        let batch = batch(3_000);
        let schema = batch.schema();
        let column = |name: &str| col(name, &schema).unwrap();
        let operands = [
            column("a"),
            column("b"),
            column("c"),
            column("d"),
            decimal(100, 20, 2),
            decimal(-7, 3, 0),
            lit(ScalarValue::Decimal128(None, 15, 2)),
        ];
        let mut narrowed = 0;
        for left in &operands {
            for right in &operands {
                for op in [Operator::Plus, Operator::Minus, Operator::Multiply] {
                    let binary = BinaryExpr::new(left.clone(), op, right.clone());
                    let Some(fast) = DecimalArithExpr::of(&binary, &schema).unwrap() else {
                        continue;
                    };
                    narrowed += 1;
                    let want = binary
                        .evaluate(&batch)
                        .and_then(|v| v.into_array(batch.num_rows()));
                    let got = fast
                        .evaluate(&batch)
                        .and_then(|v| v.into_array(batch.num_rows()));
                    match (want, got) {
                        (Ok(want), Ok(got)) => {
                            assert_eq!(got.data_type(), want.data_type(), "{binary}");
                            assert_eq!(&got, &want, "{binary}");
                        }
                        (Err(want), Err(got)) => {
                            assert_eq!(got.to_string(), want.to_string(), "{binary}")
                        }
                        (want, got) => panic!("{binary}: {want:?} against {got:?}"),
                    }
                    assert_eq!(fast.to_string(), binary.to_string());
                }
            }
        }
        assert!(narrowed > 100, "{narrowed}");
    }

    #[test]
    fn an_overflowing_product_fails_as_arrow_fails() {
        let batch = batch(100);
        let schema = batch.schema();
        let c = col("c", &schema).unwrap();
        // (38,2) * (15,2) has scale 4 and precision capped at 38.
        let binary = BinaryExpr::new(c, Operator::Multiply, decimal(i64::MAX as i128, 15, 2));
        let fast = DecimalArithExpr::of(&binary, &schema).unwrap().unwrap();
        let want = binary.evaluate(&batch).unwrap_err().to_string();
        let got = fast.evaluate(&batch).unwrap_err().to_string();
        assert_eq!(got, want);
        assert!(got.contains("Overflow"), "{got}");
    }

    #[test]
    fn nested_operations_show_as_binary_expressions_do() {
        let batch = batch(10);
        let schema = batch.schema();
        let inner = BinaryExpr::new(
            decimal(100, 20, 2),
            Operator::Minus,
            col("a", &schema).unwrap(),
        );
        let outer = Arc::new(BinaryExpr::new(
            col("b", &schema).unwrap(),
            Operator::Multiply,
            Arc::new(inner),
        )) as Arc<dyn PhysicalExpr>;
        let rewritten = narrow_decimals(outer.clone(), &schema).unwrap();
        assert!(rewritten.transformed);
        assert!(rewritten.data.downcast_ref::<DecimalArithExpr>().is_some());
        assert_eq!(rewritten.data.to_string(), outer.to_string());
        let want = outer.evaluate(&batch).unwrap().into_array(10).unwrap();
        let got = rewritten
            .data
            .evaluate(&batch)
            .unwrap()
            .into_array(10)
            .unwrap();
        assert_eq!(&got, &want);
    }
}
