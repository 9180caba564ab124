//! HNSW indexes beside segments and nearest-neighbour search over a snapshot.
//!
//! An index is declared on a vector column (`FixedSizeList<Float32>`) by the
//! field's `basalt.hnsw` metadata. Each segment written afterwards (flush,
//! compaction, bulk load) gets an index file built from its rows, recorded by
//! the same manifest edit that adds the segment. A search ranks each
//! segment's rows through its graph (or by comparing every row, when the
//! filter admits few rows or the segment has no index), compares memtable
//! rows directly, and keeps only rows visible in the snapshot.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, BooleanArray, FixedSizeListArray, RecordBatch};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt_formats::distance::Metric;
use basalt_formats::hnsw::{self, HnswIndex, HnswParams, Scored};
use basalt_formats::manifest::TableDef;
use basalt_formats::segment::{OP_DELETE, SYSTEM_COLUMNS};

use crate::db::TableState;
use crate::durable_file::PendingFile;
use crate::error::{Error, IoContext, Result};
use crate::segment::{ChunkCache, SegmentFile};

/// Field metadata declaring an HNSW index on the column.
pub const HNSW_KEY: &str = "basalt.hnsw";

/// An index a table declares.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    /// Index into the table schema.
    pub column: usize,
    /// The id index files are named and recorded by: the column's position,
    /// which never changes (columns are only ever appended).
    pub column_id: u32,
    pub params: HnswParams,
}

/// `name=...;metric=l2;m=16;ef_construction=64`.
pub fn encode_spec(name: &str, params: &HnswParams) -> String {
    let metric = match params.metric {
        Metric::L2 => "l2",
        Metric::Cosine => "cosine",
        Metric::InnerProduct => "ip",
    };
    format!(
        "name={name};metric={metric};m={};ef_construction={}",
        params.m, params.ef_construction
    )
}

fn decode_spec(text: &str) -> Option<(String, HnswParams)> {
    let mut name = None;
    let mut params = HnswParams::new(Metric::L2);
    for part in text.split(';') {
        let (key, value) = part.split_once('=')?;
        match key {
            "name" => name = Some(value.to_string()),
            "metric" => {
                params.metric = match value {
                    "l2" => Metric::L2,
                    "cosine" => Metric::Cosine,
                    "ip" => Metric::InnerProduct,
                    _ => return None,
                }
            }
            "m" => params.m = value.parse().ok()?,
            "ef_construction" => params.ef_construction = value.parse().ok()?,
            _ => {}
        }
    }
    Some((name?, params))
}

/// The indexes a table declares, by column.
pub fn index_specs(def: &TableDef) -> Vec<IndexSpec> {
    def.schema
        .fields()
        .iter()
        .enumerate()
        .filter_map(|(column, field)| {
            let (name, params) = decode_spec(field.metadata().get(HNSW_KEY)?)?;
            Some(IndexSpec {
                name,
                column,
                column_id: column as u32,
                params,
            })
        })
        .collect()
}

pub(crate) fn index_path(dir: &Path, segment_id: u64, column_id: u32) -> PathBuf {
    dir.join(format!("{segment_id:06}.c{column_id}.hnsw"))
}

