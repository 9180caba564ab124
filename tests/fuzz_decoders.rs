//! A bounded fuzz harness for the decoders of everything Basalt reads from
//! disk (WAL files and records, manifest frames and edits, segment files,
//! HNSW index files) and for a whole database open: files written by the
//! engine are mutated (bit flips, byte overwrites, truncations, splices,
//! random bytes) and decoded. Any input may be refused with an error; none
//! may panic. Seeded and bounded so it runs in CI; set
//! `BASALT_FUZZ_ITERATIONS` to run longer. A panic reports the seed and the
//! iteration that reproduce it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::formats::frame::{read_log, read_synced_log};
use basalt::formats::hnsw::HnswIndex;
use basalt::formats::manifest::decode_edits;
use basalt::formats::segment::SegmentReader;
use basalt::formats::wal::{decode_wal_record, read_wal_file_contents, wal_batch_schema};
use basalt::storage::{Db, HnswParams, Metric, Options};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DIMS: usize = 4;

fn iterations(default: usize) -> usize {
    std::env::var("BASALT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "v",
            DataType::FixedSizeList(
                Arc::new(Field::new_list_field(DataType::Float32, true)),
                DIMS as i32,
            ),
            true,
        ),
    ]))
}

fn rows(keys: std::ops::Range<i64>) -> RecordBatch {
    let n = keys.clone().count();
    let values: Vec<f32> = (0..n * DIMS).map(|i| (i % 7) as f32 * 0.25).collect();
    let vectors = FixedSizeListArray::try_new(
        Arc::new(Field::new_list_field(DataType::Float32, true)),
        DIMS as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
    .unwrap();
    let names: Vec<Option<String>> = keys
        .clone()
        .map(|k| (k % 3 != 0).then(|| format!("row {k}")))
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(keys)),
        Arc::new(StringArray::from(names)),
        Arc::new(vectors),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn options() -> Options {
    Options {
        background_work: false,
        row_group_rows: 64,
        flush_threshold_bytes: 1 << 30,
        ..Options::default()
    }
}

/// A database with a flushed, indexed segment and WAL records after it.
fn sample_database(dir: &Path) {
    let db = Db::open(dir, options()).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    db.create_index("t", "v", "t_v", HnswParams::new(Metric::L2))
        .unwrap();
    for (start, end) in [(0, 300), (300, 400)] {
        let mut txn = db.begin();
        txn.put("t", &rows(start..end)).unwrap();
        txn.commit().unwrap();
    }
    db.flush().unwrap();
    for start in [400, 450, 500] {
        let mut txn = db.begin();
        txn.put("t", &rows(start..start + 50)).unwrap();
        txn.commit().unwrap();
    }
}

fn file_ending(dir: &Path, suffix: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no *{suffix} in {}", dir.display()))
}

fn manifest_of(dir: &Path) -> PathBuf {
    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(current.trim())
}

/// One random damage to `data`.
fn mutate(data: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    let mut out = data.to_vec();
    let rounds = rng.gen_range(1..=4);
    for _ in 0..rounds {
        if out.is_empty() {
            out.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..out.len());
        match rng.gen_range(0..6) {
            0 => out[at] ^= 1 << rng.gen_range(0..8),
            1 => out[at] = rng.gen(),
            2 => out.truncate(at),
            3 => {
                // A little-endian length or count field set to an extreme.
                let value: u32 = *[0, 1, u32::MAX, u32::MAX / 2, 1 << 30]
                    .get(rng.gen_range(0..5))
                    .unwrap_or(&0);
                for (i, b) in value.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            4 => {
                let from = rng.gen_range(0..out.len());
                let len = rng.gen_range(0..64).min(out.len() - from);
                let chunk = out[from..from + len].to_vec();
                out.splice(at..at, chunk);
            }
            _ => {
                let len = rng.gen_range(0..32).min(out.len() - at);
                rng.fill(&mut out[at..at + len]);
            }
        }
    }
    out
}

/// Runs `decode` on `iterations` mutations of `original`; a panic fails the
/// test with the seed and iteration.
fn fuzz(name: &str, seed: u64, original: &[u8], iterations: usize, decode: impl Fn(&[u8])) {
    let mut rng = SmallRng::seed_from_u64(seed);
    decode(original);
    for iteration in 0..iterations {
        let input = mutate(original, &mut rng);
        if catch_unwind(AssertUnwindSafe(|| decode(&input))).is_err() {
            let path = std::env::temp_dir().join(format!("basalt-fuzz-{name}-{seed}-{iteration}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{name}: seed {seed}, iteration {iteration} panicked; input saved to {}",
                path.display()
            );
        }
    }
}

fn decode_wal(data: &[u8]) {
    let wal_schema = wal_batch_schema(&schema());
    let Ok(contents) = read_wal_file_contents(data) else {
        return;
    };
    for (_, payload) in contents.records {
        let _ = decode_wal_record(payload, &mut |_, _| Ok(Some(wal_schema.clone())));
    }
}

fn decode_manifest(data: &[u8]) {
    let (records, _) = read_log(data);
    for (_, payload) in records {
        let _ = decode_edits(payload);
    }
    let _ = read_synced_log(data, 0);
}

fn decode_segment(data: &[u8]) {
    let Ok(reader) = SegmentReader::open(Buffer::from(data.to_vec())) else {
        return;
    };
    let columns = reader.schema().fields().len();
    for row_group in 0..reader.footer().row_groups.len() {
        for column in 0..columns {
            let _ = reader.read_column(row_group, column);
        }
    }
}

fn decode_hnsw(data: &[u8]) {
    let Ok(index) = HnswIndex::open(Buffer::from(data.to_vec())) else {
        return;
    };
    let _ = index.search(&[0.5; DIMS], 16, &mut |_| true);
}

#[test]
fn damaged_files_never_make_a_decoder_panic() {
    let dir = tempfile::tempdir().unwrap();
    sample_database(dir.path());
    let wal = std::fs::read(file_ending(&dir.path().join("wal"), ".wal")).unwrap();
    let manifest = std::fs::read(manifest_of(dir.path())).unwrap();
    let segment = std::fs::read(file_ending(&dir.path().join("seg"), ".bseg")).unwrap();
    let hnsw = std::fs::read(file_ending(&dir.path().join("seg"), ".hnsw")).unwrap();
    let n = iterations(4000);
    fuzz("wal", 1, &wal, n, decode_wal);
    fuzz("manifest", 2, &manifest, n, decode_manifest);
    fuzz("segment", 3, &segment, n, decode_segment);
    fuzz("hnsw", 4, &hnsw, n, decode_hnsw);
}

/// Whole opens of a database with one damaged file: an error or an open
/// database, never a panic or a hang.
#[test]
fn a_database_with_a_damaged_file_opens_or_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    sample_database(dir.path());
    let targets = [
        file_ending(&dir.path().join("wal"), ".wal"),
        manifest_of(dir.path()),
        file_ending(&dir.path().join("seg"), ".bseg"),
    ];
    let pristine: Vec<Vec<u8>> = targets.iter().map(|t| std::fs::read(t).unwrap()).collect();
    let mut rng = SmallRng::seed_from_u64(5);
    for iteration in 0..iterations(120) / 3 {
        for (target, original) in targets.iter().zip(&pristine) {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), copy.path());
            let relative = target.strip_prefix(dir.path()).unwrap();
            std::fs::write(copy.path().join(relative), mutate(original, &mut rng)).unwrap();
            let path = copy.path().to_path_buf();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(db) = Db::open(&path, options()) {
                    let _ = db
                        .snapshot()
                        .scan("t", &Default::default())
                        .map(|s| s.execute(1));
                }
            }));
            assert!(
                outcome.is_ok(),
                "iteration {iteration}: opening with a damaged {} panicked",
                relative.display()
            );
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
