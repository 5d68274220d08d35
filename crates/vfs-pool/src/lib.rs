//! A pool of shared WebAssembly SQLite instances serving many actors.
//!
//! Each actor ("tenant") gets its own SQLite database stored in its own
//! key-value namespace, but actors share instances: up to
//! [`PoolConfig::actors_per_instance`] of them run in one wasm instance, which
//! is what makes thousands of databases per machine affordable. The pool
//! assigns actors to instances (sticky, bin-packed), keeps each instance on a
//! thread of its own so one slow store stalls only its own instance, and
//! destroys instances that stay idle.
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

mod config;
mod driver;
mod error;
mod handle;
mod pool;
mod worker;

pub use config::PoolConfig;
pub use driver::{ActorDriver, ActorStorage, StorageDriver, WrapsStorageDriver};
pub use error::{Error, Result};
pub use handle::{Database, PooledHandle};
pub use pool::{InstanceInfo, MAX_ACTOR_ID_LEN, SqliteVfsPool};

pub use vfs_core::{CountingKv, FaultyKv, KvError, KvLimits, KvStore, MemoryKv};
pub use vfs_wasm::{Rows, Value};
