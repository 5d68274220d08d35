//! Whole databases in and out of a driver's storage, as standard SQLite
//! files: export, import, snapshots and sizes.
//!
//! **Snapshots take no ownership.** [`ActorStorage::snapshot`] reads every
//! key of an actor in one consistent read of the storage, without taking
//! the actor over: on PostgreSQL a live host that owns the actor keeps
//! writing, unfenced. The copy is opened in the driver's pool on a private
//! in-memory store (a seat no actor id can name), so whatever a crashed
//! writer left behind, such as a hot rollback journal, is rolled back in
//! the copy, never in the storage. Queries on a [`Snapshot`] see the actor's
//! last durable state; writes to it change only the copy.
//!
//! **Imports are checked before anything is stored.** The file's header,
//! page size and length are checked, then it is opened on a private copy
//! and `PRAGMA integrity_check` must say `ok`. Only then is it written to
//! the storage, in the store's largest batches with the file's size last.
//! A database of up to the store's batch limit (64 MiB on driver-fs, 32 MiB
//! on driver-engine) is written in one atomic batch. When a write fails,
//! what the actor held before is written back (nothing, for a new actor),
//! and the error says if even that failed. A refused import takes nothing
//! over; an import that writes takes ownership of the actor like opening it
//! (on PostgreSQL, the host that served it is fenced).
//!
//! Both directions hold the whole file in memory, a replacing import the
//! old database too.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vfs_core::{
    CountingKv, DecodedKey, FileMeta, FileTag, KvError, KvStore, MemoryKv, PAGE_SIZE, chunk_key,
    decode_key, meta_key,
};

use crate::driver::{ActorStorage, StorageDriver};
use crate::{Database, Error, PooledHandle, Result, Value};

/// An actor that has data, and the size of its database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorInfo {
    /// The actor's id.
    pub actor_id: String,
    /// The size of its database file in bytes (0 when only a journal or
    /// other metadata was ever stored).
    pub size_bytes: u64,
}

/// What an import does when the actor already has data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Refuse with [`Error::ActorExists`].
    #[default]
    Create,
    /// Delete the actor's data first (closing its database if this driver
    /// has it open).
    Replace,
}

/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Length of the database header at the start of page 1.
const HEADER_LEN: usize = 100;

/// A private copy of one actor's database, open in the driver's pool.
///
/// Queries see the actor's last durable state as of the snapshot; writes
/// change only the copy. [`close`](Self::close) frees its seat; a snapshot
/// dropped without it is closed by a task on the current tokio runtime.
pub struct Snapshot {
    open: Option<(PooledHandle, Database)>,
    store: Arc<MemoryKv>,
    /// The copy's store as the database sees it, counting its writes.
    counted: Arc<CountingKv>,
    /// Writes the open itself made (rolling back a hot journal).
    writes_at_open: u64,
    actor_id: String,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("actor_id", &self.actor_id)
            .field("keys", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The copy's database.
    pub fn database(&self) -> &Database {
        let (_, db) = self.open.as_ref().expect("open until closed");
        db
    }

    /// The actor this is a copy of.
    pub fn actor_id(&self) -> &str {
        &self.actor_id
    }

    /// Whether a statement has written to the copy since it was opened:
    /// the exact test of whether what ran on it was read-only.
    pub fn is_modified(&self) -> bool {
        self.writes() != self.writes_at_open
    }

    fn writes(&self) -> u64 {
        self.counted.put_calls() + self.counted.delete_calls()
    }

    /// Closes the copy and frees its seat.
    pub async fn close(mut self) -> Result<()> {
        self.close_now().await
    }

    async fn close_now(&mut self) -> Result<()> {
        let Some((handle, db)) = self.open.take() else {
            return Ok(());
        };
        let closed = db.close().await;
        handle.release().await;
        closed
    }

    /// Closes the copy and writes it out as one standard SQLite file.
    async fn write_to(mut self, writer: &mut (dyn AsyncWrite + Unpin + Send)) -> Result<u64> {
        self.close_now().await?;
        let image = file_image(&self.store)?;
        let io = |source| Error::Io {
            what: "writing the exported database",
            source,
        };
        writer.write_all(&image).await.map_err(io)?;
        writer.flush().await.map_err(io)?;
        Ok(image.len() as u64)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Some((handle, db)) = self.open.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = db.close().await;
                handle.release().await;
            });
        }
    }
}

