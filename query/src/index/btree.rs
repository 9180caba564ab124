//! `CREATE INDEX name ON t (col [, ...])`: PostgreSQL's default index, a
//! B-tree per segment that scans with an equality, IN list or range on
//! its first column read through (`StorageScanExec ... index=name`).

use datafusion::sql::sqlparser::ast;

use super::{index_name, IndexBuild, Prepared};
use crate::error::{Error, Result};
use crate::session::Session;

/// Storage options PostgreSQL's btree takes that change nothing here.
const IGNORED_OPTIONS: &[&str] = &["fillfactor", "deduplicate_items"];

impl Session {
    pub(crate) fn create_btree_index(&mut self, create: ast::CreateIndex) -> Result<Prepared> {
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
                ast::Expr::Identifier(ident) if c.operator_class.is_none() => {
                    Ok(crate::ddl::normalize(ident))
                }
                _ => Err(Error::not_supported(format!(
                    "a btree index over {}",
                    c.column.expr
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let target = self.target(&create.table_name, None)?;
        for column in &columns {
            if target.def.schema.index_of(column).is_err() {
                return Err(Error::sql(
                    "42703",
                    format!("column \"{column}\" does not exist"),
                ));
            }
        }
        let name = index_name(&create, &target.full, &columns);
        if self.name_in_use(&create, &target.full, &name)? {
            return Ok(Prepared::Done);
        }
        Ok(Prepared::Build(IndexBuild {
            table: target.full,
            name,
            kind: "btree",
            columns,
            options: match create.unique {
                true => vec![("unique".to_string(), "true".to_string())],
                false => Vec::new(),
            },
        }))
    }
}
