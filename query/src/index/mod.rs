//! Index access methods. Each is one module listed in [`METHODS`]: its
//! CREATE INDEX check, how `pg_get_indexdef` shows its options, and its
//! planner rule (`btree`: sorts with a limit; `hnsw`: nearest-neighbour
//! search). The session runs the statement (`crate::session::index`).
//! The storage side of every kind is `basalt_storage`'s index framework.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, Sort};
use datafusion::sql::sqlparser::ast;

use basalt_storage::TableDef;
use datafusion::optimizer::OptimizerRule;

use crate::catalog::{split_storage_name, SessionShared};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;

mod btree;
mod hnsw;
mod unique;

pub(crate) use hnsw::DEFAULT_EF_SEARCH;

pub(crate) use unique::{
    from_table_constraint as unique_constraint, take_from_create as take_unique_constraints,
    unique_options, UniqueConstraint,
};

/// The table a CREATE INDEX names, as the session resolved it.
pub(crate) struct IndexTarget {
    /// Its storage name.
    pub full: String,
    pub def: TableDef,
}

/// A method's check of its CREATE INDEX against the table: the index to
/// build, named (the session then checks the name is free).
type PlanIndex = fn(&ast::CreateIndex, &IndexTarget) -> Result<IndexBuild>;

/// A method's planner rule, made once per session.
type PlannerRule = fn(&Arc<SessionShared>) -> Arc<dyn OptimizerRule + Send + Sync>;

/// An index to build, checked against the catalog.
pub(crate) struct IndexBuild {
    pub table: String,
    pub name: String,
    pub kind: &'static str,
    pub columns: Vec<String>,
    pub options: Vec<(String, String)>,
}

/// How `pg_get_indexdef` shows an index's options: text after each column
/// (an operator class) and the `WITH (...)` pairs.
pub(crate) struct Shown {
    pub column_suffix: Option<String>,
    pub with: Vec<(String, String)>,
}

/// A session setting of a method (`SET hnsw.ef_search = 100`).
pub(crate) struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    /// Checks a new value and hands it to the method's planner rule.
    pub apply: fn(&SessionShared, &str) -> Result<()>,
}

/// An access method: its CREATE INDEX, how its definition reads, the
/// planner rule that uses it and its session settings.
pub(crate) struct Method {
    name: &'static str,
    pub plan: PlanIndex,
    show: fn(&[(String, String)]) -> Shown,
    rule: PlannerRule,
    settings: &'static [Setting],
}

/// Every access method `CREATE INDEX ... USING` accepts; the first is the
/// default, as btree is PostgreSQL's.
const METHODS: &[Method] = &[
    Method {
        name: "btree",
        plan: btree::plan_index,
        show: |options| Shown {
            column_suffix: None,
            with: options.to_vec(),
        },
        rule: |_| Arc::new(btree::FirstRowsRule),
        settings: &[],
    },
    Method {
        name: "hnsw",
        plan: hnsw::plan_index,
        show: hnsw::shown_hnsw_options,
        rule: |shared| {
            Arc::new(hnsw::VectorSearchRule {
                ef_search: shared.ef_search.clone(),
            })
        },
        settings: hnsw::SETTINGS,
    },
];

/// `options` (as declared) as `pg_get_indexdef` shows them for `method`.
pub(crate) fn shown_options(method: &str, options: &[(String, String)]) -> Shown {
    match METHODS.iter().find(|m| m.name == method) {
        Some(m) => (m.show)(options),
        None => Shown {
            column_suffix: None,
            with: options.to_vec(),
        },
    }
}

/// The method `USING` names (btree by default); 42704 for an unknown one.
pub(crate) fn method(create: &ast::CreateIndex) -> Result<&'static Method> {
    let name = create.using.as_ref().map_or_else(
        || METHODS[0].name.to_string(),
        |u| u.to_string().to_ascii_lowercase(),
    );
    METHODS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::sql("42704", format!("access method \"{name}\" does not exist")))
}

/// Every method's session settings.
pub(crate) fn settings() -> impl Iterator<Item = &'static Setting> {
    METHODS.iter().flat_map(|m| m.settings)
}

/// The method setting called `name` (lower case), if one is.
pub(crate) fn setting(name: &str) -> Option<&'static Setting> {
    settings().find(|s| s.name == name)
}

/// Every method's planner rule, for one session.
pub(crate) fn planner_rules(
    shared: &Arc<SessionShared>,
) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    METHODS.iter().map(|m| (m.rule)(shared)).collect()
}

/// Whether `name` is taken among `tables`' indexes in `table`'s schema:
/// index names are unique per schema, across tables and kinds.
pub(crate) fn index_name_taken(tables: &[TableDef], table: &str, name: &str) -> bool {
    let schema = split_storage_name(table).0;
    tables
        .iter()
        .filter(|t| split_storage_name(&t.name).0 == schema)
        .flat_map(|t| &t.indexes)
        .any(|index| index.name == name)
}

/// A column of the table, or 42703.
pub(crate) fn require_column(def: &TableDef, column: &str) -> Result<()> {
    match def.schema.index_of(column) {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::sql(
            "42703",
            format!("column \"{column}\" does not exist"),
        )),
    }
}

/// The index's name as given, or PostgreSQL's default
/// (`table_col1_col2_idx`).
pub(crate) fn index_name(create: &ast::CreateIndex, table: &str, columns: &[String]) -> String {
    match &create.name {
        Some(name) => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(normalize)
            .unwrap_or_default(),
        None => format!("{}_{}_idx", split_storage_name(table).1, columns.join("_")),
    }
}

/// A column's defining expression in the projection, when it is one.
pub(crate) fn resolve_through(projection: &Projection, expr: &Expr) -> Expr {
    if let Expr::Column(column) = expr {
        for (i, (_, field)) in projection.schema.iter().enumerate() {
            if field.name() == &column.name {
                return projection.expr[i].clone().unalias();
            }
        }
    }
    expr.clone()
}

/// `projection` over the input a method's planner rule rewrote beneath it.
pub(crate) fn projection_over(
    projection: &Projection,
    input: LogicalPlan,
) -> datafusion::common::Result<LogicalPlan> {
    Ok(LogicalPlan::Projection(Projection::try_new_with_schema(
        projection.expr.clone(),
        Arc::new(input),
        projection.schema.clone(),
    )?))
}

/// `sort` over the input a method's planner rule made of its own (its
/// scan replaced or told what the sort wants), or unchanged.
pub(crate) fn sort_over(sort: Sort, input: Option<LogicalPlan>) -> Transformed<LogicalPlan> {
    match input {
        Some(input) => Transformed::new(
            LogicalPlan::Sort(Sort {
                input: Arc::new(input),
                ..sort
            }),
            true,
            TreeNodeRecursion::Jump,
        ),
        None => Transformed::no(LogicalPlan::Sort(sort)),
    }
}
