//! Rewriting the expressions a plan evaluates once per input row:
//! projections, filter predicates and the arguments of aggregates that
//! read their input. Physical rules that swap one expression for an
//! equivalent (narrow decimal arithmetic, overflow-checked integer
//! arithmetic) share this walk rather than each knowing every node kind.

use std::sync::Arc;

use arrow_schema::Schema;
use datafusion::common::tree_node::Transformed;
use datafusion::common::Result;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// A rewrite of one expression, given the schema it reads.
pub(crate) type RewriteExpr =
    dyn Fn(Arc<dyn PhysicalExpr>, &Schema) -> Result<Transformed<Arc<dyn PhysicalExpr>>>;

/// `plan` with `rewrite` applied to the row expressions of its top node.
/// Callers walk the tree (`transform_up`) with it.
pub(crate) fn rewrite_row_exprs(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: &RewriteExpr,
) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    let rewritten: Option<Arc<dyn ExecutionPlan>> =
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            rewrite_projection(projection, rewrite)?.map(|p| Arc::new(p) as _)
        } else if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            rewrite_filter(filter, rewrite)?.map(|f| Arc::new(f) as _)
        } else if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
            // Final phases merge partial states and never evaluate arguments.
            if matches!(
                aggregate.mode(),
                AggregateMode::Partial | AggregateMode::Single
            ) {
                rewrite_aggregate(aggregate, rewrite)?.map(|a| Arc::new(a) as _)
            } else {
                None
            }
        } else {
            None
        };
    Ok(match rewritten {
        Some(plan) => Transformed::yes(plan),
        None => Transformed::no(plan),
    })
}

fn rewrite_projection(
    projection: &ProjectionExec,
    rewrite: &RewriteExpr,
) -> Result<Option<ProjectionExec>> {
    let schema = projection.input().schema();
    let mut changed = false;
    let exprs = projection
        .expr()
        .iter()
        .map(|p| {
            let rewritten = rewrite(p.expr.clone(), &schema)?;
            changed |= rewritten.transformed;
            Ok(ProjectionExpr::new(rewritten.data, p.alias.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    if !changed {
        return Ok(None);
    }
    ProjectionExec::try_new(exprs, projection.input().clone()).map(Some)
}

fn rewrite_filter(filter: &FilterExec, rewrite: &RewriteExpr) -> Result<Option<FilterExec>> {
    let schema = filter.input().schema();
    let rewritten = rewrite(filter.predicate().clone(), &schema)?;
    if !rewritten.transformed {
        return Ok(None);
    }
    FilterExecBuilder::from(filter)
        .with_predicate(rewritten.data)
        .build()
        .map(Some)
}

fn rewrite_aggregate(
    aggregate: &AggregateExec,
    rewrite: &RewriteExpr,
) -> Result<Option<AggregateExec>> {
    let schema = aggregate.input_schema();
    let mut changed = false;
    let mut functions = Vec::with_capacity(aggregate.aggr_expr().len());
    for function in aggregate.aggr_expr() {
        let mut args_changed = false;
        let args = function
            .expressions()
            .into_iter()
            .map(|arg| {
                let rewritten = rewrite(arg, &schema)?;
                args_changed |= rewritten.transformed;
                Ok(rewritten.data)
            })
            .collect::<Result<Vec<_>>>()?;
        let order_by = function
            .order_bys()
            .iter()
            .map(|s| s.expr.clone())
            .collect();
        match args_changed
            .then(|| function.with_new_expressions(args, order_by))
            .flatten()
        {
            Some(rewritten) => {
                changed = true;
                functions.push(Arc::new(rewritten));
            }
            None => functions.push(function.clone()),
        }
    }
    Ok(changed.then(|| aggregate.with_new_aggr_exprs(functions)))
}
