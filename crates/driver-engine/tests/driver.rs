//! `EngineDriver` end to end: SQLite databases whose pages live in a real
//! PostgreSQL server, persistence across drivers, actors moving between two
//! hosts with fencing, and large transactions as one batch.

use driver_engine::EngineDriver;
use driver_engine::testing::fresh_database_url;
use vfs_pool::{ActorDriver, Database, KvError, PoolConfig, Value};

fn config() -> PoolConfig {
    PoolConfig {
        actors_per_instance: 4,
        ..PoolConfig::default()
    }
}

async fn integrity_ok(db: &Database) {
    let rows = db.query("PRAGMA integrity_check", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![Value::from("ok")]]);
}

async fn count(db: &Database) -> i64 {
    match &db.query("SELECT count(*) FROM t", &[]).await.unwrap().rows[0][0] {
        Value::Integer(n) => *n,
        other => panic!("count(*) returned {other:?}"),
    }
}

async fn insert(db: &Database, n: i64) -> vfs_pool::Result<u64> {
    db.execute(
        "INSERT INTO t (id, v) VALUES (?1, ?2)",
        &[Value::Integer(n), Value::from(format!("row {n}"))],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_persist_across_drivers() {
    let url = fresh_database_url().await.unwrap();
    {
        let driver = EngineDriver::connect(&url, config()).await.unwrap();
        for actor in ["p-1", "p-2"] {
            let db = driver.open_database(actor).await.unwrap();
            db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                .await
                .unwrap();
            for n in 0..50 {
                insert(&db, n).await.unwrap();
            }
            db.exec("CREATE INDEX t_v ON t (v)").await.unwrap();
        }
        assert_eq!(driver.open_actors(), ["p-1", "p-2"]);
        driver.shutdown().await;
    }
    let driver = EngineDriver::connect(&url, config()).await.unwrap();
    assert_eq!(driver.list_actors().await.unwrap(), ["p-1", "p-2"]);
    for actor in ["p-1", "p-2"] {
        let db = driver.open_database(actor).await.unwrap();
        assert_eq!(count(&db).await, 50);
        let rows = db
            .query("SELECT v FROM t WHERE id = ?1", &[Value::Integer(42)])
            .await
            .unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from("row 42")]]);
        integrity_ok(&db).await;
    }
    driver.delete_actor("p-1").await.unwrap();
    assert_eq!(driver.list_actors().await.unwrap(), ["p-2"]);
    assert_eq!(driver.open_actors(), ["p-2"]);
    // A deleted actor starts over with an empty database.
    let db = driver.open_database("p-1").await.unwrap();
    assert!(db.query("SELECT count(*) FROM t", &[]).await.is_err());
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_moves_to_another_host_which_fences_the_first() {
    let url = fresh_database_url().await.unwrap();
    let host_a = EngineDriver::connect(&url, config()).await.unwrap();
    let host_b = EngineDriver::connect(&url, config()).await.unwrap();

    let on_a = host_a.open_database("mover").await.unwrap();
    on_a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let mut acknowledged = 0;
    for n in 0..40 {
        insert(&on_a, n).await.unwrap();
        acknowledged += 1;
    }

    // The actor moves: host B opens it (without host A closing it).
    let on_b = host_b.open_database("mover").await.unwrap();
    assert_eq!(count(&on_b).await, acknowledged);
    integrity_ok(&on_b).await;

    // Every later write of host A is refused as fenced, never applied.
    for n in 100..105 {
        let err = insert(&on_a, n).await.unwrap_err();
        assert!(
            matches!(err.kv_error(), Some(KvError::Fenced { .. })),
            "expected a fenced error, got {err}"
        );
    }
    assert!(host_a.storage().stats().fenced >= 5);

    // Host B owns the actor and keeps working on intact data.
    for n in 40..60 {
        insert(&on_b, n).await.unwrap();
    }
    assert_eq!(count(&on_b).await, 60);
    integrity_ok(&on_b).await;
    let stale = on_b
        .query("SELECT count(*) FROM t WHERE id >= 100", &[])
        .await
        .unwrap();
    assert_eq!(stale.rows, vec![vec![Value::Integer(0)]]);

    host_a.shutdown().await;
    host_b.shutdown().await;

    // A third host sees exactly what was acknowledged, intact.
    let host_c = EngineDriver::connect(&url, config()).await.unwrap();
    let on_c = host_c.open_database("mover").await.unwrap();
    assert_eq!(count(&on_c).await, 60);
    integrity_ok(&on_c).await;
    host_c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_transaction_is_one_put_batch() {
    let url = fresh_database_url().await.unwrap();
    // The page cache must hold the whole transaction: a cache spill ends
    // SQLite's batch-atomic write and falls back to its journal.
    let config = PoolConfig {
        cache_size_kib: 4096,
        ..config()
    };
    let driver = EngineDriver::connect(&url, config).await.unwrap();
    let db = driver.open_database("big").await.unwrap();
    db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let before = driver.storage().stats();
    db.execute(
        "INSERT INTO blobs (id, data) VALUES (1, ?1)",
        &[Value::Blob(blob.clone())],
    )
    .await
    .unwrap();
    let after = driver.storage().stats();
    assert_eq!(
        after.put_batches - before.put_batches,
        1,
        "a 1 MiB transaction must commit as one put_batch"
    );
    assert!(
        after.largest_put >= 256,
        "the batch holds at least 256 pages, got {}",
        after.largest_put
    );
    let rows = db
        .query("SELECT data FROM blobs WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Blob(blob)]]);
    integrity_ok(&db).await;
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_or_a_server_that_is_down_fails_at_connect() {
    let err = EngineDriver::connect("definitely not a url", config())
        .await
        .unwrap_err();
    assert!(
        matches!(err, driver_engine::Error::InvalidUrl { .. }),
        "{err}"
    );
    // Nothing listens on a port we just freed: the server is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = EngineDriver::connect(&format!("postgres://u:p@127.0.0.1:{port}/db"), config())
        .await
        .unwrap_err();
    assert!(matches!(err, driver_engine::Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}
