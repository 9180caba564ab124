//! Cancel requests (psql's Ctrl-C): a CancelRequest arrives on a new
//! connection carrying the target's process id and secret key; the
//! target's running statement stops with 57014.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::sync::Notify;

/// One connection's cancel signal, checked between result batches and
/// raced against statement execution.
#[derive(Debug, Default)]
pub struct CancelSignal {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelSignal {
    /// Clears a cancel that arrived while nothing was running.
    pub fn reset(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
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

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// The server's live connections by (process id, secret key).
#[derive(Debug, Default)]
pub struct CancelRegistry {
    connections: Mutex<HashMap<(i32, Bytes), Weak<CancelSignal>>>,
}

impl CancelRegistry {
    pub fn register(&self, pid: i32, key: &SecretKey) -> Arc<CancelSignal> {
        let signal = Arc::new(CancelSignal::default());
        if let Ok(mut map) = self.connections.lock() {
            map.retain(|_, weak| weak.strong_count() > 0);
            map.insert((pid, key.to_bytes()), Arc::downgrade(&signal));
        }
        signal
    }
}

#[async_trait]
impl CancelHandler for CancelRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let target = self.connections.lock().ok().and_then(|map| {
            map.get(&(request.pid, request.secret_key.to_bytes()))
                .and_then(Weak::upgrade)
        });
        if let Some(signal) = target {
            signal.cancel();
        }
    }
}
