//! Snapshots and transactions. A snapshot pins a sequence number and one
//! version of the memtables and segments; a transaction reads through its
//! snapshot plus its own buffered writes and commits them as one WAL record,
//! failing if another transaction committed a write to one of its keys after
//! its snapshot was taken (first committer wins).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use arrow_array::{new_null_array, Array, ArrayRef, BinaryArray, RecordBatch, UInt8Array};
use basalt_formats::frame::MAX_FRAME_LEN;
use basalt_formats::key::{encode_keys, row_id_key};
use basalt_formats::manifest::TableDef;
use basalt_formats::segment::{OP_DELETE, OP_PUT};
use basalt_formats::wal::{encode_wal_record, TableWrite, WalRecord};
use parking_lot::Mutex;

use crate::db::{Db, DbState, Inner, TableState};
use crate::error::{Error, Result};
use crate::index::btree::SegmentRows;
use crate::index::search::{search_in, IndexSearch};
use crate::memtable::{rows_to_run, RowRef};
use crate::scan::{output_schema, run_schema_for, ScanContext, ScanOptions, ScanPlan, Source};
use crate::segment::{ChunkCache, SegmentFile};
use crate::vector::RowFilter;
use crate::visibility::{newest_in_segments, SnapshotView};

/// A consistent, read-only view of the database at one commit sequence.
pub struct Snapshot {
    inner: Arc<Inner>,
    state: Arc<DbState>,
    seq: u64,
}

impl Snapshot {
    pub(crate) fn new(inner: &Arc<Inner>) -> Snapshot {
        // The sequence is taken under the state lock: a bulk load installs
        // its segments and advances the visible sequence under the write
        // lock, so a snapshot sees the whole load or none of it.
        let state = inner.state.read();
        let seq = inner.register_snapshot();
        Snapshot {
            state: state.clone(),
            inner: inner.clone(),
            seq,
        }
    }

    pub(crate) fn state(&self) -> &DbState {
        &self.state
    }

    /// Scans table `t` of this snapshot's state, reached by id.
    pub(crate) fn scan_table(&self, t: &TableState, options: &ScanOptions) -> Result<ScanPlan> {
        plan_scan(&self.inner.cache, t, self.seq, options, None)
    }

    pub(crate) fn state_arc(&self) -> Arc<DbState> {
        self.state.clone()
    }

    pub fn sequence(&self) -> u64 {
        self.seq
    }

    pub fn table(&self, name: &str) -> Result<TableDef> {
        Ok(self.state.table(name)?.def.clone())
    }

    pub fn tables(&self) -> Vec<TableDef> {
        self.state.visible_tables().map(|t| t.def.clone()).collect()
    }

    pub fn scan(&self, table: &str, options: &ScanOptions) -> Result<ScanPlan> {
        plan_scan(
            &self.inner.cache,
            self.state.table(table)?,
            self.seq,
            options,
            None,
        )
    }

    /// Answers an index kind's `query` over `table` (a [`crate::VectorQuery`]
    /// finds the `k` rows nearest its vector) among the rows `filter` admits.
    pub fn search<Q: IndexSearch>(
        &self,
        table: &str,
        query: &Q,
        filter: Option<RowFilter<'_>>,
    ) -> Result<Q::Hits> {
        let t = self.state.table(table)?;
        search_in(&self.inner.cache, t, self.seq, None, query, filter)
    }

    /// The row with encoded key `key`, as a one-row batch of the table's schema.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<RecordBatch>> {
        get_row(
            &self.inner.cache,
            self.state.table(table)?,
            self.seq,
            key,
            None,
        )
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.inner.release_snapshot(self.seq);
    }
}

/// A transaction's buffered writes to one table.
pub(crate) struct Pending {
    table: Arc<TableState>,
    /// Writes in WAL batch layout, in the order made: a later row overrides
    /// an earlier one with the same key, in the memtable and in WAL replay
    /// alike, so a commit logs them as they are.
    batches: Vec<Arc<RecordBatch>>,
    /// Newest row per key, built when the transaction reads its own writes.
    index: Mutex<Option<Arc<RowIndex>>>,
}

type RowIndex = BTreeMap<Vec<u8>, RowRef>;

impl Pending {
    fn new(table: Arc<TableState>) -> Pending {
        Pending {
            table,
            batches: Vec::new(),
            index: Mutex::new(None),
        }
    }

