//! The B-tree kind: each segment's rows sorted by the encoded values of
//! the index columns (FORMAT.md, "B-tree index file"). A scan whose
//! predicates fix or bound the first index column reads, from each
//! segment, only the rows the index names that are the newest visible
//! version of their key; the scan's merge with the memtables and its exact
//! predicate check are unchanged.

use std::cmp::Ordering;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use basalt_formats::bloom::BloomFilter;
use basalt_formats::btree::{self, BTreeIndex};
use basalt_formats::key::{encode_key, is_key_type};
use basalt_formats::manifest::{IndexDef, TableDef};
use basalt_formats::scalar::Scalar;
use basalt_formats::segment::{OP_DELETE, SYSTEM_COLUMNS};

use super::{IndexKind, IndexRows, OpenIndex};
use crate::error::{Error, IoContext, Result};
use crate::memtable::Memtable;
use crate::scan::{Predicate, PredicateOp};
use crate::segment::{locate, SegmentFile};
use crate::visibility::SnapshotView;

pub(crate) const KIND: &str = "btree";

pub(crate) struct BTree;

impl IndexKind for BTree {
    fn name(&self) -> &'static str {
        KIND
    }

    fn validate(&self, table: &TableDef, index: &IndexDef) -> Result<()> {
        use super::unique::{BUILDING, UNIQUE};
        if let Some((key, value)) = index
            .options
            .iter()
            .find(|(key, value)| ![UNIQUE, BUILDING].contains(&key.as_str()) || value != "true")
        {
            return Err(Error::InvalidArgument(format!(
                "btree index option {key} = {value} is not recognized"
            )));
        }
        for &c in &index.columns {
            let field = table.schema.field(c as usize);
            // Entries compare encoded values, and -0 and 0 (or two NaNs)
            // encode apart though SQL finds them equal.
            if super::unique::is_unique(index) && field.data_type().is_floating() {
                return Err(Error::InvalidArgument(format!(
                    "column \"{}\" of type {} cannot be part of a unique index",
                    field.name(),
                    field.data_type()
                )));
            }
            if !is_key_type(field.data_type()) {
                return Err(Error::InvalidArgument(format!(
                    "column \"{}\" of type {} cannot be indexed by a btree index",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        Ok(())
    }

    fn build(
        &self,
        _index: &IndexDef,
        rows: &IndexRows,
        _threads: usize,
        out: &mut dyn Write,
    ) -> Result<()> {
        let ops = rows.ops.as_primitive::<UInt8Type>();
        let mut entries = Vec::with_capacity(ops.len());
        let mut first_values = Vec::with_capacity(ops.len());
        for row in 0..ops.len() {
            // Tombstones are never found. A row is indexed by its columns
            // up to the first NULL: no predicate the index answers matches
            // a NULL first column, and a NULL later one must not hide the
            // row from a probe of the first.
            let present = rows.columns.iter().take_while(|c| !c.is_null(row)).count();
            if ops.value(row) == OP_DELETE || present == 0 {
                continue;
            }
            let mut key = Vec::with_capacity(16);
            encode_key(&rows.columns[..1], row, &mut key)?;
            first_values.push(BloomFilter::hash(&key));
            encode_key(&rows.columns[1..present], row, &mut key)?;
            entries.push((key, row as u32));
        }
        entries.sort_unstable();
        btree::write(&entries, &BloomFilter::from_hashes(&first_values), out)?;
        Ok(())
    }

    fn open(&self, _index: &IndexDef, path: &Path) -> Result<OpenIndex> {
        let file = std::fs::File::open(path).at(path)?;
        let buffer = crate::mapped::map_file(&file).at(path)?;
        let index = BTreeIndex::open(buffer).map_err(|e| Error::in_file(path, 0, e))?;
        Ok(Arc::new(index))
    }
}

/// What a scan's predicates ask of one index's first column.
#[derive(Debug)]
pub(crate) struct IndexProbe {
    pub index_id: u32,
    pub name: String,
    /// The table column the index starts with.
    column: usize,
    /// Whether the ranges are points (an equality or IN list).
    exact: bool,
    ranges: Vec<KeyRange>,
}

/// Entries whose first column lies between two encoded values.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyRange {
    lower: Option<(Vec<u8>, bool)>,
    upper: Option<(Vec<u8>, bool)>,
}

impl KeyRange {
    /// The one value an equality's range holds.
    fn point(&self) -> Option<&[u8]> {
        match (&self.lower, &self.upper) {
            (Some((low, true)), Some((high, true))) if low == high => Some(low),
            _ => None,
        }
    }

    /// Whether the encoded first-column value `value` lies in the range.
    fn holds(&self, value: &[u8]) -> bool {
        let above = self.lower.as_ref().is_none_or(|(low, inclusive)| {
            value > low.as_slice() || (*inclusive && value == low.as_slice())
        });
        let below = self.upper.as_ref().is_none_or(|(high, inclusive)| {
            value < high.as_slice() || (*inclusive && value == high.as_slice())
        });
        above && below
    }
}

impl IndexProbe {
    /// Whether row `row` of `column` (the index's first column) is one
    /// the probe asks for: never a NULL, as in the index files.
    fn holds(&self, column: &ArrayRef, row: usize, scratch: &mut Vec<u8>) -> bool {
        scratch.clear();
        !column.is_null(row)
            && encode_key(std::slice::from_ref(column), row, scratch).is_ok()
            && self.ranges.iter().any(|range| range.holds(scratch))
    }
}

/// The memtable's rows that the probe asks for and that are the newest
/// version of their key the snapshot sees, as a run. A version hidden by
/// a newer one is left out even when the newer one does not match: the
/// runs no longer hold every version, so the merge cannot hide it.
pub(crate) fn memtable_run(
    view: &SnapshotView<'_>,
    memtable: &Memtable,
    probe: &IndexProbe,
    needed: &[usize],
    run_schema: &SchemaRef,
) -> Result<RecordBatch> {
    let column = probe.column + crate::memtable::TABLE_COLUMNS_AT;
    let mut scratch = Vec::with_capacity(16);
    memtable.to_run_where(view.seq, needed, run_schema, |key, seq, row| {
        Ok(
            probe.holds(row.batch.column(column), row.row as usize, &mut scratch)
                && view.is_newest(key, seq)?,
        )
    })
}

/// The B-tree index a scan with these predicates reads through, if any:
/// one whose first column an equality, IN list or range fixes or bounds.
/// Float columns are left to the scan: `-0` and `0` are equal values with
/// different encodings.
pub(crate) fn choose(def: &TableDef, predicates: &[Predicate]) -> Option<IndexProbe> {
    let mut best: Option<(bool, IndexProbe)> = None;
    for index in def.indexes.iter().filter(|i| i.kind == KIND) {
        let column = index.columns[0] as usize;
        let data_type = def.schema.field(column).data_type();
        if matches!(
            data_type,
            DataType::Float16 | DataType::Float32 | DataType::Float64
        ) {
            continue;
        }
        let encode = |v: &Scalar| -> Option<Vec<u8>> {
            let array = v.to_array(data_type).ok()?;
            let mut key = Vec::new();
            encode_key(&[array], 0, &mut key).ok()?;
            Some(key)
        };
        let mut points: Option<Vec<Vec<u8>>> = None;
        let mut range = KeyRange::default();
        for p in predicates.iter().filter(|p| p.column == column) {
            match &p.op {
                PredicateOp::Eq(v) => points = encode(v).map(|k| vec![k]),
                PredicateOp::In(values) => {
                    points = values.iter().map(encode).collect::<Option<Vec<_>>>()
                }
                PredicateOp::Gt(v) => range.lower = encode(v).map(|k| (k, false)),
                PredicateOp::GtEq(v) => range.lower = encode(v).map(|k| (k, true)),
                PredicateOp::Lt(v) => range.upper = encode(v).map(|k| (k, false)),
                PredicateOp::LtEq(v) => range.upper = encode(v).map(|k| (k, true)),
                PredicateOp::IsNull | PredicateOp::IsNotNull => {}
            }
        }
        let (exact, ranges) = match points {
            Some(points) => (
                true,
                points
                    .into_iter()
                    .map(|k| KeyRange {
                        lower: Some((k.clone(), true)),
                        upper: Some((k, true)),
                    })
                    .collect(),
            ),
            None if range.lower.is_some() || range.upper.is_some() => (false, vec![range]),
            None => continue,
        };
        if best
            .as_ref()
            .is_none_or(|(was_exact, _)| exact && !was_exact)
        {
            let probe = IndexProbe {
                index_id: index.id,
                name: index.name.clone(),
                column,
                exact,
                ranges,
            };
            best = Some((exact, probe));
        }
    }
    best.map(|(_, probe)| probe)
}

/// An entry's key against a value of the first column: equal when the
/// entry starts with it (each column's encoding delimits itself). One
/// comparison of the common prefix: a lookup makes a few hundred.
fn first_column_cmp(entry: &[u8], value: &[u8]) -> Ordering {
    let common = entry.len().min(value.len());
    match entry[..common].cmp(value) {
        Ordering::Equal if entry.len() < value.len() => Ordering::Less,
        other => other,
    }
}

/// Segment rows the index names for the probe, ascending.
fn matching_rows(index: &BTreeIndex, probe: &IndexProbe) -> Vec<u32> {
    let mut rows = Vec::new();
    for range in &probe.ranges {
        if range
            .point()
            .is_some_and(|value| !index.may_hold_first(value))
        {
            continue;
        }
        rows.extend(entries_in(index, range).map(|i| index.row(i)));
    }
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// The positions of the entries whose first column lies in `range`.
fn entries_in(index: &BTreeIndex, range: &KeyRange) -> std::ops::Range<usize> {
    let from = range.lower.as_ref().map_or(0, |(value, inclusive)| {
        index.partition_point(|k| match first_column_cmp(k, value) {
            Ordering::Less => true,
            Ordering::Equal => !inclusive,
            Ordering::Greater => false,
        })
    });
    let to = match (range.point(), &range.upper) {
        // An equality: its entries follow `from`, usually none or few,
        // so they are walked rather than searched for again.
        (Some(value), _) => (from..index.len())
            .find(|&i| first_column_cmp(index.key(i), value) != Ordering::Equal)
            .unwrap_or(index.len()),
        (None, None) => index.len(),
        (None, Some((value, inclusive))) => {
            index.partition_point(|k| match first_column_cmp(k, value) {
                Ordering::Less => true,
                Ordering::Equal => *inclusive,
                Ordering::Greater => false,
            })
        }
    };
    from..to.max(from)
}

/// What a segment's index file says a probe needs read from it.
pub(crate) enum SegmentRows {
    /// The segment has no file of the index: read all of it.
    Unindexed,
    /// Nothing (most segments, for a point lookup): no run is built.
    None,
    /// The rows, as a run in key order.
    Run(RecordBatch),
}

/// The segment's rows the probe selects that are the newest version of
/// their key the snapshot sees, as a run (system columns, then `needed`).
pub(crate) fn segment_run(
    view: &SnapshotView<'_>,
    segment: &SegmentFile,
    probe: &IndexProbe,
    needed: &[usize],
    run_schema: &SchemaRef,
) -> Result<SegmentRows> {
    let Some(index) = file_of(segment, probe.index_id) else {
        return Ok(SegmentRows::Unindexed);
    };
    let rows = matching_rows(&index, probe);
    if rows.is_empty() {
        return Ok(SegmentRows::None);
    }
    let cache = view.cache;
    let starts = segment.row_group_starts();
    if let Some(&last) = rows.last() {
        check_row(segment, &starts, &probe.name, last as usize)?;
    }
    let mut picked = Vec::with_capacity(rows.len());
    let mut at = 0;
    while at < rows.len() {
        let (group, _) = locate(&starts, rows[at] as usize);
        let end = at + rows[at..].partition_point(|&r| (r as usize) < starts[group + 1]);
        let keys_array = segment.column(cache, group, 0)?;
        let seqs_array = segment.column(cache, group, 1)?;
        let (keys, seqs) = (
            keys_array.as_binary::<i32>(),
            seqs_array.as_primitive::<UInt64Type>(),
        );
        for &row in &rows[at..end] {
            let local = row as usize - starts[group];
            if local < keys.len() && view.is_newest(keys.value(local), seqs.value(local))? {
                picked.push(row);
            }
        }
        at = end;
    }
    if picked.is_empty() {
        return Ok(SegmentRows::None);
    }
    rows_as_run(view, segment, &starts, &picked, needed, run_schema).map(SegmentRows::Run)
}

/// `ORDER BY column LIMIT limit`: a scan then needs from each segment only
/// its first `limit` rows in that order that are the newest visible
/// version of their key, and the rows tied with the last of them (a later
/// sort key may order ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRows {
    /// Table column position.
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
    pub limit: usize,
}

/// How a scan that wants [`FirstRows`] walks a B-tree index in order.
pub(crate) struct OrderedWalk<'a> {
    wanted: &'a FirstRows,
    pub index: &'a IndexDef,
    /// A range the predicates set on the ordered column: the walk starts
    /// and ends at its bounds instead of reading every entry before them.
    range: Option<KeyRange>,
}

/// The ordered walk for `wanted`, if a B-tree index orders rows by its
/// column first (floats excluded, as for lookups: `-0` and `0` sort apart
/// when encoded). `probe` is the index lookup the predicates allow: a walk
/// replaces it only when it is a range on the ordered column, which the
/// walk then honours; a lookup of points or of another column stays the
/// narrower read.
pub(crate) fn ordered_walk<'a>(
    def: &'a TableDef,
    wanted: &'a FirstRows,
    probe: Option<&IndexProbe>,
) -> Option<OrderedWalk<'a>> {
    let range = match probe {
        None => None,
        Some(probe) if !probe.exact && probe.column == wanted.column => {
            let [range] = probe.ranges.as_slice() else {
                return None;
            };
            Some(range.clone())
        }
        Some(_) => return None,
    };
    let index = def.indexes.iter().find(|i| {
        i.kind == KIND
            && i.columns[0] as usize == wanted.column
            && !def.schema.field(wanted.column).data_type().is_floating()
    })?;
    Some(OrderedWalk {
        wanted,
        index,
        range,
    })
}

