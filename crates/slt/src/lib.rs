//! SQLite's sqllogictest corpus run through the whole stack: `cargo xtask
//! slt`.
//!
//! Every script gets a fresh database: on the [`Engine::Pool`] engine an
//! actor of a [`driver_fs::FsDriver`] on a temporary directory, so every
//! page goes through the VFS, the pool and redb; on [`Engine::Native`]
//! rusqlite's bundled SQLite (the same version) on a file, for comparison.
//! The scripts are parsed and their records run by the `sqllogictest`
//! crate; this crate adds the two engines, the value formatting of SQLite's
//! own runner ([`format`]), and the reports.
//!
//! What is supported is what SQLite's corpus uses: `statement ok` and
//! `statement error`, `query <I|T|R…> [nosort|rowsort|valuesort]` with the
//! expected values one per line or as "N values hashing to <md5>" (the
//! threshold is [`DEFAULT_HASH_THRESHOLD`] until a `hash-threshold` record
//! changes it), `skipif`/`onlyif` evaluated for the engine name
//! [`ENGINE_NAME`], and `halt`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vfs_slt::Error> {
//! use std::path::PathBuf;
//! let report = vfs_slt::run_paths(&[PathBuf::from("tests/slt")], vfs_slt::Engine::Pool, |file| {
//!     println!("{file}");
//! })
//! .await?;
//! for failure in report.failures() {
//!     print!("{failure}");
//! }
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod discover;
mod engine;
mod error;
pub mod format;
mod report;
mod run;
mod script;

pub use discover::find_scripts;
pub use engine::Engine;
pub use error::{EngineError, Error};
pub use report::{Failure, FileReport, RunReport};
pub use run::{DEFAULT_HASH_THRESHOLD, ENGINE_NAME, POOL_STATEMENT_BUDGET, run_paths, run_scripts};
pub use script::Script;
