//! The crate's one error type.
//!
//! Opening a data directory can fail in ways a user must be able to tell
//! apart without reading a backtrace: the directory is missing, it cannot be
//! written, another process holds the data file, or the file is damaged.
//! Each gets its own variant with the path in the message; once open, store
//! calls report [`vfs_core::KvError`] and the pool reports
//! [`vfs_pool::Error`], both passed through unchanged.
//!
//! A variant's message says what failed; the cause (the operating system's
//! or the engine's own error) is its [`source`](std::error::Error::source),
//! kept typed and never repeated in the message, so a reporter that prints
//! the chain shows each cause once.

use std::path::PathBuf;

/// Everything opening or running the local-disk driver can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory does not exist. The driver does not create it, so
    /// a typo in a path cannot silently start an empty data set.
    #[error("data directory {path:?} does not exist")]
    MissingDir {
        /// The directory that was asked for.
        path: PathBuf,
    },
    /// The data directory path names something that is not a directory.
    #[error("data directory {path:?} is not a directory")]
    NotADirectory {
        /// The path that was asked for.
        path: PathBuf,
    },
    /// The data file could not be created, opened or written (for example a
    /// read-only directory or file system).
    #[error("cannot open data file {path:?} for writing")]
    Unwritable {
        /// The data file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another open store in this process) holds the
    /// data file. Only one owner may write it at a time.
    #[error("data file {path:?} is already open by another process or store")]
    Locked {
        /// The data file.
        path: PathBuf,
    },
    /// The data file is damaged or is not a data file of this driver.
    #[error("data file {path:?} is corrupted or not a driver-fs data file: {message}")]
    Corrupted {
        /// The data file.
        path: PathBuf,
        /// What was found wrong, in the engine's words when it has no error
        /// of its own to give.
        message: String,
        /// The error that showed the damage, when there is one (an I/O
        /// error of kind `InvalidData`).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The data file was written by an incompatible version of this driver.
    #[error("data file {path:?} has layout version {found}, this driver reads version {expected}")]
    UnsupportedVersion {
        /// The data file.
        path: PathBuf,
        /// The version stored in the file.
        found: u64,
        /// The version this build reads and writes.
        expected: u64,
    },
    /// Any other failure of the embedded database engine.
    #[error("embedded database error on {path:?}")]
    Database {
        /// The data file.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: redb::Error,
    },
    /// A background thread (the committer, or the one that opens the file
    /// off the async runtime) could not be started or died.
    #[error("background thread failed")]
    Thread(#[source] std::io::Error),
    /// The pool under the driver failed (configuration, lifecycle, SQLite).
    #[error(transparent)]
    Pool(#[from] vfs_pool::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
