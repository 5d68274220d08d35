//! Running scripts: each on a fresh database of the chosen engine, record
//! by record through the `sqllogictest` runner, every failure kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver_fs::FsDriver;
use sqllogictest::{
    Condition, Control, QueryExpect, Record, RecordOutput, ResultMode, Runner, TestError,
    TestErrorKind, strict_column_validator,
};
use vfs_pool::{ActorDriver, PoolConfig};

use crate::engine::{Backend, NativeBackend, PoolBackend, Shared, SltDb, lock};
use crate::script::declared_kinds;
use crate::{Engine, EngineError, Error, Failure, FileReport, RunReport, Script, find_scripts};

/// The engine name `skipif`/`onlyif` records are evaluated against.
pub const ENGINE_NAME: &str = "sqlite";

/// Results with more values than this are compared as "N values hashing to
/// <md5>" until a script's `hash-threshold` says otherwise: the threshold
/// SQLite's corpus was written with.
pub const DEFAULT_HASH_THRESHOLD: usize = 8;

/// Time budget of one statement on the pool engine. The pool's default
/// (10 s) is a tenant limit, not a compatibility question: the slowest
/// statements of the corpus take seconds, and a slow machine must not turn
/// them into failures.
pub const POOL_STATEMENT_BUDGET: Duration = Duration::from_mins(5);

/// Finds the scripts `paths` names (see [`find_scripts`]), parses all of
/// them (so a malformed record stops the run before anything ran), and runs
/// each on a fresh database of `engine`, calling `on_file` after each.
pub async fn run_paths(
    paths: &[PathBuf],
    engine: Engine,
    on_file: impl FnMut(&FileReport),
) -> Result<RunReport, Error> {
    let scripts = find_scripts(paths)?
        .iter()
        .map(|path| Script::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    run_scripts(scripts, engine, on_file).await
}

/// Runs parsed scripts, each on a fresh database of `engine`, calling
/// `on_file` after each.
pub async fn run_scripts(
    scripts: Vec<Script>,
    engine: Engine,
    mut on_file: impl FnMut(&FileReport),
) -> Result<RunReport, Error> {
    let started = Instant::now();
    let setup = |message: String| Error::Setup {
        engine: engine.name(),
        message,
    };
    let dir = tempfile::Builder::new()
        .prefix("vfs-slt-")
        .tempdir()
        .map_err(|e| setup(format!("temporary directory: {e}")))?;
    let mut files = Vec::with_capacity(scripts.len());
    match engine {
        Engine::Pool => {
            let config = PoolConfig {
                statement_timeout: Some(POOL_STATEMENT_BUDGET),
                ..PoolConfig::default()
            };
            let driver = FsDriver::open(dir.path(), config)
                .await
                .map_err(|e| setup(format!("driver-fs on {}: {e}", dir.path().display())))?;
            for (i, script) in scripts.into_iter().enumerate() {
                let started = Instant::now();
                let actor = format!("slt-{i}");
                let db = match driver.open_database(&actor).await {
                    Ok(db) => db,
                    Err(e) => {
                        driver.shutdown().await;
                        return Err(setup(format!("opening actor {actor}: {e}")));
                    }
                };
                let report = run_script(script, PoolBackend { db }, started).await;
                // Its data is of no further use; deleting keeps the store
                // small for the next script.
                if let Err(e) = driver.delete_actor(&actor).await {
                    driver.shutdown().await;
                    return Err(setup(format!("deleting actor {actor}: {e}")));
                }
                on_file(&report);
                files.push(report);
            }
            driver.shutdown().await;
        }
        Engine::Native => {
            for (i, script) in scripts.into_iter().enumerate() {
                let started = Instant::now();
                let file = dir.path().join(format!("slt-{i}.db"));
                let conn = rusqlite::Connection::open(&file)
                    .map_err(|e| setup(format!("opening {}: {e}", file.display())))?;
                let report = run_script(script, NativeBackend { conn }, started).await;
                let _ = std::fs::remove_file(&file);
                on_file(&report);
                files.push(report);
            }
        }
    }
    Ok(RunReport {
        engine,
        files,
        elapsed: started.elapsed(),
    })
}

/// Runs one script on `backend`; the report's time counts from `started`.
async fn run_script<B: Backend + 'static>(
    script: Script,
    backend: B,
    started: Instant,
) -> FileReport {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut db = Some(SltDb {
        backend,
        shared: Arc::clone(&shared),
    });
    let mut runner =
        Runner::new(move || std::future::ready(db.take().ok_or(EngineError::SecondConnection)));
    runner.with_hash_threshold(DEFAULT_HASH_THRESHOLD);
    runner.with_validator(exact_validator);
    runner.with_column_validator(strict_column_validator);
    // SQLite's scripts list the expected values one per line.
    let _ = runner
        .run_async(Record::Control(Control::ResultMode(ResultMode::ValueWise)))
        .await;

    let Script { path, records } = script;
    let mut report = FileReport {
        path: path.clone(),
        passed: 0,
        failed: 0,
        skipped: 0,
        elapsed: Duration::ZERO,
        failures: Vec::new(),
    };
    // The parser hands the conditions written before a `halt` on to the
    // next statement or query; `pending` tracks them so the halt gets
    // them and that record does not.
    let mut pending: Vec<Condition> = Vec::new();
    let mut inherited = 0;
    let mut halted = false;
    for mut record in records {
        match &mut record {
            Record::Condition(condition) => pending.push(condition.clone()),
            Record::Halt { .. } => {
                if pending.iter().all(runs_here) {
                    halted = true;
                }
                inherited += pending.len();
                pending.clear();
                continue;
            }
            Record::Statement { conditions, .. } | Record::Query { conditions, .. } => {
                conditions.drain(..inherited.min(conditions.len()));
                inherited = 0;
                pending.clear();
                if halted {
                    report.skipped += 1;
                    continue;
                }
            }
            _ => {}
        }
        let declared = match &record {
            Record::Query {
                expected: QueryExpect::Results { types, .. },
                ..
            } => Some(declared_kinds(types)),
            Record::Query { .. } => Some(Vec::new()),
            _ => None,
        };
        let is_record = matches!(record, Record::Statement { .. } | Record::Query { .. });
        lock(&shared).declared = declared;
        let outcome = runner.run_async(record).await;
        lock(&shared).declared = None;
        if !is_record {
            continue;
        }
        match outcome {
            Ok(RecordOutput::Nothing) => report.skipped += 1,
            Ok(_) => report.passed += 1,
            Err(error) => {
                report.failed += 1;
                report.failures.push(failure(&path, &error));
            }
        }
    }
    runner.shutdown_async().await;
    if let Some(message) = lock(&shared).close_error.take() {
        report.failed += 1;
        report.failures.push(Failure {
            file: path,
            line: 0,
            sql: "(closing the database)".to_owned(),
            expected: "ok".to_owned(),
            actual: message,
        });
    }
    report.elapsed = started.elapsed();
    report
}

