//! B-tree secondary indexes against a twin table without one: the same
//! random writes (inserts, updates that move rows between index values,
//! deletes) go to both, with flushes, compactions and reopens between, and
//! every indexed query must answer exactly as the full scan of the twin.

use basalt::storage::Options;
use basalt::Database;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod common;

fn options() -> Options {
    Options {
        flush_threshold_bytes: 32 << 10,
        row_group_rows: 64,
        segment_max_rows: 500,
        l0_compaction_trigger: 3,
        background_work: false,
        ..Options::default()
    }
}

async fn answer(session: &mut basalt::Session, sql: &str) -> Vec<Vec<Option<String>>> {
    common::rows(session, sql).await
}

/// Runs `query` (with `{t}` for the table) on the indexed table and its
/// twin and compares; returns the indexed table's plan.
async fn same_answer(session: &mut basalt::Session, query: &str) -> String {
    let indexed = query.replace("{t}", "t");
    let plain = query.replace("{t}", "plain");
    let got = answer(session, &indexed).await;
    let want = answer(session, &plain).await;
    assert_eq!(got, want, "{indexed}");
    common::plan_text(session, &format!("EXPLAIN {indexed}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btree_indexed_queries_answer_as_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut db = Database::open_with(&path, options()).unwrap();
    let mut session = db.session();
    for table in ["t", "plain"] {
        session
            .execute(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, a int, b text, c double precision)"
            ))
            .await
            .unwrap();
    }
    session.execute("CREATE INDEX ON t (a)").await.unwrap();
    session
        .execute("CREATE INDEX t_b_a ON t (b, a)")
        .await
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(0x1d);
    let mut used_index = 0;
    for round in 0..24 {
        let mut writes = Vec::new();
        for _ in 0..rng.gen_range(20..120) {
            let id = rng.gen_range(0..600);
            let a = rng.gen_range(-20..20);
            let b = ["x", "y", "z", "xy"][rng.gen_range(0..4)];
            let a_text = if rng.gen_bool(0.1) {
                "NULL".to_string()
            } else {
                a.to_string()
            };
            writes.push(match rng.gen_range(0..10) {
                0..=5 => format!(
                    "INSERT INTO {{t}} VALUES ({id}, {a_text}, '{b}', {a}.5) \
                     ON CONFLICT (id) DO UPDATE SET a = excluded.a, b = excluded.b"
                ),
                6..=7 => format!("UPDATE {{t}} SET a = a + 1 WHERE id = {id}"),
                _ => format!("DELETE FROM {{t}} WHERE id = {id}"),
            });
        }
        for table in ["t", "plain"] {
            session.execute("BEGIN").await.unwrap();
            for write in &writes {
                session.execute(&write.replace("{t}", table)).await.unwrap();
            }
            session.execute("COMMIT").await.unwrap();
        }
        match round % 6 {
            1 | 3 => db.storage().flush().unwrap(),
            4 => db.storage().compact().unwrap(),
            5 => {
                drop(session);
                drop(db);
                db = Database::open_with(&path, options()).unwrap();
                session = db.session();
            }
            _ => {}
        }
        let a = rng.gen_range(-20..20);
        let plans = [
            same_answer(
                &mut session,
                &format!("SELECT id, a, b FROM {{t}} WHERE a = {a} ORDER BY id"),
            )
            .await,
            same_answer(
                &mut session,
                &format!(
                    "SELECT id FROM {{t}} WHERE a IN ({a}, {}, 99) ORDER BY id",
                    a + 3
                ),
            )
            .await,
            same_answer(
                &mut session,
                &format!(
                    "SELECT id FROM {{t}} WHERE a BETWEEN {a} AND {} ORDER BY id",
                    a + 4
                ),
            )
            .await,
            same_answer(
                &mut session,
                &format!("SELECT id FROM {{t}} WHERE a > {a} ORDER BY id"),
            )
            .await,
            same_answer(
                &mut session,
                &format!("SELECT id FROM {{t}} WHERE b = 'x' AND a <= {a} ORDER BY id"),
            )
            .await,
            same_answer(&mut session, "SELECT count(*) FROM {t} WHERE b = 'xy'").await,
            // A sort with a limit on an index's first column reads each
            // segment's first rows only; ties and NULLs included.
            same_answer(&mut session, "SELECT id, a FROM {t} ORDER BY a, id LIMIT 7").await,
            same_answer(
                &mut session,
                "SELECT id, a FROM {t} ORDER BY a DESC, id LIMIT 5",
            )
            .await,
            same_answer(
                &mut session,
                "SELECT a, id FROM {t} ORDER BY a DESC NULLS LAST, id DESC LIMIT 9",
            )
            .await,
            same_answer(
                &mut session,
                "SELECT id FROM {t} ORDER BY a NULLS FIRST, id LIMIT 4",
            )
            .await,
            same_answer(
                &mut session,
                "SELECT id, b, a FROM {t} ORDER BY b DESC, a, id LIMIT 6 OFFSET 3",
            )
            .await,
            // With a WHERE clause the scan answers, each segment's walk in
            // index order keeps its first rows that match; a range on the
            // ordered column bounds the walk.
            same_answer(
                &mut session,
                "SELECT id, a FROM {t} WHERE c > 0 ORDER BY a, id LIMIT 7",
            )
            .await,
            same_answer(
                &mut session,
                &format!("SELECT id, a FROM {{t}} WHERE a > {a} ORDER BY a, id LIMIT 4"),
            )
            .await,
            same_answer(
                &mut session,
                &format!(
                    "SELECT id, a FROM {{t}} WHERE a <= {a} AND c < 10 \
                     ORDER BY a DESC, id LIMIT 3"
                ),
            )
            .await,
            same_answer(
                &mut session,
                "SELECT id, a FROM {t} WHERE a IS NULL ORDER BY a NULLS FIRST, id LIMIT 3",
            )
            .await,
            same_answer(
                &mut session,
                "SELECT id, b FROM {t} WHERE b > 'x' ORDER BY b, id LIMIT 5",
            )
            .await,
            // A filter the scan cannot answer keeps the full sort.
            same_answer(
                &mut session,
                "SELECT id, a FROM {t} WHERE id % 3 = 1 ORDER BY a DESC, id LIMIT 5",
            )
            .await,
        ];
        used_index += plans.iter().filter(|p| p.contains("index=")).count();
        // A transaction sees its own writes through the index.
        session.execute("BEGIN").await.unwrap();
        for table in ["t", "plain"] {
            session
                .execute(&format!(
                    "UPDATE {table} SET a = 1000 WHERE id % 7 = {}",
                    round % 7
                ))
                .await
                .unwrap();
        }
        same_answer(
            &mut session,
            "SELECT id FROM {t} WHERE a = 1000 ORDER BY id",
        )
        .await;
        same_answer(
            &mut session,
            &format!("SELECT id FROM {{t}} WHERE a = {a} ORDER BY id"),
        )
        .await;
        session.execute("ROLLBACK").await.unwrap();
    }
    assert!(used_index > 100, "the index was used {used_index} times");
    let plan = common::plan_text(&mut session, "EXPLAIN SELECT id FROM t WHERE a = 3").await;
    assert!(plan.contains("index=t_a_idx"), "{plan}");
    let plan = common::plan_text(
        &mut session,
        "EXPLAIN SELECT id FROM t ORDER BY a DESC LIMIT 3",
    )
    .await;
    assert!(plan.contains("index=t_a_idx"), "{plan}");
    let plan = common::plan_text(
        &mut session,
        "EXPLAIN SELECT id FROM t WHERE c > 0 ORDER BY a DESC LIMIT 3",
    )
    .await;
    assert!(plan.contains("index=t_a_idx"), "{plan}");
    let plan = common::plan_text(&mut session, "EXPLAIN SELECT id FROM t WHERE b = 'x'").await;
    assert!(plan.contains("index=t_b_a"), "{plan}");
}

