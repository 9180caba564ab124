//! Open segment files: memory-mapped, shared by snapshots, deleted from disk
//! when obsolete and no longer referenced.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use basalt_formats::array::Codec;
use basalt_formats::key::partition_point;
use basalt_formats::segment::{
    RowGroupMeta, SegmentReader, SegmentSummary, SegmentWriter, SYSTEM_COLUMNS,
};

use crate::durable_file::PendingFile;
use crate::error::{Error, IoContext, Result};
use crate::index::OpenIndex;

pub(crate) type ChunkCache = quick_cache::sync::Cache<(u64, u32, u32), CachedChunk, ChunkWeighter>;

/// A decoded chunk and the heap memory it holds: a chunk stored uncompressed
/// is read in place from the mapping and holds none (the page cache keeps
/// it), so caching it costs nothing but saves re-checking its crc.
#[derive(Clone)]
pub(crate) struct CachedChunk {
    array: ArrayRef,
    heap_bytes: u64,
}

#[derive(Clone)]
pub(crate) struct ChunkWeighter;

impl quick_cache::Weighter<(u64, u32, u32), CachedChunk> for ChunkWeighter {
    fn weight(&self, _key: &(u64, u32, u32), value: &CachedChunk) -> u64 {
        value.heap_bytes + 64
    }
}

pub(crate) fn new_cache(bytes: u64) -> ChunkCache {
    let estimated_items = (bytes / 65536).max(16) as usize;
    quick_cache::sync::Cache::with_weighter(estimated_items, bytes.max(1 << 20), ChunkWeighter)
}

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:06}.bseg"))
}

pub(crate) struct SegmentFile {
    pub id: u64,
    pub level: u8,
    pub path: PathBuf,
    pub reader: SegmentReader,
    obsolete: AtomicBool,
    /// The visible sequence at which a bulk load installed this segment's
    /// rows (0 otherwise). Its rows carry earlier sequences, chosen while it
    /// was written; a transaction whose snapshot predates the install still
    /// never saw them, so conflict checks count them at this sequence. Kept
    /// in memory only: after a reopen every snapshot postdates every install.
    visible_from: AtomicU64,
    /// Chunks of this segment are evicted when it is dropped: a chunk read in
    /// place keeps the mapping, and so the file's disk space, alive.
    cache: Arc<ChunkCache>,
    /// Secondary indexes over this segment's rows, by index id, with their
    /// files.
    indexes: parking_lot::RwLock<Vec<(u32, OpenIndex, PathBuf)>>,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segment({}, L{})", self.id, self.level)
    }
}

impl SegmentFile {
    pub fn open(path: PathBuf, id: u64, level: u8, cache: Arc<ChunkCache>) -> Result<SegmentFile> {
        let file = File::open(&path).at(&path)?;
        let len = file.metadata().at(&path)?.len();
        if len == 0 {
            return Err(Error::Corruption {
                file: path,
                offset: 0,
                reason: "empty segment file".into(),
            });
        }
        let buffer = crate::mapped::map_file(&file).at(&path)?;
        let reader = SegmentReader::open(buffer).map_err(|e| Error::in_file(&path, 0, e))?;
        Ok(SegmentFile {
            id,
            level,
            path,
            reader,
            obsolete: AtomicBool::new(false),
            visible_from: AtomicU64::new(0),
            cache,
            indexes: parking_lot::RwLock::new(Vec::new()),
        })
    }

    /// The file of index `index_id`, opened, if this segment has one.
    pub fn index(&self, index_id: u32) -> Option<OpenIndex> {
        self.indexes
            .read()
            .iter()
            .find(|(id, _, _)| *id == index_id)
            .map(|(_, index, _)| index.clone())
    }

    /// Ids of the indexes this segment has files of.
    pub fn index_ids(&self) -> Vec<u32> {
        self.indexes.read().iter().map(|(id, _, _)| *id).collect()
    }

    pub(crate) fn attach_index(&self, index_id: u32, index: OpenIndex, path: PathBuf) {
        let mut indexes = self.indexes.write();
        indexes.retain(|(id, _, _)| *id != index_id);
        indexes.push((index_id, index, path));
    }

    /// Forgets index `index_id`, dropped, and returns its file for the
    /// caller to delete: once no snapshot plans with the index (a search
    /// that holds the opened index keeps its mapping regardless).
    pub(crate) fn detach_index(&self, index_id: u32) -> Option<PathBuf> {
        let mut indexes = self.indexes.write();
        let at = indexes.iter().position(|(id, _, _)| *id == index_id)?;
        Some(indexes.remove(at).2)
    }

