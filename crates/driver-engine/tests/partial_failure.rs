//! The PostgreSQL driver under partial failure: statements delayed past
//! their caller's patience, answers lost after the server applied them,
//! clients that vanish mid-statement, and a second host taking over. Every
//! fault is driven by a [`FaultProxy`] that the test controls.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use driver_engine::testing::{FaultProxy, fresh_database_url, shared_server};
use driver_engine::{EngineDriver, PgOptions, PgStorage};
use vfs_core::{KvError, KvStore};
use vfs_pool::{ActorDriver, ActorStorage, PoolConfig, Value};

use common::{admin, count, ids, integrity_ok, key, wait_until};

fn value(text: &str) -> Bytes {
    Bytes::from(text.as_bytes().to_vec())
}

/// Short timeouts, so that faults show quickly.
fn options() -> PgOptions {
    PgOptions {
        statement_timeout: Duration::from_millis(500),
        lease_duration: Duration::from_secs(3),
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(100),
        ..PgOptions::default()
    }
}

/// A fresh database, and a proxy in front of its server.
async fn setup() -> (String, FaultProxy) {
    let url = fresh_database_url().await.unwrap();
    let proxy = FaultProxy::start(shared_server().unwrap().port())
        .await
        .unwrap();
    (url, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reported_failed_never_lands_after_a_later_one() {
    let (url, proxy) = setup().await;
    let storage = PgStorage::connect_with(&proxy.url(&url), options())
        .await
        .unwrap();
    let store = storage.open_store("late").await.unwrap();
    store.put_batch(&[(key(1), value("one"))]).await.unwrap();

    // "two" leaves on a connection that delivers it 2 s late.
    proxy.delay_open_connections(Duration::from_secs(2), 0);
    let err = store
        .put_batch(&[(key(1), value("two"))])
        .await
        .unwrap_err();
    assert!(matches!(err, KvError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("not applied"), "{err}");

    store.put_batch(&[(key(1), value("three"))]).await.unwrap();
    // Give the late "two" every chance to arrive.
    assert!(proxy.settled(Duration::from_secs(10)).await);
    assert_eq!(
        store.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(value("three"))]
    );
    // And a reader on another host agrees.
    let other = PgStorage::connect_with(&url, options()).await.unwrap();
    let fresh = other.open_store("late").await.unwrap();
    assert_eq!(
        fresh.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(value("three"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_opens_and_deletes_change_nothing() {
    let (url, proxy) = setup().await;
    let options = PgOptions {
        max_connections: 1,
        ..options()
    };
    let storage = PgStorage::connect_with(&proxy.url(&url), options)
        .await
        .unwrap();

    // An open whose bump arrives late: its first statement (reading the
    // generation) goes through, the bump is delayed past the timeout, the
    // open is repeated on a new connection, then the late bump lands.
    drop(storage.open_store("opened").await.unwrap());
    proxy.delay_open_connections(Duration::from_secs(2), 1);
    let store = storage.open_store("opened").await.unwrap();
    let generation = store.generation();
    assert!(proxy.settled(Duration::from_secs(10)).await);
    assert_eq!(
        storage.generation("opened").await.unwrap(),
        Some(generation),
        "the late bump must not fence the open that was acknowledged"
    );
    store.put_batch(&[(key(1), value("kept"))]).await.unwrap();
    drop(store);

    // A delete whose statement arrives late, after the actor was opened
    // again and written.
    let victim = storage.open_store("victim").await.unwrap();
    victim.put_batch(&[(key(1), value("old"))]).await.unwrap();
    drop(victim);
    proxy.delay_open_connections(Duration::from_secs(2), 1);
    storage.delete_actor("victim").await.unwrap();
    let reborn = storage.open_store("victim").await.unwrap();
    reborn.put_batch(&[(key(2), value("new"))]).await.unwrap();
    assert!(proxy.settled(Duration::from_secs(10)).await);
    assert_eq!(
        reborn.get_batch(&[key(1), key(2)]).await.unwrap(),
        vec![None, Some(value("new"))],
        "the late delete must not erase the actor created after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_settled_not_guessed() {
    let (url, proxy) = setup().await;
    let options = PgOptions {
        max_connections: 2,
        ..options()
    };
    let driver =
        EngineDriver::connect_with(&proxy.url(&url), PoolConfig::default(), options.clone())
            .await
            .unwrap();
    let db = driver.open_database("answer").await.unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for n in 0..10 {
        db.execute("INSERT INTO t VALUES (?, 'x')", &[Value::Integer(n)])
            .await
            .unwrap();
    }
    // The next commit reaches the server and lands; its answer never
    // comes back.
    proxy.hold_replies_of_open_connections();
    let landed = db
        .execute("INSERT INTO t VALUES (10, 'lost answer')", &[])
        .await;
    assert!(
        landed.is_ok(),
        "a commit that landed is reported as such: {landed:?}"
    );
    for n in 11..20 {
        db.execute("INSERT INTO t VALUES (?, 'x')", &[Value::Integer(n)])
            .await
            .unwrap();
    }
    assert_eq!(count(&db).await, 20);
    integrity_ok(&db).await;
    driver.shutdown().await;

    let again = EngineDriver::connect_with(&url, PoolConfig::default(), options)
        .await
        .unwrap();
    let db = again.open_database("answer").await.unwrap();
    assert_eq!(count(&db).await, 20);
    integrity_ok(&db).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_host_stops_serving_cached_reads() {
    let url = fresh_database_url().await.unwrap();
    let host_a = EngineDriver::connect_with(&url, PoolConfig::default(), options())
        .await
        .unwrap();
    let host_b = EngineDriver::connect_with(&url, PoolConfig::default(), options())
        .await
        .unwrap();
    let on_a = host_a.open_database("stale").await.unwrap();
    on_a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'old')")
        .await
        .unwrap();
    // Host A has the row in its page cache.
    let read = on_a
        .query("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(read.rows, vec![vec![Value::Text("old".into())]]);

    // Host B takes over (host A never closes) and writes.
    let started = Instant::now();
    let on_b = host_b.open_database("stale").await.unwrap();
    let takeover = started.elapsed();
    on_b.exec("UPDATE t SET v = 'new' WHERE id = 1")
        .await
        .unwrap();
    for n in 2..22 {
        on_b.execute("INSERT INTO t VALUES (?, 'b')", &[Value::Integer(n)])
            .await
            .unwrap();
    }
    println!("takeover from a live host took {takeover:?}");
    assert!(
        takeover < options().lease_duration + Duration::from_secs(5),
        "took {takeover:?}"
    );

    // Host A returns no data any more, cached or not.
    let err = on_a
        .query("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(on_a.query("SELECT count(*) FROM t", &[]).await.is_err());
    assert_eq!(count(&on_b).await, 21);
    host_a.shutdown().await;
    host_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_actor_is_taken_over_without_waiting_for_its_lease() {
    let url = fresh_database_url().await.unwrap();
    let options = PgOptions {
        lease_duration: Duration::from_mins(1),
        ..options()
    };
    let storage = PgStorage::connect_with(&url, options).await.unwrap();
    let first = storage.open_store("handed").await.unwrap();
    first.put_batch(&[(key(1), value("a"))]).await.unwrap();
    drop(first);
    // The release is sent when the store is dropped; once it is in, the
    // next owner does not wait the minute.
    let monitor = admin(&url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let released: bool = monitor
            .query_one(
                "SELECT lease_until IS NULL FROM vfs_actors WHERE actor_id = 'handed'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if released {
            break;
        }
        assert!(Instant::now() < deadline, "the lease was never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let second = storage.open_store("handed").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        second.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(value("a"))]
    );
}

/// Host A's write runs on the server without its commit, then host A
/// vanishes: the server keeps the transaction, and the actor's row lock,
/// while the proxy keeps the TCP connection up. Host B's takeover must end
/// that backend once A's lease is over. `query` is added to each host's URL.
async fn take_over_from_a_vanished_host(query_a: &str, query_b: &str) {
    let (url, proxy) = setup().await;
    let options = options();
    let host_a = PgStorage::connect_with(&format!("{}{query_a}", proxy.url(&url)), options.clone())
        .await
        .unwrap();
    let store_a = Arc::new(host_a.open_store("vanish").await.unwrap());
    store_a.put_batch(&[(key(1), value("a1"))]).await.unwrap();

    proxy.vanish_at_next_sync();
    let write = {
        let store = Arc::clone(&store_a);
        tokio::spawn(async move { store.put_batch(&[(key(2), value("a2"))]).await })
    };
    let monitor = admin(&url).await;
    wait_until(
        "the write takes the row lock",
        Duration::from_secs(30),
        async || {
            monitor
                .query_opt(
                    "SELECT 1 FROM vfs_actors a
                     JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = a.xmax
                     WHERE a.actor_id = 'vanish' AND l.granted",
                    &[],
                )
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;

    let host_b = PgStorage::connect_with(&format!("{url}{query_b}"), options.clone())
        .await
        .unwrap();
    let started = Instant::now();
    let opened = host_b.open_store("vanish").await;
    let takeover = started.elapsed();
    let store_b = opened.unwrap_or_else(|e| {
        panic!("the takeover from a vanished host failed after {takeover:?}: {e}")
    });
    println!("takeover from a vanished host took {takeover:?}");
    assert!(
        takeover < options.lease_duration + Duration::from_secs(8),
        "took {takeover:?}"
    );
    store_b.put_batch(&[(key(3), value("b"))]).await.unwrap();
    assert_eq!(
        store_b.get_batch(&[key(1), key(2), key(3)]).await.unwrap(),
        vec![Some(value("a1")), None, Some(value("b"))]
    );
    // Host A's write was never acknowledged, and host A is refused.
    assert!(write.await.unwrap().is_err());
    proxy.resume();
    proxy.cut();
    let err = store_a.get_batch(&[key(1)]).await.unwrap_err();
    assert!(
        matches!(err, KvError::Fenced { .. } | KvError::Unavailable { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_ends_the_stale_backend_of_a_vanished_host() {
    take_over_from_a_vanished_host("", "").await;
}

/// Hosts commonly name themselves with `application_name`: the stale
/// backend is recognised all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_ends_a_stale_backend_of_a_host_with_another_application_name() {
    take_over_from_a_vanished_host("?application_name=host-a", "?application_name=host-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_network_fails_a_statement_within_its_budget() {
    let (url, proxy) = setup().await;
    let budget = Duration::from_secs(2);
    let config = PoolConfig {
        statement_timeout: Some(budget),
        ..PoolConfig::default()
    };
    // Long store timeouts and lease: the call's budget is what must end it.
    let patient = PgOptions {
        statement_timeout: Duration::from_secs(30),
        lease_duration: Duration::from_secs(30),
        ..options()
    };
    let driver = EngineDriver::connect_with(&proxy.url(&url), config, patient)
        .await
        .unwrap();
    let db = driver.open_database("stalled").await.unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    db.exec(
        "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 200) \
         INSERT INTO t SELECT x, randomblob(3000) FROM s",
    )
    .await
    .unwrap();
    proxy.stall();
    let started = Instant::now();
    let write = db
        .execute("INSERT INTO t VALUES (1000, 'x')", &[])
        .await
        .unwrap_err();
    let write_took = started.elapsed();
    println!("a write under a stalled network failed after {write_took:?}: {write}");
    assert!(
        write_took < budget + Duration::from_secs(4),
        "{write_took:?}"
    );
    assert!(
        ["commit", "read of page"]
            .iter()
            .any(|op| write.to_string().contains(op)),
        "{write}"
    );
    driver.shutdown().await;
    proxy.resume();
    proxy.cut();

    // A read of pages not in the cache, on a fresh host.
    let driver = EngineDriver::connect_with(
        &proxy.url(&url),
        PoolConfig {
            statement_timeout: Some(budget),
            ..PoolConfig::default()
        },
        PgOptions {
            statement_timeout: Duration::from_secs(30),
            lease_duration: Duration::from_secs(30),
            ..options()
        },
    )
    .await
    .unwrap();
    let db = driver.open_database("stalled").await.unwrap();
    proxy.stall();
    let started = Instant::now();
    let read = db
        .query("SELECT sum(length(v)) FROM t", &[])
        .await
        .unwrap_err();
    let read_took = started.elapsed();
    println!("a read under a stalled network failed after {read_took:?}: {read}");
    assert!(read_took < budget + Duration::from_secs(4), "{read_took:?}");
    assert!(read.to_string().contains("read"), "{read}");
    proxy.resume();
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_ids_have_one_limit_and_short_errors() {
    let url = fresh_database_url().await.unwrap();
    let driver = EngineDriver::connect_with(&url, PoolConfig::default(), options())
        .await
        .unwrap();
    let longest = "a".repeat(vfs_pool::MAX_ACTOR_ID_LEN);
    let db = driver.open_database(&longest).await.unwrap();
    db.exec("CREATE TABLE t (x)").await.unwrap();
    driver.close_actor(&longest).await.unwrap();
    assert_eq!(driver.list_actors().await.unwrap(), vec![longest.clone()]);

    let huge = "b".repeat(100_000);
    let Err(err) = driver.storage().open_actor(&huge).await else {
        panic!("a 100,000-byte id was accepted");
    };
    assert!(
        err.to_string().len() < 300,
        "{} bytes",
        err.to_string().len()
    );
    let err = driver.open_database(&huge).await.unwrap_err();
    assert!(
        err.to_string().len() < 300,
        "{} bytes",
        err.to_string().len()
    );
    let err = driver.delete_actor(&huge).await.unwrap_err();
    assert!(
        matches!(err, vfs_pool::Error::InvalidActorId { .. }),
        "{err}"
    );
    let err = driver.delete_actor("").await.unwrap_err();
    assert!(
        matches!(err, vfs_pool::Error::InvalidActorId { .. }),
        "{err}"
    );
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_write_is_settled_before_the_next_call() {
    let (url, proxy) = setup().await;
    let storage = PgStorage::connect_with(&proxy.url(&url), options())
        .await
        .unwrap();
    let store = storage.open_store("unsettled").await.unwrap();
    store.put_batch(&[(key(1), value("one"))]).await.unwrap();

    // The write lands, its answer is lost, and the server cannot be reached
    // again to check: the caller hears that the outcome is unknown.
    proxy.hold_replies_of_open_connections();
    proxy.refuse(true);
    let err = store
        .put_batch(&[(key(1), value("two"))])
        .await
        .unwrap_err();
    assert!(matches!(err, KvError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("outcome unknown"), "{err}");

    // Until it is settled, nothing is read or written on top of a guess.
    let err = store.get_batch(&[key(1)]).await.unwrap_err();
    assert!(err.to_string().contains("still unknown"), "{err}");

    // Back online: the next call settles it. It had landed, which the
    // caller was not told, so that call says cached state is stale.
    proxy.refuse(false);
    proxy.cut();
    let err = store.get_batch(&[key(1)]).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err}");
    // Settled: the store goes on, and the value is the one that landed.
    assert_eq!(
        store.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(value("two"))]
    );
    store.put_batch(&[(key(1), value("three"))]).await.unwrap();
    assert_eq!(
        store.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(value("three"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_never_overwrites_acknowledged_rows() {
    let (url, proxy) = setup().await;
    let driver = EngineDriver::connect_with(&proxy.url(&url), PoolConfig::default(), options())
        .await
        .unwrap();
    let mut db = driver.open_database("late-sql").await.unwrap();
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        db.execute("INSERT INTO t VALUES (?, 'x')", &[Value::Integer(n)])
            .await
            .unwrap();
        acknowledged.push(n);
    }
    // Every connection open now delivers 2 s late: the next commit leaves
    // on one of them and times out, which poisons the database (its write
    // may still land); the caller reopens it, which reads the store afresh
    // on fresh connections, and commits again. The original then arrives.
    proxy.delay_open_connections(Duration::from_secs(2), 0);
    for n in 10..40 {
        match db
            .execute("INSERT INTO t VALUES (?, 'y')", &[Value::Integer(n)])
            .await
        {
            Ok(_) => acknowledged.push(n),
            Err(e) if e.is_poisoned() => {
                let _ = driver.close_actor("late-sql").await;
                db = driver.open_database("late-sql").await.unwrap();
            }
            Err(_) => {}
        }
    }
    // Nothing rewrites those pages afterwards: whatever lands late stays.
    assert!(proxy.settled(Duration::from_secs(20)).await);
    assert!(
        acknowledged.len() > 10,
        "no commit got through: {acknowledged:?}"
    );
    driver.shutdown().await;

    let again = EngineDriver::connect_with(&url, PoolConfig::default(), options())
        .await
        .unwrap();
    let db = again.open_database("late-sql").await.unwrap();
    let stored = ids(&db).await;
    for n in &acknowledged {
        assert!(
            stored.contains(n),
            "acknowledged row {n} is gone: {stored:?}"
        );
    }
    integrity_ok(&db).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_many_stores_renew_in_one_statement_and_a_busy_row_holds_none_up() {
    let url = fresh_database_url().await.unwrap();
    let options = PgOptions {
        lease_duration: Duration::from_secs(1),
        ..options()
    };
    let storage = PgStorage::connect_with(&url, options).await.unwrap();
    let mut stores = Vec::new();
    for n in 0..50 {
        let store = storage.open_store(&format!("idle-{n}")).await.unwrap();
        store.put_batch(&[(key(1), value("v"))]).await.unwrap();
        stores.push(store);
    }
    // One actor's row is held by another session for three lease periods.
    let holder = admin(&url).await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM vfs_actors WHERE actor_id = 'idle-0' FOR UPDATE")
        .await
        .unwrap();
    let before = storage.stats().lease_renewals;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rounds = storage.stats().lease_renewals - before;
    assert!(
        (4..=12).contains(&rounds),
        "{rounds} renewal statements for 50 stores in 3 s"
    );
    // Every other store kept its lease.
    for store in &stores[1..] {
        store.check_owner().unwrap();
        assert_eq!(
            store.get_batch(&[key(1)]).await.unwrap(),
            vec![Some(value("v"))]
        );
    }
    // The held one could not renew and is refused until it can.
    let err = stores[0].check_owner().unwrap_err();
    assert!(err.to_string().contains("lease"), "{err}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stores[0].check_owner().is_err() {
        assert!(Instant::now() < deadline, "the lease never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stores[0].put_batch(&[(key(2), value("w"))]).await.unwrap();
}

// Attacks found by a second engineer trying to break the guarantees above.

/// Polls `future` with `vfs_core::call_deadline` returning `deadline`, as a
/// database call with a statement budget does.
struct WithDeadline<F> {
    deadline: Instant,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for WithDeadline<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let deadline = self.deadline;
        let inner = self.inner.as_mut();
        vfs_core::with_deadline(deadline, || inner.poll(cx))
    }
}

fn with_deadline<F: Future>(deadline: Instant, future: F) -> WithDeadline<F> {
    WithDeadline {
        deadline,
        inner: Box::pin(future),
    }
}

/// An owner that writes all the time, on a healthy server, keeps its lease:
/// its own writes hold the actor row most of the time, and a renewal that
/// finds the row held must not make the owner lose the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_writer_keeps_its_lease_on_a_healthy_server() {
    let url = fresh_database_url().await.unwrap();
    let options = PgOptions {
        lease_duration: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(5),
        ..options()
    };
    let storage = PgStorage::connect_with(&url, options).await.unwrap();
    let store = storage.open_store("busy").await.unwrap();
    let entries: Vec<(Bytes, Bytes)> = (0..512)
        .map(|i| (key(i), Bytes::from(vec![i as u8; 8192])))
        .collect();
    let started = Instant::now();
    let mut writes = 0;
    while started.elapsed() < Duration::from_secs(5) {
        if let Err(e) = store.put_batch(&entries).await {
            panic!(
                "write {writes} of a busy owner refused after {:?} on a healthy server: {e}",
                started.elapsed()
            );
        }
        writes += 1;
    }
    println!("{writes} writes, {:?}", storage.stats());
}

/// `Ok` means applied and an error means nothing was applied (unless the
/// error says the outcome is unknown). A write that landed, whose answer was
/// lost, and whose actor was then taken over before it was settled, must not
/// be reported as a plain failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_landed_before_a_takeover_is_not_reported_as_not_applied() {
    let (url, proxy) = setup().await;
    let options_a = PgOptions {
        max_connections: 1,
        statement_timeout: Duration::from_secs(2),
        ..options()
    };
    let host_a = PgStorage::connect_with(&proxy.url(&url), options_a)
        .await
        .unwrap();
    let host_b = PgStorage::connect_with(&url, options()).await.unwrap();
    let store_a = Arc::new(host_a.open_store("landed").await.unwrap());
    store_a.put_batch(&[(key(1), value("one"))]).await.unwrap();

    // The write reaches the server and lands; its answer is held.
    proxy.hold_replies_of_open_connections();
    let write = {
        let store = Arc::clone(&store_a);
        tokio::spawn(async move { store.put_batch(&[(key(1), value("two"))]).await })
    };
    let monitor = admin(&url).await;
    wait_until("the write lands", Duration::from_secs(10), async || {
        let row = monitor
            .query_one(
                "SELECT p.value FROM vfs_pages p JOIN vfs_actors a ON a.id = p.actor
                 WHERE a.actor_id = 'landed' AND p.key = $1",
                &[&&key(1)[..]],
            )
            .await
            .unwrap();
        row.get::<_, Vec<u8>>(0) == b"two"
    })
    .await;
    // Host B takes the actor over before A has settled its write.
    let generation = host_a.generation("landed").await.unwrap();
    let open_b = {
        let host_b = host_b.clone();
        tokio::spawn(async move { host_b.open_store("landed").await })
    };
    wait_until(
        "host B bumps the generation",
        Duration::from_secs(10),
        async || host_b.generation("landed").await.unwrap() != generation,
    )
    .await;

    let outcome = write.await.unwrap();
    let store_b = open_b.await.unwrap().unwrap();
    let stored = store_b.get_batch(&[key(1)]).await.unwrap();
    assert_eq!(stored, vec![Some(value("two"))], "the write did land");
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_outcome_unknown() || e.to_string().contains("outcome unknown") => {}
        Err(e) => panic!("a write that landed is reported as failed: {e:?}"),
    }
}

/// The call's deadline (the SQL statement's budget) bounds a store write,
/// settling included, whatever the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_stalled_network_ends_by_its_call_deadline() {
    let (url, proxy) = setup().await;
    let options = PgOptions {
        statement_timeout: Duration::from_secs(30),
        lease_duration: Duration::from_mins(1),
        ..options()
    };
    let storage = PgStorage::connect_with(&proxy.url(&url), options)
        .await
        .unwrap();
    let store = storage.open_store("budget").await.unwrap();
    store.put_batch(&[(key(1), value("one"))]).await.unwrap();
    proxy.stall();
    let budget = Duration::from_secs(2);
    let started = Instant::now();
    let result = with_deadline(started + budget, store.put_batch(&[(key(1), value("two"))])).await;
    let took = started.elapsed();
    proxy.resume();
    assert!(result.is_err());
    assert!(
        took < budget + Duration::from_secs(4),
        "a write with a {budget:?} budget took {took:?}: {result:?}"
    );
}
