//! Workloads shared by the criterion benchmarks and the side-by-side runner.

use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt_storage::{Db, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const VALUE_BYTES: usize = 100;

/// `k BIGINT PRIMARY KEY, v BYTEA`: the key-value shape of the insert and read workloads.
pub fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Binary, false),
    ]))
}

/// `id BIGINT PRIMARY KEY, a BIGINT, b DOUBLE, c INT`: the scan workload.
pub fn wide_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Float64, false),
        Field::new("c", DataType::Int32, false),
    ]))
}

/// Distinct random keys, in random order.
pub fn random_keys(n: usize, seed: u64) -> Vec<i64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    while keys.len() < n {
        let k = rng.gen::<i64>() & i64::MAX;
        if seen.insert(k) {
            keys.push(k);
        }
    }
    keys
}

pub fn value_for(key: i64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    for (i, chunk) in v.chunks_mut(8).enumerate() {
        let word = (key as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    v
}

pub fn kv_batch(keys: &[i64]) -> RecordBatch {
    let values: Vec<[u8; VALUE_BYTES]> = keys.iter().map(|&k| value_for(k)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(keys.to_vec())),
        Arc::new(BinaryArray::from_iter_values(values.iter())),
    ];
    RecordBatch::try_new(kv_schema(), columns).expect("columns match the schema")
}

/// Value of column `a` in row `id`: uniform in 0..10,000, so `a = 42` keeps 0.01%.
pub fn wide_a(id: i64) -> i64 {
    ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as i64 % 10_000
}

pub fn wide_batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(Int64Array::from_iter_values(ids.clone().map(wide_a))),
        Arc::new(Float64Array::from_iter_values(
            ids.clone().map(|i| i as f64 * 0.5),
        )),
        Arc::new(Int32Array::from_iter_values(ids.map(|i| (i % 1000) as i32))),
    ];
    RecordBatch::try_new(wide_schema(), columns).expect("columns match the schema")
}

/// Loads `rows` rows of the scan workload in commits of 100k rows, then
/// flushes and compacts so the scan reads segments only.
pub fn load_wide(db: &Db, table: &str, rows: i64) -> basalt_storage::Result<()> {
    db.create_table(table, wide_schema(), &["id"])?;
    let step = 100_000;
    let mut start = 0;
    while start < rows {
        let end = (start + step).min(rows);
        let mut txn = db.begin();
        txn.put(table, &wide_batch(start..end))?;
        txn.commit()?;
        start = end;
    }
    db.compact()
}

pub fn bench_options() -> Options {
    Options::default()
}
