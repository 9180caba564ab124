//! Index access methods. Each is one module listed in [`METHODS`]: its
//! CREATE INDEX, how `pg_get_indexdef` shows its options, and its planner
//! rule (`btree`: sorts with a limit; `hnsw`: nearest-neighbour search).
//! The storage side of every kind is `basalt_storage`'s index framework.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, Sort};
use datafusion::sql::sqlparser::ast;

use crate::catalog::split_storage_name;
use crate::error::{Error, Result};
use crate::session::{QueryResult, Session};

mod btree;
mod hnsw;
mod unique;

pub(crate) use btree::FirstRowsRule;
pub(crate) use hnsw::{VectorSearchRule, DEFAULT_EF_SEARCH};

pub(crate) use unique::{
    from_table_constraint as unique_constraint, take_from_create as take_unique_constraints,
    UniqueConstraint,
};

type CreateIndex = fn(&mut Session, ast::CreateIndex) -> Result<Prepared>;

/// What a method made of its CREATE INDEX statement.
pub(crate) enum Prepared {
    /// Nothing to build (`IF NOT EXISTS` and the name is taken).
    Done,
    Build(IndexBuild),
}

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

/// An access method: its CREATE INDEX and how its definition reads.
struct Method {
    name: &'static str,
    create: CreateIndex,
    show: fn(&[(String, String)]) -> Shown,
}

/// Every access method `CREATE INDEX ... USING` accepts; the first is the
/// default, as btree is PostgreSQL's.
const METHODS: &[Method] = &[
    Method {
        name: "btree",
        create: Session::create_btree_index,
        show: |options| Shown {
            column_suffix: None,
            with: options.to_vec(),
        },
    },
    Method {
        name: "hnsw",
        create: Session::create_hnsw_index,
        show: hnsw::shown_hnsw_options,
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

impl Session {
    /// CREATE INDEX by the method `USING` names (btree by default).
    pub(crate) async fn create_index(&mut self, create: ast::CreateIndex) -> Result<QueryResult> {
        let method = create.using.as_ref().map_or_else(
            || METHODS[0].name.to_string(),
            |u| u.to_string().to_ascii_lowercase(),
        );
        let Some(prepare) = METHODS.iter().find(|m| m.name == method).map(|m| m.create) else {
            return Err(Error::sql(
                "42704",
                format!("access method \"{method}\" does not exist"),
            ));
        };
        let Prepared::Build(build) = prepare(self, create)? else {
            return Ok(QueryResult::command("CREATE INDEX"));
        };
        self.build_index(build).await?;
        Ok(QueryResult::command("CREATE INDEX"))
    }

    /// Builds and publishes an index off the async workers: a build reads
    /// every segment.
    pub(crate) async fn build_index(&mut self, build: IndexBuild) -> Result<()> {
        self.before_ddl()?;
        let db = self.shared.db.clone();
        let built = tokio::task::spawn_blocking(move || {
            let columns: Vec<&str> = build.columns.iter().map(String::as_str).collect();
            db.add_index(
                &build.table,
                &build.name,
                build.kind,
                &columns,
                build.options,
            )
        })
        .await
        .map_err(|e| Error::sql("XX000", format!("the index build failed: {e}")))?;
        built.map_err(|e| match e {
            basalt_storage::Error::InvalidArgument(message) => Error::sql("42804", message),
            other => other.into(),
        })?;
        self.after_ddl();
        Ok(())
    }

    /// Whether `IF NOT EXISTS` finds the name taken; 42P07 without it.
    pub(crate) fn name_in_use(
        &self,
        create: &ast::CreateIndex,
        table: &str,
        name: &str,
    ) -> Result<bool> {
        if !self.index_name_taken(table, name) {
            return Ok(false);
        }
        if create.if_not_exists {
            return Ok(true);
        }
        Err(Error::sql(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ))
    }

    /// Index names are unique per schema, across tables and kinds.
    pub(crate) fn index_name_taken(&self, table: &str, name: &str) -> bool {
        let schema = split_storage_name(table).0;
        self.shared
            .db
            .tables()
            .iter()
            .filter(|t| split_storage_name(&t.name).0 == schema)
            .flat_map(|t| &t.indexes)
            .any(|index| index.name == name)
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
            .map(crate::ddl::normalize)
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
