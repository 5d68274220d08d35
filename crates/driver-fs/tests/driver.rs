//! `FsDriver` end to end: real SQLite in the pool over the local-disk store.
//! Persistence across reopen, one batch per large transaction, round trips
//! on reopen, group commit, actor deletion, bad actor ids, and open errors.

mod common;

use std::time::Instant;

use common::config;
use driver_fs::{DATA_FILE, Error, FileFaults, FsDriver, FsOptions, FsStorage};
use vfs_pool::testing::report;
use vfs_pool::testing::{integrity, scalar};
use vfs_pool::{ActorDriver, KvError, StorageDriver, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_survive_shutdown_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
        for actor in ["alpha", "beta"] {
            let db = driver.open_database(actor).await.unwrap();
            db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
                .await
                .unwrap();
            db.exec("BEGIN").await.unwrap();
            for i in 0..300 {
                db.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    &[Value::Integer(i), Value::from(format!("{actor}-{i}"))],
                )
                .await
                .unwrap();
            }
            db.exec("COMMIT").await.unwrap();
            db.execute(
                "INSERT INTO t (id, v) VALUES (1000, ?1)",
                &[Value::from(actor)],
            )
            .await
            .unwrap();
        }
        assert_eq!(driver.open_actors(), vec!["alpha", "beta"]);
        driver.shutdown().await;
    }
    let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
    assert_eq!(driver.list_actors().await.unwrap(), vec!["alpha", "beta"]);
    for actor in ["alpha", "beta"] {
        let db = driver.open_database(actor).await.unwrap();
        assert_eq!(integrity(&db).await, "ok");
        assert_eq!(scalar(&db, "SELECT count(*) FROM t").await, 301);
        let rows = db
            .query(
                "SELECT v FROM t WHERE id IN (0, 299, 1000) ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.rows,
            vec![
                vec![Value::from(format!("{actor}-0"))],
                vec![Value::from(format!("{actor}-299"))],
                vec![Value::from(actor)],
            ]
        );
    }
    driver.shutdown().await;
}

/// A 1 MiB transaction is one durable transaction of one batch, whether it
/// is one big value or 256 rows of 4 KiB, with the default page cache
/// (far smaller than the transaction: dirty pages are never spilled early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_transaction_commits_in_one_put_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(50);
    assert!(u64::from(config.cache_size_kib) * 1024 < 1 << 20);
    let driver = FsDriver::open(dir.path(), config).await.unwrap();
    let db = driver.open_database("bulk").await.unwrap();
    db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .await
        .unwrap();

    let before = driver.storage().stats();
    let started = Instant::now();
    db.execute(
        "INSERT INTO blobs (b) VALUES (?1)",
        &[Value::Blob(vec![0xab; 1 << 20])],
    )
    .await
    .unwrap();
    let one_value = started.elapsed();
    let after = driver.storage().stats();
    assert_eq!(after.put_batches - before.put_batches, 1, "{after:?}");
    assert_eq!(after.write_transactions - before.write_transactions, 1);
    assert!(after.entries_written - before.entries_written >= 256);

    let before = after;
    let started = Instant::now();
    db.exec("BEGIN").await.unwrap();
    for i in 0..=255u8 {
        db.execute(
            "INSERT INTO blobs (b) VALUES (?1)",
            &[Value::Blob(vec![i; 4096])],
        )
        .await
        .unwrap();
    }
    db.exec("COMMIT").await.unwrap();
    let many_rows = started.elapsed();
    let after = driver.storage().stats();
    assert_eq!(after.put_batches - before.put_batches, 1, "{after:?}");
    assert_eq!(after.write_transactions - before.write_transactions, 1);
    eprintln!("1 MiB value: {one_value:?}; 256 x 4 KiB rows in one transaction: {many_rows:?}");

    assert_eq!(scalar(&db, "SELECT count(*) FROM blobs").await, 257);
    assert_eq!(
        scalar(&db, "SELECT sum(length(b)) FROM blobs").await,
        (1 << 20) + 256 * 4096
    );
    assert_eq!(integrity(&db).await, "ok");
    driver.shutdown().await;
}

