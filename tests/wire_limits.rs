//! One client cannot stop the server or starve the others, and is told
//! the truth about its transaction: pre-login limits, login floods,
//! statement and idle timeouts, clients that vanish mid-statement, and the
//! transaction status after a failed COMMIT. Tried over the wire.

mod wire_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basalt::server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire_support::{code, error_field, RawClient, TestServer};

/// A cross join whose count takes far longer than any test waits.
const RUNAWAY: &str =
    "SELECT count(*) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_has_not_logged_in_cannot_make_the_server_buffer() {
    let server = TestServer::start_with(Config {
        users: BTreeMap::from([("alice".to_string(), "secret".to_string())]),
        ..Config::default()
    })
    .await;
    let mut raw = RawClient {
        socket: TcpStream::connect(server.addr).await.unwrap(),
    };
    raw.send_startup("alice").await;
    let (kind, _) = raw.next().await.expect("the SASL challenge");
    assert_eq!(kind, b'R');
    // A password message claiming half a gigabyte, then its bytes.
    let mut header = vec![b'p'];
    header.extend_from_slice(&(512i32 << 20).to_be_bytes());
    raw.write(&header).await;
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0usize;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if raw.socket.write_all(&chunk).await.is_err() {
                return true;
            }
            sent += chunk.len();
            if sent > 64 << 20 {
                return false;
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(
        closed,
        "the server read {sent} bytes from a client that never logged in"
    );
    // Those who log in are served.
    let client = server.try_connect("alice", Some("secret")).await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unfinished_logins_keeps_no_one_out() {
    let server = TestServer::start_with(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let first = server.connect().await;
    // Far more silent connections than there are startup slots.
    let mut silent = Vec::new();
    for _ in 0..60 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    first.batch_execute("SELECT 1").await.unwrap();
    let second = server.connect().await;
    second.batch_execute("SELECT 1").await.unwrap();
    // The session slots are full now: a third login is refused, not queued.
    let third = server.try_connect("basalt", None).await.unwrap_err();
    assert_eq!(code(&third), "53300", "{third:?}");
    drop(silent);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_ends_the_transaction_in_both_protocols() {
    let server = TestServer::start().await;
    let writer = server.connect().await;
    writer
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
        .await
        .unwrap();
    for extended in [false, true] {
        let mut raw = RawClient::connect(server.addr).await;
        raw.query("BEGIN; UPDATE t SET v = v + 1 WHERE id = 1")
            .await;
        assert_eq!(raw.until_ready().await, (b'T', vec![]));
        writer
            .execute("UPDATE t SET v = v + 10 WHERE id = 1", &[])
            .await
            .unwrap();
        if extended {
            raw.extended("COMMIT").await;
        } else {
            raw.query("COMMIT").await;
        }
        let (status, codes) = raw.until_ready().await;
        assert_eq!(codes, ["40001"], "extended: {extended}");
        assert_eq!(status, b'I', "a failed COMMIT leaves no transaction");
        // The next statement runs outside any transaction.
        raw.query("SELECT 1").await;
        assert_eq!(raw.until_ready().await, (b'I', vec![]));
    }
    let v: i32 = writer
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 20, "only the winner's updates took effect");
    // A statement that does not parse fails an open block, as in Postgres.
    let mut raw = RawClient::connect(server.addr).await;
    raw.query("BEGIN").await;
    raw.until_ready().await;
    raw.query("SELEC 1").await;
    assert_eq!(raw.until_ready().await, (b'E', vec!["42601".to_string()]));
    raw.query("ROLLBACK").await;
    assert_eq!(raw.until_ready().await, (b'I', vec![]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_stops_a_runaway_query_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let started = Instant::now();
    let err = client.batch_execute(RUNAWAY).await.unwrap_err();
    assert_eq!(code(&err), "57014", "{err}");
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("statement timeout")),
        "{message:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    client.batch_execute("SELECT 1").await.unwrap();
    // Inside a block the timeout fails the block.
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        code(&client.batch_execute(RUNAWAY).await.unwrap_err()),
        "57014"
    );
    assert_eq!(
        code(&client.batch_execute("SELECT 1").await.unwrap_err()),
        "25P02"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    let err = client
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "22023");
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_has_its_statement_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Config {
        allow_files: Some(dir.path().to_path_buf()),
        ..Config::default()
    })
    .await;
    let url = server.url("basalt");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // An export that writes as it goes, for far longer than the test runs:
    // the file stops growing once the statement stops.
    let export = tokio::spawn(async move {
        client
            .batch_execute(
                "COPY (SELECT a.value, repeat('x', 100) FROM generate_series(1, 1000000000) a) \
                 TO 'big.csv' (FORMAT csv)",
            )
            .await
    });
    let file = dir.path().join("big.csv");
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while size() < (4 << 20) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(size() >= 4 << 20, "the export started");
    // The client vanishes: its socket closes with no Terminate.
    connection.abort();
    export.abort();

    tokio::time::sleep(Duration::from_secs(4)).await;
    let stopped_at = size();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        size(),
        stopped_at,
        "the statement went on after its client left"
    );
    // Others are served meanwhile.
    let other = server.connect().await;
    other.batch_execute("SELECT 1").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idling_inside_a_transaction_past_the_limit_ends_the_connection() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.addr).await;
    raw.query("SET idle_in_transaction_session_timeout = '300ms'; BEGIN")
        .await;
    assert_eq!(raw.until_ready().await.0, b'T');
    let (kind, body) = tokio::time::timeout(Duration::from_secs(20), raw.next())
        .await
        .expect("the server ends the idle transaction")
        .expect("a FATAL error before the connection closes");
    assert_eq!(kind, b'E');
    assert_eq!(error_field(&body, b'C').as_deref(), Some("25P03"));
    assert_eq!(error_field(&body, b'S').as_deref(), Some("FATAL"));
    let mut rest = Vec::new();
    let _ = raw.socket.read_to_end(&mut rest).await;
    // Idle outside a transaction is not limited.
    let mut idle = RawClient::connect(server.addr).await;
    idle.query("SET idle_in_transaction_session_timeout = '100ms'")
        .await;
    idle.until_ready().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    idle.query("SELECT 1").await;
    assert_eq!(idle.until_ready().await, (b'I', vec![]));
    server.stop().await;
}

