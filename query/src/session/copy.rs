//! COPY as a statement: `COPY ... FROM STDIN` fed chunk by chunk by the
//! wire, `COPY ... TO STDOUT` streamed, and COPY with a server-side file.
//! The formats themselves are `crate::io::copy`'s.

use crate::catalog::INTERNAL_SCHEMA;
use crate::io::copy::{encode, source_query, target_schema, CopyFormat, RecordReader, CHUNK_ROWS};
use crate::io::load::whole_rows;
use crate::session::{QueryResult, Session};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;
use crate::sql::syntax::quote_ident;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast;
use std::sync::Arc;

/// The table a COPY FROM STDIN fills while its data arrives.
pub(crate) struct CopyIn {
    reader: RecordReader,
    /// The columns the data fills, in the order it gives them.
    schema: SchemaRef,
    /// `INSERT INTO table (columns) SELECT * FROM` the parsed rows: the
    /// INSERT path fills defaults and checks keys and NOT NULL.
    insert: ast::Insert,
    /// The COPY is its own transaction (no block was open).
    autocommit: bool,
    rows: u64,
    sink: CopySink,
}

/// Where a COPY FROM STDIN's rows go. A transaction holds its writes in
/// memory until it commits, so a COPY of any size cannot go through one;
/// the bulk-load path writes segments as rows arrive and installs them in
/// one step, which is the same outcome when nothing can tell the two apart:
/// the COPY is its own transaction and no column the data leaves out has a
/// default to fill. A keyed table's load is an insert (a key given twice or
/// already present fails it with 23505, as the INSERT path would). Such a
/// COPY holds its first rows back and moves to the bulk path once they pass
/// [`bulk_threshold`]; a smaller one inserts them at the end.
enum CopySink {
    Insert,
    Held {
        batches: Vec<RecordBatch>,
        bytes: usize,
        target: BulkTarget,
    },
    Bulk {
        load: basalt_storage::BulkLoad,
        target: BulkTarget,
    },
}

struct BulkTarget {
    /// The storage table (its `name` is the storage name).
    def: basalt_storage::TableDef,
    /// Positions of the copied columns in the table.
    listed: Vec<usize>,
    /// The table as the statement names it, for messages.
    name: String,
}

impl BulkTarget {
    /// A load's error as the INSERT path reports it: a duplicate key names
    /// the constraint and the key.
    fn load_error(&self, error: basalt_storage::Error) -> Error {
        match error {
            basalt_storage::Error::DuplicateKey { row, .. } if row.num_rows() == 1 => {
                crate::catalog::unique_violation(&self.def, &row, 0)
            }
            other => Error::from(other),
        }
    }
}

/// Parsed rows past which an eligible COPY moves to the bulk path: well
/// inside a transaction's bound, so the rows held back never hit it.
fn bulk_threshold(options: &basalt_storage::Options) -> usize {
    (64 << 20).min(options.max_transaction_bytes / 4)
}

/// The session-local table each chunk of COPY rows is read from.
const COPY_SOURCE: &str = "__basalt_copy";

impl Session {
    pub(crate) async fn copy_from_client(
        &mut self,
        table_name: &ast::ObjectName,
        columns: &[ast::Ident],
        format: CopyFormat,
    ) -> Result<QueryResult> {
        let target = self.target(table_name, None)?;
        let (def, table) = (target.def, target.alias);
        let names: Vec<String> = if columns.is_empty() {
            def.schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        } else {
            columns.iter().map(normalize).collect()
        };
        let schema = target_schema(&table, &def.schema, &names)?;
        let columns = schema.fields().len();
        let insert = self.copy_insert(table_name, &names)?;
        // A COPY from the client outlives the query message that started it:
        // it leaves a multi-statement query's implicit transaction
        // (committing what came before it) to be its own.
        self.end_implicit(true).await?;
        let autocommit = !self.in_transaction();
        if autocommit {
            *self.shared.txn.lock() = Some(self.shared.db.begin());
        }
        let needs_default = def.schema.fields().iter().any(|f| {
            !names.contains(f.name()) && f.metadata().contains_key(crate::catalog::DEFAULT_KEY)
        });
        // A bulk load cannot keep a unique index's entries.
        let unique_index = def.indexes.iter().any(basalt_storage::is_unique_index);
        let sink = if autocommit && !needs_default && !unique_index {
            let listed = names
                .iter()
                .filter_map(|n| def.schema.index_of(n).ok())
                .collect();
            CopySink::Held {
                batches: Vec::new(),
                bytes: 0,
                target: BulkTarget {
                    def: def.clone(),
                    listed,
                    name: table.clone(),
                },
            }
        } else {
            CopySink::Insert
        };
        self.copy_in = Some(CopyIn {
            reader: RecordReader::new(format, &table, names),
            schema,
            insert,
            autocommit,
            rows: 0,
            sink,
        });
        Ok(QueryResult::CopyIn { columns })
    }

