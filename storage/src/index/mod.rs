//! Secondary indexes beside segments. Each kind is one module implementing
//! [`IndexKind`], listed once in [`KINDS`]; everything else here is shared:
//! every segment written by a flush, compaction or bulk load, and every
//! segment a CREATE INDEX finds, gets one file per index of its table,
//! built by the same function from the segment's rows in segment order
//! (FORMAT.md, "Index files"), written durably before the manifest edit
//! that records it (`AddIndexFile`, by index id).

use std::any::Any;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use basalt_formats::manifest::{Edit, IndexDef, TableDef};
use basalt_formats::segment::SYSTEM_COLUMNS;

use crate::build_budget::BuildBudget;
use crate::durable_file::PendingFile;
use crate::error::{Error, Result};
use crate::segment::{ChunkCache, SegmentFile};

pub(crate) mod btree;
pub(crate) mod dropped;
pub mod hnsw;
pub mod search;
pub(crate) mod unique;

/// An opened index file; each kind's search downcasts it to its own type.
pub type OpenIndex = Arc<dyn Any + Send + Sync>;

/// One kind of secondary index.
pub(crate) trait IndexKind: Send + Sync {
    /// The name `USING` gives and index files end with.
    fn name(&self) -> &'static str;
    /// Checks a definition against its table: column count and types,
    /// options.
    fn validate(&self, table: &TableDef, index: &IndexDef) -> Result<()>;
    /// Writes the index of one segment's rows, on up to `threads` threads.
    fn build(
        &self,
        index: &IndexDef,
        rows: &IndexRows,
        threads: usize,
        out: &mut dyn Write,
    ) -> Result<()>;
    /// Opens a file [`IndexKind::build`] wrote.
    fn open(&self, index: &IndexDef, path: &Path) -> Result<OpenIndex>;
}

/// Every index kind. Adding a kind is a module and a line here.
const KINDS: &[&dyn IndexKind] = &[&hnsw::Hnsw, &btree::BTree];

pub(crate) fn kind(name: &str) -> Result<&'static dyn IndexKind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown index kind \"{name}\"")))
}

/// A segment's rows as an index build reads them: the index's columns in
/// index order, and each row's operation (tombstones are not indexed).
pub(crate) struct IndexRows {
    pub columns: Vec<ArrayRef>,
    pub ops: ArrayRef,
}

/// `NNNNNN.iID.kind`: segment, index id, kind.
pub(crate) fn file_path(dir: &Path, segment_id: u64, index: &IndexDef) -> PathBuf {
    dir.join(format!("{segment_id:06}.i{}.{}", index.id, index.kind))
}

/// Where the code before index definitions put an HNSW file: named by the
/// column's position.
pub(crate) fn legacy_hnsw_path(dir: &Path, segment_id: u64, column: u32) -> PathBuf {
    dir.join(format!("{segment_id:06}.c{column}.hnsw"))
}

/// What an index build needs: where files go, the chunk cache to read
/// segments through, and the shared thread budget.
pub(crate) struct Builder<'a> {
    pub dir: &'a Path,
    pub cache: &'a ChunkCache,
    pub budget: &'a BuildBudget,
}

impl Builder<'_> {
    fn write_file(&self, segment_id: u64, index: &IndexDef, rows: &IndexRows) -> Result<PathBuf> {
        let kind = kind(&index.kind)?;
        let threads = self.budget.take(self.budget.total());
        let (file, mut out) = PendingFile::create(&file_path(self.dir, segment_id, index))?;
        kind.build(index, rows, threads.count(), &mut out)?;
        file.install(out)
    }

    /// Builds every index `def` declares for a sorted run (storage layout)
    /// about to become segment `segment_id` (flush, bulk load). Returns
    /// the ids of the indexes built.
    pub fn build_for_run(
        &self,
        segment_id: u64,
        def: &TableDef,
        run: &RecordBatch,
    ) -> Result<Vec<u32>> {
        let mut built = Vec::new();
        for index in &def.indexes {
            let rows = IndexRows {
                columns: index
                    .columns
                    .iter()
                    .map(|&c| run.column(SYSTEM_COLUMNS + c as usize).clone())
                    .collect(),
                ops: run.column(2).clone(),
            };
            self.write_file(segment_id, index, &rows)?;
            built.push(index.id);
        }
        Ok(built)
    }

    /// Builds the given indexes for a written segment (compaction, a bulk
    /// load that missed a new index) and attaches them.
    pub fn build_for_segment(
        &self,
        segment: &SegmentFile,
        def: &TableDef,
        indexes: &[IndexDef],
    ) -> Result<()> {
        for index in indexes {
            let (path, opened) = self.build_file(segment, def, index)?;
            segment.attach_index(index.id, opened, path);
        }
        Ok(())
    }

    /// Builds and opens one index's file for a written segment, leaving it
    /// to the caller to attach (CREATE INDEX attaches once the index is
    /// logged).
    pub fn build_file(
        &self,
        segment: &SegmentFile,
        def: &TableDef,
        index: &IndexDef,
    ) -> Result<(PathBuf, OpenIndex)> {
        let rows = segment_rows(self.cache, segment, def, index)?;
        let path = self.write_file(segment.id, index, &rows)?;
        let opened = kind(&index.kind)?.open(index, &path)?;
        Ok((path, opened))
    }
}

