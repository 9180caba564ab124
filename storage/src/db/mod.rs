//! The database: its version state (tables, memtables, segments) and the
//! shared machinery transactions, snapshots and background work build on.
//! Schema changes are in `ddl`, recovery on open in `recovery`.
//!
//! Directory layout: `LOCK`, `CURRENT`, `MANIFEST-NNNNNN`, `wal/NNNNNN.wal`,
//! `seg/NNNNNN.bseg`. Table ids, WAL, manifest and segment numbers are all
//! drawn from one counter, so no number is ever reused.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arrow_schema::SchemaRef;
use basalt_formats::manifest::{Edit, SegmentDef, TableDef};
use basalt_formats::segment::storage_schema;
use basalt_formats::wal::wal_batch_schema;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{read_manifest, ManifestLog};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::segment::{new_cache, ChunkCache, SegmentFile};
use crate::wal::Wal;

mod ddl;
mod recovery;

#[cfg(test)]
pub(crate) use ddl::new_index;
pub(crate) use recovery::snapshot_edits;
use recovery::{load_segments, replay_wal, Recovered};

const LOCK_FILE: &str = "LOCK";
const WAL_DIR: &str = "wal";
const SEGMENT_DIR: &str = "seg";
/// WAL files are prepared at the flush threshold's size, up to this.
const WAL_PREALLOCATE_MAX: u64 = 64 << 20;

/// One table as a version of the database sees it.
#[derive(Clone)]
pub(crate) struct TableState {
    pub def: TableDef,
    pub storage_schema: SchemaRef,
    pub wal_schema: SchemaRef,
    pub active: Arc<Memtable>,
    /// Full memtables awaiting flush, oldest first.
    pub frozen: Vec<Arc<Memtable>>,
    /// Flushed segments, newest first.
    pub l0: Vec<Arc<SegmentFile>>,
    /// Compacted segments, in key order, key ranges disjoint.
    pub l1: Vec<Arc<SegmentFile>>,
    /// Every write with a sequence at or below this is in the segments.
    pub flushed_seq: u64,
    /// The visible sequence after this process's last bulk load into the
    /// table (0 if none): snapshots older than it must check segments for
    /// write conflicts.
    pub loaded_seq: u64,
    pub next_row_id: Arc<AtomicU64>,
}

impl TableState {
    fn new(def: TableDef, flushed_seq: u64, next_row_id: u64) -> TableState {
        TableState {
            storage_schema: storage_schema(&def.schema),
            wal_schema: wal_batch_schema(&def.schema),
            def,
            active: Arc::new(Memtable::new()),
            frozen: Vec::new(),
            l0: Vec::new(),
            l1: Vec::new(),
            flushed_seq,
            loaded_seq: 0,
            next_row_id: Arc::new(AtomicU64::new(next_row_id)),
        }
    }

    /// The same data under a changed definition, with empty memtables: only
    /// valid when the table has no rows in memory, whose layout would differ.
    fn with_def(&self, def: TableDef) -> TableState {
        TableState {
            l0: self.l0.clone(),
            l1: self.l1.clone(),
            next_row_id: self.next_row_id.clone(),
            loaded_seq: self.loaded_seq,
            ..TableState::new(def, self.flushed_seq, 0)
        }
    }

    /// Memtables newest first.
    pub fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.active).chain(self.frozen.iter().rev())
    }

    /// Segments in the order a point lookup consults them.
    pub fn segments(&self) -> impl Iterator<Item = &Arc<SegmentFile>> {
        self.l0.iter().chain(self.l1.iter())
    }

    pub fn is_keyless(&self) -> bool {
        self.def.key_columns.is_empty()
    }
}

/// An immutable version of the catalog and of every table's data.
#[derive(Clone, Default)]
pub(crate) struct DbState {
    pub tables: BTreeMap<u32, Arc<TableState>>,
    pub by_name: BTreeMap<String, u32>,
    /// Ended by each DROP INDEX: the dropped index's files stay while a
    /// state of its epoch or an earlier one is alive (`index::dropped`).
    pub epoch: Arc<crate::index::dropped::Epoch>,
}

