//! Cancel requests (psql's Ctrl-C): a CancelRequest arrives on a new
//! connection carrying the target's process id and secret key; the
//! target's running statement stops with 57014 (unless it is already
//! committing: see `basalt_query::Interrupt`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use basalt_query::Interrupt;
use bytes::Bytes;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;

/// The server's live connections by (process id, secret key).
#[derive(Debug, Default)]
pub struct CancelRegistry {
    connections: Mutex<HashMap<(i32, Bytes), Weak<Interrupt>>>,
}

impl CancelRegistry {
    /// Lets a cancel request carrying `pid` and `key` stop `interrupt`'s
    /// session for as long as the session lives.
    pub fn register(&self, pid: i32, key: &SecretKey, interrupt: &Arc<Interrupt>) {
        if let Ok(mut map) = self.connections.lock() {
            map.retain(|_, weak| weak.strong_count() > 0);
            map.insert((pid, key.to_bytes()), Arc::downgrade(interrupt));
        }
    }
}

#[async_trait]
impl CancelHandler for CancelRegistry {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let target = self.connections.lock().ok().and_then(|map| {
            map.get(&(request.pid, request.secret_key.to_bytes()))
                .and_then(Weak::upgrade)
        });
        if let Some(interrupt) = target {
            interrupt.cancel();
        }
    }
}
