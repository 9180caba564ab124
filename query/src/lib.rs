//! Basalt's SQL layer: sessions that run Postgres-flavoured SQL on
//! DataFusion over storage snapshots and transactions. DDL and DML are the
//! session's own; queries are DataFusion's, reading storage tables with
//! projection, filter and limit pushed down.

/// The `ExecutionPlan` methods of a leaf plan (no children, no expressions
/// to rewrite), shared by the storage scan and the vector search.
macro_rules! leaf_plan_methods {
    () => {
        leaf_plan_methods!(expressions: |_plan| []);
    };
    // `expressions` lists the physical expressions the plan evaluates: a
    // hash join fills in its dynamic filter only when it finds that filter
    // among the expressions of its probe side.
    (expressions: |$plan:ident| $expressions:expr) => {
        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![]
        }

        fn apply_expressions(
            &self,
            f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            let $plan = self;
            for expression in $expressions.iter() {
                if f(expression)? == datafusion::common::tree_node::TreeNodeRecursion::Stop {
                    return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn replace_children(
            self: std::sync::Arc<Self>,
            _children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
            _options: datafusion::physical_plan::ReplaceChildrenOptions,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            Ok(self)
        }

        #[allow(deprecated)]
        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            self.replace_children(
                children,
                datafusion::physical_plan::ReplaceChildrenOptions::new(
                    datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                ),
            )
        }
    };
}

/// The `ExecutionPlan` methods of a node that passes its one input's
/// batches through in order: the input's properties, no expressions of its
/// own, and for new children `$rebuild`, a copy of `$plan` over `$input`.
macro_rules! pass_through_plan_methods {
    (|$plan:ident, $input:ident| $rebuild:expr) => {
        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            self.input.properties()
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![&self.input]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        #[allow(deprecated)]
        fn with_new_children(
            self: std::sync::Arc<Self>,
            mut children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            let $input = children.pop().unwrap_or_else(|| self.input.clone());
            let $plan = &self;
            Ok(std::sync::Arc::new($rebuild))
        }

        fn maintains_input_order(&self) -> Vec<bool> {
            vec![true]
        }
    };
}

pub(crate) mod catalog;
pub(crate) mod index;
pub(crate) mod io;
#[cfg(test)]
mod layers;
pub(crate) mod optimizer;
pub(crate) mod pg;
pub(crate) mod session;
pub(crate) mod sql;
#[cfg(test)]
mod test_rng;
pub(crate) mod types;

pub use catalog::table::{StorageScanExec, StorageTable};
pub use catalog::{CATALOG, SCHEMA};
pub use io::copy::{CopyStream, Reject};
pub use io::load::{
    FileAccess, FileFormat, LoadOptions, LoadProgress, LoadReport, OnError, ProgressFn,
};
pub use session::oltp::PreparedStatement;
pub use session::prepare::{self, bind, Description, Param};
pub use session::{Database, QueryResult, ResultBudget, Session};
pub use sql::error::{Error, Result};
pub use sql::interrupt::Interrupt;
pub use sql::sqlstate;
pub use types::pgtypes::PG_TYPE_KEY;
pub use types::{pgtext, pgtypes, vector};

/// The parsed statement [`Session::execute_statement`] takes.
pub use datafusion::sql::parser::Statement;

/// The Arrow crates the results are made of, as DataFusion uses them.
pub use datafusion::arrow;

/// The stream of record batches a query result is.
pub mod stream {
    pub use datafusion::execution::SendableRecordBatchStream;
    pub use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
}
