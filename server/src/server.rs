//! The listener: accepts connections, gives each its own session, refuses
//! those past `max_connections`, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use basalt_query::{Database, FileAccess};
use pgwire::api::PgWireServerHandlers;
use pgwire::tokio::TlsAcceptor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::Startup;
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::handler::Connection;
use crate::serve::{serve, ConnectionTask};
use crate::shards::Shards;

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    db: Database,
    startup: Arc<Startup>,
    registry: Arc<CancelRegistry>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
    shutdown_timeout: Duration,
    /// The network threads connections are dealt out to.
    shards: Shards,
}

impl Server {
    pub async fn bind(db: Database, config: &Config) -> Result<Server> {
        config.check()?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::io(format!("listening on {}", config.listen), e))?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
            _ => None,
        };
        // A client's SQL must not reach the server's files unless allowed.
        let db = db.with_file_access(match &config.allow_files {
            Some(dir) => FileAccess::Within(dir.clone()),
            None => FileAccess::Denied,
        });
        Ok(Server {
            listener,
            db,
            startup: Arc::new(Startup::new(config.users.clone())),
            registry: Arc::new(CancelRegistry::default()),
            tls,
            max_connections: config.max_connections,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            shards: Shards::start(config.network_threads())?,
        })
    }

    /// Moves connections by `rule` (from a thread, the thread to move to)
    /// at every chance, for tests of moving.
    #[cfg(test)]
    pub(crate) fn moving_by(mut self, rule: fn(usize) -> Option<usize>) -> Server {
        self.shards = self.shards.with_rule(rule);
        self
    }

    #[cfg(test)]
    pub(crate) fn placement(&self) -> crate::shards::Placement {
        self.shards.placement().clone()
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the listen address", e))
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets running
    /// statements finish (up to the shutdown timeout) and closes every
    /// connection. Returns the database so the caller can close it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Database> {
        let (stop, stopping) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let Ok((socket, peer)) = accepted else { continue };
                    let _ = socket.set_nodelay(true);
                    if open.load(Ordering::SeqCst) >= self.max_connections {
                        tokio::spawn(refuse(socket));
                        continue;
                    }
                    tracing::debug!(%peer, "connection");
                    let handlers = Arc::new(Handlers {
                        connection: Arc::new(Connection::new(self.db.session(), self.registry.clone())),
                        startup: self.startup.clone(),
                        registry: self.registry.clone(),
                    });
                    let guard = OpenGuard::new(open.clone());
                    let task = ConnectionTask {
                        handlers,
                        tls: self.tls.clone(),
                        stopping: stopping.clone(),
                        placement: self.shards.placement().clone(),
                    };
                    // A socket belongs to the runtime that registered it: it
                    // moves as a plain socket and is registered again there.
                    let Ok(socket) = socket.into_std() else { continue };
                    connections.spawn(async move {
                        let _guard = guard;
                        serve(socket, task).await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            connections.shutdown().await;
        }
        let shards = self.shards;
        // Joining the threads blocks; they have nothing left to run.
        let _ = tokio::task::spawn_blocking(move || shards.stop()).await;
        Ok(self.db)
    }
}

/// Postgres' answer past max_connections, sent before closing.
async fn refuse(mut socket: TcpStream) {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    message.extend_from_slice(&body);
    let _ = socket.write_all(&message).await;
    let _ = socket.shutdown().await;
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// pgwire's view of one connection's handlers.
pub(crate) struct Handlers {
    pub connection: Arc<Connection>,
    pub startup: Arc<Startup>,
    pub registry: Arc<CancelRegistry>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.connection.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.connection.clone()
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        self.connection.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.registry.clone()
    }
}
