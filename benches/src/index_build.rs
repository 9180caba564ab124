//! Writes during CREATE INDEX (issue 26): single-row commits into a table of
//! 1M vectors, alone and while an HNSW index over it is built, in
//! alternating rounds. CREATE INDEX builds without the background work lock
//! and off the writers' path, so the writes should keep at least half their
//! rate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_storage::{Db, HnswParams, Metric, Options};
use clap::Args;
use serde_json::json;

use crate::vector::{batch, generate, schema};
use crate::BoxError;

#[derive(Args)]
pub struct IndexBuildArgs {
    /// Vectors in the table the index is built over.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 32)]
    dims: usize,
    /// Alternating rounds: writes alone, then writes during a build.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Seconds of writes alone per round.
    #[arg(long, default_value_t = 20)]
    alone_secs: u64,
    /// Where the database goes (a fresh temporary directory inside it).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Commits one row at a time until `stop`; returns how many.
fn write_until(
    db: &Db,
    dims: usize,
    next_id: &AtomicU64,
    stop: &AtomicBool,
) -> Result<u64, BoxError> {
    let vector = generate(1, dims, 7);
    let mut commits = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = next_id.fetch_add(1, Ordering::Relaxed) as usize;
        let mut txn = db.begin();
        txn.put("items", &batch(dims, id, &vector)?)?;
        txn.commit()?;
        commits += 1;
    }
    Ok(commits)
}

/// Commits per second by one writer while `during` runs (or for `alone`
/// when `during` is `None`), and how long `during` took.
fn measure(
    db: &Arc<Db>,
    dims: usize,
    next_id: &Arc<AtomicU64>,
    during: Option<Box<dyn FnOnce() -> Result<(), BoxError> + Send>>,
    alone: Duration,
) -> Result<(f64, f64), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, next_id, stop) = (db.clone(), next_id.clone(), stop.clone());
        std::thread::spawn(move || {
            write_until(&db, dims, &next_id, &stop).map_err(|e| e.to_string())
        })
    };
    let started = Instant::now();
    match during {
        Some(work) => work()?,
        None => std::thread::sleep(alone),
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().map_err(|_| "the writer panicked")??;
    Ok((commits as f64 / elapsed, elapsed))
}

pub fn run(args: IndexBuildArgs) -> Result<(), BoxError> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base)?;
    let db = Arc::new(Db::open(tmp.path(), Options::default())?);
    db.create_table("items", schema(args.dims), &["id"])?;
    let vectors = generate(args.rows, args.dims, 1);
    let mut load = db.bulk_load("items")?;
    for (i, chunk) in vectors.chunks(100_000 * args.dims).enumerate() {
        load.write(&batch(args.dims, i * 100_000, chunk)?)?;
    }
    load.finish()?;
    drop(vectors);
    let next_id = Arc::new(AtomicU64::new(args.rows as u64));
    let alone = Duration::from_secs(args.alone_secs);
    let (mut alone_rates, mut during_rates, mut builds) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (rate, _) = measure(&db, args.dims, &next_id, None, alone)?;
        println!("round {round}: writes alone {rate:.0} commits/s");
        alone_rates.push(rate);
        let build_db = db.clone();
        let name = format!("items_v_{round}");
        let build: Box<dyn FnOnce() -> Result<(), BoxError> + Send> = Box::new(move || {
            let params = HnswParams {
                m: 16,
                ef_construction: 64,
                metric: Metric::L2,
            };
            build_db.create_index("items", "v", &name, params)?;
            build_db.drop_index("items", &name)?;
            Ok(())
        });
        let (rate, secs) = measure(&db, args.dims, &next_id, Some(build), alone)?;
        println!(
            "round {round}: writes during CREATE INDEX {rate:.0} commits/s (build {secs:.1} s)"
        );
        during_rates.push(rate);
        builds.push(secs);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, d) = (median(&mut alone_rates), median(&mut during_rates));
    println!(
        "{}",
        json!({
            "rows": args.rows,
            "dims": args.dims,
            "alone_commits_per_s": alone_rates,
            "during_build_commits_per_s": during_rates,
            "build_secs": builds,
            "ratio_during_over_alone_median": d / a,
        })
    );
    Ok(())
}
