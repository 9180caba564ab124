//! Vector search against a `BTreeMap` model: random writes, deletes, bulk
//! loads, flushes, compactions and reopens, with an HNSW index declared
//! part-way; every search must return exactly the model's nearest rows with
//! their current values, never a deleted or superseded version.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::storage::{encode_key, Db, HnswParams, Metric, Options, VectorQuery};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod common;

const DIMS: usize = 4;
const KEYS: i64 = 400;

type Row = (Vec<f32>, i64);

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new(
            "v",
            DataType::FixedSizeList(
                Arc::new(Field::new_list_field(DataType::Float32, true)),
                DIMS as i32,
            ),
            true,
        ),
        Field::new("tag", DataType::Int64, true),
    ]))
}

fn options() -> Options {
    Options {
        flush_threshold_bytes: 16 << 10,
        row_group_rows: 16,
        segment_max_rows: 80,
        l0_compaction_trigger: 3,
        cache_bytes: 4 << 20,
        background_work: false,
        ..Options::default()
    }
}

fn batch(rows: &[(i64, Row)]) -> RecordBatch {
    let values: Vec<f32> = rows.iter().flat_map(|r| r.1 .0.clone()).collect();
    let vectors = FixedSizeListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        DIMS as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .unwrap();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(vectors),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1 .1))),
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

fn random_row(rng: &mut SmallRng) -> Row {
    (
        (0..DIMS).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        rng.gen_range(0..4),
    )
}

fn tag_filter(tag: i64) -> impl Fn(&RecordBatch) -> Result<BooleanArray, String> + Sync {
    move |batch: &RecordBatch| {
        let tags = batch.column(0).as_primitive::<Int64Type>();
        Ok(tags.iter().map(|t| Some(t == Some(tag))).collect())
    }
}

/// The model's k nearest keys (among rows with `tag`, if given).
fn expected(model: &BTreeMap<i64, Row>, q: &[f32], k: usize, tag: Option<i64>) -> Vec<i64> {
    let mut ranked: Vec<(f32, i64)> = model
        .iter()
        .filter(|(_, row)| tag.is_none_or(|t| row.1 == t))
        .map(|(key, row)| (Metric::L2.rank(q, &row.0), *key))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    ranked.into_iter().take(k).map(|r| r.1).collect()
}

/// Checks a few searches; counts (found, expected) true neighbours in `recall`.
fn check_searches(
    db: &Db,
    model: &BTreeMap<i64, Row>,
    rng: &mut SmallRng,
    step: usize,
    recall: &mut (usize, usize),
) {
    let snapshot = db.snapshot();
    for _ in 0..4 {
        let q: Vec<f32> = (0..DIMS).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let k = rng.gen_range(1..12);
        let tag = rng.gen_bool(0.5).then(|| rng.gen_range(0..4));
        let query = VectorQuery {
            column: 1,
            metric: Metric::L2,
            query: q.clone(),
            k,
            // Small and large: selective filters are answered exactly,
            // others through the graph.
            ef_search: if rng.gen_bool(0.5) { 10 } else { 1000 },
            projection: vec![0, 1, 2],
            filter_columns: vec![2],
        };
        let filter = tag.map(tag_filter);
        let hits = snapshot
            .search("items", &query, filter.as_ref().map(|f| f as _))
            .unwrap();
        let keys: Vec<i64> = hits
            .batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let truth = expected(model, &q, k, tag);
        // Always k rows when k match, nearest first.
        assert_eq!(
            keys.len(),
            truth.len(),
            "step {step}, tag {tag:?}, {:?}",
            hits.stats
        );
        let ranks: Vec<f32> = keys
            .iter()
            .map(|key| Metric::L2.rank(&q, &model[key].0))
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] <= w[1]),
            "step {step}: not nearest first"
        );
        if hits.stats.graph_segments == 0 {
            assert_eq!(
                keys, truth,
                "step {step}, tag {tag:?}, stats {:?}",
                hits.stats
            );
        }
        recall.0 += keys.iter().filter(|key| truth.contains(key)).count();
        recall.1 += truth.len();
        for key in &keys {
            assert!(
                tag.is_none_or(|t| model[key].1 == t),
                "step {step}: {key} fails the filter"
            );
        }
        let vectors = hits.batch.column(1).as_fixed_size_list();
        for (i, key) in keys.iter().enumerate() {
            let stored = vectors.value(i);
            let stored = stored.as_primitive::<Float32Type>().values();
            assert_eq!(
                stored,
                model[key].0.as_slice(),
                "step {step}: stale vector for {key}"
            );
            assert_eq!(
                hits.batch.column(2).as_primitive::<Int64Type>().value(i),
                model[key].1
            );
        }
    }
}

