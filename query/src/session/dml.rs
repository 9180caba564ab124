//! INSERT, UPDATE, DELETE, TRUNCATE and RETURNING. DataFusion plans and
//! evaluates every expression; the session turns the rows it gets into
//! storage writes in the session's transaction: rows are found through the
//! table's keyed view (each row with its storage key), so an UPDATE or
//! DELETE knows exactly which stored row it replaces.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BinaryArray, BooleanArray, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use basalt_storage::{ScanOptions, TableDef, Transaction};
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    self, Assignment, AssignmentTarget, FromTable, OnConflictAction, OnInsert, SelectItem,
    TableFactor, TableObject, TableWithJoins, UpdateTableFromKind,
};
use futures::StreamExt;

use crate::catalog::unique_violation;
use crate::catalog::{storage_name, INTERNAL_SCHEMA, ROW_KEY};
use crate::session::{QueryResult, Session};
use crate::sql::error::{Error, Result};
use crate::sql::syntax::normalize;
use crate::sql::syntax::quote_ident;

const EXCLUDED: &str = "__basalt_excluded";
const RETURNING: &str = "__basalt_returning";

/// The keyed view of a storage table, as SQL.
fn keyed_table(full: &str) -> String {
    format!("{INTERNAL_SCHEMA}.{}", quote_ident(full))
}

/// The target of a DML statement.
pub(crate) struct Target {
    pub(crate) full: String,
    pub(crate) def: TableDef,
    /// How the statement's expressions name the table.
    pub(crate) alias: String,
}

impl Session {
    pub(crate) fn target(
        &self,
        name: &ast::ObjectName,
        alias: Option<&ast::Ident>,
    ) -> Result<Target> {
        let (schema, table) = self.resolve(name)?;
        let full = storage_name(&schema, &table);
        let def = self.shared.db.table(&full).map_err(|e| match e {
            basalt_storage::Error::TableNotFound(_) => {
                Error::sql("42P01", format!("relation \"{table}\" does not exist"))
            }
            other => other.into(),
        })?;
        Ok(Target {
            full,
            def,
            alias: alias.map(normalize).unwrap_or(table),
        })
    }

    fn with_txn<T>(
        &self,
        write: impl FnOnce(&mut Transaction) -> basalt_storage::Result<T>,
    ) -> Result<T> {
        let mut txn = self.shared.txn.lock();
        let txn = txn
            .as_mut()
            .ok_or_else(|| Error::sql("XX000", "a write outside any transaction"))?;
        Ok(write(txn)?)
    }

    pub(crate) async fn insert(&mut self, mut insert: ast::Insert) -> Result<QueryResult> {
        let on = insert.on.take();
        let returning = insert.returning.take();
        let TableObject::TableName(name) = &insert.table else {
            return Err(Error::not_supported("INSERT into a table function"));
        };
        let alias = insert.table_alias.take().map(|a| a.alias);
        let target = self.target(name, alias.as_ref())?;
        rewrite_values(&mut insert, &target.def.schema)?;
        let rows = match self.constant_rows(&insert, &target)? {
            Some(rows) => vec![rows],
            None => self.planned_rows(insert, &target).await?,
        };
        let (action, arbiter) = match on {
            None => (None, Arbiter::PrimaryKey),
            Some(OnInsert::OnConflict(on_conflict)) => {
                let arbiter = check_conflict_target(&target, on_conflict.conflict_target.as_ref())?;
                (Some(on_conflict.action), arbiter)
            }
            Some(OnInsert::DuplicateKeyUpdate(_)) => {
                return Err(Error::not_supported("ON DUPLICATE KEY UPDATE"))
            }
            Some(other) => return Err(Error::not_supported(format!("{other}"))),
        };
        let written = match arbiter {
            Arbiter::PrimaryKey => self.write_inserted(&target, rows, action).await?,
            Arbiter::Unique(index) => {
                let action =
                    action.ok_or_else(|| Error::sql("XX000", "an arbiter without ON CONFLICT"))?;
                self.write_inserted_on_unique(&target, rows, action, &index)
                    .await?
            }
        };
        self.finish(&target, returning, written, "INSERT").await
    }

