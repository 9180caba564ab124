//! Evaluating the filters hash joins push into a scan, cheaply.
//!
//! A join built per partition pushes `CASE hash(key) % n WHEN 0 THEN t0
//! WHEN 1 THEN t1 ... ELSE e END`: each probe row is tested against the
//! build side of the partition it will be routed to. DataFusion's CASE
//! evaluation copies every column of the batch once per branch and merges
//! the branch results with a generic kernel, which on a lineitem scan cost
//! more than the lookups themselves. Here the filter only ever sees the
//! columns it reads, and a routed CASE is evaluated by bucketing row
//! numbers and scattering each branch's answer back into one mask.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::array::BooleanBufferBuilder;
use datafusion::arrow::compute::take_record_batch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{cast::as_boolean_array, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, Column, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr_common::physical_expr::{
    snapshot_generation, snapshot_physical_expr,
};
use datafusion::physical_plan::PhysicalExpr;

/// A filter pushed into the scan, with its compiled form for the filter's
/// current generation (a join fills its filter in once its build side is
/// done, and the placeholder before that must not be kept).
pub(crate) struct JoinFilter {
    filter: Arc<dyn PhysicalExpr>,
    compiled: Option<(u64, Compiled)>,
}

impl JoinFilter {
    pub(crate) fn new(filter: Arc<dyn PhysicalExpr>) -> JoinFilter {
        JoinFilter {
            filter,
            compiled: None,
        }
    }

    /// Which rows of `batch` pass; NULL counts as not passing.
    pub(crate) fn mask(&mut self, batch: &RecordBatch) -> Result<BooleanArray> {
        let generation = snapshot_generation(&self.filter);
        let compiled = match self.compiled.take() {
            Some((seen, compiled)) if seen == generation => compiled,
            _ => Compiled::new(snapshot_physical_expr(self.filter.clone())?)?,
        };
        let mask = compiled.mask(batch);
        self.compiled = Some((generation, compiled));
        mask
    }
}

struct Compiled {
    /// The batch columns the filter reads, ascending; the expressions
    /// below address them by position in this list.
    read: Vec<usize>,
    form: Form,
}

enum Form {
    Plain(Arc<dyn PhysicalExpr>),
    Routed(RoutedCase),
}

impl Compiled {
    fn new(filter: Arc<dyn PhysicalExpr>) -> Result<Compiled> {
        let mut read: Vec<usize> = collect_columns(&filter).iter().map(Column::index).collect();
        read.sort_unstable();
        let form = match filter.downcast_ref::<CaseExpr>().and_then(RoutedCase::of) {
            Some(routed) => Form::Routed(routed.narrowed(&read)?),
            None => Form::Plain(narrowed(filter, &read)?),
        };
        Ok(Compiled { read, form })
    }

    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let narrow = batch.project(&self.read)?;
        match &self.form {
            Form::Plain(filter) => boolean(filter.as_ref(), &narrow),
            Form::Routed(routed) => routed.mask(&narrow),
        }
    }
}

/// `expr` addressing the columns of a batch projected to `read`.
fn narrowed(expr: Arc<dyn PhysicalExpr>, read: &[usize]) -> Result<Arc<dyn PhysicalExpr>> {
    let rewritten = expr.transform_up(|expr| match expr.downcast_ref::<Column>() {
        Some(column) => {
            let position = read.binary_search(&column.index()).map_err(|_| {
                DataFusionError::Internal(format!("filter column {column} not collected"))
            })?;
            Ok(Transformed::yes(
                Arc::new(Column::new(column.name(), position)) as Arc<dyn PhysicalExpr>,
            ))
        }
        None => Ok(Transformed::no(expr)),
    })?;
    Ok(rewritten.data)
}

/// `CASE route % partitions WHEN i THEN test_i ... ELSE otherwise END`
/// with literal partition numbers and a literal (or absent) ELSE.
struct RoutedCase {
    route: Arc<dyn PhysicalExpr>,
    partitions: u64,
    /// Per partition, the first branch naming it (later ones never run).
    tests: Vec<Option<Arc<dyn PhysicalExpr>>>,
    otherwise: bool,
}

