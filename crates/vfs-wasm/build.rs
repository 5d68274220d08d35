//! Builds SQLite (the amalgamation shipped by `libsqlite3-sys`) plus `c/shim.c`
//! into a `wasm32-wasi` reactor module, written to `$OUT_DIR/sqlite.wasm`.
//!
//! Why a build script and not a checked-in binary: the module must match the
//! SQLite source the workspace pins, and its options (no threads, no
//! extensions, batch-atomic writes, imported memory so the host can cap it)
//! are part of the crate's safety story. `VFS_WASM_MODULE=/path/sqlite.wasm`
//! skips the C build and uses a prebuilt module instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The line that installs every tool this script needs on Debian.
const APT_LINE: &str = "apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32";

/// SQLite functions the host calls (the shim's own exports carry
/// `export_name` attributes).
const EXPORTS: &[&str] = &[
    "sqlite3_close_v2",
    "sqlite3_prepare_v3",
    "sqlite3_finalize",
    "sqlite3_bind_parameter_count",
    "sqlite3_column_name",
    "sqlite3_errmsg",
    "sqlite3_extended_errcode",
    "sqlite3_malloc64",
    "sqlite3_free",
    "sqlite3_limit",
    "sqlite3_hard_heap_limit64",
    "sqlite3_soft_heap_limit64",
    "sqlite3_memory_used",
    "sqlite3_get_autocommit",
    // Memory accounting only (`Instance::database_status`).
    "sqlite3_db_status",
    // Frees an idle database's page cache (`Instance::release_memory`).
    "sqlite3_db_release_memory",
];

/// How the C is compiled.
const CFLAGS: &[&str] = &["--target=wasm32-wasi", "-O2", "-mexec-model=reactor"];

/// How the module is linked. The host creates the memory so it can give it
/// a per-instance maximum; the stack sits first so an overflow traps
/// instead of corrupting data.
const LINK_ARGS: &[&str] = &[
    "-Wl,--import-memory",
    "-Wl,--stack-first",
    "-Wl,-z,stack-size=131072",
    "-Wl,--initial-memory=1310720",
    "-Wl,--strip-debug",
];

/// Compile-time options; see the crate docs for why each is there.
const DEFINES: &[&str] = &[
    "SQLITE_OS_OTHER=1",
    "SQLITE_THREADSAFE=0",
    "SQLITE_OMIT_LOAD_EXTENSION",
    "SQLITE_OMIT_SHARED_CACHE",
    "SQLITE_OMIT_DEPRECATED",
    "SQLITE_DQS=0",
    "SQLITE_ENABLE_BATCH_ATOMIC_WRITE",
    "SQLITE_ENABLE_FTS5",
    "SQLITE_USE_URI=0",
    // Memory statistics drive sqlite3_hard_heap_limit64 (the memory cap).
    "SQLITE_DEFAULT_MEMSTATUS=1",
    // Temporary tables and indices always in guest memory (no pragma can
    // ask for files, which the VFS does not serve).
    "SQLITE_TEMP_STORE=3",
    // The settings every connection runs with, as defaults rather than
    // pragmas run at each open (see `configure` in instance.rs): an
    // exclusive lock kept from the first read (SQLite never re-validates
    // its cache), synchronous NORMAL, and a 256 KiB page cache.
    "SQLITE_DEFAULT_LOCKING_MODE=1",
    "SQLITE_DEFAULT_SYNCHRONOUS=1",
    "SQLITE_DEFAULT_CACHE_SIZE=-256",
    "SQLITE_MAX_MMAP_SIZE=0",
    "SQLITE_ENABLE_API_ARMOR",
    "SQLITE_DEFAULT_PAGE_SIZE=4096",
    "SQLITE_MAX_EXPR_DEPTH=256",
    // No bulk page-cache allocation at a connection's first read: by default
    // SQLite allocates 20 page slots at once (about 85 KiB) and touches them
    // all, where a small tenant database uses a few. Pages are then
    // allocated as the cache grows (see `density` in BENCHMARKS.md).
    "SQLITE_DEFAULT_PCACHE_INITSZ=0",
];

