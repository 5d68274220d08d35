//! What can stop a run before or between scripts. A record that fails is
//! not an error: it is counted and reported in the file's
//! [`FileReport`](crate::FileReport).

use std::path::PathBuf;

/// Why the runner could not run the scripts it was given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path given on the command line does not exist.
    #[error("{path}: no such file or directory")]
    Missing {
        /// The path as given.
        path: PathBuf,
    },
    /// A directory given on the command line holds no `.test` file, at any
    /// depth.
    #[error("{path}: directory holds no .test files")]
    NoScripts {
        /// The directory.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A script is not valid sqllogictest.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The script.
        path: PathBuf,
        /// The 1-based line of the record that is wrong.
        line: u32,
        /// What is wrong with it.
        message: String,
    },
    /// The engine could not be set up (the temporary directory, the
    /// driver, a database).
    #[error("setting up the {engine} engine: {message}")]
    Setup {
        /// The engine's name.
        engine: &'static str,
        /// What failed.
        message: String,
    },
}

/// A statement's failure inside an engine: SQLite's error or the stack's.
/// The runner matches `statement error` records against it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// From the pool (SQLite's code and message, a store error, a limit).
    #[error("{0}")]
    Pool(#[from] vfs_pool::Error),
    /// From native SQLite.
    #[error("{0}")]
    Native(#[from] rusqlite::Error),
    /// A conversion query returned something other than one value.
    #[error("converting a value: {0}")]
    Conversion(String),
    /// The runner asked for a second connection; a script has one.
    #[error("a script has exactly one connection")]
    SecondConnection,
}
