//! Model test: random operations against the engine and a `BTreeMap` oracle,
//! including snapshots, flushes, compactions and reopening the directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::storage::{
    encode_key, Db, Error, Options, Predicate, PredicateOp, Scalar, ScanOptions, Snapshot,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type Row = (Option<String>, Option<i64>);
type Model = BTreeMap<i64, Row>;

const KEY_SPACE: i64 = 300;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]))
}

fn options(background: bool) -> Options {
    Options {
        flush_threshold_bytes: 24 << 10,
        row_group_rows: 16,
        segment_max_rows: 80,
        l0_compaction_trigger: 3,
        max_immutable_memtables: 2,
        l0_stall_limit: 6,
        max_wal_files: 3,
        cache_bytes: 4 << 20,
        background_work: background,
        // Small enough that the manifest is rewritten many times per run.
        manifest_rewrite_bytes: 2048,
        ..Options::default()
    }
}

fn batch(rows: &[(i64, Row)]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1 .0.clone()))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1 .1))),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn key(k: i64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(
        &[Arc::new(Int64Array::from(vec![k])) as ArrayRef],
        0,
        &mut out,
    )
    .unwrap();
    out
}

fn random_row(rng: &mut SmallRng) -> (i64, Row) {
    let k = rng.gen_range(0..KEY_SPACE);
    let v = (!rng.gen_bool(0.2)).then(|| format!("value-{}-{}", k, rng.gen_range(0..1000)));
    let n = (!rng.gen_bool(0.2)).then(|| rng.gen_range(-50..50));
    (k, (v, n))
}

fn rows_of(batches: &[RecordBatch]) -> Vec<(i64, Row)> {
    let mut out = Vec::new();
    for b in batches {
        let k = b.column(0).as_primitive::<Int64Type>();
        let v = b.column(1).as_string::<i32>();
        let n = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let v = (!v.is_null(i)).then(|| v.value(i).to_string());
            let n = (!n.is_null(i)).then(|| n.value(i));
            out.push((k.value(i), (v, n)));
        }
    }
    out
}

fn scan_all(snapshot: &Snapshot, options: &ScanOptions, threads: usize) -> Vec<(i64, Row)> {
    rows_of(
        &snapshot
            .scan("t", options)
            .unwrap()
            .execute(threads)
            .unwrap(),
    )
}

