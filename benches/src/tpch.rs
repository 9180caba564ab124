//! TPC-H side by side with DuckDB: the same Parquet files (tpchgen) loaded
//! into Basalt's storage and into DuckDB's tables, the 22 queries run on
//! each (best of N), every answer checked against DuckDB's, and the time
//! ratio per query and its geometric mean reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt_query::pgtext::format_value;
use basalt_query::{Database, Session};
use basalt_storage::Options;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use crate::BoxError;

/// Table, primary key.
const TABLES: &[(&str, &[&str])] = &[
    ("region", &["r_regionkey"]),
    ("nation", &["n_nationkey"]),
    ("part", &["p_partkey"]),
    ("supplier", &["s_suppkey"]),
    ("partsupp", &["ps_partkey", "ps_suppkey"]),
    ("customer", &["c_custkey"]),
    ("orders", &["o_orderkey"]),
    ("lineitem", &["l_orderkey", "l_linenumber"]),
];

type Rows = Vec<Vec<Option<String>>>;

#[derive(clap::Args)]
pub struct TpchArgs {
    /// Directory of the tpchgen Parquet files (`tpchgen-cli parquet -s 1`).
    #[arg(long)]
    pub data: PathBuf,
    /// Directory of qNN.sql files.
    #[arg(long, default_value = "../shared/tpch/queries")]
    pub queries: PathBuf,
    /// Basalt's database directory, loaded from the data on first use.
    #[arg(long)]
    pub db: PathBuf,
    /// Runs per query per engine; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Only these queries (comma-separated, e.g. q01,q06).
    #[arg(long)]
    pub only: Option<String>,
    /// Print Basalt's EXPLAIN ANALYZE of the queries instead of timing them.
    #[arg(long)]
    pub explain: bool,
    /// A session setting for Basalt's runs, `name=value` (repeatable).
    #[arg(long = "set")]
    pub settings: Vec<String>,
}

pub fn run(args: TpchArgs) -> Result<(), BoxError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {threads} threads; data {}; best of {} runs",
        args.data.display(),
        args.runs
    );
    let database = open_loaded(&args.db, &args.data)?;
    let queries = query_files(&args.queries, args.only.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    if args.explain {
        for (name, sql) in &queries {
            let plan = runtime.block_on(explain(&database, sql, &args.settings))?;
            println!("{name}:\n{plan}");
        }
        return Ok(());
    }
    let mut basalt = Vec::new();
    for (name, sql) in &queries {
        let (ms, rows) = runtime.block_on(time_query(&database, sql, args.runs, &args.settings))?;
        println!("basalt {name}: {ms:.1} ms, {} rows", rows.len());
        basalt.push((name.clone(), ms, rows));
    }
    drop(database);
    let duck = duckdb(&args)?;
    let mut table = Vec::new();
    let mut log_sum = 0.0;
    let mut wrong = Vec::new();
    for (name, ms, rows) in &basalt {
        let peer = &duck["queries"][name];
        let peer_ms = peer["best_ms"].as_f64().ok_or("duckdb gave no time")?;
        if let Err(why) = same_answer(rows, &peer["rows"]) {
            wrong.push(format!("{name}: {why}"));
        }
        let ratio = ms / peer_ms;
        log_sum += ratio.ln();
        println!("{name}: basalt {ms:>8.1} ms  duckdb {peer_ms:>8.1} ms  ratio {ratio:.2}");
        table.push(json!({"query": name, "basalt_ms": ms, "duckdb_ms": peer_ms, "ratio": ratio}));
    }
    let geomean = (log_sum / basalt.len().max(1) as f64).exp();
    println!("geomean ratio (basalt time / duckdb time): {geomean:.2}");
    if !wrong.is_empty() {
        return Err(format!("answers differ from DuckDB's:\n{}", wrong.join("\n")).into());
    }
    println!("all {} answers match DuckDB's", basalt.len());
    let summary = json!({
        "workload": "tpch",
        "peer": format!("duckdb {}", duck["version"].as_str().unwrap_or("?")),
        "threads": threads,
        "runs": args.runs,
        "queries": table,
        "geomean_ratio": geomean,
    });
    println!("{summary}");
    Ok(())
}

