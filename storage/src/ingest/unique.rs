//! A bulk insert's duplicate keys: a key given twice, or one the table
//! already holds, fails the load before anything is installed.
//!
//! Three checks, cheapest first. Within a run, equal keys are neighbours
//! once sorted. Across runs and against the table, the runs' keys are
//! merged in key order and each is looked up in the table at a snapshot
//! taken once every run is written, holding no lock. Only the rows
//! committed after that snapshot are left: the install, under the commit
//! lock, looks each of those keys up in the runs (bloom filters answer
//! most), so commits wait for work in proportion to what they wrote, not
//! to the size of the load.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{Array, ArrayRef, RecordBatch};

use super::WrittenRun;
use crate::db::{Inner, TableState};
use crate::error::{Error, Result};
use crate::segment::{ChunkCache, SegmentFile};
use crate::txn::{row_from_segment, Snapshot};
use crate::visibility::holds_key;

pub(super) fn duplicate(table: &TableState, row: RecordBatch) -> Error {
    Error::DuplicateKey {
        table: table.def.name.clone(),
        row: Box::new(row),
    }
}

/// A row whose key an earlier row of the same run also has.
pub(super) fn repeated_key(keys: &[Vec<u8>]) -> Option<usize> {
    if keys.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
    order
        .windows(2)
        .find(|w| keys[w[0]] == keys[w[1]])
        .map(|w| w[1])
}

/// What [`check_written`] found clean: the runs, opened, and the snapshot
/// they were checked at, held until the install so that the rows committed
/// after it can be told apart.
pub(super) struct Checked {
    snapshot: Snapshot,
    runs: Vec<SegmentFile>,
}

/// Checks the written runs against each other and against the table at a
/// snapshot taken now.
pub(super) fn check_written(
    inner: &Arc<Inner>,
    loaded: &TableState,
    written: &[WrittenRun],
) -> Result<Checked> {
    let snapshot = Snapshot::new(inner);
    let runs = open_runs(inner, written)?;
    let table = snapshot.state().table(&loaded.def.name)?.clone();
    let table_has_rows =
        table.segments().next().is_some() || table.memtables().any(|m| !m.is_empty());
    let cache = &inner.cache;
    let mut merged = RunMerge::new(cache, &runs)?;
    let mut previous: Option<Vec<u8>> = None;
    while let Some(at) = merged.next()? {
        let repeated = previous.as_deref() == Some(at.key.as_slice());
        if repeated || (table_has_rows && holds_key(cache, &table, snapshot.sequence(), &at.key)?) {
            return Err(run_row_duplicate(
                cache,
                loaded,
                &runs[at.run],
                at.group,
                at.row,
            ));
        }
        previous = Some(at.key);
    }
    Ok(Checked { snapshot, runs })
}

/// Fails if a row committed after the check's snapshot and still live at
/// `last_seq` has a key one of the runs holds.
pub(super) fn check_committed_since(
    inner: &Inner,
    loaded: &TableState,
    table: &TableState,
    checked: &Checked,
    last_seq: u64,
) -> Result<()> {
    let since = checked.snapshot.sequence();
    let cache = &inner.cache;
    for key in keys_committed_after(cache, table, &checked.snapshot, since)? {
        if !holds_key(cache, table, last_seq, &key)? {
            continue;
        }
        for run in &checked.runs {
            if let Some((group, row)) = run.find(cache, &key, u64::MAX)? {
                return Err(run_row_duplicate(cache, loaded, run, group, row));
            }
        }
    }
    Ok(())
}

/// Keys of the table's versions with a sequence above `since`: those in
/// the memtables, and those in segments the snapshot did not have (a
/// flush or compaction since).
fn keys_committed_after(
    cache: &ChunkCache,
    table: &TableState,
    checked: &Snapshot,
    since: u64,
) -> Result<Vec<Vec<u8>>> {
    let mut keys: Vec<Vec<u8>> = table
        .memtables()
        .filter(|m| m.max_seq() > since)
        .flat_map(|m| m.keys_after(since))
        .collect();
    let known: HashSet<u64> = checked
        .state()
        .tables
        .get(&table.def.id)
        .map(|t| t.segments().map(|s| s.id).collect())
        .unwrap_or_default();
    for segment in table.segments() {
        if known.contains(&segment.id) || segment.summary().max_seq <= since {
            continue;
        }
        for group in 0..segment.row_groups().len() {
            let keys_array = segment.column(cache, group, 0)?;
            let seqs_array = segment.column(cache, group, 1)?;
            let (group_keys, seqs) = (
                keys_array.as_binary::<i32>(),
                seqs_array.as_primitive::<UInt64Type>(),
            );
            keys.extend(
                (0..group_keys.len())
                    .filter(|&i| seqs.value(i) > since)
                    .map(|i| group_keys.value(i).to_vec()),
            );
        }
    }
    Ok(keys)
}

