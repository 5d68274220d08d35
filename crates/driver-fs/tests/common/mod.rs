//! Shared set-up for the driver's integration tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::time::Duration;

use vfs_pool::{Database, PoolConfig, Value};

/// A pool configuration for tests: the compiled-module cache shared by all
/// test binaries under the target directory (so only the first test ever
/// compiles SQLite), and no idle destroy during a test.
pub fn config(actors_per_instance: usize) -> PoolConfig {
    PoolConfig {
        actors_per_instance,
        idle_destroy: Duration::from_hours(1),
        module_cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache")),
        ..PoolConfig::default()
    }
}

/// `PRAGMA integrity_check` of the database, as its single text result.
pub async fn integrity(db: &Database) -> String {
    let rows = db.query("PRAGMA integrity_check", &[]).await.unwrap();
    match rows.rows.as_slice() {
        [row] => match row.as_slice() {
            [Value::Text(text)] => text.clone(),
            other => panic!("unexpected integrity_check row {other:?}"),
        },
        other => panic!("unexpected integrity_check result {other:?}"),
    }
}

/// The single integer a query returns.
pub async fn scalar(db: &Database, sql: &str) -> i64 {
    let rows = db.query(sql, &[]).await.unwrap();
    match rows.rows.as_slice() {
        [row] => match row.as_slice() {
            [Value::Integer(n)] => *n,
            other => panic!("{sql}: unexpected row {other:?}"),
        },
        other => panic!("{sql}: unexpected result {other:?}"),
    }
}
