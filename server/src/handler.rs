//! One connection: its own `query::Session` behind the simple and extended
//! query protocols.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use basalt_query::arrow::datatypes::SchemaRef;
use basalt_query::arrow::record_batch::RecordBatch;
use basalt_query::{
    Description, Interrupt, Param, PreparedStatement, QueryResult, Session, Statement,
};
use futures::{stream, Sink, SinkExt, Stream, StreamExt};
use pgwire::api::copy::CopyHandler;
use pgwire::api::copy::{send_copy_both_response, send_copy_in_response, send_copy_out_response};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    send_execution_response, send_query_response, send_ready_for_query, ExtendedQueryHandler,
    SimpleQueryHandler,
};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::DEFAULT_NAME;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::data::DataRow;
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Execute, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::Mutex;

use crate::cancel::CancelRegistry;
use crate::error::{to_pgwire, Error};
use crate::held::HeldFlushes;
use crate::types;

/// Rows of one result batch, encoded before they are sent.
type RowStream = std::pin::Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>;

/// A statement parsed and described once, run with new parameters by each
/// Bind/Execute.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Shared by clones: what one execution learns about the statement
    /// serves the next.
    statement: Arc<PreparedStatement>,
    parameters: Vec<Type>,
    columns: Option<SchemaRef>,
}

/// What a connection asks its session to run.
enum Work<'a> {
    Statement(Statement),
    /// A prepared statement and the parameters of its Bind.
    Prepared(&'a PreparedStatement, &'a [Param]),
}

/// The handlers of one connection, sharing its session.
pub struct Connection {
    session: Arc<Mutex<Session>>,
    registry: Arc<CancelRegistry>,
    /// Stops the session's running statement (a cancel request, a client
    /// gone away).
    interrupt: Arc<Interrupt>,
    registered: OnceLock<()>,
    parser: Arc<Parser>,
}

impl Connection {
    pub fn new(session: Session, registry: Arc<CancelRegistry>) -> Connection {
        let interrupt = session.interrupt();
        let session = Arc::new(Mutex::new(session));
        Connection {
            parser: Arc::new(Parser {
                session: session.clone(),
            }),
            session,
            registry,
            interrupt,
            registered: OnceLock::new(),
        }
    }

    /// The session's stop signal, for the connection's disconnect watch.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The connection's session, for what the serving loop reads of it
    /// between messages.
    pub fn session(&self) -> &Mutex<Session> {
        &self.session
    }

    /// Readies the stop signal for a new request, registered under the
    /// cancel key the client was given at startup.
    fn start_request<C: ClientInfo>(&self, client: &C) {
        self.registered.get_or_init(|| {
            let (pid, key) = client.pid_and_secret_key();
            self.registry.register(pid, &key, &self.interrupt);
        });
        self.interrupt.reset();
    }

    /// Runs one statement; the session stops it on a cancel, at its
    /// statement timeout, or not at all once it is committing.
    async fn run(&self, session: &mut Session, work: Work<'_>) -> Result<QueryResult, Error> {
        match work {
            Work::Statement(statement) => session.execute_statement(statement).await,
            Work::Prepared(statement, params) => session.execute_prepared(statement, params).await,
        }
        .map_err(Error::from)
    }

    /// The transaction status the session is in, as ReadyForQuery gives it.
    async fn status(&self) -> TransactionStatus {
        status_of(&*self.session.lock().await)
    }

