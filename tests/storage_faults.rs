//! Write and fsync failures, injected beneath storage (`storage::fault`),
//! and what each must leave: an fsync failure of the log makes the
//! database refuse writes until it is reopened (the data it was syncing
//! cannot be assumed safe, and retrying the fsync would say it is); a full
//! disk fails the write with ENOSPC and the next write, once there is
//! room, succeeds without a restart; a failed flush keeps its rows in
//! memory and the log, and a later flush or a reopen loses nothing.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt::storage::fault::{self, FaultRule, FileOp, DISK_FULL, IO_ERROR};
use basalt::storage::{Db, Error, Options, ScanOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn options() -> Options {
    Options {
        background_work: false,
        flush_threshold_bytes: 1 << 30,
        ..Options::default()
    }
}

fn write(db: &Db, keys: std::ops::Range<i64>) -> Result<u64, Error> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(keys.clone())),
        Arc::new(Int64Array::from_iter_values(keys.map(|k| k * 10))),
    ];
    let mut txn = db.begin();
    txn.put("t", &RecordBatch::try_new(schema(), columns).unwrap())?;
    txn.commit()
}

fn keys(db: &Db) -> Vec<i64> {
    let batches = db
        .snapshot()
        .scan("t", &ScanOptions::default())
        .unwrap()
        .execute(1)
        .unwrap();
    let mut keys: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    keys.sort();
    keys
}

fn fail(dir: &Path, op: FileOp, name_contains: &str, times: u32, os_error: i32) {
    fault::inject(FaultRule {
        dir: dir.to_path_buf(),
        op,
        name_contains: name_contains.into(),
        skip: 0,
        times,
        os_error,
    });
}

fn os_error(err: &Error) -> Option<i32> {
    match err {
        Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// Clears the directory's rules even when an assertion fails.
struct Faults<'a>(&'a Path);

impl Drop for Faults<'_> {
    fn drop(&mut self) {
        fault::clear(self.0);
    }
}

#[test]
fn a_failed_log_fsync_refuses_writes_until_reopen_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _faults = Faults(&path);
    {
        let db = Db::open(&path, options()).unwrap();
        db.create_table("t", schema(), &["k"]).unwrap();
        write(&db, 0..100).unwrap();
        fail(&path, FileOp::Sync, ".wal", u32::MAX, IO_ERROR);
        let err = write(&db, 100..200).unwrap_err();
        assert_eq!(os_error(&err), Some(IO_ERROR), "{err}");
        // The device recovers; the database does not pretend it did.
        fault::clear(&path);
        let err = write(&db, 200..300).unwrap_err();
        assert!(matches!(err, Error::Poisoned(_)), "{err}");
        assert!(db.flush().is_err(), "a flush is a write too");
        // Reads go on, and see only what was acknowledged.
        assert_eq!(keys(&db), (0..100).collect::<Vec<_>>());
    }
    let db = Db::open(&path, options()).unwrap();
    let after = keys(&db);
    assert!(
        after.starts_with(&(0..100).collect::<Vec<_>>()),
        "{after:?}"
    );
    // The unacknowledged commit reached the file before its fsync failed:
    // whole or absent after the reopen, never part of it.
    assert!(after.len() == 100 || after.len() == 200, "{}", after.len());
    write(&db, 300..310).unwrap();
}

#[test]
fn a_full_disk_fails_the_write_and_the_next_succeeds_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _faults = Faults(&path);
    {
        let db = Db::open(&path, options()).unwrap();
        db.create_table("t", schema(), &["k"]).unwrap();
        write(&db, 0..100).unwrap();
        fail(&path, FileOp::Write, ".wal", u32::MAX, DISK_FULL);
        for _ in 0..3 {
            let err = write(&db, 100..200).unwrap_err();
            assert_eq!(os_error(&err), Some(DISK_FULL), "{err}");
        }
        fault::clear(&path);
        write(&db, 200..300).unwrap();
        let want: Vec<i64> = (0..100).chain(200..300).collect();
        assert_eq!(keys(&db), want);
    }
    let db = Db::open(&path, options()).unwrap();
    let want: Vec<i64> = (0..100).chain(200..300).collect();
    assert_eq!(keys(&db), want);
}