impl RoutedCase {
    /// Branches beyond this many partitions are left to DataFusion.
    const MAX_PARTITIONS: u64 = 1024;

    fn of(case: &CaseExpr) -> Option<RoutedCase> {
        let modulo = case.expr()?.downcast_ref::<BinaryExpr>()?;
        if *modulo.op() != Operator::Modulo {
            return None;
        }
        let partitions = match literal(modulo.right())? {
            ScalarValue::UInt64(Some(n)) if (1..=Self::MAX_PARTITIONS).contains(n) => *n,
            _ => return None,
        };
        let otherwise = match case.else_expr().map(literal) {
            None => false,
            Some(Some(ScalarValue::Boolean(value))) => value.unwrap_or(false),
            Some(_) => return None,
        };
        let mut tests = vec![None; partitions as usize];
        for (when, then) in case.when_then_expr() {
            let ScalarValue::UInt64(Some(partition)) = literal(when)? else {
                return None;
            };
            // A branch no route reaches never runs.
            if let Some(slot) = tests.get_mut(*partition as usize) {
                slot.get_or_insert_with(|| then.clone());
            }
        }
        Some(RoutedCase {
            route: modulo.left().clone(),
            partitions,
            tests,
            otherwise,
        })
    }

    fn narrowed(self, read: &[usize]) -> Result<RoutedCase> {
        let tests = self
            .tests
            .into_iter()
            .map(|test| test.map(|test| narrowed(test, read)).transpose())
            .collect::<Result<_>>()?;
        Ok(RoutedCase {
            route: narrowed(self.route, read)?,
            tests,
            ..self
        })
    }

    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        let routes = self.route.evaluate(batch)?.into_array(rows)?;
        let routes = routes
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataFusionError::Internal("join filter route is not UInt64".into()))?;
        let mut rows_of = vec![Vec::<u32>::new(); self.partitions as usize];
        for (row, route) in routes.iter().enumerate() {
            // A NULL route matches no WHEN.
            if let Some(route) = route {
                rows_of[(route % self.partitions) as usize].push(row as u32);
            }
        }
        let mut passes = BooleanBufferBuilder::new(rows);
        passes.append_n(rows, self.otherwise);
        for (rows, test) in rows_of.into_iter().zip(&self.tests) {
            // Rows of a partition no branch names keep the ELSE value.
            let Some(test) = test else { continue };
            if rows.is_empty() {
                continue;
            }
            let indices = UInt32Array::from(rows);
            let routed = take_record_batch(batch, &indices)?;
            let answers = boolean(test.as_ref(), &routed)?;
            for (answer, row) in answers.iter().zip(indices.values().iter()) {
                passes.set_bit(*row as usize, answer.unwrap_or(false));
            }
        }
        Ok(BooleanArray::new(passes.finish(), None))
    }
}

fn literal(expr: &Arc<dyn PhysicalExpr>) -> Option<&ScalarValue> {
    expr.downcast_ref::<Literal>().map(Literal::value)
}

