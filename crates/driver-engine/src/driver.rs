//! [`EngineDriver`]: the runtime-facing driver for actors whose pages live in
//! PostgreSQL, so that an actor can move from one host to another.
//!
//! The pool bookkeeping is the shared [`StorageDriver`]; this type only
//! connects the storage first, so that a bad URL or a server that is down is
//! reported by `connect` and not by the first actor.

use vfs_pool::{PoolConfig, SqliteVfsPool, StorageDriver, WrapsStorageDriver};

use crate::{PgOptions, PgStorage, Result};

/// An [`ActorDriver`](vfs_pool::ActorDriver) over [`PgStorage`]: many hosts may run one each against
/// the same database; the last host to open an actor owns it and the others
/// are fenced.
pub struct EngineDriver {
    inner: StorageDriver<PgStorage>,
}

impl std::fmt::Debug for EngineDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineDriver")
            .field("storage", self.inner.storage())
            .finish_non_exhaustive()
    }
}

impl EngineDriver {
    /// Connects to PostgreSQL at `url` with [`PgOptions::default`] and builds
    /// a pool of SQLite instances with `config`.
    ///
    /// Fails with [`Error::InvalidUrl`](crate::Error::InvalidUrl) or
    /// [`Error::Connect`](crate::Error::Connect) (server down, wrong
    /// password, missing database) before any actor is touched.
    pub async fn connect(url: &str, config: PoolConfig) -> Result<Self> {
        Self::connect_with(url, config, PgOptions::default()).await
    }

    /// [`EngineDriver::connect`] with explicit connection settings.
    pub async fn connect_with(url: &str, config: PoolConfig, options: PgOptions) -> Result<Self> {
        let storage = PgStorage::connect_with(url, options).await?;
        Self::from_storage(storage, config)
    }

    /// A driver over an already connected storage.
    pub fn from_storage(storage: PgStorage, config: PoolConfig) -> Result<Self> {
        Ok(Self {
            inner: StorageDriver::new(storage, config)?,
        })
    }

    /// The pool of SQLite instances serving this driver's actors.
    pub fn pool(&self) -> &SqliteVfsPool {
        self.inner.pool()
    }

    /// The PostgreSQL storage (statistics, generations, direct stores).
    pub fn storage(&self) -> &PgStorage {
        self.inner.storage()
    }
}

impl WrapsStorageDriver for EngineDriver {
    type Storage = PgStorage;

    fn storage_driver(&self) -> &StorageDriver<PgStorage> {
        &self.inner
    }
}
