//! Maintainer commands for the workspace, run as `cargo xtask <command>`.
//!
//! One entry point keeps CI and a developer's machine doing exactly the same
//! thing: `cargo xtask ci` is what `.ci/run` calls, and it is also what you run
//! before pushing.

mod ci;
mod deps;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Maintainer commands for the SQLite VFS pool workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every check CI runs: system dependencies, formatting, clippy and
    /// the whole test suite (in release, the profile the demo and benches use).
    Ci(ci::CiArgs),
    /// Check the system packages the build and the tests need (clang with the
    /// wasm32 target, lld, wasi-libc, the wasm32 compiler-rt, PostgreSQL) and,
    /// as root on Debian, install the missing ones with apt-get.
    Deps(deps::DepsArgs),
    /// Run the demo: many actors on the local-disk driver, each creating,
    /// writing and reading back its own database, with a summary table.
    /// Flags are the demo's own: `cargo xtask demo --help` lists them.
    #[command(disable_help_flag = true)]
    Demo {
        /// Arguments passed to the demo.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    match cli.command {
        Command::Ci(args) => ci::run(&root, &args),
        Command::Deps(args) => deps::run(&args),
        Command::Demo { args } => demo(&root, &args),
    }
}

/// Builds (in release, like everything else) and runs the demo example.
fn demo(root: &std::path::Path, args: &[String]) -> Result<()> {
    deps::ensure(deps::Purpose::Build, true)?;
    let sh = xshell::Shell::new()?;
    sh.change_dir(root);
    xshell::cmd!(
        sh,
        "cargo run --quiet --release --package driver-fs --example demo -- {args...}"
    )
    .run()?;
    Ok(())
}

/// The workspace root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.clone(), std::path::Path::to_path_buf)
}

#[cfg(test)]
mod tidy;
