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

use crate::admission::StartupSlot;
use crate::handler::Prepared;
use crate::preauth::Capped;
use crate::server::Handlers;
use crate::shards::Placement;

type Socket = Framed<Capped, PgWireMessageServerCodec<Prepared>>;

/// How often a running statement's connection is checked for a client that
/// has gone away (Postgres' `client_connection_check_interval`).
const CLIENT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The startup slot the connection holds until it has logged in.
    pub starting: std::sync::Mutex<Option<StartupSlot>>,
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
            Ok(negotiated) => Ok(negotiated?.map(|socket| (capped(socket), deadline))),
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
        // A second descriptor of the socket, polled for a hangup while a
        // statement runs (the socket itself is busy with the statement).
        let watch = client_socket(socket).and_then(|fd| fd.try_clone_to_owned().ok());
        let eviction = self
            .starting
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(StartupSlot::eviction));
        loop {
            if let Some(to) = affinity.move_to(socket, shard, &self.placement) {
                return Ok(Some(to));
            }
            let idle_limit = self.idle_in_transaction_limit(socket).await;
            let next = tokio::select! {
                _ = tokio::time::sleep_until(startup_deadline), if in_startup(socket) => None,
                () = evicted(eviction.as_deref()), if in_startup(socket) => {
                    tracing::debug!("a newer connection took this one's startup slot");
                    None
                }
                message = socket.next() => message,
                () = stopped(&mut stopping) => {
                    terminate(socket, "57P01", "terminating connection due to administrator command").await;
                    return Ok(None);
                }
                () = sleep_for(idle_limit), if idle_limit.is_some() => {
                    terminate(socket, "25P03", "terminating connection due to idle-in-transaction timeout").await;
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
            let was_starting = in_startup(socket);
            let processing = process_message(
                message,
                socket,
                startup.clone(),
                session.clone(),
                session.clone(),
                session.clone(),
                cancel.clone(),
            );
            let processed =
                until_client_gone(processing, watch.as_ref(), session.interrupt()).await;
            if was_starting && !in_startup(socket) {
                // Logged in: the session slot is held now, not this one.
                self.starting.lock().map(|mut slot| slot.take()).ok();
                socket.get_mut().lift();
            }
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

impl ConnectionTask {
    /// How long the connection may stay idle before its next message: the
    /// session's `idle_in_transaction_session_timeout` while it is inside
    /// a transaction block, else without limit.
    async fn idle_in_transaction_limit(&self, socket: &Socket) -> Option<Duration> {
        if in_startup(socket) {
            return None;
        }
        let session = self.handlers.connection.session().lock().await;
        match session.transaction_status() {
            b'T' | b'E' => session.idle_in_transaction_timeout(),
            _ => None,
        }
    }
}

async fn evicted(eviction: Option<&tokio::sync::Notify>) {
    match eviction {
        Some(eviction) => eviction.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_for(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// The framed socket around a negotiated stream, capped until login.
fn capped(socket: Framed<MaybeTls, PgWireMessageServerCodec<Prepared>>) -> Socket {
    let parts = socket.into_parts();
    let mut capped = FramedParts::new(Capped::new(parts.io, false), parts.codec);
    capped.read_buf = parts.read_buf;
    capped.write_buf = parts.write_buf;
    Framed::from_parts(capped)
}

/// The TCP socket under a connection, TLS or not.
fn client_socket(socket: &Socket) -> Option<std::os::fd::BorrowedFd<'_>> {
    use std::os::fd::AsFd;
    match socket.get_ref().get_ref() {
        MaybeTls::Plain(tcp) => Some(tcp.as_fd()),
        MaybeTls::Tls(tls) => Some(tls.get_ref().0.as_fd()),
        MaybeTls::Unix(unix) => Some(unix.as_fd()),
        _ => None,
    }
}

/// Runs `work` (one message's processing); meanwhile, every
/// [`CLIENT_CHECK_INTERVAL`], looks whether the client has closed its end,
/// and if so stops the statement, whose results nobody would read.
async fn until_client_gone<T>(
    work: impl std::future::Future<Output = T>,
    watch: Option<&std::os::fd::OwnedFd>,
    interrupt: &basalt_query::Interrupt,
) -> T {
    let mut work = std::pin::pin!(work);
    let Some(fd) = watch else {
        return work.await;
    };
    // Most messages are answered on their first poll: arming a timer for
    // them would cost a wake-up of the I/O driver each.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(output) = first {
        return output;
    }
    loop {
        tokio::select! {
            biased;
            output = &mut work => return output,
            () = tokio::time::sleep(CLIENT_CHECK_INTERVAL) => {
                if client_gone(fd) {
                    tracing::debug!("client went away; cancelling its statement");
                    interrupt.cancel();
                    return work.await;
                }
            }
        }
    }
}

/// Whether the peer has closed or reset the connection: poll(2) reports
/// POLLRDHUP, POLLHUP or POLLERR, as Postgres checks it.
fn client_gone(fd: &std::os::fd::OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(fd, PollFlags::RDHUP)];
    match poll(&mut fds, Some(&rustix::event::Timespec::default())) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        _ => false,
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

/// The connection ends between messages, with a FATAL error before the
/// socket closes (an open transaction is rolled back with the session):
/// 57P01 at shutdown, as PostgreSQL's fast shutdown, or 25P03 after idling
/// too long inside a transaction.
async fn terminate(socket: &mut Socket, code: &str, message: &str) {
    if in_startup(socket) {
        return;
    }
    let info = ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message.to_owned());
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
        let MaybeTls::Plain(tcp) = socket.get_ref().get_ref() else {
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
    let MaybeTls::Plain(tcp) = parts.io.into_inner() else {
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
        // Only a connection past its startup moves.
        let mut parts = FramedParts::new(Capped::new(MaybeTls::Plain(tcp), true), self.codec);
        parts.read_buf = self.read_buf;
        parts.write_buf = self.write_buf;
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
