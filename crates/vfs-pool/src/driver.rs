//! What an actor runtime calls: one database per actor, on durable storage.
//!
//! [`ActorDriver`] is the runtime-facing trait. Storage backends implement the
//! smaller [`ActorStorage`] (give me the key-value namespace of this actor,
//! delete it, list them) and get a complete driver from [`StorageDriver`],
//! so the local-disk and PostgreSQL drivers share one implementation of the
//! pool bookkeeping.

use std::collections::HashMap;
use std::sync::Arc;

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex as AsyncMutex;
use vfs_core::{KvError, KvStore};

use crate::archive::{ActorInfo, ImportMode, Snapshot};
use crate::{Database, Error, PoolConfig, PooledHandle, Result, SqliteVfsPool};

/// The per-actor database service a runtime uses.
#[async_trait::async_trait]
pub trait ActorDriver: Send + Sync {
    /// Acquires the actor's seat and opens its database on the actor's own
    /// storage namespace. Opening an actor that is already open returns the
    /// open database; once that database was closed (with
    /// [`Database::close`]), it opens the actor afresh.
    async fn open_database(&self, actor_id: &str) -> Result<Database>;
    /// Closes the actor (if open), releases its seat, and deletes all of its
    /// stored data and nothing else.
    async fn delete_actor(&self, actor_id: &str) -> Result<()>;
    /// Closes the actor's database and releases its seat; its data stays.
    async fn close_actor(&self, actor_id: &str) -> Result<()>;
    /// Every actor that has data in the storage, sorted.
    async fn list_actors(&self) -> Result<Vec<String>>;
    /// Actors whose database is open through this driver, sorted.
    fn open_actors(&self) -> Vec<String>;
    /// Every actor that has data, sorted, with the size of its database.
    /// Takes no ownership.
    async fn actor_sizes(&self) -> Result<Vec<ActorInfo>>;
    /// A private, consistent copy of the actor's database, open for
    /// queries, taken without ownership: a host that owns the actor keeps
    /// serving it. See [`crate::archive`]. [`Error::NoSuchActor`] when the
    /// actor has no data.
    async fn snapshot(&self, actor_id: &str) -> Result<Snapshot>;
    /// Writes a consistent snapshot of the actor's database to `writer` as
    /// one standard SQLite file; returns its size. Takes no ownership.
    async fn export(
        &self,
        actor_id: &str,
        writer: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64>;
    /// Reads a standard SQLite file from `reader` into the actor, after
    /// checking it (header, page size, `PRAGMA integrity_check`) before
    /// anything is stored; returns its size. A file that is not SQLite,
    /// truncated or corrupt fails with [`Error::InvalidImport`] and leaves
    /// nothing behind. An actor that has data is refused with
    /// [`Error::ActorExists`] unless `mode` is [`ImportMode::Replace`].
    /// Takes ownership of the actor, like opening it.
    async fn import(
        &self,
        actor_id: &str,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        mode: ImportMode,
    ) -> Result<u64>;
    /// Closes every database, shuts the pool down and closes the storage.
    async fn shutdown(&self);
}

/// A storage backend seen as one key-value namespace per actor.
#[async_trait::async_trait]
pub trait ActorStorage: Send + Sync + 'static {
    /// The actor's namespace. Backends with ownership (fencing) take it here.
    async fn open_actor(&self, actor_id: &str) -> Result<Arc<dyn KvStore>, KvError>;
    /// Deletes every key of the actor's namespace.
    async fn delete_actor(&self, actor_id: &str) -> Result<(), KvError>;
    /// Every actor with data, sorted.
    async fn list_actors(&self) -> Result<Vec<String>, KvError>;
    /// Every key and value of the actor, read at one point in time (one
    /// transaction or statement, so whole writes only), WITHOUT taking
    /// ownership: an owner elsewhere keeps its store. Empty when the actor
    /// has no data.
    async fn snapshot(&self, actor_id: &str) -> Result<Vec<(Bytes, Bytes)>, KvError>;
    /// Whether the actor has any data, without taking ownership. The
    /// default reads a whole snapshot; backends answer with one probe.
    async fn has_data(&self, actor_id: &str) -> Result<bool, KvError> {
        Ok(!self.snapshot(actor_id).await?.is_empty())
    }
    /// Every actor with data, sorted, with its value of `key` (read at one
    /// point in time, without taking ownership).
    async fn list_values(&self, key: &[u8]) -> Result<Vec<(String, Option<Bytes>)>, KvError>;
    /// Flushes and closes the backend; later calls fail.
    async fn close(&self);
}