/// Threads an index build may use.
pub(crate) fn build_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The non-null vectors of `column` (a storage-schema column: a run's or a
/// segment's), flattened, with their row numbers.
fn collect_vectors(
    column: &dyn Array,
    ops: Option<&dyn Array>,
) -> Result<(usize, Vec<f32>, Vec<u32>)> {
    let DataType::FixedSizeList(_, dims) = column.data_type() else {
        return Err(Error::InvalidArgument(format!(
            "an HNSW index needs a vector column, not {}",
            column.data_type()
        )));
    };
    let dims = *dims as usize;
    let list = column.as_fixed_size_list();
    // Rows are read as float4 below.
    if list.values().as_primitive_opt::<Float32Type>().is_none() {
        return Err(Error::InvalidArgument(
            "an HNSW index needs float4 vector elements".into(),
        ));
    }
    let deletes = ops.map(|o| o.as_primitive::<UInt8Type>());
    let mut vectors = Vec::with_capacity(list.len() * dims);
    let mut rows = Vec::with_capacity(list.len());
    for row in 0..list.len() {
        let deleted = deletes.is_some_and(|d| d.value(row) == OP_DELETE);
        if list.is_null(row) || deleted {
            continue;
        }
        vectors.extend_from_slice(basalt_formats::distance::vector_at(list, row));
        rows.push(row as u32);
    }
    Ok((dims, vectors, rows))
}

/// Builds and durably writes one index file from a column's rows.
fn write_index(
    dir: &Path,
    segment_id: u64,
    spec: &IndexSpec,
    column: &dyn Array,
    ops: Option<&dyn Array>,
) -> Result<PathBuf> {
    let (dims, vectors, rows) = collect_vectors(column, ops)?;
    let (file, mut out) = PendingFile::create(&index_path(dir, segment_id, spec.column_id))?;
    hnsw::build(
        spec.params,
        dims,
        &vectors,
        &rows,
        build_threads(),
        &mut out,
    )
    .map_err(|e| Error::in_file(file.tmp(), 0, e))?;
    file.install(out)
}

/// Builds the indexes `def` declares for a sorted run about to become
/// segment `segment_id` (flush, bulk load). Returns the indexed column ids.
pub(crate) fn index_run(
    dir: &Path,
    segment_id: u64,
    def: &TableDef,
    run: &RecordBatch,
) -> Result<Vec<u32>> {
    let mut built = Vec::new();
    for spec in index_specs(def) {
        let column = run.column(SYSTEM_COLUMNS + spec.column);
        write_index(
            dir,
            segment_id,
            &spec,
            column.as_ref(),
            Some(run.column(2).as_ref()),
        )?;
        built.push(spec.column_id);
    }
    Ok(built)
}

/// Builds the indexes `specs` name for a written segment (compaction,
/// CREATE INDEX) and attaches them.
pub(crate) fn index_segment(
    dir: &Path,
    cache: &ChunkCache,
    segment: &SegmentFile,
    def: &TableDef,
    specs: &[IndexSpec],
) -> Result<Vec<u32>> {
    let mut built = Vec::new();
    for spec in specs {
        let data_type = def.schema.field(spec.column).data_type();
        let mut columns = Vec::new();
        let mut ops = Vec::new();
        for group in 0..segment.row_groups().len() {
            columns.push(segment.table_column(cache, group, spec.column, data_type)?);
            ops.push(segment.column(cache, group, 2)?);
        }
        let column = concat(&columns, data_type)?;
        let ops = concat(&ops, &DataType::UInt8)?;
        let path = write_index(dir, segment.id, spec, column.as_ref(), Some(ops.as_ref()))?;
        segment.attach_index(spec.column_id, open_index(&path)?, path);
        built.push(spec.column_id);
    }
    Ok(built)
}

fn concat(arrays: &[ArrayRef], data_type: &DataType) -> Result<ArrayRef> {
    if arrays.is_empty() {
        return Ok(arrow_array::new_empty_array(data_type));
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(arrow_select::concat::concat(&refs)?)
}

/// Maps an index file and checks it.
/// Index files at least this large are copied into memory backed by huge
/// pages instead of being read in place (see `load_index`).
const HUGE_PAGE_COPY_MIN: u64 = 32 << 20;

pub(crate) fn open_index(path: &Path) -> Result<Arc<HnswIndex>> {
    let file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let buffer = if len >= HUGE_PAGE_COPY_MIN {
        load_index(file, len).at(path)?
    } else {
        crate::mapped::map_file(&file).at(path)?
    };
    HnswIndex::open(buffer)
        .map(Arc::new)
        .map_err(|e| Error::in_file(path, 0, e))
}

/// A graph walk touches one node after another at random across the whole
/// file; with 4 KiB pages nearly every step also misses the TLB. Copied
/// into anonymous memory advised to use huge pages, a million-vector
/// search answered about 17% more queries per second (benches/RESULTS.md).
/// Opening reads the whole file for its checksum anyway, so the copy adds
/// little time; it costs resident memory the page cache could have shared.
fn load_index(mut file: File, len: u64) -> std::io::Result<Buffer> {
    use std::io::Read;
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("index file too large"))?;
    let mut memory = memmap2::MmapMut::map_anon(len)?;
    #[cfg(target_os = "linux")]
    {
        // Only a hint: without transparent huge pages the copy still works.
        let _ = memory.advise(memmap2::Advice::HugePage);
    }
    file.read_exact(&mut memory[..])?;
    Ok(crate::mapped::buffer_over(Arc::new(
        memory.make_read_only()?,
    )))
}

/// What to find.
#[derive(Debug, Clone)]
pub struct VectorQuery {
    /// The vector column, as an index into the table schema.
    pub column: usize,
    pub metric: Metric,
    pub query: Vec<f32>,
    pub k: usize,
    /// Candidates the graph search keeps (hnsw.ef_search).
    pub ef_search: usize,
    /// Table columns to return, in this order.
    pub projection: Vec<usize>,
    /// Table columns the filter reads, in the order its batch has them.
    pub filter_columns: Vec<usize>,
}

/// Says which rows of a batch of `filter_columns` qualify.
pub type RowFilter<'a> =
    &'a (dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, String> + Sync);

/// How a search went, for EXPLAIN ANALYZE.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorSearchStats {
    /// Segments searched through their graph.
    pub graph_segments: usize,
    /// Segments whose rows were all compared (selective filter or no index).
    pub exact_segments: usize,
    /// Graph searches that found fewer than k rows and were redone exactly.
    pub fallbacks: usize,
    /// Rows compared in memtables.
    pub memory_rows: usize,
}