fn check_snapshot(snapshot: &Snapshot, model: &Model, rng: &mut SmallRng) {
    let expected: Vec<(i64, Row)> = model.iter().map(|(k, r)| (*k, r.clone())).collect();
    assert_eq!(scan_all(snapshot, &ScanOptions::default(), 2), expected);

    let threshold = rng.gen_range(-50..50);
    let by_n = ScanOptions {
        predicates: vec![Predicate {
            column: 2,
            op: PredicateOp::Gt(Scalar::Int(threshold)),
        }],
        ..ScanOptions::default()
    };
    let want: Vec<_> = expected
        .iter()
        .filter(|r| r.1 .1.is_some_and(|n| n > threshold))
        .cloned()
        .collect();
    assert_eq!(scan_all(snapshot, &by_n, 1), want, "n > {threshold}");

    let null_v = ScanOptions {
        predicates: vec![Predicate {
            column: 1,
            op: PredicateOp::IsNull,
        }],
        ..ScanOptions::default()
    };
    let want: Vec<_> = expected
        .iter()
        .filter(|r| r.1 .0.is_none())
        .cloned()
        .collect();
    assert_eq!(scan_all(snapshot, &null_v, 2), want, "v IS NULL");

    // A key fixed by equality reads only that key's versions.
    let point = rng.gen_range(0..KEY_SPACE);
    let by_key = ScanOptions {
        predicates: vec![Predicate {
            column: 0,
            op: PredicateOp::Eq(Scalar::Int(point)),
        }],
        ..ScanOptions::default()
    };
    let want: Vec<_> = expected.iter().filter(|r| r.0 == point).cloned().collect();
    assert_eq!(scan_all(snapshot, &by_key, 1), want, "k = {point}");

    let keys: Vec<i64> = (0..4).map(|_| rng.gen_range(0..KEY_SPACE)).collect();
    let in_keys = ScanOptions {
        predicates: vec![
            Predicate {
                column: 0,
                op: PredicateOp::In(keys.iter().map(|&k| Scalar::Int(k)).collect()),
            },
            Predicate {
                column: 0,
                op: PredicateOp::GtEq(Scalar::Int(0)),
            },
        ],
        ..ScanOptions::default()
    };
    let want: Vec<_> = expected
        .iter()
        .filter(|r| keys.contains(&r.0))
        .cloned()
        .collect();
    assert_eq!(scan_all(snapshot, &in_keys, 2), want, "k IN {keys:?}");

    let limit = rng.gen_range(0..10);
    let limited = ScanOptions {
        limit: Some(limit),
        ..ScanOptions::default()
    };
    let want: Vec<_> = expected.iter().take(limit).cloned().collect();
    assert_eq!(scan_all(snapshot, &limited, 2), want, "limit {limit}");

    let projected = ScanOptions {
        projection: Some(vec![2]),
        ..ScanOptions::default()
    };
    let got = snapshot.scan("t", &projected).unwrap().execute(2).unwrap();
    let got: Vec<Option<i64>> = got
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, expected.iter().map(|r| r.1 .1).collect::<Vec<_>>());

    let count_only = ScanOptions {
        projection: Some(vec![]),
        predicates: by_n.predicates.clone(),
        ..ScanOptions::default()
    };
    let counted: usize = snapshot
        .scan("t", &count_only)
        .unwrap()
        .execute(2)
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        counted,
        expected
            .iter()
            .filter(|r| r.1 .1.is_some_and(|n| n > threshold))
            .count(),
        "count(*) where n > {threshold}"
    );

    for _ in 0..5 {
        let k = rng.gen_range(0..KEY_SPACE);
        let got = snapshot
            .get("t", &key(k))
            .unwrap()
            .map(|b| rows_of(&[b])[0].1.clone());
        assert_eq!(got.as_ref(), model.get(&k), "get {k}");
    }
}

fn open(dir: &std::path::Path, background: bool) -> Db {
    let db = Db::open(dir, options(background)).unwrap();
    if db.table("t").is_err() {
        db.create_table("t", schema(), &["k"]).unwrap();
    }
    db
}

