//! UNIQUE secondary indexes: random writes checked against a model of
//! which write PostgreSQL would refuse, across flushes, compactions and
//! reopens; concurrent transactions; the error's detail; writes during
//! CREATE UNIQUE INDEX.

use std::collections::BTreeMap;

use basalt::storage::Options;
use basalt::Database;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod common;

fn options() -> Options {
    Options {
        flush_threshold_bytes: 16 << 10,
        row_group_rows: 64,
        segment_max_rows: 300,
        l0_compaction_trigger: 3,
        background_work: false,
        ..Options::default()
    }
}

/// `id -> u` as PostgreSQL would hold it: a write is refused when it gives
/// a non-NULL `u` to a second row.
#[derive(Default)]
struct Model(BTreeMap<i64, Option<i64>>);

impl Model {
    fn held_by_other(&self, id: i64, u: Option<i64>) -> bool {
        u.is_some() && self.0.iter().any(|(&k, &v)| k != id && v == u)
    }
}

fn sql_value(u: Option<i64>) -> String {
    u.map_or_else(|| "NULL".to_string(), |u| u.to_string())
}

async fn contents(session: &mut basalt::Session) -> Vec<(i64, Option<i64>)> {
    common::rows(session, "SELECT id, u FROM t ORDER BY id")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().unwrap().parse().unwrap(),
                r[1].as_deref().map(|u| u.parse().unwrap()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_index_refuses_exactly_the_writes_postgres_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut db = Database::open_with(&path, options()).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE t (id bigint PRIMARY KEY, u bigint, pad text)")
        .await
        .unwrap();
    session
        .execute("CREATE UNIQUE INDEX t_u ON t (u)")
        .await
        .unwrap();
    let mut model = Model::default();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let (mut refused, mut done) = (0, 0);
    for round in 0..30 {
        for _ in 0..rng.gen_range(30..90) {
            let id = rng.gen_range(0..200);
            let u = (!rng.gen_bool(0.1)).then(|| rng.gen_range(0..150));
            let (sql, allowed) = match rng.gen_range(0..10) {
                0..=4 => (
                    format!("INSERT INTO t VALUES ({id}, {}, 'p')", sql_value(u)),
                    !model.0.contains_key(&id) && !model.held_by_other(id, u),
                ),
                5..=7 => (
                    format!("UPDATE t SET u = {} WHERE id = {id}", sql_value(u)),
                    !model.0.contains_key(&id) || !model.held_by_other(id, u),
                ),
                _ => (format!("DELETE FROM t WHERE id = {id}"), true),
            };
            match session.execute(&sql).await {
                Ok(_) => {
                    assert!(allowed, "{sql} should have been refused");
                    done += 1;
                    if sql.starts_with("DELETE") {
                        model.0.remove(&id);
                    } else if sql.starts_with("INSERT") || model.0.contains_key(&id) {
                        model.0.insert(id, u);
                    }
                }
                Err(e) => {
                    assert!(!allowed, "{sql}: {e}");
                    assert_eq!(e.sqlstate(), "23505", "{sql}: {e}");
                    refused += 1;
                }
            }
        }
        match round % 7 {
            1 | 4 => db.storage().flush().unwrap(),
            2 => db.storage().compact().unwrap(),
            3 | 6 => {
                drop(session);
                drop(db);
                db = Database::open_with(&path, options()).unwrap();
                session = db.session();
            }
            5 => {
                // Built again over rows spread across segments and memory.
                session.execute("DROP INDEX t_u").await.unwrap();
                session
                    .execute("CREATE UNIQUE INDEX t_u ON t (u)")
                    .await
                    .unwrap();
            }
            _ => {}
        }
        let want: Vec<(i64, Option<i64>)> = model.0.iter().map(|(&k, &v)| (k, v)).collect();
        assert_eq!(contents(&mut session).await, want, "round {round}");
    }
    assert!(
        refused > 100 && done > 500,
        "refused {refused}, done {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_names_the_index_and_the_key() {
    let (_dir, mut session) = common::temp_session();
    session
        .execute("CREATE TABLE t (id int PRIMARY KEY, a text, b int)")
        .await
        .unwrap();
    session
        .execute("CREATE UNIQUE INDEX t_a_b ON t (a, b)")
        .await
        .unwrap();
    session
        .execute("INSERT INTO t VALUES (1, 'x', 7)")
        .await
        .unwrap();
    let err = session
        .execute("INSERT INTO t VALUES (2, 'x', 7)")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "23505");
    assert_eq!(
        err.to_string(),
        "duplicate key value violates unique constraint \"t_a_b\""
    );
    assert_eq!(err.detail(), Some("Key (a, b)=(x, 7) already exists."));
    session.execute("DROP INDEX t_a_b").await.unwrap();
    session
        .execute("INSERT INTO t VALUES (2, 'x', 7)")
        .await
        .unwrap();
    let err = session
        .execute("CREATE UNIQUE INDEX t_a_b ON t (a, b)")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "23505");
    assert_eq!(err.to_string(), "could not create unique index \"t_a_b\"");
    assert_eq!(err.detail(), Some("Key (a, b)=(x, 7) is duplicated."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_transactions_giving_one_value_the_second_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let mut first = db.session();
    first
        .execute("CREATE TABLE t (id int PRIMARY KEY, u int)")
        .await
        .unwrap();
    first
        .execute("CREATE UNIQUE INDEX t_u ON t (u)")
        .await
        .unwrap();
    let mut second = db.session();
    for session in [&mut first, &mut second] {
        session.execute("BEGIN").await.unwrap();
    }
    first.execute("INSERT INTO t VALUES (1, 10)").await.unwrap();
    // The second cannot see the first's row yet, so its insert succeeds...
    second
        .execute("INSERT INTO t VALUES (2, 10)")
        .await
        .unwrap();
    first.execute("COMMIT").await.unwrap();
    // ...and its commit is refused, as PostgreSQL refuses the second insert.
    let err = second.execute("COMMIT").await.unwrap_err();
    assert_eq!(err.sqlstate(), "23505", "{err}");
    assert_eq!(err.detail(), Some("Key (u)=(10) already exists."));
    assert_eq!(
        common::rows(&mut first, "SELECT id, u FROM t").await,
        vec![vec![Some("1".to_string()), Some("10".to_string())]]
    );
    // A concurrent move of a value off a row frees it only once committed.
    for session in [&mut first, &mut second] {
        session.execute("BEGIN").await.unwrap();
    }
    first
        .execute("UPDATE t SET u = 11 WHERE id = 1")
        .await
        .unwrap();
    let err = second
        .execute("INSERT INTO t VALUES (3, 10)")
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "23505");
    first.execute("COMMIT").await.unwrap();
    second.execute("ROLLBACK").await.unwrap();
    second
        .execute("INSERT INTO t VALUES (3, 10)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_create_unique_index_are_checked_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE t (id bigint PRIMARY KEY, u bigint)")
        .await
        .unwrap();
    session
        .execute("INSERT INTO t SELECT i, i + 0 FROM generate_series(1, 60000) AS s(i)")
        .await
        .unwrap();
    db.storage().flush().unwrap();
    let mut writer = db.session();
    let writes = tokio::spawn(async move {
        // New values (kept), and values rows already hold (refused once the
        // index checks them; if one lands before, the CREATE must fail).
        let mut outcomes = Vec::new();
        for i in 0..300i64 {
            let sql = match i % 3 {
                0 => format!("INSERT INTO t VALUES ({}, {})", 100_000 + i, 100_000 + i),
                1 => format!("UPDATE t SET u = {} WHERE id = {}", 200_000 + i, i + 1),
                _ => format!("INSERT INTO t VALUES ({}, {})", 300_000 + i, i * 7 + 1),
            };
            outcomes.push((sql.clone(), writer.execute(&sql).await.map(|_| ())));
        }
        outcomes
    });
    let created = session.execute("CREATE UNIQUE INDEX t_u ON t (u)").await;
    let outcomes = writes.await.unwrap();
    for (sql, outcome) in &outcomes {
        if let Err(e) = outcome {
            // A write in flight when the index is published is refused as
            // a serialization failure: it did not keep the new entries.
            assert!(["23505", "40001"].contains(&e.sqlstate()), "{sql}: {e}");
        }
    }
    // Every write reported done is there.
    for (i, (_, outcome)) in outcomes.iter().enumerate() {
        let i = i as i64;
        let (id, u) = match i % 3 {
            0 => (100_000 + i, 100_000 + i),
            1 => (i + 1, 200_000 + i),
            _ => (300_000 + i, i * 7 + 1),
        };
        let found = common::rows(
            &mut session,
            &format!("SELECT count(*) FROM t WHERE id = {id} AND u = {u}"),
        )
        .await;
        let want = if outcome.is_ok() { "1" } else { "0" };
        assert_eq!(found, vec![vec![Some(want.to_string())]], "write {i}");
    }
    let duplicated = common::rows(
        &mut session,
        "SELECT count(*) FROM (SELECT u FROM t WHERE u IS NOT NULL GROUP BY u HAVING count(*) > 1) d",
    )
    .await;
    match created {
        Ok(_) => {
            assert_eq!(duplicated, vec![vec![Some("0".to_string())]]);
            // The index holds from now on.
            let err = session
                .execute("INSERT INTO t VALUES (999999, 5)")
                .await
                .unwrap_err();
            assert_eq!(err.sqlstate(), "23505");
        }
        Err(e) => {
            // Only a duplicate that landed before the index checked writes.
            assert_eq!(e.sqlstate(), "23505", "{e}");
            assert_ne!(duplicated, vec![vec![Some("0".to_string())]]);
            let indexes = common::rows(
                &mut session,
                "SELECT count(*) FROM pg_indexes WHERE indexname = 't_u'",
            )
            .await;
            assert_eq!(indexes, vec![vec![Some("0".to_string())]]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_into_a_table_with_a_unique_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE t (id int, u int)")
        .await
        .unwrap();
    session
        .execute("CREATE UNIQUE INDEX ON t (u)")
        .await
        .unwrap();
    let err = db
        .storage()
        .bulk_load("t")
        .err()
        .expect("a bulk load is refused");
    assert!(err.to_string().contains("unique index"), "{err}");
}
