//! The crate's one error type, for the calls that are not key-value calls.
//!
//! Key-value calls (`get_batch`, `put_batch`, ...) fail with
//! [`vfs_core::KvError`] because that is the contract SQLite's VFS speaks;
//! this enum covers what happens around them: connecting, checking the
//! schema, and building the pool. Each variant says which of those failed and
//! carries PostgreSQL's own words, so "wrong password" and "server down" read
//! differently.

/// Everything connecting to PostgreSQL or building the driver can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL could not be parsed or names no host.
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// An option of [`PgOptions`](crate::PgOptions) has no sensible meaning.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The server could not be reached, refused the credentials, or has no
    /// such database. `message` holds the server's or the network's words.
    #[error("could not connect to PostgreSQL at {target}: {message}")]
    Connect {
        /// Host, port and database, without the password.
        target: String,
        /// The cause, with every layer of the error chain.
        message: String,
    },
    /// Creating or upgrading the schema failed.
    #[error("schema migration failed: {message}")]
    Migration {
        /// The cause, with every layer of the error chain.
        message: String,
    },
    /// The database holds a schema written by a newer version of this crate;
    /// running against it could corrupt data, so the connection is refused.
    #[error(
        "the database schema is at version {found}, newer than the {supported} this build knows"
    )]
    SchemaTooNew {
        /// Highest migration version recorded in the database.
        found: i32,
        /// Highest migration version this build knows.
        supported: i32,
    },
    /// The throwaway test server could not be created, started or used
    /// (feature `testing`).
    #[cfg(feature = "testing")]
    #[error("test server: {message}")]
    TestServer {
        /// What failed, with the server's output.
        message: String,
    },
    /// Building the SQLite pool over the storage failed.
    #[error(transparent)]
    Pool(#[from] vfs_pool::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Renders an error and all its sources on one line, since PostgreSQL's
/// client puts the useful part ("password authentication failed") in the
/// source rather than the top-level message.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}
