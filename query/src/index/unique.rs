//! UNIQUE constraints: `col type UNIQUE`, `[CONSTRAINT name] UNIQUE (cols)`
//! in CREATE TABLE, and `ALTER TABLE ... ADD [CONSTRAINT name] UNIQUE (cols)`
//! / `DROP CONSTRAINT name`. Each is a unique btree index named as
//! PostgreSQL names a constraint's index (`table_col_key`), so the catalog
//! and the errors read as PostgreSQL's.

use datafusion::sql::sqlparser::ast::{self, ColumnOption, TableConstraint};

use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;

/// A UNIQUE constraint to create as an index.
pub(crate) struct UniqueConstraint {
    pub name: String,
    pub columns: Vec<String>,
}

/// The btree options of a unique index.
pub(crate) fn unique_options() -> Vec<(String, String)> {
    vec![("unique".to_string(), "true".to_string())]
}

/// Takes the UNIQUE constraints out of a CREATE TABLE (the planner would
/// refuse them), named as PostgreSQL names them.
pub(crate) fn take_from_create(
    create: &mut ast::CreateTable,
    table: &str,
) -> Result<Vec<UniqueConstraint>> {
    let mut found = Vec::new();
    for column in &mut create.columns {
        let name = normalize(&column.name);
        let mut kept = Vec::new();
        for option in column.options.drain(..) {
            match option.option {
                ColumnOption::Unique(unique) => {
                    check_supported(&unique)?;
                    let given = option.name.as_ref().or(unique.name.as_ref());
                    found.push(constraint(given, table, vec![name.clone()]));
                }
                _ => kept.push(option),
            }
        }
        column.options = kept;
    }
    let mut kept = Vec::new();
    for constraint_def in create.constraints.drain(..) {
        match constraint_def {
            TableConstraint::Unique(unique) => found.push(from_table_constraint(&unique, table)?),
            other => kept.push(other),
        }
    }
    create.constraints = kept;
    Ok(found)
}

/// `UNIQUE (cols)` as a table constraint (CREATE TABLE or ALTER TABLE).
pub(crate) fn from_table_constraint(
    unique: &ast::UniqueConstraint,
    table: &str,
) -> Result<UniqueConstraint> {
    check_supported(unique)?;
    let columns = unique
        .columns
        .iter()
        .map(|c| match &c.column.expr {
            ast::Expr::Identifier(ident) => Ok(normalize(ident)),
            other => Err(Error::not_supported(format!(
                "a UNIQUE constraint over {other}"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(constraint(unique.name.as_ref(), table, columns))
}

fn check_supported(unique: &ast::UniqueConstraint) -> Result<()> {
    if matches!(unique.nulls_distinct, ast::NullsDistinctOption::NotDistinct) {
        return Err(Error::not_supported("UNIQUE NULLS NOT DISTINCT"));
    }
    if unique
        .characteristics
        .as_ref()
        .is_some_and(|c| c.deferrable == Some(true))
    {
        return Err(Error::not_supported("a DEFERRABLE UNIQUE constraint"));
    }
    Ok(())
}

fn constraint(given: Option<&ast::Ident>, table: &str, columns: Vec<String>) -> UniqueConstraint {
    let name = match given {
        Some(name) => normalize(name),
        None => format!("{table}_{}_key", columns.join("_")),
    };
    UniqueConstraint { name, columns }
}