/// The main database file held by `store`, as one byte image: its size
/// from the file's metadata, its pages in order (a page never written
/// reads as zeros, as in the VFS).
fn file_image(store: &MemoryKv) -> Result<Vec<u8>> {
    let entries = store.snapshot();
    let size = match entries.get(&meta_key(FileTag::Main)) {
        Some(meta) => FileMeta::decode(meta).map_err(damaged)?.size,
        None => 0,
    };
    let size = usize::try_from(size).map_err(|_| Error::InvalidImport {
        reason: format!("a database of {size} bytes does not fit in memory here"),
    })?;
    let mut image = vec![0_u8; size];
    for (index, page) in image.chunks_mut(PAGE_SIZE).enumerate() {
        let index = u32::try_from(index).expect("sizes stop at 2^32 pages");
        if let Some(stored) = entries.get(&chunk_key(FileTag::Main, index)) {
            let n = page.len().min(stored.len());
            page[..n].copy_from_slice(&stored[..n]);
        }
    }
    Ok(image)
}

/// A stored value the storage format cannot read.
fn damaged(why: vfs_core::FormatError) -> Error {
    Error::Storage(vfs_core::KvError::backend(
        "the actor's stored file metadata is damaged",
        why,
    ))
}

/// Checks that `image` is a SQLite database file this store can keep, and
/// turns a write-ahead-log database into a rollback-journal one (the VFS
/// keeps no WAL; the bytes that say which mode a file is in are all that
/// differ once its log is checkpointed).
fn check_image(image: &mut Vec<u8>) -> std::result::Result<(), String> {
    if image.is_empty() {
        return Err("the file is empty, not a SQLite database".into());
    }
    if image.len() < HEADER_LEN || image[..MAGIC.len()] != MAGIC[..] {
        if image.len() < HEADER_LEN && MAGIC.starts_with(&image[..image.len().min(MAGIC.len())]) {
            return Err(format!(
                "the file is truncated: {} bytes, shorter than a SQLite header",
                image.len()
            ));
        }
        return Err("not a SQLite database (it does not start with \"SQLite format 3\")".into());
    }
    let page_size = match u16::from_be_bytes([image[16], image[17]]) {
        1 => 65_536,
        n => usize::from(n),
    };
    if !page_size.is_power_of_two() || !(512..=65_536).contains(&page_size) {
        return Err(format!("the header is damaged: page size {page_size}"));
    }
    if page_size != PAGE_SIZE {
        return Err(format!(
            "its pages are {page_size} bytes and this store keeps {PAGE_SIZE}-byte pages; \
             convert it first: sqlite3 FILE 'PRAGMA journal_mode = DELETE; \
             PRAGMA page_size = {PAGE_SIZE}; VACUUM'"
        ));
    }
    match (image[18], image[19]) {
        (1, 1) => {}
        (2, 2) => {
            image[18] = 1;
            image[19] = 1;
        }
        (write, read) => {
            return Err(format!(
                "the header is damaged: file format versions {write} and {read}"
            ));
        }
    }
    if !image.len().is_multiple_of(PAGE_SIZE) {
        return Err(format!(
            "the file is truncated: {} bytes is not a whole number of {PAGE_SIZE}-byte pages",
            image.len()
        ));
    }
    let pages = u32::from_be_bytes([image[28], image[29], image[30], image[31]]);
    let counter_valid = image[24..28] == image[92..96];
    let held = image.len() / PAGE_SIZE;
    if counter_valid && pages as usize > held {
        return Err(format!(
            "the file is truncated: its header counts {pages} pages and it holds {held}"
        ));
    }
    if counter_valid && pages != 0 && (pages as usize) < held {
        // Pages past the database's size are free space SQLite would
        // truncate away; they are not stored.
        image.truncate(pages as usize * PAGE_SIZE);
    }
    if held > u32::MAX as usize {
        return Err("the file is larger than this store's 16 TiB limit".into());
    }
    Ok(())
}

