//! The bulk loader: `Database::load`, `COPY ... FROM/TO 'path'` and
//! `basalt load`, against files written here and by the Arrow and Parquet
//! writers.

mod common;

use common::rows;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt::query::{FileFormat, LoadOptions, LoadProgress, OnError};
use basalt::{Database, Session};

async fn count(session: &mut Session, table: &str) -> i64 {
    let got = rows(session, &format!("SELECT count(*) FROM {table}")).await;
    got[0][0].as_deref().unwrap().parse().unwrap()
}

fn sources(paths: &[&Path]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

async fn error_of(db: &Database, table: &str, path: &Path, options: LoadOptions) -> String {
    let err = db
        .load(table, &sources(&[path]), options)
        .await
        .expect_err("the load should fail");
    format!("{} {}", err.sqlstate(), err)
}

const EVERY_TYPE: &str = "CREATE TABLE every (
    id int PRIMARY KEY, flag boolean, small smallint, big bigint, r real,
    d double precision, n numeric(12,3), t text, v varchar(20), b bytea,
    day date, at timestamp, atz timestamptz, span interval, u uuid, j json,
    ints int[], words text[])";

const EVERY_ROWS: &str = "INSERT INTO every VALUES
    (1, true, -3, 9000000000, 1.5, -2.25, 12345.678, 'plain', 'var', '\\x00ff10',
     '2024-02-29', '2024-02-29 13:14:15.5', '2024-02-29 13:14:15+00', '1 year 2 months 3 days 4 hours 5 minutes 6 seconds',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', ARRAY[1, NULL, 3], ARRAY['a b', 'c,d']),
    (2, false, NULL, NULL, NULL, NULL, NULL, 'quote \" comma , newline\nend', NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, NULL, 32767, -1, -0.5, 1e300, -0.001, '', '', '\\x',
     '1970-01-01', '1999-12-31 23:59:59', '2000-01-01 00:00:00+00', '-1 days', '00000000-0000-0000-0000-000000000000',
     '[]', ARRAY[]::int[], ARRAY['']::text[])";

/// CSV -> table -> Parquet -> table (and JSON and Arrow) keeps every
/// value of every supported type.
#[tokio::test]
async fn every_type_round_trips_through_csv_parquet_json_and_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute(EVERY_TYPE).await.unwrap();
    s.execute(EVERY_ROWS).await.unwrap();
    let original = rows(&mut s, "SELECT * FROM every ORDER BY id").await;
    assert_eq!(original.len(), 3);

    let csv = dir.path().join("every.csv");
    let tag = s
        .execute(&format!(
            "COPY every TO '{}' (FORMAT csv, HEADER)",
            csv.display()
        ))
        .await
        .unwrap();
    assert!(format!("{tag:?}").contains("COPY 3"), "{tag:?}");
    s.execute(&EVERY_TYPE.replace("every", "from_csv"))
        .await
        .unwrap();
    let report = db
        .load("from_csv", &sources(&[&csv]), LoadOptions::default())
        .await
        .unwrap();
    assert_eq!((report.rows, report.files, report.skipped), (3, 1, 0));
    assert_eq!(
        rows(&mut s, "SELECT * FROM from_csv ORDER BY id").await,
        original
    );

    for format in ["parquet", "json", "arrow"] {
        let path = dir.path().join(format!("every.{format}"));
        s.execute(&format!(
            "COPY from_csv TO '{}' (FORMAT {format})",
            path.display()
        ))
        .await
        .unwrap_or_else(|e| panic!("COPY TO {format}: {e}"));
        let table = format!("from_{format}");
        s.execute(&EVERY_TYPE.replace("every", &table))
            .await
            .unwrap();
        s.execute(&format!("COPY {table} FROM '{}'", path.display()))
            .await
            .unwrap_or_else(|e| panic!("COPY FROM {format}: {e}"));
        assert_eq!(
            rows(&mut s, &format!("SELECT * FROM {table} ORDER BY id")).await,
            original,
            "{format}"
        );
    }
}

