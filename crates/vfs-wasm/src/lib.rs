//! SQLite compiled to WebAssembly, run by wasmer, with its VFS served by the
//! host over `vfs-core`.
//!
//! Why this shape: one wasm instance is cheap (microseconds, tens of KiB per
//! database) yet sandboxed, so one instance serves several tenants'
//! databases. The host decides everything a guest could abuse: which files
//! a connection may open (only those registered to the database currently
//! running), how long a statement may run, and how much memory the instance
//! may use.
//!
//! - [`SqliteModule`]: the compiled module, shared per process and cached on
//!   disk;
//! - [`Instance`]: one wasmer store + instance serving several databases
//!   ([`DbId`]), each over its own [`vfs_core::KvStore`];
//! - [`Value`] / [`Rows`]: parameters and results;
//! - [`Error`]: what went wrong, with the storage error behind I/O failures.

mod error;
mod host;
mod instance;
mod memory;
mod module;
mod value;

pub use error::{Error, Result};
pub use instance::{DbId, Instance, InstanceConfig, Lookaside};
pub use module::{ModuleConfig, SqliteModule};
pub use value::{Rows, Value};
