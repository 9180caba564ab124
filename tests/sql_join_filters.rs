//! Hash joins push their build side's keys down into the storage scan of
//! the probe side at run time (DataFusion's dynamic filters): the scan drops
//! rows no build key matches, and the answer is unchanged.

mod common;

use common::{plan_text, rows, temp_session};

#[tokio::test]
async fn probe_scan_drops_rows_the_join_cannot_match() {
    let (_dir, mut session) = temp_session();
    load(&mut session).await;
    let plan = answer_and_plan(&mut session).await;
    assert!(plan.contains("mode=CollectLeft"), "{plan}");
    // The build side's keys are a bitmap the scan tests in place of the
    // join's hash table.
    assert!(plan.contains("BuildKeysExec: key=k@"), "{plan}");
    let big_scan = scan_of("big", &plan);
    assert_ne!(metric(big_scan, "rows_tested_by_build_keys"), "0", "{plan}");
}

/// A join built per partition pushes a filter that routes each probe row
/// to its partition's build side (`CASE hash % n WHEN ...`), which the scan
/// evaluates itself.
#[tokio::test]
async fn probe_scan_drops_rows_a_partitioned_join_cannot_match() {
    let (_dir, mut session) = temp_session();
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
    // Each partition's build keys join one bitmap, published once the
    // last partition's build side has ended.
    assert!(plan.contains("BuildKeysExec: key=k@"), "{plan}");
    let big_scan = scan_of("big", &plan);
    assert_ne!(metric(big_scan, "rows_tested_by_build_keys"), "0", "{plan}");
}

/// NULL keys match nothing, on either side, when the scan tests the build
/// side's keys as a bitmap.
#[tokio::test]
async fn null_keys_match_nothing_through_the_build_key_bitmap() {
    let (_dir, mut session) = temp_session();
    for sql in [
        "CREATE TABLE probe (id bigint PRIMARY KEY, k int)",
        "CREATE TABLE build (id bigint PRIMARY KEY, k int)",
        "INSERT INTO probe SELECT value, CASE WHEN value % 7 = 0 THEN NULL ELSE value % 5000 END \
         FROM generate_series(1, 100000)",
        "INSERT INTO build SELECT value, CASE WHEN value % 3 = 0 THEN NULL ELSE value * 2 - 400 END \
         FROM generate_series(1, 300)",
    ] {
        rows(&mut session, sql).await;
    }
    let probe_key = |id: i64| (id % 7 != 0).then_some(id % 5000);
    let build_keys: Vec<i64> = (1..=300i64)
        .filter(|id| id % 3 != 0)
        .map(|id| id * 2 - 400)
        .collect();
    let (mut count, mut checksum) = (0i64, 0i64);
    for id in 1..=100_000i64 {
        let Some(key) = probe_key(id) else { continue };
        let matches = build_keys.iter().filter(|&&b| b == key).count() as i64;
        count += matches;
        checksum += matches * id;
    }
    let query = "SELECT count(*), sum(p.id) FROM build b JOIN probe p ON p.k = b.k";
    let expected = vec![vec![Some(count.to_string()), Some(checksum.to_string())]];
    assert_eq!(rows(&mut session, query).await, expected);

    let plan = explain_analyze(&mut session, query).await;
    let probe_scan = scan_of("probe", &plan);
    assert_ne!(
        metric(probe_scan, "rows_tested_by_build_keys"),
        "0",
        "{plan}"
    );
    assert_ne!(
        metric(probe_scan, "rows_removed_by_dynamic_filters"),
        "0",
        "{plan}"
    );
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

    let plan = explain_analyze(session, query).await;
    let big_scan = scan_of("big", &plan);
    let removed = metric(big_scan, "rows_removed_by_dynamic_filters");
    assert_ne!(removed, "0", "{big_scan}");
    plan
}

