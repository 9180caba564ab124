//! One connection's conversation: pgwire's message loop (as its
//! `process_socket` runs it), run here so that between transactions the
//! connection can move to the network thread pinned to the core its client
//! sends from (why: `crate::shards`). A connection moves as its plain
//! socket and pgwire's codec and buffers, which hold the protocol state
//! (prepared statements, portals); its session lives in its handlers.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{
    negotiate_tls, process_error, process_message, MaybeTls, PgWireMessageServerCodec,
};
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts};

use crate::handler::Prepared;
use crate::server::Handlers;
use crate::shards::Placement;

type Socket = Framed<MaybeTls, PgWireMessageServerCodec<Prepared>>;

/// pgwire's limit for finishing the startup handshake.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Looks in a row that find the client on another core before the
/// connection follows it: a client thread the scheduler moves for a moment
/// should not drag its connections along.
const STRIKES: u8 = 2;

/// What a connection needs on whichever thread serves it.
pub(crate) struct ConnectionTask {
    pub handlers: Arc<Handlers>,
    pub tls: Option<TlsAcceptor>,
    pub stopping: watch::Receiver<bool>,
    pub placement: Placement,
}

/// A connection between two network threads: its socket registered with
/// no runtime, and pgwire's codec and buffers.
struct Parked {
    socket: std::net::TcpStream,
    codec: PgWireMessageServerCodec<Prepared>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

enum Start {
    Fresh(std::net::TcpStream),
    Resumed(Box<Parked>),
}

/// How a stretch of conversation on one thread ended.
enum Stretch {
    Ended,
    Moving(Box<Parked>, usize),
}

/// Serves one connection until the client leaves, or until shutdown finds
/// it between statements; each stretch runs on one network thread.
pub(crate) async fn serve(socket: std::net::TcpStream, task: ConnectionTask) {
    let task = Arc::new(task);
    let mut shard = task.placement.next_shard();
    let mut start = Start::Fresh(socket);
    loop {
        let here = task.clone();
        let mut stretch = AbortOnDrop(
            task.placement
                .handle(shard)
                .spawn(async move { here.converse(start, shard).await }),
        );
        match (&mut stretch.0).await {
            Ok(Stretch::Moving(parked, to)) => {
                let moves = task.placement.count_move();
                tracing::debug!(from = shard, to, moves, "connection follows its client");
                start = Start::Resumed(parked);
                shard = to;
            }
            Ok(Stretch::Ended) | Err(_) => return,
        }
    }
}

/// A stretch still running when its connection's task is dropped (at
/// shutdown) is dropped with it, closing the socket.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ConnectionTask {
    async fn converse(&self, start: Start, shard: usize) -> Stretch {
        let opened = match start {
            Start::Fresh(socket) => self.open(socket).await,
            Start::Resumed(parked) => parked.resume(),
        };
        let (mut socket, startup_deadline) = match opened {
            Ok(Some(opened)) => opened,
            Ok(None) => return Stretch::Ended,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return Stretch::Ended;
            }
        };
        match self.exchange(&mut socket, shard, startup_deadline).await {
            Ok(Some(to)) => match park(socket) {
                Ok(parked) => Stretch::Moving(Box::new(parked), to),
                Err(e) => {
                    tracing::debug!(error = %e, "connection lost while moving");
                    Stretch::Ended
                }
            },
            Ok(None) => Stretch::Ended,
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                Stretch::Ended
            }
        }
    }

    /// The socket after SSL negotiation, or `None` if the client gave up,
    /// was too slow, or asked for TLS the server does not offer.
    async fn open(&self, socket: std::net::TcpStream) -> io::Result<Option<(Socket, Instant)>> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let socket = TcpStream::from_std(socket)?;
        let negotiated = negotiate_tls::<Prepared>(socket, self.tls.clone());
        match tokio::time::timeout_at(deadline, negotiated).await {
            Ok(negotiated) => Ok(negotiated?.map(|socket| (socket, deadline))),
            Err(_) => Ok(None),
        }
    }

    /// pgwire's message loop. Returns the thread to move to when the
    /// connection should move, or `None` once the conversation is over.
    async fn exchange(
        &self,
        socket: &mut Socket,
        shard: usize,
        startup_deadline: Instant,
    ) -> io::Result<Option<usize>> {
        let handlers = &self.handlers;
        // The concrete handlers: pgwire's trait hides the statement type.
        let startup = handlers.startup.clone();
        let session = handlers.connection.clone();
        let cancel = handlers.registry.clone();
        let errors = handlers.error_handler();
        let mut affinity = Affinity::default();
        let mut stopping = self.stopping.clone();
        loop {
            if let Some(to) = affinity.move_to(socket, shard, &self.placement) {
                return Ok(Some(to));
            }
            let next = tokio::select! {
                _ = tokio::time::sleep_until(startup_deadline), if in_startup(socket) => None,
                message = socket.next() => message,
                () = stopped(&mut stopping) => {
                    terminate(socket).await;
                    return Ok(None);
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "unreadable message");
                    return Ok(None);
                }
                None => return Ok(None),
            };
            // Some clients (asyncpg) send Terminate and wait for the close.
            if matches!(message, PgWireFrontendMessage::Terminate(_)) {
                return Ok(None);
            }
            let is_extended_query = match socket.state() {
                PgWireConnectionState::CopyInProgress(is_extended_query) => is_extended_query,
                _ => message.is_extended_query(),
            };
            let is_cancel_request = matches!(message, PgWireFrontendMessage::CancelRequest(_));
            let processed = process_message(
                message,
                socket,
                startup.clone(),
                session.clone(),
                session.clone(),
                session.clone(),
                cancel.clone(),
            )
            .await;
            if let Err(mut e) = processed {
                errors.on_error(socket, &mut e);
                // A FATAL error ends the session, as in PostgreSQL.
                let is_fatal = e.is_fatal();
                process_error(socket, e, is_extended_query).await?;
                if is_fatal {
                    return Ok(None);
                }
            }
            if is_cancel_request {
                return Ok(None);
            }
        }
    }
}

