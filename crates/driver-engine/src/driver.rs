//! [`EngineDriver`]: the runtime-facing driver for actors whose pages live in
//! PostgreSQL, so that an actor can move from one host to another.
//!
//! The pool bookkeeping is the shared [`StorageDriver`]; this type only
//! connects the storage first, so that a bad URL or a server that is down is
//! reported by `connect` and not by the first actor.

use vfs_pool::{ActorDriver, Database, PoolConfig, SqliteVfsPool, StorageDriver};

use crate::{PgOptions, PgStorage, Result};

/// An [`ActorDriver`] over [`PgStorage`]: many hosts may run one each against
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

#[async_trait::async_trait]
impl ActorDriver for EngineDriver {
    /// Acquires the actor and opens its database, taking ownership of it in
    /// PostgreSQL (fencing any other host that had it open).
    async fn open_database(&self, actor_id: &str) -> vfs_pool::Result<Database> {
        self.inner.open_database(actor_id).await
    }

    async fn delete_actor(&self, actor_id: &str) -> vfs_pool::Result<()> {
        self.inner.delete_actor(actor_id).await
    }

    async fn close_actor(&self, actor_id: &str) -> vfs_pool::Result<()> {
        self.inner.close_actor(actor_id).await
    }

    async fn list_actors(&self) -> vfs_pool::Result<Vec<String>> {
        self.inner.list_actors().await
    }

    fn open_actors(&self) -> Vec<String> {
        self.inner.open_actors()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
