//! Bulk loads: rows go straight into new segment files (formats/FORMAT.md,
//! "Segment files"), bypassing the WAL and the memtables, and all of a
//! load's segments are installed by one manifest edit, so a load appears
//! whole or not at all. A load killed midway leaves only unrecorded segment
//! files, which the next open deletes.
//!
//! Rows are buffered into runs of up to `segment_max_rows`. Each run is
//! sorted by key, keeps the last row given for a key, and is written as one
//! segment while the caller goes on producing the next run. Each run takes
//! its own commit sequence when it is sealed, later runs higher, so a key
//! given twice in one load resolves to the later row, and a loaded row
//! supersedes the versions committed before the run was sealed (an upsert).
//! Those sequences stay invisible until the install advances the visible
//! sequence past them under the state lock.
//!
//! A bulk *insert* ([`Db::bulk_insert`]) replaces nothing: a key given twice,
//! or one the table already holds, fails it (`unique.rs`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_array::{ArrayRef, BinaryArray, RecordBatch, UInt32Array, UInt64Array, UInt8Array};
use arrow_select::concat::concat_batches;
use arrow_select::take::take_record_batch;
use basalt_formats::manifest::Edit;
use basalt_formats::segment::OP_PUT;

use crate::db::{segment_def, Db, Inner, TableState};
use crate::error::{Error, Result};
use crate::segment::{segment_path, write_segment, SegmentFile};
use crate::txn::{check_columns, row_keys};

mod unique;

/// A segment file a load has written but not yet installed.
struct WrittenRun {
    id: u64,
    path: PathBuf,
    /// Ids of the indexes built beside it.
    indexed: Vec<u32>,
    min_key: Vec<u8>,
    max_key: Vec<u8>,
}

/// A bulk load into one table, in progress. Dropping it unfinished deletes
/// what it wrote.
pub struct BulkLoad {
    inner: Arc<Inner>,
    table: Arc<TableState>,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
    run_rows: usize,
    /// Runs being sorted and written, oldest first.
    sealing: VecDeque<JoinHandle<Result<Option<WrittenRun>>>>,
    /// How many runs may be written at once.
    writers: usize,
    written: Vec<WrittenRun>,
    rows: u64,
    /// Keys must be new: none given twice, none already in the table.
    unique: bool,
}

/// What a finished bulk load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    /// Rows given to the load.
    pub rows: u64,
    /// Segment files it added.
    pub segments: usize,
    /// The sequence at which its rows became visible.
    pub visible_seq: u64,
}

impl Db {
    /// Starts a bulk load into `table`; rows given to it are visible only
    /// after [`BulkLoad::finish`], all at once.
    pub fn bulk_load(&self, table: &str) -> Result<BulkLoad> {
        self.start_load(table, false)
    }

    /// As [`Db::bulk_load`], but the load inserts only: a key given twice,
    /// or one the table holds when the load is installed, fails
    /// [`BulkLoad::finish`] (or an earlier write) with
    /// [`Error::DuplicateKey`] and nothing is installed.
    pub fn bulk_insert(&self, table: &str) -> Result<BulkLoad> {
        self.start_load(table, true)
    }

    fn start_load(&self, table: &str, unique: bool) -> Result<BulkLoad> {
        self.inner.check_poisoned()?;
        let table = self.inner.current().table(table)?.clone();
        refuse_unique_indexes(&table.def)?;
        let unique = unique && !table.is_keyless();
        Ok(BulkLoad {
            inner: self.inner.clone(),
            table,
            buffered: Vec::new(),
            buffered_rows: 0,
            run_rows: self.inner.options.segment_max_rows,
            sealing: VecDeque::new(),
            writers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            written: Vec::new(),
            rows: 0,
            unique,
        })
    }
}