    /// The wire response for a statement's result. `before` is the
    /// transaction status before it ran, so BEGIN/COMMIT move the status
    /// the client sees.
    fn response(&self, result: QueryResult, before: u8, after: u8, format: &Format) -> Response {
        match result {
            QueryResult::Rows {
                command,
                schema,
                stream,
            } => {
                let fields = Arc::new(fields(&schema, format));
                let rows = encode_rows(stream, fields.clone(), self.session.clone());
                let mut response = QueryResponse::new(fields, rows);
                response.set_command_tag(if command == "INSERT" {
                    "INSERT 0"
                } else {
                    command
                });
                Response::Query(response)
            }
            QueryResult::Command { tag, .. } => {
                let tag = Tag::new(&tag);
                match (before, after) {
                    (b'I', b'T') => Response::TransactionStart(tag),
                    (b'T' | b'E', b'I') => Response::TransactionEnd(tag),
                    _ => Response::Execution(tag),
                }
            }
            QueryResult::CopyIn { columns } => {
                Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
            }
            QueryResult::CopyOut { columns, data } => {
                let data = data.map(|row| {
                    row.map(|bytes| CopyData::new(bytes.into()))
                        .map_err(to_pgwire)
                });
                Response::CopyOut(CopyResponse::new(0, columns, data))
            }
            QueryResult::Empty => Response::EmptyQuery,
        }
    }

    /// Tells pgwire the session's transaction status, for the
    /// ReadyForQuery that ends a COPY FROM STDIN.
    fn report_status<C: ClientInfo>(client: &mut C, session: &Session) {
        client.set_transaction_status(status_of(session));
    }
}

fn status_of(session: &Session) -> TransactionStatus {
    match session.transaction_status() {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    }
}

/// RowDescription fields of a result.
fn fields(schema: &SchemaRef, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                types::column_type(field),
                format.format_for(i),
            )
        })
        .collect()
}

/// Encodes each batch into DataRows as it arrives. A failure midway (a
/// cancel or timeout among them: the session's stream ends with 57014)
/// fails the session's open block, as Postgres aborts it.
fn encode_rows(
    batches: basalt_query::stream::SendableRecordBatchStream,
    fields: Arc<Vec<FieldInfo>>,
    session: Arc<Mutex<Session>>,
) -> RowStream {
    let rows = batches
        .map(|batch| batch.map_err(|e| Error::from(basalt_query::Error::from_datafusion(e))))
        .map(move |batch| {
            let rows: Vec<PgWireResult<DataRow>> = match batch {
                Ok(batch) => batch_rows(&batch, &fields).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e.into())],
            };
            stream::iter(rows)
        })
        .flatten()
        .then(move |row| {
            let session = session.clone();
            async move {
                if row.is_err() {
                    session.lock().await.abort_statement();
                }
                row
            }
        });
    Box::pin(rows)
}

