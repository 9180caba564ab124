//! The `basalt` command line, run as a process: `basalt serve` with psql
//! as the client, graceful shutdown, configuration errors and TLS.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use basalt::storage::{Db, Options};

fn basalt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
}

/// A running `basalt serve` and the port it printed.
struct Served {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

fn serve(data: &Path, extra: &[&str]) -> Served {
    let mut child = basalt()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // "basalt: serving DIR on 127.0.0.1:PORT; connect with: ..."
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Served {
        child,
        port,
        stdout,
    }
}

impl Drop for Served {
    /// A failed test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn psql(&self, args: &[&str]) -> Output {
        self.psql_conninfo(
            &format!(
                "host=127.0.0.1 port={} user=basalt dbname=basalt",
                self.port
            ),
            args,
        )
    }

    fn psql_conninfo(&self, conninfo: &str, args: &[&str]) -> Output {
        Command::new("psql")
            .arg("-X")
            .arg(conninfo)
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql is installed (.ci/run installs postgresql-client)")
    }

    /// SIGTERM, then the exit status and the rest of stdout.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
        (status, rest)
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn serve_answers_psql_and_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, &[]);
    let out = server.psql(&[
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "CREATE TABLE kept (id int PRIMARY KEY, note text)",
        "-c",
        "INSERT INTO kept VALUES (1, 'one'), (2, 'two')",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out), "CREATE TABLE\nINSERT 0 2\n");
    let (status, stdout) = server.terminate();
    assert!(status.success(), "{status:?} {stdout}");
    assert!(stdout.contains("shut down cleanly"), "{stdout}");

    // The rows are there after a restart.
    let server = serve(&data, &[]);
    let out = server.psql(&["-At", "-c", "SELECT id, note FROM kept ORDER BY id"]);
    assert_eq!(text(&out), "1|one\n2|two\n");
    server.terminate();
}

#[test]
fn psql_session_prints_like_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "\\set VERBOSITY verbose\n\
         CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(8,2));\n\
         INSERT INTO items VALUES (1, 'bolt', 0.25), (2, 'nut', 0.10);\n\
         SELECT * FROM items ORDER BY id;\n\
         \\x\n\
         SELECT name, price FROM items WHERE id = 2;\n\
         \\x\n\
         INSERT INTO items VALUES (1, 'dup', 1);\n\
         SELECT * FROM nowhere;\n\
         SELECT version() LIKE 'PostgreSQL 15%' AS pg15, current_database() AS db, current_schema() AS schema;\n",
    )
    .unwrap();
    let out = server.psql(&["-f", script.to_str().unwrap()]);
    let errors =
        String::from_utf8_lossy(&out.stderr).replace(&format!("{}:", script.display()), "script:");
    assert_eq!(
        errors,
        "psql:script:8: ERROR:  23505: duplicate key value violates unique constraint \"items_pkey\"
DETAIL:  Key (id)=(1) already exists.
psql:script:9: ERROR:  42P01: relation \"nowhere\" does not exist
"
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let expected = "CREATE TABLE
INSERT 0 2
 id | name | price 
----+------+-------
  1 | bolt |  0.25
  2 | nut  |  0.10
(2 rows)

Expanded display is on.
-[ RECORD 1 ]
name  | nut
price | 0.10

Expanded display is off.
 pg15 |   db   | schema 
------+--------+--------
 t    | basalt | public
(1 row)

";
    assert_eq!(printed, expected, "{printed}");
    server.terminate();
}