    fn push(&mut self, batch: RecordBatch) {
        // An UPDATE that keeps its keys deletes none: logging its empty
        // batch cost a concatenation per commit.
        if batch.num_rows() == 0 {
            return;
        }
        let batch = Arc::new(owning_only_its_rows(batch));
        // Kept up to date rather than rebuilt: a unique index reads its
        // entries after every write, and a rebuild per statement made a
        // transaction of many small writes quadratic.
        if let Some(index) = self.index.get_mut() {
            index_rows(Arc::make_mut(index), &batch);
        }
        self.batches.push(batch);
    }

    pub(crate) fn index(&self) -> Arc<RowIndex> {
        let mut index = self.index.lock();
        index
            .get_or_insert_with(|| {
                let mut rows = BTreeMap::new();
                for batch in &self.batches {
                    index_rows(&mut rows, batch);
                }
                Arc::new(rows)
            })
            .clone()
    }

    /// Every key written, possibly more than once.
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.batches
            .iter()
            .flat_map(|b| b.column(0).as_binary::<i32>().iter().flatten())
    }

    pub(crate) fn to_run(
        &self,
        needed: &[usize],
        run_schema: &arrow_schema::SchemaRef,
    ) -> Result<RecordBatch> {
        let index = self.index();
        let keys: Vec<&[u8]> = index.keys().map(|k| k.as_slice()).collect();
        let rows: Vec<RowRef> = index.values().cloned().collect();
        rows_to_run(
            &keys,
            &vec![u64::MAX; keys.len()],
            &rows,
            needed,
            run_schema,
        )
    }

    fn to_wal_batch(&self) -> Result<RecordBatch> {
        match self.batches.as_slice() {
            [only] => Ok(only.as_ref().clone()),
            many => Ok(arrow_select::concat::concat_batches(
                &self.table.wal_schema,
                many.iter().map(|b| b.as_ref()),
            )?),
        }
    }
}

/// Adds `batch`'s rows to `rows`, later rows overriding earlier ones.
fn index_rows(rows: &mut RowIndex, batch: &Arc<RecordBatch>) {
    let keys = batch.column(0).as_binary::<i32>();
    for row in 0..batch.num_rows() {
        rows.insert(
            keys.value(row).to_vec(),
            RowRef {
                batch: batch.clone(),
                row: row as u32,
            },
        );
    }
}

/// `batch`, with any column that is a slice of much larger buffers (a row
/// read back from a segment chunk, kept by an UPDATE) copied out: the
/// memtable would otherwise keep the whole chunk alive, and count it
/// against its size.
fn owning_only_its_rows(batch: RecordBatch) -> RecordBatch {
    const SLACK: usize = 16 * 1024;
    /// Batches this small are copied whole: cheaper than measuring which
    /// columns pin more than their rows.
    const SMALL: usize = 8;
    let rows = batch.num_rows();
    if batch.get_array_memory_size() <= SLACK + rows * 256 {
        return batch;
    }
    let pinning = |column: &ArrayRef| {
        if rows <= SMALL {
            return true;
        }
        let held = column.get_buffer_memory_size();
        let used = column.to_data().get_slice_memory_size().unwrap_or(held);
        held > SLACK + 2 * used
    };
    if !batch.columns().iter().any(pinning) {
        return batch;
    }
    let all_rows = arrow_array::UInt32Array::from_iter_values(0..rows as u32);
    let columns: Option<Vec<ArrayRef>> = batch
        .columns()
        .iter()
        .map(|c| match pinning(c) {
            true => arrow_select::take::take(c, &all_rows, None).ok(),
            false => Some(c.clone()),
        })
        .collect();
    match columns.map(|c| RecordBatch::try_new(batch.schema(), c)) {
        Some(Ok(compact)) => compact,
        _ => batch,
    }
}

/// A unit of atomic writes under snapshot isolation.
pub struct Transaction {
    snapshot: Snapshot,
    pending: BTreeMap<u32, Pending>,
    /// Bytes of the rows in `pending`, bounded by `max_transaction_bytes`.
    pending_bytes: usize,
}

impl Db {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(&self.inner)
    }

    pub fn begin(&self) -> Transaction {
        Transaction {
            snapshot: Snapshot::new(&self.inner),
            pending: BTreeMap::new(),
            pending_bytes: 0,
        }
    }
}

