//! The key-value storage contract every database page goes through, plus the
//! in-memory, fault-injecting and call-counting stores shared by tests,
//! fuzzers and benches.
//!
//! The trait is deliberately tiny (three batch operations and the limits) so
//! that a backend — an embedded engine on local disk, a remote database —
//! only has to get atomicity and ordering right; every SQLite rule lives above
//! it, in [`KvFile`](crate::KvFile).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

/// Size limits a store imposes on one batch call.
///
/// The page logic never sends a batch above these limits: it splits plain
/// writes and deletions, and makes an atomic commit that cannot fit fail
/// early so SQLite falls back to its rollback journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Largest number of keys (or entries) accepted by one batch call.
    pub max_batch_keys: usize,
    /// Largest value, in bytes, accepted by `put_batch`.
    pub max_value_bytes: usize,
}

impl KvLimits {
    /// Limits used by [`MemoryKv::new`]: 128 keys per batch (512 KiB of
    /// pages), values up to 64 KiB.
    pub const DEFAULT: KvLimits = KvLimits {
        max_batch_keys: 128,
        max_value_bytes: 64 * 1024,
    };

    /// Checks a key count against `max_batch_keys`; stores call this first
    /// thing in every batch operation.
    pub fn check_keys(&self, keys: usize) -> Result<(), KvError> {
        if keys > self.max_batch_keys {
            return Err(KvError::BatchTooLarge {
                keys,
                limit: self.max_batch_keys,
            });
        }
        Ok(())
    }

    /// Checks a whole `put_batch` (entry count and every value size).
    pub fn check_entries(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.check_keys(entries.len())?;
        if let Some((_, value)) = entries
            .iter()
            .find(|(_, value)| value.len() > self.max_value_bytes)
        {
            return Err(KvError::ValueTooLarge {
                bytes: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

impl Default for KvLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The kind of store call, used to say which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// [`KvStore::get_batch`].
    Get,
    /// [`KvStore::put_batch`].
    Put,
    /// [`KvStore::delete_batch`].
    Delete,
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvOp::Get => "get_batch",
            KvOp::Put => "put_batch",
            KvOp::Delete => "delete_batch",
        })
    }
}

/// Which [`FaultyKv`] control produced an injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectedFault {
    /// Set by [`FaultyKv::fail_next`].
    FailNext,
    /// Set by [`FaultyKv::fail_after`].
    FailAfter,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InjectedFault::FailNext => "fail_next",
            InjectedFault::FailAfter => "fail_after",
        })
    }
}

