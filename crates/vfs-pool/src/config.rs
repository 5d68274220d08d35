//! Pool configuration: how densely actors are packed and what each instance
//! may spend.
//!
//! Every knob has a default chosen for many small tenants on one machine; the
//! defaults are documented on the fields so a reader of `PoolConfig::default()`
//! knows what they get.

use std::path::PathBuf;
use std::time::Duration;

use vfs_wasm::{InstanceConfig, Lookaside};

use crate::{Error, Result};

/// Configuration of a [`SqliteVfsPool`](crate::SqliteVfsPool).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// How many actors share one WebAssembly instance. Default 50.
    ///
    /// Higher packs more tenants per instance (less memory per actor); lower
    /// spreads them over more instances, each running its own calls (less
    /// head-of-line blocking when one tenant's storage is slow). Zero is
    /// refused by
    /// [`SqliteVfsPool::new`](crate::SqliteVfsPool::new).
    pub actors_per_instance: usize,
    /// How long an instance with no actors and no operations in flight stays
    /// alive before it is destroyed. Default 30 s.
    ///
    /// Keeping an empty instance a little while makes a burst of short-lived
    /// actors reuse it instead of instantiating again. Any value is accepted:
    /// a delay too long to represent (such as `Duration::MAX`) means idle
    /// instances are never destroyed by time, only by
    /// [`reap_idle`](crate::SqliteVfsPool::reap_idle) and
    /// [`shutdown`](crate::SqliteVfsPool::shutdown).
    pub idle_destroy: Duration,
    /// Time budget of one call (`exec` with its whole script, `execute`,
    /// `query`, `open`), including its store waits and the long built-in
    /// functions it runs; a call running longer is interrupted with
    /// [`Error::is_interrupted`](crate::Error::is_interrupted) true and the
    /// database stays usable. `None` disables the budget.
    /// At most [`vfs_wasm::MAX_BUDGET`] (one day) and not zero, else
    /// [`SqliteVfsPool::new`](crate::SqliteVfsPool::new) refuses it.
    /// Default: the engine's default, 10 s (see [`InstanceConfig`]).
    pub statement_timeout: Option<Duration>,
    /// Cap on one instance's guest memory, in bytes, shared by all its actors.
    /// A query that needs more fails with a limit error; the instance keeps
    /// serving. Default: the engine's default (see [`InstanceConfig`]).
    pub memory_limit_bytes: u64,
    /// SQLite page cache per database, in KiB. Default: the engine's default.
    pub cache_size_kib: u32,
    /// SQLite's lookaside allocator per actor's connection: slots that
    /// serve its small allocations without the guest's `malloc`. `None`
    /// (the default) gives each actor none, which saves its slots' memory
    /// (8 KiB for 64 slots of 128 bytes) on every open actor; see
    /// BENCHMARKS.md for what it costs in speed.
    pub lookaside: Option<Lookaside>,
    /// Guest heap one actor's database may hold, in bytes (page cache,
    /// schema, statements, temporary tables, sorts). Past it that actor's
    /// statement fails with a limit error; its co-tenants keep their memory.
    /// At least 1 MiB. Default: the engine's default, 64 MiB.
    ///
    /// Shares may add up to more than `memory_limit_bytes`, so each open
    /// database also keeps a reserve no co-tenant can take: 2 MiB, or less
    /// when `actors_per_instance` reserves would take more than half of
    /// `memory_limit_bytes` (then half of it, split evenly).
    pub tenant_memory_limit_bytes: u64,
    /// Bytes one call may return, counted as the host holds them (32 per
    /// value plus its text or blob bytes, rows and column names too); past
    /// it the call fails with a limit error. Not zero.
    /// Default: the engine's default, 64 MiB.
    pub max_result_bytes: u64,
    /// Longest wait for one `KvStore` future inside a call, when the call's
    /// own budget does not end sooner. Past it the statement fails with an
    /// I/O error; if the store call could change the store (a write, a
    /// delete, an open that may create the file), the database is also
    /// poisoned until it is closed and opened again. Between 1 ns and [`vfs_wasm::MAX_BUDGET`]. Default: the
    /// engine's default, 30 s. (A store that blocks its thread instead of
    /// awaiting cannot be cut short; `close_timeout` bounds what the pool
    /// waits for it.)
    pub store_timeout: Duration,
    /// How long one call may hold its instance's thread before the pool
    /// declares the thread stuck (typically in a store call that blocks
    /// its thread and never returns). Never less than `statement_timeout`
    /// plus 0.5 s, so a call within its budget is never declared stuck
    /// (past its budget a call ends within milliseconds: the engine
    /// interrupts it and stops waiting for its store). Default 5 s (so
    /// 10.5 s with the default 10 s budget); between
    /// 1 ns and [`vfs_wasm::MAX_BUDGET`].
    ///
    /// [`PooledHandle::release`](crate::PooledHandle::release),
    /// [`Database::close`](crate::Database::close) and
    /// [`SqliteVfsPool::shutdown`](crate::SqliteVfsPool::shutdown) wait for
    /// the calls queued ahead of them as long as each of those ends within
    /// this bound, and give up once one does not: release still frees the
    /// actor, close fails with [`Error::TimedOut`](crate::Error::TimedOut),
    /// the actor's name is poisoned, the instance takes no new actors, and
    /// shutdown stops waiting for the thread (it is detached and ends when
    /// the store call returns). So with a hanging store they return at
    /// most this bound after the hanging call began.
    pub close_timeout: Duration,
    /// Most calls that may run inline at once (see the crate's "Where a call
    /// runs"). Default 64.
    ///
    /// An inline call occupies one of the runtime's blocking threads while
    /// it runs (for instance while it waits for its store), and tokio
    /// allows a bounded number of those (512 by default) for everything in
    /// the process; past this limit, further calls go to their instance's
    /// own thread instead, as on a current-thread runtime. Zero turns inline
    /// calls off: every call then takes the hop to its instance's thread, a
    /// `tokio::time::timeout` around it returns on time (the call itself
    /// goes on), and a store that blocks its thread for ever holds an
    /// instance thread rather than one of the runtime's.
    pub max_inline_calls: usize,
    /// Most bytes of one database's store writes that may wait for its
    /// flusher (see the crate's "Durable acknowledgements"). Past it a
    /// commit waits, inside its call, for earlier writes to reach the
    /// store. Zero turns write-behind off: every store write is then
    /// awaited inside the call that makes it, holding the instance. Default
    /// 8 MiB.
    pub write_behind_bytes: usize,
    /// How long an open database may go without a call before the pool
    /// gives its memory back to its instance: its page cache, its cached
    /// prepared statements and the page images the host keeps for it (see
    /// [`Database::release_memory`](crate::Database::release_memory)).
    /// Its co-tenants can then use that memory, and its own next call reads
    /// the pages it needs from the store again. A background task looks once
    /// per this period and releases each database that had no call running
    /// or started since its previous look: so after between one and two
    /// periods without a call, and once per quiet spell (a release waits its
    /// turn on the instance, at most as long as a call may hold it, see
    /// `close_timeout`). `None` keeps every open database's memory until it
    /// closes. Not zero. Default 30 s.
    pub release_memory_after: Option<Duration>,
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
            lookaside: None,
            tenant_memory_limit_bytes: engine.tenant_memory_limit_bytes,
            max_result_bytes: engine.max_result_bytes,
            store_timeout: engine.store_timeout,
            close_timeout: Duration::from_secs(5),
            max_inline_calls: 64,
            write_behind_bytes: 8 << 20,
            release_memory_after: Some(Duration::from_secs(30)),
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
    /// Checks the values that have no sensible meaning, the engine's among
    /// them, so that a bad value is an error here rather than a failure of
    /// every instance later.
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
        if self.close_timeout.is_zero() || self.close_timeout > vfs_wasm::MAX_BUDGET {
            return Err(Error::InvalidConfig(format!(
                "close_timeout must be between 1 ns and {} s, got {:?}",
                vfs_wasm::MAX_BUDGET.as_secs(),
                self.close_timeout
            )));
        }
        if self.release_memory_after.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig(
                "release_memory_after must not be zero (None turns it off)".into(),
            ));
        }
        self.instance_config().validate().map_err(|e| match e {
            vfs_wasm::Error::Config(reason) => Error::InvalidConfig(reason),
            other => Error::InvalidConfig(other.to_string()),
        })
    }

    /// How long one call may hold its thread before it counts as stuck:
    /// `close_timeout`, but never within the call's own budget.
    pub(crate) fn stuck_after(&self) -> Duration {
        let budget = self
            .statement_timeout
            .and_then(|t| t.checked_add(Duration::from_millis(500)))
            .unwrap_or(Duration::ZERO);
        self.close_timeout.max(budget)
    }

    /// What each database of an instance is guaranteed whatever its
    /// co-tenants hold: the engine's reserve, cut so that the reserves of a
    /// full instance take at most half its memory.
    fn tenant_memory_reserve(&self) -> u64 {
        let fair = self.memory_limit_bytes / 2 / self.actors_per_instance.max(1) as u64;
        InstanceConfig::default()
            .tenant_memory_reserve_bytes
            .min(fair)
            .min(self.tenant_memory_limit_bytes)
    }

    /// The per-instance engine settings derived from this pool configuration.
    pub(crate) fn instance_config(&self) -> InstanceConfig {
        InstanceConfig {
            statement_timeout: self.statement_timeout,
            memory_limit_bytes: self.memory_limit_bytes,
            cache_size_kib: self.cache_size_kib,
            lookaside: self.lookaside,
            tenant_memory_limit_bytes: self.tenant_memory_limit_bytes,
            tenant_memory_reserve_bytes: self.tenant_memory_reserve(),
            max_result_bytes: self.max_result_bytes,
            store_timeout: self.store_timeout,
            ..InstanceConfig::default()
        }
    }
}
