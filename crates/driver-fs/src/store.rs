//! Every actor's pages in one embedded database file, with group commit.
//!
//! One file per actor would cost a file descriptor, a lock and an fsync per
//! actor; one shared file lets many actors' commits share one fsync. Inside
//! the file the actor id is only data — the first half of a `(actor, key)`
//! table key — so no actor id, whatever bytes it holds, ever becomes a path.
//!
//! Writes of all actors go to one committer thread. It takes the first queued
//! batch and every batch queued behind it, applies them all in ONE durable
//! write transaction (one fsync), and only then acknowledges each of them.
//! Each batch stays all-or-nothing (limits are checked before it is queued,
//! and if the shared transaction fails every batch in it gets the error).
//! The queue is FIFO, so the calls of one store are applied in issue order.
//! Reads take a read transaction on the calling thread: they see every
//! acknowledged write and never wait for the committer.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use vfs_core::{KvError, KvLimits, KvStore};
use vfs_pool::ActorStorage;

use crate::codec;
use crate::faults::{FaultyFile, FileFaults};
use crate::{Error, Result};

/// Name of the data file inside the data directory.
pub const DATA_FILE: &str = "actors.redb";

/// Version of the table layout inside the data file; stored in the file and
/// checked on open, so a layout change is detected, never misread.
/// Version 2 stores values with their longest zero run cut out.
pub const LAYOUT_VERSION: u64 = 2;

/// Most keys in one batch call: 16384 pages of 4 KiB is 64 MiB, so even a
/// transaction of thousands of pages commits as one batch and SQLite never
/// falls back to its rollback journal for size.
pub const MAX_BATCH_KEYS: usize = 16 * 1024;

/// Largest value accepted by `put_batch`: a 4 KiB page plus ample room for
/// metadata values.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Entries the committer groups into one transaction before it commits,
/// unless a single batch alone is larger. Bounds the memory and latency of
/// one group while still sharing an fsync among many commits.
const GROUP_ENTRY_BUDGET: usize = 64 * 1024;

/// `(actor id, key)` → value: the pages and metadata of every actor.
const PAGES: TableDefinition<'_, (&str, &[u8]), &[u8]> = TableDefinition::new("pages");
/// Actor ids that have written data, for listing without scanning pages.
const ACTORS: TableDefinition<'_, &str, ()> = TableDefinition::new("actors");
/// Facts about the file itself (its layout version).
const INFO: TableDefinition<'_, &str, u64> = TableDefinition::new("info");
/// Key of the layout version in [`INFO`].
const LAYOUT_VERSION_KEY: &str = "layout_version";

/// How a store is opened. `FsOptions::default()` suits most uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsOptions {
    /// Memory the embedded engine may use to cache the file, in bytes.
    /// Default 64 MiB.
    pub cache_bytes: usize,
    /// Verify the checksum of every page of the file on open. A damaged
    /// file then fails to open with [`Error::Corrupted`] instead of failing
    /// later, at the cost of reading the whole file once. Default `true`.
    pub verify_on_open: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            verify_on_open: true,
        }
    }
}

/// Counters of one [`FsStorage`], for tests, benchmarks and monitoring.
///
/// They count since the store was opened, across all actors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsStats {
    /// Durable write transactions committed (each one fsync).
    pub write_transactions: u64,
    /// Write transactions that failed; all of their batches got the error.
    pub failed_transactions: u64,
    /// Write batches acknowledged as durable: `put_batch`, `delete_batch`
    /// and actor deletions. Group commit makes this larger than
    /// `write_transactions`.
    pub batches_committed: u64,
    /// `put_batch` calls acknowledged as durable.
    pub put_batches: u64,
    /// Entries written by acknowledged `put_batch` calls.
    pub entries_written: u64,
    /// `get_batch` calls (each one read transaction).
    pub get_batches: u64,
    /// The most batches ever committed by one transaction.
    pub largest_group: u64,
}

#[derive(Debug, Default)]
struct Counters {
    write_transactions: AtomicU64,
    failed_transactions: AtomicU64,
    batches_committed: AtomicU64,
    put_batches: AtomicU64,
    entries_written: AtomicU64,
    get_batches: AtomicU64,
    largest_group: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> FsStats {
        FsStats {
            write_transactions: self.write_transactions.load(Ordering::Relaxed),
            failed_transactions: self.failed_transactions.load(Ordering::Relaxed),
            batches_committed: self.batches_committed.load(Ordering::Relaxed),
            put_batches: self.put_batches.load(Ordering::Relaxed),
            entries_written: self.entries_written.load(Ordering::Relaxed),
            get_batches: self.get_batches.load(Ordering::Relaxed),
            largest_group: self.largest_group.load(Ordering::Relaxed),
        }
    }
}