impl DbState {
    /// A user's table by name (the entries of unique indexes are reached
    /// through their index, never by name).
    pub fn table(&self, name: &str) -> Result<&Arc<TableState>> {
        self.by_name
            .get(name)
            .filter(|_| !crate::index::unique::is_entries_table(name))
            .and_then(|id| self.tables.get(id))
            .ok_or_else(|| Error::TableNotFound(name.to_string()))
    }

    /// Tables a user created: not the entries of unique indexes.
    pub fn visible_tables(&self) -> impl Iterator<Item = &Arc<TableState>> {
        self.tables
            .values()
            .filter(|t| !crate::index::unique::is_entries_table(&t.def.name))
    }

    fn with_table(&self, table: TableState) -> DbState {
        let mut next = self.clone();
        next.by_name.insert(table.def.name.clone(), table.def.id);
        next.tables.insert(table.def.id, Arc::new(table));
        next
    }
}

#[derive(Default)]
pub(crate) struct WorkFlags {
    pub requested: bool,
    pub shutdown: bool,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub seg_dir: PathBuf,
    pub options: Options,
    _lock: File,
    pub state: RwLock<Arc<DbState>>,
    /// Serializes commits; holds the last sequence handed out.
    pub commit: Mutex<u64>,
    pub wal: Wal,
    /// Serializes version changes that are logged (flush, compaction, DDL).
    pub manifest: Mutex<ManifestLog>,
    /// Sequences at or below this are acknowledged and visible to new snapshots.
    pub visible_seq: AtomicU64,
    /// Live snapshot sequences and how many snapshots hold each.
    pub snapshots: Mutex<BTreeMap<u64, usize>>,
    pub cache: Arc<ChunkCache>,
    pub next_file: AtomicU64,
    pub work: Mutex<WorkFlags>,
    pub work_cv: Condvar,
    pub progress_cv: Condvar,
    /// Held while flushing or compacting, so one thread does it at a time.
    pub work_lock: Mutex<()>,
    /// Held by CREATE INDEX for its whole build (see [`Db::add_index`]).
    pub index_builds: Mutex<()>,
    /// Threads every index build shares.
    pub build_budget: crate::build_budget::BuildBudget,
    pub poisoned: Mutex<Option<String>>,
    /// Why background work last failed, while it keeps failing.
    pub background_failure: Mutex<Option<crate::background::BackgroundFailure>>,
    /// The WAL sync thread for async committers, started on first use.
    pub syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Syncs the WAL on a timer when commits do not wait for it.
    pub wal_writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Wakes the WAL writer at shutdown.
    pub wal_writer_cv: Condvar,
    /// Times a committer waited for flushes or compactions to catch up.
    pub write_stalls: AtomicU64,
    /// Flushed memtables still held by snapshots or transactions, dropped
    /// by the background thread once it holds the last reference: freeing a
    /// memtable of single-row commits is a few milliseconds of deallocation
    /// that otherwise lands on whichever committer or reader lets go last.
    pub retired: Mutex<Vec<Arc<Memtable>>>,
    /// Dropped indexes whose files snapshots may still read.
    pub dropped_indexes: crate::index::dropped::DroppedIndexes,
}

/// An open database directory.
pub struct Db {
    pub(crate) inner: Arc<Inner>,
    background: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.inner.dir.display())
    }
}

/// Counts of what a table is made of, for tests, EXPLAIN and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    pub memtable_bytes: usize,
    pub frozen_memtables: usize,
    pub l0_segments: usize,
    pub l1_segments: usize,
    pub segment_rows: u64,
}

/// Bounds of one column's stored values; see [`Db::column_ranges`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnRange {
    pub min: Option<basalt_formats::scalar::Scalar>,
    pub max: Option<basalt_formats::scalar::Scalar>,
    pub null_count: u64,
    /// A chunk had no usable bound (e.g. a long string), so min/max are
    /// not bounds of every value.
    pub unbounded: bool,
}

impl ColumnRange {
    fn widen(&mut self, chunk: &basalt_formats::segment::ChunkMeta) {
        self.null_count += u64::from(chunk.null_count);
        match (&chunk.min, &chunk.max) {
            (Some(min), Some(max)) => {
                if self
                    .min
                    .as_ref()
                    .is_none_or(|m| min.partial_cmp_same(m) == Some(std::cmp::Ordering::Less))
                {
                    self.min = Some(min.clone());
                }
                if self
                    .max
                    .as_ref()
                    .is_none_or(|m| max.partial_cmp_same(m) == Some(std::cmp::Ordering::Greater))
                {
                    self.max = Some(max.clone());
                }
            }
            _ => self.unbounded = true,
        }
    }
}

