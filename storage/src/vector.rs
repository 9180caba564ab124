//! HNSW indexes beside segments and nearest-neighbour search over a snapshot.
//!
//! The index files are built and recorded by the index framework
//! (`crate::index`, kind `hnsw`). A search ranks each
//! segment's rows through its graph (or by comparing every row, when the
//! filter admits few rows or the segment has no index), compares memtable
//! rows directly, and keeps only rows visible in the snapshot.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, BooleanArray, FixedSizeListArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt_formats::distance::Metric;
use basalt_formats::hnsw::{HnswIndex, Scored};
use basalt_formats::manifest::TableDef;
use basalt_formats::segment::{OP_DELETE, SYSTEM_COLUMNS};

use crate::db::TableState;
use crate::error::{Error, Result};
use crate::index::search::{IndexSearch, SearchInput};
use crate::segment::{locate, ChunkCache, SegmentFile};
use crate::visibility::SnapshotView;

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

impl IndexSearch for VectorQuery {
    type Hits = VectorHits;
    type Corpus = ();

    fn columns(&self) -> Vec<usize> {
        let read = self.projection.iter().chain(&self.filter_columns);
        read.copied().chain([self.column]).collect()
    }

    fn corpus(&self, _input: &SearchInput<'_>) -> Result<()> {
        Ok(())
    }

    fn search(
        &self,
        input: &SearchInput<'_>,
        _corpus: &(),
        filter: Option<RowFilter<'_>>,
    ) -> Result<VectorHits> {
        search(input, self, filter)
    }
}

fn search(
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
        SnapshotView {
            cache: self.input.cache,
            table: self.input.table,
            seq: self.input.seq,
            pending_keys: self.input.pending_keys,
        }
        .is_newest(key, seq)
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
    let starts = segment.row_group_starts();
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
    let Some(graph) = graph_of(&table.def, segment, query) else {
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
                            index_vector(&input.table.def, file, query, node, data_type)?
                        }
                        _ => None,
                    };
                    match from_index {
                        Some(vector) => vector,
                        None => {
                            let starts = starts
                                .entry(segment)
                                .or_insert_with(|| file.row_group_starts());
                            let (group, offset) = locate(starts, row as usize);
                            file.table_column(input.cache, group, c, data_type)?
                                .slice(offset, 1)
                        }
                    }
                }
            });
        }
        columns.push(crate::index::concat(&pieces, data_type)?);
    }
    Ok(RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(hits.len())),
    )?)
}

/// The segment's graph for the query: one of the table's HNSW indexes on
/// the query's column with the query's metric.
fn graph_of(def: &TableDef, segment: &SegmentFile, query: &VectorQuery) -> Option<Arc<HnswIndex>> {
    def.indexes
        .iter()
        .filter(|i| i.kind == crate::index::hnsw::KIND && i.columns == [query.column as u32])
        .filter_map(|i| segment.index(i.id)?.downcast::<HnswIndex>().ok())
        .find(|g| g.params.metric == query.metric && g.dims == query.query.len())
}

/// A hit's vector read from the index file, which saves decoding the
/// segment's whole vector chunk for one row.
fn index_vector(
    def: &TableDef,
    segment: &SegmentFile,
    query: &VectorQuery,
    node: u32,
    data_type: &DataType,
) -> Result<Option<ArrayRef>> {
    let Some(graph) = graph_of(def, segment, query) else {
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
    fn rows_are_located_in_their_row_groups() {
        assert_eq!(locate(&[0, 10, 25], 0), (0, 0));
        assert_eq!(locate(&[0, 10, 25], 10), (1, 0));
        assert_eq!(locate(&[0, 10, 25], 24), (1, 14));
    }
}
