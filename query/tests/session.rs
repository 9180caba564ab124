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

/// A database given an executor runs its queries' plans there: their
/// rows and errors come back as without one, and dropping a result stops
/// its query on the executor, even one still computing its first batch.
#[test]
fn queries_run_on_the_executor_and_stop_when_dropped() {
    let executor = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = executor.handle().clone();
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    caller.block_on(async {
        let db = Database::open_temporary()
            .unwrap()
            .with_executor(handle.clone());
        let mut s = db.session();
        s.execute("CREATE TABLE t (id int PRIMARY KEY, g int)")
            .await
            .unwrap();
        s.execute("INSERT INTO t SELECT x, x % 3 FROM generate_series(1, 3000) AS s(x)")
            .await
            .unwrap();
        let batches = s
            .query("SELECT g, count(*) AS n FROM t a JOIN t b USING (id, g) GROUP BY g ORDER BY g")
            .await
            .unwrap();
        let mut groups = Vec::new();
        for batch in &batches {
            use arrow_array::cast::AsArray;
            use arrow_array::types::{Int32Type, Int64Type};
            let g = batch.column(0).as_primitive::<Int32Type>();
            let n = batch.column(1).as_primitive::<Int64Type>();
            groups.extend((0..batch.num_rows()).map(|i| (g.value(i), n.value(i))));
        }
        assert_eq!(groups, [(0, 1000), (1, 1000), (2, 1000)]);

        let planning = s.execute("SELECT nope FROM t").await.err().unwrap();
        assert_eq!(planning.sqlstate(), "42703");
        let running = s.query("SELECT 1 / (id - 7) FROM t").await.err().unwrap();
        assert_eq!(running.sqlstate(), "22012");

        let endless = s
            .execute("SELECT count(*) FROM generate_series(1, 1000000000000)")
            .await
            .unwrap();
        assert!(handle.metrics().num_alive_tasks() > 0);
        drop(endless);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while handle.metrics().num_alive_tasks() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the dropped query still runs"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    executor.shutdown_background();
}
