//! `cargo xtask fuzz`: runs the libFuzzer targets of the `fuzz` crate.
//!
//! The targets are a library that `cargo test` already runs on fixed inputs;
//! this command adds coverage-guided exploration with `cargo fuzz`. It checks
//! its tools first and says what is missing: `cargo fuzz` needs a nightly
//! toolchain (it cannot be fetched by this command), and cargo-fuzz itself is
//! installed from crates.io when absent.
//!
//! Builds go to their own target directory (`target/fuzz`): they use nightly
//! and coverage instrumentation flags, which would otherwise invalidate the
//! release artifacts every other command shares, and they hold their own
//! build lock. Sanitizers are off (`--sanitizer none`): the code under test
//! is safe Rust plus a wasm sandbox, so AddressSanitizer would mostly slow the
//! build and every execution; debug assertions and overflow checks stay on.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

/// The fuzz targets, in the order `--smoke` runs them.
pub const TARGETS: &[&str] = &["decode", "kv_file_ops", "sql_tenant"];

/// Seconds per target of a smoke run.
const SMOKE_SECONDS: u64 = 20;

/// Flags of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// The target to run (`decode`, `kv_file_ops`, `sql_tenant`); omit with
    /// `--smoke`.
    pub target: Option<String>,
    /// Run every target briefly (20 s each unless `--time` says otherwise):
    /// a check that the targets build and find nothing quickly.
    #[arg(long)]
    pub smoke: bool,
    /// Seconds to fuzz each target (default: 20 with `--smoke`, 300 otherwise).
    #[arg(long)]
    pub time: Option<u64>,
    /// Sanitizer for `cargo fuzz` (`none`, `address`, …); anything but
    /// `none` needs nightly and makes builds and runs several times slower.
    #[arg(long, default_value = "none")]
    pub sanitizer: String,
    /// Extra arguments for libFuzzer (after `--`), e.g. `-- -jobs=2`.
    #[arg(last = true)]
    pub libfuzzer_args: Vec<String>,
}

/// What one target's run reported.
struct Outcome {
    target: &'static str,
    runs: Option<u64>,
    seconds: f64,
    build_seconds: f64,
}

/// Runs `cargo xtask fuzz` with `args`.
pub fn run(root: &Path, args: &FuzzArgs) -> Result<()> {
    let targets: Vec<&'static str> = match (&args.target, args.smoke) {
        (Some(_), true) => bail!("give either a target or --smoke, not both"),
        (None, false) => bail!(
            "give a target ({}) or --smoke to run them all briefly",
            TARGETS.join(", ")
        ),
        (None, true) => TARGETS.to_vec(),
        (Some(name), false) => match TARGETS.iter().find(|t| **t == name.as_str()) {
            Some(target) => vec![*target],
            None => bail!(
                "unknown fuzz target `{name}`; the targets are {}",
                TARGETS.join(", ")
            ),
        },
    };
    let seconds = args
        .time
        .unwrap_or(if args.smoke { SMOKE_SECONDS } else { 300 });
    if seconds == 0 {
        bail!("--time must be at least 1 second");
    }
    run_targets(
        root,
        &targets,
        seconds,
        &args.sanitizer,
        &args.libfuzzer_args,
    )
}

/// Builds and runs each of `targets` for `seconds`, then prints a summary.
fn run_targets(
    root: &Path,
    targets: &[&'static str],
    seconds: u64,
    sanitizer: &str,
    extra: &[String],
) -> Result<()> {
    let setup = Setup {
        root,
        toolchain: ensure_tools(sanitizer)?,
        sanitizer,
    };
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(&setup, target, seconds, extra)?);
    }
    println!("\nxtask fuzz: no findings");
    println!(
        "{:<12} {:>9} {:>10} {:>8} {:>9}",
        "target", "build s", "runs", "fuzz s", "exec/s"
    );
    for o in &outcomes {
        let runs = o.runs.map_or_else(|| "?".to_owned(), |r| r.to_string());
        let rate = o.runs.map_or_else(
            || "?".to_owned(),
            |r| {
                format!(
                    "{:.0}",
                    f64::from(u32::try_from(r).unwrap_or(u32::MAX)) / o.seconds
                )
            },
        );
        println!(
            "{:<12} {:>9.1} {:>10} {:>8.1} {:>9}",
            o.target, o.build_seconds, runs, o.seconds, rate
        );
    }
    Ok(())
}

/// Seconds per target of the smoke run inside `cargo xtask ci`.
const CI_SMOKE_SECONDS: u64 = 10;

/// The smoke step of `cargo xtask ci`: the storage targets (`decode`,
/// `kv_file_ops`) for a few seconds each, plus `sql_tenant` when `with_sql`.
pub fn smoke(root: &Path, with_sql: bool) -> Result<()> {
    let targets: Vec<&'static str> = TARGETS
        .iter()
        .copied()
        .filter(|t| with_sql || *t != "sql_tenant")
        .collect();
    run_targets(root, &targets, CI_SMOKE_SECONDS, "none", &[])
}

