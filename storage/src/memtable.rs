//! In-memory table versions, ordered by (key ascending, sequence descending).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt8Type;
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, UInt64Array, UInt8Array};
use arrow_schema::SchemaRef;
use basalt_formats::segment::OP_DELETE;
use crossbeam_skiplist::SkipMap;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemKey {
    /// The first 8 key bytes, big-endian, zero-padded: orders most pairs of
    /// keys with one integer comparison instead of a memcmp call.
    prefix: u64,
    pub key: Vec<u8>,
    pub seq: u64,
}

impl MemKey {
    pub fn new(key: Vec<u8>, seq: u64) -> MemKey {
        let mut head = [0u8; 8];
        let n = key.len().min(8);
        head[..n].copy_from_slice(&key[..n]);
        MemKey {
            prefix: u64::from_be_bytes(head),
            key,
            seq,
        }
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key.cmp(&other.key))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where a WAL batch's table columns begin, after `_key` and `_op`.
pub(crate) const TABLE_COLUMNS_AT: usize = 2;

/// A row of a WAL batch (`_key`, `_op`, table columns).
#[derive(Clone)]
pub(crate) struct RowRef {
    pub batch: Arc<RecordBatch>,
    pub row: u32,
}

impl RowRef {
    pub fn is_delete(&self) -> bool {
        self.batch
            .column(1)
            .as_primitive::<UInt8Type>()
            .value(self.row as usize)
            == OP_DELETE
    }
}

pub(crate) struct Memtable {
    map: SkipMap<MemKey, RowRef>,
    bytes: AtomicUsize,
    min_seq: AtomicU64,
    max_seq: AtomicU64,
}

/// Versions visible to a snapshot, newest per key, as a sorted run in
/// segment layout (`_key`, `_seq`, `_op`, projected columns).
pub(crate) fn empty_like(storage_schema: &SchemaRef) -> RecordBatch {
    RecordBatch::new_empty(storage_schema.clone())
}

impl Memtable {
    pub fn new() -> Self {
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            min_seq: AtomicU64::new(u64::MAX),
            max_seq: AtomicU64::new(0),
        }
    }

    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn min_seq(&self) -> Option<u64> {
        let v = self.min_seq.load(AtomicOrdering::Acquire);
        (v != u64::MAX).then_some(v)
    }

    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(AtomicOrdering::Acquire)
    }

    /// Inserts every row of a WAL batch at `seq`.
    pub fn insert_batch(&self, batch: Arc<RecordBatch>, seq: u64) {
        let keys = batch.column(0).as_binary::<i32>();
        let per_row_overhead = 64;
        let bytes =
            batch.get_array_memory_size() + keys.len() * per_row_overhead + keys.value_data().len();
        for row in 0..batch.num_rows() {
            let key = MemKey::new(keys.value(row).to_vec(), seq);
            self.map.insert(
                key,
                RowRef {
                    batch: batch.clone(),
                    row: row as u32,
                },
            );
        }
        self.bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
        self.min_seq.fetch_min(seq, AtomicOrdering::AcqRel);
        self.max_seq.fetch_max(seq, AtomicOrdering::AcqRel);
    }

    /// The newest version of `key` at or below `snapshot_seq`.
    /// The newest version of `key` at or below `snapshot_seq`, with its sequence.
    pub fn get(&self, key: &[u8], snapshot_seq: u64) -> Option<(u64, RowRef)> {
        let from = MemKey::new(key.to_vec(), snapshot_seq);
        let entry = self.map.lower_bound(std::ops::Bound::Included(&from))?;
        (entry.key().key == key).then(|| (entry.key().seq, entry.value().clone()))
    }

    /// Keys of the versions with a sequence above `seq`.
    pub fn keys_after(&self, seq: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.map
            .iter()
            .filter(move |e| e.key().seq > seq)
            .map(|e| e.key().key.clone())
    }

    /// The sequence of the newest version of `key`, visible or not.
    pub fn latest_seq(&self, key: &[u8]) -> Option<u64> {
        let from = MemKey::new(key.to_vec(), u64::MAX);
        let entry = self.map.lower_bound(std::ops::Bound::Included(&from))?;
        (entry.key().key == key).then(|| entry.key().seq)
    }

    /// Every version (for flush), or only the newest visible per key (for reads),
    /// as a run in segment layout with the given table columns.
    pub fn to_run(
        &self,
        snapshot_seq: Option<u64>,
        columns: &[usize],
        storage_schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        self.entries_to_run(
            self.map.iter(),
            snapshot_seq,
            columns,
            storage_schema,
            |_, _, _| Ok(true),
        )
    }

    /// The newest versions `snapshot_seq` sees that `keep` accepts, as a
    /// run: every entry is still visited, but only the kept rows are
    /// gathered.
    pub fn to_run_where(
        &self,
        snapshot_seq: u64,
        columns: &[usize],
        storage_schema: &SchemaRef,
        keep: impl FnMut(&[u8], u64, &RowRef) -> Result<bool>,
    ) -> Result<RecordBatch> {
        self.entries_to_run(
            self.map.iter(),
            Some(snapshot_seq),
            columns,
            storage_schema,
            keep,
        )
    }

    /// As [`Memtable::to_run`], for the versions of one key only: a point
    /// lookup reads O(log n) entries instead of the whole memtable.
    pub fn to_run_for_key(
        &self,
        key: &[u8],
        snapshot_seq: Option<u64>,
        columns: &[usize],
        storage_schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let newest = MemKey::new(key.to_vec(), u64::MAX);
        let oldest = MemKey::new(key.to_vec(), 0);
        self.entries_to_run(
            self.map.range(newest..=oldest),
            snapshot_seq,
            columns,
            storage_schema,
            |_, _, _| Ok(true),
        )
    }

    fn entries_to_run<'a>(
        &'a self,
        entries: impl Iterator<Item = crossbeam_skiplist::map::Entry<'a, MemKey, RowRef>>,
        snapshot_seq: Option<u64>,
        columns: &[usize],
        storage_schema: &SchemaRef,
        mut keep: impl FnMut(&[u8], u64, &RowRef) -> Result<bool>,
    ) -> Result<RecordBatch> {
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut seqs = Vec::new();
        let mut picks = Vec::new();
        let entries: Vec<_> = entries.collect();
        let mut last_key: Option<&[u8]> = None;
        for entry in &entries {
            let k = entry.key();
            if let Some(limit) = snapshot_seq {
                if k.seq > limit || last_key == Some(k.key.as_slice()) {
                    continue;
                }
            }
            last_key = Some(k.key.as_slice());
            if !keep(&k.key, k.seq, entry.value())? {
                continue;
            }
            keys.push(k.key.as_slice());
            seqs.push(k.seq);
            picks.push(entry.value().clone());
        }
        rows_to_run(&keys, &seqs, &picks, columns, storage_schema)
    }
}