    async fn planned_rows(
        &mut self,
        insert: ast::Insert,
        target: &Target,
    ) -> Result<Vec<RecordBatch>> {
        let statement = Statement::Statement(Box::new(ast::Statement::Insert(insert)));
        let plan = self.plan(statement).await?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(Error::sql("XX000", "INSERT did not plan as DML"));
        };
        self.collect_plan(dml.input.as_ref().clone(), target).await
    }

    /// The rows of the INSERT's source, in the table's column types, with
    /// NOT NULL checked by column name.
    async fn collect_plan(
        &mut self,
        input: LogicalPlan,
        target: &Target,
    ) -> Result<Vec<RecordBatch>> {
        let mut stream = self.stream_plan(input).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(Error::from_datafusion)?;
            batches.push(conform(
                &target.def.schema,
                &target.full,
                batch.columns().to_vec(),
            )?);
        }
        Ok(batches)
    }

    /// Writes inserted rows, resolving key conflicts as the statement says.
    /// Returns the rows as written (inserted and updated).
    pub(crate) async fn write_inserted(
        &mut self,
        target: &Target,
        batches: Vec<RecordBatch>,
        action: Option<OnConflictAction>,
    ) -> Result<Vec<RecordBatch>> {
        if target.def.key_columns.is_empty() {
            if action.is_some() {
                return Err(Error::sql(
                    "42P10",
                    "there is no unique or exclusion constraint matching the ON CONFLICT specification",
                ));
            }
            for batch in &batches {
                self.with_txn(|txn| txn.put(&target.full, batch))?;
            }
            return Ok(batches);
        }
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut written = Vec::new();
        let mut conflicts = Vec::new();
        for batch in batches {
            let keys = row_keys(&target.def, &batch)?;
            let mut insert_mask = Vec::with_capacity(keys.len());
            let mut conflict_mask = Vec::with_capacity(keys.len());
            for (row, key) in keys.iter().enumerate() {
                let repeated = !seen.insert(key.clone());
                let exists = repeated
                    || self
                        .shared
                        .with_reader(|r| r.get(&target.full, key))?
                        .is_some();
                match (&action, exists) {
                    (_, false) => {}
                    (None, true) => return Err(unique_violation(&target.def, &batch, row)),
                    (Some(OnConflictAction::DoUpdate(_)), true) if repeated => {
                        return Err(Error::sql(
                            "21000",
                            "ON CONFLICT DO UPDATE command cannot affect row a second time",
                        )
                        .with_detail(
                            "Ensure that no rows proposed for insertion within the same command have duplicate constrained values.",
                        ))
                    }
                    (Some(_), true) => {}
                }
                insert_mask.push(!exists);
                conflict_mask.push(exists);
            }
            let inserted = filter(&batch, insert_mask)?;
            if inserted.num_rows() > 0 {
                self.with_txn(|txn| txn.put(&target.full, &inserted))?;
                written.push(inserted);
            }
            if let Some(OnConflictAction::DoUpdate(_)) = &action {
                let keys: Vec<&[u8]> = keys
                    .iter()
                    .zip(&conflict_mask)
                    .filter(|(_, c)| **c)
                    .map(|(k, _)| k.as_slice())
                    .collect();
                let conflicting = filter(&batch, conflict_mask)?;
                if conflicting.num_rows() > 0 {
                    conflicts.push(with_row_keys(&conflicting, keys)?);
                }
            }
        }
        if let (Some(OnConflictAction::DoUpdate(update)), false) = (action, conflicts.is_empty()) {
            written.extend(self.update_conflicts(target, update, conflicts).await?);
        }
        Ok(written)
    }

    /// `INSERT ... ON CONFLICT` naming a unique index: a proposed row whose
    /// values a stored row holds (or an earlier proposed row gave) conflicts;
    /// its primary key must still be new.
    async fn write_inserted_on_unique(
        &mut self,
        target: &Target,
        batches: Vec<RecordBatch>,
        action: OnConflictAction,
        index: &basalt_storage::IndexDef,
    ) -> Result<Vec<RecordBatch>> {
        if target.def.key_columns.is_empty() {
            return Err(Error::not_supported(
                "ON CONFLICT on a unique index of a table without a primary key",
            ));
        }
        let updating = matches!(action, OnConflictAction::DoUpdate(_));
        let index_columns: Vec<usize> = index.columns.iter().map(|&c| c as usize).collect();
        let mut seen_values: HashSet<Vec<u8>> = HashSet::new();
        let mut seen_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut written = Vec::new();
        let mut conflicts = Vec::new();
        for batch in batches {
            let keys = row_keys(&target.def, &batch)?;
            let holders =
                self.with_txn(|txn| txn.unique_holders(&target.full, &index.name, &batch))?;
            let values: Vec<ArrayRef> = index_columns
                .iter()
                .map(|&c| batch.column(c).clone())
                .collect();
            let mut insert_mask = Vec::with_capacity(keys.len());
            let mut conflict_keys: Vec<Vec<u8>> = Vec::new();
            let mut conflict_mask = Vec::with_capacity(keys.len());
            for (row, (key, holder)) in keys.iter().zip(holders).enumerate() {
                let mut value = Vec::new();
                let has_value = values.iter().all(|c| !c.is_null(row))
                    && basalt_storage::encode_key(&values, row, &mut value).is_ok();
                let repeated = has_value && !seen_values.insert(value);
                if repeated && updating {
                    return Err(Error::sql(
                        "21000",
                        "ON CONFLICT DO UPDATE command cannot affect row a second time",
                    )
                    .with_detail(
                        "Ensure that no rows proposed for insertion within the same command have duplicate constrained values.",
                    ));
                }
                let conflict = repeated || holder.is_some();
                if !conflict {
                    // Not the arbiter: the primary key is checked as on a plain INSERT.
                    let key_taken = !seen_keys.insert(key.clone())
                        || self
                            .shared
                            .with_reader(|r| r.get(&target.full, key))?
                            .is_some();
                    if key_taken {
                        return Err(unique_violation(&target.def, &batch, row));
                    }
                }
                insert_mask.push(!conflict);
                conflict_mask.push(conflict);
                if let Some(holder) = holder.filter(|_| updating) {
                    conflict_keys.push(holder);
                }
            }
            let inserted = filter(&batch, insert_mask)?;
            if inserted.num_rows() > 0 {
                self.with_txn(|txn| txn.put(&target.full, &inserted))?;
                written.push(inserted);
            }
            if updating {
                let conflicting = filter(&batch, conflict_mask)?;
                if conflicting.num_rows() > 0 {
                    let keys = conflict_keys.iter().map(Vec::as_slice).collect();
                    conflicts.push(with_row_keys(&conflicting, keys)?);
                }
            }
        }
        if let (OnConflictAction::DoUpdate(update), false) = (action, conflicts.is_empty()) {
            written.extend(self.update_conflicts(target, update, conflicts).await?);
        }
        Ok(written)
    }

    /// ON CONFLICT DO UPDATE: evaluates the assignments with the stored row
    /// as the table and the proposed row as `excluded`.
    async fn update_conflicts(
        &mut self,
        target: &Target,
        update: ast::DoUpdate,
        excluded: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let Some(schema) = excluded.first().map(|b| b.schema()) else {
            return Ok(Vec::new());
        };
        let table = MemTable::try_new(schema, vec![excluded]).map_err(Error::from_datafusion)?;
        self.shared
            .temp_tables
            .lock()
            .insert(EXCLUDED.to_string(), Arc::new(table));
        let alias = quote_ident(&target.alias);
        let from = format!(
            "{} AS {alias} JOIN {INTERNAL_SCHEMA}.{EXCLUDED} AS excluded ON {alias}.{ROW_KEY} = excluded.{ROW_KEY}",
            keyed_table(&target.full)
        );
        let result = self
            .assign(
                target,
                &update.assignments,
                &from,
                update.selection.as_ref(),
            )
            .await;
        self.shared.temp_tables.lock().remove(EXCLUDED);
        result
    }

    pub(crate) async fn update(&mut self, update: ast::Update) -> Result<QueryResult> {
        if update.limit.is_some() || !update.order_by.is_empty() {
            return Err(Error::not_supported("UPDATE with ORDER BY or LIMIT"));
        }
        let (name, alias) = table_of(&update.table)?;
        let target = self.target(&name, alias.as_ref())?;
        if let Some(written) = self.point_update(&target, &update)? {
            return self
                .finish(&target, update.returning, written, "UPDATE")
                .await;
        }
        let mut from = format!(
            "{} AS {}",
            keyed_table(&target.full),
            quote_ident(&target.alias)
        );
        if let Some(
            UpdateTableFromKind::BeforeSet(tables) | UpdateTableFromKind::AfterSet(tables),
        ) = &update.from
        {
            for table in tables {
                from.push_str(&format!(", {table}"));
            }
        }
        let written = self
            .assign(
                &target,
                &update.assignments,
                &from,
                update.selection.as_ref(),
            )
            .await?;
        self.finish(&target, update.returning, written, "UPDATE")
            .await
    }

    /// Computes `SET` assignments for the rows `from ... WHERE selection`
    /// finds, and writes the new rows in place of the old ones.
    async fn assign(
        &mut self,
        target: &Target,
        assignments: &[Assignment],
        from: &str,
        selection: Option<&ast::Expr>,
    ) -> Result<Vec<RecordBatch>> {
        let schema = &target.def.schema;
        let mut columns = Vec::new();
        let mut values = Vec::new();
        for assignment in assignments {
            let AssignmentTarget::ColumnName(column) = &assignment.target else {
                return Err(Error::not_supported("assigning a tuple of columns"));
            };
            let Some(ident) = column.0.last().and_then(|p| p.as_ident()) else {
                return Err(Error::sql("42601", format!("invalid column {column}")));
            };
            let name = normalize(ident);
            let index = schema.index_of(&name).map_err(|_| {
                Error::sql(
                    "42703",
                    format!(
                        "column \"{name}\" of relation \"{}\" does not exist",
                        target.alias
                    ),
                )
            })?;
            if columns.contains(&index) {
                return Err(Error::sql(
                    "42601",
                    format!("multiple assignments to same column \"{name}\""),
                ));
            }
            columns.push(index);
            let mut value = assignment.value.clone();
            if is_default_keyword(&value) {
                value = default_of(schema.field(index))?;
            }
            if schema.field(index).data_type() == &arrow_schema::DataType::Binary {
                decode_bytea_literal(&mut value)?;
            }
            values.push(format!("({value})"));
        }
        let mut sql = format!("SELECT {}.*", quote_ident(&target.alias));
        // Named apart from the row's own columns (`SET c = t.a` would
        // otherwise repeat the name `t.a`).
        for (i, value) in values.iter().enumerate() {
            sql.push_str(&format!(", {value} AS __basalt_set_{i}"));
        }
        sql.push_str(&format!(" FROM {from}"));
        if let Some(selection) = selection {
            sql.push_str(&format!(" WHERE {selection}"));
        }
        let (_, found) = self.run_internal(&sql).await?;
        let width = schema.fields().len();
        let mut seen = HashSet::new();
        let mut written = Vec::new();
        for batch in found {
            // A row an UPDATE ... FROM joins twice is updated once.
            let (batch, old_keys) = first_per_key(&batch, width, &mut seen)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let mut new_columns: Vec<ArrayRef> = batch.columns()[..width].to_vec();
            for (i, &column) in columns.iter().enumerate() {
                let value = batch.column(width + 1 + i);
                new_columns[column] = cast_value(value, schema.field(column))?;
            }
            let new_rows = conform(schema, &target.full, new_columns)?;
            self.replace_rows(target, old_keys, &new_rows)?;
            written.push(new_rows);
        }
        Ok(written)
    }

    /// Writes `new_rows` in place of the rows stored under `old_keys`,
    /// refusing a key another row already holds.
    pub(crate) fn replace_rows(
        &mut self,
        target: &Target,
        old_keys: Vec<Vec<u8>>,
        new_rows: &RecordBatch,
    ) -> Result<()> {
        if target.def.key_columns.is_empty() {
            return self.with_txn(|txn| {
                txn.delete_keys(&target.full, old_keys)?;
                txn.put(&target.full, new_rows)
            });
        }
        let new_keys = row_keys(&target.def, new_rows)?;
        let old: HashSet<&Vec<u8>> = old_keys.iter().collect();
        let mut taken = HashSet::new();
        for (row, key) in new_keys.iter().enumerate() {
            let clash = !taken.insert(key)
                || (!old.contains(key)
                    && self
                        .shared
                        .with_reader(|r| r.get(&target.full, key))?
                        .is_some());
            if clash {
                return Err(unique_violation(&target.def, new_rows, row));
            }
        }
        let moved: Vec<Vec<u8>> = old_keys
            .iter()
            .filter(|k| !taken.contains(k))
            .cloned()
            .collect();
        self.with_txn(|txn| {
            txn.delete_keys(&target.full, moved)?;
            txn.put(&target.full, new_rows)
        })
    }

    pub(crate) async fn delete(&mut self, delete: ast::Delete) -> Result<QueryResult> {
        if delete.limit.is_some() || !delete.order_by.is_empty() {
            return Err(Error::not_supported("DELETE with ORDER BY or LIMIT"));
        }
        let tables = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [table] = tables.as_slice() else {
            return Err(Error::not_supported("DELETE from several tables"));
        };
        let (name, alias) = table_of(table)?;
        let target = self.target(&name, alias.as_ref())?;
        let alias = quote_ident(&target.alias);
        let mut sql = format!(
            "SELECT {alias}.* FROM {} AS {alias}",
            keyed_table(&target.full)
        );
        for using in delete.using.iter().flatten() {
            sql.push_str(&format!(", {using}"));
        }
        if let Some(selection) = &delete.selection {
            sql.push_str(&format!(" WHERE {selection}"));
        }
        let (_, found) = self.run_internal(&sql).await?;
        let width = target.def.schema.fields().len();
        let mut seen = HashSet::new();
        let mut deleted = Vec::new();
        for batch in found {
            let (batch, keys) = first_per_key(&batch, width, &mut seen)?;
            self.with_txn(|txn| txn.delete_keys(&target.full, keys))?;
            deleted.push(conform(
                &target.def.schema,
                &target.full,
                batch.columns()[..width].to_vec(),
            )?);
        }
        self.finish(&target, delete.returning, deleted, "DELETE")
            .await
    }

    /// TRUNCATE as a transactional delete of every row.
    pub(crate) async fn truncate(&mut self, truncate: ast::Truncate) -> Result<QueryResult> {
        if truncate.partitions.is_some() {
            return Err(Error::not_supported("TRUNCATE ... PARTITION"));
        }
        if matches!(
            truncate.identity,
            Some(ast::TruncateIdentityOption::Restart)
        ) {
            return Err(Error::not_supported("TRUNCATE ... RESTART IDENTITY"));
        }
        for table in &truncate.table_names {
            let target = self.target(&table.name, None)?;
            let options = ScanOptions {
                projection: Some(Vec::new()),
                predicates: Vec::new(),
                limit: None,
                with_key: true,
                first_rows: None,
            };
            let batches = self
                .shared
                .with_reader(|r| r.scan(&target.full, &options)?.execute(1))?;
            for batch in batches {
                let keys = key_values(batch.column(0))?;
                self.with_txn(|txn| txn.delete_keys(&target.full, keys))?;
            }
        }
        Ok(QueryResult::command("TRUNCATE TABLE"))
    }

    /// A DML statement's result: RETURNING's rows, or the command tag with
    /// the rows it touched.
    pub(crate) async fn finish(
        &mut self,
        target: &Target,
        returning: Option<Vec<SelectItem>>,
        rows: Vec<RecordBatch>,
        command: &'static str,
    ) -> Result<QueryResult> {
        if let Some(items) = returning {
            return self.returning(target, items, rows, command).await;
        }
        let count = rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        // INSERT's tag carries the oid Postgres no longer assigns: always 0.
        let tag = match command {
            "INSERT" => format!("INSERT 0 {count}"),
            other => format!("{other} {count}"),
        };
        Ok(QueryResult::Command { tag, rows: count })
    }

    /// Evaluates RETURNING over the rows a statement wrote or deleted.
    async fn returning(
        &mut self,
        target: &Target,
        items: Vec<SelectItem>,
        rows: Vec<RecordBatch>,
        command: &'static str,
    ) -> Result<QueryResult> {
        let schema = target.def.schema.clone();
        let table = MemTable::try_new(schema, vec![rows]).map_err(Error::from_datafusion)?;
        self.shared
            .temp_tables
            .lock()
            .insert(RETURNING.to_string(), Arc::new(table));
        let items: Vec<String> = items.iter().map(ToString::to_string).collect();
        let sql = format!(
            "SELECT {} FROM {INTERNAL_SCHEMA}.{RETURNING} AS {}",
            items.join(", "),
            quote_ident(&target.alias)
        );
        let result = self.run_internal(&sql).await;
        self.shared.temp_tables.lock().remove(RETURNING);
        let (schema, batches) = result?;
        Ok(QueryResult::rows(command, schema, batches))
    }
}