/// Resolves once the server shuts down (or is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

fn in_startup(socket: &Socket) -> bool {
    matches!(
        socket.state(),
        PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
    )
}

/// Shutdown reached this connection between messages: as PostgreSQL's fast
/// shutdown, a FATAL 57P01 before the socket closes (an open transaction
/// is rolled back with the session).
async fn terminate(socket: &mut Socket) {
    if in_startup(socket) {
        return;
    }
    let info = ErrorInfo::new(
        "FATAL".to_owned(),
        "57P01".to_owned(),
        "terminating connection due to administrator command".to_owned(),
    );
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
}

/// Where a connection's client has been sending from lately.
#[derive(Default)]
struct Affinity {
    messages: u32,
    strikes: u8,
}

impl Affinity {
    /// Called before each message is read: every so many messages, between
    /// transactions, the thread on the core the client last sent from, if
    /// it has been another one for [`STRIKES`] looks.
    fn move_to(&mut self, socket: &Socket, here: usize, placement: &Placement) -> Option<usize> {
        if !placement.follows_clients() {
            return None;
        }
        self.messages = self.messages.saturating_add(1);
        if self.messages < placement.check_every() || !idle_between_messages(socket) {
            return None;
        }
        self.messages = 0;
        // A TLS stream's state is not ours to move.
        let MaybeTls::Plain(tcp) = socket.get_ref() else {
            return None;
        };
        // On loopback the kernel receives a packet on the sender's core.
        let cpu = socket2::SockRef::from(tcp).cpu_affinity().ok()?;
        match placement.wanted_shard(cpu, here) {
            Some(there) if there != here => {
                self.strikes += 1;
                if self.strikes < STRIKES {
                    return None;
                }
                self.strikes = 0;
                Some(there)
            }
            _ => {
                self.strikes = 0;
                None
            }
        }
    }
}

