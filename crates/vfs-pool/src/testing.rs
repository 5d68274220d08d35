//! Helpers for the tests of code built on the pool: this crate's, the
//! drivers' and a user's own. Each was written once here instead of once
//! per test crate.
//!
//! - [`config`]: a [`PoolConfig`] for tests (a shared module cache, no idle
//!   destroy while a test runs);
//! - [`GateKv`]: a store whose writes can be held at a gate, to catch a
//!   call in the middle of its commit;
//! - [`integrity`] and [`scalar`]: one-value queries that fail the test on
//!   anything unexpected;
//! - [`report`]: an error with all its causes on one line, to assert on
//!   words a cause holds (errors here keep causes in `source()`, not in
//!   their own message);
//! - [`sqlite3_shell`]: the system's `sqlite3` shell on a file, the client
//!   nobody here wrote that checks exported databases.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};

use crate::{Database, KvError, KvLimits, KvStore, MemoryKv, PoolConfig, Value};

pub use vfs_core::testing::report;

/// A configuration for tests: `actors_per_instance` seats per instance, the
/// compiled module cached in `module_cache_dir` (pass a directory every test
/// binary shares, such as `env!("CARGO_TARGET_TMPDIR")` joined with a name,
/// so that only the first test compiles SQLite), an idle delay of an hour,
/// so that only an explicit `reap_idle` (or a test that shortens it)
/// destroys instances, and no release of idle databases' memory (a test
/// that wants it sets `release_memory_after`).
pub fn config(actors_per_instance: usize, module_cache_dir: impl Into<PathBuf>) -> PoolConfig {
    PoolConfig {
        actors_per_instance,
        idle_destroy: Duration::from_hours(1),
        release_memory_after: None,
        module_cache_dir: Some(module_cache_dir.into()),
        ..PoolConfig::default()
    }
}

/// `PRAGMA integrity_check` of `db`, as its single text result (`"ok"` for
/// a sound database). Panics if the query fails or answers anything else.
pub async fn integrity(db: &Database) -> String {
    match scalar_value(db, "PRAGMA integrity_check").await {
        Value::Text(text) => text,
        other => panic!("PRAGMA integrity_check answered {other:?}"),
    }
}

/// The single integer `sql` returns. Panics if the query fails or returns
/// anything but one row of one integer.
pub async fn scalar(db: &Database, sql: &str) -> i64 {
    match scalar_value(db, sql).await {
        Value::Integer(n) => n,
        other => panic!("{sql}: answered {other:?}, not an integer"),
    }
}

async fn scalar_value(db: &Database, sql: &str) -> Value {
    let rows = db
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    match <[Vec<Value>; 1]>::try_from(rows.rows) {
        Ok([row]) => match <[Value; 1]>::try_from(row) {
            Ok([value]) => value,
            Err(row) => panic!("{sql}: a row of {} values, not one", row.len()),
        },
        Err(rows) => panic!("{sql}: {} rows, not one", rows.len()),
    }
}

/// A store whose writes can be held at a gate: once [armed](Self::arm), the
/// next `put_batch` announces itself on [`entered`](Self::entered) and waits
/// until [`open`](Self::open) is called. Reads and deletes pass through.
/// Built on tokio's sync primitives, which need no runtime, so it works on
/// an instance's worker thread.
pub struct GateKv {
    inner: MemoryKv,
    armed: AtomicBool,
    gate: Semaphore,
    /// Notified when a write reaches the armed gate.
    pub entered: Notify,
}

impl GateKv {
    /// A gate over a fresh [`MemoryKv`], open until armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            armed: AtomicBool::new(false),
            gate: Semaphore::new(0),
            entered: Notify::new(),
        })
    }

    /// The next write will block at the gate.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Lets the blocked write (and every later one) through.
    pub fn open(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl std::fmt::Debug for GateKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateKv")
            .field("armed", &self.armed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl KvStore for GateKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.armed.load(Ordering::SeqCst) {
            self.entered.notify_one();
            let _permit = self
                .gate
                .acquire()
                .await
                .expect("gate semaphore is never closed");
        }
        self.inner.put_batch(entries).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

/// Runs the system's `sqlite3` shell (Debian's `sqlite3` package, which
/// `cargo xtask deps` installs) on `file` with `sql` as its argument and
/// returns what it printed; fails the test if it cannot run or fails.
pub fn sqlite3_shell(file: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(file)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell (Debian's sqlite3 package; `cargo xtask deps` installs it)");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("sqlite3 prints UTF-8 here")
}
