//! Pool configuration: how densely actors are packed and what each instance
//! may spend.
//!
//! Every knob has a default chosen for many small tenants on one machine; the
//! defaults are documented on the fields so a reader of `PoolConfig::default()`
//! knows what they get.

use std::path::PathBuf;
use std::time::Duration;

use vfs_wasm::InstanceConfig;

use crate::{Error, Result};

/// Configuration of a [`SqliteVfsPool`](crate::SqliteVfsPool).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How many actors share one WebAssembly instance. Default 50.
    ///
    /// Higher packs more tenants per instance (less memory per actor); lower
    /// spreads them over more worker threads (less head-of-line blocking when
    /// one tenant's storage is slow). Zero is refused by
    /// [`SqliteVfsPool::new`](crate::SqliteVfsPool::new).
    pub actors_per_instance: usize,
    /// How long an instance with no actors and no operations in flight stays
    /// alive before it is destroyed. Default 30 s.
    ///
    /// Keeping an empty instance a little while makes a burst of short-lived
    /// actors reuse it instead of instantiating again.
    pub idle_destroy: Duration,
    /// Time budget of one statement; a statement running longer is
    /// interrupted with [`Error::is_interrupted`](crate::Error::is_interrupted)
    /// true and the database stays usable. `None` disables the budget.
    /// Default: the engine's default (see [`InstanceConfig`]).
    pub statement_timeout: Option<Duration>,
    /// Cap on one instance's guest memory, in bytes, shared by all its actors.
    /// A query that needs more fails with a limit error; the instance keeps
    /// serving. Default: the engine's default (see [`InstanceConfig`]).
    pub memory_limit_bytes: u64,
    /// SQLite page cache per database, in KiB. Default: the engine's default.
    pub cache_size_kib: u32,
    /// Directory for the compiled-module cache, so that a process start
    /// deserializes the compiled SQLite module in milliseconds instead of
    /// compiling it. `None` compiles in memory on every process start.
    /// Default: `$HOME/.cache/vfs-wasm` (or `<temp dir>/vfs-wasm-cache-<user>`
    /// without a home). Only a directory private to this user is used.
    pub module_cache_dir: Option<PathBuf>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        let engine = InstanceConfig::default();
        Self {
            actors_per_instance: 50,
            idle_destroy: Duration::from_secs(30),
            statement_timeout: engine.statement_timeout,
            memory_limit_bytes: engine.memory_limit_bytes,
            cache_size_kib: engine.cache_size_kib,
            module_cache_dir: Some(default_module_cache_dir()),
        }
    }
}

/// A per-user cache directory: under the home directory when there is one,
/// else in the temp directory with the user's name in it.
fn default_module_cache_dir() -> PathBuf {
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => home.join(".cache").join("vfs-wasm"),
        _ => {
            let user = std::env::var("USER").unwrap_or_else(|_| "default".to_owned());
            std::env::temp_dir().join(format!("vfs-wasm-cache-{user}"))
        }
    }
}

impl PoolConfig {
    /// Checks the values that have no sensible meaning.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.actors_per_instance == 0 {
            return Err(Error::InvalidConfig(
                "actors_per_instance must be at least 1".into(),
            ));
        }
        if self.memory_limit_bytes == 0 {
            return Err(Error::InvalidConfig(
                "memory_limit_bytes must be greater than 0".into(),
            ));
        }
        Ok(())
    }

    /// The per-instance engine settings derived from this pool configuration.
    pub(crate) fn instance_config(&self) -> InstanceConfig {
        InstanceConfig {
            statement_timeout: self.statement_timeout,
            memory_limit_bytes: self.memory_limit_bytes,
            cache_size_kib: self.cache_size_kib,
            ..InstanceConfig::default()
        }
    }
}
