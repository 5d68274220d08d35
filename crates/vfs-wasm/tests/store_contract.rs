//! What the instance owes a `KvStore` beyond the three batch calls, and what
//! it does with the answers, through the public API:
//!
//! - `check_owner` runs before and after every call. With `locking_mode =
//!   EXCLUSIVE` SQLite answers reads from its page cache without calling the
//!   store, so a host whose lease lapsed would otherwise keep serving rows
//!   another host may have changed since.
//! - `KvError::OutcomeUnknown` poisons the database: SQLite's page cache and
//!   the file layer's cached size may disagree with the store, so only a
//!   reopen (which reads the store afresh) may serve it again, and the
//!   store's error still reaches the caller.
//! - Every store call is polled inside `vfs_core::with_deadline`, so a store
//!   can bound its retries by the call's budget.
//! - A failed store call is named in the caller's error by the operation
//!   that failed ("commit of the main file failed ..."), not by SQLite's
//!   generic "disk I/O error".

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use vfs_core::testing::report;
use vfs_core::{CountingKv, FaultyKv, KvError, KvLimits, KvStore, MemoryKv};
use vfs_wasm::{Error, InstanceConfig};

use common::{assert_integrity, instance, instance_with, ints};

/// The store error behind `err`, found through `source()` as any caller
/// would find it.
fn kv_cause(err: &Error) -> Option<&KvError> {
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        if let Some(kv) = e.downcast_ref::<KvError>() {
            return Some(kv);
        }
        next = e.source();
    }
    None
}

fn is_fenced(err: &Error) -> bool {
    matches!(kv_cause(err), Some(KvError::Fenced { .. }))
}

/// Fills `t` with enough 3 KB rows that a scan cannot be served from a
/// 64 KiB page cache.
const WIDE: &str = "CREATE TABLE wide (b); WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 200)
     INSERT INTO wide SELECT randomblob(3000) FROM r";

fn small_cache() -> InstanceConfig {
    InstanceConfig {
        cache_size_kib: 64,
        ..InstanceConfig::default()
    }
}

// ---- check_owner ----------------------------------------------------------

/// A store over memory with a lease that is lost after a number of further
/// checks, so a test can let the check before a call pass and fail the one
/// after it ([`FaultyKv::set_fenced`] fences every check at once).
struct LeasedKv {
    inner: MemoryKv,
    /// `None`: the lease holds; `Some(n)`: n more checks pass, then every
    /// check fails.
    checks_left: Mutex<Option<u32>>,
}

impl LeasedKv {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            checks_left: Mutex::new(None),
        })
    }

    /// The lease is lost after `n` more checks (0: now).
    fn lapse_after(&self, n: u32) {
        *self.checks_left.lock() = Some(n);
    }

    fn renew(&self) {
        *self.checks_left.lock() = None;
    }
}

#[async_trait::async_trait]
impl KvStore for LeasedKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.inner.put_batch(entries).await
    }
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
    fn check_owner(&self) -> Result<(), KvError> {
        let mut left = self.checks_left.lock();
        match &mut *left {
            None => Ok(()),
            Some(0) => Err(KvError::Fenced {
                message: "lease lapsed".into(),
            }),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }
}