/// A failed store call.
///
/// It is `Clone` (sources are behind an `Arc`) because one failure is used
/// twice: turned into a SQLite result code for the pager, and handed intact
/// to the caller of the SQL statement.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// A failure injected by [`FaultyKv`]; nothing of the call was applied.
    #[error("injected fault ({fault}) on {op}")]
    Injected {
        /// The control that caused it.
        fault: InjectedFault,
        /// The call that failed.
        op: KvOp,
    },
    /// The batch has more keys than [`KvLimits::max_batch_keys`].
    #[error("batch of {keys} keys exceeds the store limit of {limit}")]
    BatchTooLarge {
        /// Keys in the refused batch.
        keys: usize,
        /// The store's limit.
        limit: usize,
    },
    /// A value is larger than [`KvLimits::max_value_bytes`].
    #[error("value of {bytes} bytes exceeds the store limit of {limit}")]
    ValueTooLarge {
        /// Size of the refused value.
        bytes: usize,
        /// The store's limit.
        limit: usize,
    },
    /// This writer was fenced off: another owner took the data over, and
    /// the write was refused. Retrying cannot help.
    #[error("fenced: {message}")]
    Fenced {
        /// What the backend said.
        message: String,
    },
    /// The backend is temporarily unreachable; the call may be retried.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What the backend said.
        message: String,
    },
    /// The store has no room left for the write: the disk (or the quota,
    /// or the database server's disk) is full. Nothing of the call was
    /// applied. Inside SQLite it is `SQLITE_FULL`; retrying only helps once
    /// space has been freed. Test for it with [`KvError::is_storage_full`].
    #[error("no space left on the storage device: {message}")]
    StorageFull {
        /// What could not be written, in words.
        message: String,
        /// The backend's own error (such as the `ENOSPC` I/O error), when
        /// there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The call may or may not have been applied, and the store could not
    /// find out which before the call's deadline. Whoever caches what the
    /// store holds (the file layer, SQLite's page cache) can no longer trust
    /// its cache: the database that made the call is poisoned and must be
    /// closed and opened again, which reads the store afresh. The store
    /// itself settles the outcome before its next call.
    #[error("outcome unknown: {message}")]
    OutcomeUnknown {
        /// What was attempted and why its outcome is unknown.
        message: String,
    },
    /// Any other backend failure.
    #[error("store backend error: {message}")]
    Backend {
        /// What failed, in words.
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl KvError {
    /// Builds [`KvError::Backend`] from a backend error.
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        KvError::Backend {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Builds [`KvError::StorageFull`] from the backend error that reported
    /// the full store.
    pub fn storage_full(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        KvError::StorageFull {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// True when the store refused the write because it has no space left
    /// ([`KvError::StorageFull`]).
    pub fn is_storage_full(&self) -> bool {
        matches!(self, KvError::StorageFull { .. })
    }

    /// True when the store could not tell whether the call was applied
    /// ([`KvError::OutcomeUnknown`]): cached state must be dropped.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, KvError::OutcomeUnknown { .. })
    }

    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, KvError::Unavailable { .. } | KvError::Injected { .. })
    }
}

/// An asynchronous key-value store holding the pages of one actor's files.
///
/// Each actor gets its own store, so keys need no actor prefix. The contract
/// every implementation must keep:
///
/// - **Atomic batches.** `put_batch` applies all its entries or none of them,
///   even across a crash; `delete_batch` likewise removes all its keys or
///   none. A failed call (an `Err`) has applied nothing.
/// - **Ordering.** Calls on one store are applied in the order they are
///   issued (a call is issued when its future is first polled, and the page
///   logic awaits each call before the next), and a successful call is
///   durable when its future resolves.
/// - **Limits.** A batch with more keys than [`KvLimits::max_batch_keys`], or
///   a value larger than [`KvLimits::max_value_bytes`], is refused with
///   [`KvError::BatchTooLarge`] / [`KvError::ValueTooLarge`] before anything
///   is applied: a store must check (see [`KvLimits::check_entries`]).
/// - **Shape.** `get_batch` returns exactly one entry per requested key, in
///   the order of the keys, `None` for a missing key. Deleting a missing key
///   is not an error.
///
/// The trait is object safe and used as `Arc<dyn KvStore>`.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Reads `keys`, returning one `Option` per key in the same order.
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError>;
    /// Writes all `entries` atomically (all or nothing).
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError>;
    /// Removes all `keys` atomically; missing keys are ignored.
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError>;
    /// The limits this store enforces on one batch.
    fn limits(&self) -> KvLimits;
    /// Whether this store may still serve its data, checked locally without
    /// any I/O (it must be cheap: it runs before and after every database
    /// call).
    ///
    /// A store whose ownership can be taken over by another host (a lease)
    /// returns [`KvError::Fenced`] here as soon as its lease may have
    /// lapsed. The callers check it around every call because SQLite can
    /// answer a read from its page cache without calling the store at all;
    /// this is what stops such a read on a host that lost the data.
    /// The default (stores nobody else can take over) always allows.
    fn check_owner(&self) -> Result<(), KvError> {
        Ok(())
    }
}

thread_local! {
    static DEADLINE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// The deadline of the database call that is polling a store future on this
/// thread, if the caller set one with [`with_deadline`].
///
/// A [`KvStore`] reads it when its call starts (the first poll of its
/// future runs inside the caller's [`with_deadline`]) and stops retrying at
/// that instant, so the retries of several store calls made by one SQL
/// statement add up to at most the statement's own budget.
pub fn call_deadline() -> Option<std::time::Instant> {
    DEADLINE.with(std::cell::Cell::get)
}

/// Runs `body` with [`call_deadline`] returning `deadline` on this thread
/// (the earlier of it and any deadline already set), then restores the
/// previous value, even if `body` panics.
pub fn with_deadline<R>(deadline: std::time::Instant, body: impl FnOnce() -> R) -> R {
    let effective = call_deadline().map_or(deadline, |p| p.min(deadline));
    deadline_scope(Some(effective), body)
}

/// Runs `body` with no [`call_deadline`] on this thread, then restores the
/// previous value, even if `body` panics. For a database call that a store
/// makes from inside another call on the same thread: it is a call of its
/// own, with its own budget, not a part of the outer one.
pub fn without_deadline<R>(body: impl FnOnce() -> R) -> R {
    deadline_scope(None, body)
}

/// Runs `body` with [`call_deadline`] returning `deadline`, then restores
/// the previous value, even if `body` panics.
fn deadline_scope<R>(deadline: Option<std::time::Instant>, body: impl FnOnce() -> R) -> R {
    struct Restore(Option<std::time::Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|cell| cell.set(self.0));
        }
    }
    let _restore = Restore(call_deadline());
    DEADLINE.with(|cell| cell.set(deadline));
    body()
}

