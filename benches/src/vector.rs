//! `benches/run vector`: HNSW build and single-threaded search over a
//! generated clustered set, side by side with hnswlib (pip) on the same
//! vectors, queries, ground truth and parameters.
//!
//! The data set is written to `DIR/base.f32` and `DIR/queries.f32` (raw
//! little-endian f32, row-major) and the brute-force ground truth to
//! `DIR/truth.u32`; `benches/vector_hnswlib.py` reads the same files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use basalt_storage::{Db, HnswParams, Metric, Options, VectorQuery};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::BoxError;

#[derive(clap::Args)]
pub struct VectorArgs {
    /// Vectors indexed.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 128)]
    dims: usize,
    /// Queries timed (and checked against brute force).
    #[arg(long, default_value_t = 500)]
    queries: usize,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 64)]
    ef_construction: usize,
    /// ef_search settings to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,20,40,80,160")]
    ef: Vec<usize>,
    /// Where the data set and both indexes go (kept, so reruns reuse the data).
    #[arg(long)]
    dir: PathBuf,
}

const K: usize = 10;
const CLUSTERS: usize = 100;
/// Real embeddings vary along far fewer directions than they have
/// dimensions; the generated set does too, which is what makes a graph
/// index work on them (on full-rank noise every index degrades to a scan).
const LATENT: usize = 12;

/// Clustered points in a `LATENT`-dimensional space, mapped into `dims`
/// by one fixed random linear map, plus a little noise in every dimension.
pub(crate) fn generate(rows: usize, dims: usize, seed: u64) -> Vec<f32> {
    let mut shared = SmallRng::seed_from_u64(0);
    let centres: Vec<f32> = (0..CLUSTERS * LATENT)
        .map(|_| shared.gen_range(-1.0..1.0))
        .collect();
    let map: Vec<f32> = (0..dims * LATENT)
        .map(|_| shared.gen_range(-1.0..1.0) / (LATENT as f32).sqrt())
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut noise = |scale: f32| (0..3).map(|_| rng.gen_range(-scale..scale)).sum::<f32>();
    let mut out = Vec::with_capacity(rows * dims);
    for row in 0..rows {
        let c = row % CLUSTERS;
        let z: Vec<f32> = (0..LATENT)
            .map(|l| centres[c * LATENT + l] + noise(0.15))
            .collect();
        for d in 0..dims {
            let x: f32 = (0..LATENT).map(|l| map[d * LATENT + l] * z[l]).sum();
            out.push(x + noise(0.005));
        }
    }
    out
}

fn write_f32(path: &Path, values: &[f32]) -> Result<(), BoxError> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)?;
    Ok(())
}

/// The exact k nearest of each query, on every core.
fn ground_truth(base: &[f32], queries: &[f32], dims: usize) -> Vec<u32> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = queries.len() / dims / threads + 1;
    let chunks: Vec<&[f32]> = queries.chunks(per_thread * dims).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for q in chunk.chunks(dims) {
                        let mut best: Vec<(f32, u32)> = Vec::with_capacity(K + 1);
                        for (i, v) in base.chunks(dims).enumerate() {
                            let d = basalt_formats_l2(q, v);
                            if best.len() < K || d < best[K - 1].0 {
                                let at = best.partition_point(|b| b.0 <= d);
                                best.insert(at, (d, i as u32));
                                best.truncate(K);
                            }
                        }
                        out.extend(best.iter().map(|b| b.1));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn basalt_formats_l2(a: &[f32], b: &[f32]) -> f32 {
    Metric::L2.rank(a, b)
}

pub(crate) fn schema(dims: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "v",
            DataType::FixedSizeList(
                Arc::new(Field::new_list_field(DataType::Float32, true)),
                dims as i32,
            ),
            true,
        ),
    ]))
}

pub(crate) fn batch(dims: usize, start: usize, vectors: &[f32]) -> Result<RecordBatch, BoxError> {
    let rows = vectors.len() / dims;
    let list = FixedSizeListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        dims as i32,
        Arc::new(Float32Array::from(vectors.to_vec())),
        None,
    )?;
    let ids = Int64Array::from_iter_values((start..start + rows).map(|i| i as i64));
    Ok(RecordBatch::try_new(
        schema(dims),
        vec![Arc::new(ids) as ArrayRef, Arc::new(list)],
    )?)
}

fn directory_bytes(dir: &Path, extension: &str) -> u64 {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
}

fn recall_of(found: &[Vec<u32>], truth: &[u32]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth.chunks(K))
        .map(|(f, t)| f.iter().filter(|id| t.contains(id)).count())
        .sum();
    hits as f64 / truth.len() as f64
}

/// Queries/s at the first (recall, queries/s) point, in ef_search order,
/// that reaches `recall`.
fn qps_at_recall(points: impl IntoIterator<Item = (f64, f64)>, recall: f64) -> f64 {
    points
        .into_iter()
        .find(|&(r, _)| r >= recall)
        .map_or(f64::NAN, |(_, qps)| qps)
}

