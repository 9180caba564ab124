//! Hash joins push their build side's keys down into the storage scan of
//! the probe side at run time (DataFusion's dynamic filters): the scan drops
//! rows no build key matches, and the answer is unchanged.

mod common;

use common::rows;

use basalt::Database;

#[tokio::test]
async fn probe_scan_drops_rows_the_join_cannot_match() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let mut session = db.session();
    load(&mut session).await;
    let plan = answer_and_plan(&mut session).await;
    assert!(plan.contains("mode=CollectLeft"), "{plan}");
}

/// A join built per partition pushes a filter that routes each probe row
/// to its partition's build side (`CASE hash % n WHEN ...`), which the scan
/// evaluates itself.
#[tokio::test]
async fn probe_scan_drops_rows_a_partitioned_join_cannot_match() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let mut session = db.session();
    load(&mut session).await;
    for sql in [
        "SET datafusion.execution.target_partitions = 3",
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
    ] {
        rows(&mut session, sql).await;
    }
    let plan = answer_and_plan(&mut session).await;
    assert!(plan.contains("mode=Partitioned"), "{plan}");
}

async fn load(session: &mut basalt::Session) {
    for sql in [
        "CREATE TABLE big (id bigint PRIMARY KEY, k bigint, v bigint)",
        "CREATE TABLE small (k bigint PRIMARY KEY, tag text)",
        "INSERT INTO big SELECT value, value % 1000, value * 2 FROM generate_series(1, 200000)",
        "INSERT INTO small SELECT value, CASE WHEN value % 100 = 7 THEN 'x' ELSE 'y' END \
         FROM generate_series(0, 999)",
    ] {
        rows(session, sql).await;
    }
}

/// Checks the join's answer and that the scan of `big` dropped rows;
/// returns the EXPLAIN ANALYZE text.
async fn answer_and_plan(session: &mut basalt::Session) -> String {
    let query = "SELECT count(*), sum(b.v) FROM small s JOIN big b ON b.k = s.k WHERE s.tag = 'x'";
    // Keys 7, 107, ..., 907 each match the 200 rows with id = key (mod 1000).
    let expected_count = 10 * 200;
    let expected_sum: i64 = (1..=200_000i64)
        .filter(|id| id % 100 == 7)
        .map(|id| id * 2)
        .sum();
    let answer = rows(session, query).await;
    assert_eq!(
        answer,
        vec![vec![
            Some(expected_count.to_string()),
            Some(expected_sum.to_string())
        ]]
    );

    let plan: Vec<String> = rows(session, &format!("EXPLAIN ANALYZE {query}"))
        .await
        .into_iter()
        .filter_map(|r| r[1].clone())
        .collect();
    let plan = plan.join("\n");
    let big_scan = plan
        .lines()
        .find(|l| l.contains("StorageScanExec: table=big"))
        .unwrap_or_else(|| panic!("no scan of big in\n{plan}"));
    let removed = big_scan
        .split("rows_removed_by_dynamic_filters=")
        .nth(1)
        .and_then(|rest| rest.split([',', ']']).next())
        .unwrap_or_else(|| panic!("no dynamic-filter metric in {big_scan}"));
    assert_ne!(removed.trim(), "0", "{big_scan}");
    plan
}