/// The k nearest visible rows, nearest first.
#[derive(Debug)]
pub struct VectorHits {
    pub batch: RecordBatch,
    pub stats: VectorSearchStats,
}

#[derive(Clone, Copy)]
enum Place {
    Memory {
        run: usize,
        row: usize,
    },
    Segment {
        segment: usize,
        row: u32,
        node: Option<u32>,
    },
}

#[derive(Clone, Copy)]
struct Hit {
    rank: f32,
    place: Place,
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.rank.total_cmp(&other.rank).is_eq()
    }
}
impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.total_cmp(&other.rank)
    }
}

/// Keeps the k best hits seen.
struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
}

impl TopK {
    fn offer(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if self.heap.peek().is_some_and(|worst| hit.rank < worst.rank) {
            self.heap.pop();
            self.heap.push(hit);
        }
    }
}

/// Whether a key is among a transaction's writes.
pub(crate) type KeyTest<'a> = &'a dyn Fn(&[u8]) -> bool;

pub(crate) struct SearchInput<'a> {
    pub cache: &'a ChunkCache,
    pub table: &'a TableState,
    pub seq: u64,
    /// Runs newest first: a transaction's own writes, then memtables.
    pub memory: Vec<RecordBatch>,
    /// The keys a transaction has written, which hide every stored version.
    pub pending_keys: Option<KeyTest<'a>>,
    /// Which memory runs hold a transaction's own writes (always visible).
    pub own_runs: usize,
}

pub(crate) fn search(
    input: &SearchInput<'_>,
    query: &VectorQuery,
    filter: Option<RowFilter<'_>>,
) -> Result<VectorHits> {
    let table = input.table;
    let field = table.def.schema.field(query.column);
    if !matches!(field.data_type(), DataType::FixedSizeList(_, n) if *n as usize == query.query.len())
    {
        return Err(Error::InvalidArgument(format!(
            "column \"{}\" does not hold vectors of {} dimensions",
            field.name(),
            query.query.len()
        )));
    }
    let segments: Vec<&Arc<SegmentFile>> = table
        .segments()
        .filter(|s| s.summary().min_seq <= input.seq)
        .collect();
    let mut stats = VectorSearchStats::default();
    let mut best = TopK {
        k: query.k,
        heap: BinaryHeap::new(),
    };
    let checker = Visibility {
        input,
        segments: &segments,
    };
    for (run_index, run) in input.memory.iter().enumerate() {
        stats.memory_rows += run.num_rows();
        search_memory(&checker, run_index, run, query, filter, &mut best)?;
    }
    for (i, segment) in segments.iter().enumerate() {
        search_segment(&checker, i, segment, query, filter, &mut best, &mut stats)?;
    }
    let hits = best.heap.into_sorted_vec();
    let batch = materialize(input, &segments, query, &hits)?;
    Ok(VectorHits { batch, stats })
}

/// Decides whether a stored version is the one the snapshot sees.
struct Visibility<'a> {
    input: &'a SearchInput<'a>,
    segments: &'a [&'a Arc<SegmentFile>],
}

