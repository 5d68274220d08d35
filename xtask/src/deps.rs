//! System packages the workspace needs, checked by what they provide.
//!
//! The SQLite module is built with Debian's clang for `wasm32-wasi`, which
//! needs four packages beyond the Rust toolchain; the PostgreSQL driver's tests
//! start a throwaway server from Debian's `postgresql`, and the archive tests
//! check exports with the `sqlite3` shell and write imports with Python's
//! `sqlite3` module. Each requirement is
//! checked by looking for the file or tool it provides (not by asking dpkg), so
//! the check also works on machines that got the tools another way. As root on
//! Debian the missing packages are installed; elsewhere the exact command is
//! printed and the run stops.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Flags of `cargo xtask deps`.
#[derive(Debug, Args)]
pub struct DepsArgs {
    /// Only report what is missing; never install.
    #[arg(long)]
    pub check: bool,
}

/// One Debian package and how to tell that what it provides is present.
struct Requirement {
    package: &'static str,
    provides: &'static str,
    present: fn() -> bool,
    /// Needed only by the test suite (not to build or run the demo).
    tests_only: bool,
}

/// What the caller is about to do, which decides the packages it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Build the workspace and run it (the demo, the benches).
    Build,
    /// Build and run every test, including the PostgreSQL driver's.
    Test,
}

const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        package: "clang",
        provides: "the C compiler that builds SQLite for wasm32-wasi",
        present: || runs("clang", &["--version"]),
        tests_only: false,
    },
    Requirement {
        package: "lld",
        provides: "wasm-ld, the WebAssembly linker",
        present: || runs("wasm-ld", &["--version"]),
        tests_only: false,
    },
    Requirement {
        package: "wasi-libc",
        provides: "the C library for wasm32-wasi",
        present: || clang_file("-print-file-name=libc.a").is_some(),
        tests_only: false,
    },
    Requirement {
        package: "libclang-rt-14-dev-wasm32",
        provides: "compiler-rt builtins for wasm32",
        present: || clang_file("-print-libgcc-file-name").is_some(),
        tests_only: false,
    },
    Requirement {
        package: "sqlite3",
        provides: "the sqlite3 shell that checks exported databases in the archive tests",
        present: || runs("sqlite3", &["--version"]),
        tests_only: true,
    },
    Requirement {
        package: "python3",
        provides: "Python's sqlite3 module, which writes databases for the import tests",
        present: || runs("python3", &["-c", "import sqlite3"]),
        tests_only: true,
    },
    Requirement {
        package: "postgresql",
        provides: "initdb and pg_ctl for the PostgreSQL driver's throwaway test server",
        present: || postgres_bin_dir().is_some(),
        tests_only: true,
    },
];

/// The exact command that installs `packages` on Debian.
fn install_command(packages: &[&str]) -> String {
    format!("apt-get install -y {}", packages.join(" "))
}

/// `cargo xtask deps`.
pub fn run(args: &DepsArgs) -> Result<()> {
    ensure(Purpose::Test, !args.check)
}

/// Makes sure every requirement is met, installing with apt-get when allowed
/// and possible; fails with the exact command to run otherwise.
pub fn ensure(purpose: Purpose, allow_install: bool) -> Result<()> {
    let missing = missing(purpose);
    if missing.is_empty() {
        let needed: Vec<&str> = needed(purpose).map(|r| r.package).collect();
        println!("xtask: system packages present: {}", needed.join(", "));
        return probe_wasm_toolchain();
    }
    for req in &missing {
        println!("xtask: missing {} ({})", req.package, req.provides);
    }
    let packages: Vec<&str> = missing.iter().map(|r| r.package).collect();
    let command = install_command(&packages);
    if !allow_install {
        bail!("missing system packages; install them with: {command}");
    }
    if !can_apt_install() {
        bail!(
            "missing system packages and this is not a Debian machine where we run as root; \
             install them with: sudo {command}"
        );
    }
    println!("xtask: installing {}", packages.join(" "));
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&packages);
    apt(&install)?;
    let still: Vec<&str> = self::missing(purpose).iter().map(|r| r.package).collect();
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still missing: {}",
            still.join(", ")
        );
    }
    probe_wasm_toolchain()
}

fn all_packages() -> Vec<&'static str> {
    REQUIREMENTS.iter().map(|r| r.package).collect()
}

fn needed(purpose: Purpose) -> impl Iterator<Item = &'static Requirement> {
    REQUIREMENTS
        .iter()
        .filter(move |r| purpose == Purpose::Test || !r.tests_only)
}

fn missing(purpose: Purpose) -> Vec<&'static Requirement> {
    needed(purpose).filter(|r| !(r.present)()).collect()
}

fn apt(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Root on a Debian-like system with apt-get on the PATH.
fn can_apt_install() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0");
    root && Path::new("/etc/debian_version").exists() && runs("apt-get", &["--version"])
}

/// Whether `program args` starts and exits successfully.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A file clang reports for the wasm32-wasi target, if it exists. clang echoes
/// the bare name back when it cannot find a library, hence the existence test.
fn clang_file(flag: &str) -> Option<PathBuf> {
    let out = Command::new("clang")
        .args(["--target=wasm32-wasi", flag])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (path.is_absolute() && path.is_file()).then_some(path)
}

/// The directory holding PostgreSQL's server binaries (`initdb`, `pg_ctl`).
/// Debian keeps them out of the PATH, under `/usr/lib/postgresql/<major>/bin`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    candidates.sort();
    candidates.reverse();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// Links a tiny reactor module the way the SQLite build does, so a broken
/// toolchain fails here with a clear message rather than deep in a build script.
fn probe_wasm_toolchain() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("xtask-wasm-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let source = dir.join("probe.c");
    std::fs::write(
        &source,
        "#include <string.h>\nint probe(const char *s) { return (int)strlen(s); }\n",
    )?;
    let output = Command::new("clang")
        .args([
            "--target=wasm32-wasi",
            "-O2",
            "-mexec-model=reactor",
            "-Wl,--export=probe",
            "-o",
        ])
        .arg(dir.join("probe.wasm"))
        .arg(&source)
        .output()
        .context("running clang")?;
    let _ = std::fs::remove_dir_all(&dir);
    if !output.status.success() {
        bail!(
            "clang cannot build a wasm32-wasi module although the packages are present:\n{}\n\
             reinstall them with: {}",
            String::from_utf8_lossy(&output.stderr),
            install_command(&all_packages())
        );
    }
    Ok(())
}
