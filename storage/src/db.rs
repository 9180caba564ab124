//! The database: catalog, version state, recovery on open, and the shared
//! machinery transactions, snapshots and background work build on.
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

use arrow_array::cast::AsArray;
use arrow_schema::{Field, Schema, SchemaRef};
use basalt_formats::key::{is_key_type, row_id_from_key};
use basalt_formats::manifest::{Edit, IndexDef, SegmentDef, TableDef};
use basalt_formats::schema::is_supported_type;
use basalt_formats::segment::storage_schema;
use basalt_formats::wal::{decode_wal_record, wal_batch_schema, wal_record_seq};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::index::RecordedFile;
use crate::manifest::{read_manifest, ManifestLog};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::segment::{new_cache, segment_path, ChunkCache, SegmentFile};
use crate::wal::{first_record_seq, list_wal_files, read_wal_file, ClosedWal, Wal};

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

/// The catalog as the manifest describes it.
#[derive(Default)]
struct Recovered {
    tables: BTreeMap<u32, RecoveredTable>,
    last_seq: u64,
    next_file: u64,
    manifest_number: Option<u64>,
}

struct RecoveredTable {
    def: TableDef,
    segments: BTreeMap<u64, SegmentDef>,
    /// Each segment's recorded index files.
    segment_indexes: BTreeMap<u64, Vec<RecordedFile>>,
    flushed_seq: u64,
    next_row_id: u64,
}

impl Recovered {
    fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::PutTable(def) => {
                self.next_file = self.next_file.max(u64::from(def.id) + 1);
                match self.tables.get_mut(&def.id) {
                    Some(t) => t.def = def,
                    None => {
                        let table = RecoveredTable {
                            def,
                            segments: BTreeMap::new(),
                            segment_indexes: BTreeMap::new(),
                            flushed_seq: 0,
                            next_row_id: 0,
                        };
                        self.tables.insert(table.def.id, table);
                    }
                }
            }
            Edit::DropTable { table_id } => {
                self.tables.remove(&table_id);
            }
            Edit::AddSegment(s) => {
                self.next_file = self.next_file.max(s.segment_id + 1);
                self.last_seq = self.last_seq.max(s.max_seq);
                if let Some(t) = self.tables.get_mut(&s.table_id) {
                    t.segments.insert(s.segment_id, s);
                }
            }
            Edit::RemoveSegment {
                table_id,
                segment_id,
            } => {
                if let Some(t) = self.tables.get_mut(&table_id) {
                    t.segments.remove(&segment_id);
                    t.segment_indexes.remove(&segment_id);
                }
            }
            Edit::AddSegmentIndex {
                table_id,
                segment_id,
                column_id,
            } => {
                self.record_index_file(
                    table_id,
                    segment_id,
                    RecordedFile::LegacyHnswColumn(column_id),
                );
            }
            Edit::AddIndexFile {
                table_id,
                segment_id,
                index_id,
            } => self.record_index_file(table_id, segment_id, RecordedFile::Index(index_id)),
            Edit::TableFlushed { table_id, seq } => {
                if let Some(t) = self.tables.get_mut(&table_id) {
                    t.flushed_seq = t.flushed_seq.max(seq);
                }
            }
            Edit::NextRowId { table_id, next } => {
                if let Some(t) = self.tables.get_mut(&table_id) {
                    t.next_row_id = t.next_row_id.max(next);
                }
            }
            Edit::LastSeq { seq } => self.last_seq = self.last_seq.max(seq),
            Edit::NextFileNumber { next } => self.next_file = self.next_file.max(next),
        }
    }
}

