//! One budget of threads for index builds. A bulk load writes runs on
//! every core and each run builds its indexes; flushes, compactions and
//! CREATE INDEX build too. Each build takes at least one thread (waiting
//! for one if none is free) and as many more as are free, up to what it
//! can use, so together they use the cores once instead of cores squared.

use parking_lot::{Condvar, Mutex};

pub(crate) struct BuildBudget {
    free: Mutex<usize>,
    released: Condvar,
    total: usize,
}

/// Threads taken from the budget, given back when dropped.
pub(crate) struct Threads<'a> {
    budget: &'a BuildBudget,
    count: usize,
}

impl BuildBudget {
    pub fn new(total: usize) -> BuildBudget {
        let total = total.max(1);
        BuildBudget {
            free: Mutex::new(total),
            released: Condvar::new(),
            total,
        }
    }

    /// The machine's cores.
    pub fn for_this_machine() -> BuildBudget {
        BuildBudget::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Waits for one free thread, then takes as many more as are free, up
    /// to `want` (and at most the whole budget).
    pub fn take(&self, want: usize) -> Threads<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.released.wait(&mut free);
        }
        let count = want.clamp(1, self.total).min(*free);
        *free -= count;
        Threads {
            budget: self,
            count,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }
}

impl Threads<'_> {
    pub fn count(&self) -> usize {
        self.count
    }
}

impl Drop for Threads<'_> {
    fn drop(&mut self) {
        *self.budget.free.lock() += self.count;
        self.budget.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_share_the_threads() {
        let budget = BuildBudget::new(4);
        let first = budget.take(3);
        assert_eq!(first.count(), 3);
        let second = budget.take(8);
        assert_eq!(second.count(), 1, "only what is free, at least one");
        drop(first);
        assert_eq!(budget.take(8).count(), 3);
        drop(second);
        assert_eq!(budget.take(0).count(), 1);
        assert_eq!(budget.take(100).count(), 4);
    }

    #[test]
    fn a_build_waits_for_a_thread_to_come_back() {
        let budget = std::sync::Arc::new(BuildBudget::new(1));
        let held = budget.take(1);
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.take(1).count())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.join().unwrap(), 1);
    }
}
