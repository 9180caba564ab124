//! Who gets a connection slot. A connection still in its startup handshake
//! holds a startup slot; one that has logged in holds a session slot
//! instead. The two are counted apart, so clients that connect and never
//! finish logging in cannot take the sessions of those who do (up to
//! `max_connections`, what Postgres' reserved connections keep for its
//! superusers). And when every startup slot is taken, a new connection
//! takes the slot of the one that has been logging in longest, which is
//! closed: a real client logs in within milliseconds, so a flood of
//! clients that never finish keeps nobody out unless it outpaces that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Admission {
    /// Connections logging in, oldest first, with the signal that closes each.
    starting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next_id: AtomicU64,
    sessions: AtomicUsize,
    max_starting: usize,
    max_sessions: usize,
}

/// A startup slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct StartupSlot {
    admission: Arc<Admission>,
    id: u64,
    evicted: Arc<Notify>,
}

/// A session slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct SessionSlot(Arc<Admission>);

impl Admission {
    pub fn new(max_sessions: usize, max_starting: usize) -> Arc<Admission> {
        Arc::new(Admission {
            starting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            sessions: AtomicUsize::new(0),
            max_starting: max_starting.max(1),
            max_sessions,
        })
    }

    /// A startup slot for a connection just accepted, closing the
    /// connection that has been logging in longest if none is free.
    pub fn start(self: &Arc<Self>) -> StartupSlot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        let mut starting = self.starting.lock();
        if starting.len() >= self.max_starting {
            if let Some((_, oldest)) = starting.pop_front() {
                // A permit is kept if the connection is not waiting yet.
                oldest.notify_one();
            }
        }
        starting.push_back((id, evicted.clone()));
        StartupSlot {
            admission: self.clone(),
            id,
            evicted,
        }
    }

    /// A session slot for a connection that has logged in, if one is free.
    pub fn admit(self: &Arc<Self>) -> Option<SessionSlot> {
        self.sessions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_sessions).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.clone()))
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        (
            self.starting.lock().len(),
            self.sessions.load(Ordering::SeqCst),
        )
    }
}

impl StartupSlot {
    /// Notified when a newer connection has taken this slot.
    pub fn eviction(&self) -> Arc<Notify> {
        self.evicted.clone()
    }

    #[cfg(test)]
    async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for StartupSlot {
    fn drop(&mut self) {
        self.admission
            .starting
            .lock()
            .retain(|(id, _)| *id != self.id);
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_startup_queue_closes_its_oldest_and_sessions_are_apart() {
        let admission = Admission::new(2, 2);
        let oldest = admission.start();
        let _second = admission.start();
        let first = admission.admit().expect("a session slot");
        let _third = admission.start();
        tokio::time::timeout(std::time::Duration::from_secs(5), oldest.evicted())
            .await
            .expect("the oldest startup slot was taken");
        assert_eq!(admission.counts(), (2, 1));
        drop(oldest);
        assert_eq!(
            admission.counts(),
            (2, 1),
            "an evicted slot is gone already"
        );
        let _second_session = admission.admit().expect("a second session slot");
        assert!(admission.admit().is_none(), "two session slots only");
        drop(first);
        assert!(admission.admit().is_some());
    }
}