/// The segment's rows the walk asks for, as a run (system columns, then
/// `needed`) in key order: its first `limit` rows in the wanted order
/// that are the newest visible version of their key and satisfy
/// `predicates`, and the rows tied with the last of them (a later sort key
/// may order ties). The scan checks the predicates again, so extra rows
/// are harmless. `None` when the segment has no file of the index or the
/// index cannot tell: NULLs, which it does not hold, would come first, or
/// come last and the non-NULL rows are too few; or when the predicates
/// reject so many rows that reading the segment whole is cheaper.
pub(crate) fn first_rows_run(
    view: &SnapshotView<'_>,
    segment: &SegmentFile,
    walk: &OrderedWalk<'_>,
    predicates: &[Predicate],
    needed: &[usize],
    run_schema: &SchemaRef,
) -> Result<Option<RecordBatch>> {
    let wanted = walk.wanted;
    let Some(file) = file_of(segment, walk.index.id) else {
        return Ok(None);
    };
    // A range on the column rejects its NULLs.
    let has_nulls = walk.range.is_none()
        && segment.row_groups().iter().any(|g| {
            g.columns
                .get(SYSTEM_COLUMNS + wanted.column)
                .is_none_or(|chunk| chunk.null_count > 0)
        });
    if has_nulls && wanted.nulls_first {
        return Ok(None);
    }
    let entries = walk
        .range
        .as_ref()
        .map_or(0..file.len(), |range| entries_in(&file, range));
    let order: Box<dyn Iterator<Item = usize>> = match wanted.descending {
        true => Box::new(entries.rev()),
        false => Box::new(entries),
    };
    let mut checked_columns: Vec<usize> = predicates.iter().map(|p| p.column).collect();
    checked_columns.sort_unstable();
    checked_columns.dedup();
    let mut first = FirstRowsOf {
        view,
        segment,
        starts: segment.row_group_starts(),
        wanted,
        predicates,
        checked_schema: crate::scan::run_schema_for(&view.table.storage_schema, &checked_columns),
        checked_columns,
        picked: Vec::new(),
        unchecked: Vec::new(),
        boundary: None,
    };
    // Rows the predicates reject cost a random read each: past this many,
    // a sequential read of the segment is the cheaper way.
    let give_up = wanted.limit.saturating_mul(64).saturating_add(4096);
    for (walked, entry) in order.enumerate() {
        if let Some(boundary) = &first.boundary {
            if !file.key(entry).starts_with(boundary) {
                break;
            }
        } else if walked >= give_up && !predicates.is_empty() {
            return Ok(None);
        }
        let row = file.row(entry) as usize;
        check_row(segment, &first.starts, &walk.index.name, row)?;
        first.offer(row)?;
    }
    first.check_unchecked()?;
    if first.boundary.is_none() && has_nulls {
        return Ok(None);
    }
    let FirstRowsOf {
        starts, mut picked, ..
    } = first;
    picked.sort_unstable();
    rows_as_run(view, segment, &starts, &picked, needed, run_schema).map(Some)
}

