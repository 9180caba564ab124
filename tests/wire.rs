//! The wire server against a real driver (tokio-postgres): simple and
//! extended protocol, binary types, transactions, errors, cancel, auth,
//! connection limits, concurrency, and hostile clients.

mod wire_support;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use basalt::server::Config;
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::SimpleQueryMessage;
use wire_support::{code, TestServer};

/// A numeric read in binary format, as its text.
#[derive(Debug, PartialEq)]
struct Numeric(String);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let word = |i: usize| i16::from_be_bytes([raw[i], raw[i + 1]]);
        let (ndigits, weight, sign, dscale) = (word(0), word(2), word(4) as u16, word(6));
        let digits: Vec<i16> = (0..ndigits as usize).map(|i| word(8 + 2 * i)).collect();
        let digit = |p: i16| {
            usize::try_from(p)
                .ok()
                .and_then(|p| digits.get(p))
                .copied()
                .unwrap_or(0)
        };
        let mut integer = (0..=weight.max(0))
            .map(|p| if weight < 0 { 0 } else { digit(p) })
            .enumerate()
            .map(|(i, d)| {
                if i == 0 {
                    d.to_string()
                } else {
                    format!("{d:04}")
                }
            })
            .collect::<String>();
        if integer.is_empty() {
            integer = "0".into();
        }
        let mut fraction: String = (weight + 1..weight + 1 + dscale)
            .map(|p| format!("{:04}", digit(p)))
            .collect();
        fraction.truncate(dscale as usize);
        let sign = if sign == 0x4000 { "-" } else { "" };
        Ok(Numeric(if fraction.is_empty() {
            format!("{sign}{integer}")
        } else {
            format!("{sign}{integer}.{fraction}")
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simple_protocol_runs_statements_and_reports_tags() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let messages = client
        .simple_query(
            "CREATE TABLE t (id bigint PRIMARY KEY, name text); \
             INSERT INTO t VALUES (1, 'one'), (2, NULL); \
             SELECT id, name FROM t ORDER BY id",
        )
        .await
        .unwrap();
    let mut rows = Vec::new();
    let mut tags = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push((
                row.get(0).map(str::to_string),
                row.get(1).map(str::to_string),
            )),
            SimpleQueryMessage::CommandComplete(n) => tags.push(n),
            _ => {}
        }
    }
    assert_eq!(
        rows,
        vec![
            (Some("1".into()), Some("one".into())),
            (Some("2".into()), None)
        ]
    );
    assert_eq!(tags, vec![0, 2, 2]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_protocol_round_trips_binary_types() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE v (id bigint PRIMARY KEY, i int, s smallint, f double precision, \
             r real, b boolean, t text, d date, ts timestamp, tz timestamptz, by bytea, \
             n numeric(12,3), u uuid, j jsonb)",
        )
        .await
        .unwrap();
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let ts: NaiveDateTime = date.and_hms_micro_opt(13, 14, 15, 123_456).unwrap();
    let tz = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap();
    let insert = client
        .prepare(
            "INSERT INTO v (id, i, s, f, r, b, t, d, ts, tz, by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await
        .unwrap();
    assert_eq!(insert.params()[0], Type::INT8);
    assert_eq!(insert.params()[1], Type::INT4);
    assert_eq!(insert.params()[9], Type::TIMESTAMPTZ);
    let inserted = client
        .execute(
            &insert,
            &[
                &7i64,
                &-42i32,
                &12i16,
                &2.5f64,
                &0.25f32,
                &true,
                &"héllo 'quoted'",
                &date,
                &ts,
                &tz,
                &vec![0u8, 1, 255],
            ],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    client
        .execute(
            "UPDATE v SET n = 12345.678, u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
             j = '{\"k\": [1, 2]}' WHERE id = $1",
            &[&7i64],
        )
        .await
        .unwrap();

    let row = client
        .query_one("SELECT * FROM v WHERE id = $1", &[&7i64])
        .await
        .unwrap();
    let columns: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        columns,
        vec![
            Type::INT8,
            Type::INT4,
            Type::INT2,
            Type::FLOAT8,
            Type::FLOAT4,
            Type::BOOL,
            Type::TEXT,
            Type::DATE,
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::BYTEA,
            Type::NUMERIC,
            Type::UUID,
            Type::JSONB,
        ]
    );
    assert_eq!(row.get::<_, i64>("id"), 7);
    assert_eq!(row.get::<_, i32>("i"), -42);
    assert_eq!(row.get::<_, i16>("s"), 12);
    assert_eq!(row.get::<_, f64>("f"), 2.5);
    assert_eq!(row.get::<_, f32>("r"), 0.25);
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, String>("t"), "héllo 'quoted'");
    assert_eq!(row.get::<_, NaiveDate>("d"), date);
    assert_eq!(row.get::<_, NaiveDateTime>("ts"), ts);
    assert_eq!(row.get::<_, chrono::DateTime<Utc>>("tz"), tz);
    assert_eq!(row.get::<_, Vec<u8>>("by"), vec![0u8, 1, 255]);
    assert_eq!(row.get::<_, Numeric>("n"), Numeric("12345.678".into()));

    // Text results of the same row, as psql would print them.
    let text = client
        .simple_query("SELECT u, j, n, by, ts FROM v")
        .await
        .unwrap();
    let SimpleQueryMessage::Row(row) = &text[1] else {
        panic!("expected a row, got {:?}", text.len());
    };
    assert_eq!(row.get(0), Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(row.get(2), Some("12345.678"));
    assert_eq!(row.get(3), Some("\\x0001ff"));
    assert_eq!(row.get(4), Some("2024-02-29 13:14:15.123456"));

    // NULL parameters and NULL results.
    let none: Option<i64> = client
        .query_one("SELECT CAST($1 AS bigint)", &[&None::<i64>])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statements_rerun_with_new_parameters_and_portals_page() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client
        .batch_execute("CREATE TABLE p (id int PRIMARY KEY, label text)")
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO p VALUES ($1, $2) RETURNING id * 10 AS tenfold")
        .await
        .unwrap();
    assert_eq!(insert.columns().len(), 1);
    for id in 0..50i32 {
        let row = client
            .query_one(&insert, &[&id, &format!("label {id}")])
            .await
            .unwrap();
        // DataFusion types int * int literal as bigint (Postgres: int).
        assert_eq!(row.get::<_, i64>(0), i64::from(id) * 10);
    }
    let select = client
        .prepare("SELECT id, label FROM p WHERE id >= $1 ORDER BY id")
        .await
        .unwrap();
    assert_eq!(select.params(), &[Type::INT4]);
    let rows = client.query(&select, &[&45i32]).await.unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![45, 46, 47, 48, 49]);

    // A portal read 7 rows at a time (Execute with a row limit).
    let transaction = client.transaction().await.unwrap();
    let portal = transaction.bind(&select, &[&0i32]).await.unwrap();
    let mut seen = 0;
    loop {
        let page = transaction.query_portal(&portal, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        seen += page.len();
    }
    assert_eq!(seen, 50);
    transaction.commit().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_are_per_connection_and_isolated() {
    let server = TestServer::start().await;
    let mut a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("CREATE TABLE acct (id int PRIMARY KEY, balance bigint)")
        .await
        .unwrap();
    let txn = a.transaction().await.unwrap();
    txn.execute("INSERT INTO acct VALUES (1, 100)", &[])
        .await
        .unwrap();
    let own = txn
        .query_one("SELECT count(*) FROM acct", &[])
        .await
        .unwrap();
    assert_eq!(own.get::<_, i64>(0), 1, "a sees its own write");
    let other = b.query_one("SELECT count(*) FROM acct", &[]).await.unwrap();
    assert_eq!(other.get::<_, i64>(0), 0, "b does not see it before commit");
    txn.commit().await.unwrap();
    let other = b.query_one("SELECT count(*) FROM acct", &[]).await.unwrap();
    assert_eq!(other.get::<_, i64>(0), 1);

    // A failed statement aborts the block until ROLLBACK.
    a.batch_execute("BEGIN").await.unwrap();
    let err = a.batch_execute("SELECT * FROM missing").await.unwrap_err();
    assert_eq!(code(&err), "42P01");
    let err = a.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), "25P02");
    a.batch_execute("ROLLBACK").await.unwrap();
    a.batch_execute("SELECT 1").await.unwrap();

    // Two blocks updating one row: the second committer gets 40001.
    a.batch_execute("BEGIN; UPDATE acct SET balance = 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE acct SET balance = 2 WHERE id = 1")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let err = b.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(code(&err), "40001");
    let row = b
        .query_one("SELECT balance FROM acct WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_carry_sqlstate_and_leave_the_connection_usable() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE e (id int PRIMARY KEY, n int NOT NULL)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO e VALUES (1, 1)")
        .await
        .unwrap();
    let cases = [
        ("SELECT * FROM nowhere", "42P01"),
        ("SELEC 1", "42601"),
        ("INSERT INTO e VALUES (1, 2)", "23505"),
        ("INSERT INTO e VALUES (2, NULL)", "23502"),
        ("SELECT nope FROM e", "42703"),
    ];
    for (sql, expected) in cases {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&err), expected, "{sql}: {err:?}");
        // The same through the extended protocol.
        let err = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&err), expected, "{sql} (extended): {err:?}");
    }
    let detail = client
        .batch_execute("INSERT INTO e VALUES (1, 3)")
        .await
        .unwrap_err();
    assert_eq!(
        detail.as_db_error().and_then(|e| e.detail()),
        Some("Key (id)=(1) already exists.")
    );
    let row = client
        .query_one("SELECT count(*) FROM e", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_multi_statement_query_is_one_implicit_transaction() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE m (id int PRIMARY KEY)")
        .await
        .unwrap();
    let err = client
        .batch_execute(
            "INSERT INTO m VALUES (1); INSERT INTO m VALUES (2); INSERT INTO m VALUES (1)",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "23505");
    let ids = |client: tokio_postgres::Client| async move {
        let rows = client
            .query("SELECT id FROM m ORDER BY id", &[])
            .await
            .unwrap();
        let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        (client, ids)
    };
    // Nothing of the failed query stays, and the connection is idle again.
    let (client, kept) = ids(client).await;
    assert_eq!(kept, Vec::<i32>::new());
    // Results of every statement come back, read before the commit.
    let messages = client
        .simple_query("INSERT INTO m VALUES (1); SELECT count(*) FROM m; INSERT INTO m VALUES (2)")
        .await
        .unwrap();
    let counted = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(counted.as_deref(), Some("1"));
    // A COMMIT inside ends the implicit transaction; a BEGIN makes it a
    // block the client then ends.
    client
        .batch_execute("INSERT INTO m VALUES (3); COMMIT; INSERT INTO m VALUES (1)")
        .await
        .unwrap_err();
    client
        .batch_execute("INSERT INTO m VALUES (4); BEGIN; INSERT INTO m VALUES (5)")
        .await
        .unwrap();
    assert!(!client.is_closed());
    client.batch_execute("ROLLBACK").await.unwrap();
    let (_client, kept) = ids(client).await;
    assert_eq!(kept, vec![1, 2, 3]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_streams_rows_in_and_out() {
    use futures::{SinkExt, TryStreamExt};
    use std::io::Cursor;
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE c (id bigint PRIMARY KEY, label text, score double precision)")
        .await
        .unwrap();
    let rows = 100_000;
    let text: String = (0..rows)
        .map(|i| match i % 3 {
            0 => format!("{i}\tlabel {i}\t{}\n", i as f64 / 4.0),
            1 => format!("{i}\t\\N\t-1\n"),
            _ => format!("{i}\ttab\\there\t1e10\n"),
        })
        .collect();
    // Chunks cut mid-row, as a client is free to send them.
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    for chunk in text.as_bytes().chunks(7_777) {
        sink.send(Cursor::new(chunk.to_vec())).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), rows);
    let row = client
        .query_one("SELECT count(*), count(label), sum(id) FROM c", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), rows as i64);
    assert_eq!(row.get::<_, i64>(1), rows as i64 - rows as i64 / 3);
    let copied: Vec<bytes::Bytes> = client
        .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(copied.len(), rows as usize, "one CopyData per row");
    let out: Vec<u8> = copied.concat();
    assert_eq!(
        String::from_utf8(out)
            .unwrap()
            .replace("10000000000", "1e10"),
        text
    );
    // A duplicate key fails the whole COPY: nothing of it stays.
    let sink = client.copy_in("COPY c (id) FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Cursor::new(b"100000\n100001\n5\n".to_vec()))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(code(&err), "23505", "{err:?}");
    // A client that gives up (CopyFail) leaves nothing either.
    {
        let sink = client
            .copy_in::<_, Cursor<Vec<u8>>>("COPY c (id) FROM STDIN")
            .await
            .unwrap();
        futures::pin_mut!(sink);
        sink.send(Cursor::new(b"200000\n".to_vec())).await.unwrap();
    }
    let row = client
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), rows as i64);
    // Inside a block, a failed COPY fails the block as any statement does.
    client.batch_execute("BEGIN").await.unwrap();
    let sink = client.copy_in("COPY c (id) FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Cursor::new(b"nope\n".to_vec())).await.unwrap();
    assert_eq!(code(&sink.finish().await.unwrap_err()), "22P02");
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_side_copy_needs_an_allowed_directory() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE f (id int)")
        .await
        .unwrap();
    for sql in [
        "COPY f FROM '/etc/hostname'",
        "COPY f TO '/tmp/basalt-leak.csv'",
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&err), "42501", "{sql}: {err:?}");
    }
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.csv"), "id\n1\n2\n").unwrap();
    let server = TestServer::start_with(Config {
        allow_files: Some(dir.path().to_path_buf()),
        ..Config::default()
    })
    .await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE f (id int)")
        .await
        .unwrap();
    let copied = client
        .execute("COPY f FROM 'in.csv' (FORMAT csv, HEADER)", &[])
        .await
        .unwrap();
    assert_eq!(copied, 2);
    let written = client
        .execute(
            "COPY (SELECT id * 10 AS x FROM f ORDER BY 1) TO 'out.parquet'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(written, 2);
    client
        .batch_execute("CREATE TABLE g (x int)")
        .await
        .unwrap();
    client
        .batch_execute("COPY g FROM 'out.parquet'")
        .await
        .unwrap();
    let row = client.query_one("SELECT sum(x) FROM g", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 30);
    let err = client
        .batch_execute("COPY f FROM '../in.csv'")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42501");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_request_stops_a_running_query() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = Instant::now();
    let err = client
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 200000000) a \
             CROSS JOIN generate_series(1, 100) b",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "57014");
    canceller.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "cancel took {:?}",
        started.elapsed()
    );
    // The connection goes on.
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(rows.len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scram_authentication_checks_passwords() {
    let mut users = BTreeMap::new();
    users.insert("alice".to_string(), "s3cret".to_string());
    let server = TestServer::start_with(Config {
        users,
        ..Config::default()
    })
    .await;
    let client = server.try_connect("alice", Some("s3cret")).await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let wrong = server
        .try_connect("alice", Some("guess"))
        .await
        .unwrap_err();
    assert_eq!(code(&wrong), "28P01", "{wrong:?}");
    let nobody = server
        .try_connect("mallory", Some("s3cret"))
        .await
        .unwrap_err();
    assert_eq!(code(&nobody), "28P01", "{nobody:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_limit_are_refused() {
    let server = TestServer::start_with(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let first = server.connect().await;
    let _second = server.connect().await;
    let third = server.try_connect("basalt", None).await.unwrap_err();
    assert_eq!(code(&third), "53300", "{third:?}");
    drop(first);
    // The slot frees once the first connection is gone.
    let mut admitted = false;
    for _ in 0..50 {
        if server.try_connect("basalt", None).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_mix_reads_and_writes_without_losing_rows() {
    let server = TestServer::start().await;
    let setup = server.connect().await;
    setup
        .batch_execute(
            "CREATE TABLE m (client int, seq int, payload text, PRIMARY KEY (client, seq))",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for client_id in 0..50i32 {
        let client = server.connect().await;
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO m VALUES ($1, $2, $3)")
                .await
                .unwrap();
            let mut committed = 0i32;
            while Instant::now() < deadline {
                client
                    .execute(
                        &insert,
                        &[&client_id, &committed, &format!("row {committed}")],
                    )
                    .await
                    .unwrap();
                committed += 1;
                let seen: i64 = client
                    .query_one("SELECT count(*) FROM m WHERE client = $1", &[&client_id])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(
                    seen,
                    i64::from(committed),
                    "client {client_id} reads its writes"
                );
            }
            committed
        }));
    }
    let mut expected = 0i64;
    for task in tasks {
        expected += i64::from(task.await.unwrap());
    }
    assert!(expected >= 50, "every client committed at least once");
    let total: i64 = setup
        .query_one("SELECT count(*) FROM m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_lose_only_their_own_connection() {
    let server = TestServer::start().await;
    let good = server.connect().await;
    good.batch_execute("CREATE TABLE h (id int PRIMARY KEY)")
        .await
        .unwrap();
    let startup = {
        let mut body = Vec::new();
        body.extend_from_slice(&196608i32.to_be_bytes());
        body.extend_from_slice(b"user\0basalt\0\0");
        let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        message
    };
    let attacks: Vec<Vec<u8>> = vec![
        // Random bytes before any startup.
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        // A startup packet claiming a gigabyte.
        0x3fff_ffffi32.to_be_bytes().to_vec(),
        // A truncated startup packet, then a half-close.
        startup[..7].to_vec(),
        // A good startup followed by a query claiming 1 GiB, then garbage.
        [startup.clone(), b"Q\x3f\xff\xff\xffSELECT".to_vec()].concat(),
        // A good startup, then an unknown message type and a negative length.
        [startup.clone(), b"\x01\xff\xff\xff\xf0".to_vec()].concat(),
        // A good startup, then a Parse message cut short.
        [startup.clone(), b"P\x00\x00\x00\x40stmt\0SELECT".to_vec()].concat(),
    ];
    for attack in attacks {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        let _ = socket.write_all(&attack).await;
        let _ = socket.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut sink)).await;
        // Meanwhile the well-behaved client is served.
        good.execute("INSERT INTO h SELECT coalesce(max(id), 0) + 1 FROM h", &[])
            .await
            .unwrap();
    }
    let count: i64 = good
        .query_one("SELECT count(*) FROM h", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 6);
    // New connections are still accepted.
    let fresh = server.connect().await;
    fresh.batch_execute("SELECT 1").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vectors_go_over_the_wire_as_pgvector_writes_them() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE emb (id int PRIMARY KEY, v vector(3)); \
             INSERT INTO emb VALUES (1, '[1,2,3]'), (2, '[0.5,-1,4]'), (3, NULL); \
             CREATE INDEX ON emb USING hnsw (v vector_l2_ops)",
        )
        .await
        .unwrap();
    // Text form in the simple protocol, as psql shows it.
    let messages = client
        .simple_query("SELECT id, v FROM emb ORDER BY id")
        .await
        .unwrap();
    let text: Vec<(String, Option<String>)> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((
                row.get(0).unwrap().to_string(),
                row.get(1).map(str::to_string),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        text,
        vec![
            ("1".into(), Some("[1,2,3]".into())),
            ("2".into(), Some("[0.5,-1,4]".into())),
            ("3".into(), None)
        ]
    );
    // A vector parameter is described as text, pgvector's text form. (A
    // result column typed `vector` makes tokio-postgres look the type up
    // by an oid-typed parameter, which Basalt's catalog describes as int8;
    // psycopg_client.py checks the binary form.)
    client
        .execute("INSERT INTO emb VALUES ($1, $2)", &[&4i32, &"[9,9,9]"])
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT id, v <-> $1 AS d FROM emb ORDER BY v <-> $1 LIMIT 2",
            &[&"[9,9,8]"],
        )
        .await
        .unwrap();
    let got: Vec<(i32, f64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(4, 1.0), (1, 138.0f64.sqrt())]);
    let err = client
        .execute("INSERT INTO emb VALUES (5, '[1,2]')", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), "22000");
    server.stop().await;
}

