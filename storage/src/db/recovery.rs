//! Recovery on open: the catalog from the manifest's edits, the segments it
//! lists (orphans moved aside or removed), and the WAL replayed into the
//! memtables.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use basalt_formats::key::row_id_from_key;
use basalt_formats::manifest::{Edit, SegmentDef, TableDef};
use basalt_formats::wal::{decode_wal_record, wal_record_seq};

use super::{segment_def, DbState, TableState, SEGMENT_DIR};
use crate::error::{Error, IoContext, Result};
use crate::index::RecordedFile;
use crate::segment::{segment_path, ChunkCache, SegmentFile};
use crate::wal::{first_record_seq, list_wal_files, read_wal_file, ClosedWal};

/// The catalog as the manifest describes it.
#[derive(Default)]
pub(super) struct Recovered {
    tables: BTreeMap<u32, RecoveredTable>,
    pub(super) last_seq: u64,
    pub(super) next_file: u64,
    pub(super) manifest_number: Option<u64>,
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
    pub(super) fn apply(&mut self, edit: Edit) {
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

/// Where files that may hold data but that the manifest does not list are
/// moved, never to be deleted by Basalt.
pub const LOST_AND_FOUND_DIR: &str = "lost+found";

pub(super) fn load_segments(
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
pub(super) fn replay_wal(
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
        // A dropped index's files may still be attached, for snapshots
        // older than the drop: they are not the table's any more.
        edits.extend(
            t.segments()
                .flat_map(|s| crate::index::edits(id, s))
                .filter(|edit| match edit {
                    Edit::AddIndexFile { index_id, .. } => {
                        t.def.indexes.iter().any(|i| i.id == *index_id)
                    }
                    _ => true,
                }),
        );
    }
    edits
}
