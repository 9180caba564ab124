//! Crash test: a writer runs in a child process (this test binary, re-run
//! with an environment variable) and is killed with SIGKILL at random
//! moments. After every kill the directory must reopen with every
//! acknowledged commit present and every transaction all-or-nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::storage::{Db, Options, ScanOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod common;

const DIR_VAR: &str = "BASALT_CRASH_DIR";
const KILLS: usize = 55;
/// Transaction `t` deletes the first row of transaction `t - DELETE_LAG`.
const DELETE_LAG: i64 = 3;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("txn", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

fn options() -> Options {
    Options {
        flush_threshold_bytes: 256 << 10,
        l0_compaction_trigger: 3,
        row_group_rows: 512,
        segment_max_rows: 4096,
        max_wal_files: 4,
        ..Options::default()
    }
}

fn rows_in(txn: i64) -> i64 {
    txn % 37 + 2
}

fn open(dir: &Path) -> Db {
    let db = Db::open(dir, options()).unwrap();
    if db.table("t").is_err() {
        db.create_table("t", schema(), &["k"]).unwrap();
    }
    db
}

/// Transaction id -> the row numbers of it that are present.
fn present(db: &Db) -> BTreeMap<i64, Vec<i64>> {
    let batches = db
        .snapshot()
        .scan("t", &ScanOptions::default())
        .unwrap()
        .execute(2)
        .unwrap();
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for b in &batches {
        let k = b.column(0).as_primitive::<Int64Type>();
        let txn = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert_eq!(k.value(i) / 1000, txn.value(i));
            out.entry(txn.value(i)).or_default().push(k.value(i) % 1000);
        }
    }
    out
}

fn write_forever(dir: &Path) {
    let db = open(dir);
    let mut next = present(&db).keys().next_back().map_or(1, |t| t + 1);
    let mut rng = SmallRng::seed_from_u64(next as u64);
    loop {
        let n = rows_in(next);
        let keys: Vec<i64> = (0..n).map(|j| next * 1000 + j).collect();
        let payload: Vec<String> = keys
            .iter()
            .map(|k| format!("{k}-{}", "x".repeat(rng.gen_range(10..200))))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(Int64Array::from(vec![next; n as usize])),
            Arc::new(StringArray::from(payload)),
        ];
        let mut txn = db.begin();
        txn.put("t", &RecordBatch::try_new(schema(), columns).unwrap())
            .unwrap();
        let victim = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![(next - DELETE_LAG) * 1000]))],
        )
        .unwrap();
        txn.delete("t", &victim).unwrap();
        txn.commit().unwrap();
        println!("acked {next}");
        next += 1;
    }
}

/// The child's entry point; only runs when the parent starts it.
#[test]
#[ignore = "run by crash_kill_loop in a child process"]
fn crash_writer() {
    if let Some(dir) = std::env::var_os(DIR_VAR) {
        write_forever(Path::new(&dir));
    }
}

fn verify(dir: &Path, acked: i64) {
    let db = open(dir);
    let present = present(&db);
    let committed = |t: i64| {
        present
            .get(&t)
            .is_some_and(|rows| rows.iter().any(|&j| j > 0))
    };
    for (&t, rows) in &present {
        let want: Vec<i64> = (0..rows_in(t))
            .filter(|&j| j > 0 || !committed(t + DELETE_LAG))
            .collect();
        assert_eq!(rows, &want, "transaction {t} is partially applied");
    }
    for t in 1..=acked {
        assert!(committed(t), "acknowledged transaction {t} is missing");
    }
}

#[test]
fn crash_kill_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let acked = Arc::new(AtomicU64::new(0));
    for round in 0..KILLS {
        let mut child = common::spawn_child_test("crash_writer", DIR_VAR, dir.path());
        let stdout = child.stdout.take().unwrap();
        let seen = acked.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(t) = line
                    .strip_prefix("acked ")
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    seen.fetch_max(t, Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        verify(dir.path(), acked.load(Ordering::SeqCst) as i64);
        if round == KILLS - 1 {
            assert!(
                acked.load(Ordering::SeqCst) > KILLS as u64,
                "the writer made too little progress to test anything"
            );
            let stats = open(dir.path()).table_stats("t").unwrap();
            assert!(
                stats.l0_segments + stats.l1_segments > 0,
                "no flush happened under the kills: {stats:?}"
            );
        }
    }
}
