//! Databases written by earlier versions of the on-disk formats still open
//! and answer the same queries (tantivy's habit: a fixture written by the
//! old code, checked in, read by the new). Each fixture under
//! `tests/fixtures/` was made by the ignored test of the same name run on
//! the commit that its README names.

use std::path::{Path, PathBuf};

use basalt::storage::Options;
use basalt::Database;

mod common;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a fixture in a scratch directory: opening a database rewrites
/// its manifest, and the checked-in files must stay as written.
fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let to = scratch.path().join(name);
    copy_dir(&fixture(name), &to);
    (scratch, to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The statements that made the fixture: some rows flushed to a segment,
/// more in the WAL only, with updates and deletes across both.
const WAL_V1_SCRIPT: &[&str] = &[
    "CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), at timestamp)",
    "INSERT INTO items SELECT value, 'item ' || value, value * 1.25, \
     to_timestamp(1767225600 + value * 3600) FROM generate_series(1, 500)",
    "FLUSH",
    "UPDATE items SET name = 'updated ' || id WHERE id % 7 = 0",
    "DELETE FROM items WHERE id % 11 = 0",
    "INSERT INTO items SELECT value, 'late ' || value, NULL AS price, NULL AS at FROM generate_series(501, 620)",
    "CREATE TABLE log (line text)",
    "INSERT INTO log VALUES ('one'), ('two'), (NULL)",
];

/// The answers the fixture must give, whatever version reads it.
const WAL_V1_QUERIES: &[(&str, &str)] = &[
    ("SELECT count(*) FROM items", "575"),
    (
        "SELECT count(*) FROM items WHERE name LIKE 'updated %'",
        "65",
    ),
    ("SELECT sum(price) FROM items", "142331.25"),
    ("SELECT name FROM items WHERE id = 14", "updated 14"),
    ("SELECT at FROM items WHERE id = 14", "2026-01-01 14:00:00"),
    (
        "SELECT count(*) FROM items WHERE id % 11 = 0 AND id <= 500",
        "0",
    ),
    ("SELECT max(id) FROM items", "620"),
    ("SELECT count(line) || '/' || count(*) FROM log", "2/3"),
];

fn options() -> Options {
    Options {
        // No background flush or prepared WAL file: the fixture holds
        // exactly what the script wrote.
        background_work: false,
        ..Options::default()
    }
}

async fn answers(db: &Database, queries: &[(&str, &str)]) -> Vec<String> {
    let mut session = db.session();
    let mut out = Vec::new();
    for (sql, _) in queries {
        let rows = common::rows(&mut session, sql).await;
        out.push(rows[0][0].clone().unwrap_or_default());
    }
    out
}

fn expected<'a>(queries: &[(&str, &'a str)]) -> Vec<&'a str> {
    queries.iter().map(|(_, answer)| *answer).collect()
}

