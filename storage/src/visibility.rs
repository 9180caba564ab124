//! Which stored version of a key a snapshot sees. A search that finds rows
//! through an index (vector, B-tree, ...) finds versions, not rows: each
//! must be checked to be the newest version of its key the snapshot sees,
//! or an older version would surface where a newer one no longer matches.

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;

use crate::db::TableState;
use crate::error::Result;
use crate::segment::ChunkCache;

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
        for segment in self.table.segments() {
            let summary = segment.summary();
            if summary.min_seq > self.seq || summary.max_seq <= seq {
                continue;
            }
            if let Some((group, row)) = segment.find(self.cache, key, self.seq)? {
                let version = segment
                    .column(self.cache, group, 1)?
                    .as_primitive::<UInt64Type>()
                    .value(row);
                if version > seq {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