/// A frontend message: type byte, length, body.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Backend messages read until ReadyForQuery, as their type bytes.
async fn read_until_ready(socket: &mut TcpStream) -> Vec<u8> {
    let mut kinds = Vec::new();
    loop {
        let mut header = [0u8; 5];
        socket.read_exact(&mut header).await.unwrap();
        let len = i32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        socket.read_exact(&mut body).await.unwrap();
        kinds.push(header[0]);
        if header[0] == b'Z' {
            return kinds;
        }
    }
}

/// A raw protocol connection past its startup, at its first ReadyForQuery.
async fn logged_in_socket(addr: std::net::SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut startup = 196608i32.to_be_bytes().to_vec();
    startup.extend_from_slice(b"user\0basalt\0database\0basalt\0\0");
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    socket.write_all(&packet).await.unwrap();
    read_until_ready(&mut socket).await;
    socket
}

/// As PostgreSQL does, the answers to Bind and Execute wait for the Sync:
/// a prepared statement's round trip is one write, not one per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_protocol_answers_go_out_with_the_sync() {
    let server = TestServer::start().await;
    let mut socket = logged_in_socket(server.addr).await;

    let parse = message(b'P', b"\0SELECT 41 + 1\0\0\0");
    let sync = message(b'S', b"");
    socket
        .write_all(&[parse, sync.clone()].concat())
        .await
        .unwrap();
    assert_eq!(read_until_ready(&mut socket).await, b"1Z");

    // Bind (unnamed portal and statement, no parameters, default formats)
    // and Execute (all rows), without the Sync.
    let bind = message(b'B', b"\0\0\0\0\0\0\0\0");
    let execute = message(b'E', b"\0\0\0\0\0");
    socket.write_all(&[bind, execute].concat()).await.unwrap();
    let mut early = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), socket.read(&mut early)).await;
    assert!(read.is_err(), "the server wrote before the Sync");
    socket.write_all(&sync).await.unwrap();
    assert_eq!(read_until_ready(&mut socket).await, b"2DCZ");
    server.stop().await;
}