/// Which unique constraint decides that an inserted row conflicts.
enum Arbiter {
    PrimaryKey,
    Unique(basalt_storage::IndexDef),
}

/// ON CONFLICT names the primary key or a unique index (its columns, in
/// any order, or its name).
fn check_conflict_target(
    target: &Target,
    conflict: Option<&ast::ConflictTarget>,
) -> Result<Arbiter> {
    let table = target.full.rsplit('.').next().unwrap_or(&target.full);
    let column_names = |columns: &[u32]| -> Vec<String> {
        let mut names: Vec<String> = columns
            .iter()
            .map(|&c| target.def.schema.field(c as usize).name().clone())
            .collect();
        names.sort();
        names
    };
    let unique_indexes =
        target.def.indexes.iter().filter(|i| {
            basalt_storage::is_unique_index(i) && !basalt_storage::is_building_index(i)
        });
    let found = match conflict {
        None => Some(Arbiter::PrimaryKey),
        Some(ast::ConflictTarget::Columns(columns)) => {
            let mut named: Vec<String> = columns.iter().map(normalize).collect();
            named.sort();
            if named == column_names(&target.def.key_columns) {
                Some(Arbiter::PrimaryKey)
            } else {
                let mut indexes = unique_indexes;
                indexes
                    .find(|i| column_names(&i.columns) == named)
                    .map(|i| Arbiter::Unique(i.clone()))
            }
        }
        Some(ast::ConflictTarget::OnConstraint(name)) => {
            let name = name.to_string().trim_matches('"').to_string();
            if name == format!("{table}_pkey") {
                Some(Arbiter::PrimaryKey)
            } else {
                let mut indexes = unique_indexes;
                indexes
                    .find(|i| i.name == name)
                    .map(|i| Arbiter::Unique(i.clone()))
            }
        }
    };
    match found {
        Some(arbiter) => Ok(arbiter),
        // A keyless table fails with the same code where conflicts are handled.
        None if target.def.key_columns.is_empty() => Ok(Arbiter::PrimaryKey),
        None => Err(Error::sql(
            "42P10",
            "there is no unique or exclusion constraint matching the ON CONFLICT specification",
        )),
    }
}

