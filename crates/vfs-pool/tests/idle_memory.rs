//! An idle database's memory goes back to its instance: released, it is
//! reused by a co-tenant instead of growing the instance's guest memory,
//! the database's data is intact, and its next query costs the store no
//! more round trips than reading its pages once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use vfs_pool::testing::{integrity, scalar};
use vfs_pool::{CountingKv, Database, KvStore, MemoryKv, PoolConfig, SqliteVfsPool, Value};

/// Rows of 1 KiB each actor writes: about 2 MiB, held whole in its cache.
const ROWS: i64 = 2000;
const SUM: &str = "SELECT sum(length(v)) FROM t";

/// Two actors per instance, a page cache that holds the whole table, and
/// no automatic release unless `release_after` says so.
fn config(release_after: Option<Duration>) -> PoolConfig {
    PoolConfig {
        cache_size_kib: 8 << 10,
        release_memory_after: release_after,
        ..common::config(2)
    }
}

/// Creates the table and fills it (one transaction), then reads it all so
/// every page is in the cache.
async fn fill(db: &Database) {
    db.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO t SELECT i, randomblob(1024) FROM n;",
    )
    .await
    .expect("fill");
    assert_eq!(scalar(db, SUM).await, ROWS * 1024);
}

/// The guest memory of the instance serving `db`.
async fn guest_memory(pool: &SqliteVfsPool, instance: u64) -> u64 {
    pool.instances()
        .await
        .into_iter()
        .find(|i| i.id == instance)
        .expect("the instance is live")
        .guest_memory_bytes
}

