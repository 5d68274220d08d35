//! What an [`Instance`](crate::Instance) is allowed: its memory, the time
//! budget of a call, the page cache, length and result limits, and each
//! database's share of the guest heap.
//!
//! Why a module of its own: a pool checks its configuration with
//! [`InstanceConfig::validate`] before any instance exists, and reading the
//! limits should not mean reading how the guest is driven.

use std::time::Duration;

use crate::error::{Error, Result};

/// Per-connection lookaside allocator (small-allocation slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookaside {
    /// Bytes per slot (SQLite rounds it down to a multiple of 8).
    pub slot_size: u32,
    /// Number of slots per connection.
    pub slots: u32,
}

/// Limits and tuning of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceConfig {
    /// Maximum guest memory in bytes (rounded down to 64 KiB pages). Guest
    /// allocations beyond it fail with [`Error::LimitExceeded`]; the host is
    /// never asked for more. Default 256 MiB.
    pub memory_limit_bytes: u64,
    /// Time budget of one call (`exec` with its whole script, `execute`,
    /// `query`), including the store waits and the built-in functions it
    /// runs; `None` disables it. Past it the call fails with
    /// [`Error::Interrupted`] and the database stays usable. At most
    /// [`MAX_BUDGET`]. Default 10 s.
    pub statement_timeout: Option<Duration>,
    /// Page cache per database, in KiB. Default 256 KiB (64 pages).
    pub cache_size_kib: u32,
    /// Lookaside per connection; `None` disables it (least memory per
    /// tenant). Default 64 slots of 128 bytes.
    pub lookaside: Option<Lookaside>,
    /// Longest string or blob (`SQLITE_LIMIT_LENGTH`), in bytes; longer
    /// values are [`Error::LimitExceeded`]. Default 32 MiB.
    pub max_length: u32,
    /// Prepared statements kept per database for reuse. Default 16.
    pub statement_cache: usize,
    /// Longest LIKE / GLOB pattern, in bytes (SQLite's
    /// `SQLITE_LIMIT_LIKE_PATTERN_LENGTH`). Matching takes up to pattern
    /// length × string length steps; the shim's matcher checks the time
    /// budget as it goes and never recurses. Default 2000.
    pub max_like_pattern: u32,
    /// Guest heap one database may hold, in bytes (its page cache, schema,
    /// statements, TEMP tables, open transactions and sort buffers). An
    /// allocation past it fails that database's statement with
    /// [`Error::LimitExceeded`]; the other databases of the instance keep
    /// their memory. Default 64 MiB.
    pub tenant_memory_limit_bytes: u64,
    /// Guest heap held back for each open database: however much its
    /// co-tenants take, a database can always grow to this much (as long as
    /// the reserves of all open databases fit in half the instance's
    /// memory; a pool sizes it so). Past its reserve a database competes
    /// for the instance's free memory, up to its share. At most
    /// `tenant_memory_limit_bytes`. Default 2 MiB.
    pub tenant_memory_reserve_bytes: u64,
    /// Bytes one call may return to the host, counted as the host holds
    /// them: every value's own size (32 bytes) plus its text or blob bytes,
    /// every row's and every column name's. Past it the call fails with
    /// [`Error::LimitExceeded`]. Default 64 MiB.
    pub max_result_bytes: u64,
    /// Longest wait for one store call (a `KvStore` future) when the call's
    /// budget does not end sooner. An expired wait is an I/O error for the
    /// statement. A wait for anything that may change the store (a write,
    /// a delete, an open that may create the file) also poisons the
    /// database until it is reopened, since the store may still apply what
    /// it was asked; a read that never answered changed nothing, and the
    /// database stays usable. Default 30 s; at most [`MAX_BUDGET`].
    pub store_timeout: Duration,
}

/// Longest accepted time budget or store wait: one day.
pub const MAX_BUDGET: Duration = Duration::from_hours(24);

impl Default for InstanceConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 256 << 20,
            statement_timeout: Some(Duration::from_secs(10)),
            cache_size_kib: 256,
            lookaside: Some(Lookaside {
                slot_size: 128,
                slots: 64,
            }),
            max_length: 32 << 20,
            statement_cache: 16,
            max_like_pattern: 2000,
            tenant_memory_limit_bytes: 64 << 20,
            tenant_memory_reserve_bytes: 2 << 20,
            max_result_bytes: 64 << 20,
            store_timeout: Duration::from_secs(30),
        }
    }
}

impl InstanceConfig {
    /// Checks every value; [`Instance::new`](crate::Instance::new) calls
    /// it, and a pool checks its configuration with it before any instance
    /// exists.
    pub fn validate(&self) -> Result<()> {
        let refuse = |what: String| Err(Error::Config(what));
        if self.cache_size_kib == 0 || self.max_length == 0 {
            return refuse("cache_size_kib and max_length must be positive".into());
        }
        if let Some(budget) = self.statement_timeout
            && (budget.is_zero() || budget > MAX_BUDGET)
        {
            return refuse(format!(
                "statement_timeout must be between 1 ns and {} s, got {budget:?}",
                MAX_BUDGET.as_secs()
            ));
        }
        if self.store_timeout.is_zero() || self.store_timeout > MAX_BUDGET {
            return refuse(format!(
                "store_timeout must be between 1 ns and {} s, got {:?}",
                MAX_BUDGET.as_secs(),
                self.store_timeout
            ));
        }
        if self.tenant_memory_limit_bytes < 1 << 20 {
            return refuse("tenant_memory_limit_bytes must be at least 1 MiB".into());
        }
        if self.tenant_memory_reserve_bytes > self.tenant_memory_limit_bytes {
            return refuse(
                "tenant_memory_reserve_bytes must not exceed tenant_memory_limit_bytes".into(),
            );
        }
        if self.max_result_bytes == 0 {
            return refuse("max_result_bytes must be positive".into());
        }
        Ok(())
    }
}
