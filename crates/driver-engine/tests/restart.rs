//! PostgreSQL stops like a crash (`pg_ctl stop -m immediate`) in the middle
//! of a write workload and comes back: the calls in flight fail with a
//! transient storage error, the same driver recovers by itself once the
//! server is back, and every acknowledged row is there, intact.
//!
//! This test runs its own server (it has to stop it), so it lives in a test
//! binary of its own.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use driver_engine::testing::PgServer;
use driver_engine::{EngineDriver, PgOptions};
use parking_lot::Mutex;
use tokio::sync::watch;
use vfs_pool::{ActorDriver, Database, PoolConfig, Value};

use common::{ids, integrity_ok};

const ACTORS: [&str; 3] = ["r-1", "r-2", "r-3"];
const RUNNING: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;
const STOP: u8 = 3;

#[derive(Debug, Default)]
struct Progress {
    acknowledged: BTreeSet<i64>,
    /// Inserts that failed: their outcome is unknown.
    failed: BTreeSet<i64>,
    errors_while_down: Vec<String>,
    unclear_errors: Vec<String>,
    acknowledged_after_restart: usize,
    /// Times the database had to be reopened: a write whose answer was lost
    /// while the server went down turned out, once it could be checked, to
    /// have landed, so the database was poisoned (its cache is stale).
    reopened: usize,
}

impl Progress {
    /// A few lines, whatever the counts: a timed-out wait prints this, and
    /// every id and error of a long run would be megabytes.
    fn summary(&self) -> String {
        format!(
            "{} acknowledged ({} after the restart), {} failed, reopened {} times, \
             {} errors while down, unclear errors: {:?}",
            self.acknowledged.len(),
            self.acknowledged_after_restart,
            self.failed.len(),
            self.reopened,
            self.errors_while_down.len(),
            self.unclear_errors.iter().take(3).collect::<Vec<_>>()
        )
    }
}

fn options() -> PgOptions {
    // A short retry budget, so that reads give up while the server is down
    // instead of riding out the whole outage.
    PgOptions {
        retry_attempts: 4,
        retry_initial_backoff: Duration::from_millis(20),
        retry_max_backoff: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    }
}

fn config() -> PoolConfig {
    PoolConfig {
        actors_per_instance: 2,
        ..PoolConfig::default()
    }
}

async fn write_until_stopped(
    driver: Arc<EngineDriver>,
    actor: &'static str,
    db: Database,
    phase: Arc<AtomicU8>,
    progress: Arc<Mutex<Progress>>,
    events: watch::Sender<u64>,
) {
    // `None` while the database must be reopened.
    let mut db = Some(db);
    for id in 0.. {
        let now = phase.load(Ordering::SeqCst);
        if now == STOP {
            return;
        }
        let mut wait = now == DOWN;
        let mut poisoned = false;
        if db.is_none() {
            match driver.open_database(actor).await {
                Ok(again) => db = Some(again),
                Err(e) if e.kv_error().is_some_and(vfs_pool::KvError::is_transient) => {}
                Err(e) => progress.lock().unclear_errors.push(format!("reopen: {e}")),
            }
        }
        if let Some(open) = &db {
            let result = open
                .execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    &[Value::Integer(id), Value::from(format!("value {id}"))],
                )
                .await;
            let mut p = progress.lock();
            match result {
                Ok(_) => {
                    p.acknowledged.insert(id);
                    if now == BACK {
                        p.acknowledged_after_restart += 1;
                    }
                }
                Err(e) => {
                    p.failed.insert(id);
                    // A clear failure says the database must be reopened
                    // (checked first: a write-behind flush that failed on a
                    // transient error poisons too), or names a transient
                    // storage error.
                    let transient = e.kv_error().is_some_and(vfs_pool::KvError::is_transient);
                    if transient && phase.load(Ordering::SeqCst) == DOWN {
                        p.errors_while_down.push(e.to_string());
                    }
                    if e.is_poisoned() {
                        p.reopened += 1;
                        poisoned = true;
                    } else if !transient {
                        p.unclear_errors.push(e.to_string());
                    }
                }
            }
        }
        if poisoned && let Some(old) = db.take() {
            // Closing a poisoned database drops its stale cache; the reopen
            // (at the top of the loop) reads the store afresh.
            let _ = old.close().await;
        }
        wait |= db.is_none() || !progress.lock().unclear_errors.is_empty();
        events.send_modify(|n| *n += 1);
        if wait {
            // Nothing to gain from hammering a server that is down, a
            // database that cannot be reopened yet, or one that fails in a
            // way the test does not expect (reported at the end): wait for
            // the next event (at most 50 ms) instead of spinning.
            let mut rx = events.subscribe();
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }
}

