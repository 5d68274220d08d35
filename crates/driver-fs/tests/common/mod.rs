//! Shared set-up for the driver's integration tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;

use vfs_pool::PoolConfig;

/// A pool configuration for tests ([`vfs_pool::testing::config`]) whose
/// compiled-module cache is shared by all test binaries under the target
/// directory, so only the first test ever compiles SQLite.
pub fn config(actors_per_instance: usize) -> PoolConfig {
    vfs_pool::testing::config(
        actors_per_instance,
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache"),
    )
}
