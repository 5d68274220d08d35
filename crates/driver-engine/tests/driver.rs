//! `EngineDriver` end to end: SQLite databases whose pages live in a real
//! PostgreSQL server, persistence across drivers, actors moving between two
//! hosts with fencing, large transactions as one batch, reopen cost, many
//! actors at once, and actor ids.

mod common;

use driver_engine::EngineDriver;
use driver_engine::testing::fresh_database_url;
use vfs_pool::{ActorDriver, Database, KvError, PoolConfig, Value};

use common::{count, integrity_ok};

fn config() -> PoolConfig {
    PoolConfig {
        actors_per_instance: 4,
        ..PoolConfig::default()
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
    // With the default page cache, far smaller than the transaction: dirty
    // pages are never spilled before the commit.
    let config = config();
    assert!(u64::from(config.cache_size_kib) * 1024 < 1 << 20);
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

    // The same mebibyte as 256 rows of 4 KiB in one explicit transaction.
    let before = driver.storage().stats();
    db.exec("BEGIN").await.unwrap();
    for i in 0..256 {
        db.execute(
            "INSERT INTO blobs (id, data) VALUES (?1, ?2)",
            &[Value::Integer(100 + i), Value::Blob(vec![i as u8; 4096])],
        )
        .await
        .unwrap();
    }
    db.exec("COMMIT").await.unwrap();
    let after = driver.storage().stats();
    assert_eq!(after.put_batches - before.put_batches, 1, "{after:?}");
    let total = db
        .query("SELECT count(*), sum(length(data)) FROM blobs", &[])
        .await
        .unwrap();
    assert_eq!(
        total.rows,
        vec![vec![
            Value::Integer(257),
            Value::Integer((1 << 20) + 256 * 4096)
        ]]
    );
    integrity_ok(&db).await;
    driver.shutdown().await;
}

/// Reopening an existing actor only reads, in a few round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_an_actor_only_reads_a_few_times() {
    let url = fresh_database_url().await.unwrap();
    {
        let driver = EngineDriver::connect(&url, config()).await.unwrap();
        let db = driver.open_database("reopen").await.unwrap();
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        insert(&db, 1).await.unwrap();
        driver.shutdown().await;
    }
    let driver = EngineDriver::connect(&url, config()).await.unwrap();
    let before = driver.storage().stats();
    let db = driver.open_database("reopen").await.unwrap();
    let rows = db.query("SELECT v FROM t", &[]).await.unwrap();
    let after = driver.storage().stats();
    assert_eq!(rows.rows, vec![vec![Value::from("row 1")]]);
    let reads = after.get_batches - before.get_batches;
    assert!(
        (1..=6).contains(&reads),
        "{reads} reads to reopen and query"
    );
    assert_eq!(after.put_batches, before.put_batches, "reading wrote pages");
    assert_eq!(after.delete_batches, before.delete_batches);
    driver.shutdown().await;
}

/// Many actors commit at once through one driver; every commit is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_actors_commit_concurrently() {
    const ACTORS: i64 = 60;
    const COMMITS: i64 = 10;
    let url = fresh_database_url().await.unwrap();
    let driver = std::sync::Arc::new(EngineDriver::connect(&url, config()).await.unwrap());
    let tasks: Vec<_> = (0..ACTORS)
        .map(|a| {
            let driver = std::sync::Arc::clone(&driver);
            tokio::spawn(async move {
                let db = driver.open_database(&format!("many-{a}")).await?;
                db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                    .await?;
                for n in 0..COMMITS {
                    insert(&db, n).await?;
                }
                Ok::<_, vfs_pool::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(driver.list_actors().await.unwrap().len(), ACTORS as usize);
    for a in [0, ACTORS / 2, ACTORS - 1] {
        let db = driver.open_database(&format!("many-{a}")).await.unwrap();
        assert_eq!(count(&db).await, COMMITS);
        integrity_ok(&db).await;
    }
    driver.shutdown().await;
}

/// Ids the pool refuses fail clearly; ids that look like paths or SQL are
/// plain data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_actor_ids_fail_clearly_or_stay_data() {
    let url = fresh_database_url().await.unwrap();
    let driver = EngineDriver::connect(&url, config()).await.unwrap();
    for bad in [String::new(), "nul\0byte".into(), "x".repeat(257)] {
        let err = driver.open_database(&bad).await.unwrap_err();
        assert!(
            matches!(err, vfs_pool::Error::InvalidActorId { .. }),
            "{bad:?}: {err}"
        );
    }
    let max = "m".repeat(256);
    let ids = [
        "../../escape",
        "'; DROP TABLE vfs_pages; --",
        "ünïcødé",
        "a/b",
        max.as_str(),
    ];
    for id in ids {
        let db = driver.open_database(id).await.unwrap();
        db.exec("CREATE TABLE t (v TEXT)").await.unwrap();
        db.execute("INSERT INTO t VALUES (?1)", &[Value::from(id)])
            .await
            .unwrap();
        let rows = db.query("SELECT v FROM t", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from(id)]]);
    }
    let mut expected: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    expected.sort();
    assert_eq!(driver.list_actors().await.unwrap(), expected);
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