/// Whether a condition lets a record run on this engine.
fn runs_here(condition: &Condition) -> bool {
    match condition {
        Condition::OnlyIf { label } => label == ENGINE_NAME,
        Condition::SkipIf { label } => label != ENGINE_NAME,
    }
}

/// Compares values exactly, one per line, as SQLite's runner does (the
/// crate's default collapses whitespace, which could hide a difference).
fn exact_validator(
    _normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(row, want)| row.len() == 1 && row[0] == *want)
}

/// The report of a record the runner says failed.
fn failure(path: &Path, error: &TestError) -> Failure {
    let (sql, expected, actual) = match error.kind() {
        TestErrorKind::QueryResultMismatch {
            sql,
            expected,
            actual,
        } => (sql, expected, actual),
        TestErrorKind::QueryResultColumnsMismatch {
            sql,
            expected,
            actual,
        } => (
            sql,
            format!("columns {expected}"),
            format!("columns {actual}"),
        ),
        TestErrorKind::Fail { sql, err, .. } => (sql, "ok".to_owned(), format!("error: {err}")),
        TestErrorKind::Ok { sql, .. } => (sql, "an error".to_owned(), "ok".to_owned()),
        TestErrorKind::ErrorMismatch {
            sql,
            err,
            expected_err,
            ..
        } => (
            sql,
            format!("error {expected_err}"),
            format!("error: {err}"),
        ),
        TestErrorKind::StatementResultMismatch {
            sql,
            expected,
            actual,
        } => (sql, format!("{expected} rows affected"), actual),
        other => (String::new(), String::new(), other.to_string()),
    };
    Failure {
        file: path.to_path_buf(),
        line: error.location().line(),
        sql,
        expected,
        actual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_evaluated_for_sqlite() {
        let only = |label: &str| Condition::OnlyIf {
            label: label.to_owned(),
        };
        let skip = |label: &str| Condition::SkipIf {
            label: label.to_owned(),
        };
        assert!(runs_here(&only("sqlite")));
        assert!(!runs_here(&only("mysql")));
        assert!(runs_here(&skip("mssql")));
        assert!(!runs_here(&skip("sqlite")));
    }

    #[test]
    fn values_compare_exactly() {
        let actual = vec![vec!["a  b".to_owned()], vec!["1".to_owned()]];
        assert!(exact_validator(
            sqllogictest::default_normalizer,
            &actual,
            &["a  b".to_owned(), "1".to_owned()]
        ));
        assert!(!exact_validator(
            sqllogictest::default_normalizer,
            &actual,
            &["a b".to_owned(), "1".to_owned()]
        ));
        assert!(!exact_validator(
            sqllogictest::default_normalizer,
            &actual,
            &["a  b".to_owned()]
        ));
    }
}
