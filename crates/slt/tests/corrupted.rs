//! The runner does not hide failures: a copy of a corpus script with one
//! expected value changed fails, and the report names that record.

mod common;

use std::path::{Path, PathBuf};

use common::{corpus, run};
use vfs_slt::{Engine, RunReport};

/// Copies the corpus script `relative` into `dir`, replacing the line
/// `from` (the first one after line `after`) with `to`. Returns the copy
/// and the 1-based line of the changed value.
fn corrupt(dir: &Path, relative: &str, after: &str, from: &str, to: &str) -> (PathBuf, usize) {
    let text = std::fs::read_to_string(corpus(relative)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let start = lines.iter().position(|l| l == after).expect("anchor line");
    let at = start
        + lines[start..]
            .iter()
            .position(|l| l == from)
            .expect("value line");
    to.clone_into(&mut lines[at]);
    let copy = dir.join(Path::new(relative).file_name().unwrap());
    std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
    (copy, at + 1)
}

/// The line of the record whose results include line `value_line`: the
/// `query` line above it.
fn record_line(path: &Path, value_line: usize) -> u32 {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[..value_line]
        .iter()
        .rposition(|l| l.starts_with("query "))
        .unwrap();
    u32::try_from(header + 1).unwrap()
}

fn only_failure(report: &RunReport) -> &vfs_slt::Failure {
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(report.failed(), 1);
    assert!(!report.success());
    assert_eq!(report.files[0].failed, 1);
    failures[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_value_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // In slt_lang_replace.test the row inserted as 'insert' reads back as
    // "2 / insert"; the copy expects "2 / inserted".
    let (copy, value_line) = corrupt(
        dir.path(),
        "evidence/slt_lang_replace.test",
        "INSERT INTO t1 VALUES(2, 'insert')",
        "insert",
        "inserted",
    );
    let original = run(&[corpus("evidence/slt_lang_replace.test")], Engine::Pool)
        .await
        .unwrap();
    assert!(original.success());

    let report = run(std::slice::from_ref(&copy), Engine::Pool)
        .await
        .unwrap();
    let failure = only_failure(&report);
    assert_eq!(failure.file, copy);
    assert_eq!(failure.line, record_line(&copy, value_line));
    assert_eq!(failure.sql, "SELECT x, y FROM t1 WHERE x=2");
    assert_eq!(failure.expected, "2\ninserted");
    assert_eq!(failure.actual, "2 insert");
    // Every other record still ran and passed.
    assert_eq!(report.passed(), original.passed() - 1);
    let printed = failure.to_string();
    assert!(printed.contains(&format!("{}:{}", copy.display(), failure.line)));
    assert_eq!(report.summary().split(',').nth(1), Some(" 1 failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_hash_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (copy, value_line) = corrupt(
        dir.path(),
        "select1.test",
        "query I nosort",
        "30 values hashing to 3c13dee48d9356ae19af2515e05e6b54",
        "30 values hashing to 00000000000000000000000000000000",
    );
    let report = run(std::slice::from_ref(&copy), Engine::Native)
        .await
        .unwrap();
    let failure = only_failure(&report);
    assert_eq!(failure.file, copy);
    assert_eq!(failure.line, record_line(&copy, value_line));
    assert!(
        failure
            .expected
            .contains("00000000000000000000000000000000")
    );
    assert!(failure.actual.contains("3c13dee48d9356ae19af2515e05e6b54"));
}
