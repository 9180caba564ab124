//! The index framework under concurrent work: CREATE INDEX builds without
//! stopping writes, flushes or bulk loads, and every segment that exists
//! when it publishes has the index's file.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::storage::{Db, Options, Predicate, PredicateOp, Scalar, ScanOptions};

mod common;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
    ]))
}

fn rows(keys: std::ops::Range<i64>) -> RecordBatch {
    let a: Vec<i64> = keys.clone().map(|k| k % 97).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(keys)),
        Arc::new(Int64Array::from(a)),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn files(dir: &std::path::Path, suffix: &str) -> usize {
    common::files_ending(&dir.join("seg"), suffix).len()
}

fn count_where_a(db: &Db, a: i64) -> (usize, Option<String>) {
    let options = ScanOptions {
        predicates: vec![Predicate {
            column: 1,
            op: PredicateOp::Eq(Scalar::Int(a)),
        }],
        ..ScanOptions::default()
    };
    let plan = db.snapshot().scan("t", &options).unwrap();
    let found = plan.execute(1).unwrap().iter().map(|b| b.num_rows()).sum();
    (found, plan.index().map(str::to_string))
}

#[test]
fn writes_flushes_and_loads_go_on_during_create_index() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        flush_threshold_bytes: 64 << 10,
        segment_max_rows: 20_000,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), options).unwrap());
    db.create_table("t", schema(), &["k"]).unwrap();
    let mut load = db.bulk_load("t").unwrap();
    for start in (0..400_000).step_by(50_000) {
        load.write(&rows(start..start + 50_000)).unwrap();
    }
    load.finish().unwrap();

    let building = Arc::new(AtomicBool::new(true));
    let written_during = Arc::new(AtomicU64::new(0));
    let flushed_during = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, building, written) = (db.clone(), building.clone(), written_during.clone());
        let flushed = flushed_during.clone();
        std::thread::spawn(move || {
            let mut next = 1_000_000;
            while building.load(Ordering::SeqCst) {
                let mut txn = db.begin();
                txn.put("t", &rows(next..next + 100)).unwrap();
                txn.commit().unwrap();
                next += 100;
                written.fetch_add(100, Ordering::SeqCst);
                if next % 5_000 == 0 {
                    db.flush().unwrap();
                    let mut load = db.bulk_load("t").unwrap();
                    load.write(&rows(next + 500_000..next + 500_100)).unwrap();
                    load.finish().unwrap();
                    if building.load(Ordering::SeqCst) {
                        flushed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            next
        })
    };
    db.add_index("t", "t_a", "btree", &["a"], Vec::new())
        .unwrap();
    building.store(false, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        written_during.load(Ordering::SeqCst) > 0,
        "no write finished while the index was built"
    );
    assert!(
        flushed_during.load(Ordering::SeqCst) > 0,
        "no flush or bulk load finished while the index was built"
    );
    db.flush().unwrap();
    assert_eq!(files(dir.path(), ".btree"), files(dir.path(), ".bseg"));
    let (found, index) = count_where_a(&db, 5);
    assert_eq!(index.as_deref(), Some("t_a"));
    let all = db
        .snapshot()
        .scan("t", &ScanOptions::default())
        .unwrap()
        .execute(1)
        .unwrap();
    let expected: usize = all
        .iter()
        .map(|b| {
            let a = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            a.iter().filter(|v| *v == Some(5)).count()
        })
        .sum();
    assert_eq!(found, expected);
    drop(all);
    let db = Arc::try_unwrap(db).ok().unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(count_where_a(&db, 5).0, expected);
}

/// An index file whose checksum holds but whose rows do not fit its
/// segment (a writer's bug, not a flipped bit) is reported as corruption
/// naming the segment, never a panic.
#[test]
fn an_index_naming_rows_its_segment_lacks_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    let mut txn = db.begin();
    txn.put("t", &rows(0..100)).unwrap();
    txn.commit().unwrap();
    db.flush().unwrap();
    db.add_index("t", "t_a", "btree", &["a"], Vec::new())
        .unwrap();
    db.close().unwrap();
    let name = &common::files_ending(&dir.path().join("seg"), ".btree")[0];
    let mut bogus = Vec::new();
    let mut key = Vec::new();
    let five: ArrayRef = Arc::new(Int64Array::from(vec![5]));
    basalt::storage::encode_key(&[five], 0, &mut key).unwrap();
    let first_values = basalt::formats::bloom::BloomFilter::build([key.as_slice()].into_iter());
    basalt::formats::btree::write(&[(key, 1_000_000)], &first_values, &mut bogus).unwrap();
    std::fs::write(dir.path().join("seg").join(name), bogus).unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let options = ScanOptions {
        predicates: vec![Predicate {
            column: 1,
            op: PredicateOp::Eq(Scalar::Int(5)),
        }],
        ..ScanOptions::default()
    };
    let err = db.snapshot().scan("t", &options).err().expect("an error");
    let text = err.to_string();
    assert!(
        matches!(err, basalt::storage::Error::Corruption { .. }),
        "{text}"
    );
    assert!(text.contains(".bseg") && text.contains("t_a"), "{text}");
}