impl Transaction {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether [`Transaction::commit`] will wait for an fdatasync: it has
    /// writes and the database commits synchronously.
    pub fn waits_for_disk(&self) -> bool {
        !self.pending.is_empty() && self.snapshot.inner.options.synchronous_commit
    }

    fn pending_for(&mut self, table: &str) -> Result<&mut Pending> {
        let t = self.snapshot.state.table(table)?.clone();
        Ok(self
            .pending
            .entry(t.def.id)
            .or_insert_with(|| Pending::new(t)))
    }

    /// Inserts or replaces (by primary key) the rows of `batch`, whose columns
    /// are the table's, in order.
    pub fn put(&mut self, table: &str, batch: &RecordBatch) -> Result<()> {
        let pending = self.pending_for(table)?;
        let t = pending.table.clone();
        check_columns(&t.def, batch)?;
        let keys = row_keys(&t, batch)?;
        crate::index::unique::on_put(self, &t, batch, &keys)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.write_puts(&t, &keys, batch)
    }

    /// Adds a batch of WAL rows to the table's pending writes, within the
    /// transaction's byte bound.
    fn buffer(&mut self, table_id: u32, batch: RecordBatch) -> Result<()> {
        let bytes: usize = batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        let limit = self.snapshot.inner.options.max_transaction_bytes;
        if self.pending_bytes.saturating_add(bytes) > limit {
            return Err(Error::TransactionTooLarge { limit });
        }
        self.pending_bytes += bytes;
        if let Some(pending) = self.pending.get_mut(&table_id) {
            pending.push(batch);
        }
        Ok(())
    }

