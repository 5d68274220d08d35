//! Assigns actors to shared SQLite instances and manages their lifecycle.
//!
//! The pool itself arrives with the vfs-pool issue; this crate currently
//! re-exports the layers below it so that downstream crates can depend on one
//! name.

pub use vfs_core;
pub use vfs_wasm;