async fn open(pool: &SqliteVfsPool, actor: &str, kv: Arc<dyn KvStore>) -> (Database, u64) {
    let handle = pool.acquire(actor).await.expect("acquire");
    let db = handle.open(kv).await.expect("open");
    (db, handle.instance_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_memory_is_reused_by_a_co_tenant_and_the_data_stays() {
    let pool = SqliteVfsPool::new(config(None)).expect("pool");
    let store = Arc::new(CountingKv::new(Arc::new(MemoryKv::new())));
    let (a, instance) = open(&pool, "a", Arc::clone(&store) as Arc<dyn KvStore>).await;
    fill(&a).await;
    let held = a.memory_bytes().await.expect("memory");
    assert!(held > 2 << 20, "the whole table is cached: {held} bytes");

    let freed = a.release_memory().await.expect("release");
    let left = a.memory_bytes().await.expect("memory");
    assert!(
        freed > 2 << 20 && left < 256 << 10,
        "released {freed} of {held} bytes; {left} left"
    );

    // A co-tenant on the same instance needs as much: it gets the memory
    // that was released, and the instance does not grow for it.
    let before = guest_memory(&pool, instance).await;
    let (b, b_instance) = open(&pool, "b", common::kv()).await;
    assert_eq!(b_instance, instance);
    fill(&b).await;
    assert!(b.memory_bytes().await.expect("memory") > 2 << 20);
    let grown = guest_memory(&pool, instance).await - before;
    eprintln!("released {freed} bytes; the co-tenant then grew the instance by {grown}");
    assert!(
        grown < 1 << 20,
        "the instance grew by {grown} bytes for a co-tenant that could reuse {freed}"
    );

    // The released database is whole, and reading it back costs what
    // reading its pages once costs: about as many store round trips as
    // opening the same store afresh and running the same query (a fresh
    // open fetches the first pages with the file's metadata in one round
    // trip; after a release page 1 and the table's root page come one by
    // one before reading ahead starts, so up to 3 more), and none the
    // second time. Were each page read alone, it would be hundreds.
    store.reset();
    assert_eq!(scalar(&a, SUM).await, ROWS * 1024);
    let refill = store.get_calls();
    assert!(refill > 0, "nothing was read: the cache was not released");
    store.reset();
    assert_eq!(scalar(&a, SUM).await, ROWS * 1024);
    assert_eq!(store.get_calls(), 0, "the refilled cache serves the rerun");
    assert_eq!(integrity(&a).await, "ok");
    a.close().await.expect("close");

    store.reset();
    let (cold, _) = open(&pool, "a", Arc::clone(&store) as Arc<dyn KvStore>).await;
    assert_eq!(scalar(&cold, SUM).await, ROWS * 1024);
    let cold_reads = store.get_calls();
    eprintln!("store reads: {refill} after the release, {cold_reads} for an open and the query");
    assert!(
        refill <= cold_reads + 3,
        "after a release the query made {refill} store reads; an open and the query make {cold_reads}"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_release_the_co_tenant_grows_the_instance() {
    // The control of the test above: the same two actors with nothing
    // released, so that its bound on the growth is one that can fail.
    let pool = SqliteVfsPool::new(config(None)).expect("pool");
    let (a, instance) = open(&pool, "a", common::kv()).await;
    fill(&a).await;
    let before = guest_memory(&pool, instance).await;
    let (b, _) = open(&pool, "b", common::kv()).await;
    fill(&b).await;
    let grown = guest_memory(&pool, instance).await - before;
    eprintln!("with nothing released the co-tenant grew the instance by {grown} bytes");
    assert!(grown > 1 << 20, "grew only {grown} bytes");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_inside_an_open_transaction_keeps_its_uncommitted_changes() {
    let pool = SqliteVfsPool::new(config(None)).expect("pool");
    let (a, _) = open(&pool, "a", common::kv()).await;
    fill(&a).await;
    a.exec("BEGIN; UPDATE t SET v = zeroblob(10) WHERE id <= 1000;")
        .await
        .expect("update");
    // The clean half of the cache goes; the dirty half must stay.
    let freed = a.release_memory().await.expect("release");
    assert!(freed > 0);
    a.exec("COMMIT").await.expect("commit");
    assert_eq!(scalar(&a, SUM).await, 1000 * 10 + 1000 * 1024);
    assert_eq!(integrity(&a).await, "ok");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_releases_an_idle_database_on_its_own() {
    let pool = SqliteVfsPool::new(config(Some(Duration::from_millis(20)))).expect("pool");
    let (a, _) = open(&pool, "a", common::kv()).await;
    fill(&a).await;
    // Neither `memory_bytes` nor the wait counts as a call, so the sweep
    // sees the database idle within two periods; the bound is generous.
    let released = tokio::time::timeout(Duration::from_secs(20), async {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        loop {
            every.tick().await;
            let held = a.memory_bytes().await.expect("memory");
            if held < 256 << 10 {
                return held;
            }
        }
    })
    .await;
    assert!(released.is_ok(), "the idle database kept its memory");
    assert_eq!(scalar(&a, SUM).await, ROWS * 1024);
    let rows = a
        .query("SELECT id FROM t WHERE id = ?1", &[Value::Integer(7)])
        .await
        .expect("query");
    assert_eq!(rows.rows, vec![vec![Value::Integer(7)]]);
    pool.shutdown().await;
}

#[test]
fn a_zero_period_is_refused() {
    let refused = SqliteVfsPool::new(config(Some(Duration::ZERO)));
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookaside_is_off_by_default_and_a_configured_one_is_charged_to_each_database() {
    // One small table per database, as the bench's `density` actors have.
    async fn charge(config: PoolConfig) -> u64 {
        let pool = SqliteVfsPool::new(config).expect("pool");
        let (db, _) = open(&pool, "a", common::kv()).await;
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x');")
            .await
            .expect("create");
        let bytes = db.memory_bytes().await.expect("memory");
        pool.shutdown().await;
        bytes
    }
    assert_eq!(PoolConfig::default().lookaside, None);
    let without = charge(config(None)).await;
    let with = charge(PoolConfig {
        lookaside: Some(vfs_pool::Lookaside {
            slot_size: 128,
            slots: 64,
        }),
        ..config(None)
    })
    .await;
    // The 8 KiB buffer, less the small allocations it then serves.
    assert!(
        with >= without + 6 * 1024,
        "with lookaside {with} bytes, without {without}"
    );
}
