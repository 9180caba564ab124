//! Snapshot scans: sources (in-memory runs and segment row groups) are grouped
//! into units of overlapping key ranges; a unit with one clean source is
//! filtered column-wise, others are merged newest-version-first. Units are
//! independent, so they run in parallel.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::filter::filter_record_batch;
use basalt_formats::scalar::Scalar;
use basalt_formats::segment::{RowGroupMeta, OP_DELETE, SYSTEM_COLUMNS};

use crate::error::Result;
use crate::segment::{ChunkCache, SegmentFile};
use basalt_formats::key::partition_point;

/// A comparison on one table column, used to prune row groups by zone map and
/// then applied exactly to the rows.
#[derive(Debug, Clone, PartialEq)]
pub enum PredicateOp {
    Eq(Scalar),
    Lt(Scalar),
    LtEq(Scalar),
    Gt(Scalar),
    GtEq(Scalar),
    IsNull,
    IsNotNull,
    In(Vec<Scalar>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// Index into the table schema.
    pub column: usize,
    pub op: PredicateOp,
}

/// What a scan returns.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Table column indexes to return; `None` = all.
    pub projection: Option<Vec<usize>>,
    /// Conjunction; every returned row satisfies all of them.
    pub predicates: Vec<Predicate>,
    pub limit: Option<usize>,
    /// Append the encoded key as a trailing `_key` Binary column (for deletes by key).
    pub with_key: bool,
    /// Only the first rows in one column's order are wanted (a sort with a
    /// limit above sorts what the scan returns): a B-tree index on that
    /// column lets segments contribute just their first rows. Used only
    /// without predicates.
    pub first_rows: Option<crate::index::btree::FirstRows>,
}

pub(crate) enum Source {
    /// Already reduced to the newest visible version per key.
    Memory(RecordBatch),
    RowGroup {
        segment: Arc<SegmentFile>,
        group: usize,
    },
}

impl Source {
    fn key_range(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            Source::Memory(run) if run.num_rows() > 0 => {
                let keys = run.column(0).as_binary::<i32>();
                Some((keys.value(0).to_vec(), keys.value(keys.len() - 1).to_vec()))
            }
            Source::Memory(_) => None,
            Source::RowGroup { segment, group } => {
                let meta = &segment.row_groups()[*group];
                Some((meta.min_key.clone(), meta.max_key.clone()))
            }
        }
    }
}

pub(crate) struct ScanContext {
    pub snapshot_seq: u64,
    pub table_schema: SchemaRef,
    /// Table columns decoded: the projection, then predicate-only columns.
    pub needed: Vec<usize>,
    /// System columns, then `needed`.
    pub run_schema: SchemaRef,
    pub projected: usize,
    pub predicates: Vec<Predicate>,
    pub with_key: bool,
    pub output_schema: SchemaRef,
    pub cache: Arc<ChunkCache>,
}

pub struct ScanPlan {
    units: Vec<Vec<Source>>,
    ctx: Arc<ScanContext>,
    limit: Option<usize>,
    index: Option<String>,
}

impl ScanPlan {
    pub(crate) fn new(sources: Vec<Source>, ctx: ScanContext, limit: Option<usize>) -> ScanPlan {
        ScanPlan {
            units: group_overlapping(sources),
            ctx: Arc::new(ctx),
            limit,
            index: None,
        }
    }

    pub(crate) fn with_index(mut self, index: Option<String>) -> ScanPlan {
        self.index = index;
        self
    }

    /// The index the scan reads segments through, if any.
    pub fn index(&self) -> Option<&str> {
        self.index.as_deref()
    }

    pub fn schema(&self) -> SchemaRef {
        self.ctx.output_schema.clone()
    }

    /// Independent pieces of the scan, in key order.
    pub fn num_units(&self) -> usize {
        self.units.len()
    }

    pub fn execute_unit(&self, unit: usize) -> Result<Option<RecordBatch>> {
        apply_mask(self.execute_unit_masked(unit)?)
    }

