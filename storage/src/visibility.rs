//! Which stored version of a key a snapshot sees. A search that finds rows
//! through an index (vector, B-tree, ...) finds versions, not rows: each
//! must be checked to be the newest version of its key the snapshot sees,
//! or an older version would surface where a newer one no longer matches.

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use basalt_formats::segment::OP_DELETE;

use crate::db::TableState;
use crate::error::Result;
use crate::segment::{ChunkCache, SegmentFile};

/// Whether a key is among a transaction's writes.
pub(crate) type KeyTest<'a> = &'a dyn Fn(&[u8]) -> bool;

/// A snapshot of one table, as index searches check versions against it.
pub(crate) struct SnapshotView<'a> {
    pub cache: &'a ChunkCache,
    pub table: &'a TableState,
    pub seq: u64,
    /// The keys a transaction has written, which hide every stored version.
    pub pending_keys: Option<KeyTest<'a>>,
}

impl SnapshotView<'_> {
    /// Whether version `seq` of `key` (a stored one) is the newest the
    /// snapshot sees.
    pub fn is_newest(&self, key: &[u8], seq: u64) -> Result<bool> {
        if seq > self.seq || self.pending_keys.is_some_and(|hides| hides(key)) {
            return Ok(false);
        }
        let in_memory = self
            .table
            .memtables()
            .find_map(|m| m.get(key, self.seq))
            .map(|v| v.0);
        if in_memory.is_some_and(|m| m > seq) {
            return Ok(false);
        }
        Ok(newest_in_segments(self.cache, self.table, self.seq, key, Some(seq))?.is_none())
    }
}

/// Whether the newest version of `key` visible at `seq` is a live row.
pub(crate) fn holds_key(
    cache: &ChunkCache,
    table: &TableState,
    seq: u64,
    key: &[u8],
) -> Result<bool> {
    let in_memory = table.memtables().find_map(|m| m.get(key, seq));
    match newest_in_segments(cache, table, seq, key, in_memory.as_ref().map(|v| v.0))? {
        Some((segment, group, row)) => Ok(segment
            .column(cache, group, 2)?
            .as_primitive::<UInt8Type>()
            .value(row)
            != OP_DELETE),
        None => Ok(in_memory.is_some_and(|(_, row)| !row.is_delete())),
    }
}

/// The segment row holding the newest version of `key` visible at `seq`, if
/// it is newer than `newer_than` (the memtables' version). Usually the first
/// hit wins, as segments are consulted newest first; a bulk load's segment
/// can hold versions older than later flushes, so sequences decide.
pub(crate) fn newest_in_segments<'t>(
    cache: &ChunkCache,
    table: &'t TableState,
    seq: u64,
    key: &[u8],
    newer_than: Option<u64>,
) -> Result<Option<(&'t SegmentFile, usize, usize)>> {
    let mut best = None;
    let mut floor = newer_than;
    for segment in table.segments() {
        let summary = segment.summary();
        if summary.min_seq > seq || floor.is_some_and(|f| summary.max_seq <= f) {
            continue;
        }
        let Some((group, row)) = segment.find(cache, key, seq)? else {
            continue;
        };
        let version = segment
            .column(cache, group, 1)?
            .as_primitive::<UInt64Type>()
            .value(row);
        if floor.is_none_or(|f| version > f) {
            floor = Some(version);
            best = Some((segment.as_ref(), group, row));
        }
    }
    Ok(best)
}