/// The table a single-table UPDATE or DELETE names, with its alias.
pub(crate) fn table_of(table: &TableWithJoins) -> Result<(ast::ObjectName, Option<ast::Ident>)> {
    if !table.joins.is_empty() {
        return Err(Error::not_supported(
            "JOIN in the target of UPDATE or DELETE",
        ));
    }
    match &table.relation {
        TableFactor::Table { name, alias, .. } => {
            Ok((name.clone(), alias.as_ref().map(|a| a.name.clone())))
        }
        other => Err(Error::not_supported(format!(
            "{other} as the target of UPDATE or DELETE"
        ))),
    }
}

/// Rows as the table's schema: NOT NULL checked with the column named, as
/// Postgres reports it.
pub(crate) fn conform(
    schema: &SchemaRef,
    table: &str,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    for (field, column) in schema.fields().iter().zip(&columns) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::sql(
                "23502",
                format!(
                    "null value in column \"{}\" of relation \"{table}\" violates not-null constraint",
                    field.name()
                ),
            ));
        }
    }
    for (field, column) in schema.fields().iter().zip(&columns) {
        if let Some(pg_type) = field.metadata().get(crate::PG_TYPE_KEY) {
            check_text_type(pg_type, column)?;
        }
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Storage(e.into()))
}