#[tokio::test]
async fn malformed_input_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE t (id int PRIMARY KEY, x double precision, name text)")
        .await
        .unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let cases: Vec<(&str, &[u8], String)> = vec![
        (
            "ragged.csv",
            b"id,x,name\n1,2,a\n2,3,b,extra\n",
            "22P04 {}, line 3: extra data after last expected column".into(),
        ),
        (
            "short.csv",
            b"id,x,name\n1,2\n",
            "22P04 {}, line 2: missing data for column \"name\"".into(),
        ),
        (
            "number.csv",
            b"id,x,name\n1,2.5,a\n2,abc,b\n",
            "22P02 {}, line 3, column x: invalid input syntax for type double precision: \"abc\""
                .into(),
        ),
        (
            "overflow.csv",
            b"id,x,name\n99999999999,1,a\n",
            "22P02 {}, line 2, column id: invalid input syntax for type integer: \"99999999999\""
                .into(),
        ),
        (
            "utf8.csv",
            b"id,x,name\n1,2,ok\n2,3,bad\xff\xfe\n",
            "22021 {}, line 3: invalid byte sequence for encoding \"UTF8\"".into(),
        ),
        (
            "nullkey.csv",
            b"id,x,name\n,1,a\n",
            "23502 {}, line 2: null value in column \"id\" of relation \"t\" violates not-null constraint"
                .into(),
        ),
        (
            "broken.jsonl",
            b"{\"id\": 1, \"x\": 2}\n{\"id\": 2, \"x\": \n",
            "22P04 {}, line 2: ".into(),
        ),
        (
            "truncated.parquet",
            b"PAR1\x15\x00\x15",
            "22P04 {}: ".into(),
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = write(name, bytes);
        let got = error_of(&db, "t", &path, LoadOptions::default()).await;
        let expected = expected.replace("{}", &path.display().to_string());
        assert!(
            got.starts_with(&expected),
            "{name}:\n got  {got}\n want {expected}"
        );
        assert_eq!(count(&mut s, "t").await, 0, "{name} left rows behind");
    }
    let missing = dir.path().join("nope.csv");
    let got = error_of(&db, "t", &missing, LoadOptions::default()).await;
    assert_eq!(
        got,
        format!(
            "58P01 could not open file \"{}\" for reading: No such file or directory",
            missing.display()
        )
    );
    let json = write("extra.jsonl", b"{\"id\": 1, \"y\": 2}\n");
    let got = error_of(&db, "t", &json, LoadOptions::default()).await;
    assert!(got.starts_with("22P04"), "{got}");
}

#[tokio::test]
async fn loads_upsert_by_key_and_append_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE kv (k int PRIMARY KEY, v text)")
        .await
        .unwrap();
    s.execute("CREATE TABLE log (k int, v text)").await.unwrap();
    s.execute("INSERT INTO kv VALUES (1, 'committed'), (5, 'untouched')")
        .await
        .unwrap();
    let first = dir.path().join("first.csv");
    std::fs::write(&first, "k,v\n1,one\n2,two\n3,three\n2,two again\n").unwrap();
    let second = dir.path().join("second.tsv");
    std::fs::write(&second, "k\tv\n3\tTHREE\n4\tfour\n").unwrap();
    for table in ["kv", "log"] {
        let report = db
            .load(table, &sources(&[&first, &second]), LoadOptions::default())
            .await
            .unwrap();
        assert_eq!((report.rows, report.files), (6, 2));
    }
    assert_eq!(
        rows(&mut s, "SELECT k, v FROM kv ORDER BY k").await,
        [
            ("1", "one"),
            ("2", "two again"),
            ("3", "THREE"),
            ("4", "four"),
            ("5", "untouched")
        ]
        .map(|(k, v)| vec![Some(k.to_string()), Some(v.to_string())])
    );
    assert_eq!(count(&mut s, "log").await, 6);
    // A later write beats the load; the load survives reopen.
    s.execute("UPDATE kv SET v = 'updated' WHERE k = 4")
        .await
        .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT v FROM kv WHERE k = 4").await,
        vec![vec![Some("updated".to_string())]]
    );
}