/// One segment's walk for its first rows, as the entries come.
struct FirstRowsOf<'a> {
    view: &'a SnapshotView<'a>,
    segment: &'a SegmentFile,
    starts: Vec<usize>,
    wanted: &'a FirstRows,
    predicates: &'a [Predicate],
    /// The columns the predicates read, and the run schema they are read in.
    checked_columns: Vec<usize>,
    checked_schema: SchemaRef,
    /// Rows kept, in walk order.
    picked: Vec<u32>,
    /// Newest rows not yet checked against the predicates, in walk order:
    /// checked a batch at a time.
    unchecked: Vec<u32>,
    /// The ordered column's encoding in the `limit`-th kept row, once found:
    /// from then on only ties are kept.
    boundary: Option<Vec<u8>>,
}

impl FirstRowsOf<'_> {
    fn offer(&mut self, row: usize) -> Result<()> {
        let (group, _) = locate(&self.starts, row);
        let local = row - self.starts[group];
        let cache = self.view.cache;
        let keys = self.segment.column(cache, group, 0)?;
        let seqs = self.segment.column(cache, group, 1)?;
        if !self.view.is_newest(
            keys.as_binary::<i32>().value(local),
            seqs.as_primitive::<UInt64Type>().value(local),
        )? {
            return Ok(());
        }
        if self.boundary.is_some() || self.predicates.is_empty() {
            return self.keep(row as u32);
        }
        self.unchecked.push(row as u32);
        if self.unchecked.len() >= self.wanted.limit.clamp(32, 1024) {
            self.check_unchecked()?;
        }
        Ok(())
    }

    fn keep(&mut self, row: u32) -> Result<()> {
        self.picked.push(row);
        if self.boundary.is_none() && self.picked.len() >= self.wanted.limit {
            let row = row as usize;
            let (group, _) = locate(&self.starts, row);
            let data_type = self
                .view
                .table
                .def
                .schema
                .field(self.wanted.column)
                .data_type();
            let column =
                self.segment
                    .table_column(self.view.cache, group, self.wanted.column, data_type)?;
            let mut first = Vec::new();
            encode_key(&[column], row - self.starts[group], &mut first)?;
            self.boundary = Some(first);
        }
        Ok(())
    }

    /// Keeps the unchecked rows the predicates admit, and once the boundary
    /// is found every one after it (ties among them).
    fn check_unchecked(&mut self) -> Result<()> {
        if self.unchecked.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.unchecked);
        let admitted = self.admitted(&rows)?;
        for row in rows {
            if self.boundary.is_some() || admitted.binary_search(&row).is_ok() {
                self.keep(row)?;
            }
        }
        Ok(())
    }

    /// Which of `rows` satisfy the predicates, ascending.
    fn admitted(&self, rows: &[u32]) -> Result<Vec<u32>> {
        let mut sorted = rows.to_vec();
        sorted.sort_unstable();
        let run = rows_as_run(
            self.view,
            self.segment,
            &self.starts,
            &sorted,
            &self.checked_columns,
            &self.checked_schema,
        )?;
        let column = |i: usize| Ok(run.column(SYSTEM_COLUMNS + i).clone());
        let mask =
            crate::predicate::predicate_mask(self.predicates, &self.checked_columns, &column)?;
        Ok(match mask {
            Some(mask) => sorted
                .into_iter()
                .enumerate()
                .filter(|&(i, _)| mask.value(i))
                .map(|(_, row)| row)
                .collect(),
            None => sorted,
        })
    }
}

