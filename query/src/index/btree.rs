//! `CREATE INDEX name ON t (col [, ...])`: PostgreSQL's default index, a
//! B-tree per segment that scans with an equality, IN list or range on
//! its first column read through (`StorageScanExec ... index=name`), as
//! does a sort with a limit on its first column ([`FirstRowsRule`]).

use std::sync::Arc;

use basalt_storage::FirstRows;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result as DfResult};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::{Expr, LogicalPlan, Sort, TableScan};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::sql::sqlparser::ast;

use super::{
    index_name, projection_over, require_column, resolve_through, sort_over, IndexBuild,
    IndexTarget,
};
use crate::catalog::table::StorageTable;
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;

/// Storage options PostgreSQL's btree takes that change nothing here.
const IGNORED_OPTIONS: &[&str] = &["fillfactor", "deduplicate_items"];

/// `CREATE [UNIQUE] INDEX [name] ON t [USING btree] (col [, ...])`.
pub(crate) fn plan_index(create: &ast::CreateIndex, target: &IndexTarget) -> Result<IndexBuild> {
    if create.nulls_distinct == Some(false) {
        return Err(Error::not_supported("UNIQUE NULLS NOT DISTINCT"));
    }
    if create.predicate.is_some() || !create.include.is_empty() {
        return Err(Error::not_supported("partial or covering btree indexes"));
    }
    for option in &create.with {
        let name = match option {
            ast::Expr::BinaryOp { left, .. } => left.to_string().to_ascii_lowercase(),
            other => other.to_string(),
        };
        if !IGNORED_OPTIONS.contains(&name.as_str()) {
            return Err(Error::sql(
                "22023",
                format!("unrecognized parameter \"{name}\""),
            ));
        }
    }
    let columns = create
        .columns
        .iter()
        .map(|c| match &c.column.expr {
            ast::Expr::Identifier(ident) if c.operator_class.is_none() => Ok(normalize(ident)),
            _ => Err(Error::not_supported(format!(
                "a btree index over {}",
                c.column.expr
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    for column in &columns {
        require_column(&target.def, column)?;
    }
    Ok(IndexBuild {
        table: target.full.clone(),
        name: index_name(create, &target.full, &columns),
        kind: "btree",
        columns,
        options: match create.unique {
            true => super::unique::unique_options(),
            false => Vec::new(),
        },
    })
}

/// `ORDER BY col [ASC|DESC] [NULLS ...] LIMIT k` over a table with a B-tree
/// index whose first column is `col`, with no WHERE clause or one the scan
/// answers whole: the scan is told so ([`FirstRows`]) and reads from each
/// segment only its first k matching rows in that order, which the Sort
/// above (kept) orders and cuts.
#[derive(Debug)]
pub(crate) struct FirstRowsRule;

impl OptimizerRule for FirstRowsRule {
    fn name(&self) -> &str {
        "basalt_btree_first_rows"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        plan.transform_down(|node| match node {
            LogicalPlan::Sort(sort) if sort.fetch.is_some() => rewrite_sort(sort),
            other => Ok(Transformed::no(other)),
        })
    }
}

fn rewrite_sort(sort: Sort) -> DfResult<Transformed<LogicalPlan>> {
    let wanted = match (sort.fetch, sort.expr.first()) {
        (Some(limit), Some(first)) => match &first.expr {
            Expr::Column(column) => {
                Some((column.name.clone(), first.asc, first.nulls_first, limit))
            }
            _ => None,
        },
        _ => None,
    };
    let Some((column, asc, nulls_first, limit)) = wanted else {
        return Ok(Transformed::no(LogicalPlan::Sort(sort)));
    };
    let input = first_rows_scan(&sort.input, &column, asc, nulls_first, limit)?;
    Ok(sort_over(sort, input))
}

/// `plan` with its storage scan told which first rows are wanted, when the
/// column (seen through projections) is a table scan's indexed one.
fn first_rows_scan(
    plan: &LogicalPlan,
    column: &str,
    asc: bool,
    nulls_first: bool,
    limit: usize,
) -> DfResult<Option<LogicalPlan>> {
    match plan {
        LogicalPlan::Projection(projection) => {
            let named = Expr::Column(Column::from_name(column));
            let Expr::Column(source) = resolve_through(projection, &named) else {
                return Ok(None);
            };
            let source = source.name;
            let Some(input) = first_rows_scan(&projection.input, &source, asc, nulls_first, limit)?
            else {
                return Ok(None);
            };
            Ok(Some(projection_over(projection, input)?))
        }
        // Its filters are all the scan's exact predicates: storage applies
        // them as it walks the index.
        LogicalPlan::TableScan(scan) => {
            let Ok(provider) = source_as_provider(&scan.source) else {
                return Ok(None);
            };
            let Some(table) = provider.downcast_ref::<StorageTable>() else {
                return Ok(None);
            };
            let def = table.def();
            let Ok(position) = def.schema.index_of(column) else {
                return Ok(None);
            };
            let indexed = def
                .indexes
                .iter()
                .any(|i| i.kind == "btree" && i.columns[0] as usize == position);
            if !indexed {
                return Ok(None);
            }
            let wanted = FirstRows {
                column: position,
                descending: !asc,
                nulls_first,
                limit,
            };
            let source = provider_as_source(Arc::new(table.with_first_rows(wanted)));
            Ok(Some(LogicalPlan::TableScan(TableScan {
                source,
                ..scan.clone()
            })))
        }
        _ => Ok(None),
    }
}
