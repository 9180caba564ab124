//! The embedded SQL entry points: a [`Database`] wraps an open storage
//! directory; each [`Session`] parses statements, keeps its transaction
//! state, runs DDL and DML itself and hands queries to DataFusion, whose
//! `basalt` catalog is the storage catalog.

pub(crate) mod catalog;
pub(crate) mod copy;
pub(crate) mod ddl;
pub(crate) mod dml;
pub(crate) mod index;
pub(crate) mod load;
pub(crate) mod oltp;
pub(crate) mod point_select;
pub mod prepare;
pub(crate) mod settings;

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use basalt_storage::{Db, Options};
use datafusion::common::{DataFusionError, TableReference};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{self, ObjectName};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use futures::TryStreamExt;
use parking_lot::{Mutex, RwLock};

use crate::catalog::{SessionShared, CATALOG, SCHEMA};
use crate::pg::sequences::Sequences;
use crate::session::catalog::StorageCatalog;
use crate::session::settings::Settings;
use crate::sql::error::{Error, Result};
use crate::sql::interrupt::{guard_stream, interruptible, Deadline, Interrupt};

/// An open database, shared by its sessions.
#[derive(Debug, Clone)]
pub struct Database {
    db: Arc<Db>,
    sequences: Arc<Sequences>,
    /// Shared by every session's queries, bounded when a limit is set.
    runtime: Arc<RuntimeEnv>,
    /// Which server-side files `COPY ... FROM/TO 'path'` may touch.
    file_access: crate::io::load::FileAccess,
    /// Where DataFusion plans run; the caller's runtime when `None`.
    executor: Option<tokio::runtime::Handle>,
    /// Keeps a scratch directory alive for [`Database::open_temporary`].
    _scratch: Option<Arc<tempfile::TempDir>>,
}

impl Database {
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Database::open_with(path, Options::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Database> {
        let db = Db::open(path, options)?;
        crate::io::load::drop_abandoned_staging_tables(&db);
        Ok(Database::from_storage(Arc::new(db)))
    }

    /// A database in a scratch directory removed when the last handle goes:
    /// for tests and throwaway work.
    pub fn open_temporary() -> Result<Database> {
        let dir = tempfile::tempdir()
            .map_err(|e| Error::Storage(basalt_storage::Error::io("temporary directory", e)))?;
        let db = Db::open(dir.path(), Options::default())?;
        Ok(Database {
            _scratch: Some(Arc::new(dir)),
            ..Database::from_storage(Arc::new(db))
        })
    }

    pub fn from_storage(db: Arc<Db>) -> Database {
        Database {
            db,
            sequences: Arc::new(Sequences::default()),
            runtime: runtime_env(None),
            file_access: crate::io::load::FileAccess::Any,
            executor: None,
            _scratch: None,
        }
    }

    /// Bounds the memory all running queries hold together; a query that
    /// needs more fails with 53200 rather than taking the process down.
    pub fn with_query_memory_limit(mut self, bytes: u64) -> Result<Database> {
        let pool = datafusion::execution::memory_pool::FairSpillPool::new(
            usize::try_from(bytes).unwrap_or(usize::MAX),
        );
        self.runtime = runtime_env(Some(Arc::new(pool)));
        Ok(self)
    }

    /// Sets which server-side files `COPY ... FROM/TO 'path'`, the
    /// `read_*` functions and [`Session::load`] may read and write in this
    /// database's sessions (any, by default). A directory is refused if it
    /// overlaps the data directory.
    pub fn with_file_access(mut self, access: crate::io::load::FileAccess) -> Result<Database> {
        self.file_access = match access {
            crate::io::load::FileAccess::Within(dir) => {
                crate::io::load::FileAccess::within(&dir, self.db.path())?
            }
            other => other,
        };
        Ok(self)
    }

    /// Runs every session's DataFusion plans (planning and execution) on
    /// `executor` rather than on the runtime that polls their results. A
    /// server gives them a runtime of their own so that a query spreading
    /// over every core does not hold up the threads answering the network,
    /// and those threads can be single-threaded runtimes that keep their
    /// connections. Point lookups and writes stay on the caller's runtime.
    pub fn with_executor(mut self, executor: tokio::runtime::Handle) -> Database {
        self.executor = Some(executor);
        self
    }

    /// Whether plans run on an executor runtime of their own
    /// ([`Database::with_executor`]).
    pub fn has_executor(&self) -> bool {
        self.executor.is_some()
    }

    /// Closes the storage, syncing its WAL, once no session holds it; a
    /// storage still shared is synced when its last holder drops it.
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.db) {
            Ok(db) => db.close().map_err(Error::from),
            Err(_) => Ok(()),
        }
    }

    pub fn storage(&self) -> &Arc<Db> {
        &self.db
    }

    pub fn session(&self) -> Session {
        let config = session_config();
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_physical_optimizer_rules(crate::optimizer::physical_rules())
            .build();
        let ctx = SessionContext::new_with_state(state);
        for function in crate::pg::functions::functions("basalt") {
            ctx.register_udf(function);
        }
        for function in crate::pg::catalog::functions(self.db.clone()) {
            ctx.register_udf(function);
        }
        for function in crate::types::json::functions() {
            ctx.register_udf(function);
        }
        for function in crate::types::vector::functions() {
            ctx.register_udf(function);
        }
        for (name, function) in crate::io::readfile::functions(&self.file_access) {
            ctx.register_udtf(name, function);
        }
        for function in crate::pg::sequences::functions(self.db.clone(), self.sequences.clone()) {
            ctx.register_udf(function);
        }
        {
            use datafusion::execution::FunctionRegistry;
            let state = ctx.state_ref();
            // Registering a planner cannot fail for a session state.
            let _ = state
                .write()
                .register_expr_planner(Arc::new(crate::types::json::JsonOperators));
            let _ = state
                .write()
                .register_expr_planner(Arc::new(crate::types::vector::VectorOperators));
        }
        let shared = Arc::new(SessionShared {
            db: self.db.clone(),
            txn: Mutex::new(None),
            state: RwLock::new(ctx.state_weak_ref()),
            temp_tables: Mutex::new(Default::default()),
            ef_search: Arc::new(std::sync::atomic::AtomicUsize::new(
                crate::index::DEFAULT_EF_SEARCH,
            )),
        });
        for rule in crate::optimizer::analyzer_rules() {
            ctx.add_analyzer_rule(rule);
        }
        for rule in crate::index::planner_rules(&shared) {
            ctx.add_optimizer_rule(rule);
        }
        ctx.register_catalog(
            CATALOG,
            Arc::new(StorageCatalog {
                shared: shared.clone(),
            }),
        );
        Session {
            ctx,
            shared,
            sequences: self.sequences.clone(),
            block: Block::None,
            implicit: false,
            settings: Settings::default(),
            copy_in: None,
            file_access: self.file_access.clone(),
            executor: self.executor.clone(),
            interrupt: Arc::new(Interrupt::default()),
            deadline: Deadline::after(None),
            _scratch: self._scratch.clone(),
        }
    }
}