/// `image` as the keys and values of a file in the storage format.
fn image_entries(image: &[u8]) -> Vec<(Bytes, Bytes)> {
    let mut entries: Vec<(Bytes, Bytes)> = image
        .chunks(PAGE_SIZE)
        .enumerate()
        .map(|(index, page)| {
            let index = u32::try_from(index).expect("checked to fit in u32 pages");
            (
                chunk_key(FileTag::Main, index),
                Bytes::copy_from_slice(page),
            )
        })
        .collect();
    let meta = FileMeta {
        size: image.len() as u64,
    };
    entries.push((meta_key(FileTag::Main), meta.encode()));
    entries
}

/// Writes `entries` to `store` in batches it accepts, in order.
async fn put_all(
    store: &dyn KvStore,
    entries: &[(Bytes, Bytes)],
) -> std::result::Result<(), KvError> {
    let batch = store.limits().max_batch_keys.max(1);
    for chunk in entries.chunks(batch) {
        store.put_batch(chunk).await?;
    }
    Ok(())
}

/// Deletes `keys` from `store` in batches it accepts.
async fn delete_all(store: &dyn KvStore, keys: &[Bytes]) -> std::result::Result<(), KvError> {
    let batch = store.limits().max_batch_keys.max(1);
    for chunk in keys.chunks(batch) {
        store.delete_batch(chunk).await?;
    }
    Ok(())
}

/// Replaces the actor's `old` entries by `new` in `store`. The old journal
/// and WAL keys go first, so a hot journal left by a crash can never roll
/// back over the new pages; then the new entries, the file's size last;
/// then the old pages the new file does not have. When a write fails, the
/// old entries are written back, and the error says whether that worked.
async fn write_over(
    store: &dyn KvStore,
    old: &[(Bytes, Bytes)],
    new: &[(Bytes, Bytes)],
) -> Result<()> {
    let new_keys: HashSet<&Bytes> = new.iter().map(|(key, _)| key).collect();
    let old_keys: HashSet<&Bytes> = old.iter().map(|(key, _)| key).collect();
    let is_main = |key: &Bytes| match decode_key(key) {
        Ok(DecodedKey::Meta(tag) | DecodedKey::Chunk(tag, _)) => tag == FileTag::Main,
        Err(_) => false,
    };
    let sidecar: Vec<Bytes> = old_keys
        .iter()
        .filter(|key| !is_main(key))
        .map(|&key| key.clone())
        .collect();
    let stale: Vec<Bytes> = old_keys
        .iter()
        .filter(|key| is_main(key) && !new_keys.contains(*key))
        .map(|&key| key.clone())
        .collect();
    let written = async {
        delete_all(store, &sidecar).await?;
        put_all(store, new).await?;
        delete_all(store, &stale).await
    }
    .await;
    let Err(failed) = written else {
        return Ok(());
    };
    let added: Vec<Bytes> = new_keys
        .iter()
        .filter(|key| !old_keys.contains(*key))
        .map(|&key| key.clone())
        .collect();
    let restored = async {
        delete_all(store, &added).await?;
        put_all(store, old).await
    }
    .await;
    Err(match restored {
        Ok(()) => Error::Storage(failed),
        Err(again) => Error::Storage(KvError::backend(
            format!(
                "writing the import failed ({failed}), and so did putting the actor's \
                 previous data back ({again}); import the file again, or delete the actor"
            ),
            again,
        )),
    })
}