fn run_model(seed: u64, operations: usize, background: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut db = open(dir.path(), background);
    let mut model = Model::new();
    let mut snapshots: Vec<(Snapshot, Model)> = Vec::new();
    for step in 0..operations {
        match rng.gen_range(0..100) {
            0..=35 => {
                let rows: Vec<_> = (0..rng.gen_range(1..40))
                    .map(|_| random_row(&mut rng))
                    .collect();
                let mut txn = db.begin();
                txn.put("t", &batch(&rows)).unwrap();
                txn.commit().unwrap();
                model.extend(rows);
            }
            36..=39 => {
                // A bulk load: several runs (segment_max_rows is small), keys
                // repeated within and across them; the last row given wins.
                let rows: Vec<_> = (0..rng.gen_range(1..250))
                    .map(|_| random_row(&mut rng))
                    .collect();
                let mut load = db.bulk_load("t").unwrap();
                for chunk in rows.chunks(rng.gen_range(1..60)) {
                    load.write(&batch(chunk)).unwrap();
                }
                if rng.gen_bool(0.1) {
                    drop(load);
                } else {
                    load.finish().unwrap();
                    model.extend(rows);
                }
            }
            40..=51 => {
                let keys: Vec<i64> = (0..rng.gen_range(1..20))
                    .map(|_| rng.gen_range(0..KEY_SPACE))
                    .collect();
                let mut txn = db.begin();
                let key_batch = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
                    vec![Arc::new(Int64Array::from(keys.clone()))],
                )
                .unwrap();
                txn.delete("t", &key_batch).unwrap();
                txn.commit().unwrap();
                keys.iter().for_each(|k| {
                    model.remove(k);
                });
            }
            52..=59 => {
                // A mixed transaction that reads its own writes, then commits or rolls back.
                let mut txn = db.begin();
                let mut local = model.clone();
                let rows: Vec<_> = (0..rng.gen_range(1..10))
                    .map(|_| random_row(&mut rng))
                    .collect();
                txn.put("t", &batch(&rows)).unwrap();
                local.extend(rows);
                let gone = rng.gen_range(0..KEY_SPACE);
                txn.delete_keys("t", vec![key(gone)]).unwrap();
                local.remove(&gone);
                let seen = rows_of(
                    &txn.scan("t", &ScanOptions::default())
                        .unwrap()
                        .execute(2)
                        .unwrap(),
                );
                assert_eq!(
                    seen,
                    local
                        .iter()
                        .map(|(k, r)| (*k, r.clone()))
                        .collect::<Vec<_>>()
                );
                if rng.gen_bool(0.7) {
                    txn.commit().unwrap();
                    model = local;
                } else {
                    txn.rollback();
                }
            }
            60..=63 => {
                // Two writers on one key: the second to commit loses.
                let (k, row) = random_row(&mut rng);
                let mut first = db.begin();
                let mut second = db.begin();
                first.put("t", &batch(&[(k, row.clone())])).unwrap();
                second
                    .put("t", &batch(&[(k, (Some("loser".into()), None))]))
                    .unwrap();
                first.commit().unwrap();
                assert!(matches!(second.commit(), Err(Error::WriteConflict)));
                model.insert(k, row);
            }
            64..=77 => check_snapshot(&db.snapshot(), &model, &mut rng),
            78..=83 => snapshots.push((db.snapshot(), model.clone())),
            84..=87 => {
                if !snapshots.is_empty() {
                    let (snapshot, frozen) =
                        snapshots.swap_remove(rng.gen_range(0..snapshots.len()));
                    check_snapshot(&snapshot, &frozen, &mut rng);
                }
            }
            88..=92 => db.flush().unwrap(),
            93..=96 => db.compact().unwrap(),
            _ => {
                for (snapshot, frozen) in snapshots.drain(..) {
                    check_snapshot(&snapshot, &frozen, &mut rng);
                }
                drop(db);
                db = open(dir.path(), background);
            }
        }
        if step % 97 == 0 {
            assert_eq!(db.snapshot().sequence(), db.last_sequence(), "step {step}");
        }
    }
    for (snapshot, frozen) in snapshots.drain(..) {
        check_snapshot(&snapshot, &frozen, &mut rng);
    }
    check_snapshot(&db.snapshot(), &model, &mut rng);
    drop(db);
    let db = open(dir.path(), background);
    check_snapshot(&db.snapshot(), &model, &mut rng);
}

#[test]
fn model_with_background_work() {
    for seed in 1..=3 {
        run_model(seed, 1500, true);
    }
}

#[test]
fn model_with_inline_work() {
    for seed in 10..=12 {
        run_model(seed, 1500, false);
    }
}

#[test]
fn an_abandoned_async_commit_still_becomes_durable_and_visible() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let mut txn = db.begin();
    txn.put("t", &batch(&[(1, (Some("kept".into()), None))]))
        .unwrap();
    // Its waiter is dropped unpolled, as a cancelled COMMIT's is.
    drop(txn.commit_unsynced().unwrap().durable());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while db.snapshot().get("t", &key(1)).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the commit never became visible"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(db);
    let reopened = open(dir.path(), true);
    assert!(reopened.snapshot().get("t", &key(1)).unwrap().is_some());
}

#[test]
fn a_transaction_older_than_a_bulk_load_conflicts_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let mut txn = db.begin();
    txn.put("t", &batch(&[(1, (Some("seed".into()), None))]))
        .unwrap();
    txn.commit().unwrap();

    let mut older = db.begin();
    let mut untouched = db.begin();
    let before = db.snapshot();
    let mut load = db.bulk_load("t").unwrap();
    load.write(&batch(&[
        (1, (Some("loaded".into()), Some(7))),
        (2, (None, None)),
    ]))
    .unwrap();
    let summary = load.finish().unwrap();
    assert_eq!((summary.rows, summary.segments), (2, 1));

    // The older snapshot does not see the load; a new one sees all of it.
    assert_eq!(scan_all(&before, &ScanOptions::default(), 1).len(), 1);
    let after = scan_all(&db.snapshot(), &ScanOptions::default(), 1);
    assert_eq!(
        after,
        vec![(1, (Some("loaded".into()), Some(7))), (2, (None, None))]
    );
    older
        .put("t", &batch(&[(1, (Some("stale".into()), None))]))
        .unwrap();
    assert!(matches!(older.commit(), Err(Error::WriteConflict)));
    untouched
        .put("t", &batch(&[(3, (Some("new".into()), None))]))
        .unwrap();
    untouched.commit().unwrap();

    // Still a conflict once the load has been compacted with other rows.
    let mut older = db.begin();
    let mut load = db.bulk_load("t").unwrap();
    load.write(&batch(&[(2, (Some("again".into()), None))]))
        .unwrap();
    load.finish().unwrap();
    db.compact().unwrap();
    older.put("t", &batch(&[(2, (None, Some(1)))])).unwrap();
    assert!(matches!(older.commit(), Err(Error::WriteConflict)));
}

