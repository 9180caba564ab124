//! Side-by-side workloads: Basalt and a peer engine in one process, same data,
//! same machine, same run. Prints figures, then one JSON line (the last) with
//! the Basalt/peer ratios. Run through `benches/run WORKLOAD`.

mod index_build;
mod tpch;
mod vector;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use basalt_bench::{kv_batch, load_wide, random_keys, value_for, wide_a, VALUE_BYTES};
use basalt_storage::{Db, Options, Predicate, PredicateOp, Scalar, ScanOptions};
use clap::{Parser, Subcommand};
use serde_json::json;

/// The `basalt` server runs on mimalloc, so its figures are measured on it
/// too; glibc's allocator returns large column buffers to the kernel and
/// faults them in again on every scan.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Basalt side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Random-key inserts, point reads and a filtered full scan, against fjall.
    Storage {
        /// Keys inserted (100-byte values) and then read back.
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        /// Keys per committed batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Rows of the 4-column scan table.
        #[arg(long, default_value_t = 10_000_000)]
        scan_rows: i64,
        /// Where the engines keep their files (a fresh temporary directory inside it).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Alternating rounds of the insert and point-read phases (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The 22 TPC-H queries over tpchgen Parquet data, against DuckDB (pip
    /// `duckdb`), answers checked against DuckDB's.
    Tpch(tpch::TpchArgs),
    /// HNSW build and single-threaded search on clustered vectors, against
    /// hnswlib (pip `hnswlib`) on the same data and parameters.
    Vector(vector::VectorArgs),
    /// Single-row commits alone and during CREATE INDEX (HNSW) over a table
    /// of vectors; Basalt against itself.
    IndexBuild(index_build::IndexBuildArgs),
}

type BoxError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let result = match Cli::parse().workload {
        Workload::Storage {
            keys,
            batch,
            scan_rows,
            dir,
            rounds,
        } => storage(keys, batch, scan_rows, dir, rounds),
        Workload::Tpch(args) => tpch::run(args),
        Workload::Vector(args) => vector::run(args),
        Workload::IndexBuild(args) => index_build::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Default)]
struct Figures {
    insert_rows_per_s: f64,
    point_reads_per_s: f64,
    scan_load_rows_per_s: f64,
    scan_cold_s: f64,
    scan_warm_s: f64,
    scan_with_memtable_s: f64,
    scan_matches: usize,
}

fn arrow_select_concat(
    batches: &[arrow_array::RecordBatch],
) -> Result<arrow_array::RecordBatch, BoxError> {
    Ok(arrow_select::concat::concat_batches(
        &basalt_bench::wide_schema(),
        batches,
    )?)
}

/// The first round's figures with insert and point-read rates replaced by
/// the medians over all rounds.
fn with_medians(mut rounds: Vec<Figures>) -> Figures {
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut inserts: Vec<f64> = rounds.iter().map(|f| f.insert_rows_per_s).collect();
    let mut reads: Vec<f64> = rounds.iter().map(|f| f.point_reads_per_s).collect();
    let mut first = rounds.swap_remove(0);
    first.insert_rows_per_s = median(&mut inserts);
    first.point_reads_per_s = median(&mut reads);
    first
}

