//! A client never escapes its box: every way a statement could reach a
//! server file, tried over the wire with a real driver, asserting that the
//! file was neither written nor read.

mod wire_support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use basalt::server::{Config, Server};
use wire_support::{code, TestServer};

/// A FIFO no one has open. If the server ever opened it for reading, the
/// open would block until a writer came: the statement would hang, and
/// `still_unopened` would find a reader.
fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

/// Whether nobody holds the FIFO open for reading: a non-blocking open for
/// writing fails with ENXIO exactly then.
fn still_unopened(fifo: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(fifo)
    {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(6), // ENXIO
    }
}

/// Linux's `O_NONBLOCK`.
const O_NONBLOCK: i32 = 0o4000;

struct Dirs {
    _tmp: tempfile::TempDir,
    allowed: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.csv"), "42\n").unwrap();
    std::fs::write(allowed.join("in.csv"), "1\n2\n").unwrap();
    Dirs {
        allowed: allowed.canonicalize().unwrap(),
        outside: outside.canonicalize().unwrap(),
        _tmp: tmp,
    }
}

async fn server(allow: Option<&Path>) -> TestServer {
    TestServer::start_with(Config {
        allow_files: allow.map(Path::to_path_buf),
        ..Config::default()
    })
    .await
}

/// Runs `sql`, which must fail with `expected`, within a few seconds.
async fn refused(client: &tokio_postgres::Client, sql: &str, expected: &str) {
    let outcome = tokio::time::timeout(Duration::from_secs(20), client.batch_execute(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: no answer (did it open a FIFO?)"));
    let err = outcome.expect_err(sql);
    assert_eq!(code(&err), expected, "{sql}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datafusion_copy_and_external_tables_never_touch_files() {
    let d = dirs();
    for allow in [None, Some(d.allowed.as_path())] {
        let server = server(allow).await;
        let client = server.connect().await;
        for (i, target) in [d.outside.join("x.csv"), d.allowed.join("x.csv")]
            .iter()
            .enumerate()
        {
            let target = target.display();
            for sql in [
                format!("EXPLAIN ANALYZE COPY (SELECT 'x') TO '{target}'"),
                format!("EXPLAIN COPY (SELECT 'x') TO '{target}' STORED AS CSV"),
                format!("EXPLAIN VERBOSE COPY (VALUES (1)) TO '{target}'"),
            ] {
                let err = client.batch_execute(&sql).await.expect_err(&sql);
                assert!(
                    code(&err).starts_with("42") || code(&err) == "0A000",
                    "{sql}: {err}"
                );
            }
            assert!(!Path::new(&target.to_string()).exists(), "case {i}");
        }
        let fifo = d.outside.join(format!("pipe-{}.csv", allow.is_some()));
        make_fifo(&fifo);
        for sql in [
            format!(
                "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{}'",
                fifo.display()
            ),
            format!(
                "EXPLAIN CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{}'",
                fifo.display()
            ),
        ] {
            refused(&client, &sql, "0A000").await;
        }
        assert!(still_unopened(&fifo));
        // Basalt's own COPY to the FIFO: refused without --allow-files,
        // and refused as outside the allowed directory with it.
        client
            .batch_execute("CREATE TABLE t (v int)")
            .await
            .unwrap();
        refused(
            &client,
            &format!("COPY t FROM '{}'", fifo.display()),
            "42501",
        )
        .await;
        refused(
            &client,
            &format!("SELECT * FROM read_csv('{}')", fifo.display()),
            "42501",
        )
        .await;
        assert!(still_unopened(&fifo));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_inside_the_allowed_directory_do_not_lead_out() {
    let d = dirs();
    let secret = d.outside.join("secret.csv");
    symlink(&secret, d.allowed.join("a[1].csv")).unwrap();
    symlink(&secret, d.allowed.join("plain.csv")).unwrap();
    symlink(&d.outside, d.allowed.join("out")).unwrap();
    let written = d.outside.join("written.csv");
    symlink(&written, d.allowed.join("dangling.csv")).unwrap();
    let fifo = d.allowed.join("pipe.csv");
    make_fifo(&fifo);

    let server = server(Some(&d.allowed)).await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    for name in [
        "a[1].csv",
        "a*.csv",
        "plain.csv",
        "out/secret.csv",
        "out/*.csv",
        "../outside/secret.csv",
        "pipe.csv",
    ] {
        refused(&client, &format!("COPY t FROM '{name}'"), "42501").await;
        refused(
            &client,
            &format!("SELECT * FROM read_csv('{name}', false)"),
            "42501",
        )
        .await;
    }
    let secret_name = secret.display().to_string();
    refused(&client, &format!("COPY t FROM '{secret_name}'"), "42501").await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "no row of the secret file was loaded");
    assert!(still_unopened(&fifo));

    for name in ["dangling.csv", "out/written.csv", "../outside/written.csv"] {
        refused(&client, &format!("COPY t TO '{name}'"), "42501").await;
    }
    assert!(!written.exists());

    // What is inside still works.
    client.batch_execute("COPY t FROM 'in.csv'").await.unwrap();
    client.batch_execute("COPY t TO 'sub.csv'").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(d.allowed.join("sub.csv")).unwrap(),
        "1\n2\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_directory_holding_the_data_directory_is_refused() {
    let d = dirs();
    let data = d.allowed.join("data");
    let db = basalt::Database::open(&data).unwrap();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        allow_files: Some(d.allowed.clone()),
        ..Config::default()
    };
    let err = Server::bind(db, &config).await.err().expect("refused");
    assert!(err.to_string().contains("overlap"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_options_that_widen_reach_or_resources_cannot_be_set() {
    let d = dirs();
    let server = server(Some(&d.allowed)).await;
    let client = server.connect().await;
    for sql in [
        format!(
            "SET datafusion.runtime.temp_directory = '{}'",
            d.outside.display()
        ),
        "SET datafusion.runtime.memory_limit = '100G'".to_string(),
        format!(
            "SET datafusion.catalog.location = '{}'",
            d.outside.display()
        ),
        "SET datafusion.catalog.format = 'csv'".to_string(),
        "SET datafusion.sql_parser.map_string_types_to_utf8view = true".to_string(),
        "RESET datafusion.sql_parser.map_string_types_to_utf8view".to_string(),
        "SET datafusion.execution.parquet.pushdown_filters = true".to_string(),
    ] {
        refused(&client, &sql, "42501").await;
    }
    for sql in [
        "SET datafusion.execution.batch_size = 100000000",
        "SET datafusion.execution.target_partitions = 100000",
        "SET datafusion.execution.target_partitions = 0",
    ] {
        refused(&client, sql, "22023").await;
    }
    client
        .batch_execute(
            "SET datafusion.execution.batch_size = 1024; \
             SET datafusion.explain.physical_plan_only = true; \
             RESET datafusion.explain.physical_plan_only; \
             SET statement_timeout = '5s'; RESET statement_timeout; RESET ALL",
        )
        .await
        .unwrap();
    let row = client
        .query_one("SHOW datafusion.execution.batch_size", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("1024"));
    server.stop().await;
}