/// Runs a fixture's script on a new database under `tests/fixtures/name`
/// and checks its answers: how each fixture was made, on its README's
/// commit.
async fn write_fixture(name: &str, script: &[&str], queries: &[(&str, &str)]) {
    let dir = fixture(name);
    let _ = std::fs::remove_dir_all(&dir);
    let db = Database::open_with(&dir, options()).unwrap();
    let mut session = db.session();
    for sql in script {
        if *sql == "FLUSH" {
            db.storage().flush().unwrap();
        } else {
            session.execute(sql).await.unwrap();
        }
    }
    assert_eq!(answers(&db, queries).await, expected(queries));
    drop(session);
    drop(db);
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

#[tokio::test]
async fn a_database_with_a_version_1_wal_opens_and_answers_the_same() {
    let (_scratch, dir) = copy_of("wal_v1");
    let wal = std::fs::read_dir(dir.join("wal")).unwrap().count();
    assert!(wal >= 1, "the fixture holds its WAL");
    let db = Database::open_with(&dir, options()).unwrap();
    let expected = expected(WAL_V1_QUERIES);
    assert_eq!(answers(&db, WAL_V1_QUERIES).await, expected);
    // Written on: new records go to a current-version file, and both
    // versions replay together after a restart.
    db.session()
        .execute("INSERT INTO log VALUES ('three')")
        .await
        .unwrap();
    drop(db);
    let db = Database::open_with(&dir, options()).unwrap();
    let mut session = db.session();
    let rows = common::rows(&mut session, "SELECT count(*) FROM log").await;
    assert_eq!(rows[0][0].as_deref(), Some("4"));
    assert_eq!(answers(&db, WAL_V1_QUERIES).await[..7], expected[..7]);
}

/// Writes `tests/fixtures/wal_v1` (run on the commit before WAL version 2:
/// `cargo test --test storage_compat -- --ignored --exact write_wal_v1_fixture`).
#[tokio::test]
#[ignore]
async fn write_wal_v1_fixture() {
    write_fixture("wal_v1", WAL_V1_SCRIPT, WAL_V1_QUERIES).await;
}

/// The statements that made `hnsw_by_column`: a vector index declared in
/// the column's metadata and its files recorded by column (manifest tag 9),
/// one segment indexed by CREATE INDEX, one by a flush, and rows in the
/// WAL only.
const HNSW_BY_COLUMN_SCRIPT: &[&str] = &[
    "CREATE TABLE docs (id bigint PRIMARY KEY, tag text, v vector(3))",
    "INSERT INTO docs SELECT value, 'tag ' || (value % 5), \
     ('[' || (value % 17) || ',' || (value % 13) || ',' || (value % 7) || ']')::vector(3) \
     FROM generate_series(1, 400)",
    "FLUSH",
    "CREATE INDEX docs_v_idx ON docs USING hnsw (v vector_l2_ops)",
    "INSERT INTO docs SELECT value, 'tag ' || (value % 5), \
     ('[' || (value % 19) || ',' || (value % 11) || ',' || (value % 3) || ']')::vector(3) \
     FROM generate_series(401, 600)",
    "FLUSH",
    "DELETE FROM docs WHERE id % 10 = 0",
    "INSERT INTO docs VALUES (1001, 'late', '[4,4,4]'), (1002, 'late', '[30,30,30]')",
];

/// The answers `hnsw_by_column` must give (the nearest rows checked by
/// hand: `[4,4,4]` is row 4's and row 1001's vector).
const HNSW_BY_COLUMN_QUERIES: &[(&str, &str)] = &[
    ("SELECT count(*) FROM docs", "542"),
    (
        "SELECT string_agg(id::text, ',') FROM \
         (SELECT id FROM docs ORDER BY v <-> '[4,4,4]', id LIMIT 4) AS nearest",
        "4,1001,277,173",
    ),
    (
        "SELECT string_agg(id::text, ',') FROM \
         (SELECT id FROM docs WHERE tag = 'tag 3' ORDER BY v <-> '[10,2,1]', id LIMIT 3) AS nearest",
        "28,198,408",
    ),
    ("SELECT count(*) FROM docs WHERE tag = 'late'", "2"),
];

#[tokio::test]
async fn a_database_with_vector_indexes_recorded_by_column_opens_and_answers_the_same() {
    let (_scratch, dir) = copy_of("hnsw_by_column");
    let expected = expected(HNSW_BY_COLUMN_QUERIES);
    for _reopen in 0..2 {
        let db = Database::open_with(&dir, options()).unwrap();
        assert_eq!(answers(&db, HNSW_BY_COLUMN_QUERIES).await, expected);
        // Both segments are searched through their graphs: the old files
        // were found, not silently replaced by exact comparison.
        let query = basalt::storage::VectorQuery {
            column: 2,
            metric: basalt::storage::Metric::L2,
            query: vec![4.0, 4.0, 4.0],
            k: 4,
            ef_search: 40,
            projection: vec![0],
            filter_columns: vec![],
        };
        let hits = db
            .storage()
            .snapshot()
            .search("docs", &query, None)
            .unwrap();
        assert_eq!(hits.stats.graph_segments, 2, "{:?}", hits.stats);
    }
    // The files now go by the index's id; the column-named ones, linked
    // on the first open, went with the manifest that named them.
    assert_eq!(
        common::files_ending(&dir.join("seg"), ".hnsw"),
        ["000004.i3.hnsw", "000006.i3.hnsw"]
    );
}

/// Writes `tests/fixtures/hnsw_by_column` (run on the commit before index
/// definitions moved into the table definition: `cargo test --test
/// storage_compat -- --ignored --exact write_hnsw_by_column_fixture`).
#[tokio::test]
#[ignore]
async fn write_hnsw_by_column_fixture() {
    write_fixture(
        "hnsw_by_column",
        HNSW_BY_COLUMN_SCRIPT,
        HNSW_BY_COLUMN_QUERIES,
    )
    .await;
}

/// The statements that made `unique_by_option`: UNIQUE indexes as the
/// btree option `unique` in a tag-10 PutTable (before tag 12), one built
/// over a flushed segment by CREATE UNIQUE INDEX, one a keyless table's
/// constraint, with their entries tables in segments and in the WAL.
const UNIQUE_BY_OPTION_SCRIPT: &[&str] = &[
    "CREATE TABLE users (id bigint PRIMARY KEY, email text, team int)",
    "INSERT INTO users SELECT value, 'u' || value || '@x', value % 10 \
     FROM generate_series(1, 300)",
    "FLUSH",
    "CREATE UNIQUE INDEX users_email ON users (email)",
    "CREATE TABLE pairs (a int, b int, UNIQUE (a, b))",
    "INSERT INTO pairs SELECT value % 20, value FROM generate_series(1, 100)",
    "UPDATE users SET email = 'changed' || id WHERE id % 50 = 0",
    "FLUSH",
    "DELETE FROM users WHERE id % 7 = 0",
    "INSERT INTO users VALUES (1000, 'late@x', 1)",
];

/// The answers `unique_by_option` must give.
const UNIQUE_BY_OPTION_QUERIES: &[(&str, &str)] = &[
    ("SELECT count(*) FROM users", "259"),
    ("SELECT count(*) FROM users WHERE email = 'u14@x'", "0"),
    ("SELECT id FROM users WHERE email = 'changed100'", "100"),
    ("SELECT id FROM users WHERE email = 'late@x'", "1000"),
    ("SELECT count(*) FROM pairs", "100"),
];

#[tokio::test]
async fn a_database_with_unique_indexes_as_options_opens_and_enforces_them() {
    let (_scratch, dir) = copy_of("unique_by_option");
    let expected = expected(UNIQUE_BY_OPTION_QUERIES);
    for reopen in 0..2 {
        let db = Database::open_with(&dir, options()).unwrap();
        assert_eq!(answers(&db, UNIQUE_BY_OPTION_QUERIES).await, expected);
        let mut session = db.session();
        for duplicate in [
            "INSERT INTO users VALUES (2000, 'u1@x', 0)",
            "INSERT INTO users VALUES (2001, 'late@x', 0)",
            "UPDATE users SET email = 'changed50' WHERE id = 2",
            "INSERT INTO pairs VALUES (5, 5)",
        ] {
            let err = session.execute(duplicate).await.unwrap_err();
            assert_eq!(err.sqlstate(), "23505", "{duplicate}: {err}");
        }
        // A deleted row's value is free again, and then taken.
        let free = format!("INSERT INTO users VALUES ({}, 'u14@x', 0)", 3000 + reopen);
        session.execute(&free).await.unwrap();
        let taken = session
            .execute("INSERT INTO users VALUES (3100, 'u14@x', 0)")
            .await
            .unwrap_err();
        assert_eq!(taken.sqlstate(), "23505", "{taken}");
        session
            .execute("DELETE FROM users WHERE id >= 3000")
            .await
            .unwrap();
    }
}

/// Writes `tests/fixtures/unique_by_option` (run on the commit before
/// tag 12: `cargo test --test storage_compat -- --ignored --exact
/// write_unique_by_option_fixture`).
#[tokio::test]
#[ignore]
async fn write_unique_by_option_fixture() {
    write_fixture(
        "unique_by_option",
        UNIQUE_BY_OPTION_SCRIPT,
        UNIQUE_BY_OPTION_QUERIES,
    )
    .await;
}
