//! CREATE INDEX and the UNIQUE constraints' indexes: the method named by
//! `USING` checks the statement (`crate::index`), the session names,
//! builds and publishes the index.

use datafusion::sql::sqlparser::ast;

use crate::catalog::split_storage_name;
use crate::index::{self, IndexBuild, IndexTarget, UniqueConstraint};
use crate::session::{QueryResult, Session};
use crate::sql::error::{Error, Result};

impl Session {
    /// CREATE INDEX by the method `USING` names (btree by default).
    pub(crate) async fn create_index(&mut self, create: ast::CreateIndex) -> Result<QueryResult> {
        let method = index::method(&create)?;
        let target = self.target(&create.table_name, None)?;
        let target = IndexTarget {
            full: target.full,
            def: target.def,
        };
        let build = (method.plan)(&create, &target)?;
        if !self.name_in_use(&create, &build.table, &build.name)? {
            self.build_index(build).await?;
        }
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
    fn name_in_use(&self, create: &ast::CreateIndex, table: &str, name: &str) -> Result<bool> {
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

    fn index_name_taken(&self, table: &str, name: &str) -> bool {
        index::index_name_taken(&self.shared.db.tables(), table, name)
    }

    /// Creates `constraint`'s unique index on table `full` (a storage name).
    pub(crate) async fn add_unique_constraint(
        &mut self,
        full: &str,
        constraint: UniqueConstraint,
    ) -> Result<()> {
        if self.index_name_taken(full, &constraint.name) {
            return Err(Error::sql(
                "42P07",
                format!("relation \"{}\" already exists", constraint.name),
            ));
        }
        let def = self.shared.db.table(full)?;
        for column in &constraint.columns {
            if def.schema.index_of(column).is_err() {
                return Err(Error::sql(
                    "42703",
                    format!("column \"{column}\" named in key does not exist"),
                ));
            }
        }
        self.build_index(IndexBuild {
            table: full.to_string(),
            name: constraint.name,
            kind: "btree",
            columns: constraint.columns,
            options: index::unique_options(),
        })
        .await
    }

    /// `ALTER TABLE ... DROP CONSTRAINT name`: a unique constraint's index.
    pub(crate) fn drop_unique_constraint(
        &mut self,
        full: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<()> {
        let def = self.shared.db.table(full)?;
        let is_constraint = def
            .indexes
            .iter()
            .any(|i| i.name == name && basalt_storage::is_unique_index(i));
        if !is_constraint {
            if if_exists {
                return Ok(());
            }
            return Err(Error::sql(
                "42704",
                format!(
                    "constraint \"{name}\" of relation \"{}\" does not exist",
                    split_storage_name(full).1
                ),
            ));
        }
        self.before_ddl()?;
        self.shared.db.drop_index(full, name)?;
        self.after_ddl();
        Ok(())
    }
}