pub(crate) fn segment_def(table_id: u32, segment: &SegmentFile) -> SegmentDef {
    let s = segment.summary();
    SegmentDef {
        table_id,
        segment_id: segment.id,
        level: segment.level,
        num_rows: s.num_rows,
        file_size: s.file_size,
        min_seq: s.min_seq,
        max_seq: s.max_seq,
        min_key: s.min_key.clone(),
        max_key: s.max_key.clone(),
    }
}

impl Db {
    /// Opens (creating if needed) the database in `path`: replays the manifest
    /// and the WAL, and takes the directory lock.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        let options = options.normalized();
        let dir = path.as_ref().to_path_buf();
        let wal_dir = dir.join(WAL_DIR);
        let seg_dir = dir.join(SEGMENT_DIR);
        for d in [&dir, &wal_dir, &seg_dir] {
            fs::create_dir_all(d).at(d)?;
        }
        let lock = take_lock(&dir)?;
        let mut recovered = Recovered::default();
        let mut keep_orphans = false;
        if let Some(manifest) = read_manifest(&dir)? {
            recovered.manifest_number = Some(manifest.number);
            recovered.next_file = manifest.number + 1;
            keep_orphans = manifest.tail_cut;
            manifest.edits.into_iter().for_each(|e| recovered.apply(e));
        }
        let cache = Arc::new(new_cache(options.cache_bytes));
        let mut state = load_segments(&recovered, &dir, keep_orphans, &cache)?;
        let closed = replay_wal(&wal_dir, &mut state, &mut recovered)?;

