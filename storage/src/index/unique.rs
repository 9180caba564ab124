//! UNIQUE B-tree indexes. The B-tree files serve scans as for any B-tree
//! index; uniqueness is kept by a hidden keyed table per index, its
//! *entries*: the index columns' values as primary key, the indexed row's
//! key as payload. A uniqueness check is then a point lookup, and two
//! transactions giving one value to different rows both write its entry,
//! so the later committer fails (first committer wins), as for any key.
//!
//! Every write through a [`Transaction`] keeps the entries: a put checks
//! and writes the entries of its rows' values and removes those of the
//! values it replaces; a delete removes its rows' entries. An entry is
//! trusted only once its row is read back holding the value, so an entry
//! left behind (by a row changed while the index was being built) never
//! causes a false violation. Rows with a NULL in an index column have no
//! entry: NULLs are distinct, as in PostgreSQL.
//!
//! CREATE UNIQUE INDEX publishes the index marked `building`, so that
//! every commit from then on keeps its entries, then fills the entries of
//! the rows already there in transactions of its own, and publishes the
//! index again unmarked. A database reopened with an index still marked
//! drops it: its entries may be incomplete.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt_formats::key::encode_key;
use basalt_formats::manifest::{IndexDef, TableDef};

use crate::db::{Db, DbState, TableState};
use crate::error::{Error, Result};
use crate::memtable::RowRef;
use crate::scan::ScanOptions;
use crate::txn::Transaction;

/// The option marking a B-tree index UNIQUE (`unique = true`).
pub(crate) const UNIQUE: &str = basalt_formats::manifest::UNIQUE_OPTION;
/// The option marking a unique index whose entries are still being filled.
pub(crate) const BUILDING: &str = "building";

/// The payload column of an entries table: the indexed row's key.
const ROW_KEY: &str = "row_key";

pub(crate) fn is_unique(index: &IndexDef) -> bool {
    index.option(UNIQUE) == Some("true")
}

pub(crate) fn is_building(index: &IndexDef) -> bool {
    index.option(BUILDING) == Some("true")
}

/// Whether `index` is a UNIQUE index.
pub fn is_unique_index(index: &IndexDef) -> bool {
    is_unique(index)
}

/// Whether CREATE UNIQUE INDEX is still checking `index`'s rows.
pub fn is_building_index(index: &IndexDef) -> bool {
    is_building(index)
}

/// `index`'s options as its CREATE INDEX gave them in `WITH (...)`,
/// without the marks storage keeps among them.
pub fn declared_options(index: &IndexDef) -> Vec<(String, String)> {
    let marks = if index.kind == super::btree::KIND {
        &[UNIQUE, BUILDING][..]
    } else {
        &[]
    };
    index
        .options
        .iter()
        .filter(|(key, _)| !marks.contains(&key.as_str()))
        .cloned()
        .collect()
}

/// The entries table's name: it starts with a NUL, which no user table
/// name may contain.
pub(crate) fn entries_name(table_id: u32, index_id: u32) -> String {
    format!("\0unique.{table_id}.{index_id}")
}

pub(crate) fn is_entries_table(name: &str) -> bool {
    name.starts_with("\0unique.")
}

/// The table and index an entries table serves.
fn entries_owner(name: &str) -> Option<(u32, u32)> {
    let (table, index) = name.strip_prefix("\0unique.")?.split_once('.')?;
    Some((table.parse().ok()?, index.parse().ok()?))
}

/// The entries table's columns: the index columns, then the row key.
pub(crate) fn entries_schema(table: &TableDef, index: &IndexDef) -> SchemaRef {
    let mut fields: Vec<Field> = index
        .columns
        .iter()
        .map(|&c| {
            let field = table.schema.field(c as usize);
            Field::new(field.name(), field.data_type().clone(), false)
        })
        .collect();
    fields.push(Field::new(ROW_KEY, DataType::Binary, false));
    Arc::new(Schema::new(fields))
}

/// Whether two definitions of one table have the same unique indexes.
pub(crate) fn same_indexes(a: &TableDef, b: &TableDef) -> bool {
    let ids = |d: &TableDef| -> Vec<u32> {
        d.indexes
            .iter()
            .filter(|i| is_unique(i))
            .map(|i| i.id)
            .collect()
    };
    ids(a) == ids(b)
}