/// Statements too deep to run are refused with 54001 in both protocols, and
/// the server (every connection, not only the sender's) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_too_complex_is_refused_and_the_server_goes_on() {
    let server = TestServer::start().await;
    let bystander = server.connect().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE deep (a bigint PRIMARY KEY)")
        .await
        .unwrap();
    let sum = format!("SELECT {}", vec!["1"; 2000].join("+"));
    let ands = format!(
        "SELECT * FROM deep WHERE {}",
        vec!["a = 1"; 200_000].join(" AND ")
    );
    let parens = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    for sql in [&sum, &ands, &parens] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&err), "54001", "{err}");
        let err = client.query(sql.as_str(), &[]).await.unwrap_err();
        assert_eq!(code(&err), "54001", "{err}");
    }
    client.batch_execute("SELECT 1").await.unwrap();
    bystander.batch_execute("SELECT 1").await.unwrap();
    server.stop().await;
}

/// The SASL exchange of a user that does not exist goes as a real user's
/// (a server challenge with a salt that stays the same), failing only at
/// the proof with the same error as a wrong password: neither the messages
/// nor the work done tell which users exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_is_challenged_like_a_known_one() {
    let server = TestServer::start_with(Config {
        users: BTreeMap::from([("alice".to_string(), "secret".to_string())]),
        ..Config::default()
    })
    .await;
    async fn challenge(server: &TestServer, user: &str) -> String {
        let mut raw = RawClient {
            socket: TcpStream::connect(server.addr).await.unwrap(),
        };
        raw.send_startup(user).await;
        let (kind, body) = raw.next().await.unwrap();
        assert_eq!(
            (kind, &body[..4]),
            (b'R', &10i32.to_be_bytes()[..]),
            "{user}"
        );
        let first = b"n,,n=,r=abcdefghijklmnopqrstuvwx";
        let mut message = b"SCRAM-SHA-256\0".to_vec();
        message.extend_from_slice(&(first.len() as i32).to_be_bytes());
        message.extend_from_slice(first);
        raw.send(b'p', &message).await;
        let (kind, body) = raw.next().await.unwrap();
        assert_eq!(
            (kind, &body[..4]),
            (b'R', &11i32.to_be_bytes()[..]),
            "{user}"
        );
        let text = String::from_utf8_lossy(&body[4..]).to_string();
        text.split(',')
            .find_map(|part| part.strip_prefix("s="))
            .unwrap_or_else(|| panic!("no salt in {text}"))
            .to_string()
    }
    let alice = challenge(&server, "alice").await;
    assert_eq!(alice, challenge(&server, "alice").await);
    let mallory = challenge(&server, "mallory").await;
    assert_eq!(mallory, challenge(&server, "mallory").await);
    assert_ne!(mallory, alice);
    for (user, password) in [("alice", "wrong"), ("mallory", "secret")] {
        let err = server.try_connect(user, Some(password)).await.unwrap_err();
        assert_eq!(code(&err), "28P01", "{err}");
        let message = err.as_db_error().map(|e| e.message().to_string());
        assert_eq!(
            message.as_deref(),
            Some(format!("password authentication failed for user \"{user}\"").as_str())
        );
    }
    server.try_connect("alice", Some("secret")).await.unwrap();
    server.stop().await;
}

