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

fn small_transactions() -> basalt::storage::Options {
    basalt::storage::Options {
        max_transaction_bytes: 4 << 20,
        ..Default::default()
    }
}

/// `rows` lines of COPY text (`id<TAB>payload`), from `first`.
fn copy_lines(first: u64, rows: u64) -> Vec<u8> {
    copy_ids(first..first + rows)
}

/// Streams `data` into `COPY table FROM STDIN` in 64 KiB messages.
async fn copy_in(session: &mut basalt::Session, table: &str, data: &[u8]) -> basalt::Result<u64> {
    session.execute(&format!("COPY {table} FROM STDIN")).await?;
    for chunk in data.chunks(64 << 10) {
        session.copy_data(chunk).await?;
    }
    session.copy_done().await
}

async fn count(session: &mut basalt::Session, table: &str) -> String {
    let rows = common::rows(session, &format!("SELECT count(*) FROM {table}")).await;
    rows[0][0].clone().unwrap_or_default()
}

/// A COPY larger than a transaction may hold succeeds when it can go to
/// the bulk path (its own transaction, no defaults to fill): rows stream
/// into segments, appear all at once, and survive a reopen, with or
/// without a primary key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_past_the_transaction_bound_streams_into_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rows = 200_000u64; // about 10 MB of text, 2.5 times the bound
    let data = copy_lines(1, rows);
    {
        let db = basalt::Database::open_with(&path, small_transactions()).unwrap();
        let mut session = db.session();
        let mut watcher = db.session();
        session
            .execute("CREATE TABLE events (id bigint NOT NULL, payload text)")
            .await
            .unwrap();
        session
            .execute("CREATE TABLE keyed (id bigint PRIMARY KEY, payload text)")
            .await
            .unwrap();

        session.execute("COPY events FROM STDIN").await.unwrap();
        let (head, tail) = data.split_at(data.len() - 1000);
        for chunk in head.chunks(64 << 10) {
            session.copy_data(chunk).await.unwrap();
        }
        assert_eq!(
            count(&mut watcher, "events").await,
            "0",
            "visible before the end"
        );
        session.copy_data(tail).await.unwrap();
        assert_eq!(session.copy_done().await.unwrap(), rows);
        assert_eq!(count(&mut watcher, "events").await, rows.to_string());

        assert_eq!(copy_in(&mut session, "keyed", &data).await.unwrap(), rows);
        assert_eq!(count(&mut session, "keyed").await, rows.to_string());

        // A small COPY into the keyless table still goes through INSERT.
        assert_eq!(
            copy_in(&mut session, "events", &copy_lines(1, 10))
                .await
                .unwrap(),
            10
        );
    }
    let db = basalt::Database::open_with(&path, small_transactions()).unwrap();
    let mut session = db.session();
    assert_eq!(count(&mut session, "events").await, (rows + 10).to_string());
    assert_eq!(count(&mut session, "keyed").await, rows.to_string());
    let sum = common::rows(&mut session, "SELECT sum(id) FROM events").await;
    let want = rows * (rows + 1) / 2 + 55;
    assert_eq!(sum[0][0].as_deref(), Some(want.to_string().as_str()));
}

/// A bulk COPY that fails part way (a NULL for a NOT NULL column after the
/// switch to segments) applies nothing and leaves no segment behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bulk_copy_applies_nothing_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = basalt::Database::open_with(&path, small_transactions()).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE events (id bigint NOT NULL, payload text)")
        .await
        .unwrap();
    let files = |dir: &std::path::Path| walk(dir).len();
    let before = files(&path);
    let mut data = copy_lines(1, 200_000);
    data.extend_from_slice(b"\\N\tlast\n");
    let err = copy_in(&mut session, "events", &data).await.unwrap_err();
    assert_eq!(err.sqlstate(), "23502", "{err}");
    assert_eq!(count(&mut session, "events").await, "0");
    assert_eq!(files(&path), before, "{:?}", walk(&path));
}

/// Bounds small enough that a COPY of 200,000 rows goes to the bulk path
/// and is written as several runs.
fn small_transactions_and_runs() -> basalt::storage::Options {
    basalt::storage::Options {
        segment_max_rows: 30_000,
        ..small_transactions()
    }
}

/// COPY text (`id<TAB>payload`) for the given ids, in the given order.
fn copy_ids(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut data = Vec::new();
    for id in ids {
        data.extend_from_slice(format!("{id}\t{}\n", "p".repeat(40)).as_bytes());
    }
    data
}

/// 1..=n in a scattered order, so that every run's key range overlaps
/// every other's.
fn scattered(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |i| (i * 7919) % n + 1)
}

/// A bulk COPY into a keyed table is an insert, as the small COPY's
/// INSERT path is: a key given twice (in one run or in two) or one the
/// table holds fails it with 23505 naming the key, applies nothing and
/// leaves no file behind. A key deleted before the COPY is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_copy_into_a_keyed_table_refuses_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = basalt::Database::open_with(&path, small_transactions_and_runs()).unwrap();
    let mut session = db.session();
    session
        .execute("CREATE TABLE k (id bigint PRIMARY KEY, payload text)")
        .await
        .unwrap();
    session
        .execute("INSERT INTO k VALUES (250000, 'held'), (260000, 'deleted')")
        .await
        .unwrap();
    session
        .execute("DELETE FROM k WHERE id = 260000")
        .await
        .unwrap();
    let files_before = walk(&path).len();
    let n = 200_000;
    let next_to_each_other = copy_ids((1..=7).chain(7..=n));
    let far_apart = copy_ids((1..=n).chain([n + 1, 5]));
    let held = copy_ids(scattered(n).chain([250_000]));
    for (data, key) in [(next_to_each_other, 7), (far_apart, 5), (held, 250_000)] {
        let err = copy_in(&mut session, "k", &data).await.unwrap_err();
        assert_eq!(err.sqlstate(), "23505", "{err}");
        assert_eq!(
            err.detail(),
            Some(format!("Key (id)=({key}) already exists.").as_str())
        );
        assert_eq!(count(&mut session, "k").await, "1");
        assert_eq!(walk(&path).len(), files_before, "{:?}", walk(&path));
    }
    let fine = copy_ids(scattered(n).chain([260_000]));
    assert_eq!(copy_in(&mut session, "k", &fine).await.unwrap(), n + 1);
    assert_eq!(count(&mut session, "k").await, (n + 2).to_string());
    let sum = common::rows(&mut session, "SELECT sum(id) FROM k").await;
    let want = n * (n + 1) / 2 + 250_000 + 260_000;
    assert_eq!(sum[0][0].as_deref(), Some(want.to_string().as_str()));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if !path.extension().is_some_and(|e| e == "log" || e == "wal") {
            out.push(path);
        }
    }
    out
}