/// One write, as queued for the committer.
enum Write {
    /// Keys with their values already in stored form (see [`codec`]).
    Put(Vec<(Bytes, Bytes)>),
    Delete(Vec<Bytes>),
    DeleteActor,
}

impl Write {
    /// How much of the group budget this write uses.
    fn weight(&self) -> usize {
        match self {
            Write::Put(entries) => entries.len().max(1),
            Write::Delete(keys) => keys.len().max(1),
            Write::DeleteActor => 1,
        }
    }
}

/// A queued write and where to send its outcome.
struct Job {
    actor: Arc<str>,
    write: Write,
    ack: oneshot::Sender<Result<(), KvError>>,
}

/// State shared by the storage, every actor's store and (for the counters)
/// the committer.
struct Shared {
    file: PathBuf,
    /// `None` once closed; readers clone the `Arc` and drop it quickly, so
    /// the file is released soon after close.
    db: RwLock<Option<Arc<Database>>>,
    /// `None` once closed; dropping the sender is what stops the committer.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    counters: Arc<Counters>,
}

impl Shared {
    fn db(&self) -> Result<Arc<Database>, KvError> {
        self.db.read().clone().ok_or_else(closed_error)
    }

    async fn submit(&self, actor: &Arc<str>, write: Write) -> Result<(), KvError> {
        let (ack, outcome) = oneshot::channel();
        {
            let queue = self.queue.lock();
            let sender = queue.as_ref().ok_or_else(closed_error)?;
            sender
                .send(Job {
                    actor: Arc::clone(actor),
                    write,
                    ack,
                })
                .map_err(|_| committer_gone())?;
        }
        outcome.await.map_err(|_| committer_gone())?
    }
}

fn closed_error() -> KvError {
    KvError::Backend {
        message: "the driver-fs store is closed".into(),
        source: None,
    }
}

fn committer_gone() -> KvError {
    KvError::Backend {
        message: "the driver-fs committer thread stopped; the write's outcome is unknown".into(),
        source: None,
    }
}

/// The store error for an engine failure while `what`: a full disk (or an
/// exceeded quota) is [`KvError::StorageFull`], anything else
/// [`KvError::Backend`]; the engine's error is the source either way.
fn backend(what: &str, e: impl Into<redb::Error>) -> KvError {
    let e = e.into();
    if is_storage_full(&e) {
        KvError::storage_full(what, e)
    } else {
        KvError::backend(what, e)
    }
}

/// Whether the engine failed because the disk has no space left. The engine
/// wraps the file layer's I/O error in its own error types (storage,
/// transaction, commit, table errors all become `redb::Error::Io` here); a
/// backend may box it instead.
fn is_storage_full(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(io) => io_is_storage_full(io),
        redb::Error::Backend(inner) => inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(io_is_storage_full),
        _ => false,
    }
}

/// Whether an I/O error means "no space": `ENOSPC` (kind `StorageFull`) or
/// `EDQUOT` (kind `QuotaExceeded`), also when wrapped in another I/O error.
fn io_is_storage_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(io_is_storage_full)
}

/// Local-disk storage of every actor's key-value namespace in one embedded
/// database file (`dir/actors.redb`).
///
/// Implements [`ActorStorage`], so [`vfs_pool::StorageDriver`] turns it into
/// a complete driver (see [`FsDriver`](crate::FsDriver)). A `put_batch` is
/// acknowledged only once its write transaction is durable on disk; batches
/// of many actors queued at the same time share one transaction.
///
/// Failures are fail-stop: when the disk fails under a transaction, every
/// batch in it gets the error, and the engine refuses later writes (reads
/// keep working) until the store is closed and opened again, which checks
/// the file and resumes from the last durable state.
pub struct FsStorage {
    shared: Arc<Shared>,
    committer: Mutex<Option<JoinHandle<()>>>,
    limits: KvLimits,
}