    /// [`ScanPlan::execute_unit`], but where a row group is filtered
    /// column-wise, its rows come back unfiltered with the mask of those
    /// that satisfy the predicates (`None`: all rows do). A caller that
    /// filters further copies the columns once, for the rows left at the
    /// end, instead of once per filter.
    pub fn execute_unit_masked(
        &self,
        unit: usize,
    ) -> Result<Option<(RecordBatch, Option<BooleanArray>)>> {
        match self.units.get(unit) {
            Some(sources) => execute_unit(&self.ctx, sources),
            None => Ok(None),
        }
    }

    /// Runs every unit, `threads` at a time, and returns the batches in key order.
    pub fn execute(&self, threads: usize) -> Result<Vec<RecordBatch>> {
        if self.limit.is_some() || threads <= 1 || self.units.len() <= 1 {
            return self.execute_sequential();
        }
        let next = AtomicUsize::new(0);
        let results: Vec<parking_lot::Mutex<Option<Result<Option<RecordBatch>>>>> =
            (0..self.units.len())
                .map(|_| parking_lot::Mutex::new(None))
                .collect();
        std::thread::scope(|scope| {
            for _ in 0..threads.min(self.units.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    if i >= self.units.len() {
                        break;
                    }
                    *results[i].lock() = Some(self.execute_unit(i));
                });
            }
        });
        let mut out = Vec::new();
        for slot in results {
            if let Some(batch) = slot.into_inner().transpose()?.flatten() {
                out.push(batch);
            }
        }
        Ok(out)
    }

    fn execute_sequential(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        for unit in 0..self.units.len() {
            if remaining == 0 {
                break;
            }
            if let Some(batch) = self.execute_unit(unit)? {
                let batch = if batch.num_rows() > remaining {
                    batch.slice(0, remaining)
                } else {
                    batch
                };
                remaining -= batch.num_rows();
                out.push(batch);
            }
        }
        Ok(out)
    }
}

/// Splits the scan into independent units. Segment row groups are grouped
/// where their key ranges overlap; in-memory runs are cut along those groups'
/// key ranges, so a few buffered rows join only the units they fall into
/// instead of chaining every row group into one unit.
fn group_overlapping(sources: Vec<Source>) -> Vec<Vec<Source>> {
    if sources.len() == 1 {
        // An index lookup's one run, say: nothing to group it with.
        return vec![sources];
    }
    let (memory, row_groups): (Vec<Source>, Vec<Source>) = sources
        .into_iter()
        .partition(|s| matches!(s, Source::Memory(_)));
    let mut units = group_by_range(row_groups);
    let ranges: Vec<(Vec<u8>, Vec<u8>)> = units.iter().map(|(range, _)| range.clone()).collect();
    let mut leftovers = Vec::new();
    for source in memory {
        let Source::Memory(run) = source else {
            continue;
        };
        let keys = run.column(0).as_binary::<i32>();
        let position =
            |pred: &dyn Fn(&[u8]) -> bool| partition_point(0..keys.len(), |i| pred(keys.value(i)));
        let mut taken = 0;
        for (unit, (lo, hi)) in ranges.iter().enumerate() {
            let start = position(&|k| k < lo.as_slice());
            let end = position(&|k| k <= hi.as_slice());
            if start > taken {
                leftovers.push(Source::Memory(run.slice(taken, start - taken)));
            }
            if end > start {
                units[unit]
                    .1
                    .push(Source::Memory(run.slice(start, end - start)));
            }
            taken = taken.max(end);
        }
        if taken < run.num_rows() {
            leftovers.push(Source::Memory(run.slice(taken, run.num_rows() - taken)));
        }
    }
    // Leftover rows lie outside every row-group unit; they only overlap each other.
    units.extend(group_by_range(leftovers));
    units.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
    units.into_iter().map(|(_, unit)| unit).collect()
}

type KeyRange = (Vec<u8>, Vec<u8>);

/// Sorts sources by first key and groups those whose key ranges overlap.
fn group_by_range(sources: Vec<Source>) -> Vec<(KeyRange, Vec<Source>)> {
    let mut ranged: Vec<(KeyRange, Source)> = sources
        .into_iter()
        .filter_map(|s| s.key_range().map(|r| (r, s)))
        .collect();
    ranged.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
    let mut units: Vec<(KeyRange, Vec<Source>)> = Vec::new();
    for ((min, max), source) in ranged {
        match units.last_mut() {
            Some(((_, unit_max), unit)) if min <= *unit_max => {
                unit.push(source);
                if max > *unit_max {
                    *unit_max = max;
                }
            }
            _ => units.push(((min, max), vec![source])),
        }
    }
    units
}

