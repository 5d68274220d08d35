//! SQLite compiled to WebAssembly, run by wasmer, with its VFS served by the
//! host over `vfs-core`.
//!
//! Why this shape: one wasm instance is cheap (about 0.1 ms to create, tens
//! of KiB per database) yet sandboxed, so one instance serves several
//! tenants' databases. The host decides everything a guest could abuse:
//! which files a connection may open (only those registered to the database
//! currently running), how long a statement may run, and how much memory the
//! instance may use.
//!
//! - [`SqliteModule`]: the compiled module, shared per process and cached on
//!   disk (a cache hit takes milliseconds instead of a second of compiling);
//! - [`Instance`]: one wasmer store + instance serving several databases
//!   ([`DbId`]), each over its own [`vfs_core::KvStore`];
//! - [`Value`] / [`Rows`]: parameters and results;
//! - [`Error`]: what went wrong, with the storage error behind I/O failures.
//!
//! ```text
//! let module = SqliteModule::shared(&ModuleConfig { cache_dir: Some(dir) })?;
//! // an Instance is Send: it can be created on one thread and run on another
//! let mut instance = Instance::new(&module, InstanceConfig::default())?;
//! let db = instance.open("actor-a", Arc::new(MemoryKv::new()))?;
//! instance.exec(db, "CREATE TABLE t (v TEXT)")?;
//! instance.execute(db, "INSERT INTO t VALUES (?1)", &[Value::from("x")])?;
//! let rows = instance.query(db, "SELECT v FROM t", &[])?;
//! instance.close(db)?;
//! ```
//!
//! # Isolation and limits
//! Connections run with an authorizer that denies ATTACH (except the empty
//! name: an in-memory scratch database, as VACUUM uses, charged to the
//! tenant like all its memory), DETACH and changes to the pragmas that fix
//! the storage format, journal and memory; URI filenames are off, SQL with a
//! NUL byte is refused and extension loading is compiled out. The VFS
//! refuses every name that is not a file of the calling database, and a
//! call's result shape is read only after SQLite has (re-)prepared its
//! statement, so a call sees nothing but what its own statement produced.
//!
//! Limits ([`InstanceConfig`], each with its default there): a call past its
//! time budget (`statement_timeout`, one budget for a whole `exec` script,
//! enforced inside slow built-in functions and store waits too) fails with
//! [`Error::Interrupted`]; an allocation past the database's memory share
//! (`tenant_memory_limit_bytes`) or the instance's cap, a value past the
//! length limit, or a result past `max_result_bytes` fails with
//! [`Error::LimitExceeded`]. A `KvStore` that panics or does not answer
//! within `store_timeout` (or the call's budget) fails the statement and
//! poisons that database until it is reopened ([`Error::Poisoned`]): a
//! panic never unwinds through the guest. None of these affects the other
//! databases of the instance.
//!
//! # What a store is told, and what its answers do
//! Every store call is polled inside [`vfs_core::with_deadline`] with the
//! instant the host stops waiting for it (the call's budget or the store
//! timeout, whichever ends first), so a store can bound its own retries by
//! [`vfs_core::call_deadline`]. A store error whose outcome is unknown
//! ([`vfs_core::KvError::OutcomeUnknown`]) poisons the database like a
//! panic does, and reaches the caller intact inside [`Error::Sqlite`]
//! ([`Error::is_poisoned`] says so). Before and after every call the
//! database's [`vfs_core::KvStore::check_owner`] runs: SQLite answers many
//! reads from its page cache without calling the store, so this is what
//! stops a host whose lease lapsed from serving stale rows ([`Error::Store`]
//! with the store's [`vfs_core::KvError::Fenced`]). A failed store call is
//! named in the caller's error by the operation that failed ("commit of
//! the main file failed (...): ..."), with the store's error as `source()`.
//!
//! # Building
//! `build.rs` compiles the SQLite amalgamation shipped by `libsqlite3-sys`
//! plus `c/shim.c` with Debian's clang, lld, wasi-libc and the wasm32
//! compiler-rt (`apt-get install -y clang lld wasi-libc
//! libclang-rt-14-dev-wasm32`). `VFS_WASM_MODULE=/path/sqlite.wasm` uses a
//! prebuilt module instead; it must import its memory and the `env` host
//! functions exactly as `c/shim.c` declares them, and be built with the
//! connection defaults `build.rs` sets (`SQLITE_DEFAULT_LOCKING_MODE=1` and
//! the others of its `DEFINES`): a module without them is refused at its
//! first open with [`Error::Config`].

mod cache;
mod config;
mod error;
mod guest;
mod host;
mod instance;
mod memory;
mod module;
mod statement;
mod value;
mod wait;

pub use config::{InstanceConfig, Lookaside, MAX_BUDGET};
pub use error::{Error, Result};
pub use instance::{DbId, Instance};
pub use module::{ModuleConfig, SqliteModule};
pub use value::{Rows, Value};