impl std::fmt::Debug for FsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStorage")
            .field("file", &self.shared.file)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FsStorage {
    /// Opens (or creates) the data file in the existing directory `dir`,
    /// with [`FsOptions::default`].
    ///
    /// Blocking: it opens and, by default, verifies the whole file. Fails
    /// with [`Error::MissingDir`], [`Error::NotADirectory`],
    /// [`Error::Unwritable`], [`Error::Locked`] (another process or store
    /// holds the file), [`Error::Corrupted`] or
    /// [`Error::UnsupportedVersion`]; never panics on a bad file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, FsOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    pub fn open_with(dir: impl AsRef<Path>, options: FsOptions) -> Result<Self> {
        Self::open_inner(dir.as_ref(), options, None)
    }

    /// [`open_with`](Self::open_with), with the data file's writes under the
    /// control of `faults`: a testing aid for the failure paths (a failed
    /// transaction reaches every batch in it; acknowledged data survives).
    pub fn open_with_faults(
        dir: impl AsRef<Path>,
        options: FsOptions,
        faults: &FileFaults,
    ) -> Result<Self> {
        Self::open_inner(dir.as_ref(), options, Some(faults.clone()))
    }

    fn open_inner(dir: &Path, options: FsOptions, faults: Option<FileFaults>) -> Result<Self> {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotADirectory {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingDir {
                    path: dir.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(Error::Unwritable {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        let file = dir.join(DATA_FILE);
        let db = open_database(&file, options, faults)?;
        let known = initialize(&db, &file)?;
        let db = Arc::new(db);
        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::channel();
        let committer = {
            let db = Arc::clone(&db);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("driver-fs-commit".into())
                .spawn(move || {
                    Committer {
                        db,
                        known,
                        counters,
                        disk_full: false,
                    }
                    .run(&receiver);
                })
                .map_err(Error::Thread)?
        };
        Ok(Self {
            shared: Arc::new(Shared {
                file,
                db: RwLock::new(Some(db)),
                queue: Mutex::new(Some(sender)),
                counters,
            }),
            committer: Mutex::new(Some(committer)),
            limits: KvLimits {
                max_batch_keys: MAX_BATCH_KEYS,
                max_value_bytes: MAX_VALUE_BYTES,
            },
        })
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.shared.file
    }

    /// The limits every actor's store enforces on one batch.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// Counters since open: transactions, batches, reads.
    pub fn stats(&self) -> FsStats {
        self.shared.counters.snapshot()
    }

    /// The actor's key-value namespace. Any string is a valid actor id here
    /// (it is stored as data, never used as a path); fails only when the
    /// store is closed.
    pub fn actor_store(&self, actor_id: &str) -> Result<Arc<dyn KvStore>, KvError> {
        if self.shared.queue.lock().is_none() {
            return Err(closed_error());
        }
        Ok(Arc::new(ActorKv {
            actor: Arc::from(actor_id),
            shared: Arc::clone(&self.shared),
            limits: self.limits,
        }))
    }

    /// Whether [`close`](Self::close) has run.
    pub fn is_closed(&self) -> bool {
        self.shared.queue.lock().is_none()
    }

    /// Stops accepting calls, lets the committer finish every write already
    /// queued, and releases the data file. Idempotent.
    fn close_now(&self) -> Option<JoinHandle<()>> {
        let sender = self.shared.queue.lock().take();
        drop(sender);
        self.shared.db.write().take();
        self.committer.lock().take()
    }
}

impl Drop for FsStorage {
    fn drop(&mut self) {
        if let Some(committer) = self.close_now() {
            // The committer ends as soon as it has drained the queue.
            let _ = committer.join();
        }
    }
}

#[async_trait::async_trait]
impl ActorStorage for FsStorage {
    async fn open_actor(&self, actor_id: &str) -> Result<Arc<dyn KvStore>, KvError> {
        self.actor_store(actor_id)
    }

    async fn delete_actor(&self, actor_id: &str) -> Result<(), KvError> {
        self.shared
            .submit(&Arc::from(actor_id), Write::DeleteActor)
            .await
    }

    async fn list_actors(&self) -> Result<Vec<String>, KvError> {
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(|e| backend("listing actors", e))?;
        let table = txn
            .open_table(ACTORS)
            .map_err(|e| backend("listing actors", e))?;
        let mut actors = Vec::new();
        for entry in table.iter().map_err(|e| backend("listing actors", e))? {
            let (key, _) = entry.map_err(|e| backend("listing actors", e))?;
            actors.push(key.value().to_owned());
        }
        // The table is ordered by the bytes of the id, as `String`'s `Ord`.
        Ok(actors)
    }

    /// One read transaction: every key of the actor as it stood at one
    /// commit of the shared file.
    async fn snapshot(&self, actor_id: &str) -> Result<Vec<(Bytes, Bytes)>, KvError> {
        let what = "reading an actor's snapshot";
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(|e| backend(what, e))?;
        let table = txn.open_table(PAGES).map_err(|e| backend(what, e))?;
        let start: (&str, &[u8]) = (actor_id, &[]);
        let mut entries = Vec::new();
        for entry in table.range(start..).map_err(|e| backend(what, e))? {
            let (key, value) = entry.map_err(|e| backend(what, e))?;
            let (actor, key) = key.value();
            if actor != actor_id {
                break;
            }
            let value = decode_stored(actor_id, value.value(), MAX_VALUE_BYTES)?;
            entries.push((Bytes::copy_from_slice(key), value));
        }
        Ok(entries)
    }

    async fn has_data(&self, actor_id: &str) -> Result<bool, KvError> {
        let what = "looking for an actor's data";
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(|e| backend(what, e))?;
        let table = txn.open_table(PAGES).map_err(|e| backend(what, e))?;
        let start: (&str, &[u8]) = (actor_id, &[]);
        let first = table
            .range(start..)
            .map_err(|e| backend(what, e))?
            .next()
            .transpose()
            .map_err(|e| backend(what, e))?;
        Ok(first.is_some_and(|(key, _)| key.value().0 == actor_id))
    }

    /// One read transaction over the actor list and each actor's `key`.
    async fn list_values(&self, key: &[u8]) -> Result<Vec<(String, Option<Bytes>)>, KvError> {
        let what = "listing actors";
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(|e| backend(what, e))?;
        let actors = txn.open_table(ACTORS).map_err(|e| backend(what, e))?;
        let pages = txn.open_table(PAGES).map_err(|e| backend(what, e))?;
        let mut listed = Vec::new();
        for entry in actors.iter().map_err(|e| backend(what, e))? {
            let (actor, _) = entry.map_err(|e| backend(what, e))?;
            let actor = actor.value().to_owned();
            let value = pages
                .get((actor.as_str(), key))
                .map_err(|e| backend(what, e))?
                .map(|stored| decode_stored(&actor, stored.value(), MAX_VALUE_BYTES))
                .transpose()?;
            listed.push((actor, value));
        }
        Ok(listed)
    }

    async fn close(&self) {
        if let Some(committer) = self.close_now() {
            // Wait off the async runtime's threads when there is one: the
            // committer may be finishing a transaction (one fsync).
            let joined = match tokio::runtime::Handle::try_current() {
                Ok(runtime) => runtime
                    .spawn_blocking(move || committer.join())
                    .await
                    .is_ok_and(|joined| joined.is_ok()),
                Err(_) => committer.join().is_ok(),
            };
            if !joined {
                tracing::warn!("the driver-fs committer thread panicked");
            }
        }
    }
}

/// One actor's namespace: its keys are `(actor, key)` in the shared tables.
struct ActorKv {
    actor: Arc<str>,
    shared: Arc<Shared>,
    limits: KvLimits,
}

#[async_trait::async_trait]
impl KvStore for ActorKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.limits.check_keys(keys.len())?;
        self.shared
            .counters
            .get_batches
            .fetch_add(1, Ordering::Relaxed);
        let db = self.shared.db()?;
        let txn = db.begin_read().map_err(|e| backend("reading pages", e))?;
        let table = txn
            .open_table(PAGES)
            .map_err(|e| backend("reading pages", e))?;
        keys.iter()
            .map(|key| {
                let found = table
                    .get((&*self.actor, key.as_ref()))
                    .map_err(|e| backend("reading pages", e))?;
                found
                    .map(|guard| {
                        decode_stored(&self.actor, guard.value(), self.limits.max_value_bytes)
                    })
                    .transpose()
            })
            .collect()
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.limits.check_entries(entries)?;
        if entries.is_empty() {
            return Ok(());
        }
        // Encoded here, on the caller's thread, so the committer only writes.
        let encoded = entries
            .iter()
            .map(|(key, value)| (key.clone(), Bytes::from(codec::encode(value))))
            .collect();
        self.shared.submit(&self.actor, Write::Put(encoded)).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.limits.check_keys(keys.len())?;
        if keys.is_empty() {
            return Ok(());
        }
        self.shared
            .submit(&self.actor, Write::Delete(keys.to_vec()))
            .await
    }

    fn limits(&self) -> KvLimits {
        self.limits
    }
}

/// A value as the store keeps it (see [`codec`]), decoded for `actor`.
fn decode_stored(actor: &str, stored: &[u8], max_value_bytes: usize) -> Result<Bytes, KvError> {
    codec::decode(stored, max_value_bytes)
        .map(Bytes::from)
        .map_err(|why| KvError::backend(format!("stored value of actor {actor:?} is damaged"), why))
}

/// Opens the redb file, turning every way it can fail (including a panic of
/// the engine on a damaged file) into a clear [`Error`].
fn open_database(file: &Path, options: FsOptions, faults: Option<FileFaults>) -> Result<Database> {
    let mut builder = Database::builder();
    builder
        .set_cache_size(options.cache_bytes)
        .set_check_integrity_on_open(options.verify_on_open);
    let opened = catch_unwind(AssertUnwindSafe(|| match faults {
        None => builder.create(file),
        Some(faults) => {
            // What `create` does, with the fault switch in front of the file.
            let handle = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(file)?;
            builder.create_with_backend(FaultyFile::new(handle, faults)?)
        }
    }));
    let path = file.to_path_buf();
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Corrupted {
                path,
                message: format!("the engine failed while reading the file: {message}"),
                source: None,
            })
        }
    }
}