#[test]
fn an_unfinished_bulk_load_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = |dir: &std::path::Path| std::fs::read_dir(dir.join("seg")).unwrap().count();
    let db = open(dir.path(), false);
    let mut load = db.bulk_load("t").unwrap();
    let rows: Vec<_> = (0..200).map(|k| (k, (None, Some(k)))).collect();
    load.write(&batch(&rows)).unwrap();
    load.write(&batch(&rows)).unwrap();
    // Runs are written, in the background, as they fill.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files(dir.path()) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(files(dir.path()) > 0, "runs are written as they fill");
    drop(load);
    assert_eq!(files(dir.path()), 0);
    assert!(scan_all(&db.snapshot(), &ScanOptions::default(), 1).is_empty());
}

#[test]
fn keyless_tables_get_increasing_row_ids_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let values = |r: std::ops::Range<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(r)) as ArrayRef],
        )
        .unwrap()
    };
    {
        let db = Db::open(dir.path(), options(true)).unwrap();
        db.create_table("log", schema.clone(), &[]).unwrap();
        let mut txn = db.begin();
        txn.put("log", &values(0..3)).unwrap();
        txn.put("log", &values(0..3)).unwrap();
        txn.commit().unwrap();
    }
    let db = Db::open(dir.path(), options(true)).unwrap();
    let mut txn = db.begin();
    txn.put("log", &values(10..12)).unwrap();
    txn.commit().unwrap();
    db.flush().unwrap();
    let batches = db
        .snapshot()
        .scan("log", &ScanOptions::default())
        .unwrap()
        .execute(1)
        .unwrap();
    let got: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(
        got,
        vec![0, 1, 2, 0, 1, 2, 10, 11],
        "insertion order, duplicates kept"
    );
}

#[test]
fn catalog_is_durable_and_errors_are_specific() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path(), true);
        assert!(matches!(
            db.create_table("t", schema(), &["k"]),
            Err(Error::TableExists(_))
        ));
        assert!(matches!(
            db.create_table("u", schema(), &["nope"]),
            Err(Error::ColumnNotFound(_))
        ));
        assert!(matches!(
            Db::open(dir.path(), Options::default()),
            Err(Error::Locked(_))
        ));
        db.create_table("gone", schema(), &[]).unwrap();
        db.drop_table("gone").unwrap();
        let mut txn = db.begin();
        let bad = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec![Some("x")])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        txn.put("t", &bad).unwrap();
        assert!(matches!(
            txn.put("gone", &bad),
            Err(Error::TableNotFound(_))
        ));
        let wrong_type = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        assert!(matches!(
            txn.put("t", &wrong_type),
            Err(Error::InvalidArgument(_))
        ));
        txn.commit().unwrap();
    }
    let db = open(dir.path(), true);
    assert_eq!(
        db.tables()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        vec!["t"]
    );
    assert_eq!(db.table("t").unwrap().key_columns, vec![0]);
    assert!(db.snapshot().get("t", &key(1)).unwrap().is_some());
}

#[test]
fn concurrent_committers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let threads = 8;
    let per_thread = 50;
    let before = db.wal_syncs();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let db = &db;
            scope.spawn(move || {
                for i in 0..per_thread {
                    let mut txn = db.begin();
                    txn.put("t", &batch(&[(t * 1000 + i, (Some("x".into()), Some(i)))]))
                        .unwrap();
                    txn.commit().unwrap();
                }
            });
        }
    });
    let commits = (threads * per_thread) as u64;
    let syncs = db.wal_syncs() - before;
    assert!(
        syncs >= 1 && syncs < commits,
        "{syncs} fsyncs for {commits} commits"
    );
    assert_eq!(
        db.snapshot()
            .scan("t", &ScanOptions::default())
            .unwrap()
            .execute(2)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        commits as usize
    );
}