fn boolean(expr: &dyn PhysicalExpr, batch: &RecordBatch) -> Result<BooleanArray> {
    let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(as_boolean_array(&values)?.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::{col, lit, DynamicFilterPhysicalExpr};

    const ROWS: usize = 5_000;

    type Branches = Vec<(u64, Arc<dyn PhysicalExpr>)>;

    /// key (with NULLs), a text column no filter reads, and route (with NULLs).
    fn batch() -> RecordBatch {
        let mut next = crate::test_rng::xorshift();
        let keys: Int64Array = (0..ROWS)
            .map(|_| match next() % 10 {
                0 => None,
                r => Some((r * 1000 + next() % 1000) as i64),
            })
            .collect();
        let text: StringArray = (0..ROWS).map(|i| Some(format!("row {i}"))).collect();
        let routes: UInt64Array = (0..ROWS)
            .map(|_| (!next().is_multiple_of(20)).then(&mut next))
            .collect();
        let schema = Schema::new(vec![
            Field::new("text", DataType::Utf8, false),
            Field::new("key", DataType::Int64, true),
            Field::new("route", DataType::UInt64, true),
        ]);
        let columns: Vec<ArrayRef> = vec![Arc::new(text), Arc::new(keys), Arc::new(routes)];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn routed_case(
        batch: &RecordBatch,
        partitions: u64,
        branches: &[(u64, Arc<dyn PhysicalExpr>)],
        otherwise: Option<bool>,
    ) -> Arc<dyn PhysicalExpr> {
        let schema = batch.schema();
        let route = Arc::new(BinaryExpr::new(
            col("route", &schema).unwrap(),
            Operator::Modulo,
            lit(ScalarValue::UInt64(Some(partitions))),
        ));
        let when_then = branches
            .iter()
            .map(|(partition, test)| (lit(ScalarValue::UInt64(Some(*partition))), test.clone()))
            .collect();
        Arc::new(CaseExpr::try_new(Some(route), when_then, otherwise.map(lit)).unwrap())
    }

    fn key_between(batch: &RecordBatch, low: i64, high: i64) -> Arc<dyn PhysicalExpr> {
        let key = col("key", &batch.schema()).unwrap();
        let above = Arc::new(BinaryExpr::new(key.clone(), Operator::GtEq, lit(low)));
        let below = Arc::new(BinaryExpr::new(key, Operator::LtEq, lit(high)));
        Arc::new(BinaryExpr::new(above, Operator::And, below))
    }

    /// DataFusion's own evaluation, NULL read as not passing.
    fn expected(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<bool> {
        let answers = boolean(filter.as_ref(), batch).unwrap();
        answers.iter().map(|answer| answer == Some(true)).collect()
    }

    fn ours(filter: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Vec<bool> {
        let mask = JoinFilter::new(filter.clone()).mask(batch).unwrap();
        mask.iter().map(|answer| answer == Some(true)).collect()
    }

    #[test]
    fn routed_cases_pass_exactly_the_rows_datafusion_passes() {
        let batch = batch();
        let low = key_between(&batch, 1000, 4000);
        let high = key_between(&batch, 3000, 9999);
        let nothing = lit(false);
        let shapes: Vec<(u64, Branches, Option<bool>)> = vec![
            (2, vec![(0, low.clone()), (1, high.clone())], Some(false)),
            (2, vec![(0, low.clone()), (1, high.clone())], None),
            // Partition 2 has no branch: its rows take the ELSE.
            (3, vec![(1, low.clone()), (0, high.clone())], Some(true)),
            (3, vec![(1, low.clone()), (0, high.clone())], Some(false)),
            // The first branch naming a partition wins; one beyond n never runs.
            (
                2,
                vec![(0, low.clone()), (0, high.clone()), (7, nothing)],
                Some(true),
            ),
            (1, vec![(0, high.clone())], Some(false)),
        ];
        for (partitions, branches, otherwise) in shapes {
            let filter = routed_case(&batch, partitions, &branches, otherwise);
            let want = expected(&filter, &batch);
            assert!(want.iter().any(|pass| *pass) && want.iter().any(|pass| !*pass));
            assert_eq!(ours(&filter, &batch), want, "{filter}");
        }
    }

    #[test]
    fn other_filters_are_evaluated_over_only_the_columns_they_read() {
        let batch = batch();
        let filter = key_between(&batch, 2500, 7500);
        assert_eq!(ours(&filter, &batch), expected(&filter, &batch));
        let compiled = Compiled::new(filter).unwrap();
        assert_eq!(compiled.read, vec![1]);
    }

    #[test]
    fn a_filter_filled_in_after_the_scan_started_is_compiled_afresh() {
        let batch = batch();
        let key = col("key", &batch.schema()).unwrap();
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(vec![key], lit(true)));
        let mut filter = JoinFilter::new(dynamic.clone());
        let everything = filter.mask(&batch).unwrap();
        assert_eq!(everything.true_count(), ROWS);
        let filled = routed_case(
            &batch,
            2,
            &[(0, key_between(&batch, 1000, 2000))],
            Some(false),
        );
        dynamic.update(filled.clone()).unwrap();
        let some = filter.mask(&batch).unwrap();
        let some: Vec<bool> = some.iter().map(|answer| answer == Some(true)).collect();
        assert_eq!(some, expected(&filled, &batch));
    }
}