fn open_error(path: PathBuf, e: DatabaseError) -> Error {
    use std::io::ErrorKind;
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Error::Locked { path }
        }
        DatabaseError::Storage(redb::StorageError::Corrupted(message)) => Error::Corrupted {
            path,
            message,
            source: None,
        },
        DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() == ErrorKind::InvalidData =>
        {
            Error::Corrupted {
                path,
                message: "the engine found data it cannot read".into(),
                source: Some(source),
            }
        }
        DatabaseError::Storage(redb::StorageError::Io(source)) => {
            Error::Unwritable { path, source }
        }
        DatabaseError::RepairAborted => Error::Corrupted {
            path,
            message: "the file needs a repair that could not complete".into(),
            source: None,
        },
        other => Error::Database {
            path,
            source: other.into(),
        },
    }
}

/// Creates the tables of a new file, checks the layout version of an
/// existing one, and returns the actors that have data.
fn initialize(db: &Database, file: &Path) -> Result<HashSet<String>> {
    let database_error = |e: redb::Error| match e {
        redb::Error::Corrupted(message) => Error::Corrupted {
            path: file.to_path_buf(),
            message,
            source: None,
        },
        source => Error::Database {
            path: file.to_path_buf(),
            source,
        },
    };
    let txn = db.begin_write().map_err(|e| database_error(e.into()))?;
    let mut known = HashSet::new();
    {
        let mut info = txn.open_table(INFO).map_err(|e| database_error(e.into()))?;
        let stored = info
            .get(LAYOUT_VERSION_KEY)
            .map_err(|e| database_error(e.into()))?
            .map(|guard| guard.value());
        match stored {
            Some(LAYOUT_VERSION) => {}
            Some(found) => {
                return Err(Error::UnsupportedVersion {
                    path: file.to_path_buf(),
                    found,
                    expected: LAYOUT_VERSION,
                });
            }
            None => {
                info.insert(LAYOUT_VERSION_KEY, LAYOUT_VERSION)
                    .map_err(|e| database_error(e.into()))?;
            }
        }
        txn.open_table(PAGES)
            .map_err(|e| database_error(e.into()))?;
        let actors = txn
            .open_table(ACTORS)
            .map_err(|e| database_error(e.into()))?;
        for entry in actors.iter().map_err(|e| database_error(e.into()))? {
            let (key, _) = entry.map_err(|e| database_error(e.into()))?;
            known.insert(key.value().to_owned());
        }
    }
    txn.commit().map_err(|e| database_error(e.into()))?;
    Ok(known)
}