/// Waits (bounded) until `done` holds for every actor's progress.
async fn wait_for(
    events: &watch::Sender<u64>,
    progress: &[Arc<Mutex<Progress>>],
    what: &str,
    done: impl Fn(&Progress) -> bool,
) {
    let mut rx = events.subscribe();
    let waited = tokio::time::timeout(
        Duration::from_mins(1),
        rx.wait_for(|_| progress.iter().all(|p| done(&p.lock()))),
    )
    .await;
    assert!(
        matches!(waited, Ok(Ok(_))),
        "timed out waiting for: {what}; progress: {:?}",
        progress
            .iter()
            .map(|p| p.lock().summary())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_recovers_from_a_server_crash_without_losing_acknowledged_rows() {
    let server = Arc::new(PgServer::start().expect("start PostgreSQL"));
    let url = server.url("postgres");
    let driver = Arc::new(
        EngineDriver::connect_with(&url, config(), options())
            .await
            .unwrap(),
    );
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let (events, _) = watch::channel(0u64);
    let mut progress = Vec::new();
    let mut writers = Vec::new();
    for actor in ACTORS {
        let db = driver.open_database(actor).await.unwrap();
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        let p = Arc::new(Mutex::new(Progress::default()));
        progress.push(Arc::clone(&p));
        writers.push(tokio::spawn(write_until_stopped(
            Arc::clone(&driver),
            actor,
            db,
            Arc::clone(&phase),
            p,
            events.clone(),
        )));
    }

    wait_for(&events, &progress, "20 rows per actor", |p| {
        p.acknowledged.len() >= 20
    })
    .await;
    phase.store(DOWN, Ordering::SeqCst);
    let stopping = Arc::clone(&server);
    tokio::task::spawn_blocking(move || stopping.stop_immediate())
        .await
        .unwrap()
        .expect("stop the server");
    wait_for(&events, &progress, "a clear error per actor", |p| {
        !p.errors_while_down.is_empty()
    })
    .await;

    let starting = Arc::clone(&server);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap()
        .expect("restart the server");
    phase.store(BACK, Ordering::SeqCst);
    events.send_modify(|n| *n += 1);
    wait_for(
        &events,
        &progress,
        "10 rows per actor after the restart",
        |p| p.acknowledged_after_restart >= 10,
    )
    .await;
    phase.store(STOP, Ordering::SeqCst);
    events.send_modify(|n| *n += 1);
    for writer in writers {
        writer.await.unwrap();
    }

    // The writers are done: take their records out of the locks.
    let progress: Vec<Progress> = progress
        .iter()
        .map(|p| std::mem::take(&mut *p.lock()))
        .collect();
    for (actor, p) in ACTORS.iter().zip(&progress) {
        eprintln!(
            "{actor}: {} acknowledged, {} failed, reopened {} times; first error while down: {:?}",
            p.acknowledged.len(),
            p.failed.len(),
            p.reopened,
            p.errors_while_down.first()
        );
        assert!(p.unclear_errors.is_empty(), "{actor}: {}", p.summary());
        let db = driver.open_database(actor).await.unwrap();
        let stored = ids(&db).await;
        assert!(
            stored.is_superset(&p.acknowledged),
            "{actor} lost acknowledged rows: {:?}",
            p.acknowledged.difference(&stored).collect::<Vec<_>>()
        );
        let possible: BTreeSet<i64> = p.acknowledged.union(&p.failed).copied().collect();
        assert!(
            stored.is_subset(&possible),
            "{actor} has rows never written"
        );
        integrity_ok(&db).await;
    }
    driver.shutdown().await;

    // A new driver (a host restart) sees the same.
    let driver = EngineDriver::connect(&url, config()).await.unwrap();
    for (actor, p) in ACTORS.iter().zip(&progress) {
        let db = driver.open_database(actor).await.unwrap();
        assert!(ids(&db).await.is_superset(&p.acknowledged));
        integrity_ok(&db).await;
    }
    driver.shutdown().await;
}

/// Store level: calls made while the server is down wait (bounded) for it.
/// A read retries until the server is back; a write that could not even
/// reach the server was never sent, so it is retried the same way; with a
/// budget too short for the outage, the call fails as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_an_outage_retry_within_their_budget() {
    use bytes::Bytes;
    use driver_engine::PgStorage;
    use vfs_pool::{KvError, KvStore};

    let server = Arc::new(PgServer::start().expect("start PostgreSQL"));
    let url = server.url("postgres");
    let patient = PgOptions {
        retry_attempts: 100,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(100),
        ..PgOptions::default()
    };
    let storage = PgStorage::connect_with(&url, patient).await.unwrap();
    let impatient = PgStorage::connect_with(&url, options()).await.unwrap();
    let store = Arc::new(storage.open_store("outage").await.unwrap());
    let key = Bytes::from_static(b"k");
    store
        .put_batch(&[(key.clone(), Bytes::from_static(b"before"))])
        .await
        .unwrap();
    let other = impatient.open_store("other").await.unwrap();

    let stopping = Arc::clone(&server);
    tokio::task::spawn_blocking(move || stopping.stop_immediate())
        .await
        .unwrap()
        .unwrap();
    let read = {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::spawn(async move { store.get_batch(&[key]).await })
    };
    let write = {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::spawn(async move {
            store
                .put_batch(&[(key, Bytes::from_static(b"during"))])
                .await
        })
    };
    // The short budget runs out while the server is down.
    let err = other
        .get_batch(std::slice::from_ref(&key))
        .await
        .unwrap_err();
    assert!(matches!(err, KvError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach PostgreSQL"), "{err}");
    // Both patient calls are retrying by now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while storage.stats().retries < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no retries seen");
        tokio::task::yield_now().await;
    }
    let starting = Arc::clone(&server);
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap()
        .unwrap();

    let read = read.await.unwrap().expect("the read rides out the outage");
    assert!(
        read == vec![Some(Bytes::from_static(b"before"))]
            || read == vec![Some(Bytes::from_static(b"during"))]
    );
    write
        .await
        .unwrap()
        .expect("the unsent write rides out the outage");
    assert_eq!(
        store.get_batch(std::slice::from_ref(&key)).await.unwrap(),
        vec![Some(Bytes::from_static(b"during"))]
    );
    // The impatient storage recovered by itself too.
    other
        .put_batch(&[(key.clone(), Bytes::from_static(b"after"))])
        .await
        .unwrap();
}