/// What a statement returns.
pub enum QueryResult {
    /// Rows, streamed. `command` names the statement for its completion tag
    /// (`SELECT`, or `INSERT`/`UPDATE`/`DELETE` with RETURNING).
    Rows {
        command: &'static str,
        schema: SchemaRef,
        stream: SendableRecordBatchStream,
    },
    /// A statement without rows: its Postgres command tag (`CREATE TABLE`,
    /// `INSERT 0 3`, ...) and the rows it affected.
    Command { tag: String, rows: u64 },
    /// `COPY ... FROM STDIN` is waiting for its data: feed it with
    /// [`Session::copy_data`] and end it with [`Session::copy_done`] (or
    /// [`Session::copy_fail`]). `columns` is how many each row has.
    CopyIn { columns: usize },
    /// `COPY ... TO STDOUT`: the encoded rows, one item per row.
    CopyOut {
        columns: usize,
        data: crate::io::copy::CopyStream,
    },
    /// The statement text held no statement.
    Empty,
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryResult::Rows { command, .. } => write!(f, "Rows({command})"),
            QueryResult::Command { tag, .. } => write!(f, "Command({tag})"),
            QueryResult::CopyIn { columns } => write!(f, "CopyIn({columns})"),
            QueryResult::CopyOut { columns, .. } => write!(f, "CopyOut({columns})"),
            QueryResult::Empty => f.write_str("Empty"),
        }
    }
}

impl QueryResult {
    pub(crate) fn command(tag: impl Into<String>) -> QueryResult {
        QueryResult::Command {
            tag: tag.into(),
            rows: 0,
        }
    }

    pub(crate) fn rows(
        command: &'static str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Self {
        QueryResult::streamed(command, schema, batches.into_iter().map(Ok))
    }

    /// Rows produced as the client reads them.
    pub(crate) fn streamed(
        command: &'static str,
        schema: SchemaRef,
        batches: impl Iterator<Item = datafusion::common::Result<RecordBatch>> + Send + 'static,
    ) -> Self {
        let stream = futures::stream::iter(batches);
        QueryResult::Rows {
            command,
            schema: schema.clone(),
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        }
    }

    /// The result with its rows read into memory, so that the statements
    /// after it may run (and commit) before the client reads them.
    /// Every row read ahead, counted against `budget`.
    pub async fn materialized(self, budget: &mut ResultBudget) -> Result<QueryResult> {
        match self {
            QueryResult::Rows {
                command,
                schema,
                mut stream,
            } => {
                let mut batches = Vec::new();
                while let Some(batch) = stream.try_next().await.map_err(Error::from_datafusion)? {
                    budget
                        .0
                        .try_grow(batch.get_array_memory_size())
                        .map_err(Error::from_datafusion)?;
                    batches.push(batch);
                }
                Ok(QueryResult::rows(command, schema, batches))
            }
            other => Ok(other),
        }
    }

