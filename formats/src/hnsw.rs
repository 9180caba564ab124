//! HNSW vector index files (FORMAT.md section 12): one per segment and
//! indexed column, holding the segment's vectors and the graph over them,
//! read in place from memory (a mapping of the file or a copy of it).
//!
//! The graph follows Malkov and Yashunin (2016) as hnswlib implements it:
//! levels drawn with `mL = 1/ln(M)`, `2M` links on level 0 and `M` above,
//! neighbours chosen by the diversity heuristic, and insertion on several
//! threads with a lock per node. One departure, at search time: levels 2 and
//! up are walked down with a narrow beam rather than greedily (see
//! `Graph::descend`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Mutex, RwLock};

use arrow_buffer::{Buffer, ScalarBuffer};

use crate::distance::Metric;
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"BSLTHNSW";
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;
const NO_NODE: u32 = u32::MAX;
/// Levels from this one up are walked with a beam of `UPPER_BEAM` nodes on
/// the way down to level 0 (see `Graph::descend`).
const BEAM_FROM_LEVEL: usize = 2;
const UPPER_BEAM: usize = 3;

/// How an index is built; stored in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    pub metric: Metric,
    /// Links per node above level 0 (twice as many on level 0).
    pub m: usize,
    pub ef_construction: usize,
}

impl HnswParams {
    /// pgvector's defaults.
    pub fn new(metric: Metric) -> HnswParams {
        HnswParams {
            metric,
            m: 16,
            ef_construction: 64,
        }
    }

    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            2 * self.m
        } else {
            self.m
        }
    }
}

/// A candidate: its rank (smaller is closer) and node number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub rank: f32,
    pub node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .total_cmp(&other.rank)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Read access to vectors and links, shared by building and searching.
trait Graph {
    fn vector(&self, node: u32) -> &[f32];
    fn metric(&self) -> Metric;
    fn nodes(&self) -> usize;
    /// Calls `f` with the links of `node` on `level`.
    fn with_links<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R;

    fn rank(&self, query: &[f32], node: u32) -> f32 {
        self.metric().rank(query, self.vector(node))
    }

    /// Asks for `node`'s vector to be brought into cache.
    fn prefetch(&self, _node: u32) {}

    /// Asks for `node`'s level-0 links to be brought into cache.
    fn prefetch_links(&self, _node: u32) {}

    /// Greedy walk towards `query` on one upper level.
    fn greedy(&self, query: &[f32], mut best: Scored, level: usize) -> Scored {
        loop {
            let before = best;
            self.with_links(best.node, level, |links| {
                for &next in links {
                    if next as usize >= self.nodes() {
                        continue;
                    }
                    let rank = self.rank(query, next);
                    if rank < best.rank {
                        best = Scored { rank, node: next };
                    }
                }
            });
            if best == before {
                return best;
            }
        }
    }

    /// Walks from `entry` on level `top` down to level 1 and returns the
    /// node the level-0 search starts from. The sparse upper levels are
    /// walked with a narrow beam rather than greedily: on clustered data a
    /// greedy walk there can stop in the wrong cluster, which a level-0
    /// search at any ef rarely leaves; the beam costs a few distances.
    fn descend(&self, query: &[f32], entry: Scored, top: usize, visited: &mut Visited) -> Scored {
        let mut entries = vec![entry];
        for level in (1..=top).rev() {
            if level >= BEAM_FROM_LEVEL {
                visited.reset(self.nodes());
                let found =
                    self.search_level(query, &entries, UPPER_BEAM, level, visited, &mut |_| true);
                if !found.is_empty() {
                    entries = found;
                }
            } else {
                entries = vec![self.greedy(query, entries[0], level)];
            }
        }
        entries[0]
    }

