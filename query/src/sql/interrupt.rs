//! Stopping a running statement: a cancel request (psql's Ctrl-C, a client
//! that went away) or `statement_timeout`. Both end the statement with
//! 57014, except once its commit has begun: from the moment its writes go
//! to the WAL the statement is finished and reported as committed, since a
//! client told "cancelled" would retry a commit that took effect.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::Notify;

use crate::sql::error::{Error, Result};

/// One session's stop signal, shared with whoever may cancel it (the
/// server's cancel-key registry, its disconnect watch).
#[derive(Debug, Default)]
pub struct Interrupt {
    cancelled: AtomicBool,
    committing: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    /// Asks the running statement, if any, to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Forgets a cancel that arrived while nothing ran (Postgres ignores
    /// those): called as a client's request (a simple query, an Execute)
    /// begins, not per statement, so a cancel landing between the
    /// statements of one request still stops the rest.
    pub fn reset(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
        self.committing.store(false, Ordering::SeqCst);
    }

    /// A statement begins: it has not begun to commit.
    pub(crate) fn start_statement(&self) {
        self.committing.store(false, Ordering::SeqCst);
    }

    /// The statement's writes are about to reach the WAL: from here on it
    /// runs to the end.
    pub(crate) fn enter_commit(&self) {
        self.committing.store(true, Ordering::SeqCst);
    }

    fn is_committing(&self) -> bool {
        self.committing.load(Ordering::SeqCst)
    }

    /// Resolves once a cancel arrives.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a statement was stopped, worded as Postgres words it.
fn stop_error(timed_out: bool) -> Error {
    if timed_out {
        Error::sql("57014", "canceling statement due to statement timeout")
    } else {
        Error::sql("57014", "canceling statement due to user request")
    }
}

/// When the running statement must stop: its start plus
/// `statement_timeout`, or never.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    pub fn after(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.map(|t| Instant::now() + t))
    }

    async fn passed(self) {
        match self.0 {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    }
}

/// Runs `work` until it ends, a cancel arrives or the deadline passes,
/// whichever is first; but once the work has entered its commit
/// ([`Interrupt::enter_commit`]) it is awaited to its end whatever comes.
pub(crate) async fn interruptible<T>(
    interrupt: &Interrupt,
    deadline: Deadline,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut work = std::pin::pin!(work);
    let mut deadline_passed = std::pin::pin!(deadline.passed());
    loop {
        let committing = interrupt.is_committing();
        tokio::select! {
            biased;
            result = &mut work => return result,
            () = interrupt.cancelled(), if !committing => {
                // The work is not polled while this runs: if it had begun
                // its commit, the flag says so.
                if !interrupt.is_committing() {
                    return Err(stop_error(false));
                }
            }
            () = &mut deadline_passed, if !committing => {
                if !interrupt.is_committing() {
                    return Err(stop_error(true));
                }
            }
        }
    }
}

/// A statement's row stream that ends with 57014 on a cancel or at the
/// deadline, and with XX000 if the code producing it panics, rather than
/// ending as if it had no more rows. It also gives up its thread every
/// [`TIME_SLICE`]: tokio's budget lets a task run 128 batches between
/// yields, which for a consumer that formats each row (COPY TO) is
/// seconds during which nothing else on that thread runs, not even the
/// check for a client that went away.
pub(crate) fn guard_stream(
    stream: SendableRecordBatchStream,
    interrupt: Arc<Interrupt>,
    deadline: Deadline,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let guarded = Guarded {
        inner: stream,
        slice_started: Instant::now(),
        stop: Box::pin(async move {
            tokio::select! {
                () = interrupt.cancelled() => false,
                () = deadline.passed() => true,
            }
        }),
        done: false,
    };
    Box::pin(RecordBatchStreamAdapter::new(schema, guarded))
}

/// The longest a statement's stream runs its consumer's thread between
/// yields.
const TIME_SLICE: Duration = Duration::from_millis(20);

struct Guarded {
    inner: SendableRecordBatchStream,
    slice_started: Instant,
    /// Resolves to whether the deadline (rather than a cancel) stopped it.
    stop: Pin<Box<dyn Future<Output = bool> + Send>>,
    done: bool,
}