    pub(crate) async fn copy_to_client(
        &mut self,
        source: ast::CopySource,
        format: CopyFormat,
    ) -> Result<QueryResult> {
        let statement = self
            .parse(&source_query(source))?
            .pop()
            .ok_or_else(|| Error::sql("42601", "COPY needs a query"))?;
        let QueryResult::Rows { schema, stream, .. } = self.run_datafusion(statement).await? else {
            return Err(Error::sql("XX000", "COPY's query returned no rows"));
        };
        Ok(QueryResult::CopyOut {
            columns: schema.fields().len(),
            data: encode(&schema, stream, format),
        })
    }

    /// Takes the next chunk of a COPY FROM STDIN's data, in any size.
    pub async fn copy_data(&mut self, data: &[u8]) -> Result<()> {
        let mut copy = self.copy_in.take().ok_or_else(no_copy_in_progress)?;
        let outcome = match copy.reader.feed(data) {
            Ok(()) if copy.reader.rows.len() >= CHUNK_ROWS => self.write_copied(&mut copy).await,
            other => other,
        };
        match outcome {
            Ok(()) => {
                self.copy_in = Some(copy);
                Ok(())
            }
            Err(e) => Err(self.fail_copy(e)),
        }
    }

    /// The client sent all its data: writes the rest and, for a COPY
    /// outside a transaction block, commits. Returns the rows copied.
    pub async fn copy_done(&mut self) -> Result<u64> {
        let mut copy = self.copy_in.take().ok_or_else(no_copy_in_progress)?;
        let mut outcome = copy.reader.finish();
        if outcome.is_ok() {
            outcome = self.write_copied(&mut copy).await;
        }
        if outcome.is_ok() {
            outcome = self.finish_sink(&mut copy).await;
        }
        if let Err(e) = outcome {
            return Err(self.fail_copy(e));
        }
        if copy.autocommit {
            let txn = self.shared.txn.lock().take();
            if let Some(txn) = txn {
                crate::session::commit_off_worker(&self.interrupt, txn).await?;
            }
        }
        Ok(copy.rows)
    }

    /// The client gave up the COPY: nothing it sent is kept.
    pub fn copy_fail(&mut self, message: &str) -> Error {
        self.copy_in = None;
        self.fail_copy(Error::sql(
            "57014",
            format!("COPY from stdin failed: {message}"),
        ))
    }

    fn fail_copy(&mut self, error: Error) -> Error {
        self.abort_statement();
        error
    }

    async fn write_copied(&mut self, copy: &mut CopyIn) -> Result<()> {
        if copy.reader.rows.len() == 0 {
            return Ok(());
        }
        let origin = copy.reader.origin.clone();
        let (batch, _) = copy.reader.rows.take_lines(&origin, &copy.schema, None)?;
        let rows = batch.num_rows() as u64;
        match &mut copy.sink {
            CopySink::Insert => {
                self.insert_copied(&copy.insert, batch).await?;
            }
            CopySink::Held { batches, bytes, .. } => {
                *bytes += batch.get_array_memory_size();
                batches.push(batch);
                if *bytes >= bulk_threshold(self.shared.db.options()) {
                    self.start_bulk(copy).await?;
                }
            }
            CopySink::Bulk { .. } => self.write_bulk(copy, vec![batch]).await?,
        }
        copy.rows += rows;
        Ok(())
    }

