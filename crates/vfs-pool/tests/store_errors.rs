//! Store answers as a pool user sees them: a fenced store (its
//! `check_owner` refuses, as a lapsed lease does) is `Error::is_fenced`
//! even for a read SQLite could answer from its page cache, and a write
//! whose outcome is unknown is `Error::is_poisoned` with the store's
//! `KvError` still reachable through `Error::kv_error`.

mod common;

use std::sync::Arc;

use common::config;
use vfs_pool::{
    Database, FaultyKv, KvError, KvStore, MemoryKv, PooledHandle, SqliteVfsPool, Value,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A pool with actor "a" open on a `FaultyKv` over memory (its
/// `set_fenced` and `lose_answers` play the lease and the lost answer),
/// holding a table `t` with one row, 1.
async fn open_with_table()
-> Result<(SqliteVfsPool, PooledHandle, Database, Arc<FaultyKv>), Box<dyn std::error::Error>> {
    let pool = SqliteVfsPool::new(config(4))?;
    let store = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
    db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .await?;
    Ok((pool, handle, db, store))
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
    let (pool, _handle, db, store) = open_with_table().await?;
    let sql = "SELECT v FROM t";
    assert_eq!(values(&db.query(sql, &[]).await?), [1]);
    store.set_fenced(true);
    let err = db.query(sql, &[]).await.expect_err("fenced");
    assert!(err.is_fenced(), "{err:?}");
    assert!(
        matches!(err.kv_error(), Some(KvError::Fenced { .. })),
        "{err:?}"
    );
    assert!(!err.is_poisoned(), "{err:?}");
    store.set_fenced(false);
    assert_eq!(values(&db.query(sql, &[]).await?), [1]);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_write_outcome_is_is_poisoned_with_the_store_error() -> TestResult {
    let (pool, handle, db, store) = open_with_table().await?;
    store.lose_answers(true);
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
    store.lose_answers(false);
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