/// An in-memory store: a `BTreeMap` under a mutex. For tests, benches and
/// ephemeral databases; enforces its [`KvLimits`] like a real backend.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<Bytes, Bytes>>,
    limits: KvLimits,
}

impl MemoryKv {
    /// An empty store with [`KvLimits::DEFAULT`].
    pub fn new() -> Self {
        Self::with_limits(KvLimits::DEFAULT)
    }

    /// An empty store that enforces `limits`.
    pub fn with_limits(limits: KvLimits) -> Self {
        MemoryKv {
            map: Mutex::new(BTreeMap::new()),
            limits,
        }
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }

    /// A copy of every stored entry, for model checks in tests.
    pub fn snapshot(&self) -> BTreeMap<Bytes, Bytes> {
        self.map.lock().clone()
    }
}

#[async_trait::async_trait]
impl KvStore for MemoryKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.limits.check_keys(keys.len())?;
        let map = self.map.lock();
        Ok(keys.iter().map(|key| map.get(key).cloned()).collect())
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.limits.check_entries(entries)?;
        let mut map = self.map.lock();
        for (key, value) in entries {
            map.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.limits.check_keys(keys.len())?;
        let mut map = self.map.lock();
        for key in keys {
            map.remove(key);
        }
        Ok(())
    }

    fn limits(&self) -> KvLimits {
        self.limits
    }
}

#[derive(Debug, Default)]
struct FaultState {
    fail_next: u32,
    /// `Some(n)`: n more calls succeed, then every call fails.
    fail_after: Option<u32>,
    latency: Duration,
    lose_answers: bool,
    fenced: bool,
}

/// A store wrapper that injects failures and latency, for testing the error
/// paths (every `SQLITE_IOERR_*`) and slow backends.
///
/// An injected failure is decided when the call starts and applies nothing
/// to the inner store, as the [`KvStore`] contract requires of any failed
/// call. The one exception is [`lose_answers`](Self::lose_answers), whose
/// whole point is a write that landed but answered
/// [`KvError::OutcomeUnknown`]. The controls take `&self`, so a test can flip
/// them through an `Arc` while the store is in use.
pub struct FaultyKv {
    inner: Arc<dyn KvStore>,
    state: Mutex<FaultState>,
    calls: AtomicU64,
}

