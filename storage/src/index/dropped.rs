//! Files of dropped indexes, kept until no snapshot can read through them.
//!
//! A snapshot taken before a DROP INDEX still plans with the index (its
//! table definition lists it), so the index stays attached to its segments
//! and its files stay on disk until every such snapshot is gone. Which
//! snapshots those are is told by epochs: every published database state
//! carries the epoch current when it was made, and DROP INDEX starts a new
//! one, so a dropped index's files may go once no state of its epoch or an
//! earlier one is alive. Dropped indexes are handled oldest first, which
//! makes "an earlier one" hold: an epoch still alive keeps its own drop,
//! and so every later one, waiting.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::db::DbState;

/// Shared by the database states published between two DROP INDEXes.
#[derive(Debug, Default)]
pub(crate) struct Epoch;

struct DroppedIndex {
    table_id: u32,
    index_id: u32,
    /// The epoch the drop ended: alive while a state that lists the index
    /// may be.
    epoch: Arc<Epoch>,
}

/// Dropped indexes whose files wait, oldest first.
#[derive(Default)]
pub(crate) struct DroppedIndexes {
    waiting: Mutex<VecDeque<DroppedIndex>>,
}

impl DroppedIndexes {
    /// Index `index_id` of table `table_id` was dropped, ending `epoch`.
    pub(crate) fn push(&self, table_id: u32, index_id: u32, epoch: Arc<Epoch>) {
        self.waiting.lock().push_back(DroppedIndex {
            table_id,
            index_id,
            epoch,
        });
    }

    /// Detaches and deletes the files of each dropped index no live state
    /// can read through, from the segments of `current` (segments that
    /// left the table were compacted or dropped, and take their files with
    /// them). True when none is left waiting.
    pub(crate) fn remove_released(&self, current: &DbState) -> bool {
        loop {
            let released = {
                let mut waiting = self.waiting.lock();
                match waiting.front() {
                    None => return true,
                    // Only this list holds it: no state of the epoch is
                    // left, and none can be made (new states copy the
                    // current epoch).
                    Some(d) if Arc::strong_count(&d.epoch) == 1 => waiting.pop_front(),
                    Some(_) => return false,
                }
            };
            let Some(dropped) = released else {
                return true;
            };
            let Some(table) = current.tables.get(&dropped.table_id) else {
                continue;
            };
            for segment in table.segments() {
                if let Some(path) = segment.detach_index(dropped.index_id) {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(file = %path.display(), error = %e, "could not delete a dropped index's file");
                    }
                }
            }
        }
    }
}
