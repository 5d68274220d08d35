//! Export, snapshots, sizes and import on PostgreSQL while another host
//! owns the actor: reading never takes ownership, so the owner keeps
//! writing; an import takes ownership like any host.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use driver_engine::testing::fresh_database_url;
use driver_engine::{EngineDriver, PgOptions};
use vfs_pool::testing::integrity;
use vfs_pool::{ActorDriver, Error, ImportMode, PoolConfig, Value};

fn config() -> PoolConfig {
    PoolConfig {
        actors_per_instance: 4,
        ..PoolConfig::default()
    }
}

/// Whether `image` is a SQLite file whose table `t` holds exactly the rows
/// `0..n` for some `n`, which it returns: checked by opening it through
/// another driver's import, so page by page by SQLite itself.
async fn rows_in_image(driver: &EngineDriver, actor: &str, image: &[u8]) -> i64 {
    driver
        .import(actor, &mut &image[..], ImportMode::Replace)
        .await
        .unwrap();
    let snapshot = driver.snapshot(actor).await.unwrap();
    let db = snapshot.database();
    assert_eq!(integrity(db).await, "ok");
    let rows = db
        .query("SELECT count(*), coalesce(max(id), -1) FROM t", &[])
        .await
        .unwrap();
    snapshot.close().await.unwrap();
    match rows.rows[0][..] {
        [Value::Integer(count), Value::Integer(max)] => {
            assert_eq!(count, max + 1, "the rows are a prefix of the writes");
            count
        }
        ref other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_snapshots_never_fence_the_owner() {
    let url = fresh_database_url().await.unwrap();
    // A short lease, so the import that takes the live actor over waits
    // little for the fenced owner's lease to run out.
    let options = || PgOptions {
        lease_duration: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let host = EngineDriver::connect_with(&url, config(), options())
        .await
        .unwrap();
    let operator = EngineDriver::connect_with(&url, config(), options())
        .await
        .unwrap();

    let db = host.open_database("live").await.unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let generation = host.storage().generation("live").await.unwrap();

    // The owner writes without pause while the operator reads.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let db = db.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut written = 0_i64;
            while !stop.load(Ordering::SeqCst) || written < 20 {
                db.execute(
                    "INSERT INTO t (id, v) VALUES (?1, 'row')",
                    &[Value::Integer(written)],
                )
                .await?;
                written += 1;
            }
            Ok::<i64, Error>(written)
        }
    });

    let mut seen = Vec::new();
    for round in 0..5 {
        let sizes = operator.actor_sizes().await.unwrap();
        assert_eq!(sizes.len(), 1 + round, "{sizes:?}");
        assert_eq!(sizes[round].actor_id, "live");
        assert!(sizes[round].size_bytes >= 4096, "{sizes:?}");

        let mut image = Vec::new();
        operator.export("live", &mut image).await.unwrap();
        seen.push(rows_in_image(&operator, &format!("copy-{round}"), &image).await);
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer
        .await
        .unwrap()
        .expect("the owner's writes kept succeeding");

    // Never fenced: same generation, and its reads and writes still work.
    assert_eq!(host.storage().generation("live").await.unwrap(), generation);
    db.execute(
        "INSERT INTO t (id, v) VALUES (?1, 'last')",
        &[Value::Integer(written)],
    )
    .await
    .unwrap();
    eprintln!("rows seen by five exports: {seen:?}; written: {written}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() <= written, "{seen:?} vs {written}");

    // The operator's snapshot sees every acknowledged row.
    let snapshot = operator.snapshot("live").await.unwrap();
    let rows = snapshot
        .database()
        .query("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(written + 1)]]);
    snapshot.close().await.unwrap();

    // An import that is refused takes nothing over.
    let mut image = Vec::new();
    operator.export("live", &mut image).await.unwrap();
    let err = operator
        .import("live", &mut &image[..], ImportMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorExists { .. }), "{err}");
    assert_eq!(host.storage().generation("live").await.unwrap(), generation);
    db.execute("INSERT INTO t (id, v) VALUES (-2, 'still mine')", &[])
        .await
        .unwrap();

    // An import takes ownership like any host: replacing the live actor
    // fences its owner.
    operator
        .import("live", &mut &image[..], ImportMode::Replace)
        .await
        .unwrap();
    let err = db
        .execute("INSERT INTO t (id, v) VALUES (-1, 'fenced')", &[])
        .await
        .unwrap_err();
    assert!(err.is_fenced() || err.is_poisoned(), "{err}");

    operator.shutdown().await;
    host.shutdown().await;
}
