//! The pool's one error type.
//!
//! Errors of SQLite and the store under it (SQLite codes, storage failures,
//! interruptions, limits) pass through unchanged inside [`Error::Sqlite`], so
//! a caller can always reach the SQLite code and the original storage error;
//! the other variants are the pool's own lifecycle errors.

/// Everything a pool call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool configuration is unusable (for example zero actors per instance).
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    /// The actor id is empty, longer than 256 bytes or contains NUL.
    #[error("invalid actor id: {reason}")]
    InvalidActorId {
        /// What is wrong with the id.
        reason: &'static str,
    },
    /// The pool is shutting down or shut down; no new work is accepted.
    #[error("the pool is shutting down")]
    ShuttingDown,
    /// The handle was released; acquire the actor again for a new handle.
    #[error("actor {actor:?} was released")]
    Released {
        /// The released actor.
        actor: String,
    },
    /// The database was closed; open it again from its handle.
    #[error("the database is closed")]
    Closed,
    /// The actor already has an open database. One actor owns one database
    /// at a time: two connections over one key-value namespace would each
    /// cache pages the other changes.
    #[error("actor {actor:?} already has an open database; close it first")]
    AlreadyOpen {
        /// The actor.
        actor: String,
    },
    /// The instance serving this actor could not start (for example the
    /// SQLite module failed to compile, or no thread could be spawned); the
    /// cause is the error's `source()`. The next acquire tries again.
    #[error("could not start a SQLite instance")]
    InstanceStart(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    /// The worker thread of the instance is gone (the instance was destroyed
    /// or its thread died); the call did not run, or its outcome is unknown.
    #[error("the instance serving this actor is gone")]
    InstanceGone,
    /// The instance serving this actor is broken: its guest trapped, a call
    /// panicked on its thread, or its thread hangs (one call held it past the
    /// bound of [`PoolConfig::close_timeout`](crate::PoolConfig::close_timeout)).
    /// It takes no new actors and is destroyed once its last actor is
    /// released; release this actor and acquire it again to continue on a
    /// healthy instance (its data is in its store).
    #[error(
        "the instance serving this actor is broken ({reason}); release the actor and \
         acquire it again to continue on a healthy instance"
    )]
    InstanceBroken {
        /// What broke the instance first.
        reason: String,
    },
    /// A `KvStore` called back into the pool from inside a call on the same
    /// instance (for example a co-tenant's query): that call would wait
    /// behind the very call that waits for the store, forever. Refused at once.
    #[error(
        "a KvStore called back into the pool from inside a call on the same instance; \
         this would deadlock"
    )]
    Reentrant,
    /// Closing gave up: one call held the instance's thread past the bound of
    /// [`PoolConfig::close_timeout`](crate::PoolConfig::close_timeout), so the
    /// thread is stuck, most likely in a store call that does not
    /// return. The actor's name is poisoned and the instance takes no new
    /// actors.
    #[error(
        "{operation} timed out after {after:?}: the instance's thread did not answer \
         (a store call hangs?); the instance takes no new actors"
    )]
    TimedOut {
        /// What timed out.
        operation: &'static str,
        /// The bound that passed.
        after: std::time::Duration,
    },
    /// The storage backend of a driver failed outside SQLite (opening,
    /// listing or deleting an actor's namespace).
    #[error(transparent)]
    Storage(vfs_core::KvError),
    /// A write this database handed to its store failed, or was not
    /// confirmed in time, after the call that made it had returned to the
    /// instance (see the crate's "Durable acknowledgements"). The call that
    /// made it and every later call fail with this: close the database and
    /// open it again, which reads the last durable state.
    #[error("the database is poisoned: a write did not reach its store: {0}")]
    Poisoned(vfs_core::KvError),
    /// The actor has no data in the driver's storage (an export or a
    /// snapshot of an actor that was never written, or was deleted).
    #[error("actor {actor:?} has no data")]
    NoSuchActor {
        /// The actor.
        actor: String,
    },
    /// An import into an actor that already has data, without asking to
    /// replace it.
    #[error("actor {actor:?} already has data; ask to replace it to overwrite it")]
    ActorExists {
        /// The actor.
        actor: String,
    },
    /// An import was refused before anything was stored: the file is not a
    /// SQLite database this store can keep (the words say why).
    #[error("cannot import this file: {reason}")]
    InvalidImport {
        /// What is wrong with the file.
        reason: String,
    },
    /// Reading an import or writing an export failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written.
        what: &'static str,
        /// The error of the reader or writer.
        #[source]
        source: std::io::Error,
    },
    /// An error from SQLite or the storage under it: SQLite code and message,
    /// the storage error, an interruption or a resource limit.
    #[error(transparent)]
    Sqlite(#[from] vfs_wasm::Error),
}

impl Error {
    /// Whether the statement was interrupted because it ran past its time budget.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Sqlite(vfs_wasm::Error::Interrupted { .. }))
    }

    /// Whether the call hit one of the pool's resource limits (a tenant's
    /// memory share or the result size cap), not a fault of the data.
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(self, Error::Sqlite(vfs_wasm::Error::LimitExceeded { .. }))
    }

    /// Whether the instance serving the actor is broken (a trap, a panic or
    /// a hang): release the actor and acquire it again.
    pub fn is_instance_broken(&self) -> bool {
        matches!(
            self,
            Error::InstanceBroken { .. } | Error::Sqlite(vfs_wasm::Error::Broken { .. })
        )
    }

    /// Whether the database is poisoned: its store panicked, did not
    /// answer, or could not tell whether a write was applied during a call,
    /// or a write handed to the store after its call failed
    /// ([`Error::Poisoned`]), so nothing more is accepted on it. Retrying
    /// the same database cannot help, even when [`kv_error`](Self::kv_error)
    /// is transient. Close it and open it again (the
    /// store is then read afresh); acknowledged writes are all there.
    pub fn is_poisoned(&self) -> bool {
        match self {
            Error::Sqlite(e) => e.is_poisoned(),
            Error::Poisoned(_) => true,
            _ => false,
        }
    }

    /// Whether the actor's store was fenced ([`vfs_core::KvError::Fenced`]):
    /// another owner took its data over, or this host's lease may have
    /// lapsed. Nothing is served from this database until its store allows
    /// again; retrying the same call cannot help.
    pub fn is_fenced(&self) -> bool {
        matches!(self.kv_error(), Some(vfs_core::KvError::Fenced { .. }))
    }

    /// The storage error behind this error, if storage is what failed (a
    /// store call, or the store's ownership check around every call).
    pub fn kv_error(&self) -> Option<&vfs_core::KvError> {
        match self {
            Error::Sqlite(e) => e.kv_error(),
            Error::Storage(kv) | Error::Poisoned(kv) => Some(kv),
            _ => None,
        }
    }
}

/// `Result` with the pool's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