/// The Basalt database for the data set, loaded on first use.
fn open_loaded(db_dir: &Path, data: &Path) -> Result<Database, BoxError> {
    let marker = db_dir.join("tpch-loaded");
    let options = Options {
        synchronous_commit: false,
        ..Options::default()
    };
    if marker.exists() {
        return Ok(Database::open_with(db_dir, options)?);
    }
    if db_dir.exists() {
        std::fs::remove_dir_all(db_dir)?;
    }
    let database = Database::open_with(db_dir, options)?;
    for (table, key) in TABLES {
        let start = Instant::now();
        let rows = load_table(
            &database,
            table,
            key,
            &data.join(format!("{table}.parquet")),
        )?;
        println!(
            "loaded {table}: {rows} rows in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    let start = Instant::now();
    database.storage().flush()?;
    database.storage().compact()?;
    println!(
        "flushed and compacted in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    std::fs::write(&marker, b"")?;
    Ok(database)
}

fn load_table(
    database: &Database,
    table: &str,
    key: &[&str],
    path: &Path,
) -> Result<u64, BoxError> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(65_536)
        .build()?;
    let schema = storage_schema(&reader.schema(), key);
    database
        .storage()
        .create_table(table, schema.clone(), key)?;
    let mut rows = 0;
    for batch in reader {
        let batch = conform(&batch?, &schema)?;
        rows += batch.num_rows() as u64;
        let mut txn = database.storage().begin();
        txn.put(table, &batch)?;
        txn.commit()?;
    }
    Ok(rows)
}

/// Parquet's Arrow schema with view types as plain ones (storage keeps
/// Utf8/Binary) and key columns NOT NULL.
fn storage_schema(schema: &SchemaRef, key: &[&str]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
                other => other.clone(),
            };
            Field::new(
                f.name(),
                data_type,
                f.is_nullable() && !key.contains(&f.name().as_str()),
            )
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, BoxError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

fn query_files(dir: &Path, only: Option<&str>) -> Result<Vec<(String, String)>, BoxError> {
    let wanted: Option<Vec<&str>> = only.map(|o| o.split(',').collect());
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "sql")
            && wanted.as_ref().is_none_or(|w| w.contains(&name))
        {
            queries.push((name.to_string(), std::fs::read_to_string(&path)?));
        }
    }
    queries.sort();
    Ok(queries)
}

async fn time_query(
    database: &Database,
    sql: &str,
    runs: usize,
    settings: &[String],
) -> Result<(f64, Rows), BoxError> {
    let mut best = f64::MAX;
    let mut rows = Vec::new();
    for _ in 0..runs.max(1) {
        let mut session = session_with(database, settings).await?;
        let start = Instant::now();
        let batches = session.query(sql).await?;
        best = best.min(start.elapsed().as_secs_f64() * 1000.0);
        rows = batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |row| {
                    b.columns()
                        .iter()
                        .map(|c| format_value(c.as_ref(), row))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
    }
    Ok((best, rows))
}

async fn session_with(database: &Database, settings: &[String]) -> Result<Session, BoxError> {
    let mut session = database.session();
    for setting in settings {
        let (name, value) = setting.split_once('=').ok_or("--set wants name=value")?;
        session.execute(&format!("SET {name} = '{value}'")).await?;
    }
    Ok(session)
}

async fn explain(database: &Database, sql: &str, settings: &[String]) -> Result<String, BoxError> {
    let mut session = session_with(database, settings).await?;
    // Once first, so the plan shows warm caches as the timed runs see them.
    session.query(sql).await?;
    let batches = session.query(&format!("EXPLAIN ANALYZE {sql}")).await?;
    let mut text = String::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let line = format_value(batch.column(1).as_ref(), row).unwrap_or_default();
            text.push_str(&line);
            text.push('\n');
        }
    }
    Ok(text)
}

fn duckdb(args: &TpchArgs) -> Result<Value, BoxError> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tpch_duckdb.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&args.data)
        .arg(&args.queries)
        .arg(args.runs.to_string())
        .arg(args.only.clone().unwrap_or_default())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "duckdb run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Same rows in the same order; numbers equal to a cent or a millionth.
fn same_answer(ours: &Rows, theirs: &Value) -> Result<(), String> {
    let theirs = theirs.as_array().ok_or("no rows from duckdb")?;
    if ours.len() != theirs.len() {
        return Err(format!("{} rows, duckdb {}", ours.len(), theirs.len()));
    }
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let b = b.as_array().ok_or("duckdb row is not a list")?;
        if a.len() != b.len() {
            return Err(format!("row {i}: {} columns, duckdb {}", a.len(), b.len()));
        }
        for (x, y) in a.iter().zip(b) {
            if !same_value(x.as_deref(), y.as_str()) {
                return Err(format!("row {i}: {a:?} vs duckdb {b:?}"));
            }
        }
    }
    Ok(())
}

fn same_value(ours: Option<&str>, theirs: Option<&str>) -> bool {
    match (ours, theirs) {
        (None, None) => true,
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => {
                let diff = (x - y).abs();
                diff <= 0.01 || diff <= 1e-6 * x.abs().max(y.abs())
            }
            _ => false,
        },
        _ => false,
    }
}
