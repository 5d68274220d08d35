//! `cargo xtask ci`: the one command that proves a change.
//!
//! Everything runs in the release profile: the demo and the benches need it
//! anyway, and sharing one profile means wasmer and SQLite are compiled once
//! per machine instead of once per profile.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::{Shell, cmd};

use crate::{deps, fuzz, slt};

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

/// wasmer features under which a store is tied to the thread that ran it
/// (vfs-wasm's `MovableStore` moves stores between threads between calls,
/// which is sound only without them).
const THREAD_BOUND_WASMER_FEATURES: [&str; 2] =
    ["experimental-async", "experimental-host-interrupt"];

/// Fails if any crate of the workspace turns on a wasmer or wasmer-vm
/// feature that would make moving a store between threads unsound.
fn wasmer_features(sh: &Shell) -> Result<()> {
    let format = "{f}";
    for package in ["wasmer", "wasmer-vm"] {
        let features = cmd!(
            sh,
            "cargo tree --workspace --locked -e features -f {format} -i {package} --depth 0"
        )
        .read()?;
        for feature in features.split([',', '\n']).map(str::trim) {
            if THREAD_BOUND_WASMER_FEATURES.contains(&feature) {
                bail!(
                    "{package} is built with feature {feature:?}, under which a store is tied to \
                     its thread; vfs-wasm moves stores between threads (see MovableStore)"
                );
            }
        }
        println!("{package}: {}", features.trim());
    }
    Ok(())
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
    step("wasmer features", || wasmer_features(&sh))?;
    // Before the tests, so the suite's summary stays the last thing CI prints.
    step("fuzz smoke", || fuzz::smoke(root, args.fuzz))?;
    let mut totals = TestTotals::default();
    let tests = step("cargo test", || run_tests(root, &mut totals));
    // SQLite's sqllogictest corpus through the whole stack, once the
    // suite has passed (and built the runner).
    let tests = tests.and_then(|()| step("sqllogictest corpus (pool)", || slt::ci(root)));
    // The suite's own last line is that of its last test binary (often a
    // doc-test run with nothing in it); this line sums them all.
    let summary = format!("tests: {} passed, {} failed", totals.passed, totals.failed);
    if tests.is_ok() {
        println!("xtask ci: all steps passed in {:.0?}", started.elapsed());
    }
    if totals.ignored > 0 {
        println!("{summary}, {} skipped", totals.ignored);
    } else {
        println!("{summary}");
    }
    tests
}

/// Test counts summed over every `test result:` line of a cargo test run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Adds the counts of one libtest summary line
    /// (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`), if it is one.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

/// Runs the whole test suite, echoing its output and summing its counts.
fn run_tests(root: &Path, totals: &mut TestTotals) -> Result<()> {
    println!("$ cargo test --workspace --release --locked");
    let mut child = Command::new("cargo")
        .args(["test", "--workspace", "--release", "--locked"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
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

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn the_workspace_builds_wasmer_without_thread_bound_features() {
        let sh = xshell::Shell::new().unwrap();
        sh.change_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        super::wasmer_features(&sh).unwrap();
    }

    #[test]
    fn summary_lines_are_summed() {
        let mut totals = TestTotals::default();
        for line in [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 14 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s",
            "test something_passed ... ok",
        ] {
            totals.add_line(line);
        }
        assert_eq!(
            totals,
            TestTotals {
                passed: 17,
                failed: 2,
                ignored: 1
            }
        );
    }
}
