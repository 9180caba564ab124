//! A server started in-process on a free loopback port, for the wire tests.

#![allow(dead_code)]

use std::net::SocketAddr;

use basalt::server::{Config, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<basalt::Database>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let db = basalt::Database::open_temporary().expect("temporary database");
        TestServer::start_with_database(db, config).await
    }

    pub async fn start_with_database(db: basalt::Database, mut config: Config) -> TestServer {
        config.listen = "127.0.0.1:0".to_string();
        let server = Server::bind(db, &config).await.expect("bind");
        let addr = server.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .ok()
        });
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname=basalt",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub async fn connect(&self) -> Client {
        self.try_connect("basalt", None).await.expect("connect")
    }

    pub async fn try_connect(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut url = self.url(user);
        if let Some(password) = password {
            url.push_str(&format!(" password={password}"));
        }
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The SQLSTATE of a failed statement.
pub fn code(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {error}"))
}

/// A client speaking the protocol by hand, for what drivers hide: the
/// transaction status in ReadyForQuery, messages a driver never sends,
/// and what arrives while no request is pending.
pub struct RawClient {
    pub socket: tokio::net::TcpStream,
}

/// One backend message: its type byte and body.
pub type RawMessage = (u8, Vec<u8>);

impl RawClient {
    /// Connects and logs in as `basalt` (trust), reading up to the first
    /// ReadyForQuery.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut client = RawClient {
            socket: tokio::net::TcpStream::connect(addr).await.expect("connect"),
        };
        client.send_startup("basalt").await;
        client.until_ready().await;
        client
    }

    pub async fn send_startup(&mut self, user: &str) {
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(format!("user\0{user}\0database\0basalt\0\0").as_bytes());
        let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        self.write(&message).await;
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.socket.write_all(bytes).await.expect("write");
    }

    /// Sends a message of type `kind` with `body`.
    pub async fn send(&mut self, kind: u8, body: &[u8]) {
        let mut message = vec![kind];
        message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        message.extend_from_slice(body);
        self.write(&message).await;
    }

    pub async fn query(&mut self, sql: &str) {
        self.send(b'Q', format!("{sql}\0").as_bytes()).await;
    }

    /// Parse, Bind, Execute and Sync of `sql` (no parameters) in the
    /// unnamed statement and portal.
    pub async fn extended(&mut self, sql: &str) {
        self.send(b'P', format!("\0{sql}\0\0\0").as_bytes()).await;
        self.send(b'B', b"\0\0\0\0\0\0\0\0").await;
        self.send(b'E', b"\0\0\0\0\0").await;
        self.send(b'S', b"").await;
    }

    /// The next message, or `None` when the server closed the connection.
    pub async fn next(&mut self) -> Option<RawMessage> {
        use tokio::io::AsyncReadExt;
        let mut header = [0u8; 5];
        self.socket.read_exact(&mut header).await.ok()?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let mut body = vec![0u8; usize::try_from(len).ok()?.checked_sub(4)?];
        self.socket.read_exact(&mut body).await.ok()?;
        Some((header[0], body))
    }

    /// Messages up to and including ReadyForQuery; the status byte it
    /// carries and the SQLSTATEs of the errors before it.
    pub async fn until_ready(&mut self) -> (u8, Vec<String>) {
        let mut codes = Vec::new();
        loop {
            let (kind, body) = self.next().await.expect("a message before ReadyForQuery");
            match kind {
                b'Z' => return (body[0], codes),
                b'E' => codes.push(error_field(&body, b'C').unwrap_or_default()),
                _ => {}
            }
        }
    }
}

/// A field of an ErrorResponse or NoticeResponse body.
pub fn error_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        if kind == field {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}