fn batch_rows(batch: &RecordBatch, fields: &[FieldInfo]) -> Vec<DataRow> {
    (0..batch.num_rows())
        .map(|row| {
            let mut data = bytes::BytesMut::with_capacity(16 * fields.len());
            for (column, field) in batch.columns().iter().zip(fields) {
                let binary = field.format() == pgwire::api::results::FieldFormat::Binary;
                types::encode_field(column.as_ref(), row, field.datatype(), binary, &mut data);
            }
            DataRow::new(data, fields.len() as i16)
        })
        .collect()
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// pgwire's own Query handling, except that ReadyForQuery carries the
    /// session's transaction status. pgwire works the status out from the
    /// responses, and an error response would leave a transaction that a
    /// failed COMMIT ended reported as failed ('E') rather than idle.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let responses = SimpleQueryHandler::do_query(self, client, &query.query).await?;
        if responses.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        for response in responses {
            match response {
                Response::EmptyQuery => {
                    client
                        .feed(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                }
                Response::Query(results) => send_query_response(client, results, true).await?,
                Response::Execution(tag)
                | Response::TransactionStart(tag)
                | Response::TransactionEnd(tag) => send_execution_response(client, tag).await?,
                Response::Error(e) => {
                    client
                        .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                        .await?;
                }
                Response::CopyIn(result) => {
                    send_copy_in_response(client, result).await?;
                    client.set_state(PgWireConnectionState::CopyInProgress(false));
                }
                Response::CopyOut(result) => send_copy_out_response(client, result).await?,
                Response::CopyBoth(result) => {
                    send_copy_both_response(client, result).await?;
                    client.set_state(PgWireConnectionState::CopyInProgress(false));
                }
            }
        }
        // During COPY FROM STDIN, ReadyForQuery waits for the copy's end.
        if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            client.set_state(PgWireConnectionState::ReadyForQuery);
            let status = self.status().await;
            client.set_transaction_status(status);
            send_ready_for_query(client, status).await?;
        }
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.start_request(client);
        let mut session = self.session.lock().await;
        let statements = match session.parse(query) {
            Ok(statements) => statements,
            Err(e) => {
                // As in Postgres, a statement that does not parse fails
                // the transaction block it was sent in.
                session.abort_statement();
                return Ok(vec![Response::Error(Box::new(
                    Error::from(e).to_error_info(),
                ))]);
            }
        };
        let count = statements.len();
        let mut responses = Vec::with_capacity(count);
        let mut failed = false;
        // Every result is held until the last statement has run.
        let mut budget = session.result_budget();
        for statement in statements {
            // Several statements share one implicit transaction, and
            // every result is read before it commits.
            if count > 1 {
                session.begin_implicit();
            }
            let before = session.transaction_status();
            let outcome = match self.run(&mut session, Work::Statement(statement)).await {
                Ok(result) if count > 1 => {
                    result.materialized(&mut budget).await.map_err(Error::from)
                }
                other => other,
            };
            match outcome {
                Ok(result) => {
                    // The rest of the query waits for the client's COPY
                    // data, which ends this message's processing.
                    let copying = matches!(result, QueryResult::CopyIn { .. });
                    let after = session.transaction_status();
                    responses.push(self.response(result, before, after, &Format::UnifiedText));
                    if copying {
                        break;
                    }
                }
                Err(e) => {
                    // Postgres stops a multi-statement query at its first error.
                    session.abort_statement();
                    responses.push(Response::Error(Box::new(e.to_error_info())));
                    failed = true;
                    break;
                }
            }
        }
        if let Err(e) = session.end_implicit(!failed).await {
            responses.push(Response::Error(Box::new(Error::from(e).to_error_info())));
        }
        Ok(responses)
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let outcome = session.copy_data(&copy_data.data).await;
        Connection::report_status(client, &session);
        outcome.map_err(to_pgwire)
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let outcome = session.copy_done().await;
        Connection::report_status(client, &session);
        let rows = outcome.map_err(to_pgwire)?;
        let tag = Tag::new("COPY").with_rows(usize::try_from(rows).unwrap_or(usize::MAX));
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        let error = session.copy_fail(&fail.message);
        Connection::report_status(client, &session);
        to_pgwire(error)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.start_request(client);
        let prepared = &portal.statement.statement;
        let params = bound_params(portal)?;
        let mut session = self.session.lock().await;
        let before = session.transaction_status();
        let work = Work::Prepared(&prepared.statement, &params);
        let result = self.run(&mut session, work).await?;
        let after = session.transaction_status();
        Ok(self.response(result, before, after, &portal.result_column_format))
    }

    /// pgwire's own Execute, with what it writes queued for the Sync's
    /// write (see [`HeldFlushes`]). COPY FROM STDIN is the exception: the
    /// client sends its data only once it has read CopyInResponse.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let executed = self._on_execute(&mut HeldFlushes(client), message).await;
        if matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
            client.flush().await?;
        }
        executed
    }

    /// pgwire's own Sync, with the session's transaction status: pgwire
    /// moves an open transaction to failed on any error, also when the
    /// error (a failed COMMIT) ended the transaction.
    async fn on_sync<C>(
        &self,
        client: &mut C,
        _message: pgwire::messages::extendedquery::Sync,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = self.status().await;
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }

    /// pgwire's own Describe, except that the answer is queued for the
    /// Sync's (or Flush's) write rather than written at once.
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(statement)) => {
                    let described = self.do_describe_statement(client, &statement).await?;
                    let returns_rows = statement.statement.columns.is_some();
                    queue_description(client, &described, returns_rows).await
                }
                Some(Entry::Empty) => {
                    queue_description(client, &DescribeStatementResponse::no_data(), false).await
                }
                None => Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => {
                    let described = self.do_describe_portal(client, &portal).await?;
                    let returns_rows = portal.statement.statement.columns.is_some();
                    queue_description(client, &described, returns_rows).await
                }
                Some(Entry::Empty) => {
                    queue_description(client, &DescribePortalResponse::no_data(), false).await
                }
                None => Err(PgWireError::PortalNotFound(name.to_owned())),
            },
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    /// pgwire's own Bind, except that BindComplete is queued rather than
    /// flushed: the client reads it after its Sync (or Flush), which flush,
    /// and a write per message was a tenth of pgbench's server time.
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) if message.parameters.is_empty() => {
                client.portal_store().put_empty_portal(portal_name);
            }
            Some(Entry::Empty) => {
                return Err(to_pgwire(basalt_query::Error::sql(
                    "08P01",
                    format!(
                        "bind message supplies {} parameters, but prepared statement \"{statement_name}\" requires 0",
                        message.parameters.len()
                    ),
                )))
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }
}

