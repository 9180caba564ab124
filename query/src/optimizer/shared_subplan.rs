//! Computing a repeated aggregate once.
//!
//! DataFusion inlines a common table expression at every reference, so a
//! CTE read twice is computed twice: TPC-H q15 aggregates three months of
//! lineitem for its `revenue` view once to find the top revenue and again
//! to find who earned it. When two aggregates of one plan are the same
//! subtree (the same operators, expressions, tables and predicates, and
//! nothing volatile), both are replaced by one [`SharedExec`] that runs
//! the aggregate once per partition and hands every reader the batches.
//!
//! The rule runs before DataFusion pushes dynamic filters down, and a
//! `SharedExec` takes no filters from above: a filter one reader pushed
//! would otherwise shape what the other reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    common::collect, displayable, DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr,
};
use futures::future::{BoxFuture, Shared};

use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;

use crate::catalog::table::StorageScanExec;

/// Replaces repeated aggregates with one [`SharedExec`]; see the module
/// documentation.
#[derive(Debug, Default)]
pub(crate) struct ShareRepeatedAggregates;

impl PhysicalOptimizerRule for ShareRepeatedAggregates {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if runs_again(&plan)? {
            return Ok(plan);
        }
        let mut occurrences: HashMap<String, usize> = HashMap::new();
        plan.apply(|node| {
            if let Some(fingerprint) = shareable(node)? {
                *occurrences.entry(fingerprint).or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        occurrences.retain(|_, count| *count > 1);
        if occurrences.is_empty() {
            return Ok(plan);
        }
        let mut shared: HashMap<String, Arc<dyn ExecutionPlan>> = HashMap::new();
        plan.transform_down(|node| {
            let Some(fingerprint) = shareable(&node)?.filter(|f| occurrences.contains_key(f))
            else {
                return Ok(Transformed::no(node));
            };
            let replacement = shared
                .entry(fingerprint)
                .or_insert_with(|| Arc::new(SharedExec::new(node)))
                .clone();
            Ok(Transformed::new(replacement, true, TreeNodeRecursion::Jump))
        })
        .data()
    }

    fn name(&self) -> &str {
        "share_repeated_aggregates"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether parts of `plan` run more than once: a recursive query runs its
/// recursive term again per iteration, resetting the nodes in it.
pub(crate) fn runs_again(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    plan.exists(|node| {
        Ok(matches!(
            node.name(),
            "RecursiveQueryExec" | "WorkTableExec"
        ))
    })
}

/// The subtree's text, when `node` is a finished aggregate whose subtree
/// the text describes fully: it reads only storage scans (whose text names
/// table, columns and predicates; a VALUES list's does not show its rows),
/// evaluates nothing volatile and no scalar subquery (whose text is the
/// same for every subquery until it has run).
fn shareable(node: &Arc<dyn ExecutionPlan>) -> Result<Option<String>> {
    let finished = node
        .downcast_ref::<AggregateExec>()
        .is_some_and(|aggregate| {
            !matches!(
                aggregate.mode(),
                AggregateMode::Partial | AggregateMode::PartialReduce
            )
        });
    if !finished {
        return Ok(None);
    }
    let mut described = true;
    node.apply(|descendant| {
        let leaf = descendant.children().is_empty();
        described &= !leaf || descendant.is::<StorageScanExec>();
        descendant.apply_expressions(&mut |expr: &Arc<dyn PhysicalExpr>| {
            described &= !is_volatile(expr)
                && !expr.exists(|e| Ok(e.downcast_ref::<ScalarSubqueryExpr>().is_some()))?;
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(described.then(|| displayable(node.as_ref()).indent(true).to_string()))
}

type SharedBatches =
    Shared<BoxFuture<'static, Result<Arc<Vec<RecordBatch>>, Arc<DataFusionError>>>>;

/// Runs its input once per partition, for every reader of the partition.
pub(crate) struct SharedExec {
    input: Arc<dyn ExecutionPlan>,
    runs: Arc<Mutex<HashMap<usize, SharedBatches>>>,
}

impl SharedExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> SharedExec {
        SharedExec {
            input,
            runs: Arc::default(),
        }
    }

    /// The partition's batches, from a task started by its first reader;
    /// the task runs whether or not that reader is polled again.
    fn run(&self, partition: usize, context: Arc<TaskContext>) -> Result<SharedBatches> {
        let mut runs = self.runs.lock();
        if let Some(run) = runs.get(&partition) {
            return Ok(run.clone());
        }
        let stream = self.input.execute(partition, context)?;
        let task = SpawnedTask::spawn(collect(stream));
        let run = async move {
            match task.join().await {
                Ok(Ok(batches)) => Ok(Arc::new(batches)),
                Ok(Err(e)) => Err(Arc::new(e)),
                Err(e) => Err(Arc::new(DataFusionError::External(Box::new(e)))),
            }
        }
        .boxed()
        .shared();
        runs.insert(partition, run.clone());
        Ok(run)
    }
}

impl fmt::Debug for SharedExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedExec")
    }
}

impl DisplayAs for SharedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedExec")
    }
}

impl ExecutionPlan for SharedExec {
    fn name(&self) -> &'static str {
        "SharedExec"
    }

    // A copy keeps the shared runs: the rules after this one only fill in
    // the subtree's own dynamic filters, which every copy computes alike.
    pass_through_plan_methods!(|plan, input| SharedExec {
        input,
        runs: plan.runs.clone(),
    });

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let run = self.run(partition, context)?;
        let batches = futures::stream::once(run).flat_map(|result| {
            let items: Vec<Result<RecordBatch>> = match result {
                Ok(batches) => batches.iter().cloned().map(Ok).collect(),
                Err(e) => vec![Err(DataFusionError::Shared(e))],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            batches,
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::physical_plan::filter_pushdown::{FilterPushdownPhase, PushedDown};

    use super::*;

    fn numbers(values: Vec<i64>) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    #[test]
    fn filters_from_one_reader_stay_above_the_shared_node() {
        let shared = SharedExec::new(numbers(vec![1, 2, 3]));
        let filter = datafusion::physical_expr::expressions::binary(
            col("n", &shared.schema()).unwrap(),
            datafusion::logical_expr::Operator::Gt,
            lit(1i64),
            &shared.schema(),
        )
        .unwrap();
        for phase in [FilterPushdownPhase::Pre, FilterPushdownPhase::Post] {
            let description = shared
                .gather_filters_for_pushdown(phase, vec![filter.clone()], &ConfigOptions::default())
                .unwrap();
            let children = description.parent_filters();
            assert_eq!(children.len(), 1);
            for child in children {
                assert_eq!(child.len(), 1);
                assert!(child
                    .iter()
                    .all(|p| matches!(p.discriminant, PushedDown::No)));
            }
        }
    }

    #[tokio::test]
    async fn every_reader_gets_the_rows_of_one_run() {
        let shared = Arc::new(SharedExec::new(numbers(vec![4, 5, 6])));
        let context = Arc::new(TaskContext::default());
        let first = shared.execute(0, context.clone()).unwrap();
        let second = shared.execute(0, context).unwrap();
        for stream in [second, first] {
            let batches = collect(stream).await.unwrap();
            let values: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    column.values().to_vec()
                })
                .collect();
            assert_eq!(values, [4, 5, 6]);
        }
        let runs = shared.runs.lock();
        assert_eq!(runs.len(), 1, "the input ran once for both readers");
    }
}