    /// Best-first search on one level. Every reachable node may be walked
    /// through; only nodes `accept` admits enter the result, so a filter
    /// never shortens the answer while admitted nodes remain reachable.
    fn search_level(
        &self,
        query: &[f32],
        entries: &[Scored],
        ef: usize,
        level: usize,
        visited: &mut Visited,
        accept: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<Scored> {
        let Heaps {
            candidates,
            results,
        } = &mut visited.heaps;
        candidates.clear();
        results.clear();
        let visited = &mut visited.seen;
        for &entry in entries {
            if !visited.insert(entry.node) {
                continue;
            }
            candidates.push(std::cmp::Reverse(entry));
            if accept(entry.node) {
                results.push(entry);
                if results.len() > ef {
                    results.pop();
                }
            }
        }
        while let Some(std::cmp::Reverse(current)) = candidates.pop() {
            let full = results.len() >= ef;
            if full
                && results
                    .peek()
                    .is_some_and(|worst| current.rank > worst.rank)
            {
                break;
            }
            if let Some(std::cmp::Reverse(next)) = candidates.peek() {
                self.prefetch_links(next.node);
            }
            self.with_links(current.node, level, |links| {
                // Every unvisited neighbour's vector is read below: start
                // fetching them all before the first distance.
                for &next in links {
                    if (next as usize) < self.nodes() && !visited.contains(next) {
                        self.prefetch(next);
                    }
                }
                for &next in links {
                    if next as usize >= self.nodes() || !visited.insert(next) {
                        continue;
                    }
                    let rank = self.rank(query, next);
                    let worst = results.peek().map_or(f32::INFINITY, |w| w.rank);
                    if results.len() < ef || rank < worst {
                        let scored = Scored { rank, node: next };
                        candidates.push(std::cmp::Reverse(scored));
                        // The best candidate is expanded next: its links
                        // are read right after this loop.
                        if let Some(std::cmp::Reverse(top)) = candidates.peek() {
                            self.prefetch_links(top.node);
                        }
                        if accept(next) {
                            results.push(scored);
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            });
        }
        let mut found: Vec<Scored> = results.drain().collect();
        found.sort_unstable();
        found
    }

    /// hnswlib's neighbour heuristic: keep a candidate only if it is closer
    /// to the new node than to every neighbour already kept.
    fn select_neighbors(&self, mut candidates: Vec<Scored>, max: usize) -> Vec<Scored> {
        candidates.sort();
        if candidates.len() <= max {
            return candidates;
        }
        let mut kept: Vec<Scored> = Vec::with_capacity(max);
        for candidate in candidates {
            if kept.len() >= max {
                break;
            }
            let v = self.vector(candidate.node);
            let diverse = kept
                .iter()
                .all(|k| self.metric().rank(v, self.vector(k.node)) >= candidate.rank);
            if diverse {
                kept.push(candidate);
            }
        }
        kept
    }
}

/// A search's working memory, kept between searches: which nodes it has
/// reached and its two queues.
pub struct Visited {
    seen: Seen,
    heaps: Heaps,
}

#[derive(Default)]
struct Heaps {
    candidates: BinaryHeap<std::cmp::Reverse<Scored>>,
    results: BinaryHeap<Scored>,
}

/// A stamp per node, so forgetting every node is O(1).
struct Seen {
    stamps: Vec<u16>,
    stamp: u16,
}

impl Visited {
    pub fn new(nodes: usize) -> Visited {
        Visited {
            seen: Seen {
                stamps: vec![0; nodes],
                stamp: 1,
            },
            heaps: Heaps::default(),
        }
    }

    fn reset(&mut self, nodes: usize) {
        let seen = &mut self.seen;
        if seen.stamps.len() != nodes {
            seen.stamps = vec![0; nodes];
            seen.stamp = 0;
        } else if seen.stamp == u16::MAX {
            seen.stamps.fill(0);
            seen.stamp = 0;
        }
        seen.stamp += 1;
    }
}

impl Seen {
    fn contains(&self, node: u32) -> bool {
        self.stamps[node as usize] == self.stamp
    }

    /// True when `node` had not been reached yet.
    fn insert(&mut self, node: u32) -> bool {
        let slot = &mut self.stamps[node as usize];
        if *slot == self.stamp {
            return false;
        }
        *slot = self.stamp;
        true
    }
}

/// Draws levels with `P(level >= l) = M^-l`, deterministically per node.
fn draw_level(node: usize, m: usize) -> usize {
    let mut x = (node as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let uniform = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let level = -uniform.ln() / (m.max(2) as f64).ln();
    (level as usize).min(16)
}

/// Asks for the start of `node`'s vector to be brought into cache: the
/// first four cache lines (fewer measured slower on 128 dimensions); the
/// hardware prefetcher follows the rest.
#[inline]
fn prefetch_vector(vectors: &[f32], dims: usize, node: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = node as usize * dims;
        if let Some(v) = vectors.get(start..start + dims) {
            for offset in (0..dims).step_by(16).take(4) {
                // SAFETY: a prefetch is a hint; it never faults, and the
                // address lies inside the vectors anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(v[offset..].as_ptr().cast()) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (vectors, dims, node);
}

struct Building<'a> {
    params: HnswParams,
    dims: usize,
    vectors: &'a [f32],
    levels: Vec<u8>,
    /// Per node, its links on each of its levels.
    links: Vec<Mutex<Vec<Vec<u32>>>>,
    top: RwLock<(u32, usize)>,
}

impl Graph for Building<'_> {
    fn vector(&self, node: u32) -> &[f32] {
        let start = node as usize * self.dims;
        &self.vectors[start..start + self.dims]
    }

    fn prefetch(&self, node: u32) {
        prefetch_vector(self.vectors, self.dims, node);
    }

    fn metric(&self) -> Metric {
        self.params.metric
    }

    fn nodes(&self) -> usize {
        self.levels.len()
    }

    fn with_links<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        // A poisoned lock means another insert panicked; its links are
        // still well-formed lists.
        let links = self.links[node as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f(links.get(level).map_or(&[], Vec::as_slice))
    }
}

impl Building<'_> {
    fn insert(&self, node: u32, visited: &mut Visited) {
        let level = self.levels[node as usize] as usize;
        let (entry, top_level) = *self.top.read().unwrap_or_else(|e| e.into_inner());
        let query = self.vector(node);
        let mut best = Scored {
            rank: self.rank(query, entry),
            node: entry,
        };
        for l in (level + 1..=top_level).rev() {
            best = self.greedy(query, best, l);
        }
        let mut entries = vec![best];
        for l in (0..=level.min(top_level)).rev() {
            let mut found = Vec::new();
            for &start in &entries {
                visited.reset(self.nodes());
                found.extend(self.search_level(
                    query,
                    &[start],
                    self.params.ef_construction,
                    l,
                    visited,
                    &mut |n| n != node,
                ));
            }
            found.sort();
            found.dedup_by_key(|s| s.node);
            let chosen = self.select_neighbors(found.clone(), self.params.m);
            {
                let mut own = self.links[node as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                own[l] = chosen.iter().map(|s| s.node).collect();
            }
            for neighbor in &chosen {
                self.link_back(neighbor.node, node, l);
            }
            entries = found.into_iter().take(1).collect();
            if entries.is_empty() {
                entries = vec![best];
            }
        }
        if level > top_level {
            let mut top = self.top.write().unwrap_or_else(|e| e.into_inner());
            if level > top.1 {
                *top = (node, level);
            }
        }
    }

    /// Pruning can cut nodes off: no walk of level 0 from the entry node
    /// reaches them, and no search ever returns them. Each such node gets a
    /// link from the nearest reachable node with room for one, found by a
    /// search restricted to reachable nodes.
    fn link_orphans(&self, visited: &mut Visited) {
        let nodes = self.nodes();
        if nodes == 0 {
            return;
        }
        let entry = self.top.read().unwrap_or_else(|e| e.into_inner()).0;
        let mut reached = vec![false; nodes];
        self.mark_reachable(entry, &mut reached);
        let max = self.params.max_links(0);
        for node in 0..nodes as u32 {
            if reached[node as usize] {
                continue;
            }
            let query = self.vector(node);
            let start = Scored {
                rank: self.rank(query, entry),
                node: entry,
            };
            visited.reset(nodes);
            let found = self.search_level(
                query,
                &[start],
                self.params.ef_construction,
                0,
                visited,
                &mut |n| reached[n as usize],
            );
            for candidate in found {
                let mut links = self.links[candidate.node as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if links[0].len() < max {
                    links[0].push(node);
                    break;
                }
            }
            self.mark_reachable(node, &mut reached);
        }
    }

    /// Marks every node a level-0 walk from `from` reaches.
    fn mark_reachable(&self, from: u32, reached: &mut [bool]) {
        if reached[from as usize] {
            return;
        }
        reached[from as usize] = true;
        let mut stack = vec![from];
        while let Some(node) = stack.pop() {
            self.with_links(node, 0, |links| {
                for &next in links {
                    if !reached[next as usize] {
                        reached[next as usize] = true;
                        stack.push(next);
                    }
                }
            });
        }
    }

    /// Adds `node` to `neighbor`'s links, pruning them by the heuristic
    /// when full.
    fn link_back(&self, neighbor: u32, node: u32, level: usize) {
        let max = self.params.max_links(level);
        let mut links = self.links[neighbor as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(list) = links.get_mut(level) else {
            return;
        };
        if list.contains(&node) {
            return;
        }
        if list.len() < max {
            list.push(node);
            return;
        }
        let base = self.vector(neighbor);
        let candidates: Vec<Scored> = list
            .iter()
            .chain(std::iter::once(&node))
            .map(|&n| Scored {
                rank: self.params.metric.rank(base, self.vector(n)),
                node: n,
            })
            .collect();
        *list = self
            .select_neighbors(candidates, max)
            .into_iter()
            .map(|s| s.node)
            .collect();
    }
}

/// Builds the graph over `vectors` (`nodes x dims`, row-major) on up to
/// `threads` threads and writes the index file to `out`, returning its
/// length. `rows[i]` is the segment row of node `i`.
pub fn build<W: Write>(
    params: HnswParams,
    dims: usize,
    vectors: &[f32],
    rows: &[u32],
    threads: usize,
    out: W,
) -> Result<u64> {
    let nodes = rows.len();
    if vectors.len() != nodes * dims || dims == 0 || params.m < 2 {
        return Err(Error::corrupt(0, "HNSW input does not match its shape"));
    }
    let levels: Vec<u8> = (0..nodes).map(|n| draw_level(n, params.m) as u8).collect();
    let links = levels
        .iter()
        .map(|&l| Mutex::new(vec![Vec::new(); l as usize + 1]))
        .collect();
    let graph = Building {
        params,
        dims,
        vectors,
        levels,
        links,
        top: RwLock::new((0, 0)),
    };
    if nodes > 0 {
        *graph.top.write().unwrap_or_else(|e| e.into_inner()) = (0, graph.levels[0] as usize);
        let next = AtomicUsize::new(1);
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, 64) {
                scope.spawn(|| {
                    let mut visited = Visited::new(nodes);
                    loop {
                        let node = next.fetch_add(1, AtomicOrdering::Relaxed);
                        if node >= nodes {
                            break;
                        }
                        graph.insert(node as u32, &mut visited);
                    }
                });
            }
        });
    }
    graph.link_orphans(&mut Visited::new(nodes));
    write_file(&graph, rows, out)
}

struct CrcWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn u32s(&mut self, values: impl IntoIterator<Item = u32>) -> Result<()> {
        let mut chunk = Vec::with_capacity(4096);
        for v in values {
            chunk.extend_from_slice(&v.to_le_bytes());
            if chunk.len() >= 4096 {
                self.put(&chunk)?;
                chunk.clear();
            }
        }
        self.put(&chunk)
    }

    fn pad_to(&mut self, align: u64) -> Result<()> {
        let pad = (align - self.written % align) % align;
        self.put(&vec![0; pad as usize])
    }
}

fn write_file<W: Write>(graph: &Building<'_>, rows: &[u32], out: W) -> Result<u64> {
    let params = graph.params;
    let nodes = rows.len();
    let (entry, top_level) = *graph.top.read().unwrap_or_else(|e| e.into_inner());
    let links: Vec<Vec<Vec<u32>>> = graph
        .links
        .iter()
        .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let upper_blocks: usize = graph.levels.iter().map(|&l| l as usize).sum();
    let mut w = CrcWriter {
        inner: out,
        hasher: crc32fast::Hasher::new(),
        written: 0,
    };
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.push(params.metric.code());
    header.push(top_level as u8);
    header.extend_from_slice(&[0, 0]);
    for v in [
        graph.dims,
        params.m,
        params.ef_construction,
        nodes,
        if nodes == 0 {
            NO_NODE as usize
        } else {
            entry as usize
        },
        upper_blocks,
    ] {
        header.extend_from_slice(&(v as u32).to_le_bytes());
    }
    header.resize(HEADER_LEN, 0);
    w.put(&header)?;
    w.u32s(rows.iter().copied())?;
    w.pad_to(16)?;
    let mut chunk = Vec::with_capacity(1 << 16);
    for v in graph.vectors {
        chunk.extend_from_slice(&v.to_le_bytes());
        if chunk.len() >= 1 << 16 {
            w.put(&chunk)?;
            chunk.clear();
        }
    }
    w.put(&chunk)?;
    w.put(&graph.levels)?;
    w.pad_to(4)?;
    let mut next_block = 0u32;
    let offsets: Vec<u32> = graph
        .levels
        .iter()
        .map(|&l| {
            if l == 0 {
                return NO_NODE;
            }
            let at = next_block;
            next_block += u32::from(l);
            at
        })
        .collect();
    w.u32s(offsets)?;
    for node_links in &links {
        w.u32s(fixed_list(&node_links[0], 2 * params.m))?;
    }
    for node_links in &links {
        for level_links in &node_links[1..] {
            w.u32s(fixed_list(level_links, params.m))?;
        }
    }
    let crc = w.hasher.clone().finalize();
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(w.written + 4)
}

/// `[count, ids..., padding]`, `1 + capacity` words.
fn fixed_list(links: &[u32], capacity: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(capacity + 1);
    out.push(links.len().min(capacity) as u32);
    out.extend(links.iter().take(capacity));
    out.resize(capacity + 1, 0);
    out
}

/// An index file, read in place.
pub struct HnswIndex {
    pub params: HnswParams,
    pub dims: usize,
    entry: u32,
    top_level: usize,
    rows: ScalarBuffer<u32>,
    vectors: ScalarBuffer<f32>,
    levels: Buffer,
    upper_offsets: ScalarBuffer<u32>,
    links0: ScalarBuffer<u32>,
    upper: ScalarBuffer<u32>,
    visited: Mutex<Vec<Visited>>,
    bytes: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HnswIndex({} nodes, {:?})", self.rows.len(), self.params)
    }
}

struct Reader<'a> {
    data: &'a Buffer,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize, what: &str) -> Result<Buffer> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                Error::corrupt(self.at, format!("HNSW {what} runs past the file end"))
            })?;
        let slice = self.data.slice_with_length(self.at, end - self.at);
        self.at = end;
        Ok(slice)
    }

    fn align(&mut self, align: usize) {
        self.at = self.at.div_ceil(align) * align;
    }

    fn u32s(&mut self, count: usize, what: &str) -> Result<ScalarBuffer<u32>> {
        let bytes = count
            .checked_mul(4)
            .ok_or_else(|| Error::corrupt(self.at, "HNSW section too large"))?;
        let buffer = self.take(bytes, what)?;
        Ok(ScalarBuffer::new(buffer, 0, count))
    }
}

