//! Shared set-up of vfs-wasm's integration tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::sync::Arc;

use vfs_core::{KvStore, MemoryKv};
use vfs_wasm::{DbId, Instance, InstanceConfig, ModuleConfig, SqliteModule, Value};

/// The module, compiled once per test binary (or loaded from the cache that
/// every test binary shares under the target directory).
pub fn module() -> SqliteModule {
    let cache_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vfs-wasm-module-cache");
    SqliteModule::shared(&ModuleConfig {
        cache_dir: Some(cache_dir),
    })
    .expect("module loads")
}

pub fn instance_with(config: InstanceConfig) -> Instance {
    Instance::new(&module(), config).expect("instance")
}

pub fn instance() -> Instance {
    instance_with(InstanceConfig::default())
}

pub fn memory_kv() -> Arc<dyn KvStore> {
    Arc::new(MemoryKv::new())
}

/// The single integer column of every row `sql` returns.
pub fn ints(inst: &mut Instance, db: DbId, sql: &str) -> Vec<i64> {
    inst.query(db, sql, &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [Value::Integer(n)] => *n,
            other => panic!("{sql}: unexpected row {other:?}"),
        })
        .collect()
}

/// Asserts `PRAGMA integrity_check` says ok.
pub fn assert_integrity(inst: &mut Instance, db: DbId) {
    let rows = inst
        .query(db, "PRAGMA integrity_check", &[])
        .expect("integrity_check runs");
    assert_eq!(rows.rows, vec![vec![Value::from("ok")]]);
}
