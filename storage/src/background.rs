//! Flush and compaction. Both write new segment files without holding any
//! lock readers or committers need, then install them in one manifest edit
//! and one state swap; replaced segments are deleted when the last snapshot
//! reading them goes away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use basalt_formats::manifest::Edit;

use crate::compaction::{merge, MergeLimits};
use crate::db::{segment_def, Inner, TableState};
use crate::error::Result;
use crate::memtable::Memtable;
use crate::segment::{write_segment, SegmentBuilder, SegmentFile};

/// How often the background thread looks for retired memtables it can free.
const RETIRED_MEMTABLE_CHECK: Duration = Duration::from_millis(100);

/// How long failed background work waits before it is tried again.
const BACKGROUND_RETRY: Duration = Duration::from_secs(1);

/// The last background failure, kept as its parts (errors are not Clone).
pub(crate) struct BackgroundFailure {
    path: Option<std::path::PathBuf>,
    /// What the error's SQLSTATE depends on (disk full or not).
    kind: std::io::ErrorKind,
    message: String,
}

impl BackgroundFailure {
    fn of(err: &crate::error::Error) -> Self {
        match err {
            crate::error::Error::Io { path, source } => BackgroundFailure {
                path: Some(path.clone()),
                kind: source.kind(),
                message: source.to_string(),
            },
            other => BackgroundFailure {
                path: None,
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> crate::error::Error {
        match &self.path {
            Some(path) => {
                crate::error::Error::io(path, std::io::Error::new(self.kind, self.message.clone()))
            }
            None => crate::error::Error::InvalidArgument(format!(
                "background work is failing: {}",
                self.message
            )),
        }
    }
}

impl Inner {
    pub(crate) fn background_loop(self: Arc<Self>) {
        loop {
            let all_released = self.drop_released_memtables()
                & self.dropped_indexes.remove_released(&self.current());
            {
                let mut work = self.work.lock();
                if !work.requested && !work.shutdown {
                    if all_released {
                        self.work_cv.wait(&mut work);
                    } else {
                        self.work_cv.wait_for(&mut work, RETIRED_MEMTABLE_CHECK);
                    }
                }
                if work.shutdown {
                    return;
                }
                if !work.requested {
                    continue;
                }
                work.requested = false;
            }
            if self.poisoned.lock().is_some() {
                continue;
            }
            let work = self
                .run_flushes()
                .and_then(|()| self.run_compactions())
                .and_then(|()| self.prepare_wal());
            // A failed flush or compaction changed nothing the manifest
            // records (a failed manifest write poisons on its own): retry,
            // so that the database recovers once, say, disk space returns.
            let failed = work.is_err();
            self.note_background_outcome(work);
            self.progress_cv.notify_all();
            if failed {
                let mut flags = self.work.lock();
                if !flags.shutdown {
                    self.work_cv.wait_for(&mut flags, BACKGROUND_RETRY);
                }
                flags.requested = true;
            }
        }
    }

    /// Drops the retired memtables nobody else holds; true when none is
    /// left waiting.
    fn drop_released_memtables(&self) -> bool {
        let released: Vec<Arc<Memtable>> = {
            let mut retired = self.retired.lock();
            let (released, held) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|m| Arc::strong_count(m) == 1);
            *retired = held;
            released
        };
        drop(released);
        self.retired.lock().is_empty()
    }

    /// Keeps a prepared WAL file ready for the next rotation.
    fn prepare_wal(&self) -> Result<()> {
        self.wal
            .prepare_spare(|| self.next_file.fetch_add(1, Ordering::SeqCst))
    }

    /// Flushes every frozen memtable, oldest first, then drops WAL files
    /// whose records are all in segments.
    pub(crate) fn run_flushes(&self) -> Result<()> {
        let _work = self.work_lock.lock();
        while self.flush_one()? {
            self.progress_cv.notify_all();
        }
        self.remove_flushed_wal()
    }

    fn run_compactions(&self) -> Result<()> {
        let _work = self.work_lock.lock();
        let ids: Vec<u32> = self.current().tables.keys().copied().collect();
        for id in ids {
            if self.compact_table(id, false)? {
                self.progress_cv.notify_all();
            }
        }
        Ok(())
    }

    fn flush_one(&self) -> Result<bool> {
        let state = self.current();
        let Some(table) = state.tables.values().find(|t| !t.frozen.is_empty()) else {
            return Ok(false);
        };
        let memtable = table.frozen[0].clone();
        let all_columns: Vec<usize> = (0..table.def.schema.fields().len()).collect();
        let run = memtable.to_run(None, &all_columns, &table.storage_schema)?;
        let segment = self.write_segment(table, run)?;

        let mut manifest = self.manifest.lock();
        let table_id = table.def.id;
        let still_frozen = self
            .current()
            .tables
            .get(&table_id)
            .is_some_and(|t| t.frozen.first().is_some_and(|m| Arc::ptr_eq(m, &memtable)));
        if !still_frozen {
            segment.mark_obsolete();
            return Ok(true);
        }
        let flushed_seq = memtable.max_seq();
        let mut edits = vec![
            Edit::AddSegment(segment_def(table_id, &segment)),
            Edit::TableFlushed {
                table_id,
                seq: flushed_seq,
            },
            Edit::NextRowId {
                table_id,
                next: table.next_row_id.load(Ordering::SeqCst),
            },
            Edit::LastSeq {
                seq: self.visible_seq.load(Ordering::SeqCst),
            },
            Edit::NextFileNumber {
                next: self.next_file.load(Ordering::SeqCst),
            },
        ];
        edits.extend(crate::index::edits(table_id, &segment));
        self.log_edits(&mut manifest, &edits)?;
        self.replace_table(table_id, |t| {
            t.frozen.remove(0);
            t.l0.insert(0, segment.clone());
            t.flushed_seq = flushed_seq;
        });
        // Without a background thread there is nobody to free it later.
        if self.options.background_work {
            self.retired.lock().push(memtable);
        }
        tracing::debug!(table = %table.def.name, segment = segment.id, "flushed memtable");
        Ok(true)
    }

    /// Writes a sorted run as a new level-0 segment file and opens it.
    fn write_segment(&self, table: &TableState, run: RecordBatch) -> Result<Arc<SegmentFile>> {
        let id = self.next_file.fetch_add(1, Ordering::SeqCst);
        let schema = table.storage_schema.clone();
        let path = write_segment(&self.seg_dir, id, schema, &run, self.options.row_group_rows)?;
        let built = self.index_builder().build_for_run(id, &table.def, &run)?;
        let segment = SegmentFile::open(path, id, 0, self.cache.clone())?;
        crate::index::attach_built(&self.seg_dir, &segment, &table.def, &built)?;
        Ok(Arc::new(segment))
    }

    /// Merges the input segments into new, opened level-1 segments.
    fn merge_into_level1(
        &self,
        table: &TableState,
        inputs: &[Arc<SegmentFile>],
    ) -> Result<Vec<Arc<SegmentFile>>> {
        let (level0, mut level1): (Vec<&SegmentFile>, Vec<&SegmentFile>) = inputs
            .iter()
            .map(|s| s.as_ref())
            .partition(|s| s.level == 0);
        level1.sort_by(|a, b| a.summary().min_key.cmp(&b.summary().min_key));
        let limits = MergeLimits {
            row_group_rows: self.options.row_group_rows,
            segment_max_rows: self.options.segment_max_rows,
        };
        let schema = &table.storage_schema;
        let new_segment = || {
            let id = self.next_file.fetch_add(1, Ordering::SeqCst);
            Ok((
                id,
                SegmentBuilder::create(&self.seg_dir, id, schema.clone())?,
            ))
        };
        let oldest = self.oldest_snapshot_seq();
        merge(&level0, &level1, schema, oldest, &limits, new_segment)?
            .into_iter()
            .map(|(id, path)| {
                let segment = SegmentFile::open(path, id, 1, self.cache.clone())?;
                self.index_builder()
                    .build_for_segment(&segment, &table.def, &table.def.indexes)?;
                Ok(Arc::new(segment))
            })
            .collect()
    }

    /// Swaps in a changed copy of one table's state.
    fn replace_table(&self, table_id: u32, change: impl FnOnce(&mut TableState)) {
        let mut guard = self.state.write();
        let Some(current) = guard.tables.get(&table_id) else {
            return;
        };
        let mut table = (**current).clone();
        change(&mut table);
        let mut next = (**guard).clone();
        next.tables.insert(table_id, Arc::new(table));
        *guard = Arc::new(next);
    }

    /// Deletes closed WAL files that hold nothing the memtables still need.
    pub(crate) fn remove_flushed_wal(&self) -> Result<()> {
        let last_seq = *self.commit.lock();
        let state = self.current();
        let unflushed_from = state
            .tables
            .values()
            .filter_map(|t| t.frozen.first().unwrap_or(&t.active).min_seq())
            .min();
        let flushed_through = unflushed_from.map_or(last_seq, |s| s.saturating_sub(1));
        self.wal.remove_flushed(flushed_through)
    }

    /// Merges level 0 with the level-1 segments its key range overlaps once
    /// level 0 has reached the trigger (or all segments, when `force`).
    /// Returns whether it did.
    pub(crate) fn compact_table(&self, table_id: u32, force: bool) -> Result<bool> {
        let state = self.current();
        let Some(table) = state.tables.get(&table_id) else {
            return Ok(false);
        };
        let inputs = if force {
            table.segments().cloned().collect()
        } else if table.l0.len() >= self.options.l0_compaction_trigger {
            compaction_inputs(table)
        } else {
            Vec::new()
        };
        if inputs.is_empty() {
            return Ok(false);
        }
        let outputs = self.merge_into_level1(table, &inputs)?;
        // Conflict checks must still count a recent bulk load's rows as new.
        let visible_from = inputs.iter().map(|s| s.visible_from()).max().unwrap_or(0);
        outputs
            .iter()
            .for_each(|s| s.set_visible_from(visible_from));
        let mut manifest = self.manifest.lock();
        if !self.current().tables.contains_key(&table_id) {
            outputs.iter().for_each(|s| s.mark_obsolete());
            return Ok(false);
        }
        let mut edits: Vec<Edit> = inputs
            .iter()
            .map(|s| Edit::RemoveSegment {
                table_id,
                segment_id: s.id,
            })
            .collect();
        edits.extend(
            outputs
                .iter()
                .map(|s| Edit::AddSegment(segment_def(table_id, s))),
        );
        edits.extend(
            outputs
                .iter()
                .flat_map(|s| crate::index::edits(table_id, s)),
        );
        edits.push(Edit::NextFileNumber {
            next: self.next_file.load(Ordering::SeqCst),
        });
        self.log_edits(&mut manifest, &edits)?;
        let input_ids: Vec<u64> = inputs.iter().map(|s| s.id).collect();
        self.replace_table(table_id, |t| {
            t.l0.retain(|s| !input_ids.contains(&s.id));
            t.l1.retain(|s| !input_ids.contains(&s.id));
            t.l1.extend(outputs.iter().cloned());
            t.l1.sort_by(|a, b| a.summary().min_key.cmp(&b.summary().min_key));
        });
        inputs.iter().for_each(|s| s.mark_obsolete());
        tracing::debug!(table = %table.def.name, inputs = inputs.len(), outputs = outputs.len(), "compacted");
        Ok(true)
    }

    /// Whether a table has more pending flushes or level-0 segments than
    /// the limits allow.
    pub(crate) fn is_behind(&self, table_ids: &[u32]) -> bool {
        let state = self.current();
        table_ids
            .iter()
            .filter_map(|id| state.tables.get(id))
            .any(|t| {
                t.frozen.len() >= self.options.max_immutable_memtables
                    || t.l0.len() >= self.options.l0_stall_limit
            })
    }

    /// Syncs the WAL every `delay` until shutdown, for commits that do not
    /// wait for their own sync, and makes what it synced visible.
    pub(crate) fn run_wal_writer(&self, delay: Duration) {
        loop {
            {
                let mut flags = self.work.lock();
                if !flags.shutdown {
                    self.wal_writer_cv.wait_for(&mut flags, delay);
                }
                if flags.shutdown {
                    return;
                }
            }
            if let Err(e) = self.wal.sync_to(self.wal.appended()) {
                self.poison(&e);
                return;
            }
        }
    }

    /// Starts the thread that syncs the WAL for async committers, once.
    pub(crate) fn start_syncer(self: &Arc<Self>) {
        let mut syncer = self.syncer.lock();
        if syncer.is_some() {
            return;
        }
        let inner = self.clone();
        match std::thread::Builder::new()
            .name("basalt-wal-sync".into())
            .spawn(move || {
                inner.wal.run_syncer(|seq| {
                    inner.publish(seq);
                })
            }) {
            Ok(handle) => *syncer = Some(handle),
            Err(e) => self.poison(&crate::error::Error::io(&self.dir, e)),
        }
    }

    /// Remembers why background work last failed, for writers that wait on it.
    fn note_background_outcome(&self, outcome: Result<()>) {
        let mut last = self.background_failure.lock();
        match outcome {
            Ok(()) => *last = None,
            Err(e) => {
                tracing::warn!(error = %e, "background flush or compaction failed; retrying");
                *last = Some(BackgroundFailure::of(&e));
            }
        }
    }

    /// Waits while a table has more pending flushes or level-0 segments than
    /// the limits allow; writers slow down rather than fail, unless the
    /// background work they wait for is failing: then they get its error.
    pub(crate) fn wait_for_room(&self, table_ids: &[u32]) -> Result<()> {
        loop {
            self.check_poisoned()?;
            if !self.is_behind(table_ids) {
                return Ok(());
            }
            if let Some(failure) = &*self.background_failure.lock() {
                return Err(failure.to_error());
            }
            self.write_stalls.fetch_add(1, Ordering::Relaxed);
            if !self.options.background_work {
                self.run_flushes()?;
                self.run_compactions()?;
                continue;
            }
            self.request_work();
            let mut work = self.work.lock();
            self.progress_cv
                .wait_for(&mut work, Duration::from_millis(50));
        }
    }
}

/// Every level-0 segment plus the level-1 segments overlapping their key
/// range. Any version of a key in that range is among them, so tombstones
/// can be dropped, and the outputs stay disjoint from the untouched level-1
/// segments.
fn compaction_inputs(table: &TableState) -> Vec<Arc<SegmentFile>> {
    let lo = table
        .l0
        .iter()
        .map(|s| s.summary().min_key.as_slice())
        .min();
    let hi = table
        .l0
        .iter()
        .map(|s| s.summary().max_key.as_slice())
        .max();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Vec::new();
    };
    let overlapping = table
        .l1
        .iter()
        .filter(|s| s.summary().min_key.as_slice() <= hi && s.summary().max_key.as_slice() >= lo);
    table.l0.iter().chain(overlapping).cloned().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use crate::{Db, Options};

    fn db_with_rows(dir: &std::path::Path, options: Options) -> Db {
        let db = Db::open(dir, options).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        db.create_table("t", schema.clone(), &["k"]).unwrap();
        let mut txn = db.begin();
        let keys = Int64Array::from_iter_values(0..100);
        txn.put(
            "t",
            &RecordBatch::try_new(schema, vec![Arc::new(keys)]).unwrap(),
        )
        .unwrap();
        txn.commit().unwrap();
        db
    }

    #[test]
    fn a_flushed_memtable_is_freed_once_the_last_snapshot_reading_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_rows(dir.path(), Options::default());
        let reader = db.snapshot();
        db.flush().unwrap();
        let retired = || db.inner.retired.lock().len();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(retired(), 1, "a snapshot still reads the flushed memtable");

        drop(reader);
        let deadline = Instant::now() + Duration::from_secs(30);
        while retired() > 0 {
            assert!(Instant::now() < deadline, "the memtable was never freed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn without_a_background_thread_a_flushed_memtable_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let inline = Options {
            background_work: false,
            ..Options::default()
        };
        let db = db_with_rows(dir.path(), inline);
        let reader = db.snapshot();
        db.flush().unwrap();
        assert_eq!(db.inner.retired.lock().len(), 0);
        drop(reader);
    }
}
