//! The crate's one error type, for the calls that are not key-value calls.
//!
//! Key-value calls (`get_batch`, `put_batch`, ...) fail with
//! [`vfs_core::KvError`] because that is the contract SQLite's VFS speaks;
//! this enum covers what happens around them: connecting, checking the
//! schema, and building the pool. Each variant's message says which of
//! those failed; the cause (PostgreSQL's or the network's own error) is its
//! [`source`](std::error::Error::source), kept typed and never repeated in
//! the message. tokio-postgres puts the useful part ("password
//! authentication failed") in its error's source rather than its message, so
//! print the whole chain (as `anyhow`'s `{:#}` does) to tell "wrong
//! password" from "server down".

/// Everything connecting to PostgreSQL or building the driver can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL could not be parsed or names no host.
    #[error("invalid PostgreSQL URL: {reason}")]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
        /// The parser's error, when it could not be parsed.
        #[source]
        source: Option<tokio_postgres::Error>,
    },
    /// An option of [`PgOptions`](crate::PgOptions) has no sensible meaning.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The connection pool could not be built from the options.
    #[error("cannot build the PostgreSQL connection pool")]
    PoolBuild(#[source] deadpool_postgres::BuildError),
    /// The server could not be reached, refused the credentials, or has no
    /// such database; the source holds the server's or the network's words.
    #[error("could not connect to PostgreSQL at {target}")]
    Connect {
        /// Host, port and database, without the password.
        target: String,
        /// The cause: the [`tokio_postgres::Error`] of the first connection,
        /// or the pool's own error (such as a timeout) when there is none.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Creating or upgrading the schema, or preparing the driver's
    /// statements, failed.
    #[error("schema migration failed while {step}")]
    Migration {
        /// What was being done.
        step: &'static str,
        /// PostgreSQL's error.
        #[source]
        source: tokio_postgres::Error,
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
        /// What failed, with the server's output when it ran.
        message: String,
        /// The cause, when it is an error of its own (an I/O or PostgreSQL
        /// error).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
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
///
/// Only for the [`vfs_core::KvError`] variants that carry a message and no
/// source (`Unavailable`, `Fenced`, `OutcomeUnknown`): there the cause can
/// travel only as text. Everywhere else the cause is kept as the source.
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
