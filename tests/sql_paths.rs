//! One semantics, two paths: every statement here runs on two databases,
//! one whose sessions may use the OLTP fast paths (point SELECT, point
//! UPDATE, constant and prepared INSERT) and one with them off
//! (`SET basalt.fast_paths = off`, everything through DataFusion). Each
//! statement must give the same rows, command tag or SQLSTATE on both, and
//! the tables must end the same. Statements are run as text and, where
//! they take parameters, as prepared statements bound six times (drivers
//! switch to server-side statements from the fifth execution).

use basalt::query::{Param, PreparedStatement, QueryResult, Session};

/// What a statement answered: its rows as text, its tag, or its SQLSTATE.
async fn outcome(result: basalt::Result<QueryResult>) -> String {
    match result {
        Ok(QueryResult::Command { tag, .. }) => tag,
        Ok(QueryResult::Rows { .. }) | Ok(QueryResult::Empty) => {
            let batches = match result {
                Ok(r) => r.collect().await,
                Err(e) => Err(e),
            };
            match batches {
                Ok(batches) => {
                    let mut rows = Vec::new();
                    for batch in batches {
                        for row in 0..batch.num_rows() {
                            let values: Vec<String> = batch
                                .columns()
                                .iter()
                                .map(|c| {
                                    basalt::query::pgtext::format_value(c.as_ref(), row)
                                        .unwrap_or_else(|| "NULL".into())
                                })
                                .collect();
                            rows.push(values.join("|"));
                        }
                    }
                    format!("rows [{}]", rows.join(", "))
                }
                Err(e) => format!("error {}", e.sqlstate()),
            }
        }
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error {}", e.sqlstate()),
    }
}