/// A decorrelated scalar subquery joins on its grouping column and on its
/// aggregate result (TPC-H q02's shape). The join checks the aggregate
/// result in its filter, so the dynamic filter on the grouping column
/// reaches the subquery's own scan, and the answer is unchanged.
#[tokio::test]
async fn a_subquery_aggregate_reads_only_the_groups_the_outer_query_needs() {
    let (_dir, mut session) = temp_session();
    load_offers(&mut session).await;
    let query = "SELECT count(*), sum(p.id * 10 + o.supplier) FROM parts p, offers o \
                 WHERE p.id = o.part AND p.size = 7 \
                 AND o.cost = (SELECT min(o2.cost) FROM offers o2 WHERE o2.part = p.id)";
    assert_eq!(rows(&mut session, query).await, cheapest_offers());

    let plan = explain_analyze(&mut session, query).await;
    let join = plan
        .lines()
        .find(|l| l.contains("HashJoinExec") && l.contains("min(o2.cost)"))
        .unwrap_or_else(|| panic!("no join with the subquery in\n{plan}"));
    assert!(join.contains("filter="), "{join}");
    let scans: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("StorageScanExec: table=offers"))
        .collect();
    assert_eq!(scans.len(), 2, "{plan}");
    for scan in scans {
        assert_ne!(
            metric(scan, "rows_removed_by_dynamic_filters"),
            "0",
            "{plan}"
        );
    }
}

/// When the aggregate also groups by a column the join does not use, one
/// probe row per key is not assured, and both keys stay hash keys.
#[tokio::test]
async fn an_aggregate_grouped_beyond_the_join_keys_keeps_both_keys() {
    let (_dir, mut session) = temp_session();
    load_offers(&mut session).await;
    let query = "SELECT count(*), sum(p.id * 10 + o.supplier) FROM parts p \
                 JOIN offers o ON p.id = o.part \
                 JOIN (SELECT part, supplier, min(cost) AS cost FROM offers GROUP BY part, supplier) m \
                 ON m.part = p.id AND m.cost = o.cost \
                 WHERE p.size = 7";
    // Each offer meets every offer of its part with the same cost.
    let (mut count, mut checksum) = (0i64, 0i64);
    for (part, costs) in size_7_offer_costs() {
        for (supplier, cost) in costs.iter().enumerate() {
            let meets = costs.iter().filter(|other| *other == cost).count() as i64;
            count += meets;
            checksum += meets * (part * 10 + supplier as i64);
        }
    }
    let expected = vec![vec![Some(count.to_string()), Some(checksum.to_string())]];
    assert_eq!(rows(&mut session, query).await, expected);

    let plan = explain_analyze(&mut session, query).await;
    let join = plan
        .lines()
        .find(|l| l.contains("HashJoinExec") && l.contains("cost@"))
        .unwrap_or_else(|| panic!("no join on cost in\n{plan}"));
    assert!(!join.contains("filter="), "{join}");
}

async fn load_offers(session: &mut basalt::Session) {
    for sql in [
        "CREATE TABLE parts (id bigint PRIMARY KEY, size int)",
        "CREATE TABLE offers (part bigint, supplier bigint, cost bigint, \
         PRIMARY KEY (part, supplier))",
        "INSERT INTO parts SELECT value, value % 50 FROM generate_series(1, 20000)",
        "INSERT INTO offers SELECT value / 3 + 1, value % 3, (value * 7919) % 101 \
         FROM generate_series(0, 59999)",
    ] {
        rows(session, sql).await;
    }
}

/// Count and checksum of the offers of parts of size 7 that cost their
/// part's least.
fn cheapest_offers() -> Vec<Vec<Option<String>>> {
    let (mut count, mut checksum) = (0i64, 0i64);
    for (part, costs) in size_7_offer_costs() {
        let least = costs.iter().copied().min().unwrap_or_default();
        for (supplier, cost) in costs.into_iter().enumerate() {
            if cost == least {
                count += 1;
                checksum += part * 10 + supplier as i64;
            }
        }
    }
    vec![vec![Some(count.to_string()), Some(checksum.to_string())]]
}

/// Each part of size 7 with its offers' costs, by supplier, as
/// `load_offers` writes them.
fn size_7_offer_costs() -> impl Iterator<Item = (i64, Vec<i64>)> {
    (1..=20_000i64).filter(|part| part % 50 == 7).map(|part| {
        let costs = (0..3)
            .map(|supplier| (((part - 1) * 3 + supplier) * 7919) % 101)
            .collect();
        (part, costs)
    })
}

async fn explain_analyze(session: &mut basalt::Session, query: &str) -> String {
    plan_text(session, &format!("EXPLAIN ANALYZE {query}")).await
}

fn scan_of<'a>(table: &str, plan: &'a str) -> &'a str {
    plan.lines()
        .find(|l| l.contains(&format!("StorageScanExec: table={table},")))
        .unwrap_or_else(|| panic!("no scan of {table} in\n{plan}"))
}

fn metric<'a>(node: &'a str, name: &str) -> &'a str {
    node.split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.split([',', ']']).next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} metric in {node}"))
}