/// A CSV large enough to be split across threads: the pieces reach the
/// table in input order, so the last row of each key wins.
#[tokio::test]
async fn a_split_csv_keeps_input_order() {
    const ROWS: u64 = 2_400_000;
    const KEYS: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        writeln!(out, "k,v,price").unwrap();
        for i in 0..ROWS {
            writeln!(out, "{},{i},{}.{:02}", i % KEYS, i / 100, i % 100).unwrap();
        }
    }
    assert!(std::fs::metadata(&input).unwrap().len() > 40 << 20);
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE kv (k int PRIMARY KEY, v bigint, price numeric(12,2))")
        .await
        .unwrap();
    let report = db
        .load("kv", &sources(&[&input]), LoadOptions::default())
        .await
        .unwrap();
    assert_eq!(report.rows, ROWS);
    let last: Vec<u64> = (ROWS - KEYS..ROWS).collect();
    let v_sum: u64 = last.iter().sum();
    assert_eq!(
        rows(
            &mut s,
            "SELECT count(*), sum(v), sum(price * 100) = sum(v), min(v) FROM kv"
        )
        .await,
        vec![vec![
            Some(KEYS.to_string()),
            Some(v_sum.to_string()),
            Some("t".to_string()),
            Some((ROWS - KEYS).to_string())
        ]]
    );
}