#[test]
fn a_failed_flush_keeps_its_rows_and_a_later_flush_or_reopen_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _faults = Faults(&path);
    let want: Vec<i64> = (0..300).collect();
    for (op, name, os) in [
        (FileOp::Write, ".bseg", DISK_FULL),
        (FileOp::Sync, ".bseg", IO_ERROR),
        (FileOp::Sync, "MANIFEST", IO_ERROR),
    ] {
        let _ = std::fs::remove_dir_all(&path);
        {
            let db = Db::open(&path, options()).unwrap();
            db.create_table("t", schema(), &["k"]).unwrap();
            write(&db, 0..200).unwrap();
            fail(&path, op, name, 1, os);
            let err = db.flush().unwrap_err();
            assert_eq!(os_error(&err), Some(os), "{op:?} {name}: {err}");
            assert_eq!(keys(&db), (0..200).collect::<Vec<_>>(), "{op:?} {name}");
            // A segment write is retried; a failed manifest sync leaves the
            // database refusing writes, as a failed log sync does.
            match db.flush() {
                Ok(()) => {
                    write(&db, 200..300).unwrap();
                    assert_eq!(keys(&db), want, "{op:?} {name}");
                }
                Err(e) => {
                    assert!(matches!(e, Error::Poisoned(_)), "{op:?} {name}: {e}");
                    assert!(write(&db, 200..300).is_err());
                }
            }
        }
        let db = Db::open(&path, options()).unwrap();
        let after = keys(&db);
        assert!(after.starts_with(&want[..200]), "{op:?} {name}: {after:?}");
        write(&db, 200..300).unwrap();
        assert_eq!(keys(&db), want, "{op:?} {name}");
        db.flush().unwrap();
        drop(db);
        let db = Db::open(&path, options()).unwrap();
        assert_eq!(keys(&db), want, "{op:?} {name}");
    }
}

/// Background flushes that fail retry by themselves: once the disk has
/// room again the rows reach segments, with no restart and no loss.
#[test]
fn background_flushes_retry_until_the_disk_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _faults = Faults(&path);
    let background = Options {
        background_work: true,
        flush_threshold_bytes: 64 << 10,
        ..Options::default()
    };
    let db = Db::open(&path, background).unwrap();
    db.create_table("t", schema(), &["k"]).unwrap();
    fail(&path, FileOp::Write, ".bseg", 3, DISK_FULL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for start in (0..20_000).step_by(1000) {
        // A writer too far ahead of failing flushes gets their error (the
        // commit not applied) rather than waiting forever; it tries again.
        while let Err(e) = write(&db, start..start + 1000) {
            let full = matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull);
            assert!(full, "{e}");
            assert!(
                std::time::Instant::now() < deadline,
                "flushes never recovered"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let segments = || {
        std::fs::read_dir(path.join("seg"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".bseg"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while segments() == 0 {
        assert!(std::time::Instant::now() < deadline, "no flush succeeded");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(keys(&db), (0..20_000).collect::<Vec<_>>());
    drop(db);
    let db = Db::open(&path, options()).unwrap();
    assert_eq!(keys(&db), (0..20_000).collect::<Vec<_>>());
}

/// Over SQL a full disk is 53100 (disk_full), and the session's next
/// statement succeeds once there is room.
#[tokio::test]
async fn sql_reports_a_full_disk_as_53100_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _faults = Faults(&path);
    let db = basalt::Database::open(&path).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE t (k bigint PRIMARY KEY, v bigint)")
        .await
        .unwrap();
    fail(&path, FileOp::Write, ".wal", u32::MAX, DISK_FULL);
    let err = session
        .execute("INSERT INTO t VALUES (1, 1)")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "53100", "{err}");
    fault::clear(&path);
    session
        .execute("INSERT INTO t VALUES (2, 2)")
        .await
        .unwrap();
    let batches = session.query("SELECT k FROM t").await.unwrap();
    let got: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(got, vec![2]);
}
