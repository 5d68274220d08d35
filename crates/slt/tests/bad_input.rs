//! Bad input is a clear error naming the file (and the line), never a
//! panic and never a run that passes by doing nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{data, run};
use vfs_slt::{Engine, Error};

async fn error_of(paths: &[PathBuf]) -> Error {
    match run(paths, Engine::Native).await {
        Ok(report) => panic!("expected an error, got {report:?}"),
        Err(e) => e,
    }
}

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.test");
    let error = error_of(&[data("small.test"), missing.clone()]).await;
    assert!(matches!(&error, Error::Missing { path } if *path == missing));
    assert_eq!(
        error.to_string(),
        format!("{}: no such file or directory", missing.display())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_without_scripts_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    script(dir.path(), "notes.txt", "statement ok\nSELECT 1\n");
    let error = error_of(&[dir.path().to_path_buf()]).await;
    assert!(matches!(&error, Error::NoScripts { path } if path == dir.path()));
    assert!(
        error.to_string().contains("holds no .test files"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_searched_recursively() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    script(
        &dir.path().join("sub"),
        "b.test",
        "statement ok\nSELECT 1\n",
    );
    script(dir.path(), "a.test", "statement ok\nSELECT 1\n");
    script(dir.path(), "c.txt", "not a script\n");
    let scripts = vfs_slt::find_scripts(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        scripts,
        vec![dir.path().join("a.test"), dir.path().join("sub/b.test")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // An unknown record type.
        (
            "statement ok\nCREATE TABLE t(a)\n\nstatement okay\nSELECT 1\n",
            4,
            "invalid line",
        ),
        // A column type letter SQLite's format does not have.
        (
            "statement ok\nCREATE TABLE t(a)\n\nquery IX nosort\nSELECT 1, 2\n----\n1\n2\n",
            4,
            "invalid column type 'X'",
        ),
        // A hash threshold that is not a number.
        ("hash-threshold many\n", 1, "invalid number"),
        // A shell command: not SQLite's format, and never run.
        ("system ok\nrm -rf /\n", 1, "not part of SQLite's"),
    ];
    for (i, (text, line, message)) in cases.into_iter().enumerate() {
        // A good script first: nothing runs when any script is malformed.
        let path = script(dir.path(), &format!("bad{i}.test"), text);
        let error = error_of(&[data("small.test"), path.clone()]).await;
        match &error {
            Error::Malformed {
                path: named,
                line: at,
                ..
            } => {
                assert_eq!((named, *at), (&path, line), "{error}");
            }
            other => panic!("case {i}: expected Malformed, got {other:?}"),
        }
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("{}:{line}: ", path.display())),
            "{shown}"
        );
        assert!(shown.contains(message), "case {i}: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_text_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary.test");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let error = error_of(std::slice::from_ref(&path)).await;
    assert!(matches!(&error, Error::Read { path: named, .. } if *named == path));
    assert!(error.to_string().starts_with(&path.display().to_string()));
}
