//! Maintainer commands for the workspace, run as `cargo xtask <command>`.
//!
//! One entry point keeps CI and a developer's machine doing exactly the same
//! thing: `cargo xtask ci` is what `.ci/run` calls, and it is also what you run
//! before pushing.

#![forbid(unsafe_code)]

mod ci;
mod deps;
mod fuzz;
mod slt;

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
    /// Run every check CI runs: system dependencies, formatting, clippy, a
    /// short fuzz smoke run, the whole test suite (in release, the profile
    /// the demo and benches use) and SQLite's sqllogictest corpus through
    /// the pool (`tests/slt`).
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
    /// The `blob_read` scenario (store round trips of reading a 10 MiB blob,
    /// with and without read-ahead) is vfs-core's `blob_read` example: it
    /// runs after the others, or alone with `--scenario blob_read`.
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
    /// Run SQLite's sqllogictest scripts through the whole stack (driver-fs,
    /// the pool, SQLite in wasm): all of the vendored corpus, `tests/slt`,
    /// or the scripts and directories given. `--engine native` runs them on
    /// rusqlite's SQLite instead, `--engine both` on both, timed side by
    /// side. Reports every failed record; fails if any.
    Slt(slt::SltArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    match cli.command {
        Command::Ci(args) => ci::run(&root, &args),
        Command::Deps(args) => deps::run(&args),
        Command::Demo { args } => run_example(&root, "driver-fs", "demo", &args),
        Command::Bench { args } => bench(&root, &args),
        Command::Fuzz(args) => fuzz::run(&root, &args),
        Command::Slt(args) => slt::run(&root, &args),
    }
}

/// Scenarios measured by the vfs-core example of the same name rather than
/// by the bench crate: they need neither SQLite nor wasmer, so asking
/// for them alone builds in seconds.
const CORE_SCENARIOS: &[&str] = &["blob_read"];

/// `cargo xtask bench`: the bench crate (`crates/bench`) for its scenarios, then the
/// vfs-core examples for theirs (with `--json` passed on). Without
/// `--scenario`, all of them.
fn bench(root: &std::path::Path, args: &[String]) -> Result<()> {
    let (engine_args, core) = split_bench_args(args);
    if let Some(engine_args) = engine_args {
        run_bench(root, &engine_args)?;
    }
    let json = args.iter().any(|a| a == "--json");
    for example in core {
        let sh = xshell::Shell::new()?;
        sh.change_dir(root);
        let flags: &[&str] = if json { &["--json"] } else { &[] };
        xshell::cmd!(
            sh,
            "cargo run --quiet --release --package vfs-core --example {example} -- {flags...}"
        )
        .run()?;
    }
    Ok(())
}

/// Splits `cargo xtask bench` arguments: those for the bench crate
/// (`None` when only vfs-core scenarios were asked for) and the vfs-core
/// examples to run (none for `--help`).
fn split_bench_args(args: &[String]) -> (Option<Vec<String>>, Vec<&'static str>) {
    let mut engine_args = Vec::new();
    let mut chosen = Vec::new();
    let mut any_scenario = false;
    let mut args_iter = args.iter();
    while let Some(arg) = args_iter.next() {
        let name = match arg.strip_prefix("--scenario") {
            Some("") => args_iter.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        any_scenario |= name.is_some();
        match name {
            Some(name) => match CORE_SCENARIOS.iter().find(|s| **s == name) {
                Some(core) => chosen.push(*core),
                None => engine_args.extend(["--scenario".to_owned(), name.to_owned()]),
            },
            None => engine_args.push(arg.clone()),
        }
    }
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    let core = if help {
        Vec::new()
    } else if any_scenario {
        chosen
    } else {
        CORE_SCENARIOS.to_vec()
    };
    let engine =
        (!any_scenario || engine_args.iter().any(|a| a == "--scenario")).then_some(engine_args);
    (engine, core)
}

/// Builds (in release, like everything else) and runs one of the
/// workspace's example programs, passing `args` through.
fn run_example(
    root: &std::path::Path,
    package: &str,
    example: &str,
    args: &[String],
) -> Result<()> {
    let target = ["--package", package, "--example", example];
    run_release(root, deps::Purpose::Build, &target, &[], args)
}

/// Builds and runs the bench crate (`crates/bench`), passing `args`
/// through. It also starts a throwaway PostgreSQL, hence the test packages;
/// that server flushes every commit, like driver-fs, so the two are compared
/// on equal terms.
fn run_bench(root: &std::path::Path, args: &[String]) -> Result<()> {
    let target = ["--package", "vfs-bench"];
    let env = [("PG_TEST_DURABLE", "1")];
    run_release(root, deps::Purpose::Test, &target, &env, args)
}

/// `cargo run --release` of `target` from the project root, once the
/// system packages `purpose` needs are there, with `env` set and `args`
/// passed through.
fn run_release(
    root: &std::path::Path,
    purpose: deps::Purpose,
    target: &[&str],
    env: &[(&str, &str)],
    args: &[String],
) -> Result<()> {
    deps::ensure(purpose, true)?;
    let sh = xshell::Shell::new()?;
    sh.change_dir(root);
    for (key, value) in env {
        sh.set_var(key, value);
    }
    xshell::cmd!(sh, "cargo run --quiet --release {target...} -- {args...}").run()?;
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

#[cfg(test)]
mod tests {
    use super::split_bench_args;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|&a| a.to_owned()).collect()
    }

    #[test]
    fn bench_args_go_to_the_bench_that_runs_the_scenario() {
        let all = split_bench_args(&args(&["--json"]));
        assert_eq!(all, (Some(args(&["--json"])), vec!["blob_read"]));
        let core = split_bench_args(&args(&["--scenario", "blob_read", "--json"]));
        assert_eq!(core, (None, vec!["blob_read"]));
        let both = split_bench_args(&args(&["--scenario=blob_read", "--scenario=stall"]));
        assert_eq!(
            both,
            (Some(args(&["--scenario", "stall"])), vec!["blob_read"])
        );
        let engine = split_bench_args(&args(&["--scenario", "large_txn", "--rows", "5"]));
        assert_eq!(
            engine,
            (
                Some(args(&["--scenario", "large_txn", "--rows", "5"])),
                vec![]
            )
        );
        let help = split_bench_args(&args(&["--help"]));
        assert_eq!(help, (Some(args(&["--help"])), vec![]));
    }
}
