//! Where calls run: inline on the caller's thread on a multi-thread tokio
//! runtime, on the instance's own thread on a current-thread runtime; and
//! inline calls never stall the runtime's other tasks.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::config;

/// [`config`] with write-behind off: these tests are about where a call
/// runs, so every store call, writes included, must be made by the call
/// itself. (With write-behind on, writes are made by the actor's flusher,
/// a task of the runtime: see `write_behind.rs`.)
fn direct(actors_per_instance: usize) -> PoolConfig {
    PoolConfig {
        write_behind_bytes: 0,
        ..config(actors_per_instance)
    }
}
use vfs_pool::{
    Database, Error, KvError, KvLimits, KvStore, MemoryKv, PoolConfig, SqliteVfsPool, Value,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A store that records the name of every thread that called it.
#[derive(Default)]
struct ThreadsKv {
    inner: MemoryKv,
    threads: Mutex<BTreeSet<String>>,
}

impl ThreadsKv {
    fn note(&self) {
        let name = std::thread::current()
            .name()
            .unwrap_or("(unnamed)")
            .to_owned();
        self.threads.lock().unwrap().insert(name);
    }

    fn threads(&self) -> BTreeSet<String> {
        self.threads.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl KvStore for ThreadsKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.note();
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.note();
        self.inner.put_batch(entries).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.note();
        self.inner.delete_batch(keys).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

/// Opens a database on a fresh [`ThreadsKv`], writes and reads it back,
/// and returns the threads its store was called on.
async fn threads_serving_one_actor(
    pool: &SqliteVfsPool,
) -> Result<BTreeSet<String>, Box<dyn std::error::Error>> {
    let store = Arc::new(ThreadsKv::default());
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v TEXT)").await?;
    db.execute("INSERT INTO t VALUES (?1)", &[Value::from("x")])
        .await?;
    let rows = db.query("SELECT v FROM t", &[]).await?;
    assert_eq!(rows.rows, vec![vec![Value::from("x")]]);
    db.close().await?;
    handle.release().await;
    Ok(store.threads())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime_statements_run_on_the_callers_thread() -> TestResult {
    let pool = SqliteVfsPool::new(direct(4))?;
    let threads = threads_serving_one_actor(&pool).await?;
    assert!(!threads.is_empty());
    // The close alone goes through the instance's thread (its wait must
    // stay bounded), and a close of a clean database writes nothing.
    assert!(
        threads.iter().all(|t| !t.starts_with("vfs-instance-")),
        "the store was called on {threads:?}"
    );
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_inline_calls_turned_off_statements_run_on_the_instance_thread() -> TestResult {
    let pool = SqliteVfsPool::new(PoolConfig {
        max_inline_calls: 0,
        ..direct(4)
    })?;
    served_by_instance_threads_only(&pool).await
}

#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtime_statements_run_on_the_instance_thread() -> TestResult {
    served_by_instance_threads_only(&SqliteVfsPool::new(direct(4))?).await
}

/// Checks that every store call of [`threads_serving_one_actor`] ran on an
/// instance's own thread, then shuts the pool down.
async fn served_by_instance_threads_only(pool: &SqliteVfsPool) -> TestResult {
    let threads = threads_serving_one_actor(pool).await?;
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|t| t.starts_with("vfs-instance-")),
        "the store was called on {threads:?}"
    );
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

/// A statement that keeps its thread busy for a while (about a second on
/// a 2-core machine), far inside the default 10 s budget.
const LONG_STATEMENT: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
     WHERE x < 1500000) SELECT sum(x) FROM c";

/// Four tenants on four instances each run a long statement inline on a
/// runtime of two workers. Each call hands its worker's tasks to another
/// thread, so a task ticking every 5 ms keeps ticking.
///
/// Six busy threads on a small shared machine also delay a ticker for
/// reasons that are not the runtime's: the OS scheduler and the host's
/// steal time. A plain OS thread ticking beside the task measures that
/// delay in the same window, and the task may be late by at most 50 ms
/// more than it. A stalled worker would hold the task for about a
/// second, far past either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_inline_statements_never_stall_the_runtime() -> TestResult {
    let pool = SqliteVfsPool::new(config(1))?;
    let mut dbs = Vec::new();
    for i in 0..4 {
        let handle = pool.acquire(&format!("busy-{i}")).await?;
        dbs.push(handle.open(Arc::new(MemoryKv::new())).await?);
    }
    assert_eq!(pool.instance_count(), 4);

    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut worst = Duration::ZERO;
            let mut ticks = 0_u32;
            while !stop.load(Ordering::SeqCst) {
                let before = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
                worst = worst.max(before.elapsed());
                ticks += 1;
            }
            (worst, ticks)
        }
    });
    // The control: the same tick on a thread of its own, outside the runtime.
    let control = std::thread::spawn({
        let stop = Arc::clone(&stop);
        #[expect(
            clippy::disallowed_methods,
            reason = "the control measures how late the OS wakes a sleeping thread"
        )]
        move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let before = Instant::now();
                std::thread::sleep(Duration::from_millis(5));
                worst = worst.max(before.elapsed());
            }
            worst
        }
    });
    let started = Instant::now();
    let statements: Vec<_> = dbs
        .iter()
        .cloned()
        .map(|db| tokio::spawn(async move { db.query(LONG_STATEMENT, &[]).await }))
        .collect();
    for statement in statements {
        let rows = statement.await??;
        assert_eq!(rows.rows, vec![vec![Value::Integer(1_125_000_750_000)]]);
    }
    let busy = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (worst, ticks) = ticker.await?;
    let os_worst = control.join().map_err(|_| "the control thread panicked")?;
    eprintln!(
        "4 long statements took {busy:?}; ticker: {ticks} ticks, worst gap {worst:?}; \
         an OS thread's worst gap in the same window: {os_worst:?}"
    );
    assert!(
        worst < os_worst + Duration::from_millis(50),
        "a task waited {worst:?} for a 5 ms timer while statements ran inline \
         (an OS thread beside it waited at most {os_worst:?})"
    );
    pool.shutdown().await;
    Ok(())
}