fn fail(message: &str) -> ! {
    for line in message.lines() {
        println!("cargo:warning={line}");
    }
    panic!("{message}");
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=c/shim.c");
    println!("cargo:rerun-if-env-changed=VFS_WASM_MODULE");
    println!("cargo:rerun-if-env-changed=DEP_SQLITE3_INCLUDE");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let output = out_dir.join("sqlite.wasm");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    emit_wasmer_version(&manifest);

    if let Some(prebuilt) = env::var_os("VFS_WASM_MODULE") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        if let Err(e) = std::fs::copy(&prebuilt, &output) {
            fail(&format!(
                "VFS_WASM_MODULE={} cannot be read: {e}",
                prebuilt.display()
            ));
        }
        return;
    }

    let Some(include) = env::var_os("DEP_SQLITE3_INCLUDE") else {
        fail(
            "DEP_SQLITE3_INCLUDE is not set: libsqlite3-sys must be built with its `bundled` feature",
        );
    };
    let include = PathBuf::from(include);
    let source = include.join("sqlite3.c");
    if !source.is_file() {
        fail(&format!(
            "SQLite amalgamation not found at {}",
            source.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", source.display());
    println!(
        "cargo:rerun-if-changed={}",
        include.join("sqlite3.h").display()
    );

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    check_toolchain(&clang);

    // The script reruns when Cargo.lock changes (for the wasmer version);
    // skip the slow C build when none of its inputs changed.
    let stamp_path = out_dir.join("sqlite.wasm.stamp");
    let stamp = input_stamp(&clang, &source, &manifest.join("c").join("shim.c"));
    if output.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return;
    }

    let mut cmd = Command::new(&clang);
    cmd.args(CFLAGS).arg(format!("-I{}", include.display()));
    for define in DEFINES {
        cmd.arg(format!("-D{define}"));
    }
    for export in EXPORTS {
        cmd.arg(format!("-Wl,--export={export}"));
    }
    cmd.args(LINK_ARGS)
        .arg(&source)
        .arg(manifest.join("c").join("shim.c"))
        .arg("-o")
        .arg(&output);
    match cmd.status() {
        Ok(status) if status.success() => {
            if let Err(e) = std::fs::write(&stamp_path, stamp) {
                println!("cargo:warning=cannot write {}: {e}", stamp_path.display());
            }
        }
        Ok(status) => fail(&format!(
            "building sqlite.wasm with {clang} failed ({status})"
        )),
        Err(e) => fail(&format!(
            "cannot run {clang}: {e}\ninstall it with: {APT_LINE}"
        )),
    }
}

/// Checks every tool before the 30-second compile so a missing piece is
/// reported by name, with the line that installs it.
fn check_toolchain(clang: &str) {
    let missing = |what: &str| -> ! {
        fail(&format!(
            "vfs-wasm needs {what} to build SQLite for wasm32-wasi.\ninstall the toolchain with: {APT_LINE}\n(or set VFS_WASM_MODULE to a prebuilt sqlite.wasm)"
        ))
    };
    if Command::new(clang).arg("--version").output().is_err() {
        missing(&format!("clang (`{clang}` was not found)"));
    }
    if !on_path("wasm-ld") {
        missing("wasm-ld from lld");
    }
    let sysroot_ok = [
        "/usr/include/wasm32-wasi/stdio.h",
        "/usr/lib/wasm32-wasi/libc.a",
    ]
    .iter()
    .all(|p| Path::new(p).is_file());
    if !sysroot_ok {
        missing("the wasi-libc sysroot (/usr/include/wasm32-wasi, /usr/lib/wasm32-wasi)");
    }
    let rt = Command::new(clang)
        .args(["--target=wasm32-wasi", "-print-libgcc-file-name"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match rt {
        Some(path) if path.is_file() => {}
        _ => missing("the wasm32 compiler-rt builtins (libclang_rt.builtins-wasm32.a)"),
    }
}

fn on_path(tool: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Describes every input of the C build (tool, flags, sources by size and
/// modification time) so an unchanged build can be skipped.
fn input_stamp(clang: &str, source: &Path, shim: &Path) -> String {
    let describe = |p: &Path| {
        std::fs::metadata(p).map_or_else(
            |e| format!("{}: {e}", p.display()),
            |m| format!("{}: {} {:?}", p.display(), m.len(), m.modified().ok()),
        )
    };
    format!(
        "{clang}\n{CFLAGS:?}\n{LINK_ARGS:?}\n{DEFINES:?}\n{EXPORTS:?}\n{}\n{}\n",
        describe(source),
        describe(shim)
    )
}

/// Passes the exact wasmer version (from the workspace Cargo.lock) to the
/// crate: it is part of the compiled-module cache key, because artifacts of
/// different wasmer versions must never be mixed.
fn emit_wasmer_version(manifest: &Path) {
    let lock = manifest
        .ancestors()
        .map(|dir| dir.join("Cargo.lock"))
        .find(|lock| lock.is_file());
    let mut version = None;
    if let Some(lock) = lock {
        println!("cargo:rerun-if-changed={}", lock.display());
        let text = std::fs::read_to_string(&lock).unwrap_or_default();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line == "name = \"wasmer\"" {
                version = lines
                    .next()
                    .and_then(|l| l.strip_prefix("version = "))
                    .map(|v| v.trim_matches('"').to_owned());
                break;
            }
        }
    }
    let version = version.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=VFS_WASM_WASMER_VERSION={version}");
}
