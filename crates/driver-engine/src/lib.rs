//! PostgreSQL-backed storage for vfs-pool actors, with fencing, so that
//! actors can move between hosts that share one database.
//!
//! [`EngineDriver`] is the [`vfs_pool::ActorDriver`] a runtime uses;
//! [`PgStorage`] is the storage underneath (usable on its own as a source of
//! per-actor [`vfs_core::KvStore`]s).
//!
//! # Guarantees
//! - **One round trip per batch.** `get_batch`, `put_batch` and
//!   `delete_batch` are each one prepared statement (keys and values travel
//!   as `bytea[]` arrays), so a SQLite commit of thousands of pages is one
//!   transaction and one round trip. Statements are prepared once per pooled
//!   connection.
//! - **Fencing.** Opening an actor bumps its generation; the store carries
//!   that generation and every call checks it in the same statement (writes
//!   under a shared lock of the actor's row that a takeover must wait for).
//!   A store whose actor was opened again elsewhere fails every later call,
//!   reads included, with [`vfs_core::KvError::Fenced`], and never writes a
//!   page after the takeover.
//! - **Transient failures.** Calls that are safe to repeat (reads, opening,
//!   listing and deleting actors, and writes that could not even get a
//!   connection) are retried with exponential backoff, within
//!   [`PgOptions::retry_attempts`]. A write whose connection broke after it
//!   was sent has an unknown outcome and fails with
//!   [`vfs_core::KvError::Unavailable`]; repeating it is safe. The pool drops
//!   broken connections and opens new ones, so the storage recovers by
//!   itself when the server is back.
//! - **Full disk.** A server out of disk space (SQLSTATE 53100 `disk_full`,
//!   or 53000 when its message speaks of space) fails the call with
//!   [`vfs_core::KvError::StorageFull`], which SQLite sees as `SQLITE_FULL`.
//! - **Limits.** Batches up to [`MAX_BATCH_KEYS`] keys, values up to
//!   [`MAX_VALUE_BYTES`], keys up to [`MAX_KEY_BYTES`]; anything larger is
//!   refused before it is sent.
//! - **Schema.** Created and upgraded on connect by versioned migrations,
//!   serialized across hosts by an advisory lock (see [`SCHEMA_VERSION`]).
//!
//! ```no_run
//! use driver_engine::EngineDriver;
//! use vfs_pool::{ActorDriver, PoolConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let driver = EngineDriver::connect("postgres://app:secret@db.internal/app", PoolConfig::default()).await?;
//! let db = driver.open_database("actor-a").await?;
//! db.exec("CREATE TABLE IF NOT EXISTS t (v TEXT)").await?;
//! driver.shutdown().await;
//! # Ok(()) }
//! ```

mod driver;
mod error;
mod options;
mod schema;
mod storage;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use driver::EngineDriver;
pub use error::{Error, Result};
pub use options::PgOptions;
pub use schema::SCHEMA_VERSION;
pub use storage::{PgStats, PgStorage};
pub use store::{MAX_ACTOR_ID_BYTES, MAX_BATCH_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES, PgActorStore};

pub use vfs_pool;
