//! CREATE INDEX by access method. Each method is one module listed in
//! [`METHODS`] (hnsw's lives with its search, in `crate::ann`); the
//! storage side of every kind is `basalt_storage`'s index framework.

use datafusion::sql::sqlparser::ast;

use crate::catalog::split_storage_name;
use crate::error::{Error, Result};
use crate::session::{QueryResult, Session};

mod btree;

type CreateIndex = fn(&mut Session, ast::CreateIndex) -> Result<QueryResult>;

/// Every access method `CREATE INDEX ... USING` accepts; the first is the
/// default, as btree is PostgreSQL's.
const METHODS: &[(&str, CreateIndex)] = &[
    ("btree", Session::create_btree_index),
    ("hnsw", Session::create_hnsw_index),
];

impl Session {
    pub(crate) fn create_index(&mut self, create: ast::CreateIndex) -> Result<QueryResult> {
        let method = create.using.as_ref().map_or_else(
            || METHODS[0].0.to_string(),
            |u| u.to_string().to_ascii_lowercase(),
        );
        match METHODS.iter().find(|(name, _)| *name == method) {
            Some((_, create_with)) => create_with(self, create),
            None => Err(Error::sql(
                "42704",
                format!("access method \"{method}\" does not exist"),
            )),
        }
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