/// The segment's file of B-tree index `index_id`, if it has one.
fn file_of(segment: &SegmentFile, index_id: u32) -> Option<Arc<BTreeIndex>> {
    segment
        .index(index_id)
        .and_then(|i| i.downcast::<BTreeIndex>().ok())
}

/// A row an index names must be in its segment (`starts`: the row groups'
/// first rows, then the row count); a checksummed file that says otherwise
/// is corrupt.
fn check_row(segment: &SegmentFile, starts: &[usize], index: &str, row: usize) -> Result<()> {
    let segment_rows = starts.last().copied().unwrap_or(0);
    if row < segment_rows {
        return Ok(());
    }
    Err(Error::Corruption {
        file: segment.path.clone(),
        offset: 0,
        reason: format!("index \"{index}\" names a row past the segment's {segment_rows} rows"),
    })
}

/// Segment rows `rows` (ascending) as a run: system columns, then `needed`.
fn rows_as_run(
    view: &SnapshotView<'_>,
    segment: &SegmentFile,
    starts: &[usize],
    rows: &[u32],
    needed: &[usize],
    run_schema: &SchemaRef,
) -> Result<RecordBatch> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < rows.len() {
        let (group, _) = locate(starts, rows[at] as usize);
        let end = at + rows[at..].partition_point(|&r| (r as usize) < starts[group + 1]);
        let mut columns = Vec::with_capacity(SYSTEM_COLUMNS + needed.len());
        for c in 0..SYSTEM_COLUMNS {
            columns.push(segment.column(view.cache, group, c)?);
        }
        for &c in needed {
            let data_type = view.table.def.schema.field(c).data_type();
            columns.push(segment.table_column(view.cache, group, c, data_type)?);
        }
        let batch = RecordBatch::try_new(run_schema.clone(), columns)?;
        let (first, last) = (rows[at] as usize, rows[end - 1] as usize);
        if last - first == end - at - 1 {
            // Consecutive rows (one, for most lookups): a slice, no copy.
            batches.push(batch.slice(first - starts[group], end - at));
        } else {
            let take = UInt32Array::from_iter_values(
                rows[at..end].iter().map(|&r| r - starts[group] as u32),
            );
            batches.push(arrow_select::take::take_record_batch(&batch, &take)?);
        }
        at = end;
    }
    match <[RecordBatch; 1]>::try_from(batches) {
        Ok([one]) => Ok(one),
        Err(batches) => Ok(arrow_select::concat::concat_batches(run_schema, &batches)?),
    }
}
