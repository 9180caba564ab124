//! Loading files as statements: [`Database::load`], [`Session::load`] and
//! `COPY t FROM '/path'`. The parsing and planning are `crate::io::load`'s.

use crate::io::load::{
    copy_file_options, create_table_sql, export_batch, export_schema, parse_table_name,
    staging_name, text_dialect, FileFormat, LoadOptions, LoadPlan, LoadReport,
};
use crate::session::{Database, QueryResult, Session};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;
use basalt_formats::files::{self, InputFile};
use datafusion::sql::sqlparser::ast::{self, ObjectName};
use futures::{StreamExt, TryStreamExt};
use std::io::Write;
use std::sync::Arc;

impl Database {
    /// Loads files into `table` (see [`Session::load`]).
    pub async fn load(
        &self,
        table: &str,
        sources: &[String],
        options: LoadOptions,
    ) -> Result<LoadReport> {
        self.session().load(table, sources, options).await
    }
}

impl Session {
    /// Loads files, directories and glob patterns into `table`, atomically.
    pub async fn load(
        &mut self,
        table: &str,
        sources: &[String],
        options: LoadOptions,
    ) -> Result<LoadReport> {
        if self.in_transaction() {
            return Err(Error::sql(
                "25001",
                "a bulk load cannot run inside a transaction block",
            ));
        }
        let inputs = self.file_access.open_inputs(sources)?;
        let name = parse_table_name(table)?;
        if !options.create || self.target(&name, None).is_ok() {
            return self.load_paths(&name, &inputs, &options).await;
        }
        self.create_and_load(&name, &inputs, &options).await
    }

    /// Creates the table and loads it as one step: the rows go into a
    /// staging table that a single rename puts in place, so that a load
    /// killed midway leaves no table behind (the staging table is dropped
    /// when the database next opens), never an empty one under the name.
    async fn create_and_load(
        &mut self,
        name: &ObjectName,
        inputs: &[InputFile],
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        let (staging, final_ident) = staging_name(name)?;
        let sql = create_table_sql(&staging, &inputs[0], options)?;
        self.execute(&sql).await?;
        let mut outcome = self.load_paths(&staging, inputs, options).await;
        if outcome.is_ok() {
            let rename = format!("ALTER TABLE {staging} RENAME TO {final_ident}");
            if let Err(e) = self.execute(&rename).await {
                outcome = Err(e);
            }
        }
        match outcome {
            Ok(mut report) => {
                report.created = true;
                report.table = self.target(name, None)?.alias;
                Ok(report)
            }
            Err(e) => {
                if let Err(dropping) = self
                    .execute(&format!("DROP TABLE IF EXISTS {staging}"))
                    .await
                {
                    tracing::warn!(table = %staging, error = %dropping, "could not drop a failed load's staging table");
                }
                Err(e)
            }
        }
    }

    /// Loads `inputs` into an existing table: the bulk path when it can be
    /// used, INSERT otherwise.
    pub(crate) async fn load_paths(
        &mut self,
        name: &ObjectName,
        inputs: &[InputFile],
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        let target = self.target(name, None)?;
        let plan = LoadPlan::new(
            target.def.schema.clone(),
            target.alias.clone(),
            inputs,
            options,
        )?;
        if self.in_transaction() || plan.needs_defaults() {
            return self.load_by_insert(name, plan).await;
        }
        let db = self.shared.db.clone();
        let table = target.full.clone();
        tokio::task::spawn_blocking(move || plan.run_bulk(&db, &table))
            .await
            .map_err(|e| Error::sql("XX000", format!("the load's thread failed: {e}")))?
    }