/// ParameterDescription (for a statement) and RowDescription or NoData,
/// queued. Not pgwire's `is_no_data`: for a statement it is true only
/// without parameters, so an INSERT with parameters was described as
/// returning rows of no columns, and pgjdbc, which describes a statement
/// once it prepares it on the server (fifth execution), failed with "A
/// result was returned when none was expected". A statement that returns
/// rows of no columns (`SELECT FROM t`) still gets a RowDescription.
async fn queue_description<C, D>(
    client: &mut C,
    described: &D,
    returns_rows: bool,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: std::fmt::Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    D: DescribeResponse,
{
    if let Some(parameters) = described.parameters() {
        let oids = parameters.iter().map(Type::oid).collect();
        client
            .feed(PgWireBackendMessage::ParameterDescription(
                ParameterDescription::new(oids),
            ))
            .await?;
    }
    let message = if !returns_rows {
        PgWireBackendMessage::NoData(NoData::new())
    } else {
        let fields = described.fields().iter().map(Into::into).collect();
        PgWireBackendMessage::RowDescription(RowDescription::new(fields))
    };
    client.feed(message).await?;
    Ok(())
}

/// The portal's parameter values, read by the statement's parameter types.
fn bound_params(portal: &Portal<Prepared>) -> Result<Vec<Param>, Error> {
    let types = &portal.statement.statement.parameters;
    portal
        .parameters
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let pg_type = types.get(i).unwrap_or(&Type::TEXT);
            match value {
                None => Ok(Param::Null(None)),
                Some(bytes) if portal.parameter_format.is_binary(i) => {
                    types::binary_param(bytes, pg_type)
                }
                Some(bytes) => types::text_param(bytes, pg_type),
            }
        })
        .collect()
}

/// Parses and describes statements for Parse messages.
pub struct Parser {
    session: Arc<Mutex<Session>>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = self.session.lock().await;
        let mut statements = session.parse(sql).map_err(to_pgwire)?;
        if statements.len() > 1 {
            return Err(Error::sql(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            )
            .into());
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let Description {
            parameters,
            columns,
        } = session.describe(&statement).await.map_err(to_pgwire)?;
        let count = parameters.len().max(types.len());
        let parameters = (0..count)
            .map(|i| {
                types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .or_else(|| {
                        parameters
                            .get(i)
                            .cloned()
                            .flatten()
                            .map(|dt| types::data_type(&dt))
                    })
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        Ok(Some(Prepared {
            statement: Arc::new(PreparedStatement::new(statement)),
            parameters,
            columns,
        }))
    }

    fn get_parameter_types(&self, statement: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(statement.parameters.clone())
    }

    fn get_result_schema(
        &self,
        statement: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(statement
            .columns
            .as_ref()
            .map(|schema| fields(schema, format.unwrap_or(&Format::UnifiedText)))
            .unwrap_or_default())
    }
}