    /// Deletes the rows whose primary key is in `keys` (the key columns, in
    /// key order). Keys that do not exist are ignored.
    pub fn delete(&mut self, table: &str, keys: &RecordBatch) -> Result<()> {
        let def = self.snapshot.state.table(table)?.def.clone();
        if keys.num_columns() != def.key_columns.len() || def.key_columns.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "table \"{table}\" has {} key columns, {} given",
                def.key_columns.len(),
                keys.num_columns()
            )));
        }
        for (given, &k) in keys.columns().iter().zip(&def.key_columns) {
            let field = def.schema.field(k as usize);
            if given.data_type() != field.data_type() {
                return Err(type_mismatch(
                    field.name(),
                    field.data_type(),
                    given.data_type(),
                ));
            }
        }
        let encoded = encode_keys(keys.columns(), keys.num_rows()).map_err(|_| Error::NullKey)?;
        self.delete_keys(table, encoded)
    }

    /// Deletes rows by encoded key (as returned by a scan `with_key`).
    pub fn delete_keys(&mut self, table: &str, keys: Vec<Vec<u8>>) -> Result<()> {
        let pending = self.pending_for(table)?;
        // An UPDATE that keeps its keys deletes none: building its empty
        // batch of null columns was a tenth of a point UPDATE.
        if keys.is_empty() {
            return Ok(());
        }
        let t = pending.table.clone();
        crate::index::unique::on_delete(self, &t, &keys)?;
        self.write_deletes(&t, &keys)
    }

    /// Buffers tombstones for `keys` of table `t`.
    pub(crate) fn write_deletes(&mut self, t: &Arc<TableState>, keys: &[Vec<u8>]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let n = keys.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(keys.iter())),
            Arc::new(UInt8Array::from(vec![OP_DELETE; n])),
        ];
        columns.extend(
            t.def
                .schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), n)),
        );
        let batch = RecordBatch::try_new(t.wal_schema.clone(), columns)?;
        self.pending
            .entry(t.def.id)
            .or_insert_with(|| Pending::new(t.clone()));
        self.buffer(t.def.id, batch)
    }

    /// Buffers `batch` (the table's columns) as puts under the given keys.
    pub(crate) fn write_puts(
        &mut self,
        t: &Arc<TableState>,
        keys: &[Vec<u8>],
        batch: &RecordBatch,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(keys.iter())),
            Arc::new(UInt8Array::from(vec![OP_PUT; keys.len()])),
        ];
        columns.extend(batch.columns().iter().cloned());
        let batch = RecordBatch::try_new(t.wal_schema.clone(), columns)?;
        self.pending
            .entry(t.def.id)
            .or_insert_with(|| Pending::new(t.clone()));
        self.buffer(t.def.id, batch)
    }

    /// The row of `t` with encoded key `key`, as this transaction sees it.
    pub(crate) fn read_row(&self, t: &TableState, key: &[u8]) -> Result<Option<RecordBatch>> {
        get_row(
            &self.snapshot.inner.cache,
            t,
            self.snapshot.seq,
            key,
            self.pending.get(&t.def.id),
        )
    }

    /// Scans the snapshot with this transaction's own writes applied.
    pub fn scan(&self, table: &str, options: &ScanOptions) -> Result<ScanPlan> {
        let t = self.snapshot.state.table(table)?;
        plan_scan(
            &self.snapshot.inner.cache,
            t,
            self.snapshot.seq,
            options,
            self.pending.get(&t.def.id),
        )
    }

    /// As [`Snapshot::search`], with this transaction's own writes.
    pub fn search<Q: IndexSearch>(
        &self,
        table: &str,
        query: &Q,
        filter: Option<RowFilter<'_>>,
    ) -> Result<Q::Hits> {
        let t = self.snapshot.state.table(table)?;
        search_in(
            &self.snapshot.inner.cache,
            t,
            self.snapshot.seq,
            self.pending.get(&t.def.id),
            query,
            filter,
        )
    }

    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<RecordBatch>> {
        let t = self.snapshot.state.table(table)?;
        get_row(
            &self.snapshot.inner.cache,
            t,
            self.snapshot.seq,
            key,
            self.pending.get(&t.def.id),
        )
    }

    /// Makes the writes durable (per `synchronous_commit`) and visible; returns
    /// the commit's sequence number.
    pub fn commit(self) -> Result<u64> {
        self.commit_unsynced()?.wait()
    }

    /// Whether committing now would first wait for background flushes or
    /// compactions to make room (see [`Transaction::commit_unsynced`]).
    pub fn would_stall(&self) -> bool {
        let ids: Vec<u32> = self.pending.keys().copied().collect();
        self.snapshot.inner.is_behind(&ids)
    }

    /// Logs and applies the writes, leaving the wait for the disk (and so
    /// their visibility) to [`Commit::wait`] or [`Commit::durable`]. It still
    /// blocks while background work must make room
    /// ([`Transaction::would_stall`]), and briefly when the WAL rotates.
    pub fn commit_unsynced(self) -> Result<Commit> {
        if self.pending.is_empty() {
            return Ok(Commit(CommitState::Done(self.snapshot.seq)));
        }
        let inner = self.snapshot.inner.clone();
        let ids: Vec<u32> = self.pending.keys().copied().collect();
        inner.wait_for_room(&ids)?;
        let tables = self
            .pending
            .values()
            .filter(|p| !p.batches.is_empty())
            .map(|p| {
                Ok(TableWrite {
                    table_id: p.table.def.id,
                    schema_version: p.table.def.schema_version,
                    batch: p.to_wal_batch()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if tables.is_empty() {
            return Ok(Commit(CommitState::Done(self.snapshot.seq)));
        }
        // Encoded outside the commit lock; the sequence is patched in under it.
        let record = WalRecord { seq: 0, tables };
        let mut payload = encode_wal_record(&record)?;
        // Recovery refuses longer frames as damage, so such a commit could
        // never be replayed: refuse it now instead.
        if payload.len() > MAX_FRAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "transaction writes {} bytes, more than the {} a single commit may log; split it",
                payload.len(),
                MAX_FRAME_LEN
            )));
        }
        let (seq, position) = {
            let mut last_seq = inner.commit.lock();
            inner.check_poisoned()?;
            let state = inner.current();
            for p in self.pending.values() {
                match state.tables.get(&p.table.def.id) {
                    // A unique index created since the snapshot has entries
                    // this transaction did not write.
                    Some(t)
                        if t.def.schema_version == p.table.def.schema_version
                            && crate::index::unique::same_indexes(&t.def, &p.table.def) => {}
                    Some(t) => return Err(Error::SchemaChanged(t.def.name.clone())),
                    None => return Err(Error::TableNotFound(p.table.def.name.clone())),
                }
            }
            if *last_seq != self.snapshot.seq {
                if let Some((table_id, key)) =
                    find_conflict(&inner.cache, &state, &self.pending, self.snapshot.seq)?
                {
                    return Err(crate::index::unique::conflict_error(
                        &state,
                        table_id,
                        self.pending
                            .get(&table_id)
                            .and_then(|p| p.index().get(key).cloned()),
                    ));
                }
            }
            let seq = *last_seq + 1;
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            // A failed append leaves the log's position unchanged (the next
            // record overwrites what part of this one was written): the
            // commit failed and nothing needs poisoning.
            let position = inner.wal.append(&payload, seq)?;
            *last_seq = seq;
            for write in record.tables {
                if let Some(t) = state.tables.get(&write.table_id) {
                    t.active.insert_batch(Arc::new(write.batch), seq);
                }
            }
            // The record is in the log and the memtable: from here on the
            // commit stands, and is reported by its sync alone. A failed
            // freeze or rotation is retried by a later commit; a failed
            // fsync inside it has made the log refuse further syncs.
            if let Err(e) = freeze_if_needed(&inner, &state, &ids) {
                tracing::warn!(error = %e, "could not start a new WAL file; will retry");
            }
            (seq, position)
        };
        if !inner.options.synchronous_commit {
            inner.publish(seq);
            return Ok(Commit(CommitState::Done(seq)));
        }
        Ok(Commit(CommitState::Logged {
            inner,
            seq,
            position,
        }))
    }

    /// Discards the writes.
    pub fn rollback(self) {}
}