/// Random protocol messages, before and after login, get an error or a
/// closed connection; the server keeps serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_protocol_messages_never_bring_the_server_down() {
    use rand::{Rng, SeedableRng};
    let server = TestServer::start().await;
    let bystander = server.connect().await;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
    let iterations: usize = std::env::var("BASALT_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let kinds = b"QPBEDSCHFXdcfpz\0";
    for iteration in 0..iterations {
        let mut raw = if iteration % 3 == 0 {
            RawClient {
                socket: TcpStream::connect(server.addr).await.unwrap(),
            }
        } else {
            RawClient::connect(server.addr).await
        };
        for _ in 0..rng.gen_range(1..4) {
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let len = rng.gen_range(0..200);
            let mut body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if rng.gen_bool(0.3) {
                body = b"SELECT 1\0\0\0".to_vec();
            }
            let mut message = vec![kind];
            let claimed = if rng.gen_bool(0.1) {
                rng.gen::<i32>()
            } else {
                (body.len() + 4) as i32
            };
            message.extend_from_slice(&claimed.to_be_bytes());
            message.extend_from_slice(&body);
            // The server may have closed the connection already.
            if raw.socket.write_all(&message).await.is_err() {
                break;
            }
        }
        // Whatever comes back, it comes back in bounded time.
        let _ = tokio::time::timeout(Duration::from_millis(200), raw.next()).await;
    }
    bystander.batch_execute("SELECT 1").await.unwrap();
    server
        .connect()
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    server.stop().await;
}

/// A multi-statement query reads each result before the next statement
/// runs; those results count against the query memory limit, so a query
/// whose results outgrow it fails with 53200 rather than growing, and the
/// same rows as one statement stream through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_held_for_a_multi_statement_query_are_bounded() {
    let server = TestServer::start_with_database(
        basalt::Database::open_temporary()
            .unwrap()
            .with_query_memory_limit(32 << 20)
            .unwrap(),
        Config::default(),
    )
    .await;
    let client = server.connect().await;
    let big = "SELECT repeat('x', 1000) FROM generate_series(1, 100000)";
    let err = client
        .simple_query(&format!("{big}; SELECT 1"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "53200", "{err:?}");
    let rows = client.simple_query(big).await.unwrap();
    let data_rows = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(data_rows, 100_000);
    server.stop().await;
}
