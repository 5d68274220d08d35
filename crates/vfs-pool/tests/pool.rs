//! The pool's lifecycle behaviours, each through the public API.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, kv};
use vfs_pool::{Error, PoolConfig, SqliteVfsPool, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_use_close() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let handle = pool.acquire("actor-a").await?;
    let db = handle.open(kv()).await?;
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await?;
    let changed = db
        .execute(
            "INSERT INTO t (v) VALUES (?1), (?2)",
            &[Value::from("x"), Value::from("y")],
        )
        .await?;
    assert_eq!(changed, 2);
    let rows = db.query("SELECT id, v FROM t ORDER BY id", &[]).await?;
    assert_eq!(rows.columns, vec!["id".to_owned(), "v".to_owned()]);
    assert_eq!(
        rows.rows,
        vec![
            vec![Value::Integer(1), Value::from("x")],
            vec![Value::Integer(2), Value::from("y")],
        ]
    );
    db.close().await?;
    db.close().await?; // idempotent
    assert!(matches!(
        db.query("SELECT 1", &[]).await,
        Err(Error::Closed)
    ));
    // A handle opens again after close.
    let again = handle.open(kv()).await?;
    assert_eq!(
        again.query("SELECT 7", &[]).await?.rows,
        vec![vec![Value::Integer(7)]]
    );
    handle.release().await;
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_are_sticky_until_released() -> TestResult {
    let pool = Arc::new(SqliteVfsPool::new(config(4))?);
    let first = pool.acquire("sticky").await?;
    let second = pool.acquire("sticky").await?;
    assert!(first.same_as(&second));

    // Concurrent acquires of one actor share one handle and one seat.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire("burst").await })
        })
        .collect();
    let mut handles = Vec::new();
    for task in tasks {
        handles.push(task.await??);
    }
    assert!(handles.iter().all(|h| h.same_as(&handles[0])));
    assert_eq!(pool.actor_count(), 2);
    assert_eq!(pool.instance_count(), 1);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_then_reacquire_gives_a_new_working_handle() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let store = kv();
    let handle = pool.acquire("a").await?;
    let db = handle.open(Arc::clone(&store)).await?;
    db.exec("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (42);")
        .await?;
    handle.release().await;
    assert!(handle.is_released());
    assert!(matches!(
        db.query("SELECT v FROM t", &[]).await,
        Err(Error::Released { .. })
    ));
    assert!(matches!(
        handle.open(kv()).await,
        Err(Error::Released { .. })
    ));

    let fresh = pool.acquire("a").await?;
    assert!(!fresh.same_as(&handle));
    let db = fresh.open(store).await?;
    assert_eq!(
        db.query("SELECT v FROM t", &[]).await?.rows,
        vec![vec![Value::Integer(42)]]
    );
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_actor_1_never_touches_actor_10() -> TestResult {
    let pool = SqliteVfsPool::new(config(50))?;
    // Enough actors that short names "1" and "10" (and "11"…) all exist.
    let mut dbs = Vec::new();
    let mut handles = Vec::new();
    for i in 0..12 {
        let handle = pool.acquire(&i.to_string()).await?;
        let db = handle.open(kv()).await?;
        db.exec(&format!("CREATE TABLE t (v); INSERT INTO t VALUES ({i});"))
            .await?;
        handles.push(handle);
        dbs.push(db);
    }
    handles[1].release().await;
    for (i, db) in dbs.iter().enumerate() {
        let result = db.query("SELECT v FROM t", &[]).await;
        if i == 1 {
            assert!(matches!(result, Err(Error::Released { .. })));
        } else {
            assert_eq!(
                result?.rows,
                vec![vec![Value::Integer(i as i64)]],
                "actor {i}"
            );
        }
    }
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_release_is_a_no_op() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    let db_b = b.open(kv()).await?;
    a.release().await;
    a.release().await;
    a.clone().release().await;
    assert_eq!(pool.actor_count(), 1);
    assert_eq!(
        db_b.query("SELECT 1", &[]).await?.rows,
        vec![vec![Value::Integer(1)]]
    );
    // The seat freed by the first release is reused once, not twice.
    pool.acquire("c").await?;
    assert_eq!(pool.actor_count(), 2);
    assert_eq!(pool.instances().await[0].actors, 2);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_after_shutdown_fails() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let handle = pool.acquire("a").await?;
    let db = handle.open(kv()).await?;
    pool.shutdown().await;
    assert!(matches!(pool.acquire("b").await, Err(Error::ShuttingDown)));
    assert!(matches!(pool.acquire("a").await, Err(Error::ShuttingDown)));
    assert!(db.query("SELECT 1", &[]).await.is_err());
    assert_eq!(pool.instance_count(), 0);
    assert_eq!(pool.worker_threads(), 0);
    pool.shutdown().await; // idempotent
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_triggers_a_new_instance() -> TestResult {
    let pool = SqliteVfsPool::new(config(3))?;
    let a = pool.acquire("a").await?;
    let b = pool.acquire("b").await?;
    let c = pool.acquire("c").await?;
    assert_eq!(pool.instance_count(), 1);
    assert!(a.instance_id() == b.instance_id() && b.instance_id() == c.instance_id());
    let d = pool.acquire("d").await?;
    assert_eq!(pool.instance_count(), 2);
    assert_ne!(d.instance_id(), a.instance_id());
    // Bin-packing: the seat freed in the first instance (now 2 of 3) is
    // filled before the emptier second instance (1 of 3).
    a.release().await;
    let e = pool.acquire("e").await?;
    assert_eq!(e.instance_id(), b.instance_id());
    let f = pool.acquire("f").await?;
    assert_eq!(f.instance_id(), d.instance_id());
    assert_eq!(pool.instance_count(), 2);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_idle_scale_down_scale_back_up() -> TestResult {
    let pool = SqliteVfsPool::new(PoolConfig {
        idle_destroy: Duration::from_millis(20),
        ..config(2)
    })?;
    let mut count = pool.watch_instance_count();
    let mut handles = Vec::new();
    for i in 0..6 {
        let h = pool.acquire(&format!("actor-{i}")).await?;
        h.open(kv()).await?.exec("CREATE TABLE t (v)").await?;
        handles.push(h);
    }
    assert_eq!(pool.instance_count(), 3);
    for h in &handles {
        h.release().await;
    }
    tokio::time::timeout(Duration::from_secs(30), count.wait_for(|n| *n == 0)).await??;
    assert_eq!(pool.instance_count(), 0);
    assert_eq!(pool.worker_threads(), 0);

    let h = pool.acquire("again").await?;
    let db = h.open(kv()).await?;
    assert_eq!(
        db.query("SELECT 1", &[]).await?.rows,
        vec![vec![Value::Integer(1)]]
    );
    assert_eq!(pool.instance_count(), 1);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_scale_down_keeps_the_right_count() -> TestResult {
    let pool = SqliteVfsPool::new(config(2))?;
    let handles: Vec<_> = futures_all(&pool, &["a", "b", "c", "d", "e"]).await?;
    assert_eq!(pool.instance_count(), 3);
    // Empty the instance of "c" and "d" only.
    handles[2].release().await;
    handles[3].release().await;
    assert_eq!(pool.reap_idle().await, 1);
    assert_eq!(pool.instance_count(), 2);
    assert_eq!(pool.actor_count(), 3);
    for h in [&handles[0], &handles[1], &handles[4]] {
        let db = h.open(kv()).await?;
        assert_eq!(
            db.query("SELECT 2", &[]).await?.rows,
            vec![vec![Value::Integer(2)]]
        );
    }
    pool.shutdown().await;
    Ok(())
}

async fn futures_all(
    pool: &SqliteVfsPool,
    ids: &[&str],
) -> Result<Vec<vfs_pool::PooledHandle>, Error> {
    let mut out = Vec::new();
    for id in ids {
        out.push(pool.acquire(id).await?);
    }
    Ok(out)
}

#[test]
fn zero_capacity_is_rejected() {
    let result = SqliteVfsPool::new(PoolConfig {
        actors_per_instance: 0,
        ..PoolConfig::default()
    });
    assert!(matches!(result, Err(Error::InvalidConfig(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_actor_ids_are_refused_with_a_clear_error() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let long = "x".repeat(257);
    for bad in ["", long.as_str(), "nul\0inside"] {
        let err = pool.acquire(bad).await.expect_err("refused");
        assert!(matches!(err, Error::InvalidActorId { .. }), "{err}");
    }
    assert!(pool.acquire(&"y".repeat(256)).await.is_ok());
    assert!(pool.acquire("../../etc/passwd").await.is_ok());
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_open_database_per_actor() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let handle = pool.acquire("a").await?;
    let _db = handle.open(kv()).await?;
    assert!(matches!(
        handle.open(kv()).await,
        Err(Error::AlreadyOpen { .. })
    ));
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_pass_through_with_their_code() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let db = pool.acquire("a").await?.open(kv()).await?;
    let err = db.exec("SELEC nonsense").await.expect_err("syntax error");
    match err {
        Error::Sqlite(vfs_wasm::Error::Sqlite {
            code, ref message, ..
        }) => {
            assert_eq!(code & 0xff, 1, "SQLITE_ERROR");
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    // The database is still usable.
    assert_eq!(
        db.query("SELECT 3", &[]).await?.rows,
        vec![vec![Value::Integer(3)]]
    );
    pool.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_full_text_search_are_built_in() -> TestResult {
    let pool = SqliteVfsPool::new(config(4))?;
    let db = pool.acquire("features").await?.open(kv()).await?;
    let rows = db
        .query(
            "SELECT json_extract(?1, '$.a[1]')",
            &[Value::from(r#"{"a": [10, 20]}"#)],
        )
        .await?;
    assert_eq!(rows.rows, vec![vec![Value::Integer(20)]]);
    db.exec(
        "CREATE VIRTUAL TABLE docs USING fts5(body);
         INSERT INTO docs (body) VALUES ('the quick brown fox'), ('a lazy dog');",
    )
    .await?;
    let hits = db
        .query(
            "SELECT body FROM docs WHERE docs MATCH ?1",
            &[Value::from("quick")],
        )
        .await?;
    assert_eq!(hits.rows, vec![vec![Value::from("the quick brown fox")]]);
    pool.shutdown().await;
    Ok(())
}

/// A failed module load is not remembered: once the cause is gone, the next
/// acquire starts an instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_module_load_is_retried_by_the_next_acquire() -> TestResult {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("blocked-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A regular file where the cache directory should be: loading fails.
    std::fs::write(&dir, b"not a directory")?;
    let pool = SqliteVfsPool::new(PoolConfig {
        module_cache_dir: Some(dir.join("cache")),
        ..config(4)
    })?;
    let err = pool
        .acquire("a")
        .await
        .expect_err("the cache dir is unusable");
    assert!(matches!(err, Error::InstanceStart(_)), "{err}");
    assert_eq!(pool.instance_count(), 0);
    assert_eq!(pool.actor_count(), 0);

    std::fs::remove_file(&dir)?;
    let handle = pool.acquire("a").await?;
    let db = handle.open(kv()).await?;
    assert_eq!(
        db.query("SELECT 5", &[]).await?.rows,
        vec![vec![Value::Integer(5)]]
    );
    assert_eq!(pool.instance_count(), 1);
    pool.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Reopening an existing database and answering its first query costs at
/// most two store round trips: the metadata, the first pages and the
/// sidecar probes travel in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_and_first_query_take_at_most_two_round_trips() -> TestResult {
    let store = kv();
    {
        let pool = SqliteVfsPool::new(config(4))?;
        let db = pool.acquire("a").await?.open(Arc::clone(&store)).await?;
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .await?;
        for i in 0..100 {
            db.execute(
                "INSERT INTO t (v) VALUES (?1)",
                &[Value::from(format!("{i:0>100}"))],
            )
            .await?;
        }
        pool.shutdown().await;
    }
    let counting = Arc::new(vfs_pool::CountingKv::new(store));
    let pool = SqliteVfsPool::new(config(4))?;
    let handle = pool.acquire("a").await?;
    let db = handle
        .open(Arc::clone(&counting) as Arc<dyn vfs_pool::KvStore>)
        .await?;
    let rows = db.query("SELECT count(*), max(id) FROM t", &[]).await?;
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(100), Value::Integer(100)]]
    );
    assert!(
        counting.total() <= 2,
        "{} gets, {} puts, {} deletes",
        counting.get_calls(),
        counting.put_calls(),
        counting.delete_calls()
    );
    assert_eq!(
        counting.put_calls() + counting.delete_calls(),
        0,
        "reopen only reads"
    );
    pool.shutdown().await;
    Ok(())
}