/// A commit whose writes are logged and applied but not yet visible,
/// waiting (under `synchronous_commit`) for its WAL record to be on disk.
/// Dropping it still leaves the commit to become durable with a later
/// sync, as after a crash it may or may not be.
pub struct Commit(CommitState);

enum CommitState {
    /// Visible already: nothing was written, or commits do not wait.
    Done(u64),
    Logged {
        inner: Arc<Inner>,
        seq: u64,
        position: u64,
    },
}

impl Commit {
    /// Blocks until durable, then makes the writes visible; the sequence.
    pub fn wait(self) -> Result<u64> {
        match self.0 {
            CommitState::Done(seq) => Ok(seq),
            CommitState::Logged {
                inner,
                seq,
                position,
            } => {
                inner
                    .wal
                    .sync_to(position)
                    .inspect_err(|e| inner.poison(e))?;
                inner.publish(seq);
                Ok(seq)
            }
        }
    }

    /// [`Commit::wait`] for async callers: the thread is not blocked, and
    /// a syncer thread makes one fsync for everyone waiting.
    pub fn durable(self) -> Durable {
        Durable(Some(self.0))
    }
}

/// The future of [`Commit::durable`].
pub struct Durable(Option<CommitState>);

/// An abandoned wait (its statement cancelled, its connection gone) leaves
/// the commit in the log; it is still synced and made visible as if it
/// had been awaited, rather than waiting for someone else's commit.
impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(CommitState::Logged {
            inner,
            seq,
            position,
        }) = self.0.take()
        {
            inner.start_syncer();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(Ok(())) = inner.wal.poll_synced(position, seq, &mut cx) {
                inner.publish(seq);
            }
        }
    }
}

impl std::future::Future for Durable {
    type Output = Result<u64>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<u64>> {
        use std::task::Poll;
        match self.0.take() {
            None => Poll::Ready(Err(Error::InvalidArgument(
                "commit polled after it finished".into(),
            ))),
            Some(CommitState::Done(seq)) => Poll::Ready(Ok(seq)),
            Some(CommitState::Logged {
                inner,
                seq,
                position,
            }) => {
                inner.start_syncer();
                match inner.wal.poll_synced(position, seq, cx) {
                    Poll::Pending => {
                        self.0 = Some(CommitState::Logged {
                            inner,
                            seq,
                            position,
                        });
                        Poll::Pending
                    }
                    Poll::Ready(Ok(())) => {
                        inner.publish(seq);
                        Poll::Ready(Ok(seq))
                    }
                    Poll::Ready(Err(e)) => {
                        inner.poison(&e);
                        Poll::Ready(Err(e))
                    }
                }
            }
        }
    }
}