/// A unit's rows, and (for a row group filtered column-wise) the mask of
/// those satisfying the predicates.
type MaskedBatch = (RecordBatch, Option<BooleanArray>);

fn execute_unit(ctx: &ScanContext, sources: &[Source]) -> Result<Option<MaskedBatch>> {
    if let [Source::RowGroup { segment, group }] = sources {
        let meta = &segment.row_groups()[*group];
        if !row_group_may_match(meta, &ctx.predicates) {
            return Ok(None);
        }
        let clean = meta.unique_keys && !meta.has_tombstones && meta.max_seq <= ctx.snapshot_seq;
        if clean {
            // Nothing to merge: decode predicate columns first and the rest
            // only if some row matches; skip the system columns.
            let column = |position: usize| table_column(ctx, segment, *group, ctx.needed[position]);
            let key = || segment.column(&ctx.cache, *group, 0);
            return finish(ctx, meta.num_rows as usize, column, key);
        }
        let run = decode_row_group(ctx, segment, *group)?;
        return unmasked(finish_run(ctx, merge_runs(ctx, &[run], &[false])?));
    }
    if let Some((segment, group, memory)) = clean_group_and_memory(ctx, sources) {
        return unmasked(clean_group_with_memory(ctx, segment, group, &memory));
    }
    if let [Source::Memory(run)] = sources {
        // One run is already one version per key: only its deletes go.
        return unmasked(finish_run(ctx, without_deletes(run)?));
    }
    let mut runs = Vec::with_capacity(sources.len());
    let mut prefiltered = Vec::with_capacity(sources.len());
    for source in sources {
        match source {
            Source::Memory(run) => {
                runs.push(run.clone());
                prefiltered.push(true);
            }
            Source::RowGroup { segment, group } => {
                runs.push(decode_row_group(ctx, segment, *group)?);
                prefiltered.push(false);
            }
        }
    }
    unmasked(finish_run(ctx, merge_runs(ctx, &runs, &prefiltered)?))
}

/// A run's rows other than deletes; the run itself when it has none (an
/// index lookup's run never does).
fn without_deletes(run: &RecordBatch) -> Result<RecordBatch> {
    let ops = run.column(2).as_primitive::<UInt8Type>();
    if !ops.values().contains(&OP_DELETE) {
        return Ok(run.clone());
    }
    let live: BooleanArray = ops
        .values()
        .iter()
        .map(|&op| Some(op != OP_DELETE))
        .collect();
    Ok(filter_record_batch(run, &live)?)
}

fn unmasked(batch: Result<Option<RecordBatch>>) -> Result<Option<MaskedBatch>> {
    Ok(batch?.map(|batch| (batch, None)))
}

/// The rows of a masked batch that its mask selects.
fn apply_mask(masked: Option<MaskedBatch>) -> Result<Option<RecordBatch>> {
    Ok(match masked {
        Some((batch, Some(selected))) => Some(filter_record_batch(&batch, &selected)?),
        Some((batch, None)) => Some(batch),
        None => None,
    })
}

/// The parts of a unit made of exactly one clean row group and memory runs.
fn clean_group_and_memory<'a>(
    ctx: &ScanContext,
    sources: &'a [Source],
) -> Option<(&'a SegmentFile, usize, Vec<RecordBatch>)> {
    let mut group = None;
    let mut memory = Vec::new();
    for source in sources {
        match source {
            Source::Memory(run) => memory.push(run.clone()),
            Source::RowGroup { segment, group: g } => {
                let meta = &segment.row_groups()[*g];
                let clean =
                    meta.unique_keys && !meta.has_tombstones && meta.max_seq <= ctx.snapshot_seq;
                if group.is_some() || !clean {
                    return None;
                }
                group = Some((segment.as_ref(), *g));
            }
        }
    }
    let (segment, g) = group?;
    // Memory shadows the group only if it is newer, which a bulk load's
    // segment need not be.
    let group_max_seq = segment.row_groups()[g].max_seq;
    let memory_newer = memory.iter().all(|run| {
        arrow_arith::aggregate::min(run.column(1).as_primitive::<UInt64Type>())
            .is_none_or(|seq| seq > group_max_seq)
    });
    memory_newer.then_some((segment, g, memory))
}

