//! Giving back the memory of idle databases.
//!
//! An open database keeps its page cache and its prepared statements
//! between calls: that is what makes its next call fast, and on an actor
//! that gets no calls for minutes it is memory its co-tenants could use.
//! With [`PoolConfig::release_memory_after`](crate::PoolConfig::release_memory_after)
//! set, a background task looks at every open database once per that
//! period and releases the memory of each one that had no call since its
//! previous look (see [`vfs_wasm::Instance::release_memory`]): so a
//! database is released after between one and two periods without a call,
//! and once per quiet spell, however long it lasts.
//!
//! Idleness is counted without a lock or a clock on the call path: a call
//! bumps its actor's counter, and the sweep compares the counter with what
//! it saw the time before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use vfs_wasm::DbId;

use crate::Result;
use crate::pool::{ActorState, Shared};

/// Not a counter value: the sweep has not looked yet, or nothing was
/// released since the last call.
const NEVER: u64 = u64::MAX;

/// One actor's calls, as the sweep sees them.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Calls the actor's databases have started.
    calls: AtomicU64,
    /// `calls` at the sweep's previous look.
    seen: AtomicU64,
    /// `calls` when its memory was last released.
    released_at: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            seen: AtomicU64::new(NEVER),
            released_at: AtomicU64::new(NEVER),
        }
    }
}

impl Activity {
    /// Counts a call (a statement or script of the actor's database).
    pub(crate) fn called(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The sweep's look: `Some(calls)` if there was no call since the
    /// previous look and the memory was not released since the last call.
    fn quiet_since_last_look(&self) -> Option<u64> {
        let calls = self.calls.load(Ordering::Relaxed);
        let before = self.seen.swap(calls, Ordering::Relaxed);
        (before == calls && self.released_at.load(Ordering::Relaxed) != calls).then_some(calls)
    }

    /// Notes that the memory was released when the counter was `calls`.
    fn released(&self, calls: u64) {
        self.released_at.store(calls, Ordering::Relaxed);
    }
}

impl Shared {
    /// Frees the page cache, cached statements and page images of the
    /// actor's database `db`; returns the guest heap bytes it gave back.
    /// Not a call of the actor's: it does not count as activity.
    pub(crate) async fn release_memory(
        self: &Arc<Self>,
        actor: &ActorState,
        db: DbId,
    ) -> Result<u64> {
        let _op = self.begin_op(actor)?;
        let freed = actor
            .worker
            .call_healthy(move |i| i.release_memory(db))
            .await??;
        Ok(freed)
    }

    /// One sweep: releases the memory of every open database whose actor
    /// had no call since the previous sweep. Returns the bytes freed.
    async fn sweep_idle(self: &Arc<Self>) -> u64 {
        let mut freed = 0;
        for (actor, db) in self.open_databases() {
            let Some(calls) = actor.activity.quiet_since_last_look() else {
                continue;
            };
            match self.release_memory(&actor, db).await {
                Ok(bytes) => {
                    actor.activity.released(calls);
                    freed += bytes;
                }
                // Released, closed, poisoned or on a broken instance in the
                // meantime: nothing to give back, and the call that finds
                // it so reports it.
                Err(e) => tracing::debug!(actor = %actor.id, error = %e, "memory not released"),
            }
        }
        freed
    }
}

/// The sweep's task: every `every`, [`Shared::sweep_idle`], until the pool
/// is gone or shutting down.
pub(crate) async fn sweep_every(pool: Weak<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the first look is one period in.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        if shared.is_shutting_down() {
            return;
        }
        let freed = shared.sweep_idle().await;
        if freed > 0 {
            tracing::debug!(bytes = freed, "released idle databases' memory");
        }
    }
}