/// Freezes memtables past the size threshold, and every memtable holding
/// records of closed WAL files once too many of those pile up.
fn freeze_if_needed(inner: &Inner, state: &DbState, written: &[u32]) -> Result<()> {
    let threshold = inner.options.flush_threshold_bytes;
    let mut ids: Vec<u32> = written
        .iter()
        .filter(|id| {
            state
                .tables
                .get(id)
                .is_some_and(|t| t.active.approximate_bytes() >= threshold)
        })
        .copied()
        .collect();
    if inner.wal.closed_files() > inner.options.max_wal_files {
        if let Some(closed_max) = inner.wal.closed_max_seq() {
            ids.extend(
                state
                    .tables
                    .values()
                    .filter(|t| t.active.min_seq().is_some_and(|min| min <= closed_max))
                    .map(|t| t.def.id),
            );
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    inner.freeze_locked(&ids)
}

/// The first table and key this transaction wrote that another committed
/// after its snapshot.
fn find_conflict<'p>(
    cache: &ChunkCache,
    state: &DbState,
    pending: &'p BTreeMap<u32, Pending>,
    snapshot_seq: u64,
) -> Result<Option<(u32, &'p [u8])>> {
    for (id, p) in pending {
        let Some(t) = state.tables.get(id) else {
            continue;
        };
        let loaded_since = t.loaded_seq > snapshot_seq;
        let segments_changed = loaded_since || t.flushed_seq > snapshot_seq;
        for key in p.keys() {
            let in_memory = t.memtables().find_map(|m| m.latest_seq(key));
            if in_memory.is_some_and(|seq| seq > snapshot_seq) {
                return Ok(Some((*id, key)));
            }
            // Flushed versions are older than the memtables' unless a bulk
            // load installed some since the snapshot.
            if !segments_changed || (in_memory.is_some() && !loaded_since) {
                continue;
            }
            if newest_segment_seq(cache, t, key, snapshot_seq)?.is_some_and(|s| s > snapshot_seq) {
                return Ok(Some((*id, key)));
            }
        }
    }
    Ok(None)
}

/// The newest sequence of `key` in segments changed since `snapshot_seq`,
/// counting a bulk load's rows at the sequence it was installed at.
fn newest_segment_seq(
    cache: &ChunkCache,
    t: &TableState,
    key: &[u8],
    snapshot_seq: u64,
) -> Result<Option<u64>> {
    let mut newest = None;
    for segment in t.segments() {
        let visible_from = segment.visible_from();
        if segment.summary().max_seq.max(visible_from) <= snapshot_seq {
            continue;
        }
        if let Some((group, row)) = segment.find(cache, key, u64::MAX)? {
            let seq = segment
                .column(cache, group, 1)?
                .as_primitive::<UInt64Type>()
                .value(row)
                .max(visible_from);
            newest = newest.max(Some(seq));
        }
    }
    Ok(newest)
}

fn type_mismatch(
    column: &str,
    expected: &arrow_schema::DataType,
    got: &arrow_schema::DataType,
) -> Error {
    Error::InvalidArgument(format!(
        "column \"{column}\" is of type {expected} but the value is of type {got}"
    ))
}

pub(crate) fn check_columns(def: &TableDef, batch: &RecordBatch) -> Result<()> {
    let fields = def.schema.fields();
    if batch.num_columns() != fields.len() {
        return Err(Error::InvalidArgument(format!(
            "table \"{}\" has {} columns, {} given",
            def.name,
            fields.len(),
            batch.num_columns()
        )));
    }
    for (field, column) in fields.iter().zip(batch.columns()) {
        if field.data_type() != column.data_type() {
            return Err(type_mismatch(
                field.name(),
                field.data_type(),
                column.data_type(),
            ));
        }
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::NotNull(field.name().clone()));
        }
    }
    Ok(())
}

/// Primary keys of the rows, or fresh row ids for a keyless table.
pub(crate) fn row_keys(t: &TableState, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    if t.is_keyless() {
        let n = batch.num_rows() as u64;
        let first = t.next_row_id.fetch_add(n, Ordering::SeqCst);
        return Ok((first..first + n)
            .map(|id| row_id_key(id).to_vec())
            .collect());
    }
    let key_columns: Vec<ArrayRef> = t
        .def
        .key_columns
        .iter()
        .map(|&k| batch.column(k as usize).clone())
        .collect();
    for (&k, column) in t.def.key_columns.iter().zip(&key_columns) {
        if column.null_count() > 0 {
            return Err(Error::NotNull(
                t.def.schema.field(k as usize).name().clone(),
            ));
        }
    }
    Ok(encode_keys(&key_columns, batch.num_rows())?)
}