fn per_second(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn storage(
    keys: usize,
    batch: usize,
    scan_rows: i64,
    dir: Option<std::path::PathBuf>,
    rounds: usize,
) -> Result<(), BoxError> {
    let base = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {threads} threads; keys {keys} x {VALUE_BYTES} B in batches of {batch}; scan table {scan_rows} rows x 4 columns");
    let key_set = random_keys(keys, 42);
    let expected_matches = (0..scan_rows).filter(|&id| wide_a(id) == 42).count();

    // Inserts and point reads are short and fsync-bound, so they run in
    // several alternating rounds on fresh directories and report the median;
    // the scan table is loaded once, in the first round.
    let mut basalt_rounds = Vec::new();
    let mut fjall_rounds = Vec::new();
    for round in 0..rounds.max(1) {
        let rows = if round == 0 { scan_rows } else { 0 };
        let b = basalt_storage(
            &base.path().join(format!("basalt-{round}")),
            &key_set,
            batch,
            rows,
            threads,
        )?;
        report("basalt", &b);
        basalt_rounds.push(b);
        let f = fjall_storage(
            &base.path().join(format!("fjall-{round}")),
            &key_set,
            batch,
            rows,
        )?;
        report("fjall", &f);
        fjall_rounds.push(f);
    }
    let basalt = with_medians(basalt_rounds);
    let fjall = with_medians(fjall_rounds);
    println!("medians over {rounds} rounds:");
    report("basalt", &basalt);
    report("fjall", &fjall);
    for (name, f) in [("basalt", &basalt), ("fjall", &fjall)] {
        if f.scan_matches != expected_matches {
            return Err(format!(
                "{name} scan found {} rows, expected {expected_matches}",
                f.scan_matches
            )
            .into());
        }
    }
    let (filter_pass, all_pass) = memory_pass_seconds(scan_rows as usize);
    let a_bytes = scan_rows as f64 * 8.0;
    println!(
        "reference (1 thread, plain Vec): filter column a {:.4} s ({:.2} GB/s), read all 4 columns {:.4} s; basalt warm scan reads a at {:.2} GB/s on {threads} threads",
        filter_pass,
        a_bytes / filter_pass / 1e9,
        all_pass,
        a_bytes / basalt.scan_warm_s / 1e9
    );
    let summary = json!({
        "workload": "storage",
        "keys": keys,
        "scan_rows": scan_rows,
        "peer": "fjall 3",
        "rounds": rounds,
        "basalt": figures_json(&basalt),
        "fjall": figures_json(&fjall),
        "ratio": {
            "insert": basalt.insert_rows_per_s / fjall.insert_rows_per_s,
            "point_read": basalt.point_reads_per_s / fjall.point_reads_per_s,
            "scan_warm": fjall.scan_warm_s / basalt.scan_warm_s,
            "scan_cold": fjall.scan_cold_s / basalt.scan_cold_s,
            "scan_vs_plain_filter_pass": filter_pass / basalt.scan_warm_s,
        },
    });
    println!("{summary}");
    Ok(())
}

fn figures_json(f: &Figures) -> serde_json::Value {
    json!({
        "insert_rows_per_s": f.insert_rows_per_s.round(),
        "point_reads_per_s": f.point_reads_per_s.round(),
        "scan_load_rows_per_s": f.scan_load_rows_per_s.round(),
        "scan_cold_s": f.scan_cold_s,
        "scan_warm_s": f.scan_warm_s,
        "scan_with_memtable_s": f.scan_with_memtable_s,
    })
}

fn report(name: &str, f: &Figures) {
    println!(
        "{name:>7}: insert {:>10.0} rows/s | point read {:>10.0} /s | scan load {:>10.0} rows/s | scan cold {:.3} s warm {:.3} s with 1000 rows in memtable {:.3} s ({} matches)",
        f.insert_rows_per_s, f.point_reads_per_s, f.scan_load_rows_per_s, f.scan_cold_s, f.scan_warm_s, f.scan_with_memtable_s, f.scan_matches
    );
}

fn basalt_storage(
    dir: &std::path::Path,
    keys: &[i64],
    batch: usize,
    scan_rows: i64,
    threads: usize,
) -> Result<Figures, BoxError> {
    let db = Db::open(dir, Options::default())?;
    db.create_table("kv", basalt_bench::kv_schema(), &["k"])?;
    let mut figures = Figures::default();

    let start = Instant::now();
    for chunk in keys.chunks(batch) {
        let mut txn = db.begin();
        txn.put("kv", &kv_batch(chunk))?;
        txn.commit()?;
    }
    figures.insert_rows_per_s = per_second(keys.len(), start.elapsed());
    db.flush()?;

    let probes = read_order(keys);
    let encoded: Vec<Vec<u8>> = probes.iter().map(|&k| encode_i64_key(k)).collect();
    let snapshot = db.snapshot();
    let start = Instant::now();
    let mut found = 0;
    for key in &encoded {
        if snapshot.get("kv", key)?.is_some() {
            found += 1;
        }
    }
    figures.point_reads_per_s = per_second(probes.len(), start.elapsed());
    if found != probes.len() {
        return Err(format!("basalt found {found} of {} keys", probes.len()).into());
    }
    drop(snapshot);
    if scan_rows == 0 {
        return Ok(figures);
    }

    let start = Instant::now();
    load_wide(&db, "wide", scan_rows)?;
    figures.scan_load_rows_per_s = per_second(scan_rows as usize, start.elapsed());
    let options = ScanOptions {
        predicates: vec![Predicate {
            column: 1,
            op: PredicateOp::Eq(Scalar::Int(42)),
        }],
        ..ScanOptions::default()
    };
    let mut timings = Vec::new();
    for _ in 0..4 {
        let snapshot = db.snapshot();
        let start = Instant::now();
        let batches = snapshot.scan("wide", &options)?.execute(threads)?;
        timings.push(start.elapsed().as_secs_f64());
        figures.scan_matches = batches.iter().map(|b| b.num_rows()).sum();
    }
    figures.scan_cold_s = timings[0];
    figures.scan_warm_s = timings[1..].iter().copied().fold(f64::INFINITY, f64::min);

    // Updates still in the memtable must be merged into the scan.
    let mut txn = db.begin();
    let updated: Vec<i64> = random_keys(1000, 9)
        .into_iter()
        .map(|k| k % scan_rows)
        .collect();
    let mut updates = Vec::new();
    for &id in &updated {
        updates.push(basalt_bench::wide_batch(id..id + 1));
    }
    txn.put("wide", &arrow_select_concat(&updates)?)?;
    txn.commit()?;
    figures.scan_with_memtable_s = f64::INFINITY;
    for _ in 0..3 {
        let snapshot = db.snapshot();
        let start = Instant::now();
        let batches = snapshot.scan("wide", &options)?.execute(threads)?;
        figures.scan_with_memtable_s = figures
            .scan_with_memtable_s
            .min(start.elapsed().as_secs_f64());
        if batches.iter().map(|b| b.num_rows()).sum::<usize>() != figures.scan_matches {
            return Err("rewriting rows with the same values changed the scan result".into());
        }
    }
    db.close()?;
    Ok(figures)
}

fn fjall_storage(
    dir: &std::path::Path,
    keys: &[i64],
    batch: usize,
    scan_rows: i64,
) -> Result<Figures, BoxError> {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let db = Database::builder(dir).open()?;
    let kv = db.keyspace("kv", KeyspaceCreateOptions::default)?;
    let mut figures = Figures::default();

    let start = Instant::now();
    for chunk in keys.chunks(batch) {
        let mut writes = db.batch().durability(Some(PersistMode::SyncData));
        for &k in chunk {
            writes.insert(&kv, k.to_be_bytes(), value_for(k));
        }
        writes.commit()?;
    }
    figures.insert_rows_per_s = per_second(keys.len(), start.elapsed());
    kv.rotate_memtable_and_wait()?;

    let probes = read_order(keys);
    let encoded: Vec<[u8; 8]> = probes.iter().map(|k| k.to_be_bytes()).collect();
    let start = Instant::now();
    let mut found = 0;
    for key in &encoded {
        if kv.get(key)?.is_some() {
            found += 1;
        }
    }
    figures.point_reads_per_s = per_second(probes.len(), start.elapsed());
    if found != probes.len() {
        return Err(format!("fjall found {found} of {} keys", probes.len()).into());
    }

    if scan_rows == 0 {
        return Ok(figures);
    }
    let wide = db.keyspace("wide", KeyspaceCreateOptions::default)?;
    let start = Instant::now();
    let mut id = 0;
    while id < scan_rows {
        let end = (id + 100_000).min(scan_rows);
        let mut writes = db.batch().durability(Some(PersistMode::SyncData));
        for i in id..end {
            let mut value = [0u8; 20];
            value[..8].copy_from_slice(&wide_a(i).to_le_bytes());
            value[8..16].copy_from_slice(&(i as f64 * 0.5).to_le_bytes());
            value[16..].copy_from_slice(&((i % 1000) as i32).to_le_bytes());
            writes.insert(&wide, i.to_be_bytes(), value);
        }
        writes.commit()?;
        id = end;
    }
    wide.rotate_memtable_and_wait()?;
    wide.major_compact()?;
    figures.scan_load_rows_per_s = per_second(scan_rows as usize, start.elapsed());
    let mut timings = Vec::new();
    for _ in 0..4 {
        let start = Instant::now();
        let mut matches = Vec::new();
        for item in wide.iter() {
            let (key, value) = item.into_inner()?;
            let a = i64::from_le_bytes(value[..8].try_into()?);
            if a == 42 {
                let b = f64::from_le_bytes(value[8..16].try_into()?);
                let c = i32::from_le_bytes(value[16..20].try_into()?);
                matches.push((i64::from_be_bytes(key[..8].try_into()?), a, b, c));
            }
        }
        timings.push(start.elapsed().as_secs_f64());
        figures.scan_matches = matches.len();
    }
    figures.scan_cold_s = timings[0];
    figures.scan_warm_s = timings[1..].iter().copied().fold(f64::INFINITY, f64::min);
    Ok(figures)
}

/// The inserted keys in a different random order.
fn read_order(keys: &[i64]) -> Vec<i64> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut probes = keys.to_vec();
    probes.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(7));
    probes
}