/// A store whose next write, once armed, runs `sql` on another database
/// from inside the store call and records how that call ended.
#[derive(Default)]
struct CallingKv {
    inner: MemoryKv,
    armed: AtomicBool,
    target: OnceLock<(Database, &'static str)>,
    outcome: Mutex<Option<Result<u64, Error>>>,
}

impl CallingKv {
    fn outcome(&self) -> Option<Result<u64, Error>> {
        self.outcome.lock().unwrap().take()
    }
}

#[async_trait::async_trait]
impl KvStore for CallingKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.armed.swap(false, Ordering::SeqCst)
            && let Some((db, sql)) = self.target.get()
        {
            let outcome = db.execute(sql, &[]).await;
            *self.outcome.lock().unwrap() = Some(outcome);
        }
        self.inner.put_batch(entries).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

/// Instance 1's store calls instance 2, whose store calls back into
/// instance 1, all on one thread: the innermost call is refused at once
/// (it would wait for the outermost), and the two outer calls succeed.
async fn a_cycle_through_two_instances_is_refused() -> TestResult {
    let pool = SqliteVfsPool::new(direct(2))?;
    let (first, first_peer, second) = (
        pool.acquire("first").await?,
        pool.acquire("first-peer").await?,
        pool.acquire("second").await?,
    );
    assert_eq!(first.instance_id(), first_peer.instance_id());
    assert_ne!(first.instance_id(), second.instance_id());
    let (first_kv, second_kv) = (
        Arc::new(CallingKv::default()),
        Arc::new(CallingKv::default()),
    );
    let db_first = first
        .open(Arc::clone(&first_kv) as Arc<dyn KvStore>)
        .await?;
    let db_second = second
        .open(Arc::clone(&second_kv) as Arc<dyn KvStore>)
        .await?;
    let db_peer = first_peer.open(Arc::new(MemoryKv::new())).await?;
    db_first.exec("CREATE TABLE t (v)").await?;
    db_second.exec("CREATE TABLE t (v)").await?;
    db_peer.exec("CREATE TABLE t (v)").await?;

    assert!(
        first_kv
            .target
            .set((db_second.clone(), "INSERT INTO t VALUES (2)"))
            .is_ok()
    );
    assert!(
        second_kv
            .target
            .set((db_peer.clone(), "INSERT INTO t VALUES (3)"))
            .is_ok()
    );
    first_kv.armed.store(true, Ordering::SeqCst);
    second_kv.armed.store(true, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(5),
        db_first.execute("INSERT INTO t VALUES (1)", &[]),
    )
    .await??;

    let inner = second_kv.outcome();
    assert!(matches!(inner, Some(Err(Error::Reentrant))), "{inner:?}");
    let outer = first_kv.outcome();
    assert!(matches!(outer, Some(Ok(1))), "{outer:?}");
    for (db, rows) in [(&db_first, 1), (&db_second, 1), (&db_peer, 0)] {
        let count = db.query("SELECT count(*) FROM t", &[]).await?;
        assert_eq!(count.rows, vec![vec![Value::Integer(rows)]]);
    }
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_two_instances_is_refused_inline() -> TestResult {
    a_cycle_through_two_instances_is_refused().await
}