impl<S: ActorStorage> StorageDriver<S> {
    /// See [`ActorDriver::actor_sizes`](crate::ActorDriver::actor_sizes).
    pub async fn actor_sizes(&self) -> Result<Vec<ActorInfo>> {
        let listed = self
            .storage()
            .list_values(&meta_key(FileTag::Main))
            .await
            .map_err(Error::Storage)?;
        listed
            .into_iter()
            .map(|(actor_id, meta)| {
                let size_bytes = match meta {
                    Some(meta) => FileMeta::decode(&meta).map_err(damaged)?.size,
                    None => 0,
                };
                Ok(ActorInfo {
                    actor_id,
                    size_bytes,
                })
            })
            .collect()
    }

    /// See [`ActorDriver::snapshot`](crate::ActorDriver::snapshot).
    pub async fn snapshot(&self, actor_id: &str) -> Result<Snapshot> {
        crate::validate_actor_id(actor_id)?;
        let entries = self
            .storage()
            .snapshot(actor_id)
            .await
            .map_err(Error::Storage)?;
        if entries.is_empty() {
            return Err(Error::NoSuchActor {
                actor: actor_id.to_owned(),
            });
        }
        let store = Arc::new(MemoryKv::new());
        put_all(&*store, &entries).await.map_err(Error::Storage)?;
        self.open_copy(actor_id, store, "snapshot").await
    }

    /// Opens `store` on a private seat of the pool, and reads the schema
    /// (which also rolls back a hot journal in the copy).
    async fn open_copy(
        &self,
        actor_id: &str,
        store: Arc<MemoryKv>,
        purpose: &str,
    ) -> Result<Snapshot> {
        let handle = self.pool().acquire_private(purpose).await?;
        let counted = Arc::new(CountingKv::new(Arc::clone(&store) as Arc<dyn KvStore>));
        let db = match handle.open(Arc::clone(&counted) as Arc<dyn KvStore>).await {
            Ok(db) => db,
            Err(e) => {
                handle.release().await;
                return Err(e);
            }
        };
        let mut snapshot = Snapshot {
            open: Some((handle, db)),
            store,
            counted,
            writes_at_open: 0,
            actor_id: actor_id.to_owned(),
        };
        snapshot
            .database()
            .query("SELECT count(*) FROM sqlite_schema", &[])
            .await?;
        snapshot.writes_at_open = snapshot.writes();
        Ok(snapshot)
    }

    /// See [`ActorDriver::export`](crate::ActorDriver::export).
    pub async fn export(
        &self,
        actor_id: &str,
        writer: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        self.snapshot(actor_id).await?.write_to(writer).await
    }

    /// See [`ActorDriver::import`](crate::ActorDriver::import).
    pub async fn import(
        &self,
        actor_id: &str,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        mode: ImportMode,
    ) -> Result<u64> {
        crate::validate_actor_id(actor_id)?;
        let mut image = Vec::new();
        reader
            .read_to_end(&mut image)
            .await
            .map_err(|source| Error::Io {
                what: "reading the database to import",
                source,
            })?;
        check_image(&mut image).map_err(|reason| Error::InvalidImport { reason })?;
        let size = image.len() as u64;
        let entries = self.checked_entries(actor_id, &image).await?;
        drop(image);

        let _serial = self.stripe(actor_id).lock().await;
        if mode == ImportMode::Create {
            // Checked without ownership first, so that a refused import
            // never fences a host that serves the actor.
            let exists = self.is_open(actor_id)
                || self
                    .storage()
                    .has_data(actor_id)
                    .await
                    .map_err(Error::Storage)?;
            if exists {
                return Err(Error::ActorExists {
                    actor: actor_id.to_owned(),
                });
            }
        } else {
            let closed = self.close_locked(actor_id).await;
            self.pool().settle_earlier(actor_id).await?;
            if let Err(e) = closed {
                tracing::warn!(actor = actor_id, error = %e, "close before replace failed");
            }
        }
        let store = self
            .storage()
            .open_actor(actor_id)
            .await
            .map_err(Error::Storage)?;
        // What the actor holds, read once it is ours: on a storage with
        // owners, no other host writes it from here on.
        let old = self
            .storage()
            .snapshot(actor_id)
            .await
            .map_err(Error::Storage)?;
        if mode == ImportMode::Create && !old.is_empty() {
            return Err(Error::ActorExists {
                actor: actor_id.to_owned(),
            });
        }
        write_over(&*store, &old, &entries).await?;
        tracing::info!(actor = actor_id, bytes = size, "imported a database");
        Ok(size)
    }

