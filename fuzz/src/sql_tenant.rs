//! The `sql_tenant` target: bytes become SQL text run by one tenant of a
//! shared SQLite instance, next to a co-tenant that must not notice.
//!
//! This is the isolation promise of the whole design under hostile input:
//! whatever SQL a tenant sends, the host does not panic, the guest does not
//! trap (a trap breaks the instance for every tenant, so it is a finding),
//! the tenant's own database stays sound, and the co-tenant's rows and
//! stored pages are unchanged and still served.
//!
//! One instance is reused across inputs (per thread) so an execution costs
//! a database open and close rather than an instantiation; each input gets a
//! fresh tenant database, so an input's outcome does not depend on the ones
//! before it. A short statement budget and a modest memory cap keep runaway
//! queries cheap. An input starting with `-- fail_after N` also makes the
//! tenant's store fail after `N` calls (see [`fault_directive`]); the store
//! heals when the input is done, and the tenant's database must then be
//! sound: a failed commit may be lost, never half-applied.
//!
//! Compiling the module with an instrumented compiler takes seconds (up to
//! 20 s), which would eat a short fuzz run: set `VFS_FUZZ_MODULE_CACHE` to a
//! directory (as trusted as the binary: its files become native code) and
//! every later process loads the compiled module in milliseconds.
//! `cargo xtask fuzz` sets it to `target/fuzz/module-cache`.
//!
//! Coverage note: SQLite itself runs as WebAssembly, which libFuzzer does
//! not instrument; the guidance comes from the host side (VFS calls, journal
//! fallback, error and limit paths, value conversion), the seeds in
//! `fuzz/seeds/sql_tenant` and the keyword dictionary `fuzz/dict/sql.dict`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vfs_core::{FaultyKv, KvLimits, KvStore, MemoryKv, PAGE_SIZE, code};
use vfs_wasm::{DbId, Error, Instance, InstanceConfig, ModuleConfig, Rows, SqliteModule, Value};

use crate::Finding;

/// The limits every fuzzed tenant runs under.
pub fn instance_config() -> InstanceConfig {
    InstanceConfig {
        memory_limit_bytes: 32 << 20,
        statement_timeout: Some(Duration::from_millis(100)),
        max_length: 1 << 20,
        ..InstanceConfig::default()
    }
}

/// Keys per batch of the tenant's store: small, so larger transactions take
/// the journal fallback path too.
const TENANT_BATCH_KEYS: usize = 16;

const NEIGHBOUR_SETUP: &str = "
    CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB);
    CREATE INDEX kv_v ON kv (v);
    INSERT INTO kv (v, b) VALUES ('alpha', x'00ff'), ('beta', zeroblob(5000)), ('gamma', NULL);
";

const NEIGHBOUR_QUERY: &str = "SELECT k, v, length(b), hex(substr(b, 1, 2)) FROM kv ORDER BY v";

/// Environment variable naming the compiled-module cache directory.
pub const MODULE_CACHE_VAR: &str = "VFS_FUZZ_MODULE_CACHE";

/// Longest SQL quoted in a finding.
const SHOWN_SQL: usize = 300;

/// The shared instance with its co-tenant and what the co-tenant must keep
/// seeing.
struct Harness {
    instance: Instance,
    neighbour: DbId,
    neighbour_kv: Arc<MemoryKv>,
    expected_rows: Rows,
    expected_store: BTreeMap<Bytes, Bytes>,
    runs: u64,
}

impl Harness {
    fn new() -> Result<Harness, Finding> {
        let setup = |what: &str, e: Error| Finding::Setup(format!("{what}: {e}"));
        let config = ModuleConfig {
            cache_dir: std::env::var_os(MODULE_CACHE_VAR).map(PathBuf::from),
        };
        let module = SqliteModule::shared(&config).map_err(|e| setup("module", e))?;
        let mut instance =
            Instance::new(&module, instance_config()).map_err(|e| setup("instance", e))?;
        let neighbour_kv = Arc::new(MemoryKv::new());
        let store: Arc<dyn KvStore> = neighbour_kv.clone();
        let neighbour = instance
            .open("neighbour", store)
            .map_err(|e| setup("open the co-tenant", e))?;
        instance
            .exec(neighbour, NEIGHBOUR_SETUP)
            .map_err(|e| setup("fill the co-tenant", e))?;
        let expected_rows = instance
            .query(neighbour, NEIGHBOUR_QUERY, &[])
            .map_err(|e| setup("query the co-tenant", e))?;
        if expected_rows.rows.len() != 3 {
            return Err(Finding::Setup(format!(
                "co-tenant holds {:?}",
                expected_rows.rows
            )));
        }
        let expected_store = neighbour_kv.snapshot();
        Ok(Harness {
            instance,
            neighbour,
            neighbour_kv,
            expected_rows,
            expected_store,
            runs: 0,
        })
    }

