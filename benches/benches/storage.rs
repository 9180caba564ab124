//! Criterion micro-benchmarks of the storage engine. The side-by-side
//! comparison with a peer engine is `benches/run storage`.

use std::hint::black_box;

use basalt_bench::{kv_batch, load_wide, random_keys};
use basalt_storage::{encode_keys, Db, Options, Predicate, PredicateOp, Scalar, ScanOptions};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const BATCH: usize = 1000;

fn inserts(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.create_table("kv", basalt_bench::kv_schema(), &["k"])
        .expect("create");
    let keys = random_keys(2_000_000, 1);
    let mut next = 0;
    let mut group = c.benchmark_group("insert");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("commit_1000_random_keys_fsync", |b| {
        b.iter_batched(
            || {
                let batch = kv_batch(&keys[next..next + BATCH]);
                next = (next + BATCH) % (keys.len() - BATCH);
                batch
            },
            |batch| {
                let mut txn = db.begin();
                txn.put("kv", &batch).expect("put");
                txn.commit().expect("commit")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn point_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.create_table("kv", basalt_bench::kv_schema(), &["k"])
        .expect("create");
    let keys = random_keys(200_000, 2);
    for chunk in keys.chunks(10_000) {
        let mut txn = db.begin();
        txn.put("kv", &kv_batch(chunk)).expect("put");
        txn.commit().expect("commit");
    }
    db.flush().expect("flush");
    let batch = kv_batch(&keys);
    let encoded = encode_keys(&[batch.column(0).clone()], batch.num_rows()).expect("keys");
    let snapshot = db.snapshot();
    let mut i = 0;
    c.bench_function("point_read/segment", |b| {
        b.iter(|| {
            i = (i + 7919) % encoded.len();
            black_box(snapshot.get("kv", &encoded[i]).expect("get"))
        })
    });
}

fn scans(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    let rows = 2_000_000;
    load_wide(&db, "wide", rows).expect("load");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ScanOptions {
        predicates: vec![Predicate {
            column: 1,
            op: PredicateOp::Eq(Scalar::Int(42)),
        }],
        ..ScanOptions::default()
    };
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(20);
    group.bench_function("4_columns_a_eq_42", |b| {
        b.iter(|| {
            let snapshot = db.snapshot();
            black_box(
                snapshot
                    .scan("wide", &options)
                    .expect("plan")
                    .execute(threads)
                    .expect("scan"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, inserts, point_reads, scans);
criterion_main!(benches);
