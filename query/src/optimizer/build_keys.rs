//! The rules that place a hash join's build keys (`crate::catalog::build_keys`):
//! [`CollectBuildKeys`] wraps build sides before DataFusion pushes its
//! dynamic filters down, [`LinkBuildKeys`] tells each scan afterwards which
//! join filter each bitmap answers for.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{NullEquality, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use crate::catalog::build_keys::{BuildKeys, BuildKeysExec};
use crate::catalog::join_filter::integer_keys;
use crate::catalog::table::StorageScanExec;
use crate::optimizer::shared_subplan::runs_again;

/// Wraps the build side of each hash join on one integer key in a
/// [`BuildKeysExec`].
#[derive(Debug, Default)]
pub(crate) struct CollectBuildKeys;

impl PhysicalOptimizerRule for CollectBuildKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(wrap_build_side).data()
    }

    fn name(&self) -> &str {
        "collect_build_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn wrap_build_side(plan: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(Transformed::no(plan));
    };
    let build = join.left();
    let key = match join.on() {
        [(build_key, _)] => build_key.downcast_ref::<Column>().map(Column::index),
        _ => None,
    };
    // Each partition of a partitioned join builds from its own share of
    // the keys; the union of the shares is still exactly the build keys.
    let partitions = build.output_partitioning().partition_count();
    let eligible = match join.partition_mode() {
        PartitionMode::CollectLeft => partitions == 1,
        PartitionMode::Partitioned => true,
        PartitionMode::Auto => false,
    } && join.null_equality() == NullEquality::NullEqualsNothing
        && !build.is::<BuildKeysExec>();
    let Some(key) = key.filter(|&key| eligible && is_integer_key(build, key)) else {
        return Ok(Transformed::no(plan));
    };
    let wrapped: Arc<dyn ExecutionPlan> = Arc::new(BuildKeysExec {
        input: build.clone(),
        key,
        keys: Arc::new(BuildKeys::new(partitions)),
    });
    let rewritten = join
        .builder()
        .with_new_children(vec![wrapped, join.right().clone()])?
        .build_exec()?;
    Ok(Transformed::yes(rewritten))
}

fn is_integer_key(plan: &Arc<dyn ExecutionPlan>, column: usize) -> bool {
    let data_type = plan.schema().field(column).data_type().clone();
    integer_keys(arrow_array::new_empty_array(&data_type).as_ref()).is_some()
}

/// Tells each storage scan which [`BuildKeys`] answer for which of the
/// join filters pushed into it.
#[derive(Debug, Default)]
pub(crate) struct LinkBuildKeys;

impl PhysicalOptimizerRule for LinkBuildKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Joins run again are reset; their keys are left to the hash tables.
        if runs_again(&plan)? {
            return Ok(plan);
        }
        let mut linked = Vec::new();
        plan.apply(|node| {
            if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                let build = join.left().downcast_ref::<BuildKeysExec>();
                let filter_id = join
                    .dynamic_expressions_produced()
                    .iter()
                    .find_map(|filter| filter.expression_id());
                if let (Some(build), Some(id)) = (build, filter_id) {
                    // Set once: a plan optimized again keeps its links.
                    let _ = build.keys.filter_id.set(id);
                    linked.push(build.keys.clone());
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if !linked.is_empty() {
            plan.apply(|node| {
                if let Some(scan) = node.downcast_ref::<StorageScanExec>() {
                    scan.offer_build_keys(&linked);
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        Ok(plan)
    }

    fn name(&self) -> &str {
        "link_build_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
