//! Join keys that an aggregate would stop.
//!
//! A decorrelated scalar subquery such as TPC-H q02's
//! `ps_supplycost = (SELECT min(ps_supplycost) ... WHERE p_partkey = ps_partkey)`
//! becomes a join on two keys: the subquery's grouping column and its
//! aggregate result. The hash join's dynamic filter reads every probe key,
//! and a filter on an aggregate's result cannot go below the aggregate, so
//! the whole filter stays above it and the subquery aggregates every row of
//! its input. When the probe side is one row per group of that aggregate,
//! joining on the grouping columns alone and checking the aggregate result
//! in the join filter gives the same rows, and the dynamic filter (now on
//! grouping columns only) reaches the scan below.
//!
//! The rule rewrites only `CollectLeft` joins: the keys of a partitioned
//! join fix how both inputs were repartitioned.

use std::sync::Arc;

use arrow_schema::{Field, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{JoinSide, JoinType, NullEquality, Result};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::{ColumnIndex, JoinFilter};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// Moves join keys that are aggregate results into the join filter; see
/// the module documentation.
#[derive(Debug, Default)]
pub(crate) struct AggregateResultKeysToFilter;

impl PhysicalOptimizerRule for AggregateResultKeysToFilter {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(rewrite_join).data()
    }

    fn name(&self) -> &str {
        "aggregate_result_keys_to_filter"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Where a probe-side column comes from, as far as a filter on it can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Grouping column `group` of the aggregate at this address.
    Group { aggregate: usize, group: usize },
    /// An aggregate result of the aggregate at this address, which has
    /// `groups` grouping columns.
    AggregateResult { aggregate: usize, groups: usize },
    /// Anything else: a filter may or may not pass; the key stays.
    Other,
}

fn rewrite_join(plan: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
        return Ok(Transformed::no(plan));
    };
    let eligible = *join.partition_mode() == PartitionMode::CollectLeft
        && matches!(
            join.join_type(),
            JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
        )
        && join.null_equality() == NullEquality::NullEqualsNothing
        && join.on().len() > 1;
    if !eligible {
        return Ok(Transformed::no(plan));
    }
    let origins: Vec<Origin> = join
        .on()
        .iter()
        .map(|(_, probe)| match probe.downcast_ref::<Column>() {
            Some(column) => origin(join.right(), column.index()),
            None => Origin::Other,
        })
        .collect();
    let Some(moved) = keys_to_move(&origins) else {
        return Ok(Transformed::no(plan));
    };
    match rewritten(join, &moved)? {
        Some(rewritten) => Ok(Transformed::yes(rewritten)),
        None => Ok(Transformed::no(plan)),
    }
}

/// Which keys to move: those that are results of an aggregate whose every
/// grouping column is another key, so the probe side has one row per
/// remaining key value and the join stays one lookup per probe row.
fn keys_to_move(origins: &[Origin]) -> Option<Vec<bool>> {
    let (aggregate, groups) = origins.iter().find_map(|origin| match *origin {
        Origin::AggregateResult { aggregate, groups } => Some((aggregate, groups)),
        _ => None,
    })?;
    let result = Origin::AggregateResult { aggregate, groups };
    // A global aggregate has no grouping column to keep as a key.
    let covered = groups > 0
        && (0..groups).all(|group| origins.contains(&Origin::Group { aggregate, group }));
    covered.then(|| origins.iter().map(|origin| *origin == result).collect())
}

fn origin(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Origin {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return match projection
            .expr()
            .get(index)
            .and_then(|p| p.expr.downcast_ref::<Column>())
        {
            Some(column) => origin(projection.input(), column.index()),
            None => Origin::Other,
        };
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(projection) => match projection.get(index) {
                Some(index) => *index,
                None => return Origin::Other,
            },
            None => index,
        };
        return origin(filter.input(), index);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        return aggregate_origin(plan, aggregate, index);
    }
    let passes_columns_through =
        plan.is::<RepartitionExec>() || plan.is::<CoalescePartitionsExec>();
    match plan.children().first() {
        Some(input) if passes_columns_through => origin(input, index),
        _ => Origin::Other,
    }
}

fn aggregate_origin(
    plan: &Arc<dyn ExecutionPlan>,
    aggregate: &AggregateExec,
    index: usize,
) -> Origin {
    // With grouping sets a grouping column may be null in some rows, and
    // the aggregate then keeps every filter above itself.
    if aggregate.group_expr().groups().len() != 1 {
        return Origin::Other;
    }
    let address = Arc::as_ptr(plan) as *const () as usize;
    let groups = aggregate.group_expr().expr().len();
    if index < groups {
        Origin::Group {
            aggregate: address,
            group: index,
        }
    } else {
        Origin::AggregateResult {
            aggregate: address,
            groups,
        }
    }
}

/// The join with the `moved` keys checked by its filter instead, or `None`
/// when a moved key is not a plain column on both sides.
fn rewritten(join: &HashJoinExec, moved: &[bool]) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let left_schema = join.left().schema();
    let right_schema = join.right().schema();
    let (mut expression, mut indices, mut fields): (Option<Arc<dyn PhysicalExpr>>, Vec<_>, Vec<_>) =
        match join.filter() {
            Some(filter) => (
                Some(filter.expression().clone()),
                filter.column_indices().to_vec(),
                filter.schema().fields().iter().cloned().collect(),
            ),
            None => (None, Vec::new(), Vec::new()),
        };
    let mut kept = Vec::new();
    for (pair, move_it) in join.on().iter().zip(moved) {
        if !move_it {
            kept.push(pair.clone());
            continue;
        }
        let (Some(build), Some(probe)) = (
            pair.0.downcast_ref::<Column>(),
            pair.1.downcast_ref::<Column>(),
        ) else {
            return Ok(None);
        };
        let build_field = left_schema.field(build.index()).clone();
        let probe_field = right_schema.field(probe.index()).clone();
        if build_field.data_type() != probe_field.data_type() {
            return Ok(None);
        }
        let equal = Arc::new(BinaryExpr::new(
            filter_column(
                &mut indices,
                &mut fields,
                build,
                JoinSide::Left,
                build_field,
            ),
            Operator::Eq,
            filter_column(
                &mut indices,
                &mut fields,
                probe,
                JoinSide::Right,
                probe_field,
            ),
        )) as Arc<dyn PhysicalExpr>;
        expression = Some(match expression {
            Some(earlier) => Arc::new(BinaryExpr::new(earlier, Operator::And, equal)),
            None => equal,
        });
    }
    let Some(expression) = expression else {
        return Ok(None);
    };
    let filter = JoinFilter::new(expression, indices, Arc::new(Schema::new(fields)));
    let rewritten = join
        .builder()
        .with_on(kept)
        .with_filter(Some(filter))
        .build_exec()?;
    Ok(Some(rewritten))
}

/// Adds a join input column to the filter's own schema and returns the
/// filter's reference to it.
fn filter_column(
    indices: &mut Vec<ColumnIndex>,
    fields: &mut Vec<Arc<Field>>,
    column: &Column,
    side: JoinSide,
    field: Field,
) -> Arc<dyn PhysicalExpr> {
    indices.push(ColumnIndex {
        index: column.index(),
        side,
    });
    fields.push(Arc::new(field));
    Arc::new(Column::new(column.name(), indices.len() - 1))
}