    /// Reads every file and inserts the rows through the INSERT path, in
    /// the session's transaction or a transaction of its own.
    async fn load_by_insert(&mut self, name: &ObjectName, plan: LoadPlan) -> Result<LoadReport> {
        let plan = Arc::new(plan);
        let reading = plan.clone();
        let (batches, rejects) = tokio::task::spawn_blocking(move || reading.read_all())
            .await
            .map_err(|e| Error::sql("XX000", format!("the load's thread failed: {e}")))??;
        let names: Vec<String> = plan
            .listed
            .iter()
            .map(|&i| plan.table_schema.field(i).name().clone())
            .collect();
        let autocommit = !self.in_transaction();
        if autocommit {
            *self.shared.txn.lock() = Some(self.shared.db.begin());
        }
        let mut rows = 0;
        for batch in batches {
            match self.insert_batch(name, &names, batch).await {
                Ok(n) => rows += n,
                Err(e) => {
                    if autocommit {
                        self.shared.txn.lock().take();
                    }
                    return Err(e);
                }
            }
        }
        if autocommit {
            let txn = self.shared.txn.lock().take();
            if let Some(txn) = txn {
                crate::session::commit_off_worker(&self.interrupt, txn).await?;
            }
        }
        plan.write_rejects(&rejects)?;
        Ok(LoadReport {
            table: plan.table_name.clone(),
            created: false,
            files: plan.items_files(),
            rows,
            skipped: rejects.len() as u64,
            bytes: plan.counter.get(),
        })
    }
}

impl Session {
    /// `COPY table [(columns)] FROM 'path' (options)`: the bulk path outside
    /// a transaction block, INSERT inside one.
    pub(crate) async fn copy_from_file(
        &mut self,
        source: &ast::CopySource,
        filename: &str,
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
    ) -> Result<QueryResult> {
        let ast::CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(Error::sql("42601", "COPY FROM needs a table"));
        };
        let mut load = copy_file_options(filename, options, legacy)?;
        if load.format.is_some_and(FileFormat::is_delimited_text) {
            text_dialect(&load, load.format.unwrap_or(FileFormat::Text), false)?;
        }
        load.columns = columns.iter().map(normalize).collect();
        let inputs = self.file_access.open_inputs(&[filename.to_string()])?;
        let report = self.load_paths(table_name, &inputs, &load).await?;
        Ok(QueryResult::Command {
            tag: format!("COPY {}", report.rows),
            rows: report.rows,
        })
    }

    /// `COPY table|query TO 'path' (options)`, in CSV, TSV, text, Parquet,
    /// JSON lines or Arrow IPC.
    pub(crate) async fn copy_to_file(
        &mut self,
        source: ast::CopySource,
        filename: &str,
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
    ) -> Result<QueryResult> {
        let load = copy_file_options(filename, options, legacy)?;
        let format = load.format.unwrap_or(FileFormat::Text);
        let dialect = if format.is_delimited_text() {
            Some(text_dialect(&load, format, load.header.unwrap_or(false))?)
        } else {
            None
        };
        let (file, path) = self.file_access.create_output(filename)?;
        let statement = self
            .parse(&crate::io::copy::source_query(source))?
            .pop()
            .ok_or_else(|| Error::sql("42601", "COPY needs a query"))?;
        let QueryResult::Rows { schema, stream, .. } = self.run_datafusion(statement).await? else {
            return Err(Error::sql("XX000", "COPY's query returned no rows"));
        };
        let write_error = |e: &dyn std::fmt::Display| {
            Error::sql(
                "58030",
                format!("could not write file \"{}\": {e}", path.display()),
            )
        };
        let rows = match dialect {
            Some(dialect) => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                let mut encoded = crate::io::copy::encode(&schema, stream, dialect);
                let mut rows = 0u64;
                while let Some(row) = encoded.next().await {
                    out.write_all(&row?).map_err(|e| write_error(&e))?;
                    rows += 1;
                }
                out.flush().map_err(|e| write_error(&e))?;
                rows
            }
            None => {
                let out_schema = export_schema(&schema, format);
                let mut writer = files::batch_writer(file, format, out_schema.clone())
                    .map_err(|e| write_error(&e))?;
                let mut stream = stream;
                let mut rows = 0u64;
                while let Some(batch) = stream.try_next().await.map_err(Error::from_datafusion)? {
                    rows += batch.num_rows() as u64;
                    let batch = export_batch(&batch, &out_schema)?;
                    writer.write(&batch).map_err(|e| write_error(&e))?;
                }
                writer.finish().map_err(|e| write_error(&e))?;
                rows
            }
        };
        Ok(QueryResult::Command {
            tag: format!("COPY {rows}"),
            rows,
        })
    }
}