#[tokio::test]
async fn skipped_rows_go_to_the_reject_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE t (id int PRIMARY KEY, x int NOT NULL)")
        .await
        .unwrap();
    let input = dir.path().join("mixed.csv");
    std::fs::write(&input, "id,x\n1,10\n2,oops\n3\n4,40\n,50\n5,\n6,60\n").unwrap();
    let rejects = dir.path().join("rejects.csv");
    let report = db
        .load(
            "t",
            &sources(&[&input]),
            LoadOptions {
                on_error: OnError::Skip,
                reject_file: Some(rejects.clone()),
                ..LoadOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((report.rows, report.skipped), (3, 4));
    assert_eq!(
        rows(&mut s, "SELECT id FROM t ORDER BY id").await,
        [1, 4, 6].map(|i| vec![Some(i.to_string())])
    );
    let listed = std::fs::read_to_string(&rejects).unwrap();
    let file = input.display().to_string();
    let expected = format!(
        "file,line,column,error,text
{file},4,,\"missing data for column \"\"x\"\"\",3
{file},3,x,\"invalid input syntax for type integer: \"\"oops\"\"\",oops
{file},6,id,\"null value in column \"\"id\"\" of relation \"\"t\"\" violates not-null constraint\",
{file},7,x,\"null value in column \"\"x\"\" of relation \"\"t\"\" violates not-null constraint\",
"
    );
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn compressed_globbed_and_created_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    let mut text = String::from("id,price,day,ok,label\n");
    for i in 0..5000 {
        text.push_str(&format!(
            "{i},{}.25,2024-01-{:02},{},item {i}\n",
            i % 100,
            1 + i % 28,
            i % 2 == 0
        ));
    }
    let gz = dir.path().join("part1.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
    let zst = dir.path().join("part2.csv.zst");
    let second = text.replace("item", "other");
    let second: String = second
        .lines()
        .enumerate()
        .map(|(n, line)| match n {
            0 => format!("{line}\n"),
            _ => {
                let (id, rest) = line.split_once(',').unwrap();
                format!("{},{rest}\n", id.parse::<i64>().unwrap() + 5000)
            }
        })
        .collect();
    std::fs::write(&zst, zstd::encode_all(second.as_bytes(), 1).unwrap()).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let progress = {
        let seen = seen.clone();
        Arc::new(move |p: &LoadProgress| {
            assert!(p.bytes <= p.total_bytes);
            seen.fetch_max(p.rows, Ordering::SeqCst);
        })
    };
    let report = db
        .load(
            "items",
            &[dir.path().join("part*.csv.*").display().to_string()],
            LoadOptions {
                create: true,
                primary_key: vec!["id".into()],
                progress: Some(progress),
                ..LoadOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(report.created);
    assert_eq!((report.rows, report.files), (10_000, 2));
    assert_eq!(seen.load(Ordering::SeqCst), 10_000);
    let total = std::fs::metadata(&gz).unwrap().len() + std::fs::metadata(&zst).unwrap().len();
    assert_eq!(report.bytes, total);
    assert_eq!(
        rows(
            &mut s,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid \
             WHERE c.relname = 'items' AND a.attnum > 0 ORDER BY a.attnum"
        )
        .await,
        [
            ("id", "bigint"),
            ("price", "double precision"),
            ("day", "date"),
            ("ok", "boolean"),
            ("label", "text")
        ]
        .map(|(c, t)| vec![Some(c.to_string()), Some(t.to_string())])
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT sum(price), count(DISTINCT label) FROM items"
        )
        .await,
        vec![vec![Some("497500".to_string()), Some("10000".to_string())]]
    );
}

#[tokio::test]
async fn parquet_written_elsewhere_loads_by_column_name() {
    use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("ID", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            Arc::new(Int32Array::from(vec![7, 8])),
        ],
    )
    .unwrap();
    let path = dir.path().join("other.parquet");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE p (id bigint PRIMARY KEY, name text, extra text DEFAULT 'd')")
        .await
        .unwrap();
    // `extra` has a DEFAULT the file does not fill: the INSERT path runs.
    s.execute(&format!("COPY p (id, name) FROM '{}'", path.display()))
        .await
        .unwrap();
    assert_eq!(
        rows(&mut s, "SELECT id, name, extra FROM p ORDER BY id").await,
        [("7", "x"), ("8", "y")].map(|(i, n)| vec![
            Some(i.into()),
            Some(n.into()),
            Some("d".into())
        ])
    );
    // Through INSERT, a key already there is a violation, as in Postgres.
    let again = s
        .execute(&format!("COPY p (id, name) FROM '{}'", path.display()))
        .await
        .unwrap_err();
    assert_eq!(again.sqlstate(), "23505");
    // The bulk path (no DEFAULT to fill) upserts, names matched ignoring case.
    s.execute("CREATE TABLE q (id bigint PRIMARY KEY, name text, extra text)")
        .await
        .unwrap();
    s.execute("INSERT INTO q VALUES (7, 'old', 'kept?')")
        .await
        .unwrap();
    let loaded = db
        .load(
            "q",
            &sources(&[&path]),
            LoadOptions {
                format: Some(FileFormat::Parquet),
                ..LoadOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(loaded.rows, 2);
    assert_eq!(
        rows(&mut s, "SELECT id, name, extra FROM q ORDER BY id").await,
        [("7", "x"), ("8", "y")].map(|(i, n)| vec![Some(i.into()), Some(n.into()), None])
    );
}

#[tokio::test]
async fn copy_from_a_file_inside_a_block_rolls_back_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    std::fs::write(&path, "1,a\n2,b\n").unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    s.execute("BEGIN").await.unwrap();
    s.execute(&format!("COPY t FROM '{}' (FORMAT csv)", path.display()))
        .await
        .unwrap();
    assert_eq!(count(&mut s, "t").await, 2, "the block sees its own COPY");
    s.execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&mut s, "t").await, 0);
    s.execute("BEGIN").await.unwrap();
    let err = s
        .load("t", &sources(&[&path]), LoadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "25001", "{err}");
}

#[tokio::test]
async fn server_side_files_are_confined_to_the_allowed_directory() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::write(allowed.join("in.csv"), "1\n2\n").unwrap();
    std::fs::write(dir.path().join("secret.csv"), "3\n").unwrap();
    let db = Database::open_temporary()
        .unwrap()
        .with_file_access(basalt::query::FileAccess::Within(allowed.clone()))
        .unwrap();
    let mut s = db.session();
    s.execute("CREATE TABLE t (id int)").await.unwrap();
    s.execute("COPY t FROM 'in.csv'").await.unwrap();
    s.execute("COPY t TO 'out.csv' (FORMAT csv)").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(allowed.join("out.csv")).unwrap(),
        "1\n2\n"
    );
    for sql in [
        "COPY t FROM '../secret.csv'".to_string(),
        format!("COPY t FROM '{}'", dir.path().join("secret.csv").display()),
        "COPY t TO '../leak.csv'".to_string(),
    ] {
        let err = s.execute(&sql).await.expect_err(&sql);
        assert_eq!(err.sqlstate(), "42501", "{sql}: {err}");
    }
    let denied = Database::open_temporary()
        .unwrap()
        .with_file_access(basalt::query::FileAccess::Denied)
        .unwrap();
    let mut s = denied.session();
    s.execute("CREATE TABLE t (id int)").await.unwrap();
    let err = s
        .execute(&format!(
            "COPY t FROM '{}'",
            allowed.join("in.csv").display()
        ))
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "42501");
}