pub fn run(args: VectorArgs) -> Result<(), BoxError> {
    let dims = args.dims;
    std::fs::create_dir_all(&args.dir)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {threads} threads; {} x {dims} clustered vectors ({CLUSTERS} clusters in a {LATENT}-dimensional subspace), {} queries, k={K}, M={}, ef_construction={}",
        args.rows, args.queries, args.m, args.ef_construction
    );
    let base = generate(args.rows, dims, 1);
    let queries = generate(args.queries, dims, 2);
    write_f32(&args.dir.join("base.f32"), &base)?;
    write_f32(&args.dir.join("queries.f32"), &queries)?;
    let started = Instant::now();
    let truth = ground_truth(&base, &queries, dims);
    let truth_bytes: Vec<u8> = truth.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(args.dir.join("truth.u32"), truth_bytes)?;
    println!("ground truth: {:.1} s", started.elapsed().as_secs_f64());

    // Basalt: the index is declared, then the vectors are bulk-loaded; the
    // load writes the segment and builds its graph on every core.
    let db_dir = args.dir.join("basalt");
    let _ = std::fs::remove_dir_all(&db_dir);
    let options = Options {
        segment_max_rows: args.rows.max(1),
        ..Options::default()
    };
    let db = Db::open(&db_dir, options)?;
    db.create_table("items", schema(dims), &["id"])?;
    let params = HnswParams {
        metric: Metric::L2,
        m: args.m,
        ef_construction: args.ef_construction,
    };
    db.create_index("items", "v", "items_v_idx", params)?;
    let started = Instant::now();
    let mut load = db.bulk_load("items")?;
    for (i, chunk) in base.chunks(100_000 * dims).enumerate() {
        load.write(&batch(dims, i * 100_000, chunk)?)?;
    }
    load.finish()?;
    let basalt_build = started.elapsed().as_secs_f64();
    let basalt_index_bytes = directory_bytes(&db_dir, "hnsw");
    println!(
        "basalt  build {basalt_build:.1} s (load + graph), index files {:.1} MiB (vectors included)",
        basalt_index_bytes as f64 / (1 << 20) as f64
    );
    let snapshot = db.snapshot();
    let search_all = |ef: usize| -> Result<Vec<Vec<u32>>, BoxError> {
        let mut found = Vec::with_capacity(args.queries);
        for q in queries.chunks(dims) {
            let query = VectorQuery {
                column: 1,
                metric: Metric::L2,
                query: q.to_vec(),
                k: K,
                ef_search: ef.max(K),
                projection: vec![0],
                filter_columns: vec![],
            };
            let hits = snapshot.search("items", &query, None)?;
            let ids = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
                hits.batch.column(0).as_ref(),
            );
            found.push(ids.values().iter().map(|&i| i as u32).collect::<Vec<u32>>());
        }
        Ok(found)
    };
    // One untimed pass first, as the hnswlib script does: the first
    // queries would otherwise pay for faulting the fresh index file in.
    search_all(args.ef.first().copied().unwrap_or(K))?;
    let mut basalt_points = Vec::new();
    for &ef in &args.ef {
        let started = Instant::now();
        let found = search_all(ef)?;
        let qps = args.queries as f64 / started.elapsed().as_secs_f64();
        let recall = recall_of(&found, &truth);
        println!("basalt  ef_search={ef:<4} recall@10 {recall:.4}  {qps:>8.0} queries/s");
        basalt_points.push(Point { ef, recall, qps });
    }
    drop(snapshot);
    db.close()?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vector_hnswlib.py");
    let efs: Vec<String> = args.ef.iter().map(|e| e.to_string()).collect();
    let output = Command::new("python3")
        .arg(&script)
        .arg(&args.dir)
        .arg(dims.to_string())
        .arg(args.m.to_string())
        .arg(args.ef_construction.to_string())
        .arg(efs.join(","))
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "hnswlib run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    let peer: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?;
    let mut ratios = Vec::new();
    for point in &basalt_points {
        let key = point.ef.to_string();
        let peer_qps = peer["qps"][&key].as_f64().unwrap_or(f64::NAN);
        let peer_recall = peer["recall"][&key].as_f64().unwrap_or(f64::NAN);
        ratios.push(json!({
            "ef_search": point.ef,
            "basalt_recall": point.recall,
            "hnswlib_recall": peer_recall,
            "qps_ratio": point.qps / peer_qps,
        }));
    }
    // The goal: at the first ef_search where each engine reaches recall
    // 0.95, Basalt answers at least as many queries per second.
    let basalt_at_goal = qps_at_recall(basalt_points.iter().map(|p| (p.recall, p.qps)), 0.95);
    let peer_at_goal = qps_at_recall(
        args.ef.iter().map(|ef| {
            let key = ef.to_string();
            (
                peer["recall"][&key].as_f64().unwrap_or(f64::NAN),
                peer["qps"][&key].as_f64().unwrap_or(f64::NAN),
            )
        }),
        0.95,
    );
    let peer_build = peer["build_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}",
        json!({
            "workload": "vector",
            "build_time_ratio": basalt_build / peer_build,
            "index_bytes_ratio": basalt_index_bytes as f64 / peer["index_bytes"].as_f64().unwrap_or(f64::NAN),
            "points": ratios,
            "qps_ratio_at_recall_0_95": basalt_at_goal / peer_at_goal,
        })
    );
    Ok(())
}
