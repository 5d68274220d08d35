//! Store answers as a pool user sees them: a fenced store (its
//! `check_owner` refuses, as a lapsed lease does) is `Error::is_fenced`
//! even for a read SQLite could answer from its page cache, and a write
//! whose outcome is unknown is `Error::is_poisoned` with the store's
//! `KvError` still reachable through `Error::kv_error`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use common::config;
use vfs_pool::{KvError, KvLimits, KvStore, MemoryKv, SqliteVfsPool, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A store over memory whose `check_owner` refuses while `fenced` is set
/// and whose writes, while `lose_answers` is set, land but are answered
/// with `OutcomeUnknown`.
#[derive(Default)]
struct LeaseKv {
    inner: MemoryKv,
    fenced: AtomicBool,
    lose_answers: AtomicBool,
}

#[async_trait::async_trait]
impl KvStore for LeaseKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.inner.put_batch(entries).await?;
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(KvError::OutcomeUnknown {
                message: "the answer to the write was lost".into(),
            });
        }
        Ok(())
    }
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
    fn check_owner(&self) -> Result<(), KvError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(KvError::Fenced {
                message: "lease lapsed".into(),
            });
        }
        Ok(())
    }
}

fn values(rows: &vfs_pool::Rows) -> Vec<i64> {
    rows.rows
        .iter()
        .map(|row| match row.as_slice() {
            [Value::Integer(n)] => *n,
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_store_is_is_fenced_even_for_a_cached_read() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let store = Arc::new(LeaseKv::default());
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .await?;
    let sql = "SELECT v FROM t";
    assert_eq!(values(&db.query(sql, &[]).await?), [1]);
    store.fenced.store(true, Ordering::SeqCst);
    let err = db.query(sql, &[]).await.expect_err("fenced");
    assert!(err.is_fenced(), "{err:?}");
    assert!(
        matches!(err.kv_error(), Some(KvError::Fenced { .. })),
        "{err:?}"
    );
    assert!(!err.is_poisoned(), "{err:?}");
    store.fenced.store(false, Ordering::SeqCst);
    assert_eq!(values(&db.query(sql, &[]).await?), [1]);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_write_outcome_is_is_poisoned_with_the_store_error() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let store = Arc::new(LeaseKv::default());
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .await?;
    store.lose_answers.store(true, Ordering::SeqCst);
    let err = db
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .expect_err("outcome unknown");
    assert!(err.is_poisoned(), "{err:?}");
    assert!(
        err.kv_error().is_some_and(KvError::is_outcome_unknown),
        "{err:?}"
    );
    assert!(!err.is_fenced(), "{err:?}");
    store.lose_answers.store(false, Ordering::SeqCst);
    let err = db
        .query("SELECT v FROM t", &[])
        .await
        .expect_err("poisoned");
    assert!(err.is_poisoned(), "{err:?}");
    db.close().await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    assert_eq!(
        values(&db.query("SELECT v FROM t ORDER BY v", &[]).await?),
        [1, 2]
    );
    pool.shutdown().await;
    Ok(())
}