fn unique_indexes(def: &TableDef) -> Vec<IndexDef> {
    def.indexes
        .iter()
        .filter(|i| is_unique(i))
        .cloned()
        .collect()
}

/// Each row's encoded index value, `None` where an index column is NULL.
fn index_values(batch: &RecordBatch, index: &IndexDef) -> Result<Vec<Option<Vec<u8>>>> {
    let columns: Vec<ArrayRef> = index
        .columns
        .iter()
        .map(|&c| batch.column(c as usize).clone())
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            if columns.iter().any(|c| c.is_null(row)) {
                return Ok(None);
            }
            let mut value = Vec::with_capacity(16);
            encode_key(&columns, row, &mut value)?;
            Ok(Some(value))
        })
        .collect()
}

/// The violation of `index` by row `row` of `batch` (the table's columns).
fn violation(
    def: &TableDef,
    index: &IndexDef,
    batch: &RecordBatch,
    row: usize,
    creating: bool,
) -> Error {
    let columns: Vec<ArrayRef> = index
        .columns
        .iter()
        .map(|&c| batch.column(c as usize).slice(row, 1))
        .collect();
    violation_of(index, &entries_schema(def, index), columns, creating).unwrap_or_else(|e| e)
}

/// The violation of `index` by one row's values of its columns, named as
/// the entries' schema `entries` names them.
fn violation_of(
    index: &IndexDef,
    entries: &Schema,
    columns: Vec<ArrayRef>,
    creating: bool,
) -> Result<Error> {
    let fields: Vec<Field> = entries.fields()[..columns.len()]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let values = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok(Error::UniqueViolation {
        index: index.name.clone(),
        values: Box::new(values),
        creating,
    })
}

/// The entries table of `index` in `state`.
fn entries_of<'s>(
    state: &'s DbState,
    def: &TableDef,
    index: &IndexDef,
) -> Result<&'s Arc<TableState>> {
    state
        .by_name
        .get(&entries_name(def.id, index.id))
        .and_then(|id| state.tables.get(id))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the entries of unique index \"{}\" are missing",
                index.name
            ))
        })
}

impl Transaction {
    /// For each row of `batch` (the table's columns), the key of the row
    /// that holds its values in unique index `index`, as this transaction
    /// sees it: `None` where no row does or a value is NULL. What
    /// `INSERT ... ON CONFLICT (cols)` needs to find its conflicting rows.
    pub fn unique_holders(
        &self,
        table: &str,
        index: &str,
        batch: &RecordBatch,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let state = self.snapshot().state_arc();
        let t = state.table(table)?;
        let Some(index) = t
            .def
            .indexes
            .iter()
            .find(|i| i.name == index && is_unique(i))
        else {
            return Err(Error::InvalidArgument(format!(
                "\"{index}\" is not a unique index of table \"{table}\""
            )));
        };
        crate::txn::check_columns(&t.def, batch)?;
        let entries = entries_of(&state, &t.def, index)?;
        index_values(batch, index)?
            .into_iter()
            .map(|value| {
                let Some(value) = value else { return Ok(None) };
                match self.entry_holder(entries, &value)? {
                    Some(holder) if self.row_holds(t, index, &holder, &value)? => Ok(Some(holder)),
                    _ => Ok(None),
                }
            })
            .collect()
    }

    /// The key of the row holding `value` in `index`'s entries, as this
    /// transaction sees them.
    fn entry_holder(&self, entries: &TableState, value: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(entry) = self.read_row(entries, value)? else {
            return Ok(None);
        };
        let holder = entry.column(entry.num_columns() - 1).as_binary::<i32>();
        Ok((!holder.is_null(0)).then(|| holder.value(0).to_vec()))
    }