/// uuid and json values are text that must parse as their type.
fn check_text_type(pg_type: &str, column: &ArrayRef) -> Result<()> {
    let Some(values) = column.as_any().downcast_ref::<arrow_array::StringArray>() else {
        return Ok(());
    };
    let valid: fn(&str) -> bool = match pg_type {
        "uuid" => is_uuid,
        "json" | "jsonb" => crate::types::json::is_valid,
        _ => return Ok(()),
    };
    match values.iter().flatten().find(|v| !valid(v)) {
        Some(bad) => Err(Error::sql(
            "22P02",
            format!("invalid input syntax for type {pg_type}: \"{bad}\""),
        )),
        None => Ok(()),
    }
}

/// The canonical 8-4-4-4-12 hex form (what Postgres prints).
fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A SET value in the column's type; a value the type cannot hold is an
/// error, not a NULL.
pub(crate) fn cast_value(value: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    if value.data_type() == field.data_type() {
        return Ok(value.clone());
    }
    if let Some(n) = crate::types::vector::dimensions_of(field.data_type()) {
        return crate::types::vector::to_vectors(value, Some(n));
    }
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(value, field.data_type(), &options).map_err(|e| {
        // A number too big for an integer column is Postgres' 22003, as the
        // point-UPDATE path reports it.
        if value.data_type().is_numeric() && crate::session::oltp::is_integer(field.data_type()) {
            return crate::session::oltp::out_of_range(field.data_type());
        }
        Error::sql(
            "22P02",
            format!("invalid value for column \"{}\": {e}", field.name()),
        )
    })
}