/// One table column of a row group, as the scan's table schema types it.
fn table_column(
    ctx: &ScanContext,
    segment: &SegmentFile,
    group: usize,
    column: usize,
) -> Result<ArrayRef> {
    segment.table_column(
        &ctx.cache,
        group,
        column,
        ctx.table_schema.field(column).data_type(),
    )
}

/// The system columns and the needed table columns of one row group. Columns
/// added to the table after the segment was written read as nulls.
fn decode_row_group(ctx: &ScanContext, segment: &SegmentFile, group: usize) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(SYSTEM_COLUMNS + ctx.needed.len());
    for c in 0..SYSTEM_COLUMNS {
        columns.push(segment.column(&ctx.cache, group, c)?);
    }
    for &c in &ctx.needed {
        columns.push(table_column(ctx, segment, group, c)?);
    }
    Ok(RecordBatch::try_new(run_schema(ctx), columns)?)
}

/// The schema of a run holding `needed` of a table whose storage schema
/// (system columns, then the table's) is `full`.
pub(crate) fn run_schema_for(full: &Schema, needed: &[usize]) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = full.fields()[..SYSTEM_COLUMNS].to_vec();
    fields.extend(
        needed
            .iter()
            .map(|&c| full.fields()[SYSTEM_COLUMNS + c].clone()),
    );
    Arc::new(Schema::new(fields))
}

fn run_schema(ctx: &ScanContext) -> SchemaRef {
    ctx.run_schema.clone()
}

struct HeapEntry<'a> {
    key: &'a [u8],
    seq: u64,
    run: usize,
    row: usize,
}

impl PartialEq for HeapEntry<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapEntry<'_> {}
impl PartialOrd for HeapEntry<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry<'_> {
    /// Reversed for BinaryHeap (a max-heap): smallest key, then highest seq, first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(self.key)
            .then_with(|| self.seq.cmp(&other.seq))
            .then_with(|| other.run.cmp(&self.run))
    }
}

/// Merges sorted runs, keeping for each key the newest version visible to the
/// snapshot, and dropping keys whose newest visible version is a delete.
fn merge_runs(
    ctx: &ScanContext,
    runs: &[RecordBatch],
    prefiltered: &[bool],
) -> Result<RecordBatch> {
    let picks = merge_picks(runs, |run, seq| prefiltered[run] || seq <= ctx.snapshot_seq);
    take_picks(runs, &picks, &run_schema(ctx))
}

/// Visits every row of the sorted runs in (key ascending, sequence
/// descending) order: `visit(key, seq, op, run, row)`.
pub(crate) fn merge_walk<'a>(
    runs: &'a [RecordBatch],
    mut visit: impl FnMut(&'a [u8], u64, u8, usize, usize),
) {
    let keys: Vec<_> = runs
        .iter()
        .map(|r| r.column(0).as_binary::<i32>())
        .collect();
    let seqs: Vec<_> = runs
        .iter()
        .map(|r| r.column(1).as_primitive::<UInt64Type>())
        .collect();
    let ops: Vec<_> = runs
        .iter()
        .map(|r| r.column(2).as_primitive::<UInt8Type>())
        .collect();
    let entry = |run: usize, row: usize| HeapEntry {
        key: keys[run].value(row),
        seq: seqs[run].value(row),
        run,
        row,
    };
    let mut heap: BinaryHeap<HeapEntry> = (0..runs.len())
        .filter(|&r| runs[r].num_rows() > 0)
        .map(|r| entry(r, 0))
        .collect();
    while let Some(top) = heap.pop() {
        if top.row + 1 < runs[top.run].num_rows() {
            heap.push(entry(top.run, top.row + 1));
        }
        visit(
            top.key,
            top.seq,
            ops[top.run].value(top.row),
            top.run,
            top.row,
        );
    }
}

/// The (run, row) of each key's newest version for which `visible(run, seq)`
/// holds, leaving out keys whose newest visible version is a delete.
pub(crate) fn merge_picks(
    runs: &[RecordBatch],
    visible: impl Fn(usize, u64) -> bool,
) -> Vec<(usize, usize)> {
    let mut picks = Vec::new();
    let mut decided: Option<&[u8]> = None;
    merge_walk(runs, |key, seq, op, run, row| {
        if decided == Some(key) || !visible(run, seq) {
            return;
        }
        decided = Some(key);
        if op != OP_DELETE {
            picks.push((run, row));
        }
    });
    picks
}