    /// Reads every row; a command gives none.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            QueryResult::Rows { stream, .. } => {
                stream.try_collect().await.map_err(Error::from_datafusion)
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// Memory held by results read before their client takes them (each
/// statement of a multi-statement query is read to its end before the
/// next runs), counted against the query memory pool: past its limit the
/// query fails with 53200 instead of growing.
pub struct ResultBudget(datafusion::execution::memory_pool::MemoryReservation);

impl Session {
    pub fn result_budget(&self) -> ResultBudget {
        use datafusion::execution::memory_pool::MemoryConsumer;
        let pool = &self.ctx.runtime_env().memory_pool;
        ResultBudget(MemoryConsumer::new("statement results read ahead").register(pool))
    }
}

/// Where the session is in Postgres' transaction-block life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Autocommit: each statement is its own transaction.
    None,
    /// Inside BEGIN ... COMMIT.
    Open,
    /// A statement in the block failed: everything but ROLLBACK/COMMIT is
    /// refused until the block ends.
    Failed,
}

/// Commits `txn` without holding the async thread while its fdatasync
/// runs, so that the other connections that thread serves go on and
/// commits arriving meanwhile share the next sync. The commit is logged
/// in place and its durability awaited from the WAL's sync thread; one that
/// must first wait for background work to make room runs on tokio's
/// blocking pool instead. Outside tokio it commits in place.
///
/// The session's `interrupt` learns that the commit has begun: from then on
/// a cancel or timeout no longer stops the statement, which is reported as
/// committed once it is.
pub(crate) async fn commit_off_worker(
    interrupt: &Interrupt,
    txn: basalt_storage::Transaction,
) -> Result<u64> {
    interrupt.enter_commit();
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if txn.waits_for_disk() => runtime,
        _ => return Ok(txn.commit()?),
    };
    if !txn.would_stall() {
        return Ok(txn.commit_unsynced()?.durable().await?);
    }
    match runtime.spawn_blocking(move || txn.commit()).await {
        Ok(committed) => Ok(committed?),
        Err(e) => Err(Error::sql(
            "XX000",
            format!("the commit did not finish: {e}"),
        )),
    }
}