/// `basalt load` killed midway: the table is as it was, and the files the
/// load wrote are gone after the next open.
#[test]
fn a_killed_load_leaves_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let input = dir.path().join("big.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        writeln!(out, "id,payload").unwrap();
        for i in 0..3_000_000u64 {
            writeln!(
                out,
                "{},row number {i} of the big file",
                (i * 7919) % 3_000_017
            )
            .unwrap();
        }
    }
    let basalt = env!("CARGO_BIN_EXE_basalt");
    let mut child = Command::new(basalt)
        .args([
            "load", "--quiet", "--create", "--key", "id", "--table", "t", "--data",
        ])
        .arg(&data)
        .arg(&input)
        .spawn()
        .unwrap();
    // Kill it once it has written a segment, before it can finish.
    let seg = data.join("seg");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = std::fs::read_dir(&seg)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "bseg"))
            })
            .unwrap_or(false);
        if written || Instant::now() > deadline {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            panic!("the load finished before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = Database::open(&data).unwrap();
        let mut s = db.session();
        // --create and the load are one step: no table, not an empty one.
        let err = s.query("SELECT count(*) FROM t").await.unwrap_err();
        assert_eq!(err.sqlstate(), "42P01", "{err}");
        let tables = s
            .query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            .await
            .unwrap();
        let n = basalt::query::pgtext::format_value(tables[0].column(0).as_ref(), 0);
        assert_eq!(n.as_deref(), Some("0"), "the staging table was dropped");
        let left = std::fs::read_dir(&seg).unwrap().count();
        assert_eq!(left, 0, "orphaned segment files are removed on open");
    });
}

#[tokio::test]
async fn files_are_queried_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("orders.csv");
    std::fs::write(&csv, "id;customer;amount\n1;ann;10.5\n2;bob;3\n3;ann;1.5\n").unwrap();
    let json = dir.path().join("customers.jsonl");
    std::fs::write(
        &json,
        "{\"name\": \"ann\", \"city\": \"Oslo\"}\n\n{\"name\": \"bob\", \"city\": \"Rome\"}\n",
    )
    .unwrap();
    let db = Database::open_temporary().unwrap();
    let mut s = db.session();
    let sql = format!(
        "SELECT c.city, sum(o.amount) AS total \
         FROM read_csv('{}', true, ';') o JOIN read_json('{}') c ON o.customer = c.name \
         GROUP BY c.city ORDER BY c.city",
        csv.display(),
        json.display()
    );
    assert_eq!(
        rows(&mut s, &sql).await,
        vec![
            vec![Some("Oslo".into()), Some("12".into())],
            vec![Some("Rome".into()), Some("3".into())]
        ]
    );
    let parquet = dir.path().join("orders.parquet");
    s.execute(&format!(
        "COPY (SELECT * FROM read_csv('{}', true, ';') WHERE amount > 2) TO '{}'",
        csv.display(),
        parquet.display()
    ))
    .await
    .unwrap();
    assert_eq!(
        rows(
            &mut s,
            &format!(
                "SELECT count(*), max(customer) FROM read_parquet('{}')",
                parquet.display()
            )
        )
        .await,
        vec![vec![Some("2".into()), Some("bob".into())]]
    );
    let err = s
        .execute(&format!(
            "SELECT * FROM read_csv('{}', 'yes')",
            csv.display()
        ))
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "42883", "{err}");
    let denied = Database::open_temporary()
        .unwrap()
        .with_file_access(basalt::query::FileAccess::Denied)
        .unwrap();
    let err = denied
        .session()
        .execute(&format!("SELECT * FROM read_csv('{}')", csv.display()))
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), "42501", "{err}");
}
