//! The streaming merge behind compaction. Each input is read one row group
//! at a time and the output is written one row group at a time, so memory
//! stays at about one row group per input however large the table is.
//!
//! Kept: every version newer than the oldest live snapshot, plus the newest
//! version at or below it unless that is a delete (the inputs hold every
//! version of their keys, so nothing older remains for a tombstone to hide).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use arrow_array::{new_null_array, RecordBatch};
use arrow_schema::SchemaRef;
use basalt_formats::segment::OP_DELETE;

use crate::error::Result;
use crate::memtable::BatchRows;
use crate::segment::{SegmentBuilder, SegmentFile};

/// Reads a key-ordered sequence of row groups one at a time.
struct Cursor<'a> {
    groups: Vec<(&'a SegmentFile, usize)>,
    next_group: usize,
    batch: Option<Arc<RecordBatch>>,
    row: usize,
}

impl<'a> Cursor<'a> {
    fn new(segments: &[&'a SegmentFile], schema: &SchemaRef) -> Result<Cursor<'a>> {
        let groups = segments
            .iter()
            .flat_map(|s| (0..s.row_groups().len()).map(move |g| (*s, g)))
            .collect();
        let mut cursor = Cursor {
            groups,
            next_group: 0,
            batch: None,
            row: 0,
        };
        cursor.load_next(schema)?;
        Ok(cursor)
    }

    fn load_next(&mut self, schema: &SchemaRef) -> Result<()> {
        self.batch = None;
        while let Some(&(segment, group)) = self.groups.get(self.next_group) {
            self.next_group += 1;
            let batch = read_group(segment, group, schema)?;
            if batch.num_rows() > 0 {
                self.batch = Some(Arc::new(batch));
                self.row = 0;
                break;
            }
        }
        Ok(())
    }

    /// (key, sequence, op) of the current row.
    fn current(&self) -> Option<(&[u8], u64, u8)> {
        let batch = self.batch.as_ref()?;
        Some((
            batch.column(0).as_binary::<i32>().value(self.row),
            batch.column(1).as_primitive::<UInt64Type>().value(self.row),
            batch.column(2).as_primitive::<UInt8Type>().value(self.row),
        ))
    }

    fn advance(&mut self, schema: &SchemaRef) -> Result<()> {
        self.row += 1;
        if self
            .batch
            .as_ref()
            .is_some_and(|b| self.row >= b.num_rows())
        {
            self.load_next(schema)?;
        }
        Ok(())
    }
}

/// A row group of `segment` under `schema`; columns the segment predates
/// read as nulls.
fn read_group(segment: &SegmentFile, group: usize, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns = segment.read_row_group(group)?;
    let rows = segment.row_groups()[group].num_rows as usize;
    columns.truncate(schema.fields().len());
    for field in schema.fields().iter().skip(columns.len()) {
        columns.push(new_null_array(field.data_type(), rows));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

pub(crate) struct MergeLimits {
    pub row_group_rows: usize,
    pub segment_max_rows: usize,
}

/// The segments a merge writes: the one being filled and those finished.
struct Output<'a, F> {
    schema: &'a SchemaRef,
    limits: &'a MergeLimits,
    new_segment: F,
    open: Option<(u64, SegmentBuilder)>,
    finished: Vec<(u64, std::path::PathBuf)>,
}

impl<F: FnMut() -> Result<(u64, SegmentBuilder)>> Output<'_, F> {
    fn write_row_group(&mut self, pending: &mut BatchRows) -> Result<()> {
        let columns = (0..self.schema.fields().len())
            .map(|c| pending.gather(c))
            .collect::<Result<Vec<_>>>()?;
        pending.clear();
        let rows = RecordBatch::try_new(self.schema.clone(), columns)?;
        let (_, builder) = match &mut self.open {
            Some(open) => open,
            None => self.open.insert((self.new_segment)()?),
        };
        builder.add_row_group(&rows)?;
        if builder.rows() >= self.limits.segment_max_rows {
            self.finish_segment()?;
        }
        Ok(())
    }

    fn finish_segment(&mut self) -> Result<()> {
        if let Some((id, builder)) = self.open.take() {
            self.finished.push((id, builder.finish()?));
        }
        Ok(())
    }
}

/// Merges `level0` (each its own sorted run) with `level1` (disjoint, in key
/// order: one run) into new segments made by `new_segment`, never splitting
/// one key's versions across row groups or segments. Returns the finished
/// segments' paths with their ids.
pub(crate) fn merge(
    level0: &[&SegmentFile],
    level1: &[&SegmentFile],
    schema: &SchemaRef,
    oldest_snapshot: u64,
    limits: &MergeLimits,
    new_segment: impl FnMut() -> Result<(u64, SegmentBuilder)>,
) -> Result<Vec<(u64, std::path::PathBuf)>> {
    let mut cursors = level0
        .iter()
        .map(|s| Cursor::new(&[*s], schema))
        .collect::<Result<Vec<_>>>()?;
    cursors.push(Cursor::new(level1, schema)?);
    let mut pending = BatchRows::default();
    let mut output = Output {
        schema,
        limits,
        new_segment,
        open: None,
        finished: Vec::new(),
    };
    let mut settled: Option<Vec<u8>> = None;
    let mut last_kept: Option<Vec<u8>> = None;
    while let Some(i) = next_cursor(&cursors) {
        let (key, seq, op) = cursors[i].current().unwrap_or_default();
        let keep = if settled.as_deref() == Some(key) {
            false
        } else if seq > oldest_snapshot {
            true
        } else {
            settled = Some(key.to_vec());
            op != OP_DELETE
        };
        if keep {
            if last_kept.as_deref() != Some(key) {
                if pending.len() >= limits.row_group_rows {
                    output.write_row_group(&mut pending)?;
                }
                last_kept = Some(key.to_vec());
            }
            if let Some(batch) = &cursors[i].batch {
                pending.push(batch, cursors[i].row);
            }
        }
        cursors[i].advance(schema)?;
    }
    if pending.len() > 0 {
        output.write_row_group(&mut pending)?;
    }
    output.finish_segment()?;
    Ok(output.finished)
}

/// The cursor at the smallest key, newest version first.
fn next_cursor(cursors: &[Cursor]) -> Option<usize> {
    let mut best: Option<(usize, &[u8], u64)> = None;
    for (i, cursor) in cursors.iter().enumerate() {
        let Some((key, seq, _)) = cursor.current() else {
            continue;
        };
        let better = match best {
            None => true,
            Some((_, best_key, best_seq)) => key < best_key || (key == best_key && seq > best_seq),
        };
        if better {
            best = Some((i, key, seq));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{new_cache, write_segment};
    use arrow_array::{Array, BinaryArray, Int64Array, UInt64Array, UInt8Array};
    use arrow_schema::{DataType, Field, Schema};
    use basalt_formats::segment::{storage_schema, OP_PUT};

    fn schema() -> SchemaRef {
        storage_schema(&Schema::new(vec![Field::new("v", DataType::Int64, true)]))
    }

    fn segment(
        dir: &std::path::Path,
        id: u64,
        level: u8,
        rows: &[(&[u8], u64, u8)],
    ) -> SegmentFile {
        let run = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.1 as i64),
                )),
            ],
        )
        .unwrap();
        let path = write_segment(dir, id, schema(), &run, 2).unwrap();
        SegmentFile::open(path, id, level, Arc::new(new_cache(1 << 20))).unwrap()
    }

    fn merged(oldest: u64, limits: MergeLimits) -> Vec<Vec<(Vec<u8>, u64)>> {
        let dir = tempfile::tempdir().unwrap();
        let l0 = segment(
            dir.path(),
            1,
            0,
            &[(b"k1", 5, OP_PUT), (b"k2", 6, OP_DELETE)],
        );
        let l1 = segment(
            dir.path(),
            2,
            1,
            &[(b"k1", 1, OP_PUT), (b"k2", 2, OP_PUT), (b"k3", 3, OP_PUT)],
        );
        let mut next_id = 10;
        let outputs = merge(&[&l0], &[&l1], &schema(), oldest, &limits, || {
            next_id += 1;
            Ok((
                next_id,
                SegmentBuilder::create(dir.path(), next_id, schema())?,
            ))
        })
        .unwrap();
        outputs
            .into_iter()
            .map(|(id, path)| {
                let out = SegmentFile::open(path, id, 1, Arc::new(new_cache(1 << 20))).unwrap();
                (0..out.row_groups().len())
                    .flat_map(|g| {
                        let columns = out.read_row_group(g).unwrap();
                        let keys = columns[0].as_binary::<i32>().clone();
                        let seqs = columns[1].as_primitive::<UInt64Type>().clone();
                        (0..keys.len()).map(move |i| (keys.value(i).to_vec(), seqs.value(i)))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn versions_a_snapshot_needs_are_kept_and_key_versions_stay_together() {
        let outputs = merged(
            4,
            MergeLimits {
                row_group_rows: 1,
                segment_max_rows: 1,
            },
        );
        let k = |key: &[u8], seq| (key.to_vec(), seq);
        assert_eq!(
            outputs,
            vec![
                vec![k(b"k1", 5), k(b"k1", 1)],
                vec![k(b"k2", 6), k(b"k2", 2)],
                vec![k(b"k3", 3)]
            ]
        );
    }

    #[test]
    fn shadowed_versions_and_tombstones_go_when_no_snapshot_needs_them() {
        let outputs = merged(
            10,
            MergeLimits {
                row_group_rows: 100,
                segment_max_rows: 100,
            },
        );
        assert_eq!(
            outputs,
            vec![vec![(b"k1".to_vec(), 5), (b"k3".to_vec(), 3)]]
        );
    }
}
