//! Schema changes: tables (create, drop, rename, add a column) and
//! secondary indexes (create, drop), each logged as manifest edits that
//! publish a new definition only if the one it was built from still holds.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use basalt_formats::key::is_key_type;
use basalt_formats::manifest::{Edit, IndexDef, TableDef};
use basalt_formats::schema::is_supported_type;

use super::{Db, TableState};
use crate::error::{Error, Result};

impl Db {
    /// Creates a table. `key_columns` name the primary key; none means rows
    /// get a hidden, increasing row id.
    pub fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        key_columns: &[&str],
    ) -> Result<TableDef> {
        validate_table(name, &schema, key_columns)?;
        let key_columns = key_columns
            .iter()
            .map(|k| {
                schema
                    .index_of(k)
                    .map(|i| i as u32)
                    .map_err(|_| Error::ColumnNotFound(k.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.create_table_def(name, schema, key_columns)
    }

    /// Creates a table whose name and schema the caller has checked.
    pub(crate) fn create_table_def(
        &self,
        name: &str,
        schema: SchemaRef,
        key_columns: Vec<u32>,
    ) -> Result<TableDef> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        let mut manifest = inner.manifest.lock();
        if inner.current().by_name.contains_key(name) {
            return Err(Error::TableExists(name.to_string()));
        }
        let id = u32::try_from(inner.next_file.fetch_add(1, Ordering::SeqCst))
            .map_err(|_| Error::InvalidArgument("table id space exhausted".into()))?;
        let def = TableDef {
            id,
            name: name.to_string(),
            schema,
            key_columns,
            schema_version: 1,
            indexes: Vec::new(),
            next_index_id: 1,
        };
        let next_file = inner.next_file.load(Ordering::SeqCst);
        inner.log_edits(
            &mut manifest,
            &[
                Edit::PutTable(def.clone()),
                Edit::NextFileNumber { next: next_file },
            ],
        )?;
        let mut state = inner.state.write();
        let flushed = inner.visible_seq.load(Ordering::SeqCst);
        *state = Arc::new(state.with_table(TableState::new(def.clone(), flushed, 0)));
        Ok(def)
    }

    /// Drops a table; its segments are deleted once no snapshot reads them.
    pub fn drop_table(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        let mut manifest = inner.manifest.lock();
        let state = inner.current();
        let table = state.table(name)?.clone();
        let mut dropped = vec![table.clone()];
        dropped.extend(crate::index::unique::entries_tables(&state, &table.def));
        let edits: Vec<Edit> = dropped
            .iter()
            .map(|t| Edit::DropTable { table_id: t.def.id })
            .collect();
        inner.log_edits(&mut manifest, &edits)?;
        let mut guard = inner.state.write();
        let mut next = (**guard).clone();
        for t in &dropped {
            next.tables.remove(&t.def.id);
            next.by_name.remove(&t.def.name);
        }
        *guard = Arc::new(next);
        drop(guard);
        for t in &dropped {
            t.segments().for_each(|s| s.mark_obsolete());
        }
        Ok(())
    }

    /// Adds a nullable column at the end of a table. Rows written before read
    /// it as null. The table's rows in memory are flushed first, so that no
    /// WAL record or memtable row is left in the old layout.
    pub fn add_column(&self, table: &str, field: Field) -> Result<TableDef> {
        let inner = &self.inner;
        let current = inner.current().table(table)?.def.clone();
        if !field.is_nullable() {
            return Err(Error::InvalidArgument(format!(
                "column \"{}\" must be nullable: existing rows have no value for it",
                field.name()
            )));
        }
        // Built from the definition current under the manifest lock, so that
        // a concurrent CREATE INDEX or ADD COLUMN is kept, not overwritten.
        let with_field = |def: &TableDef| {
            let mut fields: Vec<Field> = def
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(field.clone());
            let schema = Arc::new(Schema::new_with_metadata(
                fields,
                def.schema.metadata().clone(),
            ));
            validate_table(&def.name, &schema, &[]).map(|()| schema)
        };
        with_field(&current)?;
        loop {
            self.flush_table(current.id)?;
            let mut manifest = inner.manifest.lock();
            let _commit = inner.commit.lock();
            let state = inner.current();
            let t = state
                .tables
                .get(&current.id)
                .ok_or_else(|| Error::TableNotFound(table.to_string()))?;
            if !t.active.is_empty() || !t.frozen.is_empty() {
                continue; // written to since the flush
            }
            let def = TableDef {
                schema: with_field(&t.def)?,
                schema_version: t.def.schema_version + 1,
                ..t.def.clone()
            };
            inner.log_edits(&mut manifest, &[Edit::PutTable(def.clone())])?;
            let mut guard = inner.state.write();
            *guard = Arc::new(guard.with_table(t.with_def(def.clone())));
            return Ok(def);
        }
    }

    /// Declares an HNSW index on a vector column (see [`Db::add_index`]).
    pub fn create_index(
        &self,
        table: &str,
        column: &str,
        name: &str,
        params: basalt_formats::hnsw::HnswParams,
    ) -> Result<TableDef> {
        let options = crate::index::hnsw::options(&params);
        self.add_index(table, name, crate::index::hnsw::KIND, &[column], options)
    }

    /// Declares an index of kind `kind` over `columns` and builds its file
    /// for every segment the table has; rows in memory are compared
    /// directly until flushed. The build holds no lock: writes, flushes,
    /// compactions and bulk loads go on, and the segments they add are
    /// indexed, under the background work lock, before one manifest edit
    /// records the declaration and every file. Index names are unique per
    /// table; the caller checks wider scopes.
    pub fn add_index(
        &self,
        table: &str,
        name: &str,
        kind: &str,
        columns: &[&str],
        options: Vec<(String, String)>,
    ) -> Result<TableDef> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        // One build at a time, so the id taken now is still free at the end.
        let one_build = inner.index_builds.lock();
        let start = inner.current().table(table)?.clone();
        let mut index = new_index(&start.def, name, kind, columns, options)?;
        if !crate::index::unique::is_unique(&index) {
            return self.build_index(&start, index);
        }
        index.options.push((
            crate::index::unique::BUILDING.to_string(),
            "true".to_string(),
        ));
        let entries = crate::index::unique::create_entries(self, &start.def, &index)?;
        let published = self.build_index(&start, index.clone());
        drop(one_build);
        match published {
            Ok(_) => crate::index::unique::fill_and_finish(self, start.def.id, &index),
            Err(e) => {
                self.drop_entries(&entries);
                Err(e)
            }
        }
    }

    /// Builds `index` (checked, with a free id) for every segment of `start`
    /// and the segments added meanwhile, and publishes it.
    pub(crate) fn build_index(&self, start: &TableState, index: IndexDef) -> Result<TableDef> {
        let inner = &self.inner;
        let table = &start.def.name;
        let mut def = start.def.clone();
        def.indexes.push(index.clone());
        let mut files = UnpublishedFiles::default();
        for segment in start.segments() {
            let file = inner.index_builder().build_file(segment, &def, &index)?;
            files.built.insert(segment.id, file);
        }
        let _work = inner.work_lock.lock();
        let state = inner.current();
        let current = state
            .tables
            .get(&start.def.id)
            .ok_or_else(|| Error::TableNotFound(table.to_string()))?;
        // Only CREATE INDEX adds indexes, and builds run one at a time: the
        // name is still free and the id still next.
        let mut def = current.def.clone();
        def.next_index_id = index.id + 1;
        def.indexes.push(index.clone());
        // Segments flushed, compacted or loaded during the build.
        for segment in current.segments() {
            if let std::collections::hash_map::Entry::Vacant(slot) = files.built.entry(segment.id) {
                slot.insert(inner.index_builder().build_file(segment, &def, &index)?);
            }
        }
        let mut edits = vec![Edit::PutTable(def.clone())];
        edits.extend(current.segments().map(|segment| Edit::AddIndexFile {
            table_id: def.id,
            segment_id: segment.id,
            index_id: index.id,
        }));
        let def = self.publish_definition(&current.def, def, &edits, &[])?;
        for segment in current.segments() {
            if let Some((path, opened)) = files.built.remove(&segment.id) {
                segment.attach_index(index.id, opened, path);
            }
        }
        // What is left belongs to segments compacted away meanwhile.
        Ok(def)
    }

    /// Drops the index named `name` of `table`. Its files are deleted once
    /// the drop is logged; a search that already holds one keeps reading
    /// its mapping.
    pub fn drop_index(&self, table: &str, name: &str) -> Result<TableDef> {
        let id = self.inner.current().table(table)?.def.id;
        self.drop_index_of(id, |i| i.name == name)
            .and_then(|dropped| {
                dropped.ok_or_else(|| {
                    Error::InvalidArgument(format!("index \"{name}\" does not exist"))
                })
            })
    }

    /// Drops the first index of table `table_id` that `which` picks, and
    /// a unique index's entries with it; `None` if none matches.
    pub(crate) fn drop_index_of(
        &self,
        table_id: u32,
        which: impl Fn(&IndexDef) -> bool,
    ) -> Result<Option<TableDef>> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        let _work = inner.work_lock.lock();
        let state = inner.current();
        let Some(t) = state.tables.get(&table_id).cloned() else {
            return Ok(None);
        };
        let Some(index) = t.def.indexes.iter().find(|i| which(i)).cloned() else {
            return Ok(None);
        };
        let mut def = t.def.clone();
        def.indexes.retain(|i| i.id != index.id);
        let entries = crate::index::unique::entries_table(&state, &t.def, &index);
        let mut edits = vec![Edit::PutTable(def.clone())];
        edits.extend(
            entries
                .iter()
                .map(|e| Edit::DropTable { table_id: e.def.id }),
        );
        let def = self.publish_definition(&t.def, def, &edits, entries.as_slice())?;
        // Held, the state read above would keep its epoch alive.
        drop(state);
        let ended = {
            let mut guard = inner.state.write();
            let mut next = (**guard).clone();
            let ended = std::mem::take(&mut next.epoch);
            *guard = Arc::new(next);
            ended
        };
        inner.dropped_indexes.push(table_id, index.id, ended);
        if !inner.dropped_indexes.remove_released(&inner.current()) {
            // The background thread looks again until they go.
            inner.work_cv.notify_all();
        }
        Ok(Some(def))
    }

    /// Drops the entries table of a unique index that was never published.
    pub(crate) fn drop_entries(&self, entries: &TableDef) {
        let inner = &self.inner;
        let mut manifest = inner.manifest.lock();
        let edit = Edit::DropTable {
            table_id: entries.id,
        };
        if let Err(e) = inner.log_edits(&mut manifest, &[edit]) {
            // Dropped again at the next open, as an orphan.
            tracing::warn!(error = %e, "could not drop an unused unique index's entries");
            return;
        }
        let mut guard = inner.state.write();
        let mut next = (**guard).clone();
        next.tables.remove(&entries.id);
        next.by_name.remove(&entries.name);
        *guard = Arc::new(next);
    }

    /// Logs `edits` and makes `def` the table's definition, if the table is
    /// still as `read` describes it. The caller built with the work lock
    /// but without the manifest lock: a DROP TABLE, RENAME or ADD COLUMN
    /// may have been logged meanwhile, and logging a definition read before
    /// it would undo it (after a restart, a dropped table would come back).
    pub(crate) fn publish_definition(
        &self,
        read: &TableDef,
        def: TableDef,
        edits: &[Edit],
        dropped: &[Arc<TableState>],
    ) -> Result<TableDef> {
        let inner = &self.inner;
        let mut manifest = inner.manifest.lock();
        let state = inner.current();
        let Some(current) = state.tables.get(&read.id) else {
            return Err(Error::TableNotFound(read.name.clone()));
        };
        if current.def != *read {
            return Err(Error::SchemaChanged(current.def.name.clone()));
        }
        inner.log_edits(&mut manifest, edits)?;
        let mut guard = inner.state.write();
        let current = guard
            .tables
            .get(&read.id)
            .ok_or_else(|| Error::TableNotFound(read.name.clone()))?;
        // Only the declaration changed: rows in memory keep their layout.
        let mut next = (**current).clone();
        next.def = def.clone();
        let mut state = guard.with_table(next);
        for t in dropped {
            state.tables.remove(&t.def.id);
            state.by_name.remove(&t.def.name);
        }
        *guard = Arc::new(state);
        drop(guard);
        for t in dropped {
            t.segments().for_each(|s| s.mark_obsolete());
        }
        Ok(def)
    }

    /// Renames a table.
    pub fn rename_table(&self, from: &str, to: &str) -> Result<TableDef> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        let mut manifest = inner.manifest.lock();
        let state = inner.current();
        let t = state.table(from)?;
        if state.by_name.contains_key(to) {
            return Err(Error::TableExists(to.to_string()));
        }
        validate_table(to, &t.def.schema, &[])?;
        let def = TableDef {
            name: to.to_string(),
            ..t.def.clone()
        };
        inner.log_edits(&mut manifest, &[Edit::PutTable(def.clone())])?;
        let mut guard = inner.state.write();
        let mut renamed = (**t).clone();
        renamed.def = def.clone();
        let mut next = guard.with_table(renamed);
        next.by_name.remove(from);
        *guard = Arc::new(next);
        Ok(def)
    }

    /// Freezes one table's memtable and flushes everything frozen.
    fn flush_table(&self, table_id: u32) -> Result<()> {
        self.inner.check_poisoned()?;
        self.inner.freeze_locked_for(&[table_id])?;
        self.inner.run_flushes()
    }
}