/// Describe of a statement with parameters that returns no rows answers
/// NoData, as PostgreSQL does; one that returns rows of no columns answers
/// an empty RowDescription.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn describe_answers_no_data_for_statements_without_rows() {
    let server = TestServer::start().await;
    let mut socket = logged_in_socket(server.addr).await;
    let query = message(b'Q', b"CREATE TABLE described (id int PRIMARY KEY)\0");
    socket.write_all(&query).await.unwrap();
    read_until_ready(&mut socket).await;

    let sync = message(b'S', b"");
    for (sql, answer) in [
        (&b"INSERT INTO described VALUES ($1)"[..], &b"1tnZ"[..]),
        (b"SELECT id FROM described WHERE id = $1", b"1tTZ"),
        (b"SELECT FROM described", b"1tTZ"),
    ] {
        // Parse a named statement, then Describe it (type 'S').
        let parse = message(b'P', &[b"s\0", sql, b"\0\0\0"].concat());
        let describe = message(b'D', b"Ss\0");
        let close = message(b'C', b"Ss\0");
        socket
            .write_all(&[parse, describe, sync.clone()].concat())
            .await
            .unwrap();
        let got = read_until_ready(&mut socket).await;
        assert_eq!(got, answer, "{}", String::from_utf8_lossy(sql));
        socket
            .write_all(&[close, sync.clone()].concat())
            .await
            .unwrap();
        read_until_ready(&mut socket).await;
    }
    server.stop().await;
}

/// Shutdown finds each connection between messages and ends it as
/// PostgreSQL's fast shutdown does: FATAL 57P01, then the socket closes.
#[tokio::test]
async fn shutdown_ends_each_connection_with_57p01() {
    let server = TestServer::start().await;
    let (client, connection) =
        tokio_postgres::connect(&server.url("basalt"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let connection = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE kept (id int PRIMARY KEY); BEGIN; INSERT INTO kept VALUES (1)")
        .await
        .expect("open a transaction");
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection ended")
        .expect("connection task");
    let error = ended.expect_err("the server ended the connection with an error");
    assert_eq!(code(&error), "57P01");
    assert!(client.is_closed());
}
