//! The attacks that once broke isolation or durability, replayed through the
//! pool exactly as a hostile tenant or a careless store author would: two
//! actors seated on one instance, nothing but the public API.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use common::{config, kv};
use vfs_pool::{KvError, KvLimits, KvStore, MemoryKv, SqliteVfsPool, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cached_statement_never_reads_a_co_tenants_row() -> TestResult {
    let pool = SqliteVfsPool::new(config(2))?;
    let (ha, hb) = (pool.acquire("a").await?, pool.acquire("b").await?);
    assert_eq!(ha.instance_id(), hb.instance_id(), "co-tenants");
    let (a, b) = (ha.open(kv()).await?, hb.open(kv()).await?);
    b.exec("CREATE TABLE secret (v); INSERT INTO secret VALUES ('SECRET')")
        .await?;
    a.exec("CREATE TABLE t(x,y,z); INSERT INTO t VALUES(1,2,3)")
        .await?;
    a.query("SELECT * FROM t", &[]).await?;
    a.exec("ALTER TABLE t DROP COLUMN z; ALTER TABLE t DROP COLUMN y")
        .await?;
    b.query("SELECT v,v,v FROM secret", &[]).await?;
    let rows = a.query("SELECT * FROM t", &[]).await?;
    assert_eq!(rows.columns, ["x"]);
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    pool.shutdown().await;
    Ok(())
}

/// Memory whose writes panic while armed.
struct PanicOnPut {
    inner: MemoryKv,
    armed: AtomicBool,
}

#[async_trait::async_trait]
impl KvStore for PanicOnPut {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        assert!(
            !self.armed.load(Ordering::SeqCst),
            "store bug: put_batch panics"
        );
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
async fn a_panicking_store_never_has_a_lost_write_reported_as_stored() -> TestResult {
    let pool = SqliteVfsPool::new(config(2))?;
    let store = Arc::new(PanicOnPut {
        inner: MemoryKv::new(),
        armed: AtomicBool::new(false),
    });
    let handle = pool.acquire("victim").await?;
    let neighbour = pool.acquire("neighbour").await?.open(kv()).await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v)").await?;
    db.execute("INSERT INTO t VALUES (1)", &[]).await?;
    store.armed.store(true, Ordering::SeqCst);
    for v in 2..5 {
        let err = db
            .execute("INSERT INTO t VALUES (?1)", &[Value::Integer(v)])
            .await
            .expect_err("no write after a store panic is acknowledged");
        assert!(err.is_poisoned(), "{err:?}");
    }
    neighbour
        .exec("CREATE TABLE n (x); INSERT INTO n VALUES (1)")
        .await?;
    store.armed.store(false, Ordering::SeqCst);
    db.close().await?;
    let db = handle.open(store as Arc<dyn KvStore>).await?;
    let rows = db.query("SELECT v FROM t", &[]).await?;
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    db.execute("INSERT INTO t VALUES (5)", &[]).await?;
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interior_nul_never_runs_a_hidden_statement() -> TestResult {
    let pool = SqliteVfsPool::new(config(1))?;
    let db = pool.acquire("nul").await?.open(kv()).await?;
    db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        .await?;
    assert!(db.exec("SELECT 1\0DROP TABLE t").await.is_err());
    assert!(db.execute("SELECT 1\0DROP TABLE t", &[]).await.is_err());
    assert!(db.query("SELECT 1\0DROP TABLE t", &[]).await.is_err());
    let rows = db.query("SELECT x FROM t", &[]).await?;
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    pool.shutdown().await;
    Ok(())
}
