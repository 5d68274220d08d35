//! Shared helpers of the PostgreSQL driver's integration tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vfs_pool::testing::{integrity, scalar};
use vfs_pool::{Database, Value};

/// The key of page `i`.
pub fn key(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

/// A plain connection to `url`, outside the driver (to watch or hold rows).
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Asserts `PRAGMA integrity_check` says ok.
pub async fn integrity_ok(db: &Database) {
    assert_eq!(integrity(db).await, "ok");
}

/// Rows of table `t`.
pub async fn count(db: &Database) -> i64 {
    scalar(db, "SELECT count(*) FROM t").await
}

/// The ids in table `t`.
pub async fn ids(db: &Database) -> BTreeSet<i64> {
    db.query("SELECT id FROM t", &[])
        .await
        .unwrap()
        .rows
        .iter()
        .map(|row| match row[0] {
            Value::Integer(id) => id,
            ref other => panic!("id {other:?}"),
        })
        .collect()
}

/// Polls `done` every 10 ms until it holds, failing the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