/// The thread that turns queued batches into durable transactions.
struct Committer {
    db: Arc<Database>,
    /// Actors with an entry in [`ACTORS`], so a put registers its actor only
    /// once instead of rewriting that entry on every commit.
    known: HashSet<String>,
    counters: Arc<Counters>,
    /// A write found the disk full. The engine then refuses every later
    /// write with a bare "previous I/O error" until it is reopened; those
    /// refusals are reported as the full disk they come from.
    disk_full: bool,
}

impl Committer {
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        // Ends when every sender is gone (the store was closed) and the
        // queue is drained.
        while let Ok(first) = queue.recv() {
            let mut budget = first.write.weight();
            let mut group = vec![first];
            while budget < GROUP_ENTRY_BUDGET {
                match queue.try_recv() {
                    Ok(job) => {
                        budget += job.write.weight();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let outcome = self.commit(&group).map_err(|e| self.explain(e));
            let counters = &self.counters;
            match &outcome {
                Ok(()) => {
                    counters.write_transactions.fetch_add(1, Ordering::Relaxed);
                    counters
                        .batches_committed
                        .fetch_add(group.len() as u64, Ordering::Relaxed);
                    counters
                        .largest_group
                        .fetch_max(group.len() as u64, Ordering::Relaxed);
                    for job in &group {
                        if let Write::Put(entries) = &job.write {
                            counters.put_batches.fetch_add(1, Ordering::Relaxed);
                            counters
                                .entries_written
                                .fetch_add(entries.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, batches = group.len(), "driver-fs write transaction failed");
                }
            }
            for job in group {
                // A caller that stopped waiting is no error of the commit.
                let _ = job.ack.send(outcome.clone());
            }
        }
    }

    /// Keeps the cause of a fail-stop engine: after a full disk, the
    /// engine's "previous I/O error" is still the full disk.
    fn explain(&mut self, error: KvError) -> KvError {
        if error.is_storage_full() {
            self.disk_full = true;
            return error;
        }
        match error {
            KvError::Backend {
                message,
                source: Some(source),
            } if self.disk_full
                && matches!(
                    source.downcast_ref::<redb::Error>(),
                    Some(redb::Error::PreviousIo)
                ) =>
            {
                KvError::StorageFull {
                    message: format!(
                        "{message}: the data file refuses writes since one found the disk \
                         full; reopen the store once space is freed"
                    ),
                    source: Some(source),
                }
            }
            other => other,
        }
    }

    /// Applies a whole group in one durable transaction.
    fn commit(&mut self, group: &[Job]) -> Result<(), KvError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| backend("starting a write transaction", e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| KvError::backend("setting durability", e))?;
        // Registration changes of this group, applied to `known` only if the
        // transaction commits.
        let mut registered: HashMap<&str, bool> = HashMap::new();
        {
            let mut pages = txn
                .open_table(PAGES)
                .map_err(|e| backend("opening the pages table", e))?;
            let mut actors = txn
                .open_table(ACTORS)
                .map_err(|e| backend("opening the actors table", e))?;
            for job in group {
                let actor: &str = &job.actor;
                match &job.write {
                    Write::Put(entries) => {
                        let is_known = registered
                            .get(actor)
                            .copied()
                            .unwrap_or_else(|| self.known.contains(actor));
                        if !is_known {
                            actors
                                .insert(actor, ())
                                .map_err(|e| backend("registering an actor", e))?;
                            registered.insert(actor, true);
                        }
                        for (key, value) in entries {
                            pages
                                .insert((actor, key.as_ref()), value.as_ref())
                                .map_err(|e| backend("writing pages", e))?;
                        }
                    }
                    Write::Delete(keys) => {
                        for key in keys {
                            pages
                                .remove((actor, key.as_ref()))
                                .map_err(|e| backend("deleting pages", e))?;
                        }
                    }
                    Write::DeleteActor => {
                        // `actor + "\0"` is the smallest id greater than
                        // `actor`, so this range holds exactly its keys.
                        let next = format!("{actor}\0");
                        let empty: &[u8] = &[];
                        pages
                            .retain_in((actor, empty)..(next.as_str(), empty), |_, _| false)
                            .map_err(|e| backend("deleting an actor's pages", e))?;
                        actors
                            .remove(actor)
                            .map_err(|e| backend("unregistering an actor", e))?;
                        registered.insert(actor, false);
                    }
                }
            }
        }
        txn.commit()
            .map_err(|e| backend("committing a write transaction", e))?;
        for (actor, present) in registered {
            if present {
                self.known.insert(actor.to_owned());
            } else {
                self.known.remove(actor);
            }
        }
        Ok(())
    }
}
