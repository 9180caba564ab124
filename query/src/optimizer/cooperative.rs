//! Joins give up their thread now and then. DataFusion makes a plan
//! cooperative at its leaves: a scan spends tokio's task budget per batch,
//! so an operator above yields once the budget is spent. A join can turn
//! one input batch into millions of output batches without polling its
//! inputs again (a cross join of two large series), and the task computing
//! it then never yields: nothing else runs on that thread, and a cancel,
//! a statement timeout or a client's disconnect is not noticed until the
//! join is done. Above every join the batches spend budget too.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug, Default)]
pub(crate) struct YieldAboveJoins;

/// Operators whose output may be far larger than what they read.
fn amplifies(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    name.ends_with("JoinExec") || name == "UnnestExec"
}

impl PhysicalOptimizerRule for YieldAboveJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if amplifies(node.as_ref()) {
                let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
                Ok(Transformed::yes(wrapped))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "YieldAboveJoins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