/// Table `t` with B-tree index `t_a` on `a`, bulk loaded with keys
/// `0..rows` in segments of `segment_max_rows`; no background work.
fn loaded_with_index_on_a(dir: &std::path::Path, segment_max_rows: usize, rows_loaded: i64) -> Db {
    let options = Options {
        segment_max_rows,
        background_work: false,
        ..Options::default()
    };
    let db = Db::open(dir, options).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    db.add_index("t", "t_a", "btree", &["a"], Vec::new())
        .unwrap();
    let mut load = db.bulk_load("t").unwrap();
    load.write(&rows(0..rows_loaded)).unwrap();
    load.finish().unwrap();
    db
}

/// `ORDER BY a LIMIT k` through a B-tree index: each segment gives its
/// first k visible rows in `a` order (and ties), not all its rows, and the
/// first k of the union are the table's first k.
#[test]
fn a_scan_for_the_first_rows_reads_few_rows_per_segment() {
    let dir = tempfile::tempdir().unwrap();
    let db = loaded_with_index_on_a(dir.path(), 2_000, 10_000);
    // Newer versions in memory move some rows; a few rows are deleted.
    let mut txn = db.begin();
    let moved = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=5)) as ArrayRef,
            Arc::new(Int64Array::from(vec![1000; 5])),
        ],
    )
    .unwrap();
    txn.put("t", &moved).unwrap();
    txn.delete_keys(
        "t",
        basalt::storage::encode_keys(
            &[Arc::new(Int64Array::from(vec![97i64, 194])) as ArrayRef],
            2,
        )
        .unwrap(),
    )
    .unwrap();
    txn.commit().unwrap();
    let first = |descending: bool| {
        let options = ScanOptions {
            first_rows: Some(basalt::storage::FirstRows {
                column: 1,
                descending,
                nulls_first: false,
                limit: 3,
            }),
            ..ScanOptions::default()
        };
        let plan = db.snapshot().scan("t", &options).unwrap();
        let batches = plan.execute(1).unwrap();
        let mut found: Vec<(i64, i64)> = Vec::new();
        for batch in &batches {
            let k = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let a = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            found.extend((0..batch.num_rows()).map(|i| (a.value(i), k.value(i))));
        }
        (found, plan.index().map(str::to_string))
    };
    let (ascending, index) = first(false);
    assert_eq!(index.as_deref(), Some("t_a"));
    // Five segments of 2,000 rows, each giving its rows with the three
    // smallest values (about 21 per value) rather than all 2,000.
    assert!(ascending.len() < 500, "{} rows read", ascending.len());
    let mut ascending = ascending;
    ascending.sort();
    let mut want: Vec<(i64, i64)> = (0..10_000i64)
        .filter(|k| ![97, 194].contains(k))
        .map(|k| {
            if (1..=5).contains(&k) {
                (1000, k)
            } else {
                (k % 97, k)
            }
        })
        .collect();
    want.sort();
    assert_eq!(ascending[..3], want[..3]);
    // Every row tied on the smallest value is there.
    let ties = want.iter().filter(|(a, _)| *a == 0).count();
    assert_eq!(ascending.iter().filter(|(a, _)| *a == 0).count(), ties);
    let (mut descending, _) = first(true);
    descending.sort();
    assert!(descending.len() < 500);
    assert_eq!(descending[descending.len() - 3..], want[want.len() - 3..]);
}