    /// Moves a COPY's held rows, and the rows after them, to a bulk load.
    async fn start_bulk(&mut self, copy: &mut CopyIn) -> Result<()> {
        let CopySink::Held {
            batches, target, ..
        } = std::mem::replace(&mut copy.sink, CopySink::Insert)
        else {
            return Ok(());
        };
        // A keyless table's keys are fresh row ids: nothing to check.
        let load = self.shared.db.bulk_insert(&target.def.name)?;
        copy.sink = CopySink::Bulk { load, target };
        self.write_bulk(copy, batches).await
    }

    /// Writes rows to the COPY's bulk load, off the async workers: a bulk
    /// load waits for its segment writers.
    async fn write_bulk(&mut self, copy: &mut CopyIn, batches: Vec<RecordBatch>) -> Result<()> {
        let CopySink::Bulk { load, target } = std::mem::replace(&mut copy.sink, CopySink::Insert)
        else {
            return Ok(());
        };
        let (load, target, written) = tokio::task::spawn_blocking(move || {
            let mut load = load;
            let written = batches.iter().try_for_each(|batch| {
                let rows = whole_rows(&target.def.schema, &target.listed, batch, &target.name)?;
                load.write(&rows).map_err(|e| target.load_error(e))
            });
            (load, target, written)
        })
        .await
        .map_err(|e| Error::sql("XX000", format!("the COPY's load thread failed: {e}")))?;
        copy.sink = CopySink::Bulk { load, target };
        written
    }

    /// Ends where the rows went: inserts rows held back by a COPY that
    /// stayed small, installs a bulk load.
    async fn finish_sink(&mut self, copy: &mut CopyIn) -> Result<()> {
        match std::mem::replace(&mut copy.sink, CopySink::Insert) {
            CopySink::Insert => Ok(()),
            CopySink::Held { batches, .. } => {
                for batch in batches {
                    self.insert_copied(&copy.insert, batch).await?;
                }
                Ok(())
            }
            CopySink::Bulk { load, target } => {
                // Installing is the commit: a cancel from here on waits.
                self.interrupt.enter_commit();
                tokio::task::spawn_blocking(move || load.finish())
                    .await
                    .map_err(|e| {
                        Error::sql("XX000", format!("the COPY's load thread failed: {e}"))
                    })?
                    .map(|_| ())
                    .map_err(|e| target.load_error(e))
            }
        }
    }

    /// Runs a COPY's `INSERT ... SELECT * FROM` over one batch of its rows.
    async fn insert_copied(&mut self, insert: &ast::Insert, batch: RecordBatch) -> Result<u64> {
        let count = batch.num_rows() as u64;
        let source =
            MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(Error::from_datafusion)?;
        self.shared
            .temp_tables
            .lock()
            .insert(COPY_SOURCE.to_string(), Arc::new(source));
        let written = self.insert(insert.clone()).await;
        self.shared.temp_tables.lock().remove(COPY_SOURCE);
        written?;
        Ok(count)
    }

    /// Inserts rows of the named columns into a table as COPY does:
    /// defaults filled, keys and NOT NULL checked.
    pub(crate) async fn insert_batch(
        &mut self,
        table: &ast::ObjectName,
        columns: &[String],
        batch: RecordBatch,
    ) -> Result<u64> {
        let insert = self.copy_insert(table, columns)?;
        self.insert_copied(&insert, batch).await
    }

    fn copy_insert(&self, table_name: &ast::ObjectName, names: &[String]) -> Result<ast::Insert> {
        let column_list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
        let sql = format!(
            "INSERT INTO {table_name} ({}) SELECT * FROM {INTERNAL_SCHEMA}.{COPY_SOURCE}",
            column_list.join(", ")
        );
        let Some(Statement::Statement(insert)) = self.parse(&sql)?.pop() else {
            return Err(Error::sql("XX000", "COPY's INSERT did not parse"));
        };
        let ast::Statement::Insert(insert) = *insert else {
            return Err(Error::sql("XX000", "COPY's INSERT did not parse"));
        };
        Ok(insert)
    }
}

fn no_copy_in_progress() -> Error {
    Error::sql("08P01", "no COPY FROM STDIN is in progress")
}
