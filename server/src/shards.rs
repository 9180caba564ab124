//! The threads that serve connections. Each runs a single-threaded tokio
//! runtime and keeps every connection it is dealt: nothing is stolen
//! between them. On a request-reply protocol work stealing mostly costs
//! wake-ups: with two work-stealing workers on two cores, pgbench -S spent
//! a fifth of the server's time waking threads, and one such worker could
//! not use the second core. Queries that need many cores run on the query
//! runtime (`Database::with_executor`), not here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

pub(crate) struct Shards {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Shards {
    pub fn start(count: usize) -> Result<Shards> {
        let mut shards = Shards {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting a network thread's runtime", e))?;
            let (stop, stopped) = oneshot::channel::<()>();
            shards.handles.push(runtime.handle().clone());
            shards.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("basalt-net-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .map_err(|e| Error::io("starting a network thread", e))?;
            shards.threads.push(thread);
        }
        Ok(shards)
    }

    /// The runtime the next connection goes to, in turn.
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops every thread, dropping whatever still runs on it.
    pub fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