        let wal_number = recovered.next_file;
        let manifest_number = wal_number + 1;
        let next_file = AtomicU64::new(manifest_number + 1);
        let preallocate = (options.flush_threshold_bytes as u64).min(WAL_PREALLOCATE_MAX);
        let wal = Wal::create(&wal_dir, wal_number, closed, preallocate)?;
        let snapshot = snapshot_edits(&state, recovered.last_seq, next_file.load(Ordering::SeqCst));
        let manifest = ManifestLog::create(&dir, manifest_number, &snapshot)?;
        if let Some(old) = recovered.manifest_number {
            let old_path = dir.join(format!("MANIFEST-{old:06}"));
            fs::remove_file(&old_path).at(&old_path)?;
        }
        let inner = Arc::new(Inner {
            cache,
            dir,
            seg_dir,
            _lock: lock,
            state: RwLock::new(Arc::new(state)),
            commit: Mutex::new(recovered.last_seq),
            wal,
            manifest: Mutex::new(manifest),
            visible_seq: AtomicU64::new(recovered.last_seq),
            snapshots: Mutex::new(BTreeMap::new()),
            next_file,
            work: Mutex::new(WorkFlags::default()),
            work_cv: Condvar::new(),
            progress_cv: Condvar::new(),
            work_lock: Mutex::new(()),
            index_builds: Mutex::new(()),
            build_budget: crate::build_budget::BuildBudget::for_this_machine(),
            poisoned: Mutex::new(None),
            background_failure: Mutex::new(None),
            syncer: Mutex::new(None),
            wal_writer: Mutex::new(None),
            wal_writer_cv: Condvar::new(),
            write_stalls: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
            dropped_indexes: Default::default(),
            options,
        });
        inner.freeze_oversized()?;
        inner.remove_flushed_wal()?;
        let background = if inner.options.background_work {
            let worker = inner.clone();
            let handle = std::thread::Builder::new()
                .name("basalt-background".into())
                .spawn(move || worker.background_loop())
                .at(&inner.dir)?;
            Some(handle)
        } else {
            None
        };
        if let (false, Some(delay)) = (
            inner.options.synchronous_commit,
            inner.options.wal_writer_delay,
        ) {
            let writer = inner.clone();
            let handle = std::thread::Builder::new()
                .name("basalt-wal-writer".into())
                .spawn(move || writer.run_wal_writer(delay))
                .at(&inner.dir)?;
            *inner.wal_writer.lock() = Some(handle);
        }
        inner.request_work();
        let db = Db { inner, background };
        crate::index::unique::drop_unfinished(&db)?;
        Ok(db)
    }

    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    pub fn table(&self, name: &str) -> Result<TableDef> {
        Ok(self.inner.current().table(name)?.def.clone())
    }

    /// The options the database was opened with, normalized.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// A table's id and schema version, without copying its definition:
    /// enough to tell whether something derived from the definition still
    /// holds.
    pub fn table_version(&self, name: &str) -> Option<(u32, u32)> {
        let state = self.inner.current();
        let def = &state.table(name).ok()?.def;
        Some((def.id, def.schema_version))
    }

    pub fn tables(&self) -> Vec<TableDef> {
        self.inner
            .current()
            .visible_tables()
            .map(|t| t.def.clone())
            .collect()
    }

    pub fn table_stats(&self, name: &str) -> Result<TableStats> {
        let state = self.inner.current();
        let t = state.table(name)?;
        Ok(TableStats {
            memtable_bytes: t.memtables().map(|m| m.approximate_bytes()).sum(),
            frozen_memtables: t.frozen.len(),
            l0_segments: t.l0.len(),
            l1_segments: t.l1.len(),
            segment_rows: t.segments().map(|s| s.summary().num_rows).sum(),
        })
    }

    /// Per table column, the smallest and largest value and the null count
    /// the segments' zone maps record. Memtable rows are not counted, and
    /// superseded versions are, so these are bounds for a planner, not facts.
    pub fn column_ranges(&self, name: &str) -> Result<Vec<ColumnRange>> {
        let state = self.inner.current();
        let t = state.table(name)?;
        let mut ranges = vec![ColumnRange::default(); t.def.schema.fields().len()];
        for segment in t.segments() {
            for group in segment.row_groups() {
                for (column, range) in ranges.iter_mut().enumerate() {
                    // A column added after the segment was written is all null there.
                    match group
                        .columns
                        .get(basalt_formats::segment::SYSTEM_COLUMNS + column)
                    {
                        Some(chunk) => range.widen(chunk),
                        None => range.null_count += u64::from(group.num_rows),
                    }
                }
            }
        }
        Ok(ranges)
    }

    /// How many fsyncs of the WAL commits have waited for; with concurrent
    /// committers this is lower than the number of commits (group commit).
    pub fn wal_syncs(&self) -> u64 {
        self.inner.wal.sync_count()
    }

    /// How many times a commit waited for background work to catch up.
    pub fn write_stalls(&self) -> u64 {
        self.inner.write_stalls.load(Ordering::Relaxed)
    }

    /// The highest acknowledged commit sequence.
    pub fn last_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::SeqCst)
    }

    /// Writes every memtable to segments and waits for it.
    pub fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        inner.check_poisoned()?;
        let ids: Vec<u32> = inner.current().tables.keys().copied().collect();
        inner.freeze_locked_for(&ids)?;
        inner.run_flushes()
    }

    /// Flushes, then merges each table's segments into one sorted level.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let ids: Vec<u32> = self.inner.current().tables.keys().copied().collect();
        let _work = self.inner.work_lock.lock();
        for id in ids {
            self.inner.compact_table(id, true)?;
        }
        self.inner.remove_flushed_wal()
    }

    /// Stops background work and syncs the WAL.
    pub fn close(mut self) -> Result<()> {
        self.stop_background();
        self.inner.wal.sync_to(u64::MAX)?;
        self.inner.wal.discard_spare()
    }

    fn stop_background(&mut self) {
        self.inner.wal.stop_syncer();
        if let Some(handle) = self.inner.syncer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("WAL sync thread panicked");
            }
        }
        self.inner.work.lock().shutdown = true;
        self.inner.work_cv.notify_all();
        self.inner.wal_writer_cv.notify_all();
        if let Some(handle) = self.inner.wal_writer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("WAL writer thread panicked");
            }
        }
        if let Some(handle) = self.background.take() {
            if handle.join().is_err() {
                tracing::error!("background thread panicked");
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.stop_background();
        if let Err(e) = self
            .inner
            .wal
            .sync_to(u64::MAX)
            .and_then(|()| self.inner.wal.discard_spare())
        {
            tracing::error!(error = %e, "could not sync the WAL on close");
        }
    }
}

fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

impl Inner {
    /// Makes commits up to `seq` visible to new snapshots (never moving
    /// backwards: syncs and committers publish out of order).
    pub fn publish(&self, seq: u64) {
        self.visible_seq.fetch_max(seq, Ordering::SeqCst);
    }

    pub fn index_builder(&self) -> crate::index::Builder<'_> {
        crate::index::Builder {
            dir: &self.seg_dir,
            cache: &self.cache,
            budget: &self.build_budget,
        }
    }

    pub fn current(&self) -> Arc<DbState> {
        self.state.read().clone()
    }

    pub fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock() {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    pub fn poison(&self, err: &Error) {
        tracing::error!(error = %err, "write failure: database is now read-only");
        self.poisoned.lock().get_or_insert_with(|| err.to_string());
        self.progress_cv.notify_all();
    }

    /// Appends edits to the manifest, rewriting it when it has grown.
    pub fn log_edits(&self, manifest: &mut ManifestLog, edits: &[Edit]) -> Result<()> {
        if let Err(e) = manifest.append(edits) {
            self.poison(&e);
            return Err(e);
        }
        if manifest.needs_rewrite(self.options.manifest_rewrite_bytes) {
            let number = self.next_file.fetch_add(1, Ordering::SeqCst);
            let mut snapshot = snapshot_edits(
                &self.current(),
                self.visible_seq.load(Ordering::SeqCst),
                number + 1,
            );
            // The edits just logged are not in the state yet.
            snapshot.extend_from_slice(edits);
            manifest.rewrite(number, &snapshot)?;
        }
        Ok(())
    }

    /// [`Inner::freeze_locked`], taking the commit lock.
    pub fn freeze_locked_for(&self, table_ids: &[u32]) -> Result<()> {
        let _commit = self.commit.lock();
        self.freeze_locked(table_ids)
    }

    /// Moves the active memtables of `table_ids` to the frozen list and starts
    /// a new WAL file. Caller holds the commit lock.
    pub fn freeze_locked(&self, table_ids: &[u32]) -> Result<()> {
        let mut guard = self.state.write();
        let mut next = (**guard).clone();
        let mut froze = false;
        for id in table_ids {
            let Some(t) = next.tables.get(id) else {
                continue;
            };
            if t.active.is_empty() {
                continue;
            }
            let mut t = (**t).clone();
            let full = std::mem::replace(&mut t.active, Arc::new(Memtable::new()));
            t.frozen.push(full);
            next.tables.insert(*id, Arc::new(t));
            froze = true;
        }
        if !froze {
            return Ok(());
        }
        *guard = Arc::new(next);
        drop(guard);
        self.wal
            .rotate(self.next_file.fetch_add(1, Ordering::SeqCst))?;
        self.request_work();
        Ok(())
    }

    fn freeze_oversized(&self) -> Result<()> {
        let _commit = self.commit.lock();
        let state = self.current();
        let ids: Vec<u32> = state
            .tables
            .values()
            .filter(|t| t.active.approximate_bytes() >= self.options.flush_threshold_bytes)
            .map(|t| t.def.id)
            .collect();
        self.freeze_locked(&ids)
    }

    pub fn request_work(&self) {
        self.work.lock().requested = true;
        self.work_cv.notify_all();
    }

    /// The sequence below which no live snapshot can read.
    pub fn oldest_snapshot_seq(&self) -> u64 {
        let snapshots = self.snapshots.lock();
        let visible = self.visible_seq.load(Ordering::SeqCst);
        snapshots
            .keys()
            .next()
            .map_or(visible, |&oldest| oldest.min(visible))
    }

    pub fn register_snapshot(&self) -> u64 {
        let mut snapshots = self.snapshots.lock();
        let seq = self.visible_seq.load(Ordering::SeqCst);
        *snapshots.entry(seq).or_default() += 1;
        seq
    }

    pub fn release_snapshot(&self, seq: u64) {
        let mut snapshots = self.snapshots.lock();
        if let Some(count) = snapshots.get_mut(&seq) {
            *count -= 1;
            if *count == 0 {
                snapshots.remove(&seq);
            }
        }
    }
}