    /// Opens `image` on a private copy and runs `PRAGMA integrity_check`;
    /// returns what to store, as the copy holds it after the check.
    async fn checked_entries(&self, actor_id: &str, image: &[u8]) -> Result<Vec<(Bytes, Bytes)>> {
        let store = Arc::new(MemoryKv::new());
        put_all(&*store, &image_entries(image))
            .await
            .map_err(Error::Storage)?;
        let invalid = |reason: String| Error::InvalidImport { reason };
        let copy = match self.open_copy(actor_id, Arc::clone(&store), "import").await {
            Ok(copy) => copy,
            Err(e) if e.is_interrupted() || e.is_limit_exceeded() => return Err(e),
            Err(Error::Sqlite(e)) => return Err(invalid(format!("SQLite cannot open it: {e}"))),
            Err(e) => return Err(e),
        };
        let checked = copy.database().query("PRAGMA integrity_check", &[]).await;
        copy.close().await?;
        let rows = match checked {
            Ok(rows) => rows.rows,
            Err(e) if e.is_interrupted() || e.is_limit_exceeded() => return Err(e),
            // The check itself can stop at the damage instead of listing
            // it, depending on where the damage lies.
            Err(Error::Sqlite(e @ vfs_wasm::Error::Sqlite { code, .. }))
                if code & 0xff == vfs_core::sqlite::SQLITE_CORRUPT =>
            {
                return Err(invalid(format!("it is corrupt: {e}")));
            }
            Err(Error::Sqlite(e)) => {
                return Err(invalid(format!("SQLite cannot read it: {e}")));
            }
            Err(e) => return Err(e),
        };
        if rows != [vec![Value::Text("ok".into())]] {
            let problems: Vec<String> = rows
                .iter()
                .take(3)
                .map(|row| match row.first() {
                    Some(Value::Text(text)) => text.clone(),
                    other => format!("{other:?}"),
                })
                .collect();
            return Err(invalid(format!(
                "it is corrupt: integrity_check says {}",
                problems.join("; ")
            )));
        }
        Ok(store.snapshot().into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page_size: u16, pages: u32) -> Vec<u8> {
        let mut image = vec![0_u8; PAGE_SIZE * pages as usize];
        image[..16].copy_from_slice(MAGIC);
        image[16..18].copy_from_slice(&page_size.to_be_bytes());
        image[18] = 1;
        image[19] = 1;
        image[28..32].copy_from_slice(&pages.to_be_bytes());
        image
    }

    #[test]
    fn headers_are_checked_before_anything_else() {
        let check = |mut image: Vec<u8>| check_image(&mut image);
        assert!(check(header(4096, 2)).is_ok());
        assert!(check(Vec::new()).unwrap_err().contains("empty"));
        assert!(
            check(b"hello world".to_vec())
                .unwrap_err()
                .contains("not a SQLite")
        );
        assert!(
            check(MAGIC[..10].to_vec())
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            check(header(1024, 2))
                .unwrap_err()
                .contains("pages are 1024 bytes")
        );
        assert!(check(header(1000, 2)).unwrap_err().contains("damaged"));
        let mut short = header(4096, 3);
        short.truncate(2 * PAGE_SIZE);
        assert!(check(short).unwrap_err().contains("counts 3 pages"));
        let mut ragged = header(4096, 2);
        ragged.truncate(PAGE_SIZE + 100);
        assert!(check(ragged).unwrap_err().contains("whole number"));
        let mut spare = header(4096, 2);
        spare.extend_from_slice(&[0; PAGE_SIZE]);
        check_image(&mut spare).unwrap();
        assert_eq!(
            spare.len(),
            2 * PAGE_SIZE,
            "pages past the size are not kept"
        );
        let mut wal = header(4096, 1);
        wal[18] = 2;
        wal[19] = 2;
        check_image(&mut wal).unwrap();
        assert_eq!(
            (wal[18], wal[19]),
            (1, 1),
            "a WAL file becomes a journal file"
        );
    }

    #[test]
    fn an_image_round_trips_through_the_storage_format() {
        let mut image = header(4096, 3);
        image[PAGE_SIZE + 7] = 42;
        let store = MemoryKv::new();
        for (key, value) in image_entries(&image) {
            block_on(store.put_batch(&[(key, value)])).unwrap();
        }
        assert_eq!(file_image(&store).unwrap(), image);
    }

    /// A store whose call number `at` (from 0) fails, and no other.
    struct FailAt {
        inner: MemoryKv,
        calls: std::sync::atomic::AtomicUsize,
        at: usize,
    }

    impl FailAt {
        fn tick(&self) -> std::result::Result<(), KvError> {
            let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if call == self.at {
                return Err(KvError::Backend {
                    message: format!("injected failure of call {call}"),
                    source: None,
                });
            }
            Ok(())
        }
    }

    #[async_trait::async_trait]
    impl KvStore for FailAt {
        async fn get_batch(
            &self,
            keys: &[Bytes],
        ) -> std::result::Result<Vec<Option<Bytes>>, KvError> {
            self.tick()?;
            self.inner.get_batch(keys).await
        }
        async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> std::result::Result<(), KvError> {
            self.tick()?;
            self.inner.put_batch(entries).await
        }
        async fn delete_batch(&self, keys: &[Bytes]) -> std::result::Result<(), KvError> {
            self.tick()?;
            self.inner.delete_batch(keys).await
        }
        fn limits(&self) -> vfs_core::KvLimits {
            self.inner.limits()
        }
    }

    /// An old database of 300 pages with a leftover journal, replaced by
    /// one of 200: whichever store call fails, the store ends up holding
    /// exactly the old entries; when none fails, exactly the new ones.
    #[test]
    fn a_failed_replace_puts_the_old_database_back() {
        let mut old = image_entries(&header(4096, 300));
        old.push((chunk_key(FileTag::Journal, 0), Bytes::from_static(b"hot")));
        old.push((meta_key(FileTag::Journal), FileMeta { size: 3 }.encode()));
        let mut new_image = header(4096, 200);
        new_image[PAGE_SIZE] = 7;
        let new = image_entries(&new_image);
        let sorted = |entries: &[(Bytes, Bytes)]| {
            entries
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        for at in 0.. {
            let store = FailAt {
                inner: MemoryKv::new(),
                calls: std::sync::atomic::AtomicUsize::new(usize::MAX / 2),
                at,
            };
            block_on(put_all(&store.inner, &old)).unwrap();
            store.calls.store(0, std::sync::atomic::Ordering::SeqCst);
            match block_on(write_over(&store, &old, &new)) {
                Ok(()) => {
                    assert_eq!(store.inner.snapshot(), sorted(&new));
                    assert!(at > 3, "the write took several calls");
                    break;
                }
                Err(e) => {
                    assert!(e.to_string().contains(&format!("call {at}")), "{e}");
                    assert_eq!(store.inner.snapshot(), sorted(&old), "failure at call {at}");
                }
            }
        }
    }

    /// Runs a future that never waits (MemoryKv's calls) to completion.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
