//! What a run found: per file, per failed record, and in total.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::Engine;

/// One record that did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The script.
    pub file: PathBuf,
    /// The 1-based line where the record starts (0 for a failure that
    /// belongs to no record, such as closing the database).
    pub line: u32,
    /// The record's SQL.
    pub sql: String,
    /// What the script expects: values one per line, a hash line, `ok` or
    /// an error.
    pub expected: String,
    /// What the engine gave, in the same form.
    pub actual: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "FAILED {}:{}", self.file.display(), self.line)?;
        block(f, "sql", &self.sql)?;
        block(f, "expected", &self.expected)?;
        block(f, "actual", &self.actual)
    }
}

/// Writes `label:` and `text`, each line of a multi-line text indented.
fn block(f: &mut fmt::Formatter<'_>, label: &str, text: &str) -> fmt::Result {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    writeln!(f, "  {label:<9} {first}")?;
    for line in lines {
        writeln!(f, "  {:<9} {line}", "")?;
    }
    Ok(())
}

/// The outcome of one script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The script.
    pub path: PathBuf,
    /// Records (statements and queries) that ran and passed.
    pub passed: usize,
    /// Records that ran and failed; each is in `failures`.
    pub failed: usize,
    /// Records not run: excluded for engine `sqlite` by `skipif`/`onlyif`,
    /// or after a `halt` that applies to it.
    pub skipped: usize,
    /// Wall time of the script, opening and closing its database included.
    pub elapsed: Duration,
    /// The failed records, in file order.
    pub failures: Vec<Failure>,
}

impl FileReport {
    /// Records that ran: passed plus failed.
    pub fn run(&self) -> usize {
        self.passed + self.failed
    }
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} run, {} passed, {} failed, {} skipped in {:.2} s",
            self.path.display(),
            self.run(),
            self.passed,
            self.failed,
            self.skipped,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The outcome of a run over several scripts on one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The engine the scripts ran on.
    pub engine: Engine,
    /// One report per script, in the order they ran.
    pub files: Vec<FileReport>,
    /// Wall time of the whole run, the engine's set-up included.
    pub elapsed: Duration,
}

impl RunReport {
    /// Records that passed, over all files.
    pub fn passed(&self) -> usize {
        self.files.iter().map(|f| f.passed).sum()
    }

    /// Records that failed, over all files.
    pub fn failed(&self) -> usize {
        self.files.iter().map(|f| f.failed).sum()
    }

    /// Records skipped, over all files.
    pub fn skipped(&self) -> usize {
        self.files.iter().map(|f| f.skipped).sum()
    }

    /// Every failure, file by file.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.files.iter().flat_map(|f| f.failures.iter())
    }

    /// True when no record failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// The closing line: `slt: N passed, M failed`, with the skipped count
    /// after it when there are any.
    pub fn summary(&self) -> String {
        let line = format!("slt: {} passed, {} failed", self.passed(), self.failed());
        match self.skipped() {
            0 => line,
            skipped => format!("{line}, {skipped} skipped"),
        }
    }
}
