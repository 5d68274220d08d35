//! One error type for the crate, so a caller can tell a SQL error from a
//! storage failure, a resource limit, a refused name or a dead instance, and
//! still reach the original storage error through `source()`.

use vfs_core::KvError;

/// Everything that can go wrong in `vfs-wasm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite returned an error. For I/O errors `kv` holds the storage error
    /// that caused it, which is also the `source()` (so the message does
    /// not repeat it).
    ///
    /// When a file operation failed, `code` and `message` are those of that
    /// operation (the first one with a storage error behind it): the message
    /// names it ("commit of the main file failed (...)"),
    /// where SQLite would say "disk I/O error" and may report the code of
    /// its retry through the journal instead.
    #[error("sqlite error {code}: {message}")]
    Sqlite {
        /// The extended SQLite result code (for a failed file operation, the
        /// one it returned to SQLite, such as `SQLITE_IOERR_COMMIT_ATOMIC`).
        code: i32,
        /// SQLite's message, or the failed file operation and its storage
        /// error.
        message: String,
        /// The storage failure behind an I/O error, if any.
        #[source]
        kv: Option<KvError>,
    },
    /// The statement ran past its time budget and was interrupted; the
    /// database is still usable.
    #[error("statement interrupted: time budget of {budget_ms} ms exceeded")]
    Interrupted {
        /// The budget that was exceeded, in milliseconds.
        budget_ms: u64,
    },
    /// A resource limit was hit: the instance memory cap, SQLite's length
    /// limits, or an out-of-memory condition inside the guest. The instance
    /// keeps serving.
    #[error("limit exceeded: {what}")]
    LimitExceeded {
        /// Which limit, in words.
        what: String,
    },
    /// The guest trapped; this instance can no longer be used and every one
    /// of its databases returns this error.
    #[error("instance is broken: {reason}")]
    Broken {
        /// What happened first.
        reason: String,
    },
    /// The database can no longer be trusted until it is reopened: its
    /// store panicked, did not answer in time, or could not tell whether a
    /// write was applied ([`KvError::OutcomeUnknown`]) during a call, so what
    /// the store holds may differ from what SQLite believes. Every later call
    /// on it fails with this error; close it and open it again (the store is
    /// then read afresh). The other databases of the instance are unaffected.
    ///
    /// The call that met an `OutcomeUnknown` itself fails with
    /// [`Error::Sqlite`] carrying that store error, so the caller gets it
    /// intact; [`Error::is_poisoned`] is true for both.
    #[error("database poisoned until it is reopened: {reason}")]
    Poisoned {
        /// What happened first, with the store's own message.
        reason: String,
    },
    /// The database's store refused the call outside SQLite: its
    /// [`KvStore::check_owner`](vfs_core::KvStore::check_owner) failed, for
    /// example with [`KvError::Fenced`] once its lease may have lapsed.
    ///
    /// The check runs before every call and after it, because SQLite can
    /// answer a read from its page cache without asking the store. Refused
    /// before, nothing ran. Refused after, SQLite did run: its rows are
    /// withheld, and whether a write it made reached the store is unknown
    /// (the message says which). The database is not poisoned: once the
    /// store allows again (a renewed lease: nobody else took the data), the
    /// same connection carries on.
    #[error("{message}")]
    Store {
        /// Which check refused, in words.
        message: String,
        /// The store's error.
        #[source]
        kv: KvError,
    },
    /// No open database has this id in this instance.
    #[error("unknown database id")]
    UnknownDatabase,
    /// A database with this name is already open in the instance.
    #[error("database name {0:?} is already in use in this instance")]
    NameInUse(String),
    /// The name cannot be a database name.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why.
        reason: String,
    },
    /// An SQL text or parameter could not be passed to SQLite (for example
    /// an interior NUL in SQL, or more parameters than the statement has).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The wasm module could not be compiled; wasmer's error is the
    /// `source()`.
    #[error("cannot compile the SQLite module")]
    Compile(#[source] wasmer::CompileError),
    /// The module could not be instantiated (missing import, memory limit
    /// below the module's minimum, a trap while SQLite initializes, ...).
    #[error("cannot instantiate the SQLite module: {what}")]
    Instantiate {
        /// Which step failed.
        what: String,
        /// wasmer's error (a `MemoryError`, `InstantiationError`,
        /// `ExportError` or `RuntimeError`), when one is behind it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The compiled-module cache could not be written. (Unreadable or
    /// corrupt cache files are not errors: they are rebuilt.)
    #[error("compiled-module cache error: {what}")]
    Cache {
        /// What could not be done, with the path.
        what: String,
        /// The `io::Error`, or wasmer's `SerializeError`.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// An [`Error::Instantiate`] for step `what`, caused by `source`.
    pub(crate) fn instantiate(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Instantiate {
            what: what.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The storage error behind this error, if a store call (or a store's
    /// ownership check) is what failed.
    pub fn kv_error(&self) -> Option<&KvError> {
        match self {
            Error::Sqlite { kv, .. } => kv.as_ref(),
            Error::Store { kv, .. } => Some(kv),
            _ => None,
        }
    }

    /// Whether the database must be closed and opened again before it
    /// serves anything more: it is [`Error::Poisoned`], or this call
    /// poisoned it with a store error whose outcome is unknown
    /// ([`KvError::is_outcome_unknown`]).
    pub fn is_poisoned(&self) -> bool {
        match self {
            Error::Poisoned { .. } => true,
            Error::Sqlite { kv: Some(kv), .. } => kv.is_outcome_unknown(),
            _ => false,
        }
    }
}

/// Errors cross threads (a pool hands them from its instance threads to
/// the callers).
const _: () = {
    const fn sendable<T: Send + Sync + 'static>() {}
    sendable::<Error>();
};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
