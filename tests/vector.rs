//! Vector search through SQL over segments: HNSW answers against brute
//! force on random data, filters that few rows pass, updates and deletes,
//! reopen and compaction, and vectors loaded by COPY from CSV and Parquet.

mod common;

use common::rows;

use basalt::storage::Options;
use basalt::{Database, Session};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DIMS: usize = 16;
const ROWS: usize = 6000;

async fn ids(session: &mut Session, sql: &str) -> Vec<i64> {
    rows(session, sql)
        .await
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

async fn plan(session: &mut Session, sql: &str) -> String {
    let lines = rows(session, &format!("EXPLAIN ANALYZE {sql}")).await;
    lines
        .into_iter()
        .map(|r| r[1].clone().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn text(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Clustered points, as real embeddings are: 20 centres, spread around them.
fn dataset(rng: &mut SmallRng) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..DIMS).map(|_| rng.gen_range(-10.0..10.0)).collect())
        .collect();
    (0..ROWS)
        .map(|i| {
            centres[i % 20]
                .iter()
                .map(|c| c + rng.gen_range(-1.5..1.5))
                .collect()
        })
        .collect()
}

fn brute_force(data: &[(i64, Vec<f32>)], q: &[f32], k: usize) -> Vec<i64> {
    let mut ranked: Vec<(f32, i64)> = data.iter().map(|(id, v)| (l2(v, q), *id)).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    ranked.into_iter().take(k).map(|r| r.1).collect()
}

fn options() -> Options {
    Options {
        // Several segments, so results merge across graphs.
        segment_max_rows: 2500,
        ..Options::default()
    }
}

async fn insert(session: &mut Session, rows: &[(i64, Vec<f32>)]) {
    for chunk in rows.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(id, v)| format!("({id}, '{}', {})", text(v), id % 500))
            .collect();
        session
            .execute(&format!("INSERT INTO items VALUES {}", values.join(",")))
            .await
            .unwrap();
    }
}