/// FORMAT.md section 9: a BIGINT key is big-endian with the sign bit flipped.
fn encode_i64_key(k: i64) -> Vec<u8> {
    ((k as u64) ^ (1 << 63)).to_be_bytes().to_vec()
}

/// Seconds for plain single-threaded passes over the same data held in
/// vectors: (filtering column `a` alone, which is what a columnar scan must
/// read; reading all four columns). The memory-bandwidth yardsticks.
fn memory_pass_seconds(rows: usize) -> (f64, f64) {
    let id: Vec<i64> = (0..rows as i64).collect();
    let a: Vec<i64> = id.iter().map(|&i| wide_a(i)).collect();
    let b: Vec<f64> = id.iter().map(|&i| i as f64 * 0.5).collect();
    let c: Vec<i32> = id.iter().map(|&i| (i % 1000) as i32).collect();
    let best_of = |pass: &dyn Fn() -> f64| (0..3).map(|_| pass()).fold(f64::INFINITY, f64::min);
    let filter_a = best_of(&|| {
        let start = Instant::now();
        let hits: Vec<usize> = (0..rows).filter(|&i| a[i] == 42).collect();
        std::hint::black_box(hits);
        start.elapsed().as_secs_f64()
    });
    let all_columns = best_of(&|| {
        let start = Instant::now();
        let mut sum = 0f64;
        let mut matches = 0usize;
        for i in 0..rows {
            matches += usize::from(a[i] == 42);
            sum += id[i] as f64 + b[i] + c[i] as f64;
        }
        std::hint::black_box((sum, matches));
        start.elapsed().as_secs_f64()
    });
    (filter_a, all_columns)
}
