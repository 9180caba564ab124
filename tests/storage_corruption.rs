//! Corruption: damaged segments, manifests and WAL files give an error naming
//! the file and offset (or, for a torn WAL tail, are cut back to the last good
//! record) and never a panic.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::formats::segment::SegmentReader;
use basalt::storage::{Db, Error, Options, ScanOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

/// Keeps everything in the WAL unless a flush is asked for.
fn options() -> Options {
    Options {
        background_work: false,
        flush_threshold_bytes: 1 << 30,
        ..Options::default()
    }
}

fn write(db: &Db, keys: std::ops::Range<i64>) {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(keys.clone())),
        Arc::new(Int64Array::from_iter_values(keys.map(|k| k * 10))),
    ];
    let mut txn = db.begin();
    txn.put("t", &RecordBatch::try_new(schema(), columns).unwrap())
        .unwrap();
    txn.commit().unwrap();
}

fn keys(db: &Db) -> Vec<i64> {
    let batches = db
        .snapshot()
        .scan("t", &ScanOptions::default())
        .unwrap()
        .execute(1)
        .unwrap();
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().contains(suffix))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

fn new_db(dir: &Path) -> Db {
    let db = Db::open(dir, options()).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    db
}

/// Offset of the chunk of `column` (system columns count) in row group 0.
fn chunk_offset(segment: &Path, column: usize) -> u64 {
    let reader = SegmentReader::open(Buffer::from(fs::read(segment).unwrap())).unwrap();
    reader.footer().row_groups[0].columns[column].offset
}

fn expect_corruption(err: Error, segment: &Path, offset: u64) {
    match err {
        Error::Corruption {
            file,
            offset: at,
            reason,
        } => {
            assert_eq!((file.as_path(), at), (segment, offset));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn flipped_segment_chunk_names_file_and_chunk_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..5000);
        db.flush().unwrap();
    }
    let segment = files_in(&dir.path().join("seg"), ".bseg").pop().unwrap();
    // A table column, read by scans.
    let v_chunk = chunk_offset(&segment, 4);
    flip_byte(&segment, v_chunk + 20);
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let err = db
            .snapshot()
            .scan("t", &ScanOptions::default())
            .unwrap()
            .execute(1)
            .unwrap_err();
        expect_corruption(err, &segment, v_chunk);
    }
    // The key column, read by point lookups.
    flip_byte(&segment, v_chunk + 20);
    let key_chunk = chunk_offset(&segment, 0);
    assert_eq!(
        key_chunk, 64,
        "chunks start 64-aligned after the 16-byte header"
    );
    flip_byte(&segment, key_chunk + 20);
    let db = Db::open(dir.path(), options()).unwrap();
    let mut probe = Vec::new();
    basalt::storage::encode_key(
        &[Arc::new(Int64Array::from(vec![17])) as ArrayRef],
        0,
        &mut probe,
    )
    .unwrap();
    expect_corruption(
        db.snapshot().get("t", &probe).unwrap_err(),
        &segment,
        key_chunk,
    );
}

#[test]
fn flipped_segment_footer_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..100);
        db.flush().unwrap();
    }
    let segment = files_in(&dir.path().join("seg"), ".bseg").pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    let footer_offset = u64::from_le_bytes(
        fs::read(&segment).unwrap()[len as usize - 32..][..8]
            .try_into()
            .unwrap(),
    );
    flip_byte(&segment, footer_offset + 3);
    match Db::open(dir.path(), options()).unwrap_err() {
        Error::Corruption { file, offset, .. } => {
            assert_eq!((file, offset), (segment, footer_offset))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn flipped_manifest_record_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..100);
        db.flush().unwrap();
    }
    let manifest = files_in(dir.path(), "MANIFEST-").pop().unwrap();
    flip_byte(&manifest, 12);
    match Db::open(dir.path(), options()).unwrap_err() {
        Error::Corruption { file, offset, .. } => assert_eq!((file, offset), (manifest, 0)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn torn_manifest_tail_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..100);
        db.flush().unwrap();
    }
    let manifest = files_in(dir.path(), "MANIFEST-").pop().unwrap();
    // Half a frame: a length promising more bytes than follow.
    OpenOptions::new()
        .append(true)
        .open(&manifest)
        .unwrap()
        .write_all(&[200, 0, 0, 0, 1, 2])
        .unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(keys(&db), (0..100).collect::<Vec<_>>());
}

/// A database whose manifest's last frame records a flush: 1,000 rows in a
/// segment, their WAL file deleted, and the offset of that frame.
fn flushed_after_reopen(dir: &Path) -> (PathBuf, u64) {
    {
        let db = new_db(dir);
        write(&db, 0..500);
    }
    {
        let db = Db::open(dir, options()).unwrap();
        write(&db, 500..1000);
        db.flush().unwrap();
    }
    let manifest = files_in(dir, "MANIFEST-").pop().unwrap();
    let last = last_frame_offset(&fs::read(&manifest).unwrap());
    assert!(last > 0, "the flush appended a frame after the snapshot");
    (manifest, last)
}

fn last_frame_offset(data: &[u8]) -> u64 {
    let mut offset = 0usize;
    let mut last = 0usize;
    while offset + 8 <= data.len() {
        let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        last = offset;
        offset += 8 + len;
    }
    last as u64
}