async fn recall(session: &mut Session, data: &[(i64, Vec<f32>)], rng: &mut SmallRng) -> f64 {
    let mut found = 0;
    for _ in 0..30 {
        let q = &data[rng.gen_range(0..data.len())].1;
        let q: Vec<f32> = q.iter().map(|x| x + rng.gen_range(-0.5..0.5)).collect();
        let sql = format!(
            "SELECT id FROM items ORDER BY v <-> '{}' LIMIT 10",
            text(&q)
        );
        let got = ids(session, &sql).await;
        assert_eq!(got.len(), 10);
        let truth = brute_force(data, &q, 10);
        found += got.iter().filter(|id| truth.contains(id)).count();
    }
    found as f64 / 300.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hnsw_answers_match_brute_force_through_flush_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let vectors = dataset(&mut rng);
    let mut data: Vec<(i64, Vec<f32>)> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v))
        .collect();

    let db = Database::open_with(dir.path(), options()).unwrap();
    let mut session = db.session();
    session
        .execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v vector({DIMS}), tag int)"
        ))
        .await
        .unwrap();
    insert(&mut session, &data[..ROWS / 2]).await;
    db.storage().flush().unwrap();
    // Built over the existing segment, then at each later flush.
    session
        .execute("CREATE INDEX ON items USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64)")
        .await
        .unwrap();
    insert(&mut session, &data[ROWS / 2..]).await;
    db.storage().flush().unwrap();
    session.execute("SET hnsw.ef_search = 64").await.unwrap();

    let r = recall(&mut session, &data, &mut rng).await;
    assert!(r >= 0.95, "recall@10 {r}");
    let q = text(&data[0].1);
    let shown = plan(
        &mut session,
        &format!("SELECT id FROM items ORDER BY v <-> '{q}' LIMIT 10"),
    )
    .await;
    assert!(shown.contains("VectorSearchExec"), "{shown}");
    assert!(shown.contains("graph_segments=2"), "{shown}");

    // A filter 12 of 6000 rows pass: every one comes back, nearest first.
    let sql = format!("SELECT id FROM items WHERE tag = 7 ORDER BY v <-> '{q}' LIMIT 20");
    let got = ids(&mut session, &sql).await;
    let matching: Vec<(i64, Vec<f32>)> = data
        .iter()
        .filter(|(id, _)| id % 500 == 7)
        .cloned()
        .collect();
    assert_eq!(got, brute_force(&matching, &data[0].1, 20));
    assert_eq!(got.len(), 12);
    // A filter a fifth of the rows pass goes through the graph and still
    // returns k rows, all passing it.
    let sql = format!("SELECT id, tag FROM items WHERE tag < 100 ORDER BY v <-> '{q}' LIMIT 10");
    let got = rows(&mut session, &sql).await;
    assert_eq!(got.len(), 10);
    assert!(got
        .iter()
        .all(|r| r[1].as_deref().unwrap().parse::<i64>().unwrap() < 100));
    // The same filter as a pushed-down range and as an expression the
    // storage scan cannot answer give the same rows.
    let sql2 =
        format!("SELECT id, tag FROM items WHERE tag * 2 < 200 ORDER BY v <-> '{q}' LIMIT 10");
    assert_eq!(rows(&mut session, &sql2).await, got);

    // Superseded and deleted rows never appear: move the nearest rows far
    // away and delete the next ones.
    let nearest = brute_force(&data, &data[0].1, 10);
    for id in &nearest[..5] {
        let far = text(&[1000.0; DIMS]);
        session
            .execute(&format!("UPDATE items SET v = '{far}' WHERE id = {id}"))
            .await
            .unwrap();
        data.iter_mut().find(|(i, _)| i == id).unwrap().1 = vec![1000.0; DIMS];
    }
    let doomed: Vec<String> = nearest[5..].iter().map(|id| id.to_string()).collect();
    session
        .execute(&format!(
            "DELETE FROM items WHERE id IN ({})",
            doomed.join(",")
        ))
        .await
        .unwrap();
    data.retain(|(id, _)| !nearest[5..].contains(id));
    let check = |got: &[i64]| {
        for id in &nearest {
            assert!(
                !got.contains(id),
                "{id} was updated away or deleted: {got:?}"
            );
        }
    };
    let sql = format!("SELECT id FROM items ORDER BY v <-> '{q}' LIMIT 10");
    check(&ids(&mut session, &sql).await);
    db.storage().flush().unwrap();
    check(&ids(&mut session, &sql).await);
    db.storage().compact().unwrap();
    let after_compaction = ids(&mut session, &sql).await;
    check(&after_compaction);
    let shown = plan(&mut session, &sql).await;
    assert!(shown.contains("exact_segments=0"), "{shown}");
    drop(session);
    db.close().unwrap();

    // The index files survive a reopen.
    let db = Database::open_with(dir.path(), options()).unwrap();
    let mut session = db.session();
    session.execute("SET hnsw.ef_search = 64").await.unwrap();
    assert_eq!(ids(&mut session, &sql).await, after_compaction);
    let r = recall(&mut session, &data, &mut rng).await;
    assert!(r >= 0.95, "recall@10 after reopen {r}");
    let shown = plan(&mut session, &sql).await;
    assert!(
        shown.contains("exact_segments=0") && !shown.contains("graph_segments=0"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_load_from_csv_and_parquet_and_export_as_pgvector_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE src (id int PRIMARY KEY, v vector(3))")
        .await
        .unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "id,v\n1,\"[1,2,3]\"\n2,\"[0.5, -1, 1e3]\"\n3,\n").unwrap();
    session
        .execute(&format!(
            "COPY src FROM '{}' (FORMAT csv, HEADER)",
            csv.display()
        ))
        .await
        .unwrap();
    let expected = vec![
        vec![Some("1".into()), Some("[1,2,3]".into())],
        vec![Some("2".into()), Some("[0.5,-1,1000]".into())],
        vec![Some("3".into()), None],
    ];
    assert_eq!(
        rows(&mut session, "SELECT id, v FROM src ORDER BY id").await,
        expected
    );

    let parquet = dir.path().join("out.parquet");
    session
        .execute(&format!(
            "COPY src TO '{}' (FORMAT parquet)",
            parquet.display()
        ))
        .await
        .unwrap();
    session
        .execute("CREATE TABLE dst (id int PRIMARY KEY, v vector(3))")
        .await
        .unwrap();
    session
        .execute(&format!("COPY dst FROM '{}'", parquet.display()))
        .await
        .unwrap();
    assert_eq!(
        rows(&mut session, "SELECT id, v FROM dst ORDER BY id").await,
        expected
    );

    let text_out = dir.path().join("out.txt");
    session
        .execute(&format!("COPY dst TO '{}'", text_out.display()))
        .await
        .unwrap();
    let written = std::fs::read_to_string(&text_out).unwrap();
    assert_eq!(written, "1\t[1,2,3]\n2\t[0.5,-1,1000]\n3\t\\N\n");

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "4,\"[1,2]\"\n").unwrap();
    let err = session
        .execute(&format!("COPY dst FROM '{}' (FORMAT csv)", bad.display()))
        .await
        .expect_err("a vector of the wrong size");
    assert_eq!(err.sqlstate(), "22000", "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");
    assert!(
        err.to_string().contains("expected 3 dimensions, not 2"),
        "{err}"
    );
}
