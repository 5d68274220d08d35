//! `cargo xtask ci`: the one command that proves a change.
//!
//! Everything runs in the release profile: the demo and the benches need it
//! anyway, and sharing one profile means wasmer and SQLite are compiled once
//! per machine instead of once per profile.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use xshell::{Shell, cmd};

use crate::{deps, fuzz};

/// Flags of `cargo xtask ci`.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// Never install missing system packages; fail and print the command instead.
    #[arg(long)]
    pub no_install: bool,
    /// Also fuzz the SQL target (`sql_tenant`) in the fuzz smoke step. Its
    /// instrumented build compiles wasmer and SQLite once more (minutes on a
    /// cold machine), so by default the step runs only the storage targets,
    /// which build in about a minute.
    #[arg(long)]
    pub fuzz: bool,
}

/// Runs every step in order and stops at the first failure.
pub fn run(root: &Path, args: &CiArgs) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(root);
    let started = Instant::now();

    step("system packages", || {
        deps::ensure(deps::Purpose::Test, !args.no_install)
    })?;
    step("cargo fmt --check", || {
        cmd!(sh, "cargo fmt --all --check")
            .run()
            .context("formatting differs: run `cargo fmt --all`")
    })?;
    step("cargo clippy", || {
        cmd!(
            sh,
            "cargo clippy --workspace --all-targets --release --locked -- -D warnings"
        )
        .run()
        .context("clippy found problems")
    })?;
    // Before the tests, so the suite's summary stays the last thing CI prints.
    step("fuzz smoke", || fuzz::smoke(root, args.fuzz))?;
    step("cargo test", || {
        cmd!(sh, "cargo test --workspace --release --locked")
            .run()
            .context("tests failed")
    })?;

    println!("xtask ci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Prints a header, runs `f`, and reports how long it took.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    let started = Instant::now();
    f().with_context(|| format!("step `{name}` failed"))?;
    println!("<== {name} ok ({:.1?})", started.elapsed());
    Ok(())
}
