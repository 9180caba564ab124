//! An aggregate a query computes twice, such as a CTE read in two places,
//! runs once and both readers get its rows.

mod common;

use common::{plan_text, rows, temp_session};

const TOTALS: &str =
    "WITH totals AS (SELECT region, sum(amount) AS total FROM sales GROUP BY region) ";

async fn sales() -> (tempfile::TempDir, basalt::Session) {
    let (dir, mut session) = temp_session();
    for sql in [
        "CREATE TABLE sales (id bigint PRIMARY KEY, region int, amount bigint)",
        "INSERT INTO sales SELECT value, value % 4, value * 1 FROM generate_series(1, 1000)",
    ] {
        rows(&mut session, sql).await;
    }
    (dir, session)
}

/// Region r's total: the ids 1..=1000 that are r modulo 4, summed.
fn total(region: i64) -> i64 {
    (1..=1000i64).filter(|id| id % 4 == region).sum()
}

async fn plan(session: &mut basalt::Session, query: &str) -> String {
    plan_text(session, &format!("EXPLAIN {query}")).await
}

#[tokio::test]
async fn a_cte_read_twice_is_aggregated_once() {
    let (_dir, mut session) = sales().await;
    let query = format!(
        "{TOTALS}SELECT region, total FROM totals WHERE total = (SELECT max(total) FROM totals)"
    );
    let top = (0..4).max_by_key(|&r| total(r)).unwrap();
    assert_eq!(
        rows(&mut session, &query).await,
        vec![vec![Some(top.to_string()), Some(total(top).to_string())]]
    );
    let plan = plan(&mut session, &query).await;
    assert_eq!(plan.matches("SharedExec").count(), 2, "{plan}");
}

/// A join above one reader pushes a filter on `region` down at run time;
/// the other reader (the maximum) sees every region. (That the shared node
/// refuses filters from above is checked directly by its unit test; here
/// the answer is.)
#[tokio::test]
async fn both_readers_of_a_cte_joined_on_one_side_get_every_row() {
    let (_dir, mut session) = sales().await;
    let query = format!(
        "{TOTALS}SELECT t.region, t.total, (SELECT max(total) FROM totals) AS top \
         FROM sales s JOIN totals t ON t.region = s.region WHERE s.id <= 2 ORDER BY 1"
    );
    let top = (0..4).map(total).max().unwrap();
    let expected: Vec<Vec<Option<String>>> = [1, 2]
        .into_iter()
        .map(|r: i64| {
            vec![
                Some(r.to_string()),
                Some(total(r).to_string()),
                Some(top.to_string()),
            ]
        })
        .collect();
    assert_eq!(rows(&mut session, &query).await, expected);
    let plan = plan(&mut session, &query).await;
    assert_eq!(plan.matches("SharedExec").count(), 2, "{plan}");
}

#[tokio::test]
async fn an_aggregate_of_something_volatile_is_computed_per_reader() {
    let (_dir, mut session) = sales().await;
    let query = "WITH noisy AS (SELECT region, sum(amount * random()) AS total FROM sales GROUP BY region) \
                 SELECT count(*) FROM noisy WHERE total <= (SELECT max(total) FROM noisy)";
    let plan = plan(&mut session, query).await;
    assert!(!plan.contains("SharedExec"), "{plan}");
}

/// Aggregates over rows a scan of storage does not produce (here VALUES
/// lists, whose plan text does not show the values) are never shared.
#[tokio::test]
async fn aggregates_of_different_values_lists_stay_apart() {
    let (_dir, mut session) = sales().await;
    let query = "WITH a AS (SELECT x % 10 AS g, sum(x) AS s FROM (VALUES (1), (2), (12)) t(x) GROUP BY x % 10), \
                 b AS (SELECT x % 10 AS g, sum(x) AS s FROM (VALUES (3), (4), (14)) t(x) GROUP BY x % 10) \
                 SELECT (SELECT sum(s) FROM a), (SELECT sum(s) FROM b)";
    assert_eq!(
        rows(&mut session, query).await,
        vec![vec![Some("15".to_string()), Some("21".to_string())]]
    );
}

/// Two aggregates filtered by different scalar subqueries look alike in the
/// plan until the subqueries have run; they are not shared.
#[tokio::test]
async fn aggregates_filtered_by_different_subqueries_stay_apart() {
    let (_dir, mut session) = sales().await;
    let query = "SELECT \
                 (SELECT sum(s) FROM (SELECT region, sum(amount) AS s FROM sales \
                   WHERE amount > (SELECT min(id) FROM sales) GROUP BY region) x), \
                 (SELECT sum(s) FROM (SELECT region, sum(amount) AS s FROM sales \
                   WHERE amount > (SELECT max(id) - 2 FROM sales) GROUP BY region) y)";
    let above = |floor: i64| -> i64 { (floor + 1..=1000).sum() };
    assert_eq!(
        rows(&mut session, query).await,
        vec![vec![
            Some(above(1).to_string()),
            Some(above(998).to_string())
        ]]
    );
}
