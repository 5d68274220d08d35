//! Durable-ack write-behind through the public API: a commit gives its
//! instance back before its store write is durable, but nothing is reported
//! to its caller before it is; a failed flush poisons only its own
//! database; and whatever the store fails, a reopened database holds exactly
//! the acknowledged commits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{config, kv};
use tokio::task::JoinSet;
use tokio::time::timeout;
use vfs_pool::testing::GateKv;
use vfs_pool::{
    Database, FaultyKv, KvError, KvLimits, KvStore, MemoryKv, PooledHandle, SqliteVfsPool, Value,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const LONG: Duration = Duration::from_secs(10);

async fn count(db: &Database) -> Result<i64, vfs_pool::Error> {
    let rows = db.query("SELECT count(*) FROM t", &[]).await?;
    match rows.rows.as_slice() {
        [row] => match row.as_slice() {
            [Value::Integer(n)] => Ok(*n),
            other => panic!("unexpected row {other:?}"),
        },
        other => panic!("unexpected rows {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_tenant_runs_while_a_commit_waits_for_its_store() -> TestResult {
    co_tenant_runs_while_a_commit_waits().await
}

#[tokio::test(flavor = "current_thread")]
async fn a_co_tenant_runs_while_a_commit_waits_on_a_current_thread_runtime() -> TestResult {
    co_tenant_runs_while_a_commit_waits().await
}

/// Actor A's write is held at its store's gate. Actor B, on the same
/// instance, writes and reads meanwhile; A's write and A's own read (which
/// sees the write) stay pending until the gate opens, and the write is
/// in A's store when they resolve.
async fn co_tenant_runs_while_a_commit_waits() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    assert_eq!(a.instance_id(), b.instance_id());
    let gate = GateKv::new();
    let db_a = a.open(Arc::clone(&gate) as Arc<dyn KvStore>).await?;
    db_a.exec("CREATE TABLE t (v)").await?;
    let db_b = b.open(kv()).await?;
    db_b.exec("CREATE TABLE t (v)").await?;

    gate.arm();
    let writer = tokio::spawn({
        let db = db_a.clone();
        async move { db.execute("INSERT INTO t VALUES ('a')", &[]).await }
    });
    timeout(LONG, gate.entered.notified()).await?;
    let reader = tokio::spawn({
        let db = db_a.clone();
        async move { count(&db).await }
    });
    for i in 0..20 {
        timeout(
            LONG,
            db_b.execute("INSERT INTO t VALUES (?1)", &[Value::Integer(i)]),
        )
        .await??;
    }
    assert_eq!(timeout(LONG, count(&db_b)).await??, 20);
    assert!(!writer.is_finished(), "acknowledged before it was durable");
    assert!(
        !reader.is_finished(),
        "a read of an unacknowledged write returned"
    );

    gate.open();
    assert_eq!(timeout(LONG, writer).await???, 1);
    assert_eq!(timeout(LONG, reader).await???, 1);
    db_a.close().await?;
    let db_a = a.open(gate).await?;
    assert_eq!(count(&db_a).await?, 1);
    pool.shutdown().await;
    Ok(())
}

/// Runs `rounds` rounds of `writers` concurrent single-row inserts on clones
/// of `db` (so commits queue behind the flush in flight and are sent
/// together), and returns the values whose insert was acknowledged.
async fn concurrent_inserts(db: &Database, writers: i64, rounds: i64) -> Vec<i64> {
    let mut acked = Vec::new();
    for round in 0..rounds {
        let mut set = JoinSet::new();
        for w in 0..writers {
            let db = db.clone();
            let v = round * writers + w;
            set.spawn(async move {
                db.execute("INSERT INTO t VALUES (?1)", &[Value::Integer(v)])
                    .await
                    .map(|_| v)
            });
        }
        while let Some(done) = set.join_next().await {
            if let Ok(Ok(v)) = done {
                acked.push(v);
            }
        }
    }
    acked.sort_unstable();
    acked
}

/// What a freshly opened database holds: its integrity check and its
/// values. Closes it and releases its actor.
async fn check_and_values(handle: &PooledHandle, db: Database) -> (String, Vec<i64>) {
    let check = db
        .query("PRAGMA integrity_check", &[])
        .await
        .expect("integrity_check");
    let rows = db
        .query("SELECT v FROM t ORDER BY v", &[])
        .await
        .expect("select");
    let values = rows
        .rows
        .iter()
        .map(|row| match row.as_slice() {
            [Value::Integer(v)] => *v,
            other => panic!("unexpected row {other:?}"),
        })
        .collect();
    db.close().await.expect("close");
    handle.release().await;
    (format!("{:?}", check.rows), values)
}

/// [`check_and_values`] of actor `actor` opened on `store` in `pool`.
async fn reopened(
    pool: &SqliteVfsPool,
    actor: &str,
    store: Arc<dyn KvStore>,
) -> (String, Vec<i64>) {
    let handle = pool.acquire(actor).await.expect("acquire");
    let db = handle.open(store).await.expect("reopen");
    check_and_values(&handle, db).await
}

/// A store over memory that takes 1 ms per call (so commits queue behind
/// the flush in flight and are sent together) and fails exactly one call,
/// the `at`-th from when it is armed, with nothing applied.
struct FailOnceKv {
    inner: MemoryKv,
    calls: AtomicU64,
    at: AtomicU64,
}

impl FailOnceKv {
    fn new() -> Arc<Self> {
        Arc::new(FailOnceKv {
            inner: MemoryKv::new(),
            calls: AtomicU64::new(0),
            at: AtomicU64::new(u64::MAX),
        })
    }

    fn arm(&self, at: u64) {
        self.at
            .store(self.calls.load(Ordering::SeqCst) + at, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.at.store(u64::MAX, Ordering::SeqCst);
    }

    async fn admit(&self) -> Result<(), KvError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        if call == self.at.load(Ordering::SeqCst) {
            return Err(KvError::Unavailable {
                message: format!("call {call} fails"),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl KvStore for FailOnceKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.admit().await?;
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.admit().await?;
        self.inner.put_batch(entries).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.admit().await?;
        self.inner.delete_batch(keys).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_call_of_a_write_burst_may_fail_and_acknowledged_means_stored() -> TestResult {
    const WRITERS: i64 = 4;
    const ROUNDS: i64 = 3;
    let pool = SqliteVfsPool::new(config(8))?;
    let ok = format!("{:?}", vec![vec![Value::from("ok")]]);
    let open = |actor: String, store: Arc<dyn KvStore>| {
        let pool = &pool;
        async move {
            let handle = pool.acquire(&actor).await?;
            let db = handle.open(store).await?;
            db.exec("CREATE TABLE t (v INTEGER)").await?;
            Ok::<_, vfs_pool::Error>((handle, db))
        }
    };

    // A clean run counts the store calls of the burst.
    let store = FailOnceKv::new();
    let (handle, db) = open("clean".into(), Arc::clone(&store) as Arc<dyn KvStore>).await?;
    let before = store.calls.load(Ordering::SeqCst);
    let acked = concurrent_inserts(&db, WRITERS, ROUNDS).await;
    let calls = store.calls.load(Ordering::SeqCst) - before;
    assert_eq!(acked.len() as i64, WRITERS * ROUNDS);
    db.close().await?;
    handle.release().await;
    assert!(calls >= 4, "{calls} store calls");

    // Then one run per call index: that call fails once (a write that
    // fails poisons the database, so the rest of the burst fails too), or
    // that call and every later one fail.
    for at in 0..=calls {
        for every_later in [false, true] {
            let actor = format!("f{at}-{every_later}");
            let (stored, acked, closed) = if every_later {
                let store = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
                let (handle, db) =
                    open(actor.clone(), Arc::clone(&store) as Arc<dyn KvStore>).await?;
                store.set_latency(Duration::from_millis(1));
                store.fail_after(u32::try_from(at)?);
                let acked = concurrent_inserts(&db, WRITERS, ROUNDS).await;
                store.heal();
                let closed = db.close().await;
                handle.release().await;
                let handle = pool.acquire(&actor).await?;
                let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
                (check_and_values(&handle, db).await, acked, closed)
            } else {
                let store = FailOnceKv::new();
                let (handle, db) =
                    open(actor.clone(), Arc::clone(&store) as Arc<dyn KvStore>).await?;
                store.arm(at);
                let acked = concurrent_inserts(&db, WRITERS, ROUNDS).await;
                store.disarm();
                let closed = db.close().await;
                handle.release().await;
                let handle = pool.acquire(&actor).await?;
                let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
                (check_and_values(&handle, db).await, acked, closed)
            };
            let (check, stored) = stored;
            assert_eq!(check, ok, "fault at call {at} (every later: {every_later})");
            assert_eq!(
                stored, acked,
                "fault at call {at} (every later: {every_later}): stored rows differ from \
                 acknowledged ones (close: {closed:?})"
            );
        }
    }
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_poisons_only_its_own_database() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    assert_eq!(a.instance_id(), b.instance_id());
    let store = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
    let db_a = a.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    let db_b = b.open(kv()).await?;
    db_a.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .await?;
    db_b.exec("CREATE TABLE t (v)").await?;

    store.fail_next(1);
    let failed = db_a.execute("INSERT INTO t VALUES (2)", &[]).await;
    let err = failed.expect_err("the flush failed");
    assert!(err.is_poisoned(), "{err:?}");
    assert!(err.kv_error().is_some(), "{err:?}");
    // Every later call fails, even one SQLite could answer from its cache.
    let later = db_a.query("SELECT count(*) FROM t", &[]).await;
    assert!(
        later.as_ref().is_err_and(vfs_pool::Error::is_poisoned),
        "{later:?}"
    );
    // The co-tenant is unaffected.
    db_b.execute("INSERT INTO t VALUES (1)", &[]).await?;
    assert_eq!(count(&db_b).await?, 1);

    // It closes cleanly (the poison was reported already), and a reopen
    // shows the last durable state.
    db_a.close().await?;
    let db_a = a.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    assert_eq!(count(&db_a).await?, 1);
    db_a.execute("INSERT INTO t VALUES (3)", &[]).await?;
    assert_eq!(count(&db_a).await?, 2);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_shutdown_wait_for_pending_writes() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let store = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v)").await?;
    store.set_latency(Duration::from_millis(20));

    // Writers whose flushes are in flight or queued when the database is
    // closed: close waits for them, so a reopen right after it shows every
    // acknowledged row.
    let writers = spawn_writers(&db, &store, 0..4).await;
    db.close().await?;
    let acked = acknowledged(writers).await;
    assert!(!acked.is_empty());
    handle.release().await;
    store.set_latency(Duration::ZERO);
    let (check, stored) = reopened(&pool, "a", Arc::clone(&store) as Arc<dyn KvStore>).await;
    assert!(check.contains("ok"), "{check}");
    assert_eq!(stored, acked);

    // Shutdown waits as well.
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    store.set_latency(Duration::from_millis(20));
    let writers = spawn_writers(&db, &store, 10..14).await;
    pool.shutdown().await;
    let mut acked = [acked, acknowledged(writers).await].concat();
    acked.sort_unstable();
    store.set_latency(Duration::ZERO);
    let again = SqliteVfsPool::new(config(4))?;
    let (_, stored) = reopened(&again, "a", Arc::clone(&store) as Arc<dyn KvStore>).await;
    assert_eq!(stored, acked);
    again.shutdown().await;
    Ok(())
}

/// Starts one insert per value on clones of `db` and returns once the
/// store has received a call for them (the first flush is in flight).
async fn spawn_writers(
    db: &Database,
    store: &FaultyKv,
    values: std::ops::Range<i64>,
) -> JoinSet<Option<i64>> {
    let before = store.calls();
    let mut set = JoinSet::new();
    for v in values {
        let db = db.clone();
        set.spawn(async move {
            db.execute("INSERT INTO t VALUES (?1)", &[Value::Integer(v)])
                .await
                .ok()
                .map(|_| v)
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while store.calls() == before {
        tick.tick().await;
    }
    set
}

/// The values whose insert was acknowledged, sorted.
async fn acknowledged(mut writers: JoinSet<Option<i64>>) -> Vec<i64> {
    let mut acked = Vec::new();
    while let Some(done) = writers.join_next().await {
        if let Ok(Some(v)) = done {
            acked.push(v);
        }
    }
    acked.sort_unstable();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_close_still_keeps_a_late_write_from_landing_under_a_reopen() -> TestResult {
    let pool = SqliteVfsPool::new(vfs_pool::PoolConfig {
        close_timeout: Duration::from_millis(200),
        ..config(4)
    })?;
    let gate = GateKv::new();
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&gate) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v)").await?;
    gate.arm();
    let writer = tokio::spawn({
        let db = db.clone();
        async move { db.execute("INSERT INTO t VALUES (1)", &[]).await }
    });
    timeout(LONG, gate.entered.notified()).await?;
    // The close is abandoned while it waits for the write at the gate.
    assert!(
        timeout(Duration::from_millis(20), db.close())
            .await
            .is_err()
    );
    // The write may still land, so the actor does not open again yet.
    let early = timeout(LONG, handle.open(Arc::clone(&gate) as Arc<dyn KvStore>)).await?;
    assert!(
        matches!(&early, Err(vfs_pool::Error::Storage(e)) if e.to_string().contains("still in flight")),
        "{early:?}"
    );
    gate.open();
    let written = timeout(LONG, writer).await??;
    let db = handle.open(Arc::clone(&gate) as Arc<dyn KvStore>).await?;
    assert_eq!(count(&db).await?, i64::from(written.is_ok()));
    pool.shutdown().await;
    Ok(())
}