    /// Whether row `key` of `t` holds `value` in `index`, as this
    /// transaction sees it: what makes an entry trustworthy.
    fn row_holds(
        &self,
        t: &TableState,
        index: &IndexDef,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool> {
        let Some(row) = self.read_row(t, key)? else {
            return Ok(false);
        };
        Ok(index_values(&row, index)?.pop().flatten().as_deref() == Some(value))
    }

    /// Checks that `value`, given to row `key`, is held by no other row
    /// except possibly rows in `rewritten` (whose values the caller checks).
    fn held_elsewhere(
        &self,
        t: &TableState,
        entries: &TableState,
        index: &IndexDef,
        key: &[u8],
        value: &[u8],
        rewritten: &HashSet<&[u8]>,
    ) -> Result<bool> {
        match self.entry_holder(entries, value)? {
            Some(holder) if holder != key && !rewritten.contains(holder.as_slice()) => {
                self.row_holds(t, index, &holder, value)
            }
            _ => Ok(false),
        }
    }

    /// Writes `index`'s entries: removals first, so a value moved between
    /// rows in one batch keeps its new entry.
    fn write_entries(
        &mut self,
        entries: &Arc<TableState>,
        removed: Vec<Vec<u8>>,
        added: Vec<(Vec<u8>, Vec<u8>)>,
        batch: &RecordBatch,
        index: &IndexDef,
        rows: &[usize],
    ) -> Result<()> {
        self.write_deletes(entries, &removed)?;
        if added.is_empty() {
            return Ok(());
        }
        let take = arrow_array::UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
        let mut columns = index
            .columns
            .iter()
            .map(|&c| {
                Ok(arrow_select::take::take(
                    batch.column(c as usize),
                    &take,
                    None,
                )?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        columns.push(Arc::new(BinaryArray::from_iter_values(
            added.iter().map(|(_, holder)| holder),
        )));
        let keys: Vec<Vec<u8>> = added.into_iter().map(|(value, _)| value).collect();
        let rows = RecordBatch::try_new(entries.def.schema.clone(), columns)?;
        self.write_puts(entries, &keys, &rows)
    }
}

/// Before `batch` (the table's columns) is put under `keys`: fails with
/// [`Error::UniqueViolation`] if it gives a unique index's value to a
/// second row, else writes the entries it adds and removes.
pub(crate) fn on_put(
    txn: &mut Transaction,
    t: &Arc<TableState>,
    batch: &RecordBatch,
    keys: &[Vec<u8>],
) -> Result<()> {
    let indexes = unique_indexes(&t.def);
    if indexes.is_empty() || batch.num_rows() == 0 {
        return Ok(());
    }
    // Rows this batch replaces, read before it is written. A keyless
    // table's put always adds rows.
    let replaced: Vec<Option<RecordBatch>> = match t.is_keyless() {
        true => vec![None; keys.len()],
        false => keys
            .iter()
            .map(|k| txn.read_row(t, k))
            .collect::<Result<_>>()?,
    };
    let rewritten: HashSet<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let state = txn.snapshot().state_arc();
    for index in &indexes {
        let entries = entries_of(&state, &t.def, index)?;
        let values = index_values(batch, index)?;
        let mut first_row: HashMap<&[u8], usize> = HashMap::new();
        let mut added = Vec::new();
        let mut added_rows = Vec::new();
        for (row, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            match first_row.get(value.as_slice()) {
                Some(&other) if keys[other] != keys[row] => {
                    return Err(violation(&t.def, index, batch, row, false));
                }
                Some(_) => {}
                None => {
                    first_row.insert(value, row);
                }
            }
            if txn.held_elsewhere(t, entries, index, &keys[row], value, &rewritten)? {
                return Err(violation(&t.def, index, batch, row, false));
            }
            added.push((value.clone(), keys[row].clone()));
            added_rows.push(row);
        }
        let mut removed = Vec::new();
        for (row, old) in replaced.iter().enumerate() {
            let Some(old) = old else { continue };
            let Some(old_value) = index_values(old, index)?.pop().flatten() else {
                continue;
            };
            if values[row].as_ref() != Some(&old_value)
                && txn.entry_holder(entries, &old_value)?.as_deref() == Some(&keys[row][..])
            {
                removed.push(old_value);
            }
        }
        txn.write_entries(entries, removed, added, batch, index, &added_rows)?;
    }
    Ok(())
}

/// Before rows `keys` of `t` are deleted: removes their entries.
pub(crate) fn on_delete(
    txn: &mut Transaction,
    t: &Arc<TableState>,
    keys: &[Vec<u8>],
) -> Result<()> {
    let indexes = unique_indexes(&t.def);
    if indexes.is_empty() {
        return Ok(());
    }
    let state = txn.snapshot().state_arc();
    let mut removed: Vec<Vec<Vec<u8>>> = vec![Vec::new(); indexes.len()];
    for key in keys {
        let Some(old) = txn.read_row(t, key)? else {
            continue;
        };
        for (i, index) in indexes.iter().enumerate() {
            let entries = entries_of(&state, &t.def, index)?;
            let Some(value) = index_values(&old, index)?.pop().flatten() else {
                continue;
            };
            if txn.entry_holder(entries, &value)?.as_deref() == Some(&key[..]) {
                removed[i].push(value);
            }
        }
    }
    for (index, removed) in indexes.iter().zip(removed) {
        let entries = entries_of(&state, &t.def, index)?;
        txn.write_deletes(entries, &removed)?;
    }
    Ok(())
}

/// Adds the entries of existing rows `rows` (the index columns, then the
/// rows' keys) to a unique index being built, as of `txn`'s snapshot.
/// Rows changed since they were read are skipped when they no longer hold
/// their value; a value another row holds is a violation.
pub(crate) fn fill(
    txn: &mut Transaction,
    t: &Arc<TableState>,
    index: &IndexDef,
    rows: &RecordBatch,
) -> Result<()> {
    let state = txn.snapshot().state_arc();
    let entries = entries_of(&state, &t.def, index)?;
    let n = index.columns.len();
    let keys = rows.column(n).as_binary::<i32>();
    // The rows in table layout, so values and violations read as on a put.
    let mut table_columns: Vec<ArrayRef> = t
        .def
        .schema
        .fields()
        .iter()
        .map(|f| arrow_array::new_null_array(f.data_type(), rows.num_rows()))
        .collect();
    for (i, &c) in index.columns.iter().enumerate() {
        table_columns[c as usize] = rows.column(i).clone();
    }
    let as_table = RecordBatch::try_new(
        Arc::new(Schema::new(
            t.def
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        )),
        table_columns,
    )?;
    let values = index_values(&as_table, index)?;
    let mut added: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut added_rows = Vec::new();
    let none = HashSet::new();
    // Value -> its position in `added`, for values two rows of the chunk give.
    let mut in_chunk: HashMap<&[u8], usize> = HashMap::new();
    for (row, value) in values.iter().enumerate() {
        let Some(value) = value else { continue };
        let key = keys.value(row);
        let earlier = in_chunk.get(value.as_slice()).copied();
        let clash = match earlier {
            Some(at) => txn.row_holds(t, index, &added[at].1, value)?,
            None => txn.held_elsewhere(t, entries, index, key, value, &none)?,
        };
        if clash {
            if txn.row_holds(t, index, key, value)? {
                return Err(violation(&t.def, index, &as_table, row, true));
            }
            // Changed since it was read: its writer kept the entries.
            continue;
        }
        match earlier {
            // The earlier row no longer holds the value: this one takes it.
            Some(at) => added[at].1 = key.to_vec(),
            None => {
                in_chunk.insert(value, added.len());
                added.push((value.clone(), key.to_vec()));
                added_rows.push(row);
            }
        }
    }
    txn.write_entries(entries, Vec::new(), added, &as_table, index, &added_rows)
}

/// The error for a write conflict on `table_id`: on a unique index's
/// entries, where this transaction gives the value to a row, it is that
/// value's violation (as PostgreSQL reports the second of two concurrent
/// inserts of one value); anywhere else a serialization failure.
pub(crate) fn conflict_error(state: &DbState, table_id: u32, mine: Option<RowRef>) -> Error {
    let violation = || {
        let entries = state.tables.get(&table_id)?;
        let (owner, index_id) = entries_owner(&entries.def.name)?;
        let owner = state.tables.get(&owner)?;
        let index = owner.def.indexes.iter().find(|i| i.id == index_id)?;
        let row = mine?;
        let batch = row.batch.as_ref();
        if batch
            .column(1)
            .as_primitive::<arrow_array::types::UInt8Type>()
            .value(row.row as usize)
            != basalt_formats::segment::OP_PUT
        {
            return None;
        }
        // The WAL layout: key, op, then the entries' columns.
        let columns: Vec<ArrayRef> = (0..index.columns.len())
            .map(|i| batch.column(2 + i).slice(row.row as usize, 1))
            .collect();
        violation_of(index, &entries.def.schema, columns, false).ok()
    };
    violation().unwrap_or(Error::WriteConflict)
}

/// Rows per transaction when CREATE UNIQUE INDEX fills the entries.
const FILL_ROWS: usize = 8192;
/// Times one chunk of the fill is retried after conflicting with writers.
const FILL_ATTEMPTS: usize = 100;

/// The entries tables of `def`'s unique indexes.
pub(crate) fn entries_tables(state: &DbState, def: &TableDef) -> Vec<Arc<TableState>> {
    def.indexes
        .iter()
        .filter_map(|index| entries_table(state, def, index))
        .collect()
}

/// The entries table of `index`, if it is a unique index.
pub(crate) fn entries_table(
    state: &DbState,
    def: &TableDef,
    index: &IndexDef,
) -> Option<Arc<TableState>> {
    is_unique(index)
        .then(|| entries_of(state, def, index).ok().cloned())
        .flatten()
}

/// Creates the (empty) entries table of `index`, about to be published.
pub(crate) fn create_entries(db: &Db, def: &TableDef, index: &IndexDef) -> Result<TableDef> {
    let name = entries_name(def.id, index.id);
    // Left by a build that failed and could not drop it: never published,
    // so nothing refers to it.
    if let Ok(orphan) = entries_of(&db.inner.current(), def, index) {
        db.drop_entries(&orphan.def);
    }
    let keys = (0..index.columns.len() as u32).collect();
    db.create_table_def(&name, entries_schema(def, index), keys)
}

/// Fills the entries of a published, `building` unique index from the
/// table's rows, then publishes it finished. On failure (two rows share a
/// value) the index is dropped.
pub(crate) fn fill_and_finish(db: &Db, table_id: u32, index: &IndexDef) -> Result<TableDef> {
    let finished = fill_all(db, table_id, index).and_then(|()| finish(db, table_id, index.id));
    if finished.is_err() {
        if let Err(e) = db.drop_index_of(table_id, |i| i.id == index.id) {
            tracing::warn!(error = %e, index = %index.name, "could not drop a unique index whose build failed; it is dropped at the next open");
        }
    }
    finished
}

fn fill_all(db: &Db, table_id: u32, index: &IndexDef) -> Result<()> {
    let snapshot = db.snapshot();
    let t = snapshot
        .state()
        .tables
        .get(&table_id)
        .cloned()
        .ok_or_else(|| {
            Error::InvalidArgument(format!("the table of index \"{}\" was dropped", index.name))
        })?;
    let options = ScanOptions {
        projection: Some(index.columns.iter().map(|&c| c as usize).collect()),
        predicates: Vec::new(),
        limit: None,
        with_key: true,
        first_rows: None,
    };
    let plan = snapshot.scan_table(&t, &options)?;
    for unit in 0..plan.num_units() {
        let Some(rows) = plan.execute_unit(unit)? else {
            continue;
        };
        let mut offset = 0;
        while offset < rows.num_rows() {
            let chunk = rows.slice(offset, FILL_ROWS.min(rows.num_rows() - offset));
            fill_chunk(db, table_id, index, &chunk)?;
            offset += chunk.num_rows();
        }
    }
    Ok(())
}

/// Fills the entries of one chunk of rows in a transaction of its own,
/// retried while it conflicts with writers keeping the same entries.
fn fill_chunk(db: &Db, table_id: u32, index: &IndexDef, rows: &RecordBatch) -> Result<()> {
    let mut attempts = 0;
    loop {
        let mut txn = db.begin();
        let t = txn
            .snapshot()
            .state()
            .tables
            .get(&table_id)
            .filter(|t| t.def.indexes.iter().any(|i| i.id == index.id))
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "index \"{}\" was dropped while it was being created",
                    index.name
                ))
            })?;
        fill(&mut txn, &t, index, rows)?;
        match txn.commit() {
            Ok(_) => return Ok(()),
            Err(
                Error::WriteConflict
                | Error::UniqueViolation {
                    creating: false, ..
                },
            ) if attempts < FILL_ATTEMPTS => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Publishes the index without its `building` mark.
fn finish(db: &Db, table_id: u32, index_id: u32) -> Result<TableDef> {
    loop {
        let _work = db.inner.work_lock.lock();
        let state = db.inner.current();
        let t = state
            .tables
            .get(&table_id)
            .ok_or_else(|| Error::InvalidArgument("the index's table was dropped".into()))?;
        let mut def = t.def.clone();
        let Some(index) = def.indexes.iter_mut().find(|i| i.id == index_id) else {
            return Err(Error::InvalidArgument(
                "the index was dropped while it was being created".into(),
            ));
        };
        index.options.retain(|(key, _)| key != BUILDING);
        let edits = [basalt_formats::manifest::Edit::PutTable(def.clone())];
        match db.publish_definition(&t.def, def, &edits, &[]) {
            // A concurrent ADD COLUMN or RENAME: publish over the new one.
            Err(Error::SchemaChanged(_)) => continue,
            other => return other,
        }
    }
}

/// At open: drops unique indexes whose build did not finish (their
/// entries may lack rows) and entries tables no index owns.
pub(crate) fn drop_unfinished(db: &Db) -> Result<()> {
    let state = db.inner.current();
    for t in state.tables.values() {
        if let Some((owner, index_id)) = entries_owner(&t.def.name) {
            let owned = state.tables.get(&owner).is_some_and(|o| {
                o.def
                    .indexes
                    .iter()
                    .any(|i| i.id == index_id && is_unique(i))
            });
            if !owned {
                db.drop_entries(&t.def);
            }
            continue;
        }
        for index in t.def.indexes.iter().filter(|i| is_building(i)) {
            tracing::warn!(table = %t.def.name, index = %index.name, "dropping a unique index whose build did not finish");
            db.drop_index_of(t.def.id, |i| i.id == index.id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use crate::{Db, Options};

    fn rows(ids: std::ops::Range<i64>, u: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("u", DataType::Int64, true),
        ]));
        let n = ids.end - ids.start;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| u + i))),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn unique_options() -> Vec<(String, String)> {
        vec![(super::UNIQUE.to_string(), "true".to_string())]
    }

    /// A build cut short (here: published `building` and never filled, as
    /// a crash would leave it) must not survive a reopen: its entries lack
    /// the rows it never reached, so it would let duplicates in.
    #[test]
    fn an_unfinished_unique_index_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            background_work: false,
            ..Options::default()
        };
        let db = Db::open(dir.path(), options.clone()).unwrap();
        let def = db
            .create_table("t", rows(0..1, 0).schema(), &["id"])
            .unwrap();
        let mut txn = db.begin();
        txn.put("t", &rows(0..10, 0)).unwrap();
        txn.commit().unwrap();
        let start = db.inner.current().table("t").unwrap().clone();
        let mut options_building = unique_options();
        options_building.push((super::BUILDING.to_string(), "true".to_string()));
        let index = crate::db::new_index(&def, "t_u", "btree", &["u"], options_building).unwrap();
        super::create_entries(&db, &def, &index).unwrap();
        db.build_index(&start, index.clone()).unwrap();
        assert_eq!(db.inner.current().tables.len(), 2);
        drop(db);

        let db = Db::open(dir.path(), options).unwrap();
        assert!(db.table("t").unwrap().indexes.is_empty());
        assert_eq!(
            db.inner.current().tables.len(),
            1,
            "its entries are dropped too"
        );
        // The value is free again, and a finished index can be created.
        let mut txn = db.begin();
        txn.put("t", &rows(10..11, 3)).unwrap();
        txn.commit().unwrap();
        let err = db
            .add_index("t", "t_u", "btree", &["u"], unique_options())
            .unwrap_err();
        assert!(
            matches!(err, crate::Error::UniqueViolation { creating: true, .. }),
            "{err}"
        );
        assert!(db.table("t").unwrap().indexes.is_empty());
        assert_eq!(db.inner.current().tables.len(), 1);
        let mut txn = db.begin();
        txn.put("t", &rows(10..11, 30)).unwrap();
        txn.commit().unwrap();
        db.add_index("t", "t_u", "btree", &["u"], unique_options())
            .unwrap();
        let mut txn = db.begin();
        let err = txn.put("t", &rows(11..12, 30)).unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::UniqueViolation {
                    creating: false,
                    ..
                }
            ),
            "{err}"
        );
    }
}
