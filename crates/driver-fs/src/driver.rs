//! The runtime-facing driver: the pool's bookkeeping over local-disk storage.
//!
//! All of the actor lifecycle (acquire, open, close, delete, shutdown) lives
//! once in [`vfs_pool::StorageDriver`]; this type only opens the storage off
//! the async runtime and gives it a name users can find.

use std::path::Path;

use vfs_pool::{PoolConfig, SqliteVfsPool, StorageDriver, WrapsStorageDriver};

use crate::{Error, FsOptions, FsStorage, Result};

/// An [`ActorDriver`](vfs_pool::ActorDriver) whose actors' databases live in one embedded database
/// file in a local directory.
///
/// ```no_run
/// use driver_fs::FsDriver;
/// use vfs_pool::{ActorDriver, PoolConfig, Value};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let driver = FsDriver::open("/var/lib/my-actors", PoolConfig::default()).await?;
/// let db = driver.open_database("actor-a").await?;
/// db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)").await?;
/// db.execute("INSERT INTO t (v) VALUES (?1)", &[Value::from("x")]).await?;
/// driver.shutdown().await;
/// # Ok(()) }
/// ```
pub struct FsDriver {
    inner: StorageDriver<FsStorage>,
}

impl std::fmt::Debug for FsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsDriver")
            .field("storage", self.inner.storage())
            .finish_non_exhaustive()
    }
}

impl FsDriver {
    /// Opens the data file in the existing directory `dir` (creating the file
    /// if needed) and starts a pool with `config`.
    ///
    /// Fails with a clear [`Error`] for a missing or unwritable directory, a
    /// data file held by another process, a corrupted data file, or an
    /// invalid pool configuration.
    pub async fn open(dir: impl AsRef<Path>, config: PoolConfig) -> Result<Self> {
        Self::open_with(dir, config, FsOptions::default()).await
    }

    /// [`open`](Self::open) with explicit storage options.
    pub async fn open_with(
        dir: impl AsRef<Path>,
        config: PoolConfig,
        options: FsOptions,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        // Opening reads (and by default verifies) the whole file: keep it
        // off the async runtime's threads when there is one.
        let storage = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || FsStorage::open_with(dir, options))
                .await
                .map_err(|e| Error::Thread(std::io::Error::other(e)))??,
            Err(_) => FsStorage::open_with(dir, options)?,
        };
        Ok(Self {
            inner: StorageDriver::new(storage, config)?,
        })
    }

    /// The pool serving this driver's actors.
    pub fn pool(&self) -> &SqliteVfsPool {
        self.inner.pool()
    }

    /// The storage under the driver (counters, limits, data file path).
    pub fn storage(&self) -> &FsStorage {
        self.inner.storage()
    }
}

impl WrapsStorageDriver for FsDriver {
    type Storage = FsStorage;

    fn storage_driver(&self) -> &StorageDriver<FsStorage> {
        &self.inner
    }
}