#[test]
fn segments_outlive_compaction_while_a_snapshot_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), false);
    let seg_dir = dir.path().join("seg");
    let segment_files = || {
        let mut names: Vec<_> = std::fs::read_dir(&seg_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    for round in 0..3 {
        let mut txn = db.begin();
        txn.put(
            "t",
            &batch(&[(round, (Some(format!("r{round}")), Some(round)))]),
        )
        .unwrap();
        txn.commit().unwrap();
        db.flush().unwrap();
    }
    let before = segment_files();
    assert_eq!(before.len(), 3);
    let snapshot = db.snapshot();
    let mut txn = db.begin();
    txn.delete_keys("t", vec![key(0)]).unwrap();
    txn.commit().unwrap();
    db.compact().unwrap();
    let after = segment_files();
    assert!(
        before.iter().all(|f| after.contains(f)),
        "a file the snapshot reads was deleted"
    );
    assert_eq!(scan_all(&snapshot, &ScanOptions::default(), 1).len(), 3);
    assert_eq!(
        scan_all(&db.snapshot(), &ScanOptions::default(), 1).len(),
        2
    );
    drop(snapshot);
    let last = segment_files();
    assert!(
        before.iter().all(|f| !last.contains(f)),
        "replaced segments were not deleted: {last:?}"
    );
    assert_eq!(db.table_stats("t").unwrap().l1_segments, 1);
}

#[test]
fn flushed_wal_files_are_deleted_and_asynchronous_commits_survive_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let wal_files = || std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    {
        let db = Db::open(
            dir.path(),
            Options {
                synchronous_commit: false,
                ..options(true)
            },
        )
        .unwrap();
        db.create_table("t", schema(), &["k"]).unwrap();
        for round in 0..20 {
            let rows: Vec<_> = (0..50)
                .map(|i| (round * 50 + i, (Some("x".repeat(100)), Some(i))))
                .collect();
            let mut txn = db.begin();
            txn.put("t", &batch(&rows)).unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(db.wal_syncs(), 0, "no commit waited for an fsync");
        db.flush().unwrap();
        // The active file and at most one prepared ahead remain.
        assert!(wal_files() <= 2, "{} WAL files after a flush", wal_files());
        let mut txn = db.begin();
        txn.put("t", &batch(&[(5000, (None, None))])).unwrap();
        txn.commit().unwrap();
    }
    let db = open(dir.path(), true);
    assert_eq!(
        scan_all(&db.snapshot(), &ScanOptions::default(), 2).len(),
        1001
    );
}

#[test]
fn writers_wait_for_flushes_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let tight = Options {
        flush_threshold_bytes: 4 << 10,
        max_immutable_memtables: 1,
        l0_stall_limit: 2,
        // Never reached on its own: the stall limit must pull compaction forward.
        l0_compaction_trigger: 100,
        ..options(true)
    };
    let db = Db::open(dir.path(), tight).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    for round in 0..100 {
        let rows: Vec<_> = (0..20)
            .map(|i| (round * 20 + i, (Some("y".repeat(200)), Some(i))))
            .collect();
        let mut txn = db.begin();
        txn.put("t", &batch(&rows)).unwrap();
        txn.commit().unwrap();
    }
    assert!(db.write_stalls() > 0, "the writer never had to wait");
    let stats = db.table_stats("t").unwrap();
    assert!(stats.l0_segments < 2 + 1, "{stats:?}");
    assert_eq!(
        scan_all(&db.snapshot(), &ScanOptions::default(), 2).len(),
        2000
    );
}

