//! Statements too complex to run give 54001 (statement_too_complex) and
//! leave the session working, whatever the recursion happens in: parsing,
//! rewriting, planning or dropping the syntax tree. Refused statements run
//! on a thread with a 2 MiB stack: they must be refused before anything
//! recurses. Statements just inside the limit run on a thread with the stack
//! the server gives its statement threads.

mod common;

/// Runs `sql` then `SELECT 1` in one session on a 2 MiB-stack thread; the
/// SQLSTATE of the first (or "ok") and whether the session still answers.
fn run_on_small_stack(sql: String) -> (String, bool) {
    run_with_stack(sql, 2 << 20)
}

fn run_with_stack(sql: String, stack: usize) -> (String, bool) {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (_dir, mut session) = common::temp_session();
                session
                    .execute("CREATE TABLE t (a bigint PRIMARY KEY, b bigint)")
                    .await
                    .unwrap();
                let outcome = match session.execute(&sql).await {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.sqlstate().to_owned(),
                };
                let alive = session.query("SELECT 1").await.is_ok();
                (outcome, alive)
            })
        })
        .unwrap()
        .join()
        .expect("the statement overflowed the stack or panicked")
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

#[test]
fn a_long_sum_answers_or_is_refused_as_too_complex() {
    let (outcome, alive) = run_on_small_stack(format!("SELECT {}", chain("1", "+", 2000)));
    assert!(outcome == "ok" || outcome == "54001", "{outcome}");
    assert!(alive);
}

#[test]
fn a_where_clause_of_200000_ands_is_too_complex() {
    let sql = format!("SELECT * FROM t WHERE {}", chain("a = 1", " AND ", 200_000));
    assert_eq!(run_on_small_stack(sql), ("54001".to_owned(), true));
}

#[test]
fn a_long_or_chain_in_a_primary_key_update_is_too_complex() {
    let sql = format!(
        "UPDATE t SET b = 1 WHERE {}",
        chain("a = 1", " OR ", 100_000)
    );
    assert_eq!(run_on_small_stack(sql), ("54001".to_owned(), true));
}

#[test]
fn deep_parentheses_are_too_complex() {
    let sql = format!("SELECT {}1{}", "(".repeat(20_000), ")".repeat(20_000));
    assert_eq!(run_on_small_stack(sql), ("54001".to_owned(), true));
}

#[test]
fn deeply_nested_subqueries_are_too_complex() {
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(5_000), ")".repeat(5_000));
    assert_eq!(run_on_small_stack(sql), ("54001".to_owned(), true));
}

#[test]
fn an_ordinary_statement_is_not_refused() {
    let sql = format!("SELECT * FROM t WHERE {}", chain("a = 1", " OR ", 50));
    assert_eq!(run_on_small_stack(sql), ("ok".to_owned(), true));
}

#[test]
fn a_chain_just_inside_the_limit_runs_on_a_statement_thread() {
    let sql = format!("SELECT * FROM t WHERE {}", chain("a = 1", " OR ", 330));
    let stack = basalt::server::STATEMENT_STACK_BYTES;
    assert_eq!(run_with_stack(sql, stack), ("ok".to_owned(), true));
    let sum = format!("SELECT {}", chain("1", "+", 990));
    assert_eq!(run_with_stack(sum, stack), ("ok".to_owned(), true));
}

/// A transaction's buffered writes are bounded: past the bound the
/// statement fails with 53200 at once instead of growing until its
/// commit fails, nothing it wrote is applied, and the session goes on.
#[tokio::test]
async fn a_transaction_past_its_write_bound_fails_with_53200_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = basalt::storage::Options {
        max_transaction_bytes: 1 << 20,
        ..Default::default()
    };
    let db = basalt::Database::open_with(dir.path().join("db"), options).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE t (a bigint PRIMARY KEY, b text)")
        .await
        .unwrap();
    let big = "INSERT INTO t SELECT v, repeat('x', 100) FROM generate_series(1, 100000) AS s(v)";
    let err = session.execute(big).await.unwrap_err();
    assert_eq!(err.sqlstate(), "53200", "{err}");

    // In a block, each statement counts against the block's bound, and
    // the failed block commits nothing.
    session.execute("BEGIN").await.unwrap();
    let small = "INSERT INTO t SELECT v, repeat('x', 100) FROM generate_series(1, 2000) AS s(v)";
    session.execute(small).await.unwrap();
    let more = "INSERT INTO t SELECT v, repeat('y', 100) FROM generate_series(2001, 30000) AS s(v)";
    let err = session.execute(more).await.unwrap_err();
    assert_eq!(err.sqlstate(), "53200", "{err}");
    let err = session.execute("COMMIT").await;
    assert!(err.is_ok(), "COMMIT of a failed block rolls back: {err:?}");
    assert_eq!(
        common::rows(&mut session, "SELECT count(*) FROM t").await,
        vec![vec![Some("0".to_string())]]
    );
    session.execute(small).await.unwrap();
    assert_eq!(
        common::rows(&mut session, "SELECT count(*) FROM t").await,
        vec![vec![Some("2000".to_string())]]
    );
}