impl Recovered {
    fn record_index_file(&mut self, table_id: u32, segment_id: u64, file: RecordedFile) {
        if let Some(t) = self.tables.get_mut(&table_id) {
            let files = t.segment_indexes.entry(segment_id).or_default();
            if !files.contains(&file) {
                files.push(file);
            }
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
        for segment in t.segments() {
            if let Some(path) = segment.detach_index(index.id) {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not delete a dropped index's file");
                }
            }
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

/// Where files that may hold data but that the manifest does not list are
/// moved, never to be deleted by Basalt.
pub const LOST_AND_FOUND_DIR: &str = "lost+found";

fn load_segments(
    recovered: &Recovered,
    dir: &Path,
    keep_orphans: bool,
    cache: &Arc<ChunkCache>,
) -> Result<DbState> {
    let seg_dir = &dir.join(SEGMENT_DIR);
    let mut state = DbState::default();
    let mut live = std::collections::HashSet::new();
    for table in recovered.tables.values() {
        let mut t = TableState::new(table.def.clone(), table.flushed_seq, table.next_row_id);
        for def in table.segments.values() {
            let path = segment_path(seg_dir, def.segment_id);
            let segment = Arc::new(SegmentFile::open(
                path,
                def.segment_id,
                def.level,
                cache.clone(),
            )?);
            live.insert(segment.path.clone());
            let recorded = table
                .segment_indexes
                .get(&def.segment_id)
                .map_or(&[][..], |files| files.as_slice());
            live.extend(crate::index::open_recorded(
                seg_dir, &segment, &table.def, recorded,
            )?);
            if def.level == 0 {
                t.l0.push(segment);
            } else {
                t.l1.push(segment);
            }
        }
        t.l0.sort_by_key(|s| std::cmp::Reverse(s.summary().max_seq));
        t.l1.sort_by(|a, b| a.summary().min_key.cmp(&b.summary().min_key));
        state = state.with_table(t);
    }
    // Files a crash left behind: written but never recorded, or half written.
    // When the manifest's last batch was cut, a file it would have recorded
    // is kept aside rather than trusted to be unacknowledged.
    for entry in fs::read_dir(seg_dir).at(seg_dir)? {
        let path = entry.at(seg_dir)?.path();
        if live.contains(&path) {
            continue;
        }
        let finished = !path.to_string_lossy().ends_with(".tmp");
        if keep_orphans && finished {
            let aside_dir = dir.join(LOST_AND_FOUND_DIR);
            fs::create_dir_all(&aside_dir).at(&aside_dir)?;
            let aside = aside_dir.join(path.file_name().unwrap_or_default());
            tracing::warn!(file = %path.display(), moved_to = %aside.display(), "segment file not in the manifest after its torn tail was cut; kept aside");
            fs::rename(&path, &aside).at(&path)?;
        } else {
            tracing::info!(file = %path.display(), "removing orphaned segment file");
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(state)
}

/// Replays every WAL file into the memtables; returns them as closed files.
fn replay_wal(
    wal_dir: &Path,
    state: &mut DbState,
    recovered: &mut Recovered,
) -> Result<Vec<ClosedWal>> {
    let (files, with_records) = wal_files_in_write_order(wal_dir)?;
    // Files after the one being written when the process stopped were
    // prepared ahead and hold nothing; only that one may have a torn tail.
    let last_written = with_records.saturating_sub(1);
    if !files.is_empty() {
        tracing::info!(files = files.len(), "replaying the WAL");
    }
    let mut closed = Vec::new();
    for (i, (number, path)) in files.iter().enumerate() {
        recovered.next_file = recovered.next_file.max(number + 1);
        let is_last = i >= last_written;
        let mut file_max_seq = 0;
        for (offset, payload) in read_wal_file(path, is_last)? {
            let seq = wal_record_seq(&payload).map_err(|e| Error::corrupt_in(path, offset, e))?;
            let record = decode_wal_record(&payload, &mut |table_id, version| {
                let Some(t) = state.tables.get(&table_id) else { return Ok(None) };
                if seq <= t.flushed_seq {
                    return Ok(None);
                }
                if version != t.def.schema_version {
                    return Err(basalt_formats::Error::corrupt(
                        0,
                        format!("write to table {table_id} under schema version {version}, table is at {}", t.def.schema_version),
                    ));
                }
                Ok(Some(t.wal_schema.clone()))
            })
            .map_err(|e| Error::corrupt_in(path, offset, e))?;
            for write in record.tables {
                if let Some(t) = state.tables.get(&write.table_id) {
                    if t.is_keyless() {
                        let keys = write.batch.column(0).as_binary::<i32>();
                        let max_id = keys.iter().flatten().filter_map(row_id_from_key).max();
                        if let Some(max_id) = max_id {
                            t.next_row_id.fetch_max(max_id + 1, Ordering::SeqCst);
                        }
                    }
                    t.active.insert_batch(Arc::new(write.batch), seq);
                }
            }
            file_max_seq = file_max_seq.max(seq);
            recovered.last_seq = recovered.last_seq.max(seq);
        }
        closed.push((*number, path.clone(), file_max_seq));
    }
    Ok(closed)
}

/// WAL files in the order they were written: by their first record's
/// sequence, then files holding no record; and how many hold records. File
/// numbers are not enough: a file prepared ahead takes its number before a
/// file created meanwhile.
fn wal_files_in_write_order(wal_dir: &Path) -> Result<(Vec<(u64, PathBuf)>, usize)> {
    let mut files = Vec::new();
    for (number, path) in list_wal_files(wal_dir)? {
        let first = first_record_seq(&path)?;
        files.push((first.is_none(), first, number, path));
    }
    files.sort();
    let with_records = files.iter().filter(|f| f.1.is_some()).count();
    let files = files
        .into_iter()
        .map(|(_, _, number, path)| (number, path))
        .collect();
    Ok((files, with_records))
}

/// Edits that recreate `state` in a fresh manifest.
pub(crate) fn snapshot_edits(state: &DbState, last_seq: u64, next_file: u64) -> Vec<Edit> {
    let mut edits = vec![
        Edit::NextFileNumber { next: next_file },
        Edit::LastSeq { seq: last_seq },
    ];
    for t in state.tables.values() {
        let id = t.def.id;
        edits.push(Edit::PutTable(t.def.clone()));
        edits.push(Edit::TableFlushed {
            table_id: id,
            seq: t.flushed_seq,
        });
        edits.push(Edit::NextRowId {
            table_id: id,
            next: t.next_row_id.load(Ordering::SeqCst),
        });
        edits.extend(t.segments().map(|s| Edit::AddSegment(segment_def(id, s))));
        edits.extend(t.segments().flat_map(|s| crate::index::edits(id, s)));
    }
    edits
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
