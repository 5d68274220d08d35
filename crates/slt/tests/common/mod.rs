//! Shared helpers of the runner's tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};

use vfs_slt::{Engine, Error, RunReport};

/// A path under the workspace's vendored corpus, `tests/slt`.
pub fn corpus(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/slt")
        .join(relative)
}

/// A path under this crate's test data.
pub fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
}

/// Runs `paths` on `engine`, as the binary does.
pub async fn run(paths: &[PathBuf], engine: Engine) -> Result<RunReport, Error> {
    vfs_slt::run_paths(paths, engine, |_| {}).await
}