fn header_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

impl HnswIndex {
    /// Opens an index file's bytes, checking magic, version, layout and crc.
    /// `data` must start 16-byte aligned (a mapping does).
    pub fn open(data: Buffer) -> Result<HnswIndex> {
        let data = if (data.as_ptr() as usize).is_multiple_of(16) {
            data
        } else {
            Buffer::from_slice_ref(data.as_slice())
        };
        let bytes = data.as_slice();
        if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
            return Err(Error::corrupt(0, "not a Basalt HNSW index file"));
        }
        let version = header_u32(bytes, 8);
        if version != VERSION {
            return Err(Error::corrupt(8, format!("unknown HNSW version {version}")));
        }
        let body_len = bytes.len() - 4;
        let stored = header_u32(bytes, body_len);
        let computed = crc32fast::hash(&bytes[..body_len]);
        if stored != computed {
            return Err(Error::Checksum {
                offset: body_len as u64,
                stored,
                computed,
            });
        }
        let metric = Metric::from_code(bytes[12])
            .ok_or_else(|| Error::corrupt(12, format!("unknown metric {}", bytes[12])))?;
        let top_level = bytes[13] as usize;
        let field = |i: usize| header_u32(bytes, 16 + 4 * i) as usize;
        let (dims, m, ef_construction, nodes, entry, upper_blocks) = (
            field(0),
            field(1),
            field(2),
            field(3),
            field(4) as u32,
            field(5),
        );
        let params = HnswParams {
            metric,
            m,
            ef_construction,
        };
        if m < 2 || dims == 0 || (nodes > 0 && entry as usize >= nodes) {
            return Err(Error::corrupt(16, "HNSW header out of range"));
        }
        let mut r = Reader {
            data: &data,
            at: HEADER_LEN,
        };
        let rows = r.u32s(nodes, "row numbers")?;
        r.align(16);
        let vector_bytes = nodes
            .checked_mul(dims)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| Error::corrupt(r.at, "HNSW vectors too large"))?;
        let vectors = ScalarBuffer::new(r.take(vector_bytes, "vectors")?, 0, nodes * dims);
        let levels = r.take(nodes, "levels")?;
        r.align(4);
        let upper_offsets = r.u32s(nodes, "level offsets")?;
        let links0 = r.u32s(nodes * (2 * m + 1), "level-0 links")?;
        let upper = r.u32s(upper_blocks * (m + 1), "upper links")?;
        if r.at != body_len {
            return Err(Error::corrupt(
                r.at,
                "HNSW file length does not match its header",
            ));
        }
        Ok(HnswIndex {
            params,
            dims,
            entry,
            top_level,
            rows,
            vectors,
            levels,
            upper_offsets,
            links0,
            upper,
            visited: Mutex::new(Vec::new()),
            bytes: data.len(),
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> usize {
        self.bytes
    }

    /// The segment row of `node`.
    pub fn row(&self, node: u32) -> u32 {
        self.rows[node as usize]
    }

    /// Segment rows, ascending, one per node.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    pub fn node_vector(&self, node: u32) -> &[f32] {
        Graph::vector(self, node)
    }

    /// How many nodes a walk of level 0 from the entry node reaches (all of
    /// them, in a well-connected graph).
    pub fn reachable(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut seen = vec![false; self.len()];
        let mut stack = vec![self.entry];
        seen[self.entry as usize] = true;
        let mut count = 1;
        while let Some(node) = stack.pop() {
            self.with_links(node, 0, |links| {
                for &next in links {
                    if (next as usize) < seen.len() && !seen[next as usize] {
                        seen[next as usize] = true;
                        count += 1;
                        stack.push(next);
                    }
                }
            });
        }
        count
    }

    /// The `ef`-best nodes admitted by `accept`, closest first; the caller
    /// takes its k from the front.
    pub fn search(
        &self,
        query: &[f32],
        ef: usize,
        accept: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<Scored> {
        if self.is_empty() || query.len() != self.dims {
            return Vec::new();
        }
        let entry = Scored {
            rank: self.rank(query, self.entry),
            node: self.entry,
        };
        let mut visited = self
            .visited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Visited::new(self.len()));
        let start = self.descend(query, entry, self.top_level, &mut visited);
        visited.reset(self.len());
        let found = self.search_level(query, &[start], ef.max(1), 0, &mut visited, accept);
        self.visited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(visited);
        found
    }

    /// The `k` nearest among the nodes `accept` admits, by comparing with
    /// each of them.
    pub fn exact(
        &self,
        query: &[f32],
        k: usize,
        accept: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<Scored> {
        let mut best: BinaryHeap<Scored> = BinaryHeap::new();
        if query.len() != self.dims {
            return Vec::new();
        }
        for node in 0..self.len() as u32 {
            if !accept(node) {
                continue;
            }
            let rank = self.rank(query, node);
            if best.len() < k {
                best.push(Scored { rank, node });
            } else if best.peek().is_some_and(|w| rank < w.rank) {
                best.pop();
                best.push(Scored { rank, node });
            }
        }
        best.into_sorted_vec()
    }
}

impl Graph for HnswIndex {
    fn vector(&self, node: u32) -> &[f32] {
        let start = node as usize * self.dims;
        &self.vectors[start..start + self.dims]
    }

    #[inline]
    fn prefetch(&self, node: u32) {
        prefetch_vector(&self.vectors, self.dims, node);
    }

    #[inline]
    fn prefetch_links(&self, node: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let stride = 2 * self.params.m + 1;
            let start = node as usize * stride;
            if let Some(list) = self.links0.get(start..start + stride) {
                // SAFETY: a prefetch is a hint; it never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(list.as_ptr().cast()) };
            }
        }
    }

    fn metric(&self) -> Metric {
        self.params.metric
    }

    fn nodes(&self) -> usize {
        self.rows.len()
    }

    fn with_links<R>(&self, node: u32, level: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        let node = node as usize;
        let list = if level == 0 {
            let stride = 2 * self.params.m + 1;
            &self.links0[node * stride..(node + 1) * stride]
        } else {
            let node_level = self.levels.as_slice()[node] as usize;
            let first = self.upper_offsets[node] as usize;
            let stride = self.params.m + 1;
            let block = first.saturating_add(level - 1);
            if level > node_level || (block + 1) * stride > self.upper.len() {
                return f(&[]);
            }
            &self.upper[block * stride..(block + 1) * stride]
        };
        let count = (list[0] as usize).min(list.len() - 1);
        f(&list[1..1 + count])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_vectors(n: usize, dims: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n * dims)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 10_000) as f32 / 10_000.0
            })
            .collect()
    }

    fn build_index(params: HnswParams, dims: usize, vectors: &[f32]) -> HnswIndex {
        let n = vectors.len() / dims;
        let rows: Vec<u32> = (0..n as u32).map(|i| i * 2).collect();
        let mut file = Vec::new();
        let len = build(params, dims, vectors, &rows, 2, &mut file).unwrap();
        assert_eq!(len as usize, file.len());
        HnswIndex::open(Buffer::from_vec(file)).unwrap()
    }

    fn brute_force(metric: Metric, dims: usize, vectors: &[f32], q: &[f32], k: usize) -> Vec<u32> {
        let mut all: Vec<Scored> = vectors
            .chunks(dims)
            .enumerate()
            .map(|(i, v)| Scored {
                rank: metric.rank(q, v),
                node: i as u32,
            })
            .collect();
        all.sort();
        all.into_iter().take(k).map(|s| s.node).collect()
    }

    #[test]
    fn search_finds_the_true_neighbours_for_every_metric() {
        let dims = 16;
        let vectors = random_vectors(3000, dims, 7);
        let queries = random_vectors(50, dims, 99);
        for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
            let index = build_index(HnswParams::new(metric), dims, &vectors);
            let mut hits = 0;
            for q in queries.chunks(dims) {
                let truth = brute_force(metric, dims, &vectors, q, 10);
                let found: Vec<u32> = index
                    .search(q, 64, &mut |_| true)
                    .into_iter()
                    .take(10)
                    .map(|s| s.node)
                    .collect();
                hits += found.iter().filter(|n| truth.contains(n)).count();
                let exact: Vec<u32> = index
                    .exact(q, 10, &mut |_| true)
                    .into_iter()
                    .map(|s| s.node)
                    .collect();
                assert_eq!(exact, truth);
            }
            let recall = hits as f64 / 500.0;
            assert!(recall >= 0.95, "{metric:?} recall {recall}");
        }
    }

    /// On level 2, node 1 is a local minimum for the query: greedy stops
    /// there, while the beam also follows node 2, the farther start of the
    /// path to the true nearest node 3.
    #[test]
    fn descent_walks_past_a_local_minimum_on_the_upper_levels() {
        let vectors = [0.0, 3.0, -1.0, 10.5];
        let level2: [&[u32]; 4] = [&[1, 2], &[0], &[0, 3], &[2]];
        let graph = Building {
            params: HnswParams::new(Metric::L2),
            dims: 1,
            vectors: &vectors,
            levels: vec![2; 4],
            links: level2
                .iter()
                .map(|l| Mutex::new(vec![Vec::new(), Vec::new(), l.to_vec()]))
                .collect(),
            top: RwLock::new((0, 2)),
        };
        let query = [10.0];
        let entry = Scored {
            rank: graph.rank(&query, 0),
            node: 0,
        };
        assert_eq!(graph.greedy(&query, entry, 2).node, 1);
        let mut visited = Visited::new(4);
        assert_eq!(graph.descend(&query, entry, 2, &mut visited).node, 3);
    }

    #[test]
    fn filtered_search_returns_only_admitted_nodes_and_enough_of_them() {
        let dims = 8;
        let vectors = random_vectors(2000, dims, 3);
        let index = build_index(HnswParams::new(Metric::L2), dims, &vectors);
        let q = &random_vectors(1, dims, 5)[..];
        // One node in 50 is admitted: the walk still reaches ten of them.
        let found = index.search(q, 40, &mut |n| n % 50 == 7);
        assert!(found.len() >= 10, "{}", found.len());
        assert_eq!(index.reachable(), index.len());
        assert!(found.iter().all(|s| s.node % 50 == 7));
        assert_eq!(index.row(3), 6);
    }

    #[test]
    fn corruption_is_detected_with_its_offset() {
        let dims = 4;
        let vectors = random_vectors(100, dims, 11);
        let rows: Vec<u32> = (0..100).collect();
        let mut file = Vec::new();
        build(
            HnswParams::new(Metric::L2),
            dims,
            &vectors,
            &rows,
            1,
            &mut file,
        )
        .unwrap();
        let mut flipped = file.clone();
        flipped[200] ^= 1;
        let err = HnswIndex::open(Buffer::from_vec(flipped)).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        let err = HnswIndex::open(Buffer::from_vec(file[..file.len() - 9].to_vec())).unwrap_err();
        assert!(err.offset().is_some(), "{err}");
        let empty = build_index(HnswParams::new(Metric::L2), dims, &[]);
        assert!(empty.search(&[0.0; 4], 10, &mut |_| true).is_empty());
    }
}