#[tokio::test]
async fn create_index_checks_its_statement() {
    let (_dir, mut session) = common::temp_session();
    session
        .execute("CREATE TABLE t (id bigint PRIMARY KEY, a int, v vector(2))")
        .await
        .unwrap();
    session
        .execute("CREATE INDEX t_a ON t USING btree (a)")
        .await
        .unwrap();
    let cases = [
        ("CREATE INDEX t_a ON t (a)", "42P07"),
        (
            "CREATE UNIQUE INDEX t_u ON t (a) NULLS NOT DISTINCT",
            "0A000",
        ),
        ("CREATE INDEX t_n ON t (nope)", "42703"),
        ("CREATE INDEX t_v ON t (v)", "42804"),
        ("CREATE INDEX t_h ON t USING hash (a)", "42704"),
        ("CREATE INDEX t_w ON t (a) WITH (pages = 3)", "22023"),
        ("CREATE INDEX t_e ON t ((a + 1))", "0A000"),
    ];
    for (sql, code) in cases {
        let err = session.execute(sql).await.unwrap_err();
        assert_eq!(err.sqlstate(), code, "{sql}: {err}");
    }
    session
        .execute("CREATE INDEX IF NOT EXISTS t_a ON t (a)")
        .await
        .unwrap();
    session
        .execute("CREATE INDEX t_a2 ON t (a) WITH (fillfactor = 90)")
        .await
        .unwrap();
    session.execute("DROP INDEX t_a").await.unwrap();
    session.execute("CREATE INDEX t_a ON t (a)").await.unwrap();
}