fn filter(batch: &RecordBatch, mask: Vec<bool>) -> Result<RecordBatch> {
    filter_record_batch(batch, &BooleanArray::from(mask)).map_err(|e| Error::Storage(e.into()))
}

fn row_keys(def: &TableDef, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let columns: Vec<ArrayRef> = def
        .key_columns
        .iter()
        .map(|&c| batch.column(c as usize).clone())
        .collect();
    basalt_storage::encode_keys(&columns, batch.num_rows()).map_err(|_| {
        Error::sql(
            "23502",
            "null value in a primary key column violates not-null constraint",
        )
    })
}

/// The storage keys of a keyed scan's key column.
fn key_values(column: &ArrayRef) -> Result<Vec<Vec<u8>>> {
    let keys = column
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| Error::sql("XX000", "row keys of unexpected type"))?;
    Ok(keys.iter().flatten().map(<[u8]>::to_vec).collect())
}

/// The rows of `batch` whose key (column `key_column`) was not seen before,
/// with their keys: a row a join finds twice is written once.
fn first_per_key(
    batch: &RecordBatch,
    key_column: usize,
    seen: &mut HashSet<Vec<u8>>,
) -> Result<(RecordBatch, Vec<Vec<u8>>)> {
    let keys = key_values(batch.column(key_column))?;
    let first: Vec<bool> = keys.iter().map(|k| seen.insert(k.clone())).collect();
    let kept = keys
        .into_iter()
        .zip(&first)
        .filter_map(|(k, &f)| f.then_some(k))
        .collect();
    Ok((filter(batch, first)?, kept))
}