pub(crate) fn take_picks(
    runs: &[RecordBatch],
    picks: &[(usize, usize)],
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    if picks.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let columns = (0..schema.fields().len())
        .map(|c| {
            let sources: Vec<&dyn Array> = runs.iter().map(|r| r.column(c).as_ref()).collect();
            arrow_select::interleave::interleave(&sources, picks)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// [`finish`] over a merged run (system columns, then the needed columns).
fn finish_run(ctx: &ScanContext, run: RecordBatch) -> Result<Option<RecordBatch>> {
    let column = |position: usize| Ok(run.column(SYSTEM_COLUMNS + position).clone());
    let key = || Ok(run.column(0).clone());
    apply_mask(finish(ctx, run.num_rows(), column, key)?)
}

/// Applies the predicates exactly and shapes the output, leaving the rows
/// unfiltered with the mask of those that pass. `column(i)` gives the
/// `i`-th needed column, `key()` the encoded keys; both are asked for only
/// when some row matches.
fn finish(
    ctx: &ScanContext,
    rows: usize,
    column: impl Fn(usize) -> Result<ArrayRef>,
    key: impl FnOnce() -> Result<ArrayRef>,
) -> Result<Option<MaskedBatch>> {
    let mask = predicate_mask(ctx, &column)?;
    let selected = mask.as_ref().map_or(rows, |m| m.true_count());
    if selected == 0 {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(ctx.projected + 1);
    for i in 0..ctx.projected {
        columns.push(column(i)?);
    }
    if ctx.with_key {
        columns.push(key()?);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    let batch = RecordBatch::try_new_with_options(ctx.output_schema.clone(), columns, &options)?;
    Ok(Some((batch, mask.filter(|_| selected < rows))))
}

/// Rows satisfying every predicate; `None` when there are no predicates.
/// `column(i)` gives the `i`-th needed column.
fn predicate_mask(
    ctx: &ScanContext,
    column: &dyn Fn(usize) -> Result<ArrayRef>,
) -> Result<Option<BooleanArray>> {
    crate::predicate::predicate_mask(&ctx.predicates, &ctx.needed, column)
}

/// Row indexes where `mask` is set (every row when there is no mask).
fn selected_rows(mask: Option<&BooleanArray>, rows: usize) -> Vec<usize> {
    match mask {
        Some(m) => (0..rows).filter(|&i| m.value(i)).collect(),
        None => (0..rows).collect(),
    }
}

/// A unit of one clean row group plus buffered rows from memory: the row
/// group is filtered without a full merge, rows whose key was rewritten in
/// memory are dropped from it, and the two sorted survivor lists are merged
/// by key.
fn clean_group_with_memory(
    ctx: &ScanContext,
    segment: &SegmentFile,
    group: usize,
    memory: &[RecordBatch],
) -> Result<Option<RecordBatch>> {
    // Newest version per key across the memory runs, deletes included.
    let mut newest = Vec::new();
    let mut last: Option<&[u8]> = None;
    merge_walk(memory, |key, _, _, run, row| {
        if last != Some(key) {
            last = Some(key);
            newest.push((run, row));
        }
    });
    let memory = take_picks(memory, &newest, &run_schema(ctx))?;
    let memory_keys = memory.column(0).as_binary::<i32>();
    let memory_ops = memory.column(2).as_primitive::<UInt8Type>();

    let rows = segment.row_groups()[group].num_rows as usize;
    let group_column = |position: usize| table_column(ctx, segment, group, ctx.needed[position]);
    let group_key_array = segment.column(&ctx.cache, group, 0)?;
    let group_keys = group_key_array.as_binary::<i32>();
    let group_mask = predicate_mask(ctx, &group_column)?;
    let mut shadowed = vec![false; rows];
    for i in 0..memory.num_rows() {
        let key = memory_keys.value(i);
        let at = partition_point(0..rows, |r| group_keys.value(r) < key);
        if at < rows && group_keys.value(at) == key {
            shadowed[at] = true;
        }
    }
    let group_rows: Vec<usize> = selected_rows(group_mask.as_ref(), rows)
        .into_iter()
        .filter(|&r| !shadowed[r])
        .collect();
    let memory_column = |position: usize| Ok(memory.column(SYSTEM_COLUMNS + position).clone());
    let memory_mask = predicate_mask(ctx, &memory_column)?;
    let memory_rows: Vec<usize> = selected_rows(memory_mask.as_ref(), memory.num_rows())
        .into_iter()
        .filter(|&r| memory_ops.value(r) != OP_DELETE)
        .collect();
    if group_rows.is_empty() && memory_rows.is_empty() {
        return Ok(None);
    }
    // Both lists are in key order and share no key.
    let mut picks = Vec::with_capacity(group_rows.len() + memory_rows.len());
    let (mut g, mut m) = (0, 0);
    while g < group_rows.len() || m < memory_rows.len() {
        let take_group = m == memory_rows.len()
            || (g < group_rows.len()
                && group_keys.value(group_rows[g]) < memory_keys.value(memory_rows[m]));
        if take_group {
            picks.push((0, group_rows[g]));
            g += 1;
        } else {
            picks.push((1, memory_rows[m]));
            m += 1;
        }
    }
    let mut columns = Vec::with_capacity(ctx.projected + 1);
    for i in 0..ctx.projected {
        let sources = [group_column(i)?, memory_column(i)?];
        columns.push(arrow_select::interleave::interleave(
            &[sources[0].as_ref(), sources[1].as_ref()],
            &picks,
        )?);
    }
    if ctx.with_key {
        let sources: [&dyn Array; 2] = [group_key_array.as_ref(), memory.column(0).as_ref()];
        columns.push(arrow_select::interleave::interleave(&sources, &picks)?);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(picks.len()));
    Ok(Some(RecordBatch::try_new_with_options(
        ctx.output_schema.clone(),
        columns,
        &options,
    )?))
}

/// False when the zone maps prove no row of the group satisfies the predicates.
pub(crate) fn row_group_may_match(meta: &RowGroupMeta, predicates: &[Predicate]) -> bool {
    predicates.iter().all(|p| {
        let Some(chunk) = meta.columns.get(SYSTEM_COLUMNS + p.column) else {
            // Column added after this segment: all nulls.
            return matches!(p.op, PredicateOp::IsNull);
        };
        let all_null = chunk.null_count == meta.num_rows;
        let cmp =
            |bound: &Option<Scalar>, v: &Scalar| bound.as_ref().and_then(|b| b.partial_cmp_same(v));
        let eq_possible = |v: &Scalar| {
            !all_null
                && cmp(&chunk.min, v) != Some(Ordering::Greater)
                && cmp(&chunk.max, v) != Some(Ordering::Less)
        };
        match &p.op {
            PredicateOp::Eq(v) => eq_possible(v),
            PredicateOp::In(vs) => vs.iter().any(eq_possible),
            PredicateOp::Lt(v) => {
                !all_null
                    && cmp(&chunk.min, v) != Some(Ordering::Greater)
                    && cmp(&chunk.min, v) != Some(Ordering::Equal)
            }
            PredicateOp::LtEq(v) => !all_null && cmp(&chunk.min, v) != Some(Ordering::Greater),
            PredicateOp::Gt(v) => {
                !all_null
                    && cmp(&chunk.max, v) != Some(Ordering::Less)
                    && cmp(&chunk.max, v) != Some(Ordering::Equal)
            }
            PredicateOp::GtEq(v) => !all_null && cmp(&chunk.max, v) != Some(Ordering::Less),
            PredicateOp::IsNull => chunk.null_count > 0,
            PredicateOp::IsNotNull => !all_null,
        }
    })
}

/// Output schema of a scan: projected table fields, then `_key` if asked.
pub(crate) fn output_schema(
    table_schema: &Schema,
    projection: &[usize],
    with_key: bool,
) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = projection
        .iter()
        .map(|&c| table_schema.fields()[c].clone())
        .collect();
    if with_key {
        fields.push(Arc::new(Field::new(
            basalt_formats::segment::KEY_COLUMN,
            DataType::Binary,
            false,
        )));
    }
    Arc::new(Schema::new_with_metadata(
        fields,
        table_schema.metadata().clone(),
    ))
}