#[test]
fn a_flipped_byte_in_the_manifests_last_frame_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, last) = flushed_after_reopen(dir.path());
    let segments = files_in(&dir.path().join("seg"), ".bseg");
    assert!(!segments.is_empty());
    for at in [last + 2, last + 5, last + 20] {
        flip_byte(&manifest, at);
        match Db::open(dir.path(), options()) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!((&file, offset), (&manifest, last), "flip at {at}")
            }
            other => panic!(
                "flip at {at}: expected corruption, got {:?}",
                other.map(|_| ())
            ),
        }
        flip_byte(&manifest, at);
        // Refusing to open deleted nothing.
        assert_eq!(files_in(&dir.path().join("seg"), ".bseg"), segments);
    }
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(keys(&db), (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_cut_manifest_tail_keeps_the_segment_it_named_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, last) = flushed_after_reopen(dir.path());
    let segments = files_in(&dir.path().join("seg"), ".bseg");
    let len = fs::metadata(&manifest).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&manifest)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(len - 3 > last);
    // A real torn batch leaves its WAL in place (WAL files are deleted only
    // after the batch is synced); this cut came after, so the point here is
    // only that the segment the batch named is kept, not deleted.
    let db = Db::open(dir.path(), options()).unwrap();
    drop(db);
    let kept = files_in(&dir.path().join("lost+found"), ".bseg");
    let names = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| f.file_name().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        names(&segments).iter().any(|n| names(&kept).contains(n)),
        "{segments:?} {kept:?}"
    );
}

#[test]
fn torn_wal_tail_is_cut_at_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..10);
        write(&db, 10..20);
        write(&db, 20..30);
    }
    let wal = files_in(&dir.path().join("wal"), ".wal").pop().unwrap();
    let len = fs::metadata(&wal).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(keys(&db), (0..20).collect::<Vec<_>>());
    drop(db);
    // The cut is permanent: a second recovery sees a clean file.
    let cut_len = fs::metadata(&wal).unwrap().len();
    assert!(cut_len < len - 7);
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(keys(&db), (0..20).collect::<Vec<_>>());
    assert_eq!(fs::metadata(&wal).unwrap().len(), cut_len);
}

#[test]
fn damaged_wal_record_before_good_ones_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..10);
        write(&db, 10..20);
    }
    let wal = files_in(&dir.path().join("wal"), ".wal").pop().unwrap();
    // Inside the first record's frame, which starts after the 16-byte file
    // header. The second record was appended after the first was synced, and
    // says so: the first was acknowledged, so its damage is corruption.
    flip_byte(&wal, 30);
    match Db::open(dir.path(), options()).unwrap_err() {
        Error::Corruption { file, offset, .. } => assert_eq!((file, offset), (wal, 16)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Opens `dir` on another thread, failing the test if that takes longer than
/// `bound` instead of hanging it.
fn open_within(dir: &Path, bound: std::time::Duration) -> Db {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Db::open(&dir, options()));
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|_| panic!("open did not finish within {bound:?}"))
        .unwrap()
}

/// What a crash (or a power cut) leaves in a preallocated WAL file: the last
/// record half written, then the file's zero fill, with stray non-zero bytes
/// in it. Open must finish in time linear in the file, cut the torn record
/// and keep every acknowledged one.
#[test]
fn a_torn_record_in_a_preallocated_wal_with_a_damaged_zero_tail_is_cut_quickly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..100);
        write(&db, 100..200);
        write(&db, 200..50_200);
    }
    let wal = files_in(&dir.path().join("wal"), ".wal").pop().unwrap();
    let mut bytes = fs::read(&wal).unwrap();
    let whole = bytes.len();
    bytes.truncate(whole - 300_000);
    bytes.resize(64 << 20, 0);
    for at in [whole + 17, 20 << 20, (64 << 20) - 1] {
        bytes[at] = 0xa5;
    }
    fs::write(&wal, &bytes).unwrap();
    let db = open_within(dir.path(), std::time::Duration::from_secs(60));
    assert_eq!(keys(&db), (0..200).collect::<Vec<_>>());
    write(&db, 200..210);
    drop(db);
    let db = open_within(dir.path(), std::time::Duration::from_secs(60));
    assert_eq!(keys(&db), (0..210).collect::<Vec<_>>());
}

/// After a power cut the last records may be damaged while later,
/// never-synced ones reached the disk: that is still a torn tail, because no
/// record after the damage says the damaged one was acknowledged.
#[test]
fn damage_followed_only_by_unsynced_records_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..10);
    }
    let unsynced = Options {
        synchronous_commit: false,
        wal_writer_delay: None,
        ..options()
    };
    {
        let db = Db::open(dir.path(), unsynced).unwrap();
        write(&db, 10..20);
        write(&db, 20..30);
        write(&db, 30..40);
    }
    let wal = files_in(&dir.path().join("wal"), ".wal").pop().unwrap();
    // Inside the first of the three records, which start after the header.
    flip_byte(&wal, 16 + 30);
    let db = open_within(dir.path(), std::time::Duration::from_secs(60));
    assert_eq!(keys(&db), (0..10).collect::<Vec<_>>());
}

#[test]
fn garbage_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = new_db(dir.path());
        write(&db, 0..50);
        db.flush().unwrap();
        write(&db, 50..60);
    }
    let segment = files_in(&dir.path().join("seg"), ".bseg").pop().unwrap();
    let original = fs::read(&segment).unwrap();
    // Every truncation of the segment: an error, never a panic or wrong data.
    for cut in (0..original.len()).step_by(97) {
        fs::write(&segment, &original[..cut]).unwrap();
        assert!(
            Db::open(dir.path(), options()).is_err(),
            "truncated to {cut}"
        );
    }
    fs::write(&segment, &original).unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(keys(&db), (0..60).collect::<Vec<_>>());
}