#[test]
fn psql_copy_round_trips_text_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let input = dir.path().join("in.tsv");
    // Tab, newline and backslash escapes, \N, arrays, bytea in hex, and
    // a value with the CSV delimiter and quote in it.
    std::fs::write(
        &input,
        "1\tplain\t2024-01-01 10:00:00\t{1,2}\t\\\\x0aff\t1.50\n\
         2\ttab\\there \"q\", comma\t\\N\t{}\t\\\\x\t\\N\n\
         3\tline\\nbreak \\\\ slash\t2000-02-29 00:00:01.5\t{NULL,3}\t\\N\t-0.01\n",
    )
    .unwrap();
    let csv = dir.path().join("out.csv");
    let again = dir.path().join("again.tsv");
    let script = format!(
        "CREATE TABLE t (id int PRIMARY KEY, s text, ts timestamp, a bigint[], b bytea, n numeric(6,2));\n\
         \\copy t from '{input}'\n\
         \\copy t to '{csv}' with (format csv, header)\n\
         CREATE TABLE u (id int PRIMARY KEY, s text, ts timestamp, a bigint[], b bytea, n numeric(6,2));\n\
         \\copy u from '{csv}' with (format csv, header)\n\
         \\copy (SELECT * FROM u ORDER BY id) to '{again}'\n\
         SELECT count(*) AS same FROM t JOIN u USING (id) WHERE t.s = u.s AND (t.ts IS NOT DISTINCT FROM u.ts) AND (t.b IS NOT DISTINCT FROM u.b);\n",
        input = input.display(),
        csv = csv.display(),
        again = again.display(),
    );
    let out = server.psql(&["-v", "ON_ERROR_STOP=1", "-f", &write_script(&dir, &script)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "CREATE TABLE\nCOPY 3\nCOPY 3\nCREATE TABLE\nCOPY 3\nCOPY 3\n same \n------\n    3\n(1 row)\n\n"
    );
    assert_eq!(
        std::fs::read_to_string(&again).unwrap(),
        std::fs::read_to_string(&input).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "id,s,ts,a,b,n\n\
         1,plain,2024-01-01 10:00:00,\"{1,2}\",\\x0aff,1.50\n\
         2,\"tab\there \"\"q\"\", comma\",,{},\\x,\n\
         3,\"line\nbreak \\ slash\",2000-02-29 00:00:01.5,\"{NULL,3}\",,-0.01\n"
    );
    // A bad value names its line and column, and the COPY leaves nothing.
    std::fs::write(&input, "10\tok\n11\tok\nx\tbad\n").unwrap();
    let out = server.psql(&[
        "-c",
        &format!("\\copy t (id, s) from '{}'", input.display()),
        "-c",
        "SELECT count(*) AS n FROM t",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR:  invalid input syntax for type integer: \"x\"\nDETAIL:  COPY t, line 3, column id: \"x\"\n"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\n 3\n"),
        "{}",
        text(&out)
    );
    server.terminate();
}

fn write_script(dir: &tempfile::TempDir, script: &str) -> String {
    let path = dir.path().join("copy.sql");
    std::fs::write(&path, script).unwrap();
    path.display().to_string()
}

#[test]
fn psql_describe_commands_read_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let setup = server.psql(&[
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL DEFAULT 'x', price numeric(8,2), seen timestamptz, tags text[])",
        "-c",
        "CREATE SCHEMA shop",
        "-c",
        "CREATE TABLE shop.orders (n bigint)",
        "-c",
        "CREATE VIEW cheap AS SELECT id FROM items WHERE price < 1",
        "-c",
        "CREATE INDEX items_name ON items (name, price)",
    ]);
    assert!(setup.status.success(), "{}", text(&setup));
    let run = |command: &str| {
        let out = server.psql(&["-v", "ON_ERROR_STOP=1", "-c", command]);
        assert!(out.status.success(), "{command}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        run("\\dt"),
        "        List of relations
 Schema |  Name  | Type  | Owner  
--------+--------+-------+--------
 public | items  | table | basalt
 shop   | orders | table | basalt
(2 rows)

"
    );
    assert_eq!(
        run("\\d"),
        "        List of relations
 Schema |  Name  | Type  | Owner  
--------+--------+-------+--------
 public | cheap  | view  | basalt
 public | items  | table | basalt
 shop   | orders | table | basalt
(3 rows)

"
    );
    assert_eq!(
        run("\\d items"),
        "                        Table \"public.items\"
 Column |           Type           | Collation | Nullable | Default 
--------+--------------------------+-----------+----------+---------
 id     | integer                  |           | not null | 
 name   | text                     |           | not null | 'x'
 price  | numeric(8,2)             |           |          | 
 seen   | timestamp with time zone |           |          | 
 tags   | text[]                   |           |          | 
Indexes:
    \"items_pkey\" PRIMARY KEY, btree (id)
    \"items_name\" btree (name, price)

"
    );
    assert_eq!(
        run("\\dn"),
        " List of schemas
  Name  | Owner  
--------+--------
 public | basalt
 shop   | basalt
(2 rows)

"
    );
    assert_eq!(
        run("\\d cheap"),
        "                View \"public.cheap\"
 Column |  Type   | Collation | Nullable | Default 
--------+---------+-----------+----------+---------
 id     | integer |           |          | 

"
    );
    assert!(run("\\l").contains(" basalt | basalt | UTF8     |"));
    let indexes = run("\\di");
    assert!(
        indexes.contains(" public | items_name | index | basalt | items\n"),
        "{indexes}"
    );
    assert!(
        indexes.contains(" public | items_pkey | index | basalt | items\n"),
        "{indexes}"
    );
    assert!(run("\\d+ items").contains("Access method: heap"));
    assert!(run("\\du").contains(" basalt    | Superuser"));
    // What tab completion asks for a table name and a column name.
    assert_eq!(
        run("SELECT pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'v') AND substring(pg_catalog.quote_ident(c.relname),1,2)='it' AND pg_catalog.pg_table_is_visible(c.oid) LIMIT 1000"),
        " quote_ident \n-------------\n items\n(1 row)\n\n"
    );
    assert!(run("SELECT 'items'::regclass = c.oid AS found FROM pg_catalog.pg_class c WHERE c.relname = 'items'").contains(" t\n"));
    server.terminate();
}