/// Number of per-actor lock stripes.
const STRIPES: usize = 64;

/// An [`ActorDriver`] over any [`ActorStorage`], backed by a
/// [`SqliteVfsPool`].
pub struct StorageDriver<S: ActorStorage> {
    pool: SqliteVfsPool,
    storage: S,
    open: parking_lot::Mutex<HashMap<String, (PooledHandle, Database)>>,
    /// Serializes open/delete/close of one actor so two concurrent opens
    /// cannot both open its database. Striped by the actor id's hash: distinct
    /// actors rarely wait for each other, and nothing grows per actor.
    stripes: Vec<AsyncMutex<()>>,
}

impl<S: ActorStorage> StorageDriver<S> {
    /// A driver with a new pool of the given configuration over `storage`.
    pub fn new(storage: S, config: PoolConfig) -> Result<Self> {
        Ok(Self {
            pool: SqliteVfsPool::new(config)?,
            storage,
            open: parking_lot::Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| AsyncMutex::new(())).collect(),
        })
    }

    /// The pool serving this driver's actors.
    pub fn pool(&self) -> &SqliteVfsPool {
        &self.pool
    }

    /// The storage backend.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn stripe(&self, actor_id: &str) -> &AsyncMutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        actor_id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    /// Whether this driver has the actor's database open.
    pub(crate) fn is_open(&self, actor_id: &str) -> bool {
        self.open.lock().contains_key(actor_id)
    }

    pub(crate) async fn close_locked(&self, actor_id: &str) -> Result<()> {
        let entry = self.open.lock().remove(actor_id);
        if let Some((handle, db)) = entry {
            let closed = db.close().await;
            handle.release().await;
            closed?;
        }
        Ok(())
    }
}

/// A named driver that is a [`StorageDriver`] underneath (the local-disk and
/// PostgreSQL drivers): implementing this one method makes it an
/// [`ActorDriver`] that delegates every call.
pub trait WrapsStorageDriver: Send + Sync {
    /// The storage of the wrapped driver.
    type Storage: ActorStorage;
    /// The wrapped driver.
    fn storage_driver(&self) -> &StorageDriver<Self::Storage>;
}

#[async_trait::async_trait]
impl<T: WrapsStorageDriver> ActorDriver for T {
    async fn open_database(&self, actor_id: &str) -> Result<Database> {
        self.storage_driver().open_database(actor_id).await
    }

    async fn delete_actor(&self, actor_id: &str) -> Result<()> {
        self.storage_driver().delete_actor(actor_id).await
    }

    async fn close_actor(&self, actor_id: &str) -> Result<()> {
        self.storage_driver().close_actor(actor_id).await
    }

    async fn list_actors(&self) -> Result<Vec<String>> {
        self.storage_driver().list_actors().await
    }

    fn open_actors(&self) -> Vec<String> {
        self.storage_driver().open_actors()
    }

    async fn actor_sizes(&self) -> Result<Vec<ActorInfo>> {
        self.storage_driver().actor_sizes().await
    }

    async fn snapshot(&self, actor_id: &str) -> Result<Snapshot> {
        self.storage_driver().snapshot(actor_id).await
    }

    async fn export(
        &self,
        actor_id: &str,
        writer: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        self.storage_driver().export(actor_id, writer).await
    }