#[test]
fn a_lapsed_lease_refuses_a_read_the_page_cache_could_answer() {
    let counting = Arc::new(CountingKv::new(Arc::new(MemoryKv::new())));
    let store = Arc::new(FaultyKv::new(Arc::clone(&counting) as Arc<dyn KvStore>));
    let mut inst = instance();
    let db = inst
        .open("leased", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(
        db,
        "CREATE TABLE t (v); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
    )
    .unwrap();
    let sql = "SELECT v FROM t ORDER BY v";
    assert_eq!(ints(&mut inst, db, sql), [1, 2]);
    // The rows are in SQLite's page cache: reading them again costs no
    // store call, so only check_owner can stop a stale read.
    let gets = counting.get_calls();
    assert_eq!(ints(&mut inst, db, sql), [1, 2]);
    assert_eq!(counting.get_calls(), gets, "served from cache");

    store.set_fenced(true);
    let err = inst
        .query(db, sql, &[])
        .expect_err("a host without its lease serves nothing");
    assert!(is_fenced(&err), "{err:?}");
    assert!(report(&err).contains("lease lapsed"), "{err}");
    for result in [
        inst.exec(db, "SELECT 1").map(|()| 0),
        inst.execute(db, "INSERT INTO t VALUES (3)", &[]),
    ] {
        let err = result.expect_err("refused before it runs");
        assert!(is_fenced(&err), "{err:?}");
    }
    // Refused before anything ran: the lease back, the database is as it was.
    store.set_fenced(false);
    assert_eq!(ints(&mut inst, db, sql), [1, 2]);
    inst.close(db).unwrap();

    // Opening on a fenced store is refused too, and frees the name.
    store.set_fenced(true);
    let err = inst
        .open("leased", Arc::clone(&store) as Arc<dyn KvStore>)
        .expect_err("no open without the lease");
    assert!(is_fenced(&err), "{err:?}");
    store.set_fenced(false);
    let db = inst
        .open("leased", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    assert_eq!(ints(&mut inst, db, sql), [1, 2]);
}

#[test]
fn a_lease_lost_during_a_call_withholds_its_results() {
    let store = LeasedKv::new();
    let mut inst = instance();
    let db = inst
        .open("leased", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .unwrap();
    // The check before the call passes, the one after it fails.
    store.lapse_after(1);
    let err = inst
        .query(db, "SELECT v FROM t", &[])
        .expect_err("the rows may be stale by the time the call ends");
    assert!(is_fenced(&err), "{err:?}");
    store.lapse_after(1);
    let err = inst
        .execute(db, "INSERT INTO t VALUES (2)", &[])
        .expect_err("the write's outcome cannot be acknowledged");
    assert!(is_fenced(&err), "{err:?}");
    assert!(err.to_string().contains("unknown"), "{err}");
    // The lease renewed (nobody else took the data), the connection goes on;
    // the unacknowledged insert did commit here.
    store.renew();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t ORDER BY v"), [1, 2]);
    assert_integrity(&mut inst, db);
}

// ---- OutcomeUnknown ---------------------------------------------------------

#[test]
fn an_unknown_commit_outcome_poisons_the_database_until_a_reopen_reads_the_store() {
    // While `lose_answers` is on, writes land but answer `OutcomeUnknown`.
    let store = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
    let mut inst = instance();
    let db = inst
        .open("unknown", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    let neighbour = inst.open("neighbour", Arc::new(MemoryKv::new())).unwrap();
    inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .unwrap();
    store.lose_answers(true);
    let err = inst
        .execute(db, "INSERT INTO t VALUES (2)", &[])
        .expect_err("the commit's outcome is unknown");
    // The store's own error reaches the caller, named by the operation.
    assert!(
        matches!(kv_cause(&err), Some(KvError::OutcomeUnknown { .. })),
        "{err:?}"
    );
    let text = report(&err);
    assert!(text.contains("commit of the main file failed"), "{text}");
    assert!(text.contains("the answer to the write was lost"), "{text}");
    store.lose_answers(false);
    // Nothing more is served from the stale caches, reads included.
    for sql in ["SELECT v FROM t", "INSERT INTO t VALUES (3)"] {
        let err = inst.execute(db, sql, &[]).expect_err(sql);
        assert!(
            matches!(&err, Error::Poisoned { reason } if reason.contains("the answer to the write was lost")),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(ints(&mut inst, neighbour, "SELECT 7"), [7]);
    inst.close(db).unwrap();
    // The reopened database reads what the store holds: the write landed.
    let db = inst
        .open("unknown", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t ORDER BY v"), [1, 2]);
    inst.execute(db, "INSERT INTO t VALUES (3)", &[]).unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t ORDER BY v"), [1, 2, 3]);
    assert_integrity(&mut inst, db);
}

// ---- the call's deadline ---------------------------------------------------

/// A store over memory that records the deadline it sees on every call
/// and, while armed, spends each read until that deadline (retrying, as a
/// remote store would) before giving up. Without a deadline it would retry
/// for [`DeadlineKv::HORIZON`].
struct DeadlineKv {
    inner: MemoryKv,
    seen: Mutex<Vec<Option<Instant>>>,
    retry_reads: AtomicBool,
}

impl DeadlineKv {
    const HORIZON: Duration = Duration::from_secs(5);

    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            seen: Mutex::new(Vec::new()),
            retry_reads: AtomicBool::new(false),
        })
    }

    fn take_seen(&self) -> Vec<Option<Instant>> {
        std::mem::take(&mut *self.seen.lock())
    }
}

#[async_trait::async_trait]
impl KvStore for DeadlineKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        let deadline = vfs_core::call_deadline();
        self.seen.lock().push(deadline);
        if self.retry_reads.load(Ordering::SeqCst) {
            let until = deadline.unwrap_or_else(|| Instant::now() + Self::HORIZON);
            #[expect(
                clippy::disallowed_methods,
                reason = "this store blocks its thread on purpose, as a badly written store would"
            )]
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            return Err(KvError::Unavailable {
                message: "gave up retrying at the call's deadline".into(),
            });
        }
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.seen.lock().push(vfs_core::call_deadline());
        self.inner.put_batch(entries).await
    }
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.seen.lock().push(vfs_core::call_deadline());
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

/// Every deadline in `seen` is set, between `earliest` and `latest`.
fn assert_within(seen: &[Option<Instant>], earliest: Instant, latest: Instant) {
    assert!(!seen.is_empty(), "the store was called");
    for deadline in seen {
        let deadline = deadline.expect("the store sees the call's deadline");
        assert!(
            deadline >= earliest && deadline <= latest,
            "{deadline:?} outside {earliest:?}..={latest:?}"
        );
    }
}

/// Runs `call` and checks that every store call it made saw one and the
/// same deadline: the budget counted from the call's start.
fn assert_one_budget<T>(store: &DeadlineKv, budget: Duration, call: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = call();
    let end = Instant::now();
    let seen = store.take_seen();
    assert_within(&seen, start + budget, end + budget);
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    out
}

#[test]
fn every_store_call_sees_the_deadline_of_the_call_that_makes_it() {
    let budget = Duration::from_secs(5);
    let store = DeadlineKv::new();
    {
        let mut inst = instance_with(InstanceConfig {
            statement_timeout: Some(budget),
            ..InstanceConfig::default()
        });
        let db = assert_one_budget(&store, budget, || {
            inst.open("deadline", Arc::clone(&store) as Arc<dyn KvStore>)
                .unwrap()
        });
        assert_one_budget(&store, budget, || {
            inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
                .unwrap();
        });
        inst.close(db).unwrap();
        assert!(store.take_seen().is_empty(), "close calls no store");
    }
    // Without a budget the store timeout bounds every wait, and the store
    // sees that.
    let store_timeout = Duration::from_secs(3);
    let mut inst = instance_with(InstanceConfig {
        statement_timeout: None,
        store_timeout,
        ..small_cache()
    });
    let start = Instant::now();
    let db = inst
        .open("deadline", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, WIDE).unwrap();
    assert_within(
        &store.take_seen(),
        start + store_timeout,
        Instant::now() + store_timeout,
    );
    // Outside a call no deadline is left behind on the thread.
    assert_eq!(vfs_core::call_deadline(), None);
}

#[test]
fn a_store_that_retries_until_the_call_deadline_ends_the_statement_within_its_budget() {
    let budget = Duration::from_millis(300);
    let store = DeadlineKv::new();
    let mut inst = instance_with(InstanceConfig {
        statement_timeout: Some(budget),
        ..small_cache()
    });
    let db = inst
        .open("retries", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, WIDE).unwrap();
    store.take_seen();
    store.retry_reads.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let err = inst
        .query(db, "SELECT sum(length(b)) FROM wide", &[])
        .expect_err("every read gives up at the deadline");
    let took = start.elapsed();
    assert!(
        matches!(kv_cause(&err), Some(KvError::Unavailable { .. }))
            || matches!(err, Error::Interrupted { .. }),
        "{err:?}"
    );
    assert_within(&store.take_seen(), start + budget, start + took + budget);
    // Far below the store's own retry horizon: the budget ended it.
    assert!(took < budget + Duration::from_secs(2), "took {took:?}");
    // A read that gave up changed nothing: the database goes on.
    store.retry_reads.store(false, Ordering::SeqCst);
    assert_eq!(
        ints(&mut inst, db, "SELECT sum(length(b)) FROM wide"),
        [600_000]
    );
}

// ---- naming the failed operation --------------------------------------------

#[test]
fn a_failed_store_call_is_named_by_its_operation() {
    let faulty = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
    let mut inst = instance();
    let db = inst
        .open("named", Arc::clone(&faulty) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .unwrap();
    // Every page the insert needs is cached: its commit is the first store
    // call, and SQLite's retry through its journal fails after it.
    faulty.fail_after(0);
    let err = inst
        .execute(db, "INSERT INTO t VALUES (2)", &[])
        .expect_err("the store refuses every call");
    let text = report(&err);
    assert!(text.contains("commit of the main file failed"), "{text}");
    assert!(text.contains("injected fault"), "{text}");
    assert!(!text.contains("disk I/O error"), "{text}");
    assert!(!text.contains("open of the journal"), "{text}");
    // The code is the failed commit's, not that of SQLite's journal retry.
    assert!(
        matches!(err, Error::Sqlite { code: c, .. } if c == vfs_core::sqlite::SQLITE_IOERR_COMMIT_ATOMIC),
        "{err:?}"
    );
    assert!(
        matches!(kv_cause(&err), Some(KvError::Injected { .. })),
        "{err:?}"
    );
    faulty.heal();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t"), [1]);
    inst.close(db).unwrap();

    // A read of a page the cache does not hold.
    let mut inst = instance_with(small_cache());
    let db = inst
        .open("named", Arc::clone(&faulty) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, WIDE).unwrap();
    faulty.fail_after(0);
    let err = inst
        .query(db, "SELECT sum(length(b)) FROM wide", &[])
        .expect_err("the pages are not all cached");
    let text = report(&err);
    assert!(text.contains("read of page"), "{text}");
    assert!(text.contains("of the main file failed"), "{text}");
    assert!(text.contains("injected fault"), "{text}");
    faulty.heal();
    assert_integrity(&mut inst, db);
}
