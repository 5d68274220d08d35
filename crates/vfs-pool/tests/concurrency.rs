//! Concurrency: burst acquires, stall isolation between instances, churn.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, kv};
use vfs_pool::testing::GateKv;
use vfs_pool::{KvStore, PoolConfig, SqliteVfsPool, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_acquires_make_exactly_four_instances() -> TestResult {
    let pool = Arc::new(SqliteVfsPool::new(config(50))?);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire(&format!("burst-{i}")).await })
        })
        .collect();
    let mut handles = Vec::new();
    for task in tasks {
        handles.push(task.await??);
    }
    assert_eq!(pool.instance_count(), 4);
    assert_eq!(pool.actor_count(), 200);
    let per_instance: Vec<usize> = pool.instances().await.iter().map(|i| i.actors).collect();
    assert_eq!(per_instance, vec![50, 50, 50, 50]);

    let uses: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            tokio::spawn(async move {
                let db = h.open(kv()).await?;
                db.execute("CREATE TABLE t (v INTEGER)", &[]).await?;
                db.execute("INSERT INTO t VALUES (?1)", &[Value::Integer(i as i64)])
                    .await?;
                let rows = db.query("SELECT v FROM t", &[]).await?;
                Ok::<_, vfs_pool::Error>(rows.rows == vec![vec![Value::Integer(i as i64)]])
            })
        })
        .collect();
    for task in uses {
        assert!(task.await??);
    }
    pool.shutdown().await;
    assert_eq!(pool.worker_threads(), 0);
    Ok(())
}

/// A writer blocked in its store holds only its own instance: a reader on
/// another instance is served while the writer is still blocked. Nothing here
/// depends on timing: the gate holds the writer until the test opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_stalls_only_its_own_instance() -> TestResult {
    let pool = Arc::new(SqliteVfsPool::new(config(1))?);
    let gate = GateKv::new();
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    assert_ne!(a.instance_id(), b.instance_id());
    let db_a = a.open(Arc::clone(&gate) as Arc<dyn KvStore>).await?;
    db_a.exec("CREATE TABLE t (v)").await?;
    let db_b = b.open(kv()).await?;
    db_b.exec("CREATE TABLE t (v); INSERT INTO t VALUES ('b');")
        .await?;

    gate.arm();
    let entered = gate.entered.notified();
    let writer = tokio::spawn({
        let db_a = db_a.clone();
        async move { db_a.execute("INSERT INTO t VALUES ('a')", &[]).await }
    });
    entered.await; // a's write is now blocked inside its store

    let rows = db_b.query("SELECT v FROM t", &[]).await?;
    assert_eq!(rows.rows, vec![vec![Value::from("b")]]);
    assert!(!writer.is_finished(), "the writer must still be blocked");

    gate.open();
    assert_eq!(writer.await??, 1);
    assert_eq!(
        db_a.query("SELECT v FROM t", &[]).await?.rows,
        vec![vec![Value::from("a")]]
    );
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaks_no_threads_and_scales_to_zero() -> TestResult {
    let cycles: usize = std::env::var("VFS_POOL_CHURN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let pool = SqliteVfsPool::new(PoolConfig {
        idle_destroy: Duration::from_millis(50),
        ..config(50)
    })?;
    let mut count = pool.watch_instance_count();
    for i in 0..cycles {
        let handle = pool.acquire(&format!("churn-{}", i % 97)).await?;
        let db = handle.open(kv()).await?;
        db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)", &[])
            .await?;
        db.execute("INSERT INTO t VALUES (?1)", &[Value::Integer(i as i64)])
            .await?;
        handle.release().await;
    }
    assert_eq!(pool.actor_count(), 0);
    tokio::time::timeout(Duration::from_secs(30), count.wait_for(|n| *n == 0)).await??;
    assert_eq!(pool.instance_count(), 0);
    assert_eq!(pool.worker_threads(), 0);
    pool.shutdown().await;
    Ok(())
}
