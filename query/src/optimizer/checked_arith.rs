//! Integer `+`, `-` and `*` that fail on overflow, as PostgreSQL's do
//! (22003, "bigint out of range"), instead of wrapping as DataFusion's
//! `BinaryExpr` does by default. The oltp fast path checks its own
//! arithmetic; these rules make the general path agree with it.
//!
//! Two rules, because DataFusion folds constants before any physical
//! rule runs, and folds them with wrapping arithmetic: an analyzer rule
//! checks the integer arithmetic of constant operands (raising at
//! planning, as PostgreSQL's constant folding does), and a physical rule
//! checks the rest as it runs.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::DataFusionError;
use datafusion::common::Result;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::{BinaryExpr as LogicalBinary, Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::optimizer::row_exprs::rewrite_row_exprs;
use crate::sql::sqlstate::INTERVAL_OUT_OF_RANGE;

/// Sets `fail_on_overflow` on the integer arithmetic of every expression
/// evaluated per row, and gives interval arithmetic's overflow its own
/// SQLSTATE.
#[derive(Debug, Default)]
pub(crate) struct CheckIntegerOverflow;

impl PhysicalOptimizerRule for CheckIntegerOverflow {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|plan| rewrite_row_exprs(plan, &checked_arithmetic))
            .data()
    }

    fn name(&self) -> &str {
        "check_integer_overflow"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn is_arithmetic(op: &Operator) -> bool {
    matches!(op, Operator::Plus | Operator::Minus | Operator::Multiply)
}

/// Fails the plan when integer arithmetic on constants overflows.
#[derive(Debug, Default)]
pub(crate) struct CheckConstantOverflow;

impl AnalyzerRule for CheckConstantOverflow {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    constant_value(e)?;
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                })
            })
        })?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "check_constant_overflow"
    }
}

/// The value of a constant integer expression (literals, casts and
/// arithmetic of them), an error if its arithmetic overflows, or None
/// for anything else.
fn constant_value(expr: &Expr) -> Result<Option<ScalarValue>> {
    Ok(match expr {
        Expr::Literal(value, _) => Some(value.clone()),
        Expr::Cast(cast) => {
            constant_value(&cast.expr)?.and_then(|v| v.cast_to(cast.field.data_type()).ok())
        }
        Expr::BinaryExpr(LogicalBinary { left, op, right }) if is_arithmetic(op) => {
            let (Some(left), Some(right)) = (constant_value(left)?, constant_value(right)?) else {
                return Ok(None);
            };
            if !left.data_type().is_integer() || left.data_type() != right.data_type() {
                return Ok(None);
            }
            Some(match op {
                Operator::Plus => left.add_checked(right)?,
                Operator::Minus => left.sub_checked(right)?,
                _ => left.mul_checked(right)?,
            })
        }
        _ => None,
    })
}

pub(crate) fn checked_arithmetic(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|expr| {
        let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(expr));
        };
        if is_arithmetic(binary.op()) && matches!(binary.data_type(schema)?, DataType::Interval(_))
        {
            let interval = IntervalArithmetic {
                binary: Arc::new(binary.clone()),
            };
            return Ok(Transformed::yes(Arc::new(interval) as Arc<dyn PhysicalExpr>));
        }
        if !is_arithmetic(binary.op()) || !binary.data_type(schema)?.is_integer() {
            return Ok(Transformed::no(expr));
        }
        let checked = BinaryExpr::new(binary.left().clone(), *binary.op(), binary.right().clone())
            .with_fail_on_overflow(true);
        if checked == *binary {
            return Ok(Transformed::no(expr));
        }
        Ok(Transformed::yes(Arc::new(checked) as Arc<dyn PhysicalExpr>))
    })
}

/// Interval `+`, `-` and `*`, whose overflow is PostgreSQL's "interval out
/// of range" (22008), not a number's (22003): Arrow reports both alike.
/// It shows and rewrites as the `BinaryExpr` it wraps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct IntervalArithmetic {
    binary: Arc<BinaryExpr>,
}

impl std::fmt::Display for IntervalArithmetic {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.binary.fmt(f)
    }
}

impl PhysicalExpr for IntervalArithmetic {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.binary.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.binary.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        self.binary.evaluate(batch).map_err(|e| match e {
            DataFusionError::ArrowError(inner, _)
                if matches!(*inner, ArrowError::ArithmeticOverflow(_)) =>
            {
                DataFusionError::ArrowError(
                    Box::new(ArrowError::ComputeError(INTERVAL_OUT_OF_RANGE.into())),
                    None,
                )
            }
            other => other,
        })
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.binary.children()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let binary = Arc::clone(&self.binary).with_new_children(children)?;
        match binary.downcast_ref::<BinaryExpr>() {
            Some(binary) => Ok(Arc::new(IntervalArithmetic {
                binary: Arc::new(binary.clone()),
            })),
            None => Ok(binary),
        }
    }

    fn fmt_sql(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.binary.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field};
    use datafusion::physical_expr::expressions::{col, lit};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("big", DataType::Int64, false),
            Field::new("small", DataType::Int32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, i64::MAX])),
                Arc::new(Int32Array::from(vec![1, i32::MIN])),
            ],
        )
        .unwrap()
    }

    fn evaluate(expr: Arc<dyn PhysicalExpr>) -> Result<()> {
        let batch = batch();
        let checked = checked_arithmetic(expr, &batch.schema())?.data;
        checked.evaluate(&batch).map(|_| ())
    }

    #[test]
    fn integer_overflow_fails_where_binary_expr_wraps() {
        let schema = batch().schema();
        let cases = [
            ("big", Operator::Plus, lit(1i64)),
            ("big", Operator::Multiply, lit(2i64)),
            ("small", Operator::Minus, lit(1i32)),
        ];
        for (column, op, right) in cases {
            let expr = Arc::new(BinaryExpr::new(col(column, &schema).unwrap(), op, right));
            assert!(expr.evaluate(&batch()).is_ok(), "wraps unchecked");
            let err = evaluate(expr).unwrap_err().to_string();
            assert!(err.contains("Overflow"), "{column} {op}: {err}");
        }
    }

    #[test]
    fn constant_overflow_is_found_through_casts_and_nesting() {
        use datafusion::logical_expr::{cast, lit as logical_lit};
        let max = || cast(logical_lit(i32::MAX as i64), DataType::Int32);
        let one = || cast(logical_lit(1i64), DataType::Int32);
        assert!(constant_value(&(max() + one())).is_err());
        assert!(constant_value(&((max() - one()) + one())).is_ok());
        assert!(constant_value(&((max() - one()) + one() + one())).is_err());
        let wide = logical_lit(i64::MAX) * logical_lit(1i64);
        assert_eq!(
            constant_value(&wide).unwrap(),
            Some(ScalarValue::Int64(Some(i64::MAX)))
        );
        // Mixed types are not judged here: DataFusion coerces them first.
        assert_eq!(constant_value(&(max() + logical_lit(1i64))).unwrap(), None);
    }

    #[test]
    fn in_range_arithmetic_and_other_types_are_unchanged() {
        let schema = batch().schema();
        let in_range = Arc::new(BinaryExpr::new(
            col("big", &schema).unwrap(),
            Operator::Minus,
            lit(1i64),
        ));
        assert!(evaluate(in_range).is_ok());
        let comparison = Arc::new(BinaryExpr::new(
            col("big", &schema).unwrap(),
            Operator::Gt,
            lit(1i64),
        ));
        assert!(!checked_arithmetic(comparison, &schema).unwrap().transformed);
    }
}
