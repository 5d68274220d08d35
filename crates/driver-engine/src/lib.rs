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
//! - **Fencing.** Opening an actor bumps its generation (conditionally on
//!   the one it read, so an open that arrives late changes nothing); the
//!   store carries that generation and every call checks it in the same
//!   statement. A store whose actor was opened again elsewhere fails every
//!   later call, reads included, with [`vfs_core::KvError::Fenced`], and
//!   never writes a page after the takeover.
//! - **Leases.** The owner holds a lease of [`PgOptions::lease_duration`],
//!   renewed in the background, and refuses every call once it may have run
//!   out ([`vfs_core::KvStore::check_owner`], which vfs-wasm runs around
//!   every database call, so reads served from SQLite's page cache stop
//!   too). A takeover waits for the previous owner's lease to run out, or
//!   not at all when that owner closed the actor. After a new owner's first
//!   acknowledged write, no other host returns data.
//! - **Exact writes.** Every write names the actor's write count it expects
//!   and advances it in the same statement, so a write that arrives late
//!   applies nothing. A write whose answer is lost is settled before it is
//!   reported: its backend is ended and the count read back, so `Ok` means
//!   applied and an error means not applied. Only when even that check
//!   cannot reach the server does the error say the outcome is unknown; the
//!   store then settles it before its next call, and if it had landed that
//!   call fails with [`vfs_core::KvError::OutcomeUnknown`].
//! - **Takeovers in bounded time.** A backend whose client vanished while
//!   holding the actor's row is ended by the next owner once the lease is
//!   over. Driver backends are recognised by a marker comment that starts
//!   every statement locking an actor's row, whatever `application_name` the
//!   hosts use; ending one needs the same role or `pg_signal_backend`, and
//!   without it the takeover waits for the server to drop the connection.
//!   Server-side keepalives, `tcp_user_timeout` and a `lock_timeout` are set
//!   on every connection. Writes extend the lease too, so a busy owner keeps
//!   it while its own writes hold its row.
//! - **Transient failures.** Reads, opens, listing and deleting actors are
//!   retried with exponential backoff, within [`PgOptions::retry_attempts`]
//!   and the deadline of the database call that made them
//!   ([`vfs_core::call_deadline`]): the statement's budget bounds the sum of
//!   its store waits, retries included. The pool drops broken connections
//!   and opens new ones, so the storage recovers by itself when the server
//!   is back.
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

#![forbid(unsafe_code)]

mod actor_store;
mod connection;
mod driver;
mod error;
mod options;
mod schema;
mod stats;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use actor_store::{
    MAX_ACTOR_ID_BYTES, MAX_BATCH_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES, PgActorStore,
};
pub use driver::EngineDriver;
pub use error::{Error, Result};
pub use options::PgOptions;
pub use schema::SCHEMA_VERSION;
pub use stats::PgStats;
pub use storage::PgStorage;

pub use vfs_pool;
