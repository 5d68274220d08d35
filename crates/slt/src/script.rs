//! Reading a script: the `sqllogictest` crate's parser, after one
//! normalisation, and a check that every record is one this runner can
//! run as SQLite's runner would.
//!
//! The normalisation: SQLite's corpus puts comments after the engine name
//! of `skipif`/`onlyif` (`skipif mysql # not compatible`), which SQLite's
//! runner ignores and the crate's parser refuses. The comment is cut from
//! those lines before parsing; every line keeps its number.

use std::path::{Path, PathBuf};

use sqllogictest::{Connection, DefaultColumnType, QueryExpect, Record};

use crate::Error;
use crate::format::ColumnKind;

/// A parsed script, ready to run.
#[derive(Debug, Clone)]
pub struct Script {
    pub(crate) path: PathBuf,
    pub(crate) records: Vec<Record<DefaultColumnType>>,
}

impl Script {
    /// Reads and parses the script at `path`. A file that cannot be read,
    /// is not UTF-8 or holds a malformed record is an error naming the file
    /// (and the line, for a record).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the script at `path` (which is only used to name it).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let normalised = strip_condition_comments(text);
        let records = sqllogictest::parse_with_name::<DefaultColumnType>(
            &normalised,
            path.display().to_string(),
        )
        .map_err(|e| Error::Malformed {
            path: path.to_path_buf(),
            line: e.location().line(),
            message: e.kind().to_string(),
        })?;
        let lines: Vec<&str> = text.lines().collect();
        for record in &records {
            check(path, &lines, record)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            records,
        })
    }

    /// The script's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many statement and query records the script has.
    pub fn record_count(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Statement { .. } | Record::Query { .. }))
            .count()
    }
}

/// Cuts a `# comment` off `skipif`/`onlyif` lines, keeping every line.
fn strip_condition_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let is_condition = line.starts_with("skipif") || line.starts_with("onlyif");
        match line.find('#') {
            Some(at) if is_condition => out.push_str(line[..at].trim_end()),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Refuses what SQLite's format does not have and this runner cannot run
/// faithfully: type letters other than I, T and R, named connections, and
/// the crate's extensions that run commands or read other files.
fn check(path: &Path, lines: &[&str], record: &Record<DefaultColumnType>) -> Result<(), Error> {
    let malformed = |line: u32, message: String| Error::Malformed {
        path: path.to_path_buf(),
        line,
        message,
    };
    match record {
        Record::Query { loc, expected, .. } => {
            if let QueryExpect::Results { .. } = expected {
                let header = lines
                    .get(loc.line().saturating_sub(1) as usize)
                    .copied()
                    .unwrap_or("");
                let letters = header.split_whitespace().nth(1).unwrap_or("");
                if let Some(bad) = letters
                    .chars()
                    .find(|&c| ColumnKind::from_letter(c).is_none())
                {
                    return Err(malformed(
                        loc.line(),
                        format!(
                            "invalid column type {bad:?} in {letters:?}: each column is I, T or R"
                        ),
                    ));
                }
            }
            Ok(())
        }
        Record::Connection(Connection::Named(name)) => Err(malformed(
            0,
            format!("connection {name:?}: a script has one connection"),
        )),
        Record::Include { loc, .. } => Err(malformed(
            loc.line(),
            "include is not part of SQLite's sqllogictest format".to_owned(),
        )),
        Record::System { loc, .. } | Record::Let { loc, .. } => Err(malformed(
            loc.line(),
            "system and let are not part of SQLite's sqllogictest format".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// The column letters a query record declares (all valid: [`Script::parse`]
/// checked them).
pub(crate) fn declared_kinds(types: &[DefaultColumnType]) -> Vec<ColumnKind> {
    types
        .iter()
        .map(|t| match t {
            DefaultColumnType::Integer => ColumnKind::Integer,
            DefaultColumnType::FloatingPoint => ColumnKind::Real,
            _ => ColumnKind::Text,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_comments_are_cut_and_lines_kept() {
        let text =
            "skipif mysql # not compatible\r\nquery I nosort\r\nSELECT 1 # not a comment\r\n";
        assert_eq!(
            strip_condition_comments(text),
            "skipif mysql\nquery I nosort\nSELECT 1 # not a comment\n"
        );
    }
}