fn validate_table(name: &str, schema: &Schema, key_columns: &[&str]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("table name is empty".into()));
    }
    // The names of unique indexes' entries start with one: a user's table
    // can never take or reach them.
    if name.contains('\0') {
        return Err(Error::InvalidArgument(
            "a table name cannot contain the character 0x00".into(),
        ));
    }
    if schema.fields().is_empty() {
        return Err(Error::InvalidArgument(format!(
            "table \"{name}\" has no columns"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name()) {
            return Err(Error::InvalidArgument(format!(
                "column \"{}\" specified more than once",
                field.name()
            )));
        }
        if !is_supported_type(field.data_type()) {
            return Err(Error::InvalidArgument(format!(
                "column \"{}\" has unsupported type {}",
                field.name(),
                field.data_type()
            )));
        }
    }
    for key in key_columns {
        let field = schema
            .field_with_name(key)
            .map_err(|_| Error::ColumnNotFound(key.to_string()))?;
        if !is_key_type(field.data_type()) {
            return Err(Error::InvalidArgument(format!(
                "column \"{key}\" of type {} cannot be part of a primary key",
                field.data_type()
            )));
        }
    }
    Ok(())
}

/// A new index's definition, checked against its table.
pub(crate) fn new_index(
    def: &TableDef,
    name: &str,
    kind: &str,
    columns: &[&str],
    options: Vec<(String, String)>,
) -> Result<IndexDef> {
    if def.indexes.iter().any(|i| i.name == name) {
        return Err(Error::InvalidArgument(format!(
            "index \"{name}\" already exists"
        )));
    }
    let columns = columns
        .iter()
        .map(|c| {
            def.schema
                .index_of(c)
                .map(|p| p as u32)
                .map_err(|_| Error::ColumnNotFound(c.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let index = IndexDef {
        id: def.next_index_id,
        name: name.to_string(),
        kind: kind.to_string(),
        columns,
        options,
    };
    crate::index::validate(def, &index)?;
    Ok(index)
}

/// Index files CREATE INDEX has written but not yet recorded, by segment;
/// those still here when it ends (failed, or their segment was compacted
/// away) are deleted.
#[derive(Default)]
struct UnpublishedFiles {
    built: std::collections::HashMap<u64, (PathBuf, crate::index::OpenIndex)>,
}

impl Drop for UnpublishedFiles {
    fn drop(&mut self) {
        for (path, _) in self.built.values() {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %e, "could not delete an unpublished index file");
            }
        }
    }
}