#[test]
fn searches_match_the_model_through_flush_compaction_load_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), options()).unwrap();
    db.create_table("items", schema(), &["k"]).unwrap();
    let mut model: BTreeMap<i64, Row> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(42);
    let mut indexed = false;
    let mut recall = (0, 0);
    for step in 0..120 {
        match rng.gen_range(0..100) {
            0..=59 => {
                let rows: Vec<(i64, Row)> = (0..rng.gen_range(1..20))
                    .map(|_| (rng.gen_range(0..KEYS), random_row(&mut rng)))
                    .collect();
                let mut dedup: BTreeMap<i64, Row> = BTreeMap::new();
                dedup.extend(rows);
                let rows: Vec<(i64, Row)> = dedup.into_iter().collect();
                let mut txn = db.begin();
                txn.put("items", &batch(&rows)).unwrap();
                txn.commit().unwrap();
                model.extend(rows);
            }
            60..=74 => {
                let doomed: Vec<i64> = (0..rng.gen_range(1..10))
                    .map(|_| rng.gen_range(0..KEYS))
                    .collect();
                let mut txn = db.begin();
                txn.delete_keys("items", doomed.iter().map(|&k| key(k)).collect())
                    .unwrap();
                txn.commit().unwrap();
                doomed.iter().for_each(|k| {
                    model.remove(k);
                });
            }
            75..=82 => {
                let rows: Vec<(i64, Row)> = (0..rng.gen_range(1..150))
                    .map(|_| (rng.gen_range(0..KEYS), random_row(&mut rng)))
                    .collect();
                let mut load = db.bulk_load("items").unwrap();
                load.write(&batch(&rows)).unwrap();
                load.finish().unwrap();
                model.extend(rows);
            }
            83..=88 => db.flush().unwrap(),
            89..=93 => db.compact().unwrap(),
            _ => {
                db.close().unwrap();
                db = Db::open(dir.path(), options()).unwrap();
            }
        }
        if step == 40 {
            db.create_index("items", "v", "items_v_idx", HnswParams::new(Metric::L2))
                .unwrap();
            indexed = true;
        }
        check_searches(&db, &model, &mut rng, step, &mut recall);
    }
    assert!(indexed);
    let recall = recall.0 as f64 / recall.1 as f64;
    assert!(recall >= 0.95, "recall {recall}");
    // After a final compaction every segment has its graph.
    db.compact().unwrap();
    let hits = db
        .snapshot()
        .search(
            "items",
            &VectorQuery {
                column: 1,
                metric: Metric::L2,
                query: vec![0.0; DIMS],
                k: 3,
                ef_search: 40,
                projection: vec![0],
                filter_columns: vec![],
            },
            None,
        )
        .unwrap();
    assert_eq!(hits.stats.exact_segments, 0, "{:?}", hits.stats);
    assert!(hits.stats.graph_segments > 0);
}

#[test]
fn a_transaction_sees_its_own_vectors_and_not_the_ones_it_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    db.create_table("items", schema(), &["k"]).unwrap();
    db.create_index("items", "v", "idx", HnswParams::new(Metric::L2))
        .unwrap();
    let near = |x: f32| (vec![x, 0.0, 0.0, 0.0], 0);
    let mut txn = db.begin();
    txn.put("items", &batch(&[(1, near(0.0)), (2, near(5.0))]))
        .unwrap();
    txn.commit().unwrap();
    db.flush().unwrap();
    let mut txn = db.begin();
    txn.put("items", &batch(&[(1, near(9.0))])).unwrap();
    let query = VectorQuery {
        column: 1,
        metric: Metric::L2,
        query: vec![0.0; DIMS],
        k: 1,
        ef_search: 10,
        projection: vec![0],
        filter_columns: vec![],
    };
    let own = txn.search("items", &query, None).unwrap();
    assert_eq!(own.batch.column(0).as_primitive::<Int64Type>().value(0), 2);
    let others = db.snapshot().search("items", &query, None).unwrap();
    assert_eq!(
        others.batch.column(0).as_primitive::<Int64Type>().value(0),
        1
    );
    // Several indexes may cover one column; names stay unique.
    db.create_index("items", "v", "again", HnswParams::new(Metric::Cosine))
        .unwrap();
    assert!(db
        .create_index("items", "v", "again", HnswParams::new(Metric::L2))
        .is_err());
    assert!(db
        .create_index("items", "tag", "nope", HnswParams::new(Metric::L2))
        .is_err());
}