/// The one key a scan can match when its predicates fix every primary-key
/// column to a value: the memtables then give that key's versions only.
/// (The predicates still filter the rows, so this only narrows the input.)
fn point_key(def: &TableDef, predicates: &[crate::Predicate]) -> Option<Vec<u8>> {
    if def.key_columns.is_empty() {
        return None;
    }
    let columns = def
        .key_columns
        .iter()
        .map(|&column| {
            let column = column as usize;
            let value = predicates.iter().find_map(|p| match &p.op {
                crate::PredicateOp::Eq(value) if p.column == column => Some(value),
                _ => None,
            })?;
            key_array(value, def.schema.field(column).data_type())
        })
        .collect::<Option<Vec<ArrayRef>>>()?;
    let mut keys = encode_keys(&columns, 1).ok()?;
    keys.pop()
}

/// A one-value array of a key column's type, when the value fits it.
fn key_array(value: &crate::Scalar, data_type: &arrow_schema::DataType) -> Option<ArrayRef> {
    use crate::Scalar;
    use arrow_array::{
        BooleanArray, Date32Array, Int16Array, Int32Array, Int64Array, Int8Array, StringArray,
    };
    use arrow_schema::DataType;
    Some(match (value, data_type) {
        (Scalar::Int(v), DataType::Int8) => Arc::new(Int8Array::from(vec![i8::try_from(*v).ok()?])),
        (Scalar::Int(v), DataType::Int16) => {
            Arc::new(Int16Array::from(vec![i16::try_from(*v).ok()?]))
        }
        (Scalar::Int(v), DataType::Int32) => {
            Arc::new(Int32Array::from(vec![i32::try_from(*v).ok()?]))
        }
        (Scalar::Int(v), DataType::Int64) => Arc::new(Int64Array::from(vec![*v])),
        (Scalar::Int(v), DataType::Date32) => {
            Arc::new(Date32Array::from(vec![i32::try_from(*v).ok()?]))
        }
        (Scalar::Boolean(v), DataType::Boolean) => Arc::new(BooleanArray::from(vec![*v])),
        (Scalar::Bytes(v), DataType::Utf8) => {
            Arc::new(StringArray::from(vec![std::str::from_utf8(v).ok()?]))
        }
        (Scalar::Bytes(v), DataType::Binary) => Arc::new(BinaryArray::from(vec![v.as_slice()])),
        _ => return None,
    })
}