impl Visibility<'_> {
    /// True when no other source can hold a newer version of any key of
    /// segment `i`, and the segment has one version per key, no tombstones
    /// and nothing newer than the snapshot.
    fn segment_is_clean(&self, i: usize) -> bool {
        let segment = self.segments[i];
        let summary = segment.summary();
        let own_clean = summary.max_seq <= self.input.seq
            && segment
                .row_groups()
                .iter()
                .all(|g| g.unique_keys && !g.has_tombstones);
        let overlaps = |lo: &[u8], hi: &[u8]| {
            lo <= summary.max_key.as_slice() && hi >= summary.min_key.as_slice()
        };
        let others_older = self.segments.iter().enumerate().all(|(j, other)| {
            let s = other.summary();
            j == i || s.max_seq <= summary.min_seq || !overlaps(&s.min_key, &s.max_key)
        });
        let memory_disjoint = self.input.memory.iter().all(|run| {
            let keys = run.column(0).as_binary::<i32>();
            keys.is_empty() || !overlaps(keys.value(0), keys.value(keys.len() - 1))
        });
        own_clean && others_older && memory_disjoint
    }

    /// Whether version `seq` of `key` is the newest the snapshot sees.
    fn is_newest(&self, key: &[u8], seq: u64) -> Result<bool> {
        if self.input.pending_keys.is_some_and(|hides| hides(key)) {
            return Ok(false);
        }
        let table = self.input.table;
        let snapshot = self.input.seq;
        let in_memory = table
            .memtables()
            .find_map(|m| m.get(key, snapshot))
            .map(|v| v.0);
        if in_memory.is_some_and(|m| m > seq) {
            return Ok(false);
        }
        for segment in table.segments() {
            let summary = segment.summary();
            if summary.min_seq > snapshot || summary.max_seq <= seq {
                continue;
            }
            if let Some((group, row)) = segment.find(self.input.cache, key, snapshot)? {
                let version = segment
                    .column(self.input.cache, group, 1)?
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

/// A filter's verdict on each row of a batch of the table's columns.
fn filter_mask(
    filter: Option<RowFilter<'_>>,
    query: &VectorQuery,
    column: &dyn Fn(usize) -> Result<ArrayRef>,
    rows: usize,
) -> Result<Option<BooleanArray>> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    let columns = query
        .filter_columns
        .iter()
        .map(|&c| column(c))
        .collect::<Result<Vec<_>>>()?;
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    let mask = filter(&batch).map_err(Error::InvalidArgument)?;
    Ok(Some(mask))
}

fn passes(mask: Option<&BooleanArray>, row: usize) -> bool {
    mask.is_none_or(|m| m.is_valid(row) && m.value(row))
}

fn search_memory(
    checker: &Visibility<'_>,
    run_index: usize,
    run: &RecordBatch,
    query: &VectorQuery,
    filter: Option<RowFilter<'_>>,
    best: &mut TopK,
) -> Result<()> {
    // Memory runs carry the system columns, then every table column.
    let column = |c: usize| Ok(run.column(SYSTEM_COLUMNS + c).clone());
    let mask = filter_mask(filter, query, &column, run.num_rows())?;
    let vectors = run
        .column(SYSTEM_COLUMNS + query.column)
        .as_fixed_size_list()
        .clone();
    let keys = run.column(0).as_binary::<i32>();
    let seqs = run.column(1).as_primitive::<UInt64Type>();
    let ops = run.column(2).as_primitive::<UInt8Type>();
    let own = run_index < checker.input.own_runs;
    for row in 0..run.num_rows() {
        if ops.value(row) == OP_DELETE || vectors.is_null(row) || !passes(mask.as_ref(), row) {
            continue;
        }
        let rank = query.metric.rank(
            &query.query,
            basalt_formats::distance::vector_at(&vectors, row),
        );
        if best.heap.len() >= best.k && best.heap.peek().is_some_and(|w| rank >= w.rank) {
            continue;
        }
        if !own && !checker.is_newest(keys.value(row), seqs.value(row))? {
            continue;
        }
        best.offer(Hit {
            rank,
            place: Place::Memory {
                run: run_index,
                row,
            },
        });
    }
    Ok(())
}

/// Row-group boundaries of a segment, for turning a segment row into
/// (group, offset).
fn group_starts(segment: &SegmentFile) -> Vec<usize> {
    let mut starts = Vec::with_capacity(segment.row_groups().len() + 1);
    let mut at = 0;
    starts.push(0);
    for g in segment.row_groups() {
        at += g.num_rows as usize;
        starts.push(at);
    }
    starts
}

fn locate(starts: &[usize], row: usize) -> (usize, usize) {
    let group = starts.partition_point(|&s| s <= row).saturating_sub(1);
    (group, row - starts[group])
}

fn search_segment(
    checker: &Visibility<'_>,
    index: usize,
    segment: &SegmentFile,
    query: &VectorQuery,
    filter: Option<RowFilter<'_>>,
    best: &mut TopK,
    stats: &mut VectorSearchStats,
) -> Result<()> {
    let cache = checker.input.cache;
    let table = checker.input.table;
    let starts = group_starts(segment);
    let mut mask = Vec::new();
    if filter.is_some() {
        for group in 0..segment.row_groups().len() {
            let rows = segment.row_groups()[group].num_rows as usize;
            let column = |c: usize| {
                segment.table_column(cache, group, c, table.def.schema.field(c).data_type())
            };
            if let Some(m) = filter_mask(filter, query, &column, rows)? {
                mask.extend((0..rows).map(|r| passes(Some(&m), r)));
            }
        }
    }
    let clean = checker.segment_is_clean(index);
    let mut failure = None;
    let mut visible = |row: usize| -> bool {
        if clean || failure.is_some() {
            return failure.is_none();
        }
        let (group, offset) = locate(&starts, row);
        let check = (|| -> Result<bool> {
            let seq = segment
                .column(cache, group, 1)?
                .as_primitive::<UInt64Type>()
                .value(offset);
            if seq > checker.input.seq {
                return Ok(false);
            }
            let op = segment
                .column(cache, group, 2)?
                .as_primitive::<UInt8Type>()
                .value(offset);
            if op == OP_DELETE {
                return Ok(false);
            }
            let keys = segment.column(cache, group, 0)?;
            checker.is_newest(keys.as_binary::<i32>().value(offset), seq)
        })();
        match check {
            Ok(v) => v,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    };
    let graph = segment
        .index(query.column as u32)
        .filter(|g| g.params.metric == query.metric && g.dims == query.query.len());
    let Some(graph) = graph else {
        stats.exact_segments += 1;
        let found = exact_without_index(
            segment,
            index,
            query,
            &starts,
            &mask,
            &mut visible,
            cache,
            table,
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        found.into_iter().for_each(|h| best.offer(h));
        return Ok(());
    };
    let admitted = if mask.is_empty() {
        graph.len()
    } else {
        graph.rows().iter().filter(|&&r| mask[r as usize]).count()
    };
    let mut check_row = |node: u32| {
        let row = graph.row(node) as usize;
        (mask.is_empty() || mask[row]) && visible(row)
    };
    // A clean segment without a filter admits every node.
    let mut admit_all = |_: u32| true;
    let accept: &mut dyn FnMut(u32) -> bool = if clean && mask.is_empty() {
        &mut admit_all
    } else {
        &mut check_row
    };
    let selective =
        !mask.is_empty() && (admitted * 10 <= graph.len() || admitted <= 2 * query.ef_search);
    let found: Vec<Scored> = if selective {
        stats.exact_segments += 1;
        graph.exact(&query.query, query.k, accept)
    } else {
        stats.graph_segments += 1;
        let mut found = graph.search(&query.query, query.ef_search.max(query.k), accept);
        found.truncate(query.k);
        if found.len() < query.k.min(admitted) {
            // The walk ran out of reachable admitted nodes: compare them all.
            stats.fallbacks += 1;
            found = graph.exact(&query.query, query.k, accept);
        }
        found
    };
    if let Some(e) = failure {
        return Err(e);
    }
    for s in found {
        best.offer(Hit {
            rank: s.rank,
            place: Place::Segment {
                segment: index,
                row: graph.row(s.node),
                node: Some(s.node),
            },
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn exact_without_index(
    segment: &SegmentFile,
    index: usize,
    query: &VectorQuery,
    starts: &[usize],
    mask: &[bool],
    visible: &mut dyn FnMut(usize) -> bool,
    cache: &ChunkCache,
    table: &TableState,
) -> Result<Vec<Hit>> {
    let mut best = TopK {
        k: query.k,
        heap: BinaryHeap::new(),
    };
    let data_type = table.def.schema.field(query.column).data_type();
    for (group, &start) in starts.iter().take(segment.row_groups().len()).enumerate() {
        let column = segment.table_column(cache, group, query.column, data_type)?;
        let vectors = column.as_fixed_size_list();
        for offset in 0..vectors.len() {
            let row = start + offset;
            if vectors.is_null(offset) || !(mask.is_empty() || mask[row]) {
                continue;
            }
            let rank = query.metric.rank(
                &query.query,
                basalt_formats::distance::vector_at(vectors, offset),
            );
            if best.heap.len() >= best.k && best.heap.peek().is_some_and(|w| rank >= w.rank) {
                continue;
            }
            if visible(row) {
                best.offer(Hit {
                    rank,
                    place: Place::Segment {
                        segment: index,
                        row: row as u32,
                        node: None,
                    },
                });
            }
        }
    }
    Ok(best.heap.into_vec())
}

/// The projected columns of the hits, in hit order.
fn materialize(
    input: &SearchInput<'_>,
    segments: &[&Arc<SegmentFile>],
    query: &VectorQuery,
    hits: &[Hit],
) -> Result<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(
        query
            .projection
            .iter()
            .map(|&c| input.table.def.schema.field(c).clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    // Row-group boundaries, worked out once per segment that has a hit.
    let mut starts: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut columns = Vec::with_capacity(query.projection.len());
    for (position, &c) in query.projection.iter().enumerate() {
        let data_type = schema.field(position).data_type();
        let mut pieces: Vec<ArrayRef> = Vec::with_capacity(hits.len());
        for hit in hits {
            pieces.push(match hit.place {
                Place::Memory { run, row } => {
                    input.memory[run].column(SYSTEM_COLUMNS + c).slice(row, 1)
                }
                Place::Segment { segment, row, node } => {
                    let file = segments[segment];
                    let from_index = match node {
                        Some(node) if c == query.column => {
                            index_vector(file, query, node, data_type)?
                        }
                        _ => None,
                    };
                    match from_index {
                        Some(vector) => vector,
                        None => {
                            let starts =
                                starts.entry(segment).or_insert_with(|| group_starts(file));
                            let (group, offset) = locate(starts, row as usize);
                            file.table_column(input.cache, group, c, data_type)?
                                .slice(offset, 1)
                        }
                    }
                }
            });
        }
        columns.push(concat(&pieces, data_type)?);
    }
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(hits.len())),
    )?)
}

/// A hit's vector read from the index file, which saves decoding the
/// segment's whole vector chunk for one row.
fn index_vector(
    segment: &SegmentFile,
    query: &VectorQuery,
    node: u32,
    data_type: &DataType,
) -> Result<Option<ArrayRef>> {
    let Some(graph) = segment.index(query.column as u32) else {
        return Ok(None);
    };
    let DataType::FixedSizeList(item, dims) = data_type else {
        return Ok(None);
    };
    let values = arrow_array::Float32Array::from(graph.node_vector(node).to_vec());
    let list = FixedSizeListArray::try_new(item.clone(), *dims, Arc::new(values), None)?;
    Ok(Some(Arc::new(list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_through_metadata_text() {
        let params = HnswParams {
            metric: Metric::Cosine,
            m: 8,
            ef_construction: 40,
        };
        let text = encode_spec("items_idx", &params);
        assert_eq!(decode_spec(&text), Some(("items_idx".to_string(), params)));
        assert_eq!(decode_spec("metric=l2"), None);
        assert_eq!(locate(&[0, 10, 25], 0), (0, 0));
        assert_eq!(locate(&[0, 10, 25], 10), (1, 0));
        assert_eq!(locate(&[0, 10, 25], 24), (1, 14));
    }

    /// Large files are copied rather than mapped; both must read the same
    /// index, and a copy must still detect corruption.
    #[test]
    fn copied_and_mapped_index_files_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001.c1.hnsw");
        let dims = 4;
        let vectors: Vec<f32> = (0..400).map(|i| ((i * 37) % 101) as f32).collect();
        let rows: Vec<u32> = (0..100).collect();
        let mut file = File::create(&path).unwrap();
        let params = HnswParams::new(Metric::L2);
        hnsw::build(params, dims, &vectors, &rows, 1, &mut file).unwrap();
        let len = file.metadata().unwrap().len();
        let copied = HnswIndex::open(load_index(File::open(&path).unwrap(), len).unwrap()).unwrap();
        let mapped =
            HnswIndex::open(crate::mapped::map_file(&File::open(&path).unwrap()).unwrap()).unwrap();
        let query = [3.0, 50.0, 7.0, 99.0];
        let nodes = |index: &HnswIndex| -> Vec<u32> {
            index
                .search(&query, 20, &mut |_| true)
                .iter()
                .map(|s| s.node)
                .collect()
        };
        assert_eq!(nodes(&copied), nodes(&mapped));
        assert_eq!(copied.node_vector(7), &vectors[28..32]);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let damaged = load_index(File::open(&path).unwrap(), len).unwrap();
        assert!(HnswIndex::open(damaged).is_err());
    }
}
