//! Shared set-up for the pool's integration tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::sync::Arc;

use vfs_pool::{KvStore, MemoryKv, PoolConfig};

/// [`vfs_pool::testing::config`] with the module cache shared by all test
/// binaries under the target directory.
pub fn config(actors_per_instance: usize) -> PoolConfig {
    vfs_pool::testing::config(
        actors_per_instance,
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache"),
    )
}

/// A fresh in-memory store.
pub fn kv() -> Arc<dyn KvStore> {
    Arc::new(MemoryKv::new())
}