impl BulkLoad {
    /// Adds rows in the table's schema.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        check_columns(&self.table.def, batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.buffered_rows += batch.num_rows();
        self.buffered.push(batch.clone());
        if self.buffered_rows >= self.run_rows {
            self.seal()?;
        }
        Ok(())
    }

    /// Rows given so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Hands the buffered rows to a thread that sorts and writes them, as
    /// many at once as there are cores. The run's sequence is taken here, in
    /// input order, so a later run's rows supersede an earlier run's.
    fn seal(&mut self) -> Result<()> {
        let batches = std::mem::take(&mut self.buffered);
        self.buffered_rows = 0;
        if batches.is_empty() {
            return Ok(());
        }
        while self.sealing.len() >= self.writers {
            self.wait_for_oldest()?;
        }
        let seq = {
            let mut last_seq = self.inner.commit.lock();
            *last_seq += 1;
            *last_seq
        };
        let inner = self.inner.clone();
        let table = self.table.clone();
        let unique = self.unique;
        let handle = std::thread::Builder::new()
            .name("basalt-load".into())
            .spawn(move || write_run(&inner, &table, &batches, seq, unique))
            .map_err(|e| Error::io(&self.inner.seg_dir, e))?;
        self.sealing.push_back(handle);
        Ok(())
    }

    fn wait_for_oldest(&mut self) -> Result<()> {
        let Some(handle) = self.sealing.pop_front() else {
            return Ok(());
        };
        let written = handle
            .join()
            .map_err(|_| Error::InvalidArgument("a bulk-load thread panicked".into()))??;
        self.written.extend(written);
        Ok(())
    }

    /// Waits for every run being written; the first failure is returned
    /// after all have stopped, so none is left writing.
    fn wait_for_sealing(&mut self) -> Result<()> {
        let mut outcome = Ok(());
        while !self.sealing.is_empty() {
            let waited = self.wait_for_oldest();
            if outcome.is_ok() {
                outcome = waited;
            }
        }
        outcome
    }

    /// Writes the last run and installs every segment in one manifest edit.
    pub fn finish(mut self) -> Result<LoadSummary> {
        let sealed = self.seal();
        self.wait_for_sealing()?;
        sealed?;
        let checked = if self.unique {
            Some(unique::check_written(
                &self.inner,
                &self.table,
                &self.written,
            )?)
        } else {
            None
        };
        let segments = self.written.len();
        let visible_seq = install(
            &self.inner,
            &self.table,
            &mut self.written,
            checked.as_ref(),
        )?;
        Ok(LoadSummary {
            rows: self.rows,
            segments,
            visible_seq,
        })
    }
}

impl Drop for BulkLoad {
    fn drop(&mut self) {
        let _ = self.wait_for_sealing();
        for run in &self.written {
            let indexes = self
                .table
                .def
                .indexes
                .iter()
                .filter(|i| run.indexed.contains(&i.id))
                .map(|i| crate::index::file_path(&self.inner.seg_dir, run.id, i));
            for path in std::iter::once(run.path.clone()).chain(indexes) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not delete an abandoned load's file");
                }
            }
        }
    }
}

/// Sorts one run by key, keeps the last row of each key (or, for an
/// insert, fails on a key given twice) and writes the segment with the
/// run's sequence.
fn write_run(
    inner: &Inner,
    table: &TableState,
    batches: &[RecordBatch],
    seq: u64,
    unique: bool,
) -> Result<Option<WrittenRun>> {
    let batch = concat_batches(&table.def.schema, batches)?;
    let keys = row_keys(table, &batch)?;
    if unique {
        if let Some(row) = unique::repeated_key(&keys) {
            return Err(unique::duplicate(table, batch.slice(row, 1)));
        }
    }
    let order = key_order(&keys);
    let batch = match &order {
        Some(order) => take_record_batch(&batch, &UInt32Array::from(order.clone()))?,
        None => batch,
    };
    let sorted_keys: BinaryArray = match &order {
        Some(order) => order
            .iter()
            .map(|&i| Some(keys[i as usize].as_slice()))
            .collect(),
        None => keys.iter().map(|k| Some(k.as_slice())).collect(),
    };
    let last = batch.num_rows().wrapping_sub(1);
    let (Some(min_key), Some(max_key)) = (keys_at(&sorted_keys, 0), keys_at(&sorted_keys, last))
    else {
        return Ok(None);
    };
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(sorted_keys),
        Arc::new(UInt64Array::from(vec![seq; rows])),
        Arc::new(UInt8Array::from(vec![OP_PUT; rows])),
    ];
    columns.extend(batch.columns().iter().cloned());
    let run = RecordBatch::try_new(table.storage_schema.clone(), columns)?;
    let id = inner.next_file.fetch_add(1, Ordering::SeqCst);
    let path = write_segment(
        &inner.seg_dir,
        id,
        table.storage_schema.clone(),
        &run,
        inner.options.row_group_rows,
    )?;
    debug_assert_eq!(path, segment_path(&inner.seg_dir, id));
    let indexed = inner.index_builder().build_for_run(id, &table.def, &run)?;
    Ok(Some(WrittenRun {
        id,
        path,
        indexed,
        min_key,
        max_key,
    }))
}

fn keys_at(keys: &BinaryArray, i: usize) -> Option<Vec<u8>> {
    use arrow_array::Array;
    (i < keys.len()).then(|| keys.value(i).to_vec())
}

/// The row order that sorts `keys`, keeping only the last row given for
/// each key; `None` when they are already strictly ascending.
fn key_order(keys: &[Vec<u8>]) -> Option<Vec<u32>> {
    if keys.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    // Equal keys: the later row first, so it is the one kept.
    order.sort_unstable_by(|&a, &b| {
        keys[a as usize]
            .cmp(&keys[b as usize])
            .then_with(|| b.cmp(&a))
    });
    order.dedup_by(|later, earlier| keys[*later as usize] == keys[*earlier as usize]);
    Some(order)
}