    async fn import(
        &self,
        actor_id: &str,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        mode: ImportMode,
    ) -> Result<u64> {
        self.storage_driver().import(actor_id, reader, mode).await
    }

    async fn shutdown(&self) {
        self.storage_driver().shutdown().await;
    }
}

/// The calls of [`ActorDriver`], implemented once here for every driver.
impl<S: ActorStorage> StorageDriver<S> {
    /// See [`ActorDriver::open_database`].
    pub async fn open_database(&self, actor_id: &str) -> Result<Database> {
        let _serial = self.stripe(actor_id).lock().await;
        let already = self.open.lock().get(actor_id).cloned();
        if let Some((handle, db)) = already {
            if !db.is_closed() && !handle.is_released() {
                return Ok(db);
            }
            // The caller closed it with `Database::close` (a poisoned
            // database must be) or released its handle: forget it and open
            // the actor afresh.
            self.open.lock().remove(actor_id);
            handle.release().await;
        }
        let handle = self.pool.acquire(actor_id).await?;
        let opened = async {
            let kv = self
                .storage
                .open_actor(actor_id)
                .await
                .map_err(Error::Storage)?;
            handle.open(kv).await
        }
        .await;
        match opened {
            Ok(db) => {
                self.open
                    .lock()
                    .insert(actor_id.to_owned(), (handle, db.clone()));
                Ok(db)
            }
            Err(e) => {
                handle.release().await;
                Err(e)
            }
        }
    }

    /// See [`ActorDriver::delete_actor`].
    pub async fn delete_actor(&self, actor_id: &str) -> Result<()> {
        crate::validate_actor_id(actor_id)?;
        let _serial = self.stripe(actor_id).lock().await;
        // Even if closing fails the seat is released; the data is deleted
        // anyway, since that is what was asked.
        let closed = self.close_locked(actor_id).await;
        // A write the close gave up waiting for could land after the
        // deletion and bring part of the data back: wait for it first.
        self.pool.settle_earlier(actor_id).await?;
        self.storage
            .delete_actor(actor_id)
            .await
            .map_err(Error::Storage)?;
        if let Err(e) = closed {
            tracing::warn!(actor = actor_id, error = %e, "close before delete failed");
        }
        Ok(())
    }

    /// See [`ActorDriver::close_actor`].
    pub async fn close_actor(&self, actor_id: &str) -> Result<()> {
        let _serial = self.stripe(actor_id).lock().await;
        self.close_locked(actor_id).await
    }

    /// See [`ActorDriver::list_actors`].
    pub async fn list_actors(&self) -> Result<Vec<String>> {
        self.storage.list_actors().await.map_err(Error::Storage)
    }

    /// See [`ActorDriver::open_actors`].
    pub fn open_actors(&self) -> Vec<String> {
        let mut actors: Vec<String> = self.open.lock().keys().cloned().collect();
        actors.sort();
        actors
    }

    /// See [`ActorDriver::shutdown`].
    pub async fn shutdown(&self) {
        let entries: Vec<(PooledHandle, Database)> =
            self.open.lock().drain().map(|(_, v)| v).collect();
        // Concurrently: each close may wait up to `close_timeout` for its
        // queued writes, and a hanging store must not multiply that.
        let mut closes = tokio::task::JoinSet::new();
        for (handle, db) in entries {
            closes.spawn(async move {
                if let Err(e) = db.close().await {
                    tracing::warn!(actor = handle.actor_id(), error = %e, "close at shutdown failed");
                }
                handle.release().await;
            });
        }
        while closes.join_next().await.is_some() {}
        self.pool.shutdown().await;
        self.storage.close().await;
    }
}

impl<S: ActorStorage> WrapsStorageDriver for StorageDriver<S> {
    type Storage = S;

    fn storage_driver(&self) -> &StorageDriver<S> {
        self
    }
}