/// CREATE INDEX builds without the manifest lock; a DROP TABLE or ADD
/// COLUMN logged meanwhile must stand: the dropped table must not come back
/// after a restart, nor the added column be lost.
#[test]
fn create_index_racing_drop_table_or_add_column_keeps_their_effect() {
    let mut rng = SmallRng::seed_from_u64(3);
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), options()).unwrap());
        db.create_table("items", schema(), &["k"]).unwrap();
        let rows: Vec<(i64, Row)> = (0..3000).map(|k| (k, random_row(&mut rng))).collect();
        for chunk in rows.chunks(500) {
            let mut txn = db.begin();
            txn.put("items", &batch(chunk)).unwrap();
            txn.commit().unwrap();
            db.flush().unwrap();
        }
        let drop_it = round % 2 == 0;
        let pause = std::time::Duration::from_millis(rng.gen_range(0..40));
        let (indexed, other) = std::thread::scope(|scope| {
            let building = scope.spawn(|| {
                db.create_index("items", "v", "idx", HnswParams::new(Metric::L2))
                    .is_ok()
            });
            std::thread::sleep(pause);
            let other = if drop_it {
                db.drop_table("items").is_ok()
            } else {
                db.add_column("items", Field::new("extra", DataType::Int64, true))
                    .is_ok()
            };
            (building.join().unwrap(), other)
        });
        drop(db);
        let db = Db::open(dir.path(), options()).unwrap();
        let table = db.table("items");
        match (drop_it, other) {
            (true, true) => assert!(table.is_err(), "round {round}: the dropped table came back"),
            (false, true) => {
                let def = table.unwrap();
                assert!(
                    def.schema.index_of("extra").is_ok(),
                    "round {round}: the added column was lost (indexed: {indexed})"
                );
                let has_index = def.indexes.iter().any(|i| i.name == "idx");
                assert_eq!(has_index, indexed, "round {round}");
            }
            (_, false) => panic!("round {round}: the DDL failed"),
        }
    }
}

fn index_files(dir: &std::path::Path) -> Vec<String> {
    common::files_ending(&dir.join("seg"), ".hnsw")
}

fn graph_segments(db: &Db, metric: Metric) -> usize {
    let query = VectorQuery {
        column: 1,
        metric,
        query: vec![1.0, 0.5, 0.0, 0.0],
        k: 3,
        ef_search: 40,
        projection: vec![0],
        filter_columns: vec![],
    };
    let hits = db.snapshot().search("items", &query, None).unwrap();
    hits.stats.graph_segments
}

/// Two indexes on one column, each used by its own metric and named by its
/// id on disk; DROP INDEX deletes its files (once nothing reads them) and
/// stays dropped after a reopen while the other index keeps answering; a
/// new index never takes a dropped one's id.
#[test]
fn indexes_are_kept_by_id_and_drop_index_removes_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), options()).unwrap();
    db.create_table("items", schema(), &["k"]).unwrap();
    let mut rng = SmallRng::seed_from_u64(26);
    let rows: Vec<(i64, Row)> = (0..200).map(|k| (k, random_row(&mut rng))).collect();
    let mut txn = db.begin();
    txn.put("items", &batch(&rows)).unwrap();
    txn.commit().unwrap();
    db.flush().unwrap();
    db.create_index("items", "v", "by_l2", HnswParams::new(Metric::L2))
        .unwrap();
    db.create_index("items", "v", "by_cosine", HnswParams::new(Metric::Cosine))
        .unwrap();
    let segments = index_files(dir.path()).len() / 2;
    assert!(segments > 0);
    assert!(index_files(dir.path())
        .iter()
        .all(|n| n.contains(".i1.") || n.contains(".i2.")));
    assert_eq!(graph_segments(&db, Metric::L2), segments);
    assert_eq!(graph_segments(&db, Metric::Cosine), segments);

    let def = db.drop_index("items", "by_l2").unwrap();
    assert_eq!(def.indexes.len(), 1);
    // The files go once no snapshot (nor the background thread's view of
    // the database) from before the drop is left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !index_files(dir.path()).iter().all(|n| n.contains(".i2.")) {
        assert!(std::time::Instant::now() < deadline, "the files never went");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(db.drop_index("items", "by_l2").is_err());
    assert_eq!(graph_segments(&db, Metric::L2), 0);
    db.close().unwrap();
    db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(graph_segments(&db, Metric::L2), 0);
    assert_eq!(graph_segments(&db, Metric::Cosine), segments);

    let def = db
        .create_index("items", "v", "by_l2", HnswParams::new(Metric::L2))
        .unwrap();
    assert_eq!(def.indexes.iter().map(|i| i.id).collect::<Vec<_>>(), [2, 3]);
    db.compact().unwrap();
    db.close().unwrap();
    db = Db::open(dir.path(), options()).unwrap();
    assert!(graph_segments(&db, Metric::L2) > 0);
    assert!(index_files(dir.path())
        .iter()
        .all(|n| n.contains(".i2.") || n.contains(".i3.")));
}
