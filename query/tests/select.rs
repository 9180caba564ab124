//! SELECT through DataFusion over storage tables, checked against answers
//! computed directly from the rows written.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use basalt_query::{Database, QueryResult, Session};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn a_of(id: i64) -> i64 {
    (id * 7919) % 100
}

fn rows(ids: std::ops::Range<i64>, version: &str) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(Int64Array::from_iter(
            ids.clone().map(|i| (i % 10 != 0).then(|| a_of(i))),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.map(|i| format!("{version}-{i}")),
        )),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

/// 10,000 rows: half flushed to segments, half in the memtable, and ids
/// 0..100 rewritten after the flush as "v2".
fn database(dir: &std::path::Path) -> Database {
    let database = Database::open(dir).unwrap();
    let db = database.storage();
    db.create_table("t", schema(), &["id"]).unwrap();
    let write = |batch: RecordBatch| {
        let mut txn = db.begin();
        txn.put("t", &batch).unwrap();
        txn.commit().unwrap();
    };
    write(rows(0..5000, "v1"));
    db.flush().unwrap();
    write(rows(5000..10000, "v1"));
    write(rows(0..100, "v2"));
    database
}

async fn int_column(session: &mut Session, sql: &str) -> Vec<i64> {
    let batches = session.query(sql).await.unwrap();
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

async fn text(session: &mut Session, sql: &str) -> String {
    let batches = session.query(sql).await.unwrap();
    arrow_cast_display(&batches)
}

fn arrow_cast_display(batches: &[RecordBatch]) -> String {
    let mut out = String::new();
    for b in batches {
        for c in 0..b.num_columns() {
            if let Some(s) = b.column(c).as_string_opt::<i32>() {
                for v in s.iter().flatten() {
                    out.push_str(v);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn filtered_select_matches_the_rows_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = database(dir.path()).session();
    let got = int_column(&mut session, "SELECT id FROM t WHERE a = 42 ORDER BY id").await;
    let want: Vec<i64> = (0..10000)
        .filter(|&i| i % 10 != 0 && a_of(i) == 42)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    let got = int_column(&mut session, "SELECT count(*) FROM t WHERE a IS NULL").await;
    assert_eq!(got, vec![1000]);
    let got = int_column(
        &mut session,
        "SELECT sum(a) FROM t WHERE id >= 4990 AND id < 5010",
    )
    .await;
    assert_eq!(
        got,
        vec![(4990..5010).filter(|i| i % 10 != 0).map(a_of).sum::<i64>()]
    );
    let got = int_column(
        &mut session,
        "SELECT id FROM t WHERE id IN (3, 5001, 20000) ORDER BY id",
    )
    .await;
    assert_eq!(got, vec![3, 5001]);
}

#[tokio::test]
async fn newest_versions_win_and_limits_and_joins_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = database(dir.path()).session();
    let got = text(
        &mut session,
        "SELECT s FROM t WHERE id IN (99, 100) ORDER BY id",
    )
    .await;
    assert_eq!(got, "v2-99\nv1-100\n");
    assert_eq!(
        int_column(&mut session, "SELECT count(*) FROM t").await,
        vec![10000]
    );
    assert_eq!(
        int_column(
            &mut session,
            "SELECT count(*) FROM (SELECT id FROM t LIMIT 7)"
        )
        .await,
        vec![7]
    );
    let joined = "SELECT count(*) FROM t x JOIN t y ON x.id = y.id + 1 WHERE y.a = 1";
    let want = (0..10000)
        .filter(|&i| i % 10 != 0 && a_of(i) == 1 && i + 1 < 10000)
        .count() as i64;
    assert_eq!(int_column(&mut session, joined).await, vec![want]);
}

#[tokio::test]
async fn explain_shows_the_pushed_down_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = database(dir.path()).session();
    let plan = text(
        &mut session,
        "EXPLAIN SELECT id, s FROM t WHERE a = 42 AND s LIKE 'v1%'",
    )
    .await;
    assert!(plan.contains("StorageScanExec: table=t"), "{plan}");
    assert!(plan.contains("predicates=[#1 Eq(Int(42))]"), "{plan}");
    // LIKE is not something the engine evaluates: DataFusion filters it above the scan.
    assert!(plan.contains("FilterExec"), "{plan}");
}

#[tokio::test]
async fn unknown_tables_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut session = database(dir.path()).session();
    let err = session.query("SELECT * FROM missing").await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn insert_checks_keys_and_upserts_on_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let database = database(dir.path());
    let mut session = database.session();
    let inserted = session
        .execute("INSERT INTO t VALUES (20000, 1, 'new'), (20001, NULL, 'new')")
        .await
        .unwrap();
    assert!(
        matches!(&inserted, QueryResult::Command { tag, rows: 2 } if tag == "INSERT 0 2"),
        "{inserted:?}"
    );
    // Row 1 exists (flushed to a segment, then rewritten in the memtable).
    let err = session
        .query("INSERT INTO t VALUES (20002, 1, 'x'), (1, NULL, 'replaced')")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "23505", "{err}");
    assert_eq!(err.detail(), Some("Key (id)=(1) already exists."));
    session
        .query(
            "INSERT INTO t VALUES (1, NULL, 'replaced') \
             ON CONFLICT (id) DO UPDATE SET a = excluded.a, s = excluded.s || '!'",
        )
        .await
        .unwrap();
    assert_eq!(
        text(
            &mut session,
            "SELECT s FROM t WHERE id IN (1, 20000, 20002) ORDER BY id"
        )
        .await,
        "replaced!\nnew\n"
    );
    assert_eq!(
        int_column(&mut session, "SELECT count(*) FROM t").await,
        vec![10002]
    );
    // Copying rows through SQL: every id shifted past the existing ones.
    session
        .query("INSERT INTO t SELECT id + 100000, a, s FROM t WHERE id < 10")
        .await
        .unwrap();
    assert_eq!(
        int_column(&mut session, "SELECT count(*) FROM t WHERE id >= 100000").await,
        vec![10]
    );
    // A NULL key is refused and nothing of the statement is applied.
    let err = session
        .query("INSERT INTO t VALUES (30000, 1, 'ok'), (NULL, 2, 'bad')")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "23502", "{err}");
    assert_eq!(
        int_column(&mut session, "SELECT count(*) FROM t WHERE id = 30000").await,
        vec![0]
    );
}
