//! A pool of shared WebAssembly SQLite instances serving many actors.
//!
//! Each actor ("tenant") gets its own SQLite database stored in its own
//! key-value namespace, but actors share instances: up to
//! [`PoolConfig::actors_per_instance`] of them run in one wasm instance, which
//! is what makes thousands of databases per machine affordable. The pool
//! assigns actors to instances (sticky, bin-packed), runs one call at a time
//! on each instance so one slow store stalls only its own instance, and
//! destroys instances that stay idle.
//!
//! # Where a call runs
//!
//! On a multi-thread tokio runtime a call that finds its instance free runs
//! on the caller's own thread, inside [`tokio::task::block_in_place`], so
//! the runtime moves that worker's other tasks elsewhere while the call
//! blocks: no thread hop per statement. A call that finds its instance busy
//! queues for a thread the instance keeps, which serves its queue back to
//! back (waiting callers are tasks, not threads); so do all calls on a
//! current-thread runtime (where blocking the caller would stall every
//! task), calls past [`PoolConfig::max_inline_calls`], and closes, whose
//! wait stays bounded. Either way the call is bounded by
//! [`statement_timeout`](PoolConfig::statement_timeout) and
//! [`store_timeout`](PoolConfig::store_timeout); a `tokio::time::timeout`
//! around an inline call takes effect only when the call returns, since the
//! call blocks its thread until then.
//!
//! # Durable acknowledgements
//!
//! A commit does not hold its instance while its store writes it. The
//! store of each open database is wrapped in a write-behind queue: SQLite's
//! atomic commit hands its batch to the queue and the call returns the
//! instance to its co-tenants at once; the caller's future then waits (the
//! output gate) until every write the call made is durable, and only then
//! resolves. So success is never reported for a write that could still be
//! lost, and a slow store delays only its own actor.
//!
//! - Per database, batches reach the store in the order they were
//!   committed; commits made while one is in flight are sent together in
//!   the next batch (within the store's limits). A store that answers at
//!   once is written without any task switch.
//! - Reads of pages still waiting for the store are served from the queue,
//!   and a call that read them waits for them as well.
//! - A write that fails poisons its database: the call that made it and
//!   every later call fail with [`Error::Poisoned`] (also
//!   [`Error::is_poisoned`]; check it before retrying on a transient
//!   [`Error::kv_error`], since retrying cannot help). Close and open the
//!   database again: it then shows the last durable state. Co-tenants are
//!   not affected.
//! - [`Database::close`], [`PooledHandle::release`] and
//!   [`SqliteVfsPool::shutdown`] wait for queued writes, at most
//!   [`PoolConfig::close_timeout`]; past it they fail with
//!   [`Error::TimedOut`], and the actor cannot open again until the store
//!   has answered the write still in flight (so it can never land on top of
//!   newer ones).
//! - A call waits at most twice [`PoolConfig::store_timeout`] for its
//!   writes; past that the database is poisoned with
//!   [`KvError::OutcomeUnknown`].
//!
//! [`PoolConfig::write_behind_bytes`] bounds the bytes one database may have
//! queued (a commit past it waits inside its call); zero turns write-behind
//! off, and without a tokio runtime it is off as well.
//!
//! # Memory per actor
//!
//! An open actor costs what its SQLite connection holds in its instance's
//! guest memory (the connection, its schema, its page cache and its cached
//! statements) plus a little host state; BENCHMARKS.md has the account.
//! Two settings trade it against speed:
//!
//! - [`PoolConfig::lookaside`]: SQLite's per-connection small-allocation
//!   slots. Off by default: 64 slots of 128 bytes cost every open actor
//!   8 KiB, and the bench measured no consistent speed gain from them.
//! - [`PoolConfig::release_memory_after`]: a database with no calls for
//!   that long (30 s by default) gives its page cache and cached
//!   statements back to its instance, where co-tenants reuse them; its
//!   next call reads its pages from the store again. The guest memory of
//!   an instance never shrinks, so this keeps an instance from growing
//!   rather than returning memory to the system.
//!   [`Database::release_memory`] does it on demand and
//!   [`Database::memory_bytes`] shows what a database holds.
//!
//! # Guarantees under failure
//!
//! - **Configuration** is checked by [`SqliteVfsPool::new`]: a value no
//!   instance could run with (a time budget of zero or longer than
//!   [`vfs_wasm::MAX_BUDGET`], one day; a zero limit) is
//!   [`Error::InvalidConfig`] there, never a dead worker later. An
//!   [`idle_destroy`](PoolConfig::idle_destroy) too long to represent means
//!   "never by time".
//! - **Broken instances** (the guest trapped, or a call panicked on the
//!   instance's thread, which then stops running it) take no new actors;
//!   their actors' calls fail with [`Error::InstanceBroken`] until released,
//!   and the instance is destroyed once its last actor is released. Release
//!   and acquire the actor again to continue on a healthy instance; its data
//!   is in its store. [`InstanceInfo::broken`] shows the state.
//! - **Hanging stores**: [`PooledHandle::release`], [`Database::close`] and
//!   [`SqliteVfsPool::shutdown`] wait for an instance's thread while its
//!   calls keep ending, and give up once one call has held it for
//!   [`PoolConfig::close_timeout`] (default 5 s, never less than the call
//!   budget plus 0.5 s: 10.5 s by default). Then release still frees the actor, close fails with
//!   [`Error::TimedOut`], the actor's name is poisoned, the instance is
//!   marked broken, and shutdown detaches the stuck thread (still counted by
//!   [`SqliteVfsPool::worker_threads`] until the store call returns). A store
//!   future that awaits too long inside a call is cut by
//!   [`PoolConfig::store_timeout`] (default 30 s) or the call's
//!   [`statement_timeout`](PoolConfig::statement_timeout) (default 10 s).
//! - **Re-entrant stores**: a `KvStore` that, from inside a call, calls back
//!   into a database on the same instance (directly, or through other
//!   instances whose stores call on, on the same thread) gets
//!   [`Error::Reentrant`] at once instead of a deadlock. (A callback from another thread, such as a
//!   spawned task the store awaits, cannot be recognised; it waits in the
//!   queue and is cut by `store_timeout`.)
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use vfs_pool::*;
//!
//! # async fn demo() -> Result<(), Error> {
//! let pool = SqliteVfsPool::new(PoolConfig {
//!     actors_per_instance: 50,
//!     idle_destroy: Duration::from_secs(30),
//!     ..PoolConfig::default()
//! })?;
//! let handle = pool.acquire("actor-a").await?;
//! let db = handle.open(Arc::new(MemoryKv::new())).await?;
//! db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)").await?;
//! db.execute("INSERT INTO t (v) VALUES (?1)", &[Value::from("x")]).await?;
//! let rows = db.query("SELECT id, v FROM t", &[]).await?;
//! assert_eq!(rows.rows, vec![vec![Value::Integer(1), Value::from("x")]]);
//! db.close().await?;
//! handle.release().await;
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod archive;
mod config;
mod driver;
mod error;
mod flush;
mod handle;
mod idle;
mod pool;
pub mod testing;
mod worker;

pub use archive::{ActorInfo, ImportMode, Snapshot};
pub use config::PoolConfig;
pub use driver::{ActorDriver, ActorStorage, StorageDriver, WrapsStorageDriver};
pub use error::{Error, Result};
pub use handle::{Database, PooledHandle};
pub use pool::{InstanceInfo, MAX_ACTOR_ID_LEN, SqliteVfsPool, validate_actor_id};

pub use vfs_core::{CountingKv, FaultyKv, KvError, KvLimits, KvStore, MemoryKv};
pub use vfs_wasm::{Lookaside, Rows, Value};