fn open_runs(inner: &Inner, written: &[WrittenRun]) -> Result<Vec<SegmentFile>> {
    written
        .iter()
        .map(|run| SegmentFile::open(run.path.clone(), run.id, 0, inner.cache.clone()))
        .collect()
}

fn run_row_duplicate(
    cache: &ChunkCache,
    loaded: &TableState,
    run: &SegmentFile,
    group: usize,
    row: usize,
) -> Error {
    match row_from_segment(cache, loaded, run, group, row) {
        Ok(Some(batch)) => duplicate(loaded, batch),
        Ok(None) => duplicate(loaded, RecordBatch::new_empty(loaded.def.schema.clone())),
        Err(e) => e,
    }
}

/// A key of a run, where it is.
struct RunKey {
    key: Vec<u8>,
    run: usize,
    group: usize,
    row: usize,
}

/// Every run's keys in key order, reading one row group of each at a time.
struct RunMerge<'a> {
    cache: &'a ChunkCache,
    runs: &'a [SegmentFile],
    /// Per run: (row group, its keys, next row).
    cursors: Vec<(usize, Option<ArrayRef>, usize)>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
}

impl<'a> RunMerge<'a> {
    fn new(cache: &'a ChunkCache, runs: &'a [SegmentFile]) -> Result<RunMerge<'a>> {
        let mut merge = RunMerge {
            cache,
            runs,
            cursors: vec![(0, None, 0); runs.len()],
            heap: BinaryHeap::new(),
        };
        for run in 0..runs.len() {
            merge.advance(run)?;
        }
        Ok(merge)
    }

    /// Pushes run `run`'s next key, loading its next row group when needed.
    fn advance(&mut self, run: usize) -> Result<()> {
        let groups = self.runs[run].row_groups().len();
        loop {
            let (group, keys, row) = &mut self.cursors[run];
            if let Some(array) = keys {
                let binary = array.as_binary::<i32>();
                if *row < binary.len() {
                    self.heap.push(Reverse((binary.value(*row).to_vec(), run)));
                    return Ok(());
                }
                *group += 1;
            }
            if *group >= groups {
                return Ok(());
            }
            *keys = Some(self.runs[run].column(self.cache, *group, 0)?);
            *row = 0;
        }
    }

    fn next(&mut self) -> Result<Option<RunKey>> {
        let Some(Reverse((key, run))) = self.heap.pop() else {
            return Ok(None);
        };
        let (group, _, row) = self.cursors[run];
        self.cursors[run].2 += 1;
        self.advance(run)?;
        Ok(Some(RunKey {
            key,
            run,
            group,
            row,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use crate::{Db, Error, Options};

    fn keys(range: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from_iter_values(range)) as ArrayRef;
        RecordBatch::try_new(schema, vec![column]).unwrap()
    }

    /// The window the lock-free check leaves open: a key committed after
    /// the check's snapshot and before the install, found by the install
    /// whether it is still in a memtable or already flushed.
    #[test]
    fn a_key_committed_after_the_check_fails_the_install() {
        for flushed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let options = Options {
                segment_max_rows: 40,
                background_work: false,
                ..Options::default()
            };
            let db = Db::open(dir.path(), options).unwrap();
            let schema = keys(0..0).schema();
            db.create_table("t", schema, &["k"]).unwrap();
            let mut load = db.bulk_insert("t").unwrap();
            load.write(&keys(0..100)).unwrap();
            load.seal().unwrap();
            load.wait_for_sealing().unwrap();
            let checked = super::check_written(&load.inner, &load.table, &load.written).unwrap();

            let mut txn = db.begin();
            txn.put("t", &keys(200..201)).unwrap();
            txn.commit().unwrap();
            let mut txn = db.begin();
            txn.put("t", &keys(70..71)).unwrap();
            txn.commit().unwrap();
            if flushed {
                db.flush().unwrap();
            }
            let err =
                super::super::install(&load.inner, &load.table, &mut load.written, Some(&checked))
                    .unwrap_err();
            let Error::DuplicateKey { row, .. } = err else {
                panic!("{err}")
            };
            assert_eq!(row.as_ref(), &keys(70..71));
        }
    }
}