#[test]
fn added_columns_read_as_null_in_older_rows_through_flush_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let write = |db: &Db, rows: &[(i64, Row)]| {
        let mut txn = db.begin();
        txn.put("t", &batch(rows)).unwrap();
        txn.commit().unwrap();
    };
    write(&db, &[(1, (Some("flushed".into()), Some(1)))]);
    db.flush().unwrap();
    write(&db, &[(2, (Some("in memory".into()), Some(2)))]);
    let mut stale = db.begin();
    stale.put("t", &batch(&[(9, (None, None))])).unwrap();

    let def = db
        .add_column("t", Field::new("extra", DataType::Utf8, true))
        .unwrap();
    assert_eq!((def.schema.fields().len(), def.schema_version), (4, 2));
    assert!(matches!(stale.commit(), Err(Error::SchemaChanged(_))));
    assert!(matches!(
        db.add_column("t", Field::new("strict", DataType::Int64, false)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.add_column("t", Field::new("v", DataType::Int64, true)),
        Err(Error::InvalidArgument(_))
    ));

    let wide = RecordBatch::try_new(
        def.schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![3])),
            Arc::new(StringArray::from(vec![Some("new")])),
            Arc::new(Int64Array::from(vec![Some(3)])),
            Arc::new(StringArray::from(vec![Some("extra!")])),
        ],
    )
    .unwrap();
    let mut txn = db.begin();
    txn.put("t", &wide).unwrap();
    txn.commit().unwrap();

    let extra_of = |db: &Db| -> Vec<(i64, Option<String>)> {
        let batches = db
            .snapshot()
            .scan(
                "t",
                &ScanOptions {
                    projection: Some(vec![0, 3]),
                    ..ScanOptions::default()
                },
            )
            .unwrap()
            .execute(2)
            .unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_primitive::<Int64Type>().clone();
                let e = b.column(1).as_string::<i32>().clone();
                (0..b.num_rows())
                    .map(move |i| (k.value(i), (!e.is_null(i)).then(|| e.value(i).to_string())))
            })
            .collect()
    };
    let expected = vec![(1, None), (2, None), (3, Some("extra!".to_string()))];
    assert_eq!(extra_of(&db), expected);
    let only_extra = ScanOptions {
        predicates: vec![Predicate {
            column: 3,
            op: PredicateOp::IsNotNull,
        }],
        ..ScanOptions::default()
    };
    assert_eq!(
        db.snapshot()
            .scan("t", &only_extra)
            .unwrap()
            .execute(1)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        1
    );
    // The last write is only in the WAL: reopening replays it under the new layout.
    drop(db);
    let db = open(dir.path(), true);
    assert_eq!(extra_of(&db), expected);
    db.compact().unwrap();
    assert_eq!(extra_of(&db), expected);
    let got = db.snapshot().get("t", &key(1)).unwrap().unwrap();
    assert_eq!(got.num_columns(), 4);
    assert!(got.column(3).is_null(0));
}

#[test]
fn renamed_tables_keep_their_rows_under_the_new_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path(), true);
        let mut txn = db.begin();
        txn.put("t", &batch(&[(1, (Some("a".into()), None))]))
            .unwrap();
        txn.commit().unwrap();
        db.create_table("taken", schema(), &[]).unwrap();
        assert!(matches!(
            db.rename_table("t", "taken"),
            Err(Error::TableExists(_))
        ));
        db.rename_table("t", "renamed").unwrap();
        assert!(matches!(db.table("t"), Err(Error::TableNotFound(_))));
    }
    let db = Db::open(dir.path(), options(true)).unwrap();
    assert!(matches!(db.table("t"), Err(Error::TableNotFound(_))));
    let rows = rows_of(
        &db.snapshot()
            .scan("renamed", &ScanOptions::default())
            .unwrap()
            .execute(1)
            .unwrap(),
    );
    assert_eq!(rows, vec![(1, (Some("a".into()), None))]);
}

#[test]
fn a_row_read_from_a_segment_and_written_back_holds_only_itself_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            background_work: false,
            ..Options::default()
        },
    )
    .unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    let rows: Vec<_> = (0..5000)
        .map(|i| (i, (Some("x".repeat(100)), Some(i))))
        .collect();
    let mut txn = db.begin();
    txn.put("t", &batch(&rows)).unwrap();
    txn.commit().unwrap();
    db.flush().unwrap();
    assert_eq!(db.table_stats("t").unwrap().memtable_bytes, 0);

    // As a point UPDATE does: read the row, change a column, put it back.
    let mut txn = db.begin();
    let old = txn.get("t", &key(42)).unwrap().unwrap();
    let mut columns = old.columns().to_vec();
    columns[2] = Arc::new(Int64Array::from(vec![-1]));
    txn.put("t", &RecordBatch::try_new(schema(), columns).unwrap())
        .unwrap();
    txn.commit().unwrap();

    let held = db.table_stats("t").unwrap().memtable_bytes;
    assert!(
        held < 4096,
        "one updated row holds {held} bytes of memtable"
    );
    let row = db.snapshot().get("t", &key(42)).unwrap().unwrap();
    assert_eq!(
        rows_of(&[row]),
        vec![(42, (Some("x".repeat(100)), Some(-1)))]
    );
}