/// `WHERE ... ORDER BY a LIMIT k` through the index: the walk keeps each
/// segment's first rows that match, a range on `a` bounds it, and a filter
/// that rejects nearly every row sends the walk back to a full read; the
/// first k rows are the table's either way.
#[test]
fn a_filtered_scan_for_the_first_rows_keeps_the_matching_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = loaded_with_index_on_a(dir.path(), Options::default().segment_max_rows, 20_000);
    let first = |predicates: Vec<Predicate>, descending: bool, limit: usize| {
        let options = ScanOptions {
            predicates,
            first_rows: Some(basalt::storage::FirstRows {
                column: 1,
                descending,
                nulls_first: false,
                limit,
            }),
            ..ScanOptions::default()
        };
        let plan = db.snapshot().scan("t", &options).unwrap();
        assert_eq!(plan.index(), Some("t_a"));
        let mut found: Vec<(i64, i64)> = Vec::new();
        for batch in plan.execute(1).unwrap() {
            let column = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone()
            };
            let (k, a) = (column(0), column(1));
            found.extend((0..batch.num_rows()).map(|i| (a.value(i), k.value(i))));
        }
        found.sort();
        if descending {
            found.reverse();
        }
        found
    };
    let int = |op: fn(Scalar) -> PredicateOp, column: usize, v: i64| Predicate {
        column,
        op: op(Scalar::Int(v)),
    };
    let all: Vec<(i64, i64)> = (0..20_000i64).map(|k| (k % 97, k)).collect();
    let want = |keep: &dyn Fn(&(i64, i64)) -> bool, descending: bool, limit: usize| {
        let mut rows: Vec<(i64, i64)> = all.iter().copied().filter(|r| keep(r)).collect();
        rows.sort();
        if descending {
            rows.reverse();
        }
        rows.truncate(limit);
        rows
    };
    // Half the keys match: a few rows past the first values are read.
    let found = first(vec![int(PredicateOp::GtEq, 0, 10_000)], false, 5);
    assert!(found.len() < 1_000, "{} rows read", found.len());
    let tied_first = found.iter().filter(|(a, _)| *a == 0).count();
    assert_eq!(tied_first, (10_000..20_000).filter(|k| k % 97 == 0).count());
    assert_eq!(found[..5], want(&|&(_, k)| k >= 10_000, false, 5)[..]);
    // A range on the ordered column: the walk starts at its bound.
    let found = first(
        vec![int(PredicateOp::Lt, 1, 50), int(PredicateOp::Lt, 0, 15_000)],
        true,
        4,
    );
    assert!(found.len() < 1_000, "{} rows read", found.len());
    assert_eq!(
        found[..4],
        want(&|&(a, k)| a < 50 && k < 15_000, true, 4)[..]
    );
    // Ten matching rows, all near the end of the walk: a full read.
    let found = first(vec![int(PredicateOp::Lt, 0, 10)], true, 3);
    assert_eq!(found[..3], want(&|&(_, k)| k < 10, true, 3)[..]);
    // Fewer matching rows than the limit.
    let found = first(vec![int(PredicateOp::GtEq, 0, 19_997)], false, 5);
    assert_eq!(found, want(&|&(_, k)| k >= 19_997, false, 5));
}

fn where_a(a: i64) -> ScanOptions {
    ScanOptions {
        predicates: vec![Predicate {
            column: 1,
            op: PredicateOp::Eq(Scalar::Int(a)),
        }],
        ..ScanOptions::default()
    }
}

