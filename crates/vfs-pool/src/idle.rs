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
//! bumps its actor's counter when it starts and counts itself in flight
//! until it ends, and the sweep compares the counter with what it saw the
//! time before. The atomics are relaxed: a sweep that misjudges releases a
//! database one period early or late, which costs a cache refill or some
//! memory, never data (a release is safe at any moment between calls).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use vfs_wasm::DbId;

use crate::Result;
use crate::pool::{ActorState, Shared};

/// Not a counter value: the sweep has not looked yet, or nothing was
/// released since the database opened.
const NEVER: u64 = u64::MAX;

/// One actor's calls, as the sweep sees them.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Calls the actor's databases have started.
    calls: AtomicU64,
    /// Calls running now.
    running: AtomicU64,
    /// `calls` at the sweep's previous look.
    seen: AtomicU64,
    /// `calls` when its memory was last released.
    released_at: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            running: AtomicU64::new(0),
            seen: AtomicU64::new(NEVER),
            released_at: AtomicU64::new(NEVER),
        }
    }
}

/// A call in flight; it ends when dropped.
pub(crate) struct Running<'a>(&'a Activity);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// Counts a call (a statement or script of the actor's database) until
    /// the returned guard drops.
    pub(crate) fn call(&self) -> Running<'_> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(self)
    }

    /// A database of the actor was opened: whatever was released before
    /// belonged to the one before it.
    pub(crate) fn opened(&self) {
        self.released_at.store(NEVER, Ordering::Relaxed);
    }

    /// The sweep's look: `Some(calls)` if no call ran since the previous
    /// look (none started and none is still running) and the memory was
    /// not released since the last call.
    fn quiet_since_last_look(&self) -> Option<u64> {
        let calls = self.calls.load(Ordering::Relaxed);
        let before = self.seen.swap(calls, Ordering::Relaxed);
        let quiet = before == calls
            && self.running.load(Ordering::Relaxed) == 0
            && self.released_at.load(Ordering::Relaxed) != calls;
        quiet.then_some(calls)
    }

    /// Notes that the memory was released when the counter was `calls`.
    fn released(&self, calls: u64) {
        self.released_at.store(calls, Ordering::Relaxed);
    }
}

impl Shared {
    /// Runs `f` on the actor's instance for its database `db` as an
    /// operation of the pool's own (freeing or measuring its memory), not a
    /// call of the actor's: it does not count as activity.
    pub(crate) async fn uncounted_call<T, F>(
        self: &Arc<Self>,
        actor: &ActorState,
        db: DbId,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut vfs_wasm::Instance, DbId) -> vfs_wasm::Result<T> + Send + 'static,
    {
        let _op = self.begin_op(actor)?;
        Ok(actor.worker.call_healthy(move |i| f(i, db)).await??)
    }

    /// Frees the page cache, cached statements and page images of the
    /// actor's database `db`; returns the guest heap bytes it gave back.
    pub(crate) async fn release_memory(
        self: &Arc<Self>,
        actor: &ActorState,
        db: DbId,
    ) -> Result<u64> {
        self.uncounted_call(actor, db, vfs_wasm::Instance::release_memory)
            .await
    }

    /// One sweep: releases the memory of every open database whose actor
    /// had no call since the previous sweep. Returns the bytes freed.
    ///
    /// Each release waits its turn on its instance like any call, at most
    /// as long as a call may hold an instance; an instance that does not
    /// answer within that is skipped for the rest of the sweep, so a hung
    /// store delays the sweep once per instance at most.
    async fn sweep_idle(self: &Arc<Self>) -> u64 {
        let bound = self.stuck_after();
        let mut unanswered = HashSet::new();
        let mut freed = 0;
        for (actor, db) in self.open_databases() {
            if self.is_shutting_down() {
                break;
            }
            if unanswered.contains(&actor.instance) {
                continue;
            }
            let Some(calls) = actor.activity.quiet_since_last_look() else {
                continue;
            };
            match tokio::time::timeout(bound, self.release_memory(&actor, db)).await {
                Ok(Ok(bytes)) => {
                    actor.activity.released(calls);
                    freed += bytes;
                }
                // Released, closed, poisoned or on a broken instance in the
                // meantime: nothing to give back, and the call that finds
                // it so reports it.
                Ok(Err(e)) => {
                    tracing::debug!(actor = %actor.id, error = %e, "memory not released");
                }
                Err(_) => {
                    tracing::debug!(
                        instance = actor.instance,
                        "instance busy past the bound; its releases wait for the next sweep"
                    );
                    unanswered.insert(actor.instance);
                }
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

#[cfg(test)]
mod tests {
    use super::Activity;

    #[test]
    fn a_database_is_released_after_one_quiet_period_and_once_per_quiet_spell() {
        let a = Activity::default();
        // The first look only notes the counter.
        assert_eq!(a.quiet_since_last_look(), None);
        // Nothing since: quiet.
        let calls = a.quiet_since_last_look().expect("quiet");
        a.released(calls);
        // Still nothing: already released, not again.
        assert_eq!(a.quiet_since_last_look(), None);
        assert_eq!(a.quiet_since_last_look(), None);
        // A call starts a new spell: the next look sees it, the one after
        // releases again.
        drop(a.call());
        assert_eq!(a.quiet_since_last_look(), None);
        assert!(a.quiet_since_last_look().is_some());
    }

    #[test]
    fn a_call_still_running_is_never_quiet() {
        let a = Activity::default();
        let running = a.call();
        // Started before both looks and still running, however long.
        assert_eq!(a.quiet_since_last_look(), None);
        assert_eq!(a.quiet_since_last_look(), None);
        assert_eq!(a.quiet_since_last_look(), None);
        drop(running);
        assert!(a.quiet_since_last_look().is_some());
    }

    #[test]
    fn a_reopened_database_is_released_again() {
        let a = Activity::default();
        assert_eq!(a.quiet_since_last_look(), None);
        let calls = a.quiet_since_last_look().expect("quiet");
        a.released(calls);
        assert_eq!(a.quiet_since_last_look(), None);
        // Closed and opened again with no call since: the new database's
        // memory was never released.
        a.opened();
        assert!(a.quiet_since_last_look().is_some());
    }
}
