//! `vfs-slt`: runs sqllogictest scripts on the pool (driver-fs) or on
//! native SQLite and reports every failed record. `cargo xtask slt` runs it
//! in release; with no paths it runs the vendored corpus, `tests/slt`.

#![forbid(unsafe_code)]
// Seconds become f64 only to print them and their ratio.
#![allow(clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use vfs_slt::{Engine, RunReport, run_paths};

/// Runs sqllogictest scripts through the whole stack (or natively).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask slt", bin_name = "cargo xtask slt", about)]
struct Args {
    /// Scripts, or directories searched for `.test` files. Default: the
    /// vendored corpus, `tests/slt` at the workspace root.
    paths: Vec<PathBuf>,
    /// `pool`: SQLite in wasm through driver-fs and the pool. `native`:
    /// rusqlite's bundled SQLite on a file. `both`: the pool, then native on
    /// the same files, with the time of each file side by side.
    #[arg(long, value_enum, default_value_t = Choice::Pool)]
    engine: Choice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Choice {
    Pool,
    Native,
    Both,
}

/// The vendored corpus, `tests/slt` at the workspace root.
fn default_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/slt")
}

/// `path` relative to the current directory when it is under it, so that
/// reports name files briefly.
fn shorter(path: PathBuf) -> PathBuf {
    let Ok(absolute) = path.canonicalize() else {
        return path;
    };
    std::env::current_dir()
        .ok()
        .and_then(|cwd| absolute.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or(path)
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let paths: Vec<PathBuf> = if args.paths.is_empty() {
        vec![default_corpus()]
    } else {
        args.paths
    };
    let paths: Vec<PathBuf> = paths.into_iter().map(shorter).collect();
    let engines: &[Engine] = match args.engine {
        Choice::Pool => &[Engine::Pool],
        Choice::Native => &[Engine::Native],
        Choice::Both => &[Engine::Pool, Engine::Native],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for &engine in engines {
        if engines.len() > 1 {
            println!("== {engine} engine");
        }
        let result = runtime.block_on(run_paths(&paths, engine, |file| println!("{file}")));
        match result {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("slt: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    for report in &reports {
        for failure in report.failures() {
            print!("\n{failure}");
        }
    }
    if let [pool, native] = reports.as_slice() {
        compare(pool, native);
    }
    println!();
    for report in &reports {
        println!(
            "{} engine: {} files, {} records run, {} skipped, in {:.1} s",
            report.engine,
            report.files.len(),
            report.passed() + report.failed(),
            report.skipped(),
            report.elapsed.as_secs_f64()
        );
    }
    let passed: usize = reports.iter().map(RunReport::passed).sum();
    let failed: usize = reports.iter().map(RunReport::failed).sum();
    let skipped: usize = reports.iter().map(RunReport::skipped).sum();
    if skipped > 0 {
        println!("slt: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("slt: {passed} passed, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints each file's time on both engines and the ratio.
fn compare(pool: &RunReport, native: &RunReport) {
    let width = pool
        .files
        .iter()
        .map(|f| f.path.display().to_string().len())
        .max()
        .unwrap_or(0)
        .max(24);
    println!(
        "\n{:<width$} {:>8} {:>10} {:>10} {:>7}",
        "file", "records", "pool (s)", "native (s)", "ratio"
    );
    for (p, n) in pool.files.iter().zip(&native.files) {
        let (ps, ns) = (p.elapsed.as_secs_f64(), n.elapsed.as_secs_f64());
        println!(
            "{:<width$} {:>8} {:>10.2} {:>10.2} {:>6.2}×",
            p.path.display(),
            p.run(),
            ps,
            ns,
            ps / ns.max(1e-9)
        );
    }
    let (ps, ns) = (pool.elapsed.as_secs_f64(), native.elapsed.as_secs_f64());
    println!(
        "{:<width$} {:>8} {:>10.2} {:>10.2} {:>6.2}×",
        "all (set-up included)",
        pool.passed() + pool.failed(),
        ps,
        ns,
        ps / ns.max(1e-9)
    );
}