/// DROP INDEX leaves the index to snapshots taken before it: they still
/// read through it, and its files stay until the last of them goes; later
/// snapshots scan without it. Files a close leaves behind go at the next
/// open.
#[test]
fn a_dropped_index_stays_for_older_snapshots_then_its_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), Options::default()).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    for part in [0..500, 500..1000] {
        let mut txn = db.begin();
        txn.put("t", &rows(part)).unwrap();
        txn.commit().unwrap();
        db.flush().unwrap();
    }
    // k % 97 == 5 for k = 5, 102, ..., 975.
    let expected = 11;
    db.add_index("t", "t_a", "btree", &["a"], Vec::new())
        .unwrap();
    let indexed = files(dir.path(), ".btree");
    assert_eq!(indexed, 2);

    let before = db.snapshot();
    db.drop_index("t", "t_a").unwrap();
    assert_eq!(files(dir.path(), ".btree"), indexed, "files went early");
    let plan = before.scan("t", &where_a(5)).unwrap();
    assert_eq!(plan.index(), Some("t_a"));
    let found: usize = plan.execute(1).unwrap().iter().map(|b| b.num_rows()).sum();
    assert_eq!(found, expected);
    assert_eq!(count_where_a(&db, 5), (expected, None));
    drop(plan);
    drop(before);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files(dir.path(), ".btree") > 0 {
        assert!(std::time::Instant::now() < deadline, "files never went");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Without a background thread nobody deletes them after the drop: the
    // next open does, and the index stays dropped.
    db.close().unwrap();
    let quiet = Options {
        background_work: false,
        ..Options::default()
    };
    db = Db::open(dir.path(), quiet).unwrap();
    db.add_index("t", "t_a", "btree", &["a"], Vec::new())
        .unwrap();
    let before = db.snapshot();
    db.drop_index("t", "t_a").unwrap();
    drop(before);
    assert_eq!(files(dir.path(), ".btree"), indexed);
    db.close().unwrap();
    db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(files(dir.path(), ".btree"), 0);
    assert_eq!(count_where_a(&db, 5), (expected, None));
}

fn row(k: i64, a: Option<i64>) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![k])),
        Arc::new(Int64Array::from(vec![a])),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn key(k: i64) -> RecordBatch {
    let key_schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    RecordBatch::try_new(key_schema, vec![Arc::new(Int64Array::from(vec![k]))]).unwrap()
}

fn keys_where_a(db: &Db, a: i64) -> Vec<i64> {
    let plan = db.snapshot().scan("t", &where_a(a)).unwrap();
    assert_eq!(plan.index(), Some("t_a"));
    let mut keys: Vec<i64> = plan
        .execute(1)
        .unwrap()
        .iter()
        .flat_map(|b| {
            let column = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            column.values().to_vec()
        })
        .collect();
    keys.sort_unstable();
    keys
}

/// Lookups through a B-tree index answer as a model while versions of a
/// row sit in several memtables (no background thread: they freeze and
/// wait), segments and bulk loads: the memtables' rows are narrowed by the
/// index, and a version a newer one hides never comes back, whether the
/// newer one matches or not.
#[test]
fn indexed_lookups_across_memtables_segments_and_loads_match_a_model() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        background_work: false,
        flush_threshold_bytes: 4 << 10,
        ..Options::default()
    };
    let db = Db::open(dir.path(), options).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    db.add_index("t", "t_a", "btree", &["a"], Vec::new())
        .unwrap();
    let mut model: std::collections::BTreeMap<i64, Option<i64>> = Default::default();
    let mut rng = SmallRng::seed_from_u64(0x26);
    for round in 0..80 {
        let mut txn = db.begin();
        for _ in 0..rng.gen_range(1..25) {
            let k = rng.gen_range(0..150);
            if rng.gen_bool(0.2) {
                txn.delete("t", &key(k)).unwrap();
                model.remove(&k);
            } else {
                let a = rng.gen_bool(0.9).then(|| rng.gen_range(0..6));
                txn.put("t", &row(k, a)).unwrap();
                model.insert(k, a);
            }
        }
        txn.commit().unwrap();
        match round % 12 {
            4 => db.flush().unwrap(),
            8 => db.compact().unwrap(),
            11 => {
                let mut load = db.bulk_load("t").unwrap();
                let start = rng.gen_range(0..100);
                for k in start..start + 40 {
                    let a = Some(k % 6);
                    load.write(&row(k, a)).unwrap();
                    model.insert(k, a);
                }
                load.finish().unwrap();
            }
            _ => {}
        }
        for a in 0..6 {
            let want: Vec<i64> = model
                .iter()
                .filter(|(_, v)| **v == Some(a))
                .map(|(k, _)| *k)
                .collect();
            assert_eq!(keys_where_a(&db, a), want, "round {round}, a = {a}");
        }
    }
}
