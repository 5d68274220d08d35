//! The plain-Rust foundation of a SQLite VFS whose files live in an async
//! key-value store.
//!
//! Nothing here knows about WebAssembly or a particular async runtime, so
//! the part that decides what ends up in storage can be tested against a
//! model and fuzzed on its own:
//!
//! - [`KvStore`]: the storage contract (atomic batches, ordering, limits),
//!   with [`MemoryKv`], [`FaultyKv`] and [`CountingKv`] for tests and benches;
//! - the versioned storage format: [`chunk_key`], [`meta_key`],
//!   [`FileMeta`], [`decode_key`];
//! - [`FileRegistry`]: exact-name mapping from SQLite paths to stores;
//! - [`KvFile`]: the page logic of one file, returning SQLite result codes
//!   ([`code`]) together with the original store error ([`VfsError`]);
//! - [`testing`]: the `Vec<u8>` model of a file that the property tests and
//!   the fuzzers check [`KvFile`] against.
//!
//! ```
//! use std::sync::Arc;
//! use vfs_core::{FileRegistry, FileTag, KvFile, KvStore, MemoryKv, ReadOutcome};
//!
//! # futures::executor::block_on(async {
//! let registry = FileRegistry::new();
//! let store: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
//! registry.register("actor-a", store)?;
//!
//! // SQLite opens "actor-a-journal": exact-name resolution gives the store and tag.
//! let journal = registry.resolve("actor-a-journal")?;
//! assert_eq!(journal.tag, FileTag::Journal);
//!
//! let mut file = KvFile::open(journal.store, journal.tag, true, None).await?;
//! file.write(b"hello", 0).await?;
//! let mut buf = [0xff; 8];
//! // Reading past the end zero-fills and reports a short read.
//! assert_eq!(file.read(&mut buf, 0).await?, ReadOutcome::Short);
//! assert_eq!(&buf, b"hello\0\0\0");
//!
//! // Atomic batches: nothing reaches the store before the commit.
//! file.begin_atomic()?;
//! file.write(b"HELLO", 0).await?;
//! file.commit_atomic().await?;
//! # Ok::<(), vfs_core::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]

mod error;
mod file;
mod format;
mod kv;
mod registry;
pub mod sqlite;
pub mod testing;
mod vfs;

pub use error::{Error, Result};
pub use file::{KvFile, ReadOutcome, VfsError};
pub use format::{
    CHUNK_KEY_LEN, DecodedKey, FileMeta, FileTag, FormatError, KEY_PREFIX, KIND_CHUNK, KIND_META,
    MAX_FILE_SIZE, META_FORMAT_VERSION, META_KEY_LEN, META_VALUE_LEN, PAGE_SIZE, SCHEMA_VERSION,
    chunk_key, decode_key, meta_key,
};
pub use kv::{
    CountingKv, FaultyKv, InjectedFault, KvError, KvLimits, KvOp, KvStore, MemoryKv, call_deadline,
    with_deadline, without_deadline,
};
pub use registry::{
    FileRegistry, MAX_NAME_LEN, RegistryError, ResolvedFile, validate_database_name,
};
/// The SQLite result codes, under the name earlier releases used; the same
/// items as [`sqlite`].
pub use sqlite as code;
pub use vfs::{KvVfs, Poison};