/// Idle at a message boundary: nothing read and not yet handled, nothing
/// written and not yet sent, no COPY or startup under way.
fn idle_between_messages(socket: &Socket) -> bool {
    matches!(socket.state(), PgWireConnectionState::ReadyForQuery)
        && socket.read_buffer().is_empty()
        && socket.write_buffer().is_empty()
}

fn park(socket: Socket) -> io::Result<Parked> {
    let parts = socket.into_parts();
    let MaybeTls::Plain(tcp) = parts.io else {
        return Err(io::Error::other("only a plain TCP connection can move"));
    };
    Ok(Parked {
        socket: tcp.into_std()?,
        codec: parts.codec,
        read_buf: parts.read_buf,
        write_buf: parts.write_buf,
    })
}

impl Parked {
    /// The connection registered with the runtime of the calling thread.
    fn resume(self) -> io::Result<Option<(Socket, Instant)>> {
        let tcp = TcpStream::from_std(self.socket)?;
        let mut parts = FramedParts::new(MaybeTls::Plain(tcp), self.codec);
        parts.read_buf = self.read_buf;
        parts.write_buf = self.write_buf;
        // Only a connection past its startup moves.
        Ok(Some((Framed::from_parts(parts), Instant::now())))
    }
}

#[cfg(test)]
mod tests {
    use basalt_query::Database;
    use tokio_postgres::NoTls;

    use crate::config::Config;
    use crate::server::Server;

    /// Every chance to move is taken, so each transaction hops threads
    /// several times: the session, its open transaction, prepared
    /// statements and a suspended portal must all come along.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_moving_between_threads_keeps_its_session_and_statements() {
        let config = Config {
            listen: "127.0.0.1:0".into(),
            network_threads: Some(2),
            ..Config::default()
        };
        let db = Database::open_temporary().expect("database");
        let server = Server::bind(db, &config)
            .await
            .expect("bind")
            .moving_by(|here| Some(1 - here));
        let placement = server.placement();
        let addr = server.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let url = format!(
            "host=127.0.0.1 port={} user=basalt dbname=basalt",
            addr.port()
        );
        let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(connection);

        client
            .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            .await
            .expect("create");
        let insert = client
            .prepare("INSERT INTO t VALUES ($1, $2)")
            .await
            .expect("prepare");
        let select = client
            .prepare("SELECT v FROM t WHERE id = $1")
            .await
            .expect("prepare");
        let transaction = client.transaction().await.expect("begin");
        for id in 0..40i32 {
            transaction
                .execute(&insert, &[&id, &format!("v{id}")])
                .await
                .expect("insert");
            let row = transaction
                .query_one(&select, &[&id])
                .await
                .expect("select");
            assert_eq!(row.get::<_, String>(0), format!("v{id}"));
        }
        let scan = transaction
            .prepare("SELECT id FROM t ORDER BY id")
            .await
            .expect("prepare");
        let portal = transaction.bind(&scan, &[]).await.expect("bind");
        let mut seen = Vec::new();
        loop {
            let rows = transaction.query_portal(&portal, 7).await.expect("fetch");
            if rows.is_empty() {
                break;
            }
            seen.extend(rows.iter().map(|row| row.get::<_, i32>(0)));
        }
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        transaction.commit().await.expect("commit");

        let count: i64 = client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(count, 40);
        let error = client
            .batch_execute("SELECT * FROM missing")
            .await
            .unwrap_err();
        assert_eq!(error.code().map(|c| c.code()), Some("42P01"));
        assert!(
            placement.moves() >= 40,
            "only {} moves: the test did not exercise moving",
            placement.moves()
        );
        drop(client);
        let _ = stop.send(());
        running.await.expect("server task").expect("server");
    }
}
