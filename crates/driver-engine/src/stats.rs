//! [`PgStats`]: counters of the statements a [`PgStorage`](crate::PgStorage)
//! sent, so tests and benches can check how many round trips an operation
//! costs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the statements a [`PgStorage`](crate::PgStorage) sent, for tests and benches
/// that check how many round trips an operation costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgStats {
    /// `get_batch` statements sent (one per call, plus retries).
    pub get_batches: u64,
    /// `put_batch` statements sent (one per call).
    pub put_batches: u64,
    /// `delete_batch` statements sent (one per call).
    pub delete_batches: u64,
    /// Entries written by all `put_batch` statements.
    pub put_entries: u64,
    /// Most entries written by one `put_batch` statement.
    pub largest_put: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// Calls refused because their store was fenced.
    pub fenced: u64,
    /// Lease renewal statements sent (each renews up to 10,000 stores).
    pub lease_renewals: u64,
    /// Writes whose answer was lost and that were settled by ending their
    /// backend or reading the write count back.
    pub settled_writes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) get_batches: AtomicU64,
    pub(crate) put_batches: AtomicU64,
    pub(crate) delete_batches: AtomicU64,
    pub(crate) put_entries: AtomicU64,
    pub(crate) largest_put: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) fenced: AtomicU64,
    pub(crate) lease_renewals: AtomicU64,
    pub(crate) settled_writes: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> PgStats {
        PgStats {
            get_batches: self.get_batches.load(Ordering::Relaxed),
            put_batches: self.put_batches.load(Ordering::Relaxed),
            delete_batches: self.delete_batches.load(Ordering::Relaxed),
            put_entries: self.put_entries.load(Ordering::Relaxed),
            largest_put: self.largest_put.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            lease_renewals: self.lease_renewals.load(Ordering::Relaxed),
            settled_writes: self.settled_writes.load(Ordering::Relaxed),
        }
    }
}
