//! What the instance owes a `KvStore` beyond the three batch calls, and what
//! it does with the answers, through the public API:
//!
//! - Every store call is polled inside `vfs_core::with_deadline`, so a store
//!   can bound its retries by the call's budget.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use vfs_core::{KvError, KvLimits, KvStore, MemoryKv};
use vfs_wasm::{DbId, Error, Instance, InstanceConfig, ModuleConfig, SqliteModule, Value};

fn module() -> SqliteModule {
    let cache_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vfs-wasm-module-cache");
    SqliteModule::shared(&ModuleConfig {
        cache_dir: Some(cache_dir),
    })
    .expect("module loads")
}

fn instance_with(config: InstanceConfig) -> Instance {
    Instance::new(&module(), config).expect("instance")
}

fn ints(inst: &mut Instance, db: DbId, sql: &str) -> Vec<i64> {
    inst.query(db, sql, &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [Value::Integer(n)] => *n,
            other => panic!("{sql}: unexpected row {other:?}"),
        })
        .collect()
}

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
