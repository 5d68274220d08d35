//! Maintainer commands for the workspace, run as `cargo xtask <command>`.
//!
//! One entry point keeps CI and a developer's machine doing exactly the same
//! thing: `cargo xtask ci` is what `.ci/run` calls, and it is also what you run
//! before pushing.

mod ci;
mod deps;
mod fuzz;

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
    /// Run every check CI runs: system dependencies, formatting, clippy, the
    /// whole test suite (in release, the profile the demo and benches use)
    /// and a short fuzz smoke run.
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
    /// Run the benchmarks, each next to its baseline measured in the same
    /// run. Flags are the bench's own: `cargo xtask bench --help` lists them.
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments passed to the bench.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the libFuzzer targets with `cargo fuzz` (on nightly when it is
    /// installed): `--smoke` runs
    /// each briefly, `<target> --time <s>` one for longer. Installs
    /// cargo-fuzz when it is missing.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    match cli.command {
        Command::Ci(args) => ci::run(&root, &args),
        Command::Deps(args) => deps::run(&args),
        Command::Demo { args } => run_example(&root, "driver-fs", "demo", &args),
        Command::Bench { args } => run_example(&root, "driver-engine", "bench", &args),
        Command::Fuzz(args) => fuzz::run(&root, &args),
    }
}

/// Builds (in release, like everything else) and runs one of the
/// workspace's example programs, passing `args` through.
fn run_example(
    root: &std::path::Path,
    package: &str,
    example: &str,
    args: &[String],
) -> Result<()> {
    // The benches also start a throwaway PostgreSQL, hence the test
    // packages; that server flushes every commit, like driver-fs, so the two
    // are compared on equal terms.
    let bench = example == "bench";
    let purpose = if bench {
        deps::Purpose::Test
    } else {
        deps::Purpose::Build
    };
    deps::ensure(purpose, true)?;
    let sh = xshell::Shell::new()?;
    sh.change_dir(root);
    if bench {
        sh.set_var("PG_TEST_DURABLE", "1");
    }
    xshell::cmd!(
        sh,
        "cargo run --quiet --release --package {package} --example {example} -- {args...}"
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