    fn run(&mut self, data: &[u8]) -> Result<(), Finding> {
        let sql = String::from_utf8_lossy(data);
        let shown = || shorten(&sql);
        let broken = |reason: String| Finding::InstanceBroken {
            sql: shown(),
            reason,
        };
        let tenant_finding = |what: String| Finding::Tenant { sql: shown(), what };

        self.runs += 1;
        let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::with_limits(KvLimits {
            max_batch_keys: TENANT_BATCH_KEYS,
            max_value_bytes: PAGE_SIZE,
        }));
        let faulty = Arc::new(FaultyKv::new(memory));
        let kv: Arc<dyn KvStore> = faulty.clone();
        let tenant = self
            .instance
            .open(&format!("tenant-{}", self.runs), kv)
            .map_err(|e| Finding::Setup(format!("open a fresh tenant: {e}")))?;

        // The input itself: any error is fine, a trap is not. Store faults
        // stop at the end of the input, as when a store recovers.
        if let Some(calls) = fault_directive(&sql) {
            faulty.fail_after(calls);
        }
        let outcome = self.instance.exec(tenant, &sql);
        faulty.heal();
        if let Err(Error::Broken { reason }) = outcome {
            return Err(broken(reason));
        }
        if self.instance.is_broken() {
            return Err(broken("is_broken() after the tenant's SQL".into()));
        }

        // The tenant's own database is still sound and its connection usable.
        match self.instance.query(tenant, "PRAGMA integrity_check", &[]) {
            Ok(rows) if rows.rows == [[Value::from("ok")]] => {}
            Ok(rows) => return Err(tenant_finding(format!("integrity_check: {:?}", rows.rows))),
            Err(Error::Broken { reason }) => return Err(broken(reason)),
            Err(Error::Sqlite {
                code: c, message, ..
            }) if c & 0xff == code::SQLITE_CORRUPT => {
                return Err(tenant_finding(format!(
                    "integrity_check: corrupt: {message}"
                )));
            }
            // Budgets cut the check short; that proves nothing either way.
            Err(Error::Interrupted { .. } | Error::LimitExceeded { .. }) => {}
            // With the store healed, the connection must have recovered.
            Err(e) => return Err(tenant_finding(format!("integrity_check failed: {e}"))),
        }

        match self.instance.close(tenant) {
            Ok(()) => {}
            Err(Error::Broken { reason }) => return Err(broken(reason)),
            Err(e) => return Err(tenant_finding(format!("close failed: {e}"))),
        }
        if self.instance.database_count() != 1 {
            return Err(tenant_finding(format!(
                "{} databases open after closing the tenant",
                self.instance.database_count()
            )));
        }

        // The co-tenant saw nothing.
        let co_tenant = |what: String| Finding::CoTenant { sql: shown(), what };
        match self.instance.query(self.neighbour, NEIGHBOUR_QUERY, &[]) {
            Ok(rows) if rows == self.expected_rows => {}
            Ok(rows) => return Err(co_tenant(format!("rows are now {:?}", rows.rows))),
            Err(Error::Broken { reason }) => return Err(broken(reason)),
            Err(e) => return Err(co_tenant(format!("query failed: {e}"))),
        }
        if self.neighbour_kv.snapshot() != self.expected_store {
            return Err(co_tenant("its stored pages changed".into()));
        }
        if self.instance.guest_memory_bytes() > instance_config().memory_limit_bytes {
            return Err(broken(format!(
                "guest memory {} bytes is over the cap",
                self.instance.guest_memory_bytes()
            )));
        }
        Ok(())
    }
}

/// Prefix of a tenant input that makes its store fail: `-- fail_after N`
/// on the first line (an SQL comment, so the rest stays plain SQL) lets `N`
/// store calls succeed and fails every later one until the input is done.
pub const FAULT_DIRECTIVE: &str = "-- fail_after ";

/// The `N` of a leading [`FAULT_DIRECTIVE`], at most 10 000.
pub fn fault_directive(sql: &str) -> Option<u32> {
    let rest = sql.strip_prefix(FAULT_DIRECTIVE)?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    rest[..digits.min(5)]
        .parse::<u32>()
        .ok()
        .map(|n| n.min(10_000))
}

fn shorten(sql: &str) -> String {
    if sql.len() <= SHOWN_SQL {
        sql.to_owned()
    } else {
        format!("{}…", &sql[..sql.floor_char_boundary(SHOWN_SQL)])
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// Runs `data` (as UTF-8, invalid sequences replaced) as the SQL of a fresh
/// tenant on this thread's shared instance and checks the instance, the
/// tenant and the co-tenant afterwards. After a finding the instance is
/// dropped and the next call builds a new one.
pub fn run(data: &[u8]) -> Result<(), Finding> {
    HARNESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let harness = match slot.take() {
            Some(harness) if !harness.instance.is_broken() => harness,
            _ => Harness::new()?,
        };
        let harness = slot.insert(harness);
        let result = harness.run(data);
        if result.is_err() {
            *slot = None;
        }
        result
    })
}