/// Reopening an existing actor only reads, and at most twice before its
/// first query has answered: the metadata, the first pages and the journal
/// and WAL probes come in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_an_actor_takes_at_most_two_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
        let db = driver.open_database("reopen").await.unwrap();
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        db.execute("INSERT INTO t (v) VALUES ('x')", &[])
            .await
            .unwrap();
        driver.shutdown().await;
    }
    let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
    let before = driver.storage().stats();
    let db = driver.open_database("reopen").await.unwrap();
    let opened = driver.storage().stats();
    let rows = db.query("SELECT v FROM t", &[]).await.unwrap();
    let queried = driver.storage().stats();
    assert_eq!(rows.rows, vec![vec![Value::from("x")]]);
    let open_reads = opened.get_batches - before.get_batches;
    let query_reads = queried.get_batches - opened.get_batches;
    eprintln!("reads on reopen: open {open_reads}, first query {query_reads}");
    assert!(
        open_reads >= 1 && open_reads + query_reads <= 2,
        "{open_reads} + {query_reads}"
    );
    // Opening and reading writes nothing.
    assert_eq!(queried.write_transactions, before.write_transactions);
    driver.shutdown().await;
}

/// Many actors committing at once share durable transactions (fsyncs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actors_share_durable_transactions() {
    const ACTORS: usize = 100;
    const ROWS: i64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let driver = std::sync::Arc::new(FsDriver::open(dir.path(), config(10)).await.unwrap());
    let mut tasks = Vec::new();
    for a in 0..ACTORS {
        let driver = std::sync::Arc::clone(&driver);
        tasks.push(tokio::spawn(async move {
            let db = driver
                .open_database(&format!("actor-{a:03}"))
                .await
                .unwrap();
            db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                .await
                .unwrap();
            for i in 0..ROWS {
                db.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    &[Value::Integer(i), Value::from(format!("{a}"))],
                )
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = driver.storage().stats();
    eprintln!("{stats:?}");
    assert!(stats.put_batches >= (ACTORS as u64) * (ROWS as u64 + 1));
    assert!(
        stats.write_transactions < stats.put_batches,
        "no commit shared a transaction: {stats:?}"
    );
    assert!(stats.largest_group > 1);
    assert_eq!(driver.list_actors().await.unwrap().len(), ACTORS);
    for a in [0, 57, ACTORS - 1] {
        let db = driver
            .open_database(&format!("actor-{a:03}"))
            .await
            .unwrap();
        assert_eq!(scalar(&db, "SELECT count(*) FROM t").await, ROWS);
    }
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_actor_drops_its_data_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
    for actor in ["a", "ab", "b"] {
        let db = driver.open_database(actor).await.unwrap();
        db.exec("CREATE TABLE t (v TEXT)").await.unwrap();
        db.execute("INSERT INTO t VALUES (?1)", &[Value::from(actor)])
            .await
            .unwrap();
    }
    driver.delete_actor("a").await.unwrap();
    assert_eq!(driver.list_actors().await.unwrap(), vec!["ab", "b"]);
    assert_eq!(driver.open_actors(), vec!["ab", "b"]);

    // Deletion is durable: visible after a reopen too.
    driver.shutdown().await;
    let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
    assert_eq!(driver.list_actors().await.unwrap(), vec!["ab", "b"]);
    let fresh = driver.open_database("a").await.unwrap();
    assert_eq!(
        scalar(&fresh, "SELECT count(*) FROM sqlite_master").await,
        0
    );
    for actor in ["ab", "b"] {
        let db = driver.open_database(actor).await.unwrap();
        let rows = db.query("SELECT v FROM t", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from(actor)]]);
        assert_eq!(integrity(&db).await, "ok");
    }
    driver.shutdown().await;
}

/// Ids the pool refuses fail clearly; ids that look like paths work and
/// never touch the file system outside the data file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_actor_ids_fail_clearly_or_stay_data() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let driver = FsDriver::open(&dir, config(50)).await.unwrap();
    for bad in [String::new(), "nul\0byte".into(), "x".repeat(257)] {
        let err = driver.open_database(&bad).await.unwrap_err();
        assert!(
            matches!(err, vfs_pool::Error::InvalidActorId { .. }),
            "{bad:?}: {err}"
        );
    }
    let max = "m".repeat(256);
    for id in ["../../escape", "/etc/passwd", "a/b", "..", max.as_str()] {
        let db = driver.open_database(id).await.unwrap();
        db.exec("CREATE TABLE t (v TEXT)").await.unwrap();
        db.execute("INSERT INTO t VALUES (?1)", &[Value::from(id)])
            .await
            .unwrap();
        let rows = db.query("SELECT v FROM t", &[]).await.unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from(id)]]);
    }
    assert_eq!(driver.list_actors().await.unwrap().len(), 5);
    driver.shutdown().await;
    let list = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(list(&dir), vec![DATA_FILE.to_owned()]);
    assert_eq!(list(parent.path()), vec!["data".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_errors_are_clear() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("missing");
    // Spawned: the open future is `Send`.
    let err = tokio::spawn(FsDriver::open(missing, config(50)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::MissingDir { .. }), "{err}");

    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    // An invalid pool configuration is refused, and the file is released.
    let err = FsDriver::open(&dir, config(0)).await.unwrap_err();
    assert!(
        matches!(err, Error::Pool(vfs_pool::Error::InvalidConfig(_))),
        "{err}"
    );
    let first = FsDriver::open(&dir, config(50)).await.unwrap();
    let err = FsDriver::open(&dir, config(50)).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    first.shutdown().await;
    drop(first);

    std::fs::write(dir.join(DATA_FILE), vec![0x42; 10_000]).unwrap();
    let err = FsDriver::open(&dir, config(50)).await.unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
}

/// A driver over a data file in `dir` that fails on command, with actor
/// `actor` holding one row, 'kept', in table `t`.
async fn one_kept_row(
    dir: &std::path::Path,
    faults: &FileFaults,
    actor: &str,
) -> (StorageDriver<FsStorage>, vfs_pool::Database) {
    let storage = FsStorage::open_with_faults(dir, FsOptions::default(), faults).unwrap();
    let driver = StorageDriver::new(storage, config(50)).unwrap();
    let db = driver.open_database(actor).await.unwrap();
    db.exec("CREATE TABLE t (v TEXT)").await.unwrap();
    db.execute("INSERT INTO t VALUES ('kept')", &[])
        .await
        .unwrap();
    (driver, db)
}

/// Reopens `dir` and asserts that `actor`'s database is sound and holds
/// exactly the row 'kept'.
async fn only_the_kept_row_after_reopening(dir: &std::path::Path, actor: &str) {
    let driver = FsDriver::open(dir, config(50)).await.unwrap();
    let db = driver.open_database(actor).await.unwrap();
    assert_eq!(integrity(&db).await, "ok");
    let rows = db.query("SELECT v FROM t", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![Value::from("kept")]]);
    driver.shutdown().await;
}