/// The toolchain to build with: nightly when installed (what `cargo fuzz`
/// documents, and needed for sanitizers); without sanitizers stable works
/// too, so a machine without nightly still runs the targets.
fn ensure_tools(sanitizer: &str) -> Result<Option<&'static str>> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let toolchain = if nightly {
        Some("+nightly")
    } else if sanitizer == "none" {
        println!(
            "xtask fuzz: no nightly toolchain (`cargo +nightly` fails); building with the default \
             toolchain, which works because sanitizers are off"
        );
        None
    } else {
        bail!(
            "`--sanitizer {sanitizer}` needs a nightly Rust toolchain and `cargo +nightly` is not \
             available. Install one with `rustup toolchain install nightly`, or fuzz without \
             sanitizers (the default, `--sanitizer none`)."
        );
    };
    let has_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cargo_fuzz {
        println!(
            "xtask fuzz: cargo-fuzz is missing; installing it with `cargo install cargo-fuzz --locked`"
        );
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install")?;
        if !status.success() {
            bail!("`cargo install cargo-fuzz --locked` failed ({status})");
        }
    }
    Ok(toolchain)
}

/// How every `cargo fuzz` build and run of this command is configured.
struct Setup<'a> {
    root: &'a Path,
    toolchain: Option<&'static str>,
    sanitizer: &'a str,
}

impl Setup<'_> {
    /// `cargo [+toolchain] fuzz <subcommand> <shared flags> <target>`.
    fn command(&self, subcommand: &str, target: &str) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(self.root);
        cmd.args(self.toolchain);
        cmd.args(["fuzz", subcommand, "--sanitizer", self.sanitizer]);
        // Only the SQL target needs SQLite in wasmer; the others build
        // without it in a fraction of the time.
        if target != "sql_tenant" {
            cmd.arg("--no-default-features");
        }
        cmd.args(["--features", "libfuzzer", "--target-dir"]);
        cmd.arg(self.root.join("target").join("fuzz"));
        cmd.arg(target);
        // The SQL target's compiled module, so each process skips the
        // seconds an instrumented compiler needs (see vfs_fuzz::sql_tenant).
        cmd.env(
            "VFS_FUZZ_MODULE_CACHE",
            self.root.join("target").join("fuzz").join("module-cache"),
        );
        cmd
    }
}

/// Builds then runs one target for `seconds`, streaming libFuzzer's output
/// and picking its final run count out of it.
fn run_target(
    setup: &Setup<'_>,
    target: &'static str,
    seconds: u64,
    extra: &[String],
) -> Result<Outcome> {
    println!("\n==> fuzz {target} ({seconds} s)");
    let root = setup.root;
    let started = Instant::now();
    let status = setup
        .command("build", target)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("building fuzz target `{target}` failed ({status})");
    }
    let build_seconds = started.elapsed().as_secs_f64();

    let fuzz_dir = root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut run = vec![corpus.display().to_string()];
    let seeds: PathBuf = fuzz_dir.join("seeds").join(target);
    if seeds.is_dir() {
        run.push(seeds.display().to_string());
    }
    run.push("--".into());
    run.push(format!("-max_total_time={seconds}"));
    // A single input running this long is a hang worth reporting.
    run.push("-timeout=30".into());
    run.push("-print_final_stats=1".into());
    let dict = fuzz_dir.join("dict").join("sql.dict");
    if target == "sql_tenant" && dict.is_file() {
        run.push(format!("-dict={}", dict.display()));
    }
    run.extend(extra.iter().cloned());

    let fuzz_started = Instant::now();
    let mut child = setup
        .command("run", target)
        .args(&run)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let mut runs = None;
    if let Some(stderr) = child.stderr.take() {
        let mut out = std::io::stderr().lock();
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading libFuzzer output")?;
            if let Some(n) = final_runs(&line) {
                runs = Some(n);
            }
            writeln!(out, "{line}").ok();
        }
    }
    let status = child.wait().context("waiting for cargo fuzz run")?;
    let seconds = fuzz_started.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "fuzz target `{target}` found a problem ({status}): the input is saved under {}; \
             replay it with `{} <file>`, then turn it into a regression test in fuzz/tests/",
            fuzz_dir.join("artifacts").join(target).display(),
            root.join("target/fuzz/x86_64-unknown-linux-gnu/release")
                .join(target)
                .display()
        );
    }
    Ok(Outcome {
        target,
        runs,
        seconds,
        build_seconds,
    })
}

/// The run count of libFuzzer's closing line `Done 1234 runs in 20 second(s)`.
fn final_runs(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("Done ")?;
    let (count, tail) = rest.split_once(' ')?;
    if !tail.starts_with("runs in") {
        return None;
    }
    count.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::final_runs;

    #[test]
    fn reads_libfuzzer_closing_line() {
        assert_eq!(
            final_runs("Done 123456 runs in 21 second(s)"),
            Some(123_456)
        );
        assert_eq!(final_runs("#1234\tNEW    cov: 10 ft: 12"), None);
        assert_eq!(final_runs("Done x runs in 2 second(s)"), None);
        assert_eq!(final_runs("Done 12 files"), None);
    }
}
