//! Project hygiene checks that run as ordinary tests.
//!
//! They guard rules a reviewer would otherwise have to remember: shared lints
//! and metadata in every manifest, a module doc at the top of every Rust
//! file, `#![forbid(unsafe_code)]` in every crate without unsafe code, a
//! `SAFETY` note on every `unsafe` block, no ignored tests, and a CI script
//! and README that keep the two documented entry points. They cover every
//! workspace member: `crates/*`, `xtask` and `fuzz`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::project_root;

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target" && name != "corpus" && name != "artifacts" {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn member_dirs() -> Vec<PathBuf> {
    let root = project_root();
    let mut dirs: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .expect("crates/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.push(root.join("xtask"));
    dirs.push(root.join("fuzz"));
    dirs.sort();
    dirs
}

/// Every `.rs` file of every workspace member.
fn workspace_files() -> Vec<PathBuf> {
    member_dirs()
        .iter()
        .flat_map(|dir| rust_files(dir))
        .collect()
}

/// Whether a line has unsafe code: the keyword before a block, `fn`,
/// `impl` or `extern`, outside a comment. (Built from parts so that this
/// file does not match itself.)
fn has_unsafe_code(line: &str) -> bool {
    const KEYWORD: &str = "unsafe";
    let code = line.split("//").next().unwrap_or("");
    code.match_indices(KEYWORD).any(|(at, _)| {
        let rest = &code[at + KEYWORD.len()..];
        [" {", " fn", " impl", " extern"]
            .iter()
            .any(|next| rest.starts_with(next))
    })
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn manifests_inherit_workspace_settings() {
    for dir in member_dirs() {
        let manifest = read(&dir.join("Cargo.toml"));
        for needle in [
            "edition.workspace = true",
            "rust-version.workspace = true",
            "publish.workspace = true",
            "[lints]\nworkspace = true",
        ] {
            assert!(
                manifest.contains(needle),
                "{} lacks `{needle}`",
                dir.join("Cargo.toml").display()
            );
        }
        assert!(
            manifest.contains("\ndescription = "),
            "{} has no description",
            dir.display()
        );
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    for path in workspace_files() {
        assert!(
            read(&path).trim_start().starts_with("//!"),
            "{} must start with a `//!` module doc saying what it is for",
            path.display()
        );
    }
}

#[test]
fn crates_without_unsafe_code_forbid_it() {
    for dir in member_dirs() {
        if rust_files(&dir)
            .iter()
            .any(|path| read(path).lines().any(has_unsafe_code))
        {
            continue;
        }
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = dir.join(root);
            if path.is_file() {
                assert!(
                    read(&path).contains("#![forbid(unsafe_code)]"),
                    "{} has no unsafe code: its root must say `#![forbid(unsafe_code)]`",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    for path in workspace_files() {
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !has_unsafe_code(line) {
                continue;
            }
            let window = &lines[i.saturating_sub(6)..=i];
            assert!(
                window.iter().any(|l| l.contains("SAFETY:")),
                "{}:{}: `unsafe` block without a `// SAFETY:` comment",
                path.display(),
                i + 1
            );
        }
    }
}

#[test]
fn no_ignored_tests() {
    for path in workspace_files() {
        for (i, line) in read(&path).lines().enumerate() {
            assert!(
                !line.trim_start().starts_with("#[ignore"),
                "{}:{}: tests are never ignored; fix or delete them",
                path.display(),
                i + 1
            );
        }
    }
}

#[test]
fn ci_script_runs_the_documented_command() {
    let root = project_root();
    let script = read(&root.join(".ci/run"));
    assert!(
        script.contains("cargo xtask ci"),
        ".ci/run must call `cargo xtask ci`"
    );
    assert!(
        script.contains("set -euo pipefail") || script.contains("set -eu"),
        ".ci/run must not hide a failing exit code"
    );
    let readme = read(&root.join("README.md"));
    for command in ["cargo xtask demo", "cargo xtask ci"] {
        assert!(readme.contains(command), "README must document `{command}`");
    }
}