/// Rows picked from batches, gathered into new columns in pick order.
/// A memtable of single-row commits picks from as many batches as rows.
#[derive(Default)]
pub(crate) struct BatchRows {
    batches: Vec<Arc<RecordBatch>>,
    /// Each batch's slot, by its address (held alive in `batches`).
    slots: HashMap<usize, usize>,
    picks: Vec<(usize, usize)>,
}

impl BatchRows {
    pub fn push(&mut self, batch: &Arc<RecordBatch>, row: usize) {
        // Picks arrive in runs from the same batch: try the newest first.
        let newest = self.batches.len().checked_sub(1);
        let slot = match newest {
            Some(slot) if Arc::ptr_eq(&self.batches[slot], batch) => slot,
            _ => *self
                .slots
                .entry(Arc::as_ptr(batch) as usize)
                .or_insert_with(|| {
                    self.batches.push(batch.clone());
                    self.batches.len() - 1
                }),
        };
        self.picks.push((slot, row));
    }

    pub fn len(&self) -> usize {
        self.picks.len()
    }

    /// Column `column` of every picked row.
    pub fn gather(&self, column: usize) -> Result<ArrayRef> {
        let sources: Vec<&dyn Array> = self
            .batches
            .iter()
            .map(|b| b.column(column).as_ref())
            .collect();
        Ok(arrow_select::interleave::interleave(&sources, &self.picks)?)
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.slots.clear();
        self.picks.clear();
    }
}