    /// The first segment row of each row group, then the row count.
    pub(crate) fn row_group_starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.row_groups().len() + 1);
        let mut at = 0;
        starts.push(0);
        for g in self.row_groups() {
            at += g.num_rows as usize;
            starts.push(at);
        }
        starts
    }

    pub fn summary(&self) -> &SegmentSummary {
        &self.reader.footer().summary
    }

    pub fn row_groups(&self) -> &[RowGroupMeta] {
        &self.reader.footer().row_groups
    }

    pub fn visible_from(&self) -> u64 {
        self.visible_from.load(Ordering::Acquire)
    }

    pub fn set_visible_from(&self, seq: u64) {
        self.visible_from.fetch_max(seq, Ordering::AcqRel);
    }

    /// Deletes the file once the last reference goes.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    /// One row group with every stored column, bypassing the cache (for
    /// compaction, which reads each chunk once).
    pub fn read_row_group(&self, row_group: usize) -> Result<Vec<ArrayRef>> {
        (0..self.reader.schema().fields().len())
            .map(|c| {
                self.reader
                    .read_column(row_group, c)
                    .map_err(|e| Error::in_file(&self.path, 0, e))
            })
            .collect()
    }

    pub fn column(&self, cache: &ChunkCache, row_group: usize, column: usize) -> Result<ArrayRef> {
        let key = (self.id, row_group as u32, column as u32);
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.array);
        }
        let array = self
            .reader
            .read_column(row_group, column)
            .map_err(|e| Error::in_file(&self.path, 0, e))?;
        let in_place =
            self.reader.footer().row_groups[row_group].columns[column].codec == Codec::None;
        let heap_bytes = if in_place {
            0
        } else {
            array.to_data().get_slice_memory_size().unwrap_or(0) as u64
        };
        cache.insert(
            key,
            CachedChunk {
                array: array.clone(),
                heap_bytes,
            },
        );
        Ok(array)
    }

    /// Table column `column` (of type `data_type`) of a row group; a column
    /// added to the table after this segment was written reads as nulls.
    pub fn table_column(
        &self,
        cache: &ChunkCache,
        row_group: usize,
        column: usize,
        data_type: &DataType,
    ) -> Result<ArrayRef> {
        let stored = SYSTEM_COLUMNS + column;
        if stored < self.reader.schema().fields().len() {
            self.column(cache, row_group, stored)
        } else {
            let rows = self.row_groups()[row_group].num_rows as usize;
            Ok(new_null_array(data_type, rows))
        }
    }

    /// The newest version of `key` at or below `snapshot_seq`: (row group, row).
    pub fn find(
        &self,
        cache: &ChunkCache,
        key: &[u8],
        snapshot_seq: u64,
    ) -> Result<Option<(usize, usize)>> {
        let footer = self.reader.footer();
        if key < footer.summary.min_key.as_slice()
            || key > footer.summary.max_key.as_slice()
            || !footer.bloom.may_contain(key)
        {
            return Ok(None);
        }
        let groups = &footer.row_groups;
        let first = groups.partition_point(|g| g.max_key.as_slice() < key);
        for (g, meta) in groups.iter().enumerate().skip(first) {
            if meta.min_key.as_slice() > key {
                break;
            }
            let keys_array = self.column(cache, g, 0)?;
            let keys = keys_array.as_binary::<i32>();
            let seqs_array = self.column(cache, g, 1)?;
            let seqs = seqs_array.as_primitive::<UInt64Type>();
            let mut row = partition_point(0..keys.len(), |i| keys.value(i) < key);
            while row < keys.len() && keys.value(row) == key {
                if seqs.value(row) <= snapshot_seq {
                    return Ok(Some((g, row)));
                }
                row += 1;
            }
        }
        Ok(None)
    }
}

/// The row group of segment row `row`, and its row within the group, given
/// [`SegmentFile::row_group_starts`].
pub(crate) fn locate(starts: &[usize], row: usize) -> (usize, usize) {
    let group = starts.partition_point(|&s| s <= row).saturating_sub(1);
    (group, row - starts[group])
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        let columns = self.reader.schema().fields().len() as u32;
        for group in 0..self.row_groups().len() as u32 {
            for column in 0..columns {
                self.cache.remove(&(self.id, group, column));
            }
        }
        if self.obsolete.load(Ordering::Acquire) {
            let indexes = self.indexes.get_mut().drain(..).map(|(_, _, path)| path);
            for path in std::iter::once(self.path.clone()).chain(indexes) {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not delete obsolete file");
                }
            }
        }
    }
}

/// A segment file being written: row groups go in one at a time, in key
/// order; it becomes visible under its final name, durably, on `finish`.
/// A builder dropped before `finish` failed: its unfinished file is
/// removed (by [`PendingFile`]) rather than left to fill the disk.
pub(crate) struct SegmentBuilder {
    file: PendingFile,
    writer: SegmentWriter<BufWriter<File>>,
    rows: usize,
}

impl SegmentBuilder {
    pub fn create(dir: &Path, id: u64, schema: SchemaRef) -> Result<SegmentBuilder> {
        let (file, out) = PendingFile::create(&segment_path(dir, id))?;
        let writer =
            SegmentWriter::new(out, schema).map_err(|e| Error::in_file(file.tmp(), 0, e))?;
        Ok(SegmentBuilder {
            file,
            writer,
            rows: 0,
        })
    }

    pub fn add_row_group(&mut self, rows: &RecordBatch) -> Result<()> {
        self.writer
            .write_row_group(rows)
            .map_err(|e| Error::in_file(self.file.tmp(), 0, e))?;
        self.rows += rows.num_rows();
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn finish(self) -> Result<PathBuf> {
        let (_, out) = self
            .writer
            .finish()
            .map_err(|e| Error::in_file(self.file.tmp(), 0, e))?;
        self.file.install(out)
    }
}

/// Writes a sorted run as one segment, split into row groups; durable on return.
pub(crate) fn write_segment(
    dir: &Path,
    id: u64,
    schema: SchemaRef,
    run: &RecordBatch,
    row_group_rows: usize,
) -> Result<PathBuf> {
    let mut builder = SegmentBuilder::create(dir, id, schema)?;
    let mut start = 0;
    while start < run.num_rows() {
        let len = row_group_rows.min(run.num_rows() - start);
        builder.add_row_group(&run.slice(start, len))?;
        start += len;
    }
    builder.finish()
}