struct Pair {
    fast: Session,
    general: Session,
    databases: [basalt::Database; 2],
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Pair {
    async fn new() -> Pair {
        let open = || {
            let dir = tempfile::tempdir().unwrap();
            let db = basalt::Database::open(dir.path().join("db")).unwrap();
            let session = db.session();
            (dir, db, session)
        };
        let (fast_dir, fast_db, fast) = open();
        let (general_dir, general_db, mut general) = open();
        general
            .execute("SET basalt.fast_paths = off")
            .await
            .unwrap();
        Pair {
            fast,
            general,
            databases: [fast_db, general_db],
            _dirs: (fast_dir, general_dir),
        }
    }

    async fn run(&mut self, sql: &str) -> String {
        let fast = outcome(self.fast.execute(sql).await).await;
        let general = outcome(self.general.execute(sql).await).await;
        assert_eq!(fast, general, "fast and general paths differ on: {sql}");
        fast
    }

    /// [`Pair::run`] for a statement without ORDER BY whose rows may come
    /// in any order: compared as sets.
    async fn run_unordered(&mut self, sql: &str) -> String {
        let fast = sorted(outcome(self.fast.execute(sql).await).await);
        let general = sorted(outcome(self.general.execute(sql).await).await);
        assert_eq!(fast, general, "fast and general paths differ on: {sql}");
        fast
    }

    /// Moves both databases' rows to segments, so lookups read them there.
    fn flush(&self) {
        for db in &self.databases {
            db.storage().flush().unwrap();
        }
    }

    async fn run_prepared(&mut self, sql: &str, params: &[Vec<Param>]) {
        let parse = |session: &Session| {
            let statement = session.parse(sql).unwrap().pop().unwrap();
            PreparedStatement::new(statement)
        };
        let (fast_statement, general_statement) = (parse(&self.fast), parse(&self.general));
        for (round, values) in params.iter().enumerate() {
            // Compared as sets: the prepared statements here have no ORDER BY.
            let fast =
                sorted(outcome(self.fast.execute_prepared(&fast_statement, values).await).await);
            let general = sorted(
                outcome(
                    self.general
                        .execute_prepared(&general_statement, values)
                        .await,
                )
                .await,
            );
            assert_eq!(
                fast, general,
                "paths differ on {sql} (execution {round}, {values:?})"
            );
        }
    }
}

/// An outcome's rows in sorted order.
fn sorted(outcome: String) -> String {
    match outcome
        .strip_prefix("rows [")
        .and_then(|r| r.strip_suffix(']'))
    {
        Some(rows) if !rows.is_empty() => {
            let mut rows: Vec<&str> = rows.split(", ").collect();
            rows.sort_unstable();
            format!("rows [{}]", rows.join(", "))
        }
        _ => outcome,
    }
}

fn int(v: i64) -> Param {
    Param::Text {
        text: v.to_string(),
        sql_type: Some("BIGINT".into()),
    }
}

fn untyped(text: &str) -> Param {
    Param::Text {
        text: text.into(),
        sql_type: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_answer_alike_on_both_paths() {
    let mut pair = Pair::new().await;
    let script = [
        "CREATE TABLE acct (id bigint PRIMARY KEY, bal bigint NOT NULL, small int, note text)",
        "INSERT INTO acct VALUES (1, 100, 1, 'a'), (2, 9223372036854775807, 2147483647, NULL)",
        "INSERT INTO acct VALUES (3, 0, 0, 'c')",
        "INSERT INTO acct VALUES (1, 5, 5, 'dup')",
        "INSERT INTO acct VALUES (NULL, 5, 5, 'null key')",
        "INSERT INTO acct VALUES (4, NULL, 5, 'null bal')",
        "INSERT INTO acct VALUES (5, 'x', 5, 'bad int')",
        "INSERT INTO acct VALUES (6, 1, 3000000000, 'too big for int')",
        "INSERT INTO acct (id, bal) VALUES (7, -1)",
        "SELECT * FROM acct WHERE id = 1",
        "SELECT bal, note FROM acct WHERE id = 2",
        "SELECT * FROM acct WHERE id = 99",
        "SELECT * FROM acct WHERE id = '3'",
        "SELECT * FROM acct WHERE id = 'x'",
        "UPDATE acct SET bal = bal + 1 WHERE id = 1",
        "UPDATE acct SET bal = bal + 1 WHERE id = 2",
        "UPDATE acct SET small = small + 1 WHERE id = 2",
        "UPDATE acct SET bal = bal * 2 WHERE id = 2",
        "UPDATE acct SET bal = bal - 1 WHERE id = 2 RETURNING bal",
        "UPDATE acct SET bal = NULL WHERE id = 1",
        "UPDATE acct SET note = 'z' WHERE id = 99",
        "UPDATE acct SET note = 'r' WHERE id = 3 RETURNING id, note",
        "SELECT id, bal, small, note FROM acct ORDER BY id",
    ];
    for sql in script {
        pair.run(sql).await;
    }
    let insert = "INSERT INTO acct (id, bal, small, note) VALUES ($1, $2, $3, $4)";
    let rows: Vec<Vec<Param>> = (10..16)
        .map(|i| vec![int(i), int(i * 10), untyped("7"), untyped("p")])
        .chain([
            vec![int(10), int(1), untyped("1"), untyped("dup")],
            vec![int(20), int(1), untyped("3000000000"), untyped("range")],
            vec![int(21), int(1), untyped("x"), untyped("syntax")],
            vec![int(22), Param::Null(None), untyped("1"), untyped("null")],
        ])
        .collect();
    pair.run_prepared(insert, &rows).await;
    let update = "UPDATE acct SET bal = bal + $2 WHERE id = $1 RETURNING bal";
    let updates: Vec<Vec<Param>> = (0..6)
        .map(|i| vec![int(10 + i), int(i)])
        .chain([
            vec![int(2), int(1)],
            vec![int(99), int(1)],
            vec![int(11), int(i64::MAX)],
        ])
        .collect();
    pair.run_prepared(update, &updates).await;
    let select = "SELECT bal, note FROM acct WHERE id = $1";
    let keys: Vec<Vec<Param>> = [1, 2, 10, 11, 99, 12, 13].map(|k| vec![int(k)]).into();
    pair.run_prepared(select, &keys).await;
    pair.run("SELECT id, bal, small, note FROM acct ORDER BY id")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_fail_alike_on_both_paths() {
    let mut pair = Pair::new().await;
    for sql in [
        "CREATE TABLE t (id int PRIMARY KEY, v int)",
        "INSERT INTO t VALUES (1, 1), (2, 2)",
        "BEGIN",
        "UPDATE t SET v = 10 WHERE id = 1",
        "INSERT INTO t VALUES (2, 0)",
        "SELECT * FROM t WHERE id = 1",
        "COMMIT",
        "SELECT id, v FROM t ORDER BY id",
        "BEGIN",
        "INSERT INTO t VALUES (3, 3)",
        "UPDATE t SET v = v + 1 WHERE id = 3 RETURNING v",
        "SELECT v FROM t WHERE id = 3",
        "ROLLBACK",
        "SELECT id, v FROM t ORDER BY id",
    ] {
        pair.run(sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_indexes_refuse_alike_on_both_paths() {
    let mut pair = Pair::new().await;
    for sql in [
        "CREATE TABLE u (id bigint PRIMARY KEY, email text, n bigint)",
        "CREATE UNIQUE INDEX u_email ON u (email)",
        "INSERT INTO u VALUES (1, 'a', 1), (2, 'b', 2), (3, NULL, 3)",
    ] {
        pair.run(sql).await;
    }
    for (sql, want) in [
        ("INSERT INTO u VALUES (4, 'a', 4)", "error 23505"),
        ("INSERT INTO u VALUES (4, NULL, 4)", "INSERT 0 1"),
        ("UPDATE u SET email = 'b' WHERE id = 1", "error 23505"),
        (
            "UPDATE u SET email = 'c' WHERE id = 1 RETURNING email",
            "rows [c]",
        ),
        ("INSERT INTO u VALUES (5, 'a', 5)", "INSERT 0 1"),
        ("SELECT id, email FROM u WHERE email = 'a'", "rows [5|a]"),
    ] {
        assert_eq!(pair.run(sql).await, want, "{sql}");
    }
    let insert = "INSERT INTO u (id, email, n) VALUES ($1, $2, $3)";
    let rows: Vec<Vec<Param>> = (10..16)
        .map(|i| vec![int(i), untyped(&format!("e{i}")), int(i)])
        .chain([
            vec![int(20), untyped("e10"), int(1)],
            vec![int(21), Param::Null(None), int(1)],
            vec![int(22), untyped("e11"), int(1)],
        ])
        .collect();
    pair.run_prepared(insert, &rows).await;
    let update = "UPDATE u SET email = $2 WHERE id = $1";
    let updates: Vec<Vec<Param>> = (10..16)
        .map(|i| vec![int(i), untyped(&format!("f{i}"))])
        .chain([vec![int(10), untyped("f11")], vec![int(2), untyped("f12")]])
        .collect();
    pair.run_prepared(update, &updates).await;
    pair.run("SELECT id, email, n FROM u ORDER BY id").await;
}

/// Equalities on a B-tree-indexed column take the point path's indexed
/// lookup (`query::session::point_select`); they must answer as the
/// general path does, from memtables and segments, after updates and
/// deletes, inside a transaction block, and for values the column's type
/// cannot hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_lookups_answer_alike_on_both_paths() {
    let mut pair = Pair::new().await;
    for sql in [
        "CREATE TABLE ev (id bigint PRIMARY KEY, kind int, tag text, n bigint)",
        "CREATE INDEX ev_kind ON ev (kind)",
        "CREATE INDEX ev_tag_n ON ev (tag, n)",
        "INSERT INTO ev SELECT g, g % 7, 't' || (g % 5), g FROM generate_series(1, 300) g",
    ] {
        pair.run(sql).await;
    }
    pair.flush();
    let queries = [
        "SELECT * FROM ev WHERE kind = 3",
        "SELECT id, n AS m FROM ev WHERE kind = '4'",
        "SELECT id FROM ev e WHERE e.kind = 0 AND n = 14",
        "SELECT id FROM ev WHERE tag = 't2' AND n = 7",
        "SELECT id FROM ev WHERE tag = 't2' AND kind = 2",
        "SELECT id FROM ev WHERE kind = 3000000000",
        "SELECT id FROM ev WHERE kind = 'x'",
        "SELECT id FROM ev WHERE kind = 1.0",
        "SELECT id FROM ev WHERE kind = NULL",
        "SELECT id FROM ev WHERE tag = 'none'",
        // Rows without columns, as PostgreSQL allows.
        "SELECT FROM ev WHERE kind = 3",
        "SELECT FROM ev WHERE id = 5",
    ];
    for sql in queries {
        pair.run_unordered(sql).await;
    }
    for sql in [
        "UPDATE ev SET kind = 3 WHERE id = 1",
        "DELETE FROM ev WHERE id = 3",
        "INSERT INTO ev VALUES (1000, 3, 't9', 0)",
        "UPDATE ev SET tag = 't9' WHERE kind = 4",
    ] {
        pair.run(sql).await;
    }
    for sql in queries {
        pair.run_unordered(sql).await;
    }
    for sql in [
        "BEGIN",
        "INSERT INTO ev VALUES (1001, 3, 't9', 1)",
        "DELETE FROM ev WHERE id = 10",
    ] {
        pair.run(sql).await;
    }
    for sql in queries {
        pair.run_unordered(sql).await;
    }
    pair.run("ROLLBACK").await;
    let select = "SELECT id, tag FROM ev WHERE kind = $1";
    let kinds: Vec<Vec<Param>> = [3, 0, 6, 99, 3, 5]
        .map(|k| vec![int(k)])
        .into_iter()
        .chain([
            vec![untyped("2")],
            vec![untyped("x")],
            vec![Param::Null(None)],
            vec![int(3_000_000_000)],
        ])
        .collect();
    pair.run_prepared(select, &kinds).await;
    let by_tag = "SELECT id FROM ev WHERE tag = $1 AND n = $2";
    let tags: Vec<Vec<Param>> = (0..6)
        .map(|i| vec![untyped(&format!("t{}", i % 5)), int(i * 5 + 2)])
        .collect();
    pair.run_prepared(by_tag, &tags).await;
}
