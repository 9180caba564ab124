//! The listener: accepts connections, gives each its own session, refuses
//! those past `max_connections`, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use basalt_query::{Database, FileAccess};
use pgwire::api::PgWireServerHandlers;
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admission::Admission;
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
    admission: Arc<Admission>,
    shutdown_timeout: Duration,
    /// The network threads connections are dealt out to.
    shards: Shards,
    /// The query threads, when the server made them.
    queries: QueryThreads,
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
        // Queries run on a pool of their own, so that one spreading over
        // every core never holds up the threads answering clients (and
        // their checks for clients that went away).
        let (db, queries) = if db.has_executor() {
            (db, QueryThreads(None))
        } else {
            let queries = tokio::runtime::Builder::new_multi_thread()
                .thread_name("basalt-query")
                .thread_stack_size(crate::STATEMENT_STACK_BYTES)
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the query threads", e))?;
            (
                db.with_executor(queries.handle().clone()),
                QueryThreads(Some(queries)),
            )
        };
        // A client's SQL must not reach the server's files unless allowed.
        let db = db
            .with_file_access(match &config.allow_files {
                Some(dir) => FileAccess::Within(dir.clone()),
                None => FileAccess::Denied,
            })
            .map_err(|e| Error::Config(format!("allow_files: {e}")))?;
        let admission = Admission::new(
            config.max_connections,
            config.max_connections.max(MIN_STARTUP_SLOTS),
        );
        Ok(Server {
            listener,
            db,
            startup: Arc::new(Startup::new(config.users.clone(), admission.clone())),
            registry: Arc::new(CancelRegistry::default()),
            tls,
            admission,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            shards: Shards::start(config.network_threads())?,
            queries,
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
        let mut connections = JoinSet::new();
        let mut accept_errors = 0u32;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(accepted) => {
                            accept_errors = 0;
                            accepted
                        }
                        Err(e) => {
                            // Out of descriptors (EMFILE) or memory: accept
                            // would fail again at once, so wait a little
                            // instead of spinning, as Postgres' postmaster does.
                            accept_errors = accept_errors.saturating_add(1);
                            let pause = accept_backoff(accept_errors);
                            tracing::warn!(error = %e, ?pause, "could not accept a connection");
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                    };
                    let _ = socket.set_nodelay(true);
                    let starting = self.admission.start();
                    tracing::debug!(%peer, "connection");
                    let handlers = Arc::new(Handlers {
                        connection: Arc::new(Connection::new(self.db.session(), self.registry.clone())),
                        startup: self.startup.clone(),
                        registry: self.registry.clone(),
                    });
                    let task = ConnectionTask {
                        handlers,
                        tls: self.tls.clone(),
                        stopping: stopping.clone(),
                        placement: self.shards.placement().clone(),
                        starting: std::sync::Mutex::new(Some(starting)),
                    };
                    // A socket belongs to the runtime that registered it: it
                    // moves as a plain socket and is registered again there.
                    let Ok(socket) = socket.into_std() else { continue };
                    connections.spawn(serve(socket, task));
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
        drop(self.queries);
        Ok(self.db)
    }
}

/// The pause after `errors` accept failures in a row: growing from 10 ms
/// to a second.
fn accept_backoff(errors: u32) -> Duration {
    Duration::from_millis((10u64 << errors.min(7)).min(1000))
}

/// Connections that may be logging in at once, at the least: a server with
/// few sessions still lets several clients log in side by side.
const MIN_STARTUP_SLOTS: usize = 16;

/// The runtime queries run on, stopped without waiting when dropped: it
/// may be dropped inside the caller's runtime, where a plain drop (which
/// waits for its threads) is not allowed.
struct QueryThreads(Option<tokio::runtime::Runtime>);

impl Drop for QueryThreads {
    fn drop(&mut self) {
        if let Some(queries) = self.0.take() {
            queries.shutdown_background();
        }
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