/// Builds a run in segment layout from WAL-batch rows.
pub(crate) fn rows_to_run(
    keys: &[&[u8]],
    seqs: &[u64],
    rows: &[RowRef],
    columns: &[usize],
    storage_schema: &SchemaRef,
) -> Result<RecordBatch> {
    if rows.is_empty() {
        return Ok(empty_like(storage_schema));
    }
    let mut picked = BatchRows::default();
    for r in rows {
        picked.push(&r.batch, r.row as usize);
    }
    let ops: Vec<u8> = rows
        .iter()
        .map(|r| {
            r.batch
                .column(1)
                .as_primitive::<UInt8Type>()
                .value(r.row as usize)
        })
        .collect();
    let mut out: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter_values(keys.iter())),
        Arc::new(UInt64Array::from(seqs.to_vec())),
        Arc::new(UInt8Array::from(ops)),
    ];
    for &c in columns {
        out.push(picked.gather(c + TABLE_COLUMNS_AT)?);
    }
    Ok(RecordBatch::try_new(storage_schema.clone(), out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};
    use basalt_formats::segment::{storage_schema, OP_PUT};
    use basalt_formats::wal::wal_batch_schema;

    fn table() -> Schema {
        Schema::new(vec![Field::new("v", DataType::Int64, true)])
    }

    fn wal_batch(rows: &[(&[u8], u8, i64)]) -> Arc<RecordBatch> {
        Arc::new(
            RecordBatch::try_new(
                wal_batch_schema(&table()),
                vec![
                    Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.1))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                ],
            )
            .unwrap(),
        )
    }

    #[test]
    fn picks_from_interleaved_batches_gather_in_pick_order() {
        let batches: Vec<_> = (0..3)
            .map(|b| wal_batch(&[(b"k", OP_PUT, b * 10), (b"k", OP_PUT, b * 10 + 1)]))
            .collect();
        let mut rows = BatchRows::default();
        for (batch, row) in [(2, 1), (0, 0), (2, 0), (1, 1), (0, 1), (0, 0)] {
            rows.push(&batches[batch], row);
        }
        let values = rows.gather(2).unwrap();
        let values = values.as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(values.values().to_vec(), vec![21, 0, 20, 11, 1, 0]);
        assert_eq!(rows.batches.len(), 3, "each batch is held once");
        rows.clear();
        rows.push(&batches[1], 0);
        assert_eq!(rows.gather(2).unwrap().len(), 1);
        assert_eq!(rows.batches.len(), 1);
    }

    #[test]
    fn newest_visible_version_wins() {
        let m = Memtable::new();
        m.insert_batch(wal_batch(&[(b"a", OP_PUT, 1), (b"b", OP_PUT, 2)]), 10);
        m.insert_batch(wal_batch(&[(b"a", OP_PUT, 3)]), 11);
        m.insert_batch(wal_batch(&[(b"b", OP_DELETE, 0)]), 12);
        assert_eq!(m.get(b"a", 10).unwrap().1.row, 0);
        assert!(!m.get(b"b", 11).unwrap().1.is_delete());
        assert!(m.get(b"b", 12).unwrap().1.is_delete());
        assert!(m.get(b"a", 9).is_none());
        assert!(m.get(b"c", 99).is_none());
        let schema = storage_schema(&table());
        let run = m.to_run(Some(11), &[0], &schema).unwrap();
        assert_eq!(run.num_rows(), 2);
        assert_eq!(
            run.column(3)
                .as_primitive::<arrow_array::types::Int64Type>()
                .values(),
            &[3, 2]
        );
        let all = m.to_run(None, &[0], &schema).unwrap();
        assert_eq!(all.num_rows(), 4);
        assert_eq!((m.min_seq(), m.max_seq()), (Some(10), 12));
    }
}
