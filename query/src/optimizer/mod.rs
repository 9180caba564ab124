//! Basalt's planner rules over DataFusion's: every analyzer and physical
//! rule in one named list each. An index method's own rules live with the
//! method (`crate::index`).

use std::sync::Arc;

use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_optimizer::PhysicalOptimizerRule;

pub(crate) mod build_keys;
pub(crate) mod checked_arith;
pub(crate) mod cooperative;
pub(crate) mod decimal_arith;
pub(crate) mod join_keys;
pub(crate) mod row_exprs;
pub(crate) mod shared_subplan;

use build_keys::{CollectBuildKeys, LinkBuildKeys};
use checked_arith::{CheckConstantOverflow, CheckIntegerOverflow};
use decimal_arith::NarrowDecimalArithmetic;
use join_keys::AggregateResultKeysToFilter;
use shared_subplan::ShareRepeatedAggregates;

/// The analyzer rules added after DataFusion's, in order.
pub(crate) fn analyzer_rules() -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    vec![
        Arc::new(crate::types::text_datetime::PostgresDatetimeInput),
        Arc::new(CheckConstantOverflow),
    ]
}

/// DataFusion's physical rules with Basalt's. All but one of Basalt's run
/// just before DataFusion pushes its dynamic filters down, since they
/// change joins' keys and build sides, which the filters are made from.
/// `LinkBuildKeys` runs last: it reads the filters that were pushed.
pub(crate) fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let dynamic_filter_pushdown = rules
        .iter()
        .position(|rule| rule.name() == "FilterPushdown(Post)")
        .unwrap_or(rules.len());
    let before_dynamic_filters: [Arc<dyn PhysicalOptimizerRule + Send + Sync>; 5] = [
        Arc::new(AggregateResultKeysToFilter),
        Arc::new(CollectBuildKeys),
        Arc::new(NarrowDecimalArithmetic),
        Arc::new(CheckIntegerOverflow),
        // Last, so that no rule after it rewrites one copy of a shared
        // subtree and not the other.
        Arc::new(ShareRepeatedAggregates),
    ];
    rules.splice(
        dynamic_filter_pushdown..dynamic_filter_pushdown,
        before_dynamic_filters,
    );
    rules.push(Arc::new(LinkBuildKeys));
    // Last: a rule after it could take a join out from under its wrapper.
    rules.push(Arc::new(cooperative::YieldAboveJoins));
    rules
}
