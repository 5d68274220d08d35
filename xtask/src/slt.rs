//! `cargo xtask slt`: SQLite's sqllogictest corpus through the whole stack.
//!
//! The runner is the `vfs-slt` crate (`crates/slt`); xtask only builds and
//! starts it, since xtask itself must build before the system packages that
//! SQLite's wasm build needs are installed. With no paths it runs all of
//! the vendored corpus, `tests/slt`.
//!
//! `cargo xtask ci` runs the whole corpus too, on the pool engine, after
//! the test step: about a minute on a 2-core machine (BENCHMARKS.md), under
//! the 3 minutes past which CI would run only a fixed part of it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::{Shell, cmd};

use crate::deps;

/// Flags of `cargo xtask slt`.
#[derive(Debug, Args)]
pub struct SltArgs {
    /// Scripts, or directories searched for `.test` files. Default: all of
    /// the vendored corpus, `tests/slt`.
    pub paths: Vec<PathBuf>,
    /// `pool` (SQLite in wasm through driver-fs and the pool), `native`
    /// (rusqlite's bundled SQLite on a file, for comparison) or `both` (the
    /// pool, then native on the same files, with their times side by side).
    #[arg(long, default_value = "pool", value_parser = ["pool", "native", "both"])]
    pub engine: String,
}

/// The corpus `cargo xtask ci` runs, relative to the workspace root: all of
/// it, since it runs in about a minute.
pub const CI_CORPUS: &str = "tests/slt";

/// Builds the runner in release and runs it on `args.paths`.
///
/// `cargo run --package vfs-slt` resolves features for that package alone
/// (as `cargo xtask demo` does for its own), not for the whole workspace
/// with its dev-dependencies, so its first build compiles wasmer and the
/// SQLite module once more than the test suite's build; later runs reuse
/// it. CI does not pay that: see [`ci`].
pub fn run(root: &Path, args: &SltArgs) -> Result<()> {
    deps::ensure(deps::Purpose::Build, true)?;
    // Relative paths are the caller's, and the runner starts in the root.
    let cwd = std::env::current_dir().context("current directory")?;
    let paths: Vec<PathBuf> = args.paths.iter().map(|p| cwd.join(p)).collect();
    let engine = &args.engine;
    let sh = Shell::new()?;
    sh.change_dir(root);
    cmd!(
        sh,
        "cargo run --quiet --release --package vfs-slt -- --engine {engine} {paths...}"
    )
    .run()
    .context("the sqllogictest run failed (see its report above)")?;
    Ok(())
}

/// CI's step: [`CI_CORPUS`] on the pool engine, with the `vfs-slt` binary
/// that the test step has just built. `cargo run --package vfs-slt` would
/// resolve features for that package alone, which differ from the whole
/// workspace's (the PostgreSQL driver's dependencies, for one) and would
/// compile wasmer a second time; `cargo test --no-run` with the test
/// step's arguments is a no-op that makes sure the binary is current.
pub fn ci(root: &Path) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    cmd!(
        sh,
        "cargo test --workspace --release --locked --no-run --quiet"
    )
    .run()
    .context("building the test targets")?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let runner = root.join(target).join("release").join("vfs-slt");
    if !runner.is_file() {
        bail!("{} was not built by the test step", runner.display());
    }
    cmd!(sh, "{runner} --engine pool {CI_CORPUS}")
        .run()
        .context("sqllogictest records failed")?;
    Ok(())
}