impl fmt::Debug for FaultyKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyKv")
            .field("state", &*self.state.lock())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl FaultyKv {
    /// Wraps `inner`; no fault and no latency until a control is used.
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        FaultyKv {
            inner,
            state: Mutex::new(FaultState::default()),
            calls: AtomicU64::new(0),
        }
    }

    /// The next `n` calls fail (replaces a previous `fail_next`; 0 clears it).
    pub fn fail_next(&self, n: u32) {
        self.state.lock().fail_next = n;
    }

    /// `n` more calls succeed, then every call fails until [`heal`](Self::heal).
    /// `fail_after(0)` makes the very next call fail.
    pub fn fail_after(&self, n: u32) {
        self.state.lock().fail_after = Some(n);
    }

    /// Every call first waits `latency` (a timer, so it works on any executor).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().latency = latency;
    }

    /// While `on`, every `put_batch` and `delete_batch` is applied to the
    /// inner store and then answered with [`KvError::OutcomeUnknown`], as if
    /// the answer was lost after the write landed. A call the inner store
    /// refuses still returns its own error; reads are not affected.
    pub fn lose_answers(&self, on: bool) {
        self.state.lock().lose_answers = on;
    }

    /// While `on`, [`check_owner`](KvStore::check_owner) returns
    /// [`KvError::Fenced`], as a store whose lease lapsed does; otherwise it
    /// asks the inner store. The batch calls are not affected.
    pub fn set_fenced(&self, on: bool) {
        self.state.lock().fenced = on;
    }

    /// Clears every fault (including [`lose_answers`](Self::lose_answers)
    /// and [`set_fenced`](Self::set_fenced)) and the latency.
    pub fn heal(&self) {
        *self.state.lock() = FaultState::default();
    }

    /// Number of calls received so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn KvStore> {
        &self.inner
    }

    /// Counts the call and decides its fate; returns the latency to wait.
    /// An `Ok` outcome carries whether the answer to a write is to be lost.
    fn admit(&self, op: KvOp) -> (Duration, Result<bool, KvError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock();
        let outcome = if state.fail_next > 0 {
            state.fail_next -= 1;
            Err(KvError::Injected {
                fault: InjectedFault::FailNext,
                op,
            })
        } else {
            match &mut state.fail_after {
                Some(0) => Err(KvError::Injected {
                    fault: InjectedFault::FailAfter,
                    op,
                }),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        };
        let lose_answer = state.lose_answers && op != KvOp::Get;
        (state.latency, outcome.map(|()| lose_answer))
    }

    /// Waits the latency and returns the call's fate: `Ok(true)` when the
    /// call is a write whose answer is to be lost.
    async fn gate(&self, op: KvOp) -> Result<bool, KvError> {
        let (latency, outcome) = self.admit(op);
        if !latency.is_zero() {
            futures_timer::Delay::new(latency).await;
        }
        outcome
    }
}

#[async_trait::async_trait]
impl KvStore for FaultyKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.gate(KvOp::Get).await?;
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        let lose_answer = self.gate(KvOp::Put).await?;
        self.inner.put_batch(entries).await?;
        lost_answer(lose_answer, KvOp::Put)
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        let lose_answer = self.gate(KvOp::Delete).await?;
        self.inner.delete_batch(keys).await?;
        lost_answer(lose_answer, KvOp::Delete)
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }

    fn check_owner(&self) -> Result<(), KvError> {
        if self.state.lock().fenced {
            return Err(KvError::Fenced {
                message: "lease lapsed (injected by FaultyKv::set_fenced)".into(),
            });
        }
        self.inner.check_owner()
    }
}

/// The answer of a [`FaultyKv`] write that the inner store applied: lost
/// when [`FaultyKv::lose_answers`] was on as the call started.
fn lost_answer(lose: bool, op: KvOp) -> Result<(), KvError> {
    if lose {
        return Err(KvError::OutcomeUnknown {
            message: format!(
                "the answer to the write was lost after {op} landed \
                 (injected by FaultyKv::lose_answers)"
            ),
        });
    }
    Ok(())
}

/// A store wrapper counting round trips per kind of call, so benches and
/// tests can assert how many calls an operation costs.
pub struct CountingKv {
    inner: Arc<dyn KvStore>,
    gets: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
}

impl fmt::Debug for CountingKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingKv")
            .field("gets", &self.get_calls())
            .field("puts", &self.put_calls())
            .field("deletes", &self.delete_calls())
            .finish_non_exhaustive()
    }
}

impl CountingKv {
    /// Wraps `inner` with all counters at zero.
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        CountingKv {
            inner,
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
        }
    }

    /// `get_batch` calls so far.
    pub fn get_calls(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    /// `put_batch` calls so far.
    pub fn put_calls(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// `delete_batch` calls so far.
    pub fn delete_calls(&self) -> u64 {
        self.deletes.load(Ordering::Relaxed)
    }

    /// All calls so far.
    pub fn total(&self) -> u64 {
        self.get_calls() + self.put_calls() + self.delete_calls()
    }

    /// Sets every counter back to zero.
    pub fn reset(&self) {
        self.gets.store(0, Ordering::Relaxed);
        self.puts.store(0, Ordering::Relaxed);
        self.deletes.store(0, Ordering::Relaxed);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn KvStore> {
        &self.inner
    }
}

#[async_trait::async_trait]
impl KvStore for CountingKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_batch(entries).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete_batch(keys).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }

    fn check_owner(&self) -> Result<(), KvError> {
        self.inner.check_owner()
    }
}
