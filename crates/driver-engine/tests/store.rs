//! Store-level behaviour of `PgStorage` against a real PostgreSQL server:
//! batch shape and limits, one statement per batch, fencing, actor
//! bookkeeping, migrations and connect errors.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use driver_engine::testing::{PASSWORD, fresh_database_url, shared_server};
use driver_engine::{Error, MAX_BATCH_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES, PgOptions, PgStorage};
use vfs_core::{KvError, KvStore};
use vfs_pool::ActorStorage;

use common::{admin, key};
use vfs_pool::testing::report;

fn page(i: u32, fill: u8) -> Bytes {
    let mut value = vec![fill; 4096];
    value[..4].copy_from_slice(&i.to_be_bytes());
    Bytes::from(value)
}

async fn storage() -> PgStorage {
    let url = fresh_database_url().await.expect("test database");
    PgStorage::connect(&url).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_order_shape_and_last_write_wins() {
    let storage = storage().await;
    let store = storage.open_store("a").await.unwrap();
    store
        .put_batch(&[
            (key(1), Bytes::from_static(b"one")),
            (key(2), Bytes::from_static(b"two")),
            (key(1), Bytes::from_static(b"uno")),
            (key(3), Bytes::new()),
        ])
        .await
        .unwrap();
    let got = store
        .get_batch(&[key(3), key(9), key(1), key(2), key(1)])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(Bytes::new()),
            None,
            Some(Bytes::from_static(b"uno")),
            Some(Bytes::from_static(b"two")),
            Some(Bytes::from_static(b"uno")),
        ]
    );
    store.delete_batch(&[key(1), key(7)]).await.unwrap();
    assert_eq!(
        store.get_batch(&[key(1), key(2)]).await.unwrap(),
        vec![None, Some(Bytes::from_static(b"two"))]
    );
    // Namespaces are per actor.
    let other = storage.open_store("b").await.unwrap();
    assert_eq!(other.get_batch(&[key(2)]).await.unwrap(), vec![None]);
    assert!(store.get_batch(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_thousands_of_pages_is_one_statement() {
    let storage = storage().await;
    let store = storage.open_store("big").await.unwrap();
    let entries: Vec<(Bytes, Bytes)> = (0..MAX_BATCH_KEYS as u32)
        .map(|i| (key(i), page(i, 0xAB)))
        .collect();
    let before = storage.stats();
    store.put_batch(&entries).await.unwrap();
    let keys: Vec<Bytes> = entries.iter().map(|(k, _)| k.clone()).collect();
    let got = store.get_batch(&keys).await.unwrap();
    store.delete_batch(&keys[..4000]).await.unwrap();
    let after = storage.stats();
    assert_eq!(after.put_batches - before.put_batches, 1);
    assert_eq!(after.get_batches - before.get_batches, 1);
    assert_eq!(after.delete_batches - before.delete_batches, 1);
    assert_eq!(after.largest_put, MAX_BATCH_KEYS as u64);
    assert!(
        got.iter()
            .zip(&entries)
            .all(|(g, (_, v))| g.as_ref() == Some(v))
    );
    let left = store.get_batch(&keys[3999..4001]).await.unwrap();
    assert_eq!(left, vec![None, Some(entries[4000].1.clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_before_it_is_sent() {
    let storage = storage().await;
    let store = storage.open_store("limits").await.unwrap();
    let before = storage.stats();
    let too_big = Bytes::from(vec![0u8; MAX_VALUE_BYTES + 1]);
    assert!(matches!(
        store.put_batch(&[(key(1), too_big)]).await,
        Err(KvError::ValueTooLarge { .. })
    ));
    let many: Vec<Bytes> = (0..=MAX_BATCH_KEYS as u32).map(key).collect();
    assert!(matches!(
        store.get_batch(&many).await,
        Err(KvError::BatchTooLarge { .. })
    ));
    assert!(matches!(
        store.delete_batch(&many).await,
        Err(KvError::BatchTooLarge { .. })
    ));
    let long_key = Bytes::from(vec![1u8; MAX_KEY_BYTES + 1]);
    let err = store
        .put_batch(&[(long_key, Bytes::from_static(b"v"))])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key of"), "{err}");
    assert_eq!(storage.stats(), before, "nothing may reach the server");
    // Bad actor ids are refused too.
    assert!(storage.open_store("").await.is_err());
    assert!(storage.open_store("nul\0id").await.is_err());
    // A value at the limit is fine.
    let max = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    store.put_batch(&[(key(1), max.clone())]).await.unwrap();
    assert_eq!(store.get_batch(&[key(1)]).await.unwrap(), vec![Some(max)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_owner_fences_the_first_for_every_call() {
    let url = fresh_database_url().await.unwrap();
    let host_a = PgStorage::connect(&url).await.unwrap();
    let host_b = PgStorage::connect(&url).await.unwrap();
    let a = host_a.open_store("actor").await.unwrap();
    a.put_batch(&[(key(1), page(1, 1))]).await.unwrap();
    let b = host_b.open_store("actor").await.unwrap();
    assert_eq!(b.generation(), a.generation() + 1);
    assert_eq!(
        host_a.generation("actor").await.unwrap(),
        Some(b.generation())
    );
    assert_eq!(
        b.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(page(1, 1))]
    );

    let put = a.put_batch(&[(key(1), page(1, 2))]).await.unwrap_err();
    assert!(matches!(put, KvError::Fenced { .. }), "{put}");
    assert!(!put.is_transient());
    assert!(matches!(
        a.get_batch(&[key(1)]).await,
        Err(KvError::Fenced { .. })
    ));
    assert!(matches!(
        a.delete_batch(&[key(1)]).await,
        Err(KvError::Fenced { .. })
    ));
    assert_eq!(host_a.stats().fenced, 3);
    assert_eq!(
        b.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(page(1, 1))]
    );
    b.put_batch(&[(key(2), page(2, 2))]).await.unwrap();
}

/// A stale owner writing in a tight loop while another host takes over:
/// every write it got acknowledged happened before the takeover, and none
/// after it; the new owner's view never changes under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_never_interleaves_with_the_stale_owner() {
    let url = fresh_database_url().await.unwrap();
    let host_a = PgStorage::connect(&url).await.unwrap();
    let host_b = PgStorage::connect(&url).await.unwrap();
    let a = Arc::new(host_a.open_store("race").await.unwrap());
    a.put_batch(&[(key(0), page(0, 0))]).await.unwrap();
    let writer = {
        let a = Arc::clone(&a);
        tokio::spawn(async move {
            let mut acknowledged = 0u32;
            for n in 1.. {
                let entries = [(key(0), page(n, 0)), (key(1), page(n, 1))];
                match a.put_batch(&entries).await {
                    Ok(()) => acknowledged = n,
                    Err(KvError::Fenced { .. }) => return acknowledged,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            unreachable!()
        })
    };
    // Let the writer get some acknowledged writes in first.
    while host_a.stats().put_batches < 20 {
        tokio::task::yield_now().await;
    }
    let b = host_b.open_store("race").await.unwrap();
    let seen = b.get_batch(&[key(0), key(1)]).await.unwrap();
    let last = writer.await.unwrap();
    assert!(last >= 1);
    assert_eq!(seen, vec![Some(page(last, 0)), Some(page(last, 1))]);
    assert_eq!(b.get_batch(&[key(0), key(1)]).await.unwrap(), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_list_actors() {
    let storage = storage().await;
    for actor in ["b", "a", "10", "1"] {
        let store = storage.open_store(actor).await.unwrap();
        store
            .put_batch(&[(key(0), Bytes::from_static(b"x"))])
            .await
            .unwrap();
    }
    // Opened but never written: no data, not listed.
    let _empty = storage.open_store("empty").await.unwrap();
    assert_eq!(storage.list_actors().await.unwrap(), ["1", "10", "a", "b"]);

    let before = storage.open_store("1").await.unwrap();
    storage.delete_actor("1").await.unwrap();
    assert_eq!(storage.list_actors().await.unwrap(), ["10", "a", "b"]);
    // Deleting fences the owner, so it cannot write the actor back.
    assert!(matches!(
        before
            .put_batch(&[(key(0), Bytes::from_static(b"y"))])
            .await,
        Err(KvError::Fenced { .. })
    ));
    // The generation never goes back, and the actor starts empty.
    let again = storage.open_store("1").await.unwrap();
    assert!(again.generation() > before.generation());
    assert_eq!(again.get_batch(&[key(0)]).await.unwrap(), vec![None]);
    let ten = storage.open_store("10").await.unwrap();
    assert_eq!(
        ten.get_batch(&[key(0)]).await.unwrap(),
        vec![Some(Bytes::from_static(b"x"))]
    );
    storage.delete_actor("never-seen").await.unwrap();

    storage.close().await;
    let closed = ten.get_batch(&[key(0)]).await.unwrap_err();
    assert!(closed.to_string().contains("closed"), "{closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_connecting_at_once_migrate_exactly_once() {
    let url = fresh_database_url().await.unwrap();
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStorage::connect(&url).await })
        })
        .collect();
    for connect in connects {
        connect.await.unwrap().expect("every host connects");
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT version FROM vfs_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let every: Vec<i32> = (1..=driver_engine::SCHEMA_VERSION).collect();
    assert_eq!(versions, every);

    // A schema from the future is refused, not written to.
    client
        .execute(
            "INSERT INTO vfs_schema_migrations (version, description) VALUES (99, 'future')",
            &[],
        )
        .await
        .unwrap();
    match PgStorage::connect(&url).await {
        Err(Error::SchemaTooNew { found: 99, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connect_inputs_fail_at_connect_with_clear_errors() {
    let not_a_url = PgStorage::connect("this is not a url").await.unwrap_err();
    assert!(matches!(not_a_url, Error::InvalidUrl { .. }), "{not_a_url}");
    let bad_scheme = PgStorage::connect("postgres://127.0.0.1:notaport/db")
        .await
        .unwrap_err();
    assert!(
        matches!(bad_scheme, Error::InvalidUrl { .. }),
        "{bad_scheme}"
    );

    // Nothing listens on a port we just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = PgStorage::connect(&format!("postgres://u:p@127.0.0.1:{port}/db"))
        .await
        .unwrap_err();
    assert!(matches!(down, Error::Connect { .. }), "{down}");
    assert!(down.to_string().contains(&port.to_string()), "{down}");

    let options = PgOptions {
        max_connections: 0,
        ..PgOptions::default()
    };
    assert!(matches!(
        PgStorage::connect_with("postgres://u@localhost/db", options).await,
        Err(Error::InvalidOption(_))
    ));

    // These need our own server (we know its password).
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        return;
    }
    let server = shared_server().unwrap();
    let wrong_password = format!(
        "postgres://postgres:not-{PASSWORD}@127.0.0.1:{}/postgres",
        server.port()
    );
    let err = PgStorage::connect(&wrong_password).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(
        report(&err).contains("password authentication failed"),
        "{err}"
    );
    let err = PgStorage::connect(&server.url("no_such_database"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(report(&err).contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_outlives_the_storage_that_wrote_it() {
    let url = fresh_database_url().await.unwrap();
    let mut model = BTreeMap::new();
    {
        let storage = PgStorage::connect(&url).await.unwrap();
        let store = storage.open_store("durable").await.unwrap();
        let entries: Vec<(Bytes, Bytes)> = (0..300).map(|i| (key(i), page(i, 3))).collect();
        store.put_batch(&entries).await.unwrap();
        model.extend(entries);
        storage.close().await;
    }
    let storage = PgStorage::connect(&url).await.unwrap();
    let store = storage.open_store("durable").await.unwrap();
    let keys: Vec<Bytes> = model.keys().cloned().collect();
    let got = store.get_batch(&keys).await.unwrap();
    assert!(
        got.iter()
            .zip(model.values())
            .all(|(g, v)| g.as_ref() == Some(v))
    );
}

/// Polls (bounded) for the backend of a statement waiting on a lock.
async fn blocked_backend(monitor: &tokio_postgres::Client) -> i32 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let row = monitor
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%INSERT INTO vfs_pages%'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write never blocked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_off_mid_call_is_unavailable_and_safe_to_repeat() {
    let url = fresh_database_url().await.unwrap();
    let storage = PgStorage::connect(&url).await.unwrap();
    let store = Arc::new(storage.open_store("cut").await.unwrap());
    // Hold the actor's row so the write blocks inside the server.
    let holder = admin(&url).await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM vfs_actors WHERE actor_id = 'cut' FOR UPDATE")
        .await
        .unwrap();
    let write = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.put_batch(&[(key(1), page(1, 9))]).await })
    };
    let monitor = admin(&url).await;
    let pid = blocked_backend(&monitor).await;
    monitor
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = write.await.unwrap().unwrap_err();
    assert!(matches!(err, KvError::Unavailable { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("outcome unknown"), "{err}");
    holder.batch_execute("ROLLBACK").await.unwrap();

    // Repeating it is safe, and the pool replaced the dead connection.
    store.put_batch(&[(key(1), page(1, 9))]).await.unwrap();
    assert_eq!(
        store.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(page(1, 9))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ride_out_lost_connections_and_the_pool_reconnects() {
    let url = fresh_database_url().await.unwrap();
    let options = PgOptions {
        max_connections: 1,
        ..PgOptions::default()
    };
    let storage = PgStorage::connect_with(&url, options).await.unwrap();
    let store = storage.open_store("lost").await.unwrap();
    store.put_batch(&[(key(1), page(1, 1))]).await.unwrap();
    assert_eq!(storage.open_connections(), 1);

    let monitor = admin(&url).await;
    let killed = monitor
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'driver-engine'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1);

    assert_eq!(
        store.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(page(1, 1))]
    );
    store.put_batch(&[(key(2), page(2, 2))]).await.unwrap();
    assert_eq!(
        store.get_batch(&[key(2)]).await.unwrap(),
        vec![Some(page(2, 2))]
    );
    assert_eq!(storage.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_an_answer_times_out_as_unavailable() {
    let url = fresh_database_url().await.unwrap();
    let options = PgOptions {
        statement_timeout: std::time::Duration::from_millis(300),
        ..PgOptions::default()
    };
    let storage = PgStorage::connect_with(&url, options).await.unwrap();
    let store = storage.open_store("slow").await.unwrap();
    let holder = admin(&url).await;
    holder
        .batch_execute("BEGIN; SELECT 1 FROM vfs_actors WHERE actor_id = 'slow' FOR UPDATE")
        .await
        .unwrap();
    let err = store.put_batch(&[(key(1), page(1, 4))]).await.unwrap_err();
    assert!(matches!(err, KvError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    // Reads take no lock: they still work while the row is held.
    assert_eq!(store.get_batch(&[key(2)]).await.unwrap(), vec![None]);
    holder.batch_execute("ROLLBACK").await.unwrap();
    store.put_batch(&[(key(1), page(1, 4))]).await.unwrap();
    assert_eq!(
        store.get_batch(&[key(1)]).await.unwrap(),
        vec![Some(page(1, 4))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_over_the_same_keys_do_not_deadlock() {
    let storage = storage().await;
    let store = Arc::new(storage.open_store("busy").await.unwrap());
    let tasks: Vec<_> = (0..4u8)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for round in 0..25u8 {
                    let mut entries: Vec<(Bytes, Bytes)> =
                        (0..64).map(|i| (key(i), page(i, task ^ round))).collect();
                    if task % 2 == 1 {
                        entries.reverse();
                    }
                    store.put_batch(&entries).await?;
                }
                Ok::<_, KvError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("no batch may fail");
    }
    // Each batch is atomic: all 64 pages carry the fill of one batch.
    let keys: Vec<Bytes> = (0..64).map(key).collect();
    let got = store.get_batch(&keys).await.unwrap();
    let fill = got[0].as_ref().unwrap()[4];
    assert!(
        got.iter()
            .all(|v| v.as_ref().unwrap()[4..].iter().all(|b| *b == fill))
    );
}
