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

/// `error` and all its sources on one line, as a reporter prints them.
pub fn report(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