/// A bulk load finishing after its table was dropped fails and brings
/// nothing back: not the table, not its rows, not after a restart.
#[test]
fn a_bulk_load_into_a_dropped_table_fails_and_the_table_stays_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path(), false);
        let mut load = db.bulk_load("t").unwrap();
        let rows: Vec<_> = (0..200).map(|k| (k, (None, Some(k)))).collect();
        load.write(&batch(&rows)).unwrap();
        db.drop_table("t").unwrap();
        assert!(matches!(load.finish(), Err(Error::TableNotFound(_))));
        assert!(db.table("t").is_err());
    }
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert!(db.table("t").is_err());
    assert_eq!(
        std::fs::read_dir(dir.path().join("seg")).unwrap().count(),
        0
    );
}

/// Bulk inserts against the model: each load of random keys (several runs,
/// overlapping) between random writes, flushes and compactions succeeds
/// exactly when no key repeats and none is live in the model, and then
/// adds its rows; a refused load changes nothing.
#[test]
fn bulk_inserts_refuse_exactly_the_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), true);
    let mut model = Model::new();
    let mut rng = SmallRng::seed_from_u64(0xb0c);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..120 {
        let mut txn = db.begin();
        for _ in 0..rng.gen_range(0..60) {
            let (k, row) = random_row(&mut rng);
            if rng.gen_bool(0.7) {
                txn.delete("t", &batch(&[(k, row)]).project(&[0]).unwrap())
                    .unwrap();
                model.remove(&k);
            } else {
                txn.put("t", &batch(&[(k, row.clone())])).unwrap();
                model.insert(k, row);
            }
        }
        txn.commit().unwrap();
        match round % 7 {
            0 => db.flush().unwrap(),
            3 => db.compact().unwrap(),
            _ => {}
        }
        let fresh: Vec<i64> = (0..KEY_SPACE).filter(|k| !model.contains_key(k)).collect();
        if fresh.is_empty() {
            continue;
        }
        let mut load_keys: Vec<i64> = (0..rng.gen_range(1..120))
            .map(|_| fresh[rng.gen_range(0..fresh.len())])
            .collect();
        load_keys.sort_unstable();
        load_keys.dedup();
        // Scattered, so that the runs' key ranges overlap.
        rand::seq::SliceRandom::shuffle(load_keys.as_mut_slice(), &mut rng);
        match rng.gen_range(0..4) {
            0 => load_keys.push(load_keys[rng.gen_range(0..load_keys.len())]),
            1 => load_keys.push(rng.gen_range(0..KEY_SPACE)),
            _ => {}
        }
        let rows: Vec<(i64, Row)> = load_keys
            .iter()
            .map(|&k| (k, (Some(format!("load {round}")), Some(k))))
            .collect();
        let repeats = load_keys.len()
            != load_keys
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len();
        let clashes = repeats || load_keys.iter().any(|k| model.contains_key(k));
        let mut load = db.bulk_insert("t").unwrap();
        let outcome = rows
            .chunks(37)
            .try_for_each(|chunk| load.write(&batch(chunk)))
            .and_then(|()| load.finish());
        match outcome {
            Ok(summary) => {
                assert!(!clashes, "round {round}: a duplicate was loaded");
                assert_eq!(summary.rows as usize, rows.len());
                model.extend(rows);
                accepted += 1;
            }
            Err(Error::DuplicateKey { .. }) => {
                assert!(clashes, "round {round}: refused without a duplicate");
                refused += 1;
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        check_snapshot(&db.snapshot(), &model, &mut rng);
    }
    assert!(accepted > 20 && refused > 20, "{accepted} {refused}");
}
