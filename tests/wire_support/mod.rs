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

    pub async fn start_with(mut config: Config) -> TestServer {
        config.listen = "127.0.0.1:0".to_string();
        let db = basalt::Database::open_temporary().expect("temporary database");
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