#[test]
fn psycopg_binds_parameters_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/psycopg_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(server.port.to_string())
        .output()
        .expect("python3 is installed (.ci/run installs psycopg)");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "psycopg: all checks passed\n"
    );
    server.terminate();
}

/// pgjdbc with its defaults: it prepares a statement on the server from
/// its fifth execution and sends dates and timestamps as untyped text.
#[test]
fn jdbc_runs_prepared_statements_with_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/JdbcClient.java");
    // Debian's libpostgresql-jdbc-java, which .ci/run installs.
    let jar = std::env::var("BASALT_JDBC_JAR")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".to_string());
    assert!(Path::new(&jar).exists(), "pgjdbc not found at {jar}");
    let out = Command::new("java")
        .arg("-cp")
        .arg(&jar)
        .arg(&source)
        .arg(server.port.to_string())
        .output()
        .expect("java is installed (.ci/run installs a JDK)");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "jdbc: all checks passed\n"
    );
    server.terminate();
}

#[test]
fn serve_speaks_tls_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(made.status.success(), "{}", text(&made));
    let server = serve(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let conninfo = |sslmode: &str| {
        format!(
            "host=127.0.0.1 port={} user=basalt dbname=basalt sslmode={sslmode}",
            server.port
        )
    };
    let out = server.psql_conninfo(&conninfo("require"), &["-At", "-c", "SELECT 'over tls'"]);
    assert_eq!(text(&out), "over tls\n");
    // Plain connections are still served.
    let out = server.psql_conninfo(&conninfo("disable"), &["-At", "-c", "SELECT 'plain'"]);
    assert_eq!(text(&out), "plain\n");
    server.terminate();
}

#[test]
fn serve_checks_passwords_with_scram() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--user", "alice=wonder land"]);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=alice dbname=basalt sslmode=disable",
        server.port
    );
    let psql = |password: &str| {
        Command::new("psql")
            .args(["-X", "-At", &conninfo, "-c", "SELECT 't'"])
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    };
    assert_eq!(text(&psql("wonder land")), "t\n");
    let refused = psql("wrong");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("password authentication failed for user \"alice\""),
        "{}",
        text(&refused)
    );
    server.terminate();
}

#[test]
fn serve_refuses_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("basalt.toml");
    std::fs::write(&config, "max_connections = \"many\"\n").unwrap();
    let out = basalt()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("max_connections"), "{}", text(&out));

    let out = basalt()
        .args(["serve", "--tls-cert", "only.crt", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tls_cert and tls_key"),
        "{}",
        text(&out)
    );
}

#[test]
fn serve_refuses_a_directory_another_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(dir.path(), Options::default()).unwrap();
    let out = basalt()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// Recovery decisions reach the log: a torn WAL tail cut at open is reported
/// on stderr with its file, and the server still starts.
#[test]
fn serve_logs_the_torn_wal_tail_it_cuts() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "k",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let db = Db::open(dir.path(), Options::default()).unwrap();
        db.create_table("t", schema.clone(), &["k"]).unwrap();
        for k in 0..3 {
            let mut txn = db.begin();
            let column = Arc::new(arrow_array::Int64Array::from(vec![k]));
            txn.put(
                "t",
                &arrow_array::RecordBatch::try_new(schema.clone(), vec![column]).unwrap(),
            )
            .unwrap();
            txn.commit().unwrap();
        }
    }
    let wal = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 5).unwrap();
    let mut child = basalt()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("serving"), "{line}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cutting torn WAL tail"), "{stderr}");
    assert!(
        stderr.contains(&*wal.file_name().unwrap().to_string_lossy()),
        "{stderr}"
    );
}