/// Opens the written segments and makes them part of the table, in one
/// manifest edit and one state swap that also advances the visible
/// sequence past their rows. Returns that sequence.
/// Until the manifest edit is tried the files stay in `written`, for the
/// caller to delete on failure; from then on the manifest may name them.
/// An insert's runs were checked against the table at `checked`; the rows
/// committed since are checked here, under the commit lock.
fn install(
    inner: &Inner,
    loaded: &TableState,
    written: &mut Vec<WrittenRun>,
    checked: Option<&unique::Checked>,
) -> Result<u64> {
    let _no_flush_or_compaction = inner.work_lock.lock();
    // The manifest lock is taken before the table is looked up, so that a
    // DROP TABLE (or a schema change) cannot slip in between and have its
    // table brought back by this load's edits; and before the commit lock,
    // in the order ADD COLUMN takes them.
    let mut manifest = inner.manifest.lock();
    let last_seq = inner.commit.lock();
    inner.check_poisoned()?;
    let state = inner.current();
    let table = state
        .tables
        .get(&loaded.def.id)
        .ok_or_else(|| Error::TableNotFound(loaded.def.name.clone()))?;
    if table.def.schema_version != loaded.def.schema_version {
        return Err(Error::SchemaChanged(table.def.name.clone()));
    }
    refuse_unique_indexes(&table.def)?;
    if written.is_empty() {
        return Ok(*last_seq);
    }
    if let Some(checked) = checked {
        unique::check_committed_since(inner, loaded, table, checked, *last_seq)?;
    }
    let level = if is_empty(table) && disjoint(written) {
        1
    } else {
        0
    };
    let segments = written
        .iter()
        .map(|run| {
            let segment = SegmentFile::open(run.path.clone(), run.id, level, inner.cache.clone())?;
            crate::index::attach_built(&inner.seg_dir, &segment, &table.def, &run.indexed)?;
            // An index created while the load ran: its files are built
            // here, under the work lock its CREATE INDEX published under.
            let missing: Vec<_> = table
                .def
                .indexes
                .iter()
                .filter(|i| !run.indexed.contains(&i.id))
                .cloned()
                .collect();
            inner
                .index_builder()
                .build_for_segment(&segment, &table.def, &missing)?;
            Ok(Arc::new(segment))
        })
        .collect::<Result<Vec<_>>>()?;
    // Commits up to `last_seq` become visible with the load: they must be
    // durable first, as their own commit would have made them.
    if inner.options.synchronous_commit {
        inner
            .wal
            .sync_to(u64::MAX)
            .inspect_err(|e| inner.poison(e))?;
    }
    let table_id = table.def.id;
    let mut edits: Vec<Edit> = segments
        .iter()
        .map(|s| Edit::AddSegment(segment_def(table_id, s)))
        .collect();
    edits.extend(
        segments
            .iter()
            .flat_map(|s| crate::index::edits(table_id, s)),
    );
    edits.extend([
        Edit::NextRowId {
            table_id,
            next: table.next_row_id.load(Ordering::SeqCst),
        },
        Edit::LastSeq { seq: *last_seq },
        Edit::NextFileNumber {
            next: inner.next_file.load(Ordering::SeqCst),
        },
    ]);
    written.clear();
    inner.log_edits(&mut manifest, &edits)?;
    let visible = *last_seq;
    segments.iter().for_each(|s| s.set_visible_from(visible));
    let mut guard = inner.state.write();
    let mut next = (**guard).clone();
    let mut changed = (**table).clone();
    if level == 1 {
        changed.l1.extend(segments);
        changed
            .l1
            .sort_by(|a, b| a.summary().min_key.cmp(&b.summary().min_key));
    } else {
        changed.l0.extend(segments);
        changed
            .l0
            .sort_by_key(|s| std::cmp::Reverse(s.summary().max_seq));
    }
    changed.loaded_seq = visible;
    next.tables.insert(table_id, Arc::new(changed));
    *guard = Arc::new(next);
    inner.publish(visible);
    drop(guard);
    inner.request_work();
    Ok(visible)
}

/// No rows anywhere: the load's segments can go straight to level 1 when
/// their key ranges do not overlap.
fn is_empty(table: &TableState) -> bool {
    table.l0.is_empty() && table.l1.is_empty() && table.memtables().all(|m| m.is_empty())
}

fn disjoint(written: &[WrittenRun]) -> bool {
    let mut ranges: Vec<(&[u8], &[u8])> = written
        .iter()
        .map(|r| (r.min_key.as_slice(), r.max_key.as_slice()))
        .collect();
    ranges.sort();
    ranges.windows(2).all(|w| w[0].1 < w[1].0)
}

/// A bulk load writes segments without the entries a unique index keeps
/// (see `index::unique`), so it cannot load a table that has one.
fn refuse_unique_indexes(def: &basalt_formats::manifest::TableDef) -> Result<()> {
    match def.indexes.iter().find(|i| crate::index::unique::is_unique(i)) {
        Some(index) => Err(Error::InvalidArgument(format!(
            "table \"{}\" has unique index \"{}\": a bulk load cannot check it; insert the rows, or drop the index, load, and create it again",
            def.name, index.name
        ))),
        None => Ok(()),
    }
}