fn segment_rows(
    cache: &ChunkCache,
    segment: &SegmentFile,
    def: &TableDef,
    index: &IndexDef,
) -> Result<IndexRows> {
    let groups = segment.row_groups().len();
    let mut columns = Vec::with_capacity(index.columns.len());
    for &c in &index.columns {
        let data_type = def.schema.field(c as usize).data_type();
        let parts = (0..groups)
            .map(|g| segment.table_column(cache, g, c as usize, data_type))
            .collect::<Result<Vec<_>>>()?;
        columns.push(concat(&parts, data_type)?);
    }
    let ops = (0..groups)
        .map(|g| segment.column(cache, g, 2))
        .collect::<Result<Vec<_>>>()?;
    Ok(IndexRows {
        columns,
        ops: concat(&ops, &DataType::UInt8)?,
    })
}

pub(crate) fn concat(arrays: &[ArrayRef], data_type: &DataType) -> Result<ArrayRef> {
    if arrays.is_empty() {
        return Ok(arrow_array::new_empty_array(data_type));
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(arrow_select::concat::concat(&refs)?)
}

/// Opens the files `build_for_run` wrote for segment `segment` and
/// attaches them.
pub(crate) fn attach_built(
    dir: &Path,
    segment: &SegmentFile,
    def: &TableDef,
    built: &[u32],
) -> Result<()> {
    for index in def.indexes.iter().filter(|i| built.contains(&i.id)) {
        let path = file_path(dir, segment.id, index);
        segment.attach_index(index.id, kind(&index.kind)?.open(index, &path)?, path);
    }
    Ok(())
}

/// Opens the recorded index files of a segment at start-up. A file the
/// code before index definitions wrote under its column name is linked to
/// its new name first (a link, so that a crash midway leaves both names
/// and either manifest finds its file). Returns the paths now in use.
pub(crate) fn open_recorded(
    dir: &Path,
    segment: &SegmentFile,
    def: &TableDef,
    recorded: &[RecordedFile],
) -> Result<Vec<PathBuf>> {
    let by_id: HashMap<u32, &IndexDef> = def.indexes.iter().map(|i| (i.id, i)).collect();
    let mut paths = Vec::new();
    for file in recorded {
        let (index_id, legacy) = match *file {
            RecordedFile::Index(id) => (Some(id), None),
            RecordedFile::LegacyHnswColumn(column) => (
                def.indexes
                    .iter()
                    .find(|i| i.kind == hnsw::KIND && i.columns == [column])
                    .map(|i| i.id),
                Some(legacy_hnsw_path(dir, segment.id, column)),
            ),
        };
        // An index dropped after the file was recorded: its file is an
        // orphan and goes with the others.
        let Some(index) = index_id.and_then(|id| by_id.get(&id)) else {
            continue;
        };
        let path = file_path(dir, segment.id, index);
        if let Some(old) = legacy.filter(|_| !path.exists()) {
            std::fs::hard_link(&old, &path).map_err(|e| Error::io(&old, e))?;
            crate::wal::sync_dir(dir)?;
        }
        segment.attach_index(
            index.id,
            kind(&index.kind)?.open(index, &path)?,
            path.clone(),
        );
        paths.push(path);
    }
    Ok(paths)
}

/// An index file a manifest records for a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordedFile {
    Index(u32),
    /// Tag 9, written before index definitions: the HNSW index of a column.
    LegacyHnswColumn(u32),
}

/// The edits recording a segment's index files.
pub(crate) fn edits(table_id: u32, segment: &SegmentFile) -> Vec<Edit> {
    segment
        .index_ids()
        .into_iter()
        .map(|index_id| Edit::AddIndexFile {
            table_id,
            segment_id: segment.id,
            index_id,
        })
        .collect()
}

/// Checks a new index against its table and the kind's rules.
pub(crate) fn validate(def: &TableDef, index: &IndexDef) -> Result<()> {
    if index.columns.is_empty()
        || index
            .columns
            .iter()
            .any(|&c| c as usize >= def.schema.fields().len())
    {
        return Err(Error::InvalidArgument(format!(
            "index \"{}\" names a column the table does not have",
            index.name
        )));
    }
    kind(&index.kind)?.validate(def, index)
}
