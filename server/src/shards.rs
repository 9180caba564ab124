//! The threads that serve connections. Each runs a single-threaded tokio
//! runtime and keeps every connection it is dealt: nothing is stolen
//! between them. On a request-reply protocol work stealing mostly costs
//! wake-ups: with two work-stealing workers on two cores, pgbench -S spent
//! a fifth of the server's time waking threads, and one such worker could
//! not use the second core. Queries that need many cores run on the query
//! runtime (`Database::with_executor`), not here.
//!
//! With one thread per core (the default) each thread is pinned to its
//! core, so a connection can move to the thread on the core its client
//! sends from (`crate::serve`): a client thread and the thread answering
//! it then wake each other on one core, without an inter-processor
//! interrupt. Dealt out blindly, half of a two-threaded client's
//! connections land on the other core's thread, and pgbench -S ran at
//! 80k or 120k transactions a second depending on how its connections
//! happened to be dealt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

pub(crate) struct Shards {
    placement: Placement,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// Where connections run: each network thread's runtime and, when the
/// threads are pinned, the core each one runs on.
#[derive(Clone)]
pub(crate) struct Placement(Arc<PlacementInner>);

struct PlacementInner {
    handles: Vec<Handle>,
    shard_of_cpu: HashMap<usize, usize>,
    next: AtomicUsize,
    moves: AtomicU64,
    /// Messages between two looks at where a connection's client is.
    check_every: u32,
    /// Tests force moves with a rule of their own: from a thread, the
    /// thread to move to.
    rule: Option<fn(usize) -> Option<usize>>,
}

/// A connection looks at its client's core this often (in messages, so an
/// idle connection costs nothing). pgbench -S sends about 30,000 messages a
/// second per connection.
const CHECK_EVERY: u32 = 256;

impl Shards {
    pub fn start(count: usize) -> Result<Shards> {
        let count = count.max(1);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        // Pinning one thread per core leaves each core one thread to
        // serve; with more or fewer threads than cores it would not.
        let pinned = count > 1 && cores.len() == count;
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        let mut shard_of_cpu = HashMap::new();
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting a network thread's runtime", e))?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            let core = cores.get(i).copied().filter(|_| pinned);
            if let Some(core) = core {
                shard_of_cpu.insert(core.id, i);
            }
            let thread = std::thread::Builder::new()
                .name(format!("basalt-net-{i}"))
                .stack_size(crate::STATEMENT_STACK_BYTES)
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::debug!(core = core.id, "network thread not pinned");
                        }
                    }
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })
                .map_err(|e| Error::io("starting a network thread", e))?;
            threads.push(thread);
        }
        Ok(Shards {
            placement: Placement(Arc::new(PlacementInner {
                handles,
                shard_of_cpu,
                next: AtomicUsize::new(0),
                moves: AtomicU64::new(0),
                check_every: CHECK_EVERY,
                rule: None,
            })),
            stops,
            threads,
        })
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Replaces the CPU-to-thread rule, for tests that force moves.
    #[cfg(test)]
    pub fn with_rule(mut self, rule: fn(usize) -> Option<usize>) -> Shards {
        let inner = &self.placement.0;
        self.placement = Placement(Arc::new(PlacementInner {
            handles: inner.handles.clone(),
            shard_of_cpu: inner.shard_of_cpu.clone(),
            next: AtomicUsize::new(0),
            moves: AtomicU64::new(0),
            check_every: 1,
            rule: Some(rule),
        }));
        self
    }

    /// Stops every thread, dropping whatever still runs on it.
    pub fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

impl Placement {
    /// The thread the next connection starts on, in turn.
    pub fn next_shard(&self) -> usize {
        self.0.next.fetch_add(1, Ordering::Relaxed) % self.0.handles.len()
    }

    pub fn handle(&self, shard: usize) -> &Handle {
        &self.0.handles[shard % self.0.handles.len()]
    }

    /// Where a connection served by thread `here`, whose client last sent
    /// from `cpu`, belongs: the thread pinned to that core.
    pub fn wanted_shard(&self, cpu: usize, here: usize) -> Option<usize> {
        match self.0.rule {
            Some(rule) => rule(here),
            None => self.0.shard_of_cpu.get(&cpu).copied(),
        }
    }

    pub fn check_every(&self) -> u32 {
        self.0.check_every
    }

    /// Whether moving a connection could ever pay off here.
    pub fn follows_clients(&self) -> bool {
        self.0.rule.is_some() || !self.0.shard_of_cpu.is_empty()
    }

    /// Counts a move; returns how many there have been.
    pub fn count_move(&self) -> u64 {
        self.0.moves.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Connections moved between threads so far.
    #[cfg(test)]
    pub fn moves(&self) -> u64 {
        self.0.moves.load(Ordering::Relaxed)
    }
}