fn plan_scan(
    cache: &Arc<ChunkCache>,
    table: &TableState,
    seq: u64,
    options: &ScanOptions,
    pending: Option<&Pending>,
) -> Result<ScanPlan> {
    let schema = &table.def.schema;
    let n = schema.fields().len();
    let projection = options
        .projection
        .clone()
        .unwrap_or_else(|| (0..n).collect());
    let out_of_range = |c: usize| {
        Error::InvalidArgument(format!(
            "column index {c} out of range for table \"{}\"",
            table.def.name
        ))
    };
    if let Some(&c) = projection.iter().find(|&&c| c >= n) {
        return Err(out_of_range(c));
    }
    let mut needed = projection.clone();
    for p in &options.predicates {
        if p.column >= n {
            return Err(out_of_range(p.column));
        }
        if !needed.contains(&p.column) {
            needed.push(p.column);
        }
    }
    let run_schema = run_schema_for(&table.storage_schema, &needed);
    let mut sources = Vec::new();
    if let Some(p) = pending {
        sources.push(Source::Memory(p.to_run(&needed, &run_schema)?));
    }
    let point = point_key(&table.def, &options.predicates);
    // A primary-key point lookup is already narrow; otherwise a B-tree
    // index on a predicate's column names the segment rows to read, and
    // the memtable rows too when every segment has its file.
    let probe = point
        .is_none()
        .then(|| crate::index::btree::choose(&table.def, &options.predicates))
        .flatten();
    // `ORDER BY col LIMIT k` walks an index on `col` in order, unless the
    // predicates allow a narrower lookup.
    let ordered = options
        .first_rows
        .as_ref()
        .filter(|_| point.is_none())
        .and_then(|wanted| crate::index::btree::ordered_walk(&table.def, wanted, probe.as_ref()));
    let probe = probe.filter(|_| ordered.is_none());
    let index_used = match (&probe, &ordered) {
        (Some(probe), _) => Some(probe.name.clone()),
        (None, Some(walk)) => Some(walk.index.name.clone()),
        (None, None) => None,
    };
    let own = pending.map(|p| p.index());
    let hides = |key: &[u8]| own.as_ref().is_some_and(|rows| rows.contains_key(key));
    let view = SnapshotView {
        cache,
        table,
        seq,
        pending_keys: own.is_some().then_some(&hides as &dyn Fn(&[u8]) -> bool),
    };
    let mut segment_sources = Vec::new();
    let mut every_segment_indexed = true;
    for segment in table.segments() {
        if segment.summary().min_seq > seq {
            continue;
        }
        let run = match (&probe, &ordered) {
            (Some(probe), _) => {
                let read =
                    crate::index::btree::segment_run(&view, segment, probe, &needed, &run_schema)?;
                match read {
                    SegmentRows::None => continue,
                    SegmentRows::Run(run) => Some(run),
                    SegmentRows::Unindexed => {
                        every_segment_indexed = false;
                        None
                    }
                }
            }
            (None, Some(walk)) => crate::index::btree::first_rows_run(
                &view,
                segment,
                walk,
                &options.predicates,
                &needed,
                &run_schema,
            )?,
            (None, None) => None,
        };
        match run {
            Some(run) => segment_sources.push(Source::Memory(run)),
            None => segment_sources.extend((0..segment.row_groups().len()).map(|group| {
                Source::RowGroup {
                    segment: segment.clone(),
                    group,
                }
            })),
        }
    }
    // A segment read whole relies on the memtables' newer versions of its
    // keys, matching or not, to hide its stale rows; an indexed segment's
    // rows were each checked to be the newest version.
    let narrow_memtables = probe.as_ref().filter(|_| every_segment_indexed);
    for m in table.memtables() {
        if m.min_seq().is_some_and(|min| min <= seq) {
            let run = match (&point, narrow_memtables) {
                (Some(key), _) => m.to_run_for_key(key, Some(seq), &needed, &run_schema)?,
                (None, Some(probe)) => {
                    crate::index::btree::memtable_run(&view, m, probe, &needed, &run_schema)?
                }
                (None, None) => m.to_run(Some(seq), &needed, &run_schema)?,
            };
            sources.push(Source::Memory(run));
        }
    }
    sources.extend(segment_sources);
    let ctx = ScanContext {
        snapshot_seq: seq,
        table_schema: schema.clone(),
        projected: projection.len(),
        output_schema: output_schema(schema, &projection, options.with_key),
        needed,
        run_schema,
        predicates: options.predicates.clone(),
        with_key: options.with_key,
        cache: cache.clone(),
    };
    Ok(ScanPlan::new(sources, ctx, options.limit).with_index(index_used))
}

fn get_row(
    cache: &ChunkCache,
    table: &TableState,
    seq: u64,
    key: &[u8],
    pending: Option<&Pending>,
) -> Result<Option<RecordBatch>> {
    if let Some(row) = pending.and_then(|p| p.index().get(key).cloned()) {
        return row_from_memory(table, &row);
    }
    let in_memory = table.memtables().find_map(|m| m.get(key, seq));
    match newest_in_segments(cache, table, seq, key, in_memory.as_ref().map(|v| v.0))? {
        Some((segment, group, row)) => row_from_segment(cache, table, segment, group, row),
        None => match in_memory {
            Some((_, row)) => row_from_memory(table, &row),
            None => Ok(None),
        },
    }
}

pub(crate) fn row_from_segment(
    cache: &ChunkCache,
    table: &TableState,
    segment: &SegmentFile,
    group: usize,
    row: usize,
) -> Result<Option<RecordBatch>> {
    if segment
        .column(cache, group, 2)?
        .as_primitive::<UInt8Type>()
        .value(row)
        == OP_DELETE
    {
        return Ok(None);
    }
    let columns = table
        .def
        .schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, field)| {
            Ok(segment
                .table_column(cache, group, c, field.data_type())?
                .slice(row, 1))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RecordBatch::try_new(
        table.def.schema.clone(),
        columns,
    )?))
}

fn row_from_memory(table: &TableState, row: &RowRef) -> Result<Option<RecordBatch>> {
    if row.is_delete() {
        return Ok(None);
    }
    let columns = (0..table.def.schema.fields().len())
        .map(|c| {
            row.batch
                .column(c + crate::memtable::TABLE_COLUMNS_AT)
                .slice(row.row as usize, 1)
        })
        .collect();
    Ok(Some(RecordBatch::try_new(
        table.def.schema.clone(),
        columns,
    )?))
}