/// Plans and runs `frame` on `executor`, handing its batches over a short
/// channel. Dropping the returned stream stops the query there, even while
/// it computes its first batch.
async fn run_on(
    executor: &tokio::runtime::Handle,
    frame: datafusion::dataframe::DataFrame,
) -> Result<SendableRecordBatchStream> {
    use futures::{FutureExt, StreamExt};
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    // `None` marks the end: a channel closing without it means the task
    // died (a panic), which must not read as the last row.
    let (batches_tx, mut batches_rx) = tokio::sync::mpsc::channel(2);
    let task = async move {
        let mut stream = match frame.execute_stream().await {
            Ok(stream) => stream,
            Err(e) => {
                let _ = started_tx.send(Err(e));
                return;
            }
        };
        if started_tx.send(Ok(())).is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = batches_tx.closed() => return,
                next = stream.next() => next,
            };
            let end = next.is_none();
            if batches_tx.send(next).await.is_err() || end {
                return;
            }
        }
    };
    let (panic_tx, mut panic_rx) = tokio::sync::oneshot::channel();
    executor.spawn(async move {
        if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
            let _ = panic_tx.send(crate::sql::interrupt::panicked(panic.as_ref()));
        }
    });
    match started_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::from_datafusion(e)),
        Err(_) => return Err(panic_rx.try_recv().unwrap_or_else(|_| executor_stopped())),
    }
    let mut ended = false;
    let batches = futures::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        match batches_rx.poll_recv(cx) {
            std::task::Poll::Ready(Some(Some(batch))) => std::task::Poll::Ready(Some(batch)),
            std::task::Poll::Ready(Some(None)) => {
                ended = true;
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Ready(None) => {
                ended = true;
                let error = panic_rx.try_recv().unwrap_or_else(|_| executor_stopped());
                std::task::Poll::Ready(Some(Err(DataFusionError::External(Box::new(error)))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

fn executor_stopped() -> Error {
    Error::sql(
        "XX000",
        "the query's executor stopped before the query ended",
    )
}

/// Autocommit DML that loses a write conflict runs again on a fresh
/// snapshot, as Postgres' READ COMMITTED would. It gives up only after
/// both this many retries and [`AUTOCOMMIT_RETRY_TIME`]: on a loaded
/// machine 32 retries on a hot row could all lose within milliseconds.
const AUTOCOMMIT_RETRIES: u32 = 32;
const AUTOCOMMIT_RETRY_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The pause before retry `attempt`: growing, capped, and jittered so that
/// writers colliding on one row do not collide again in step. Without it a
/// statement that never awaits (a point UPDATE) retries faster than the
/// winner can commit.
fn retry_backoff(attempt: u32) -> std::time::Duration {
    let ceiling_micros = (20u64 << attempt.min(8)).min(5_000);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    std::time::Duration::from_micros(ceiling_micros / 2 + jitter % (ceiling_micros / 2 + 1))
}

/// One connection's SQL state. Sessions are independent: many can run at
/// once on one [`Database`], each with its own transaction.
pub struct Session {
    pub(crate) ctx: SessionContext,
    pub(crate) shared: Arc<SessionShared>,
    pub(crate) sequences: Arc<Sequences>,
    block: Block,
    /// The open block is the implicit transaction of a multi-statement
    /// query ([`Session::begin_implicit`]), not a BEGIN.
    implicit: bool,
    pub(crate) settings: Settings,
    /// The COPY FROM STDIN waiting for data, if any.
    pub(crate) copy_in: Option<crate::session::copy::CopyIn>,
    pub(crate) file_access: crate::io::load::FileAccess,
    executor: Option<tokio::runtime::Handle>,
    /// Stops the running statement on a cancel or at `statement_timeout`.
    pub(crate) interrupt: Arc<Interrupt>,
    /// When the running statement must stop.
    deadline: Deadline,
    /// A temporary database's directory lives as long as any session.
    _scratch: Option<Arc<tempfile::TempDir>>,
}

impl Session {
    /// The signal that stops this session's running statement (57014),
    /// for a cancel request or a client that went away. A cancel stops
    /// nothing once the statement's commit has begun.
    pub fn interrupt(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }

    /// Runs every statement in `sql` and returns the last one's result.
    /// Several statements run as one implicit transaction, as a Postgres
    /// simple query does: an error keeps none of their writes.
    pub async fn execute(&mut self, sql: &str) -> Result<QueryResult> {
        self.interrupt.reset();
        let statements = self.parse(sql)?;
        let several = statements.len() > 1;
        let mut last = QueryResult::Empty;
        for statement in statements {
            if several {
                self.begin_implicit();
            }
            match self.execute_statement(statement).await {
                Ok(result) if several => {
                    // Only the last result is kept: each has its own budget.
                    last = result.materialized(&mut self.result_budget()).await?
                }
                Ok(result) => last = result,
                Err(e) => {
                    self.end_implicit(false).await?;
                    return Err(e);
                }
            }
        }
        self.end_implicit(true).await?;
        Ok(last)
    }

    /// Opens the implicit transaction the statements of one multi-statement
    /// query share, unless a block is already open. A BEGIN among them
    /// turns it into an ordinary block; a COMMIT ends it, and the next
    /// statement opens another.
    pub fn begin_implicit(&mut self) {
        if self.block == Block::None {
            *self.shared.txn.lock() = Some(self.shared.db.begin());
            self.block = Block::Open;
            self.implicit = true;
        }
    }

    /// Ends the implicit transaction, if one is open: committed when
    /// `commit` and no statement failed, else rolled back.
    pub async fn end_implicit(&mut self, commit: bool) -> Result<()> {
        if !std::mem::take(&mut self.implicit) {
            return Ok(());
        }
        let ok = commit && self.block == Block::Open;
        self.block = Block::None;
        let txn = self.shared.txn.lock().take();
        match txn {
            Some(txn) if ok => commit_off_worker(&self.interrupt, txn).await.map(|_| ()),
            Some(txn) => {
                txn.rollback();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Runs `sql` and collects the rows of its last statement.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.execute(sql).await?.collect().await
    }

    /// Splits and parses `sql` in the Postgres dialect. `COPY ... FROM
    /// STDIN` and `TO STDOUT` go to sqlparser's own COPY, since DataFusion's
    /// parser reads every COPY as its file export.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        crate::sql::complexity::check(sql)?;
        let syntax_error = |e: DataFusionError| match e {
            DataFusionError::SQL(inner, _)
                if matches!(*inner, ParserError::RecursionLimitExceeded) =>
            {
                crate::sql::complexity::too_complex("statement too complex: nested too deeply")
            }
            e => Error::sql("42601", e.to_string().replace("SQL error: ", "")),
        };
        let sql = copy_booleans_spelled_out(sql);
        let mut parser = DFParserBuilder::new(sql.as_ref())
            .with_dialect(&PostgreSqlDialect {})
            .build()
            .map_err(syntax_error)?;
        let mut statements = Vec::new();
        loop {
            while parser.parser.consume_token(&Token::SemiColon) {}
            if parser.parser.peek_token_ref().token == Token::EOF {
                break;
            }
            let statement = if is_copy(&parser.parser) {
                parser
                    .parser
                    .parse_statement()
                    .map(|s| Statement::Statement(Box::new(s)))
                    .map_err(|e| DataFusionError::SQL(Box::new(e), None))
            } else {
                parser.parse_statement()
            }
            .map_err(syntax_error)?;
            statements.push(match statement {
                Statement::Statement(mut inner) => {
                    crate::pg::catalog::rewrite(&mut inner);
                    crate::types::vector::rewrite_casts(&mut inner);
                    Statement::Statement(inner)
                }
                other => other,
            });
            let next = &parser.parser.peek_token_ref().token;
            if !matches!(next, Token::SemiColon | Token::EOF) {
                return Err(Error::sql(
                    "42601",
                    format!("syntax error at or near \"{next}\""),
                ));
            }
        }
        Ok(statements)
    }

    /// How long the session may sit idle inside a transaction block
    /// before its connection is closed (`idle_in_transaction_session_timeout`).
    pub fn idle_in_transaction_timeout(&self) -> Option<std::time::Duration> {
        self.settings.idle_in_transaction_timeout()
    }

    /// Whether the session is inside BEGIN ... COMMIT (or a failed block).
    pub fn in_transaction(&self) -> bool {
        self.block != Block::None
    }

    /// The transaction status byte Postgres reports in ReadyForQuery; an
    /// implicit transaction is reported idle, as Postgres does.
    pub fn transaction_status(&self) -> u8 {
        if self.implicit {
            return b'I';
        }
        match self.block {
            Block::None => b'I',
            Block::Open => b'T',
            Block::Failed => b'E',
        }
    }

    /// The client was told the current statement failed after the session
    /// handed back its result (a row stream failed midway, or the statement
    /// was cancelled): an open block becomes failed, and an autocommit
    /// statement's unfinished transaction is dropped.
    pub fn abort_statement(&mut self) {
        match self.block {
            Block::Open => self.block = Block::Failed,
            Block::None => {
                if let Some(txn) = self.shared.txn.lock().take() {
                    txn.rollback();
                }
            }
            Block::Failed => {}
        }
    }

    /// Runs one statement; a cancel or `statement_timeout` stops it with
    /// 57014 until its commit begins.
    pub async fn execute_statement(&mut self, statement: Statement) -> Result<QueryResult> {
        let (interrupt, deadline) = self.start_statement();
        // Boxed: a statement's future is large, and nested in the caller's
        // it overflowed a 2 MiB thread stack in debug builds.
        let work = Box::pin(self.run_statement(statement));
        let outcome = interruptible(&interrupt, deadline, work).await;
        self.guarded(outcome)
    }

    /// The interrupt and deadline of a statement starting now.
    fn start_statement(&mut self) -> (Arc<Interrupt>, Deadline) {
        self.interrupt.start_statement();
        self.deadline = Deadline::after(self.settings.statement_timeout());
        (self.interrupt.clone(), self.deadline)
    }

    /// A statement's outcome; one the interrupt stopped fails its block.
    /// (Its rows, if any, stream through [`guard_stream`], which the plan
    /// got in [`Session::stream_plan`].)
    fn guarded(&mut self, outcome: Result<QueryResult>) -> Result<QueryResult> {
        if outcome.as_ref().is_err_and(|e| e.sqlstate() == "57014") {
            self.abort_statement();
        }
        outcome
    }

    async fn run_statement(&mut self, statement: Statement) -> Result<QueryResult> {
        if self.copy_in.take().is_some() {
            self.abort_statement();
            return Err(Error::sql(
                "08P01",
                "a COPY FROM STDIN was abandoned before its end",
            ));
        }
        // As any failed statement does, a refused SAVEPOINT aborts the block.
        let control = self.transaction_control(&statement).await;
        if let Some(result) = self.failing_the_block(control)? {
            return Ok(result);
        }
        if self.block == Block::Failed {
            return Err(Error::sql(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let result = if self.block == Block::None && writes(&statement) {
            self.autocommit(&Write::Statement(&statement)).await
        } else {
            self.dispatch(statement).await
        };
        self.failing_the_block(result)
    }

    /// `result`, having marked an open transaction block failed if it is
    /// an error.
    fn failing_the_block<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() && self.block == Block::Open {
            self.block = Block::Failed;
        }
        result
    }

    /// A prepared statement with its parameters. A primary-key point
    /// SELECT is answered from the parameters directly; anything else has
    /// them bound into a copy of the statement and runs as
    /// [`Session::execute_statement`] runs it. Binding copies the whole
    /// syntax tree, which was a sixth of a prepared point lookup's time.
    pub async fn execute_prepared(
        &mut self,
        prepared: &crate::session::oltp::PreparedStatement,
        params: &[crate::session::prepare::Param],
    ) -> Result<QueryResult> {
        let (interrupt, deadline) = self.start_statement();
        let work = Box::pin(self.run_prepared(prepared, params));
        let outcome = interruptible(&interrupt, deadline, work).await;
        self.guarded(outcome)
    }

    async fn run_prepared(
        &mut self,
        prepared: &crate::session::oltp::PreparedStatement,
        params: &[crate::session::prepare::Param],
    ) -> Result<QueryResult> {
        if self.copy_in.is_none() && self.block != Block::Failed {
            let answered = self.point_select_prepared(prepared, params);
            if let Some(result) = self.failing_the_block(answered)? {
                return Ok(result);
            }
            if let Some(update) = self.prepared_point_update(prepared) {
                if let Some((key, assignments)) = update.with_params(params) {
                    let write = Write::PointUpdate {
                        update: &update,
                        key,
                        assignments,
                    };
                    return self.write_now(&write).await;
                }
            }
            if let Some(insert) = self.prepared_insert(prepared) {
                let rows = self.prepared_insert_rows(&insert, params);
                if let Some(rows) = self.failing_the_block(rows)? {
                    let write = Write::Insert {
                        insert: &insert,
                        rows,
                    };
                    return self.write_now(&write).await;
                }
            }
        }
        let bound = prepared.bind(params)?;
        self.run_statement(bound).await
    }

    /// Runs a write in the open block, or else in a transaction of its own.
    async fn write_now(&mut self, write: &Write<'_>) -> Result<QueryResult> {
        let result = match self.block {
            Block::None => self.autocommit(write).await,
            _ => self.run_write(write).await,
        };
        self.failing_the_block(result)
    }

    async fn run_write(&mut self, write: &Write<'_>) -> Result<QueryResult> {
        match write {
            Write::Statement(statement) => self.dispatch((*statement).clone()).await,
            Write::PointUpdate {
                update,
                key,
                assignments,
            } => {
                let target = &update.target;
                let written = self.apply_point_update(target, key.clone(), assignments.clone())?;
                self.finish(target, update.returning.clone(), written, "UPDATE")
                    .await
            }
            Write::Insert { insert, rows } => {
                let target = &insert.target;
                let written = self
                    .write_inserted(target, vec![rows.clone()], None)
                    .await?;
                self.finish(target, None, written, "INSERT").await
            }
        }
    }

    /// One write statement in its own transaction, retried on a write
    /// conflict while it has returned nothing to the client.
    async fn autocommit(&mut self, write: &Write<'_>) -> Result<QueryResult> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            *self.shared.txn.lock() = Some(self.shared.db.begin());
            let result = self.run_write(write).await;
            let txn = self.shared.txn.lock().take();
            let outcome = match (result, txn) {
                (Ok(result), Some(txn)) => commit_off_worker(&self.interrupt, txn)
                    .await
                    .map(|_| result),
                (Ok(result), None) => Ok(result),
                (Err(e), _) => Err(e),
            };
            match outcome {
                Err(Error::Storage(basalt_storage::Error::WriteConflict))
                    if self
                        .settings
                        .lock_timeout()
                        .is_some_and(|limit| started.elapsed() >= limit) =>
                {
                    // Waiting out a conflicting writer is Postgres' wait
                    // for a row lock, which lock_timeout bounds.
                    return Err(Error::sql(
                        "55P03",
                        "canceling statement due to lock timeout",
                    ));
                }
                Err(Error::Storage(basalt_storage::Error::WriteConflict))
                    if attempt < AUTOCOMMIT_RETRIES
                        || started.elapsed() < AUTOCOMMIT_RETRY_TIME =>
                {
                    attempt += 1;
                    let pause = retry_backoff(attempt);
                    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
                }
                other => return other,
            }
        }
    }

    /// BEGIN, COMMIT, ROLLBACK; None for any other statement.
    async fn transaction_control(&mut self, statement: &Statement) -> Result<Option<QueryResult>> {
        let Statement::Statement(inner) = statement else {
            return Ok(None);
        };
        let tag = match inner.as_ref() {
            ast::Statement::StartTransaction { .. } => {
                self.implicit = false;
                if self.block == Block::None {
                    *self.shared.txn.lock() = Some(self.shared.db.begin());
                    self.block = Block::Open;
                }
                // Postgres only warns about a BEGIN inside a block.
                "BEGIN"
            }
            ast::Statement::Commit { chain: false, .. } => {
                self.implicit = false;
                let txn = self.shared.txn.lock().take();
                let failed = self.block == Block::Failed;
                self.block = Block::None;
                match txn {
                    Some(txn) if !failed => {
                        commit_off_worker(&self.interrupt, txn).await?;
                        "COMMIT"
                    }
                    Some(txn) => {
                        txn.rollback();
                        "ROLLBACK"
                    }
                    None => "COMMIT",
                }
            }
            ast::Statement::Rollback {
                chain: false,
                savepoint: None,
            } => {
                self.implicit = false;
                if let Some(txn) = self.shared.txn.lock().take() {
                    txn.rollback();
                }
                self.block = Block::None;
                "ROLLBACK"
            }
            ast::Statement::Commit { .. } | ast::Statement::Rollback { .. } => {
                return Err(Error::not_supported(
                    "COMMIT/ROLLBACK AND CHAIN or TO SAVEPOINT",
                ))
            }
            ast::Statement::Savepoint { .. } | ast::Statement::ReleaseSavepoint { .. } => {
                return Err(Error::not_supported("SAVEPOINT"))
            }
            _ => return Ok(None),
        };
        Ok(Some(QueryResult::command(tag)))
    }

    async fn dispatch(&mut self, statement: Statement) -> Result<QueryResult> {
        let inner = match statement {
            Statement::Statement(inner) => inner,
            Statement::Reset(datafusion::sql::parser::ResetStatement::Variable(name)) => {
                return self.reset(&name.to_string())
            }
            other => return self.run_datafusion(other).await,
        };
        match *inner {
            ast::Statement::Insert(insert) => self.insert(insert).await,
            ast::Statement::Update(update) => self.update(update).await,
            ast::Statement::Delete(delete) => self.delete(delete).await,
            ast::Statement::Truncate(truncate) => self.truncate(truncate).await,
            ast::Statement::CreateTable(create) => self.create_table(create).await,
            ast::Statement::CreateView(view) => self.create_view(view).await,
            ast::Statement::CreateIndex(create) => self.create_index(create).await,
            ast::Statement::CreateSchema {
                schema_name,
                if_not_exists,
                ..
            } => self.create_schema(&schema_name, if_not_exists),
            ast::Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => self.drop(object_type, if_exists, &names, cascade),
            ast::Statement::AlterTable(alter) => self.alter_table(alter).await,
            ast::Statement::CreateSequence {
                if_not_exists,
                name,
                sequence_options,
                ..
            } => self.create_sequence(&name, if_not_exists, &sequence_options),
            ast::Statement::Set(set) => self.set(set),
            ast::Statement::ShowVariable { variable } => self.show(&variable).await,
            ast::Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                values,
            } => {
                if !values.is_empty() {
                    return Err(Error::not_supported(
                        "COPY data inline in the statement text",
                    ));
                }
                match (to, &target, &source) {
                    (false, ast::CopyTarget::File { filename }, ast::CopySource::Table { .. }) => {
                        return self
                            .copy_from_file(&source, filename, &options, &legacy_options)
                            .await
                    }
                    (true, ast::CopyTarget::File { filename }, _) => {
                        return self
                            .copy_to_file(source.clone(), filename, &options, &legacy_options)
                            .await
                    }
                    _ => {}
                }
                let format = crate::io::copy::CopyFormat::from_options(&options, &legacy_options)?;
                match (to, target, source) {
                    (
                        false,
                        ast::CopyTarget::Stdin,
                        ast::CopySource::Table {
                            table_name,
                            columns,
                        },
                    ) => self.copy_from_client(&table_name, &columns, format).await,
                    (true, ast::CopyTarget::Stdout, source) => {
                        self.copy_to_client(source, format).await
                    }
                    _ => Err(Error::not_supported("this form of COPY")),
                }
            }
            ast::Statement::Query(query) => match self.point_select(&query)? {
                Some(result) => Ok(result),
                None => {
                    let query = ast::Statement::Query(query);
                    self.run_datafusion(Statement::Statement(Box::new(query)))
                        .await
                }
            },
            other => {
                self.run_datafusion(Statement::Statement(Box::new(other)))
                    .await
            }
        }
    }

    /// A query (or any statement DataFusion runs without storage changes).
    pub(crate) async fn run_datafusion(&mut self, statement: Statement) -> Result<QueryResult> {
        let plan = self.plan(statement).await?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let stream = self.stream_plan(plan).await?;
        Ok(QueryResult::Rows {
            command: "SELECT",
            schema,
            stream,
        })
    }

    /// DataFusion's logical plan of a statement.
    pub(crate) async fn plan(
        &self,
        statement: Statement,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        crate::io::access::refuse_datafusion_files(&statement)?;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(Error::from_datafusion)?;
        crate::io::access::refuse_file_plans(&plan)?;
        Ok(plan)
    }

    /// Runs a planned statement, streaming its rows. The stream checks the
    /// statement's interrupt and deadline at every batch, whoever reads
    /// it (the client, or the session itself for INSERT ... SELECT and
    /// COPY TO), and turns a panic in the plan into an error.
    pub(crate) async fn stream_plan(
        &mut self,
        plan: datafusion::logical_expr::LogicalPlan,
    ) -> Result<SendableRecordBatchStream> {
        let frame = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(Error::from_datafusion)?;
        let stream = match &self.executor {
            Some(executor) => run_on(executor, frame).await?,
            None => frame
                .execute_stream()
                .await
                .map_err(Error::from_datafusion)?,
        };
        Ok(guard_stream(stream, self.interrupt.clone(), self.deadline))
    }

    /// Plans and runs SQL text the session built itself, collecting rows.
    pub(crate) async fn run_internal(
        &mut self,
        sql: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let statement = self
            .parse(sql)?
            .pop()
            .ok_or_else(|| Error::sql("XX000", "empty internal statement"))?;
        let result = self.run_datafusion(statement).await?;
        let QueryResult::Rows { schema, .. } = &result else {
            return Err(Error::sql("XX000", "internal statement returned no rows"));
        };
        let schema = schema.clone();
        Ok((schema, result.collect().await?))
    }

    /// `(schema, table)` of a possibly qualified table name, normalized as
    /// Postgres does (unquoted names fold to lower case).
    pub(crate) fn resolve(&self, name: &ObjectName) -> Result<(String, String)> {
        let reference =
            datafusion::sql::planner::object_name_to_table_reference(name.clone(), true)
                .map_err(Error::from_datafusion)?;
        match reference {
            TableReference::Bare { table } => Ok((SCHEMA.to_string(), table.to_string())),
            TableReference::Partial { schema, table } => {
                Ok((schema.to_string(), table.to_string()))
            }
            TableReference::Full {
                catalog,
                schema,
                table,
            } if catalog.as_ref() == CATALOG => Ok((schema.to_string(), table.to_string())),
            TableReference::Full { catalog, .. } => Err(Error::sql(
                "0A000",
                format!("cross-database references are not implemented: \"{catalog}\""),
            )),
        }
    }

    /// DDL takes effect at once, outside any transaction; a block that has
    /// not written yet moves to a snapshot that sees it. An implicit
    /// transaction commits its writes first: DDL splits it in two.
    pub(crate) fn before_ddl(&mut self) -> Result<()> {
        let mut txn = self.shared.txn.lock();
        if self.implicit && txn.as_ref().is_some_and(|t| !t.is_empty()) {
            if let Some(written) = txn.take() {
                written.commit()?;
            }
            *txn = Some(self.shared.db.begin());
        }
        match txn.as_ref() {
            Some(open) if !open.is_empty() => Err(Error::sql(
                "0A000",
                "schema changes inside a transaction that has written rows are not supported",
            )),
            _ => Ok(()),
        }
        .map(|()| {
            if txn.is_some() {
                *txn = Some(self.shared.db.begin());
            }
        })
    }

    pub(crate) fn after_ddl(&mut self) {
        let mut txn = self.shared.txn.lock();
        if txn.as_ref().is_some_and(|t| t.is_empty()) {
            *txn = Some(self.shared.db.begin());
        }
    }
}

/// The DataFusion configuration every session starts from.
pub(crate) fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
        // Storage schemas hold Utf8, not Utf8View.
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        .set_str("datafusion.execution.time_zone", "+00:00")
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold",
            16 << 20,
        )
        .set_usize(
            "datafusion.optimizer.hash_join_single_partition_threshold_rows",
            1 << 20,
        )
}

/// The runtime every session's plans share: `pool` bounds their memory, and
/// no object store is registered, so no plan reaches a file by itself.
fn runtime_env(
    pool: Option<Arc<dyn datafusion::execution::memory_pool::MemoryPool>>,
) -> Arc<RuntimeEnv> {
    let mut builder = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(crate::io::access::NoObjectStores));
    if let Some(pool) = pool {
        builder = builder.with_memory_pool(pool);
    }
    // Only a disk or cache manager configured to fail can fail the build,
    // and these are the defaults; falling back to `RuntimeEnv::default()`
    // would bring the local file system back.
    builder
        .build_arc()
        .expect("a runtime with default disk and cache managers builds")
}

/// Postgres takes `on`/`off`/`1`/`0` for COPY's boolean options (pgbench
/// sends `WITH (freeze on)`); sqlparser only `true`/`false`.
fn copy_booleans_spelled_out(sql: &str) -> std::borrow::Cow<'_, str> {
    let starts_with_copy = sql
        .trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"));
    if !starts_with_copy {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut previous = String::new();
    for (i, word) in sql
        .split_inclusive(|c: char| !c.is_alphanumeric() && c != '_')
        .enumerate()
    {
        let (body, separator) = word.split_at(
            word.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_')
                .len(),
        );
        let option = matches!(previous.as_str(), "freeze" | "header");
        let replacement = match body.to_ascii_lowercase().as_str() {
            "on" | "1" if option && i > 0 => Some("true"),
            "off" | "0" if option && i > 0 => Some("false"),
            _ => None,
        };
        out.push_str(replacement.unwrap_or(body));
        out.push_str(separator);
        if !body.is_empty() {
            previous = body.to_ascii_lowercase();
        }
    }
    out.into()
}

/// Whether the next statement is a COPY whose data goes to or comes from
/// the client (`STDIN`/`STDOUT`).
/// Every COPY is parsed as Postgres' COPY: DataFusion's own `COPY ... TO`
/// would write server files past the session's file access.
fn is_copy(parser: &Parser) -> bool {
    matches!(&parser.peek_token_ref().token, Token::Word(w) if w.keyword == Keyword::COPY)
}

/// A write run in the session's transaction, or in its own one.
enum Write<'a> {
    Statement(&'a Statement),
    /// A prepared point UPDATE with its parameters applied.
    PointUpdate {
        update: &'a crate::session::oltp::PointUpdate,
        key: Vec<u8>,
        assignments: crate::session::oltp::Assignments,
    },
    /// A prepared INSERT ... VALUES with its parameters read.
    Insert {
        insert: &'a crate::session::oltp::PreparedInsert,
        rows: RecordBatch,
    },
}

/// Statements that write rows and so run in a transaction of their own
/// under autocommit.
fn writes(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Statement(s) if matches!(
            s.as_ref(),
            ast::Statement::Insert(_)
                | ast::Statement::Update(_)
                | ast::Statement::Delete(_)
                | ast::Statement::Truncate(_)
                | ast::Statement::CreateTable(_)
        )
    )
}