/// `batch` with each row's storage key as a last column.
fn with_row_keys(batch: &RecordBatch, keys: Vec<&[u8]>) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(ROW_KEY, arrow_schema::DataType::Binary, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(BinaryArray::from(keys)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Storage(e.into()))
}

/// Rewrites VALUES rows before planning, column by column: `DEFAULT` becomes
/// the column's default (or NULL), and a bytea literal `'\\x0a1b'` becomes a
/// hex literal, since Postgres reads it as hex where DataFusion would keep
/// the text's bytes.
pub(crate) fn rewrite_values(insert: &mut ast::Insert, schema: &SchemaRef) -> Result<()> {
    let targets: Vec<usize> = if insert.columns.is_empty() {
        (0..schema.fields().len()).collect()
    } else {
        insert
            .columns
            .iter()
            .map(|c| {
                let name = c.0.last().and_then(|p| p.as_ident()).map(normalize);
                name.and_then(|n| schema.index_of(&n).ok())
                    .unwrap_or(usize::MAX)
            })
            .collect()
    };
    let Some(source) = insert.source.as_mut() else {
        return Ok(());
    };
    let ast::SetExpr::Values(values) = source.body.as_mut() else {
        return Ok(());
    };
    for row in &mut values.rows {
        for (value, &column) in row.content.iter_mut().zip(&targets) {
            let Some(field) = schema.fields().get(column) else {
                continue;
            };
            if is_default_keyword(value) {
                *value = default_of(field)?;
            }
            if field.data_type() == &arrow_schema::DataType::Binary {
                decode_bytea_literal(value)?;
            }
            if let Some(n) = crate::types::vector::dimensions_of(field.data_type()) {
                let dimensions = ast::Expr::value(ast::Value::Number(n.to_string(), false));
                let original = std::mem::replace(value, ast::Expr::value(ast::Value::Null));
                *value = crate::sql::syntax::call("to_vector", vec![original, dimensions]);
            }
        }
    }
    Ok(())
}

fn is_default_keyword(expr: &ast::Expr) -> bool {
    matches!(expr, ast::Expr::Identifier(ident)
        if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default"))
}

/// The column's DEFAULT expression, or NULL.
fn default_of(field: &Field) -> Result<ast::Expr> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let Some(text) = field.metadata().get(crate::catalog::DEFAULT_KEY) else {
        return Ok(ast::Expr::value(ast::Value::Null));
    };
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut parser| parser.parse_expr())
        .map_err(|e| {
            Error::sql(
                "XX000",
                format!("stored default of \"{}\": {e}", field.name()),
            )
        })
}

fn decode_bytea_literal(expr: &mut ast::Expr) -> Result<()> {
    let ast::Expr::Value(value) = expr else {
        return Ok(());
    };
    let ast::Value::SingleQuotedString(text) = &value.value else {
        return Ok(());
    };
    let Some(hex) = text.strip_prefix("\\x") else {
        return Ok(());
    };
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::sql(
            "22P02",
            format!("invalid input syntax for type bytea: \"{text}\""),
        ));
    }
    value.value = ast::Value::HexStringLiteral(hex.to_string());
    Ok(())
}
