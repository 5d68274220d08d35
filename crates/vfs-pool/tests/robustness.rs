//! The pool under hostile conditions: configurations that cannot work,
//! instances that break, stores that hang or call back into the pool. Each
//! ends with a clear error within a bound, never a stalled or dead pool.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use common::{config, kv};
use tokio::sync::Notify;
use tokio::time::timeout;
use vfs_pool::{
    Database, Error, KvError, KvLimits, KvStore, MemoryKv, PoolConfig, PooledHandle, Rows,
    SqliteVfsPool, Value,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The message of the `InvalidConfig` error `config` is refused with.
fn refusal(config: PoolConfig) -> String {
    match SqliteVfsPool::new(config) {
        Err(Error::InvalidConfig(message)) => message,
        Err(other) => panic!("expected InvalidConfig, got {other}"),
        Ok(_) => panic!("the configuration was accepted"),
    }
}

#[test]
fn budgets_too_long_to_represent_are_refused_up_front() {
    let message = refusal(PoolConfig {
        statement_timeout: Some(Duration::MAX),
        ..config(2)
    });
    assert!(message.contains("statement_timeout"), "{message}");
    let message = refusal(PoolConfig {
        store_timeout: Duration::MAX,
        ..config(2)
    });
    assert!(message.contains("store_timeout"), "{message}");
    let message = refusal(PoolConfig {
        close_timeout: Duration::ZERO,
        ..config(2)
    });
    assert!(message.contains("close_timeout"), "{message}");
    let message = refusal(PoolConfig {
        max_result_bytes: 0,
        ..config(2)
    });
    assert!(message.contains("max_result_bytes"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_delay_of_duration_max_means_never() -> TestResult {
    let pool = SqliteVfsPool::new(PoolConfig {
        idle_destroy: Duration::MAX,
        ..config(2)
    })?;
    let handle = pool.acquire("a").await?;
    let db = handle.open(kv()).await?;
    db.exec("CREATE TABLE t (v)").await?;
    db.close().await?;
    // The instance goes idle: its countdown must not overflow.
    handle.release().await;
    assert_eq!(pool.instance_count(), 1);
    let again = pool.acquire("b").await?;
    assert_eq!(
        again.open(kv()).await?.query("SELECT 1", &[]).await?.rows,
        vec![vec![Value::Integer(1)]]
    );
    again.release().await;
    assert_eq!(pool.reap_idle().await, 1);
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

// Each of the next two runs on both kinds of runtime: on a multi-thread
// runtime calls run inline on the caller's thread, on a current-thread one
// they run on the instance's own thread.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_instance_takes_no_new_actors_and_goes_with_its_last_actor() -> TestResult {
    broken_instance_takes_no_new_actors().await
}

#[tokio::test(flavor = "current_thread")]
async fn a_broken_instance_takes_no_new_actors_on_a_current_thread_runtime() -> TestResult {
    broken_instance_takes_no_new_actors().await
}

async fn broken_instance_takes_no_new_actors() -> TestResult {
    let pool = SqliteVfsPool::new(config(3))?;
    let mut count = pool.watch_instance_count();
    let kv_a = kv();
    let a = pool.acquire("a").await?;
    let db_a = a.open(Arc::clone(&kv_a)).await?;
    db_a.exec("CREATE TABLE t (v); INSERT INTO t VALUES ('kept')")
        .await?;
    let b = pool.acquire("b").await?;
    let broken = a.instance_id();
    assert_eq!(b.instance_id(), broken);

    pool.panic_instance_for_test(broken).await;

    let err = db_a.query("SELECT v FROM t", &[]).await.unwrap_err();
    assert!(err.is_instance_broken(), "{err}");
    assert!(
        err.to_string()
            .contains("release the actor and acquire it again"),
        "{err}"
    );
    let err = b.open(kv()).await.unwrap_err();
    assert!(err.is_instance_broken(), "{err}");
    let infos = pool.instances().await;
    assert!(
        infos
            .iter()
            .any(|i| i.id == broken && i.broken && i.actors == 2),
        "{infos:?}"
    );

    // A new actor is not seated on the broken instance, though it has room.
    let c = pool.acquire("c").await?;
    assert_ne!(c.instance_id(), broken);
    c.open(kv()).await?.query("SELECT 1", &[]).await?;

    // Release + acquire moves an actor to a healthy instance, data intact.
    a.release().await;
    let a = pool.acquire("a").await?;
    assert_ne!(a.instance_id(), broken);
    let rows = a.open(kv_a).await?.query("SELECT v FROM t", &[]).await?;
    assert_eq!(rows.rows, vec![vec![Value::from("kept")]]);

    // The last actor leaves: the broken instance is destroyed.
    b.release().await;
    timeout(Duration::from_secs(5), count.wait_for(|n| *n == 1)).await??;
    assert_eq!(pool.instance_count(), 1);
    assert!(pool.instances().await.iter().all(|i| !i.broken));
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

/// A store whose next write, once armed, blocks its thread (not just its
/// future) until the test sends on, or drops, the channel's sender.
struct HangingKv {
    inner: MemoryKv,
    armed: AtomicBool,
    entered: Notify,
    unblock: Mutex<mpsc::Receiver<()>>,
}

impl HangingKv {
    fn new(unblock: mpsc::Receiver<()>) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            armed: AtomicBool::new(false),
            entered: Notify::new(),
            unblock: Mutex::new(unblock),
        })
    }
}

#[async_trait::async_trait]
impl KvStore for HangingKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            let _ = self.unblock.lock().unwrap().recv();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_release_and_shutdown_are_bounded_while_a_store_hangs() -> TestResult {
    let bound = Duration::from_millis(300);
    let pool = SqliteVfsPool::new(PoolConfig {
        close_timeout: bound,
        // A call is never declared stuck within its own budget (+0.5 s).
        statement_timeout: Some(Duration::from_millis(100)),
        ..config(4)
    })?;
    let bound = Duration::from_millis(600);
    // Dropping `unblock` (at the end, or when a failed assertion unwinds)
    // lets the hung store call return, so the stuck thread ends.
    let (unblock, blocked) = mpsc::channel();
    let store = HangingKv::new(blocked);
    let a = pool.acquire("a").await?;
    let db = a.open(store.clone()).await?;
    db.exec("CREATE TABLE t (v); INSERT INTO t VALUES ('kept')")
        .await?;
    let stuck = a.instance_id();

    store.armed.store(true, Ordering::SeqCst);
    let writer = tokio::spawn({
        let db = db.clone();
        async move { db.execute("INSERT INTO t VALUES ('hung')", &[]).await }
    });
    store.entered.notified().await;

    let closed = timeout(bound * 4, db.close()).await?;
    assert!(matches!(closed, Err(Error::TimedOut { .. })), "{closed:?}");
    timeout(bound * 4, a.release()).await?;
    assert_eq!(pool.actor_count(), 0);

    // The same actor comes back on another instance, but cannot open while
    // its hung write may still land: a clear error, within the bound.
    let a = pool.acquire("a").await?;
    assert_ne!(a.instance_id(), stuck);
    let early = timeout(bound * 4, a.open(store.clone())).await?;
    assert!(
        matches!(&early, Err(Error::Storage(e)) if e.to_string().contains("still in flight")),
        "{early:?}"
    );
    let infos = timeout(bound * 4, pool.instances()).await?;
    assert!(infos.iter().any(|i| i.id == stuck && i.broken), "{infos:?}");

    timeout(bound * 4, pool.shutdown()).await?;
    assert_eq!(
        pool.worker_threads(),
        1,
        "the stuck thread is detached but still counted"
    );

    drop(unblock);
    let written = timeout(Duration::from_secs(5), writer).await??;
    // The detached thread finishes its queue and ends on its own.
    timeout(Duration::from_secs(5), async {
        while pool.worker_threads() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;

    // The store holds the hung row if its write was acknowledged, and not
    // if it failed plainly; a write whose outcome was reported unknown may
    // have landed either way.
    let again = SqliteVfsPool::new(config(4))?;
    let handle = again.acquire("a").await?;
    let rows = handle
        .open(store.clone())
        .await?
        .query("SELECT v FROM t ORDER BY rowid", &[])
        .await?;
    let kept = vec![vec![Value::from("kept")]];
    let both = vec![vec![Value::from("kept")], vec![Value::from("hung")]];
    let unknown = written
        .as_ref()
        .is_err_and(|e| e.to_string().contains("unknown"));
    match &written {
        Ok(_) => assert_eq!(rows.rows, both),
        Err(_) if unknown => assert!(rows.rows == kept || rows.rows == both, "{rows:?}"),
        Err(e) => assert_eq!(rows.rows, kept, "the write failed: {e}"),
    }
    again.shutdown().await;
    Ok(())
}

/// A store whose next write, once armed, queries a co-tenant's database
/// from inside the store call, and records what that query returned.
#[derive(Default)]
struct CallbackKv {
    inner: MemoryKv,
    armed: AtomicBool,
    co_tenant: OnceLock<Database>,
    seen: Mutex<Option<Result<Rows, Error>>>,
}

#[async_trait::async_trait]
impl KvStore for CallbackKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.armed.swap(false, Ordering::SeqCst)
            && let Some(db) = self.co_tenant.get()
        {
            let result = db.query("SELECT 1", &[]).await;
            *self.seen.lock().unwrap() = Some(result);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_calling_back_into_its_own_instance_gets_an_error_not_a_deadlock() -> TestResult {
    callback_into_own_instance_is_refused().await
}

#[tokio::test(flavor = "current_thread")]
async fn a_store_calling_back_on_a_current_thread_runtime_gets_an_error() -> TestResult {
    callback_into_own_instance_is_refused().await
}

async fn callback_into_own_instance_is_refused() -> TestResult {
    let pool = SqliteVfsPool::new(config(2))?;
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    assert_eq!(a.instance_id(), b.instance_id());
    let db_b = b.open(kv()).await?;
    let store = Arc::new(CallbackKv::default());
    let db_a = a.open(store.clone()).await?;
    db_a.exec("CREATE TABLE t (v)").await?;

    assert!(store.co_tenant.set(db_b.clone()).is_ok());
    store.armed.store(true, Ordering::SeqCst);
    timeout(
        Duration::from_secs(5),
        db_a.execute("INSERT INTO t VALUES (1)", &[]),
    )
    .await??;
    let seen = store.seen.lock().unwrap().take();
    assert!(matches!(seen, Some(Err(Error::Reentrant))), "{seen:?}");

    // Both tenants keep working.
    assert_eq!(
        db_b.query("SELECT 2", &[]).await?.rows,
        vec![vec![Value::Integer(2)]]
    );
    assert_eq!(
        db_a.query("SELECT count(*) FROM t", &[]).await?.rows,
        vec![vec![Value::Integer(1)]]
    );
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

/// A store whose next write, once armed, has a spawned task query a
/// co-tenant's database and waits for that task: the query queues behind
/// the very call that waits for it, and only `store_timeout` ends the wait.
#[derive(Default)]
struct SpawningKv {
    inner: MemoryKv,
    armed: AtomicBool,
    co_tenant: OnceLock<Database>,
}

#[async_trait::async_trait]
impl KvStore for SpawningKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.armed.swap(false, Ordering::SeqCst)
            && let Some(db) = self.co_tenant.get().cloned()
        {
            let _ = tokio::spawn(async move { db.query("SELECT 1", &[]).await }).await;
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

/// Actors "a" (on a [`SpawningKv`], armed, with a table `t`) and "b" (its
/// co-tenant, whose database the store queries) on one instance.
async fn armed_spawning_tenants(
    pool: &SqliteVfsPool,
) -> Result<(PooledHandle, Database, Database, Arc<SpawningKv>), Box<dyn std::error::Error>> {
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    assert_eq!(a.instance_id(), b.instance_id());
    let db_b = b.open(kv()).await?;
    let store = Arc::new(SpawningKv::default());
    let db_a = a.open(store.clone()).await?;
    db_a.exec("CREATE TABLE t (v)").await?;
    assert!(store.co_tenant.set(db_b.clone()).is_ok());
    store.armed.store(true, Ordering::SeqCst);
    Ok((a, db_a, db_b, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_through_a_spawned_task_is_cut_by_the_store_timeout() -> TestResult {
    // Without write-behind the write is made inside the call, which holds
    // the instance the callback needs.
    let pool = SqliteVfsPool::new(PoolConfig {
        store_timeout: Duration::from_millis(200),
        write_behind_bytes: 0,
        ..config(2)
    })?;
    let (a, db_a, db_b, store) = armed_spawning_tenants(&pool).await?;
    let result = timeout(
        Duration::from_secs(5),
        db_a.execute("INSERT INTO t VALUES (1)", &[]),
    )
    .await?;
    assert!(result.is_err(), "the write waited past store_timeout");

    // The co-tenant is unaffected; the writer reopens to continue.
    assert_eq!(
        db_b.query("SELECT 2", &[]).await?.rows,
        vec![vec![Value::Integer(2)]]
    );
    db_a.close().await?;
    let db_a = a.open(store.clone()).await?;
    db_a.execute("INSERT INTO t VALUES (2)", &[]).await?;
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_write_behind_a_callback_through_a_spawned_task_completes() -> TestResult {
    // The write that waits for the callback is flushed after its call has
    // given the instance back, so the co-tenant's query runs and the write
    // is acknowledged once it lands.
    let pool = SqliteVfsPool::new(PoolConfig {
        store_timeout: Duration::from_millis(200),
        ..config(2)
    })?;
    let (a, db_a, _db_b, store) = armed_spawning_tenants(&pool).await?;
    timeout(
        Duration::from_secs(5),
        db_a.execute("INSERT INTO t VALUES (1)", &[]),
    )
    .await??;
    assert!(!store.armed.load(Ordering::SeqCst), "the callback ran");
    db_a.close().await?;
    let db_a = a.open(store.clone()).await?;
    assert_eq!(
        db_a.query("SELECT count(*) FROM t", &[]).await?.rows,
        vec![vec![Value::Integer(1)]]
    );
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}