/// A disk failure under a commit reaches the SQL caller with the storage
/// error attached; after reopening, the database holds exactly what was
/// acknowledged before the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_failure_reaches_the_caller_and_loses_only_the_failed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FileFaults::new();
    {
        let (driver, db) = one_kept_row(dir.path(), &faults, "fragile").await;

        faults.fail_writes(true);
        let err = db
            .execute("INSERT INTO t VALUES ('lost')", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err.kv_error(), Some(KvError::Backend { .. })),
            "{err}"
        );
        assert!(faults.injected() > 0);
        faults.fail_writes(false);
        driver.shutdown().await;
    }
    only_the_kept_row_after_reopening(dir.path(), "fragile").await;
}

/// A database the application closed itself (as it must close a poisoned
/// one) is not handed out again: the next `open_database` opens the actor
/// afresh, and the old handle stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_closed_by_its_caller_is_reopened_not_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let driver = FsDriver::open(dir.path(), config(50)).await.unwrap();
    let db = driver.open_database("closer").await.unwrap();
    db.exec("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    db.close().await.unwrap();
    assert!(db.is_closed());

    let again = driver.open_database("closer").await.unwrap();
    assert!(!again.is_closed());
    again.exec("INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(scalar(&again, "SELECT sum(v) FROM t").await, 3);
    let old = db.exec("INSERT INTO t VALUES (4)").await.unwrap_err();
    assert!(matches!(old, vfs_pool::Error::Closed), "{old}");
    assert_eq!(driver.open_actors(), vec!["closer"]);
    driver.shutdown().await;
}

/// A full disk under a commit reaches the SQL caller as a full store: the
/// storage error is `KvError::StorageFull` and the error's text says "no
/// space left", not whatever a later retry ran into. After reopening, the
/// database holds exactly what was acknowledged before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_reaches_the_sql_caller_as_storage_full() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FileFaults::new();
    {
        let (driver, db) = one_kept_row(dir.path(), &faults, "crowded").await;

        faults.fill_disk(true);
        let err = db
            .execute("INSERT INTO t VALUES ('lost')", &[])
            .await
            .unwrap_err();
        let text = report(&err);
        assert!(
            err.kv_error().is_some_and(KvError::is_storage_full),
            "{text}"
        );
        assert!(text.contains("no space left"), "{text}");
        assert!(faults.injected() > 0);
        faults.fill_disk(false);
        driver.shutdown().await;
    }
    only_the_kept_row_after_reopening(dir.path(), "crowded").await;
}