impl Stream for Guarded {
    type Item = datafusion::error::Result<arrow_array::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(timed_out) = self.stop.poll_unpin(cx) {
            self.done = true;
            return Poll::Ready(Some(Err(external(stop_error(timed_out)))));
        }
        if self.slice_started.elapsed() >= TIME_SLICE {
            self.slice_started = Instant::now();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.inner.poll_next_unpin(cx)
        }));
        match polled {
            Ok(Poll::Ready(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Ok(Poll::Ready(Some(Err(e)))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Ok(Poll::Pending) => {
                self.slice_started = Instant::now();
                Poll::Pending
            }
            Ok(ready) => ready,
            Err(panic) => {
                self.done = true;
                Poll::Ready(Some(Err(external(panicked(panic.as_ref())))))
            }
        }
    }
}

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The error a panic in a statement's work becomes.
pub(crate) fn panicked(payload: &(dyn std::any::Any + Send)) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_string());
    tracing::error!(panic = %what, "a statement's work panicked");
    Error::sql(
        "XX000",
        format!("internal error: the statement's work failed ({what})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_stops_work_that_has_not_begun_to_commit() {
        let interrupt = Interrupt::default();
        interrupt.reset();
        let work = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            interrupt.cancel();
        };
        let (outcome, ()) = tokio::join!(
            interruptible(&interrupt, Deadline::after(None), work),
            cancel
        );
        assert_eq!(outcome.unwrap_err().sqlstate(), "57014");
    }

    #[tokio::test]
    async fn a_cancel_during_the_commit_waits_for_it_and_reports_it() {
        let interrupt = Interrupt::default();
        interrupt.reset();
        let work = async {
            interrupt.enter_commit();
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(7)
        };
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            interrupt.cancel();
        };
        let (outcome, ()) = tokio::join!(
            interruptible(
                &interrupt,
                Deadline::after(Some(Duration::from_millis(1))),
                work
            ),
            cancel
        );
        assert_eq!(outcome.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_deadline_stops_work_with_its_own_message() {
        let interrupt = Interrupt::default();
        interrupt.reset();
        let work = std::future::pending::<Result<()>>();
        let err = interruptible(
            &interrupt,
            Deadline::after(Some(Duration::from_millis(5))),
            work,
        )
        .await
        .unwrap_err();
        assert_eq!(err.sqlstate(), "57014");
        assert!(err.to_string().contains("statement timeout"), "{err}");
    }

    /// A session with `boom(bigint)`, which panics on 50000, run on its
    /// own executor runtime or on the caller's.
    fn session_with_boom(executor: Option<tokio::runtime::Handle>) -> crate::Session {
        use arrow_array::cast::AsArray;
        use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
        let mut db = crate::Database::open_temporary().unwrap();
        if let Some(executor) = executor {
            db = db.with_executor(executor);
        }
        let session = db.session();
        let boom = create_udf(
            "boom",
            vec![arrow_schema::DataType::Int64],
            arrow_schema::DataType::Int64,
            Volatility::Volatile,
            Arc::new(|args: &[ColumnarValue]| {
                let ColumnarValue::Array(values) = &args[0] else {
                    panic!("boom on a scalar")
                };
                let values = values.as_primitive::<arrow_array::types::Int64Type>();
                assert!(!values.values().contains(&50_000), "boom at 50000");
                Ok(ColumnarValue::Array(Arc::new(values.clone())))
            }),
        );
        session.ctx.register_udf(boom);
        session
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_a_plan_fails_the_statement_and_commits_nothing() {
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        for handle in [None, Some(executor.handle().clone())] {
            let mut session = session_with_boom(handle);
            session.execute("CREATE TABLE t (v bigint)").await.unwrap();
            let err = session
                .execute("INSERT INTO t SELECT boom(value) FROM generate_series(1, 100000)")
                .await
                .unwrap_err();
            assert_eq!(err.sqlstate(), "XX000", "{err}");
            let batches = session.query("SELECT count(*) FROM t").await.unwrap();
            let count = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>();
            assert_eq!(count.map(|c| c.value(0)), Some(0), "no partial rows");
            let result = session
                .execute("SELECT boom(value) FROM generate_series(1, 100000)")
                .await
                .unwrap();
            let err = result.collect().await.unwrap_err();
            assert_eq!(err.sqlstate(), "XX000", "{err}");
        }
        executor.shutdown_background();
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_with_an_error_not_early() {
        use arrow_array::{Int32Array, RecordBatch};
        use arrow_schema::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1]))])
            .unwrap();
        let mut polls = 0;
        let inner = futures::stream::poll_fn(move |_| {
            polls += 1;
            if polls == 1 {
                Poll::Ready(Some(Ok(batch.clone())))
            } else {
                panic!("boom")
            }
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, inner));
        let interrupt = Arc::new(Interrupt::default());
        let mut guarded = guard_stream(stream, interrupt, Deadline::after(None));
        assert!(guarded.next().await.unwrap().is_ok());
        let err = guarded.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert!(guarded.next().await.is_none());
    }
}
