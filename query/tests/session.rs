//! The embedded API's contract: what `Session::execute` returns for each
//! kind of statement, transaction status, and errors with their SQLSTATE.

use basalt_query::{Database, QueryResult, Session};

fn tag(result: &QueryResult) -> (String, u64) {
    match result {
        QueryResult::Command { tag, rows } => (tag.clone(), *rows),
        other => panic!("expected a command, got {other:?}"),
    }
}

#[test]
fn sessions_and_their_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let db = Database::open_temporary().unwrap();
    let mut session = db.session();
    send(&session);
    send(&session.execute("SELECT 1"));
}

#[tokio::test]
async fn commands_report_postgres_tags() {
    let db = Database::open_temporary().unwrap();
    let mut s: Session = db.session();
    let cases = [
        (
            "CREATE TABLE t (id int PRIMARY KEY, v text)",
            "CREATE TABLE",
            0,
        ),
        ("INSERT INTO t VALUES (1, 'a'), (2, 'b')", "INSERT 0 2", 2),
        ("UPDATE t SET v = 'c' WHERE id = 1", "UPDATE 1", 1),
        ("DELETE FROM t WHERE id > 5", "DELETE 0", 0),
        ("CREATE TABLE u AS SELECT * FROM t", "SELECT 2", 2),
        ("CREATE VIEW w AS SELECT id FROM t", "CREATE VIEW", 0),
        ("ALTER TABLE u ADD COLUMN n int", "ALTER TABLE", 0),
        ("TRUNCATE u", "TRUNCATE TABLE", 0),
        ("DROP VIEW w", "DROP VIEW", 0),
        ("SET application_name = 'x'", "SET", 0),
        ("BEGIN", "BEGIN", 0),
        ("COMMIT", "COMMIT", 0),
    ];
    for (sql, want, rows) in cases {
        let result = s.execute(sql).await.unwrap();
        assert_eq!(tag(&result), (want.to_string(), rows), "{sql}");
    }
    assert!(matches!(s.execute("").await.unwrap(), QueryResult::Empty));
    assert!(matches!(
        s.execute(" ; ").await.unwrap(),
        QueryResult::Empty
    ));
}

#[tokio::test]
async fn queries_stream_rows_with_their_schema() {
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    // Several statements: the last one's result comes back.
    let result = s
        .execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, name text); \
             INSERT INTO t VALUES (1, 'one'), (2, 'two'); \
             SELECT name, id * 10 AS tens FROM t ORDER BY id",
        )
        .await
        .unwrap();
    let QueryResult::Rows {
        command, schema, ..
    } = &result
    else {
        panic!("expected rows, got {result:?}");
    };
    assert_eq!(*command, "SELECT");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["name", "tens"]);
    let batches = result.collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    let returning = s
        .execute("DELETE FROM t WHERE id = 2 RETURNING name")
        .await
        .unwrap();
    assert!(matches!(
        &returning,
        QueryResult::Rows {
            command: "DELETE",
            ..
        }
    ));
    assert_eq!(returning.collect().await.unwrap()[0].num_rows(), 1);
}

#[tokio::test]
async fn transaction_status_follows_the_block() {
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    assert_eq!(s.transaction_status(), b'I');
    s.execute("BEGIN").await.unwrap();
    assert_eq!(s.transaction_status(), b'T');
    let err = s.execute("INSERT INTO t VALUES (NULL)").await.unwrap_err();
    assert_eq!(err.sqlstate(), "23502");
    assert_eq!(s.transaction_status(), b'E');
    let err = s.execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.sqlstate(), "25P02");
    // COMMIT of a failed block rolls back, as Postgres reports it.
    assert_eq!(tag(&s.execute("COMMIT").await.unwrap()).0, "ROLLBACK");
    assert_eq!(s.transaction_status(), b'I');
    let err = s.execute("SELEC 1").await.unwrap_err();
    assert_eq!(err.sqlstate(), "42601");
    let err = s.execute("SAVEPOINT a").await.unwrap_err();
    assert_eq!(err.sqlstate(), "0A000");
    s.execute("BEGIN").await.unwrap();
    assert!(s.execute("SAVEPOINT a").await.is_err());
    assert_eq!(s.transaction_status(), b'E');
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(s.transaction_status(), b'I');
}
