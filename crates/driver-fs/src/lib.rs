//! Local-disk storage for vfs-pool actors: the embedded default.
//!
//! Every actor's SQLite pages live in ONE embedded, crash-safe database file
//! (`<dir>/actors.redb`), each actor in its own key namespace. One file
//! instead of one per actor lets the commits of many actors share one fsync
//! (group commit), and keeps actor ids out of the file system entirely: an
//! id is data, so `../x`, `a/b` or NUL bytes can never reach a path.
//!
//! - [`FsDriver`]: the [`ActorDriver`](vfs_pool::ActorDriver) a runtime uses
//!   (open an actor's database, delete an actor, list, shut down).
//! - [`FsStorage`]: the storage alone, an
//!   [`ActorStorage`](vfs_pool::ActorStorage), with [`FsStats`] counters.
//!
//! # Guarantees
//!
//! - **Durable acknowledgement.** A `put_batch`, `delete_batch` or actor
//!   deletion resolves only after the write transaction holding it has been
//!   committed with an fsync. A crash (even `SIGKILL` mid-commit) loses only
//!   unacknowledged writes; `tests/crash.rs` kills a writer process at
//!   random points and checks every acknowledged row and
//!   `PRAGMA integrity_check`.
//! - **All or nothing.** Each batch is applied whole or not at all, even
//!   when it shares a transaction with other actors' batches: limits are
//!   checked before queueing, and a failed transaction fails every batch in
//!   it. After a disk error the store is fail-stop (writes refused, reads
//!   served) until it is reopened.
//! - **Large transactions.** A batch may hold [`MAX_BATCH_KEYS`] pages
//!   (64 MiB), so a SQLite transaction of thousands of pages commits as one
//!   batch and one durable transaction.
//! - **Clear open errors.** A missing or unwritable directory, a file held
//!   by another process or store, a damaged file or one of another layout
//!   version each have their own [`Error`] variant; opening never panics.
//!
//! # On disk
//!
//! Three tables in the one file: `pages` maps `(actor id, key)` to the value
//! with its longest zero run cut out (a sparse SQLite page then fits in one
//! of the engine's 4 KiB pages instead of two), `actors` lists the actors
//! with data, `info` holds [`LAYOUT_VERSION`].

#![forbid(unsafe_code)]

mod codec;
mod driver;
mod error;
mod faults;
mod store;

pub use driver::FsDriver;
pub use error::{Error, Result};
pub use faults::FileFaults;
pub use store::{
    DATA_FILE, FsOptions, FsStats, FsStorage, LAYOUT_VERSION, MAX_BATCH_KEYS, MAX_VALUE_BYTES,
};

pub use vfs_pool;
