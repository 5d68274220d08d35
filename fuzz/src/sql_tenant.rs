//! The `sql_tenant` target: bytes become SQL text run by one tenant of a
//! shared SQLite instance, next to a co-tenant that must not notice.
//!
//! This is the isolation promise of the whole design under hostile input:
//! whatever SQL a tenant sends, and however its store misbehaves, the host
//! does not panic, the guest does not trap (a trap breaks the instance for
//! every tenant, so it is a finding), the tenant's own database stays sound
//! and keeps what it acknowledged, and the co-tenant's rows and stored pages
//! are unchanged and still served — and never show up in the tenant's
//! results.
//!
//! One instance is reused across inputs (per thread) so an execution costs
//! a database open and close rather than an instantiation; each input gets a
//! fresh tenant database, so an input's outcome does not depend on the ones
//! before it. A short call budget, a short store timeout, a memory share per
//! database and a cap on result bytes keep runaway queries and hanging
//! stores cheap.
//!
//! An input is plain SQL, with a few optional directives (all SQL comments
//! or rare tokens, so a seed stays readable SQL):
//!
//! - a first line `-- fail_after N`, `-- panic_after N` or `-- hang_after N`
//!   makes the tenant's store fail, panic or hang after `N` calls (see
//!   [`store_directive`]); the store heals when the input is done;
//! - lines starting with `-->` cut the input into steps (see [`steps`]):
//!   `--> query` and `--> execute` steps run one statement through the
//!   cached-statement path and are run again after every later step, so
//!   schema changes (ALTER TABLE ADD/DROP/RENAME COLUMN, DROP/CREATE TABLE)
//!   land between runs of the same cached statement; `--> exec` steps run a
//!   script. An input without `-->` is one `exec` of the whole text;
//! - `{{N}}` expands to `N` KiB of letters (see [`expand_long`]), for long
//!   identifiers, literals, column names and error messages.
//!
//! After every step the harness reads the co-tenant's secret (which keeps it
//! warm in guest memory) and commits an acknowledgement row in a table of
//! its own; at the end it heals the store, checks the connection, closes
//! it, reopens the database on the same store (the way back from
//! [`Error::Poisoned`]) and checks it again, acknowledged rows included.
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

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vfs_core::{FaultyKv, KvLimits, KvStore, MemoryKv, PAGE_SIZE, sqlite};
use vfs_wasm::{DbId, Error, Instance, InstanceConfig, ModuleConfig, Rows, SqliteModule, Value};

use crate::Finding;
use crate::store_chaos::{Chaos, ChaosKv, quiet_store_panics};

/// The limits every fuzzed tenant runs under.
pub fn instance_config() -> InstanceConfig {
    InstanceConfig {
        memory_limit_bytes: 32 << 20,
        statement_timeout: Some(Duration::from_millis(100)),
        // Above the 1 MiB at which the host cuts a string from the guest, so
        // error messages built at run time can be longer than that.
        max_length: 2 << 20,
        tenant_memory_limit_bytes: 12 << 20,
        max_result_bytes: 4 << 20,
        // A hanging store costs this much per hang; a store over memory
        // answers at its first poll, so it is never refused for lateness.
        store_timeout: Duration::from_millis(3),
        ..InstanceConfig::default()
    }
}

/// Keys per batch of the tenant's store: small, so larger transactions take
/// the journal fallback path too.
const TENANT_BATCH_KEYS: usize = 16;

/// The co-tenant's secret: planted in its database, it must never appear in
/// anything the tenant gets back. Digits and punctuation keep `{{N}}`
/// expansions (letters only) from producing it.
pub const SECRET: &str = "N3ighb0ur-S3cret-7f2c91d4e8a6b305";

/// Pieces of [`SECRET`] (and of its hex) whose presence in an input means
/// the tenant may have typed the secret itself, so its leak check is off.
const SECRET_HINTS: [&str; 4] = ["s3cret", "7f2c91d4", "533363726574", "4e33696768"];

const NEIGHBOUR_SETUP: &str = "
    CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB);
    CREATE INDEX kv_v ON kv (v);
    INSERT INTO kv (v, b) VALUES ('alpha', x'00ff'), ('beta', zeroblob(5000)), ('gamma', NULL);
    CREATE TABLE secret (s TEXT, b BLOB);
    INSERT INTO secret VALUES ('N3ighb0ur-S3cret-7f2c91d4e8a6b305',
                               CAST('N3ighb0ur-S3cret-7f2c91d4e8a6b305' AS BLOB));
";

const NEIGHBOUR_QUERY: &str = "SELECT k, v, length(b), hex(substr(b, 1, 2)) FROM kv ORDER BY v";

/// Read from the co-tenant after every step of the tenant: several copies of
/// the secret, fresh in guest memory when the tenant's next call runs.
const SECRET_QUERY: &str = "SELECT s, s, s, b, s || s FROM secret";

/// The harness's own table in the tenant database: one row per
/// acknowledged commit.
pub const ACK_TABLE: &str = "fuzz_ack_q7z3";

/// Most steps run from one input; the rest of the text stays in the last.
pub const MAX_STEPS: usize = 16;

/// Most cached statements (`--> query` / `--> execute` steps) re-run after
/// every step.
pub const MAX_CACHED: usize = 6;

/// Tenant calls (steps and re-runs) after which the rest of an input is
/// skipped: each may take up to the call budget.
pub const MAX_CALLS: usize = 64;

/// Hangs after which the rest of an input is skipped (each costs the store
/// timeout).
const MAX_HANGS: u32 = 4;

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
    expected_secret: Rows,
    expected_store: BTreeMap<Bytes, Bytes>,
    runs: u64,
}

impl Harness {
    fn new() -> Result<Harness, Finding> {
        quiet_store_panics();
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
        let expected_secret = instance
            .query(neighbour, SECRET_QUERY, &[])
            .map_err(|e| setup("read the co-tenant's secret", e))?;
        if !contains_secret(&expected_secret) {
            return Err(Finding::Setup(format!(
                "co-tenant's secret reads {:?}",
                expected_secret.rows
            )));
        }
        let expected_store = neighbour_kv.snapshot();
        Ok(Harness {
            instance,
            neighbour,
            neighbour_kv,
            expected_rows,
            expected_secret,
            expected_store,
            runs: 0,
        })
    }

    fn run(&mut self, data: &[u8]) -> Result<Report, Finding> {
        let raw = String::from_utf8_lossy(data);
        let sql = expand_long(&raw);
        self.runs += 1;
        let name = format!("tenant-{}", self.runs);
        let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::with_limits(KvLimits {
            max_batch_keys: TENANT_BATCH_KEYS,
            max_value_bytes: PAGE_SIZE,
        }));
        let faulty = Arc::new(FaultyKv::new(memory));
        let chaos = Arc::new(ChaosKv::new(faulty.clone()));
        let kv: Arc<dyn KvStore> = chaos.clone();
        let tenant = self
            .instance
            .open(&name, Arc::clone(&kv))
            .map_err(|e| Finding::Setup(format!("open a fresh tenant: {e}")))?;
        let lowered = sql.to_ascii_lowercase();
        let check_acks = !lowered.contains(&ACK_TABLE[..8]);
        if check_acks {
            self.instance
                .exec(
                    tenant,
                    &format!("CREATE TABLE {ACK_TABLE} (n INTEGER PRIMARY KEY)"),
                )
                .map_err(|e| Finding::Setup(format!("create the ack table: {e}")))?;
        }
        let fault = store_directive(&sql);
        let mut run = TenantRun {
            harness: self,
            tenant,
            shown: shorten(&raw),
            chaos,
            fault,
            poisoned: false,
            check_leaks: !SECRET_HINTS.iter().any(|hint| lowered.contains(hint)),
            check_acks,
            acked: Vec::new(),
            report: Report::default(),
        };

        // The input itself: any error is fine, a trap is not. Store faults
        // stop at the end of the input, as when a store recovers.
        match fault {
            Some(StoreFault::Fail(calls)) => faulty.fail_after(calls),
            Some(StoreFault::Panic(calls)) => run.chaos.arm(Chaos::Panic, calls),
            Some(StoreFault::Hang(calls)) => run.chaos.arm(Chaos::Hang, calls),
            None => {}
        }
        let result = run.steps(&sql);
        faulty.heal();
        run.chaos.heal();
        result?;
        run.finish(&name, &kv)
    }
}

/// One input's tenant, with what the harness learnt while running it.
struct TenantRun<'h> {
    harness: &'h mut Harness,
    tenant: DbId,
    /// The input as quoted in findings.
    shown: String,
    chaos: Arc<ChaosKv>,
    fault: Option<StoreFault>,
    /// A call returned [`Error::Poisoned`]; the connection must be reopened.
    poisoned: bool,
    /// The input cannot spell the co-tenant's secret by itself.
    check_leaks: bool,
    /// The input does not name the ack table.
    check_acks: bool,
    /// Acknowledgement rows whose commit returned success.
    acked: Vec<i64>,
    /// What happened, for tests.
    report: Report,
}

/// What one input did, so tests can tell that a directive took effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Tenant calls made for the input's steps, re-runs included.
    pub calls: usize,
    /// Query results checked (shape and secret).
    pub results: usize,
    /// Some call returned `Error::Poisoned`.
    pub poisoned: bool,
    /// Store calls that panicked.
    pub panics: u32,
    /// Store calls that hung.
    pub hangs: u32,
    /// Acknowledged commits, all found again after the reopen.
    pub acked: usize,
    /// The leak check ran (the input cannot spell the secret).
    pub leak_checked: bool,
    /// Longest column name or error message the tenant got back, in bytes.
    pub longest_text: usize,
}

impl TenantRun<'_> {
    fn broken(&self, reason: String) -> Finding {
        Finding::InstanceBroken {
            sql: self.shown.clone(),
            reason,
        }
    }

    fn tenant_finding(&self, what: String) -> Finding {
        Finding::Tenant {
            sql: self.shown.clone(),
            what,
        }
    }

    fn co_tenant(&self, what: String) -> Finding {
        Finding::CoTenant {
            sql: self.shown.clone(),
            what,
        }
    }

    /// Only a store that panics or hangs may poison the tenant.
    fn may_poison(&self) -> bool {
        matches!(self.fault, Some(StoreFault::Panic(_) | StoreFault::Hang(_)))
    }

    /// Poisoned, hung often enough or out of calls: the rest of the input
    /// is skipped.
    fn stopped(&self) -> bool {
        self.poisoned || self.chaos.hangs() >= MAX_HANGS || self.report.calls >= MAX_CALLS
    }

    /// Judges the result of one tenant call: `Some` on success, `None` on an
    /// error the tenant may get, a finding otherwise.
    fn judge<T>(&mut self, result: Result<T, Error>) -> Result<Option<T>, Finding> {
        let outcome = match result {
            Ok(value) => Some(value),
            Err(Error::Broken { reason }) => return Err(self.broken(reason)),
            Err(Error::Poisoned { reason }) => {
                if !self.may_poison() {
                    return Err(self.tenant_finding(format!(
                        "poisoned without a panicking or hanging store: {reason}"
                    )));
                }
                self.poisoned = true;
                None
            }
            Err(Error::Sqlite { message, .. }) => {
                self.report.longest_text = self.report.longest_text.max(message.len());
                if self.check_leaks && message.contains(SECRET) {
                    return Err(self.co_tenant(format!(
                        "its secret is in the tenant's error message {}",
                        shorten(&message)
                    )));
                }
                None
            }
            Err(_) => None,
        };
        if self.harness.instance.is_broken() {
            return Err(self.broken("is_broken() after a tenant call".into()));
        }
        Ok(outcome)
    }

    /// Every row has one value per column, and none shows the secret.
    fn check_rows(&mut self, sql: &str, rows: &Rows) -> Result<(), Finding> {
        self.report.results += 1;
        let longest = rows.columns.iter().map(String::len).max().unwrap_or(0);
        self.report.longest_text = self.report.longest_text.max(longest);
        if let Some(row) = rows.rows.iter().find(|r| r.len() != rows.columns.len()) {
            return Err(self.tenant_finding(format!(
                "{} has a row of {} values under {} columns {:?}",
                shorten(sql),
                row.len(),
                rows.columns.len(),
                rows.columns
            )));
        }
        if self.check_leaks && contains_secret(rows) {
            return Err(self.co_tenant(format!(
                "its secret is in the tenant's result of {}",
                shorten(sql)
            )));
        }
        Ok(())
    }

    /// Runs one statement or script of the tenant and checks its result.
    fn call(&mut self, kind: StepKind, sql: &str) -> Result<(), Finding> {
        self.report.calls += 1;
        let instance = &mut self.harness.instance;
        match kind {
            StepKind::Exec => {
                let result = instance.exec(self.tenant, sql);
                self.judge(result)?;
            }
            StepKind::Execute => {
                let result = instance.execute(self.tenant, sql, &[]);
                self.judge(result)?;
            }
            StepKind::Query => {
                let result = instance.query(self.tenant, sql, &[]);
                if let Some(rows) = self.judge(result)? {
                    self.check_rows(sql, &rows)?;
                }
            }
        }
        Ok(())
    }

    /// Runs the steps of the input, re-running the cached statements after
    /// each, and reads the co-tenant and acknowledges a commit in between.
    fn steps(&mut self, sql: &str) -> Result<(), Finding> {
        let mut cached: Vec<Step<'_>> = Vec::new();
        for (n, step) in steps(sql).into_iter().enumerate() {
            if self.stopped() {
                break;
            }
            self.call(step.kind, step.sql)?;
            for again in &cached {
                if self.stopped() {
                    break;
                }
                self.call(again.kind, again.sql)?;
            }
            if step.kind != StepKind::Exec
                && cached.len() < MAX_CACHED
                && !cached.iter().any(|c| c.sql == step.sql)
            {
                cached.push(step);
            }
            self.spy_on_neighbour()?;
            self.acknowledge(n as i64)?;
        }
        Ok(())
    }

    /// The co-tenant still answers, with its secret intact.
    fn spy_on_neighbour(&mut self) -> Result<(), Finding> {
        let h = &mut *self.harness;
        match h.instance.query(h.neighbour, SECRET_QUERY, &[]) {
            Ok(rows) if rows == h.expected_secret => Ok(()),
            Ok(rows) => Err(self.co_tenant(format!("its secret reads {:?}", rows.rows))),
            Err(Error::Broken { reason }) => Err(self.broken(reason)),
            Err(e) => Err(self.co_tenant(format!("reading its secret failed: {e}"))),
        }
    }

    /// Commits row `n` in the ack table as a transaction of its own (when
    /// the tenant has none open) and remembers it if the commit succeeded.
    fn acknowledge(&mut self, n: i64) -> Result<(), Finding> {
        if !self.check_acks || self.stopped() {
            return Ok(());
        }
        let t = self.tenant;
        let begun = self.harness.instance.execute(t, "BEGIN", &[]);
        if self.judge(begun)?.is_none() {
            // The tenant's own transaction is open (or the store failed).
            return Ok(());
        }
        let insert = format!("INSERT INTO {ACK_TABLE} (n) VALUES (?1)");
        let inserted = self
            .harness
            .instance
            .execute(t, &insert, &[Value::Integer(n)]);
        let mut committed = false;
        if self.judge(inserted)?.is_some() {
            let commit = self.harness.instance.execute(t, "COMMIT", &[]);
            committed = self.judge(commit)?.is_some();
        }
        if committed {
            self.acked.push(n);
        } else if !self.poisoned {
            let rollback = self.harness.instance.execute(t, "ROLLBACK", &[]);
            self.judge(rollback)?;
        }
        Ok(())
    }

    /// Checks the tenant's connection with the store healed, closes it,
    /// reopens the database on the same store and checks it again, then
    /// checks the co-tenant.
    fn finish(mut self, name: &str, kv: &Arc<dyn KvStore>) -> Result<Report, Finding> {
        if self.harness.instance.is_broken() {
            return Err(self.broken("is_broken() after the tenant's SQL".into()));
        }
        // The connection itself recovered from any store error, unless it
        // was poisoned (then it must be reopened).
        if !self.poisoned {
            self.integrity(self.tenant, true)?;
        }
        let closed = self.harness.instance.close(self.tenant);
        self.closed(closed)?;

        // The way back from a poisoned database, and from a commit cut
        // short: reopen on the same store, which now behaves.
        let reopened = match self.harness.instance.open(name, Arc::clone(kv)) {
            Ok(db) => db,
            Err(Error::Broken { reason }) => return Err(self.broken(reason)),
            Err(e) => {
                return Err(
                    self.tenant_finding(format!("reopening on the healed store failed: {e}"))
                );
            }
        };
        self.integrity(reopened, false)?;
        self.check_acknowledged(reopened)?;
        let closed = self.harness.instance.close(reopened);
        self.closed(closed)?;
        if self.harness.instance.database_count() != 1 {
            return Err(self.tenant_finding(format!(
                "{} databases open after closing the tenant",
                self.harness.instance.database_count()
            )));
        }

        // The co-tenant saw nothing.
        let h = &mut *self.harness;
        match h.instance.query(h.neighbour, NEIGHBOUR_QUERY, &[]) {
            Ok(rows) if rows == h.expected_rows => {}
            Ok(rows) => return Err(self.co_tenant(format!("rows are now {:?}", rows.rows))),
            Err(Error::Broken { reason }) => return Err(self.broken(reason)),
            Err(e) => return Err(self.co_tenant(format!("query failed: {e}"))),
        }
        self.spy_on_neighbour()?;
        let h = &mut *self.harness;
        if h.neighbour_kv.snapshot() != h.expected_store {
            return Err(self.co_tenant("its stored pages changed".into()));
        }
        let memory = self.harness.instance.guest_memory_bytes();
        if memory > instance_config().memory_limit_bytes {
            return Err(self.broken(format!("guest memory {memory} bytes is over the cap")));
        }
        Ok(Report {
            poisoned: self.poisoned,
            panics: self.chaos.panics(),
            hangs: self.chaos.hangs(),
            acked: self.acked.len(),
            leak_checked: self.check_leaks,
            ..self.report
        })
    }

    /// `PRAGMA integrity_check` on `db` says ok, or a budget cut it short.
    /// On the first connection a poisoning store may still show up as
    /// [`Error::Poisoned`].
    fn integrity(&mut self, db: DbId, first: bool) -> Result<(), Finding> {
        let which = if first { "" } else { "after reopening: " };
        match self
            .harness
            .instance
            .query(db, "PRAGMA integrity_check", &[])
        {
            Ok(rows) if rows.rows == [[Value::from("ok")]] => Ok(()),
            Ok(rows) => {
                Err(self.tenant_finding(format!("{which}integrity_check: {:?}", rows.rows)))
            }
            Err(Error::Broken { reason }) => Err(self.broken(reason)),
            Err(Error::Sqlite {
                code: c, message, ..
            }) if c & 0xff == sqlite::SQLITE_CORRUPT => {
                Err(self.tenant_finding(format!("{which}integrity_check: corrupt: {message}")))
            }
            // Budgets cut the check short; that proves nothing either way.
            Err(Error::Interrupted { .. } | Error::LimitExceeded { .. }) => Ok(()),
            Err(Error::Poisoned { .. }) if first && self.may_poison() => {
                self.poisoned = true;
                Ok(())
            }
            // With the store healed, the connection must have recovered.
            Err(e) => Err(self.tenant_finding(format!("{which}integrity_check failed: {e}"))),
        }
    }

    fn closed(&self, result: Result<(), Error>) -> Result<(), Finding> {
        match result {
            Ok(()) => Ok(()),
            Err(Error::Broken { reason }) => Err(self.broken(reason)),
            Err(e) => Err(self.tenant_finding(format!("close failed: {e}"))),
        }
    }

    /// Every acknowledged row is in the reopened database.
    fn check_acknowledged(&mut self, db: DbId) -> Result<(), Finding> {
        if !self.check_acks || self.acked.is_empty() {
            return Ok(());
        }
        let sql = format!("SELECT n FROM {ACK_TABLE}");
        let rows = match self.harness.instance.query(db, &sql, &[]) {
            Ok(rows) => rows,
            Err(Error::Broken { reason }) => return Err(self.broken(reason)),
            Err(Error::Interrupted { .. } | Error::LimitExceeded { .. }) => return Ok(()),
            Err(e) => {
                return Err(
                    self.tenant_finding(format!("reading the acknowledged rows failed: {e}"))
                );
            }
        };
        let present: BTreeSet<i64> = rows
            .rows
            .iter()
            .filter_map(|row| match row.as_slice() {
                [Value::Integer(n)] => Some(*n),
                _ => None,
            })
            .collect();
        let lost: Vec<i64> = self
            .acked
            .iter()
            .copied()
            .filter(|n| !present.contains(n))
            .collect();
        if lost.is_empty() {
            Ok(())
        } else {
            Err(self.tenant_finding(format!(
                "acknowledged commits lost after reopening: rows {lost:?} of {:?}",
                self.acked
            )))
        }
    }
}

/// True when the secret is in a column name or a text or blob value.
fn contains_secret(rows: &Rows) -> bool {
    let secret = SECRET.as_bytes();
    rows.columns.iter().any(|c| c.contains(SECRET))
        || rows.rows.iter().flatten().any(|value| match value {
            Value::Text(text) => text.contains(SECRET),
            Value::Blob(blob) => blob.windows(secret.len()).any(|w| w == secret),
            _ => false,
        })
}

/// Prefix of a tenant input that makes its store fail: `-- fail_after N`
/// on the first line (an SQL comment, so the rest stays plain SQL) lets `N`
/// store calls succeed and fails every later one until the input is done.
pub const FAULT_DIRECTIVE: &str = "-- fail_after ";

/// Like [`FAULT_DIRECTIVE`], but the store panics instead of failing.
pub const PANIC_DIRECTIVE: &str = "-- panic_after ";

/// Like [`FAULT_DIRECTIVE`], but the store's futures stay pending instead
/// of failing (the engine's store timeout ends each wait).
pub const HANG_DIRECTIVE: &str = "-- hang_after ";

/// How a directive makes the tenant's store misbehave after `N` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    /// `-- fail_after N`: every later call fails with an injected error.
    Fail(u32),
    /// `-- panic_after N`: every later call panics.
    Panic(u32),
    /// `-- hang_after N`: every later call hangs.
    Hang(u32),
}

/// The store fault a leading directive asks for, with `N` at most 10 000.
pub fn store_directive(sql: &str) -> Option<StoreFault> {
    let (rest, fault): (&str, fn(u32) -> StoreFault) =
        if let Some(rest) = sql.strip_prefix(FAULT_DIRECTIVE) {
            (rest, StoreFault::Fail)
        } else if let Some(rest) = sql.strip_prefix(PANIC_DIRECTIVE) {
            (rest, StoreFault::Panic)
        } else {
            (sql.strip_prefix(HANG_DIRECTIVE)?, StoreFault::Hang)
        };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    rest[..digits.min(5)]
        .parse::<u32>()
        .ok()
        .map(|n| fault(n.min(10_000)))
}

/// The `N` of a leading [`FAULT_DIRECTIVE`], at most 10 000.
pub fn fault_directive(sql: &str) -> Option<u32> {
    match store_directive(sql)? {
        StoreFault::Fail(n) => Some(n),
        _ => None,
    }
}

/// Start of a line that begins a new step: `--> query`, `--> execute` or
/// `--> exec` (anything else after the marker also means `exec`).
pub const STEP_MARKER: &str = "-->";

/// How the harness runs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// `Instance::exec`: a script, run once.
    Exec,
    /// `Instance::query`: one cached statement whose rows are checked; run
    /// again after every later step.
    Query,
    /// `Instance::execute`: one cached statement; run again after every
    /// later step.
    Execute,
}

/// One step of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// How it runs.
    pub kind: StepKind,
    /// Its SQL: the lines after its marker line, up to the next one.
    pub sql: &'a str,
}

/// Cuts `sql` into steps at lines starting with [`STEP_MARKER`]: the text
/// before the first marker is an `exec` step (the whole input when there is
/// no marker), and each marker line starts a step of the kind it names. At
/// most [`MAX_STEPS`] steps; later markers stay in the last step's text.
pub fn steps(sql: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    let mut kind = StepKind::Exec;
    let mut start = 0;
    let mut line_start = 0;
    for line in sql.split_inclusive('\n') {
        let here = line_start;
        line_start += line.len();
        let Some(rest) = line.strip_prefix(STEP_MARKER) else {
            continue;
        };
        if steps.len() + 1 == MAX_STEPS {
            break;
        }
        steps.push(Step {
            kind,
            sql: &sql[start..here],
        });
        let rest = rest.trim_start();
        kind = if rest.starts_with("query") {
            StepKind::Query
        } else if rest.starts_with("execute") {
            StepKind::Execute
        } else {
            StepKind::Exec
        };
        start = line_start;
    }
    steps.push(Step {
        kind,
        sql: &sql[start..],
    });
    steps
}

/// Bytes one `{{N}}` stands for per unit of `N`.
pub const LONG_UNIT: usize = 1024;

/// Largest `N` of one `{{N}}`: a little over 1 MiB, past the length at which
/// the host cuts a C string from the guest.
pub const MAX_LONG_UNITS: usize = 1100;

/// Most bytes all expansions of one input add together; later `{{N}}` expand
/// to nothing.
pub const MAX_EXPANSION: usize = 3 << 20;

/// Expands every `{{N}}` (1 to 4 digits) to `N` KiB of the letters `a` to
/// `z` repeated, `N` capped at [`MAX_LONG_UNITS`]: inside quotes a long
/// identifier or literal, bare a long unknown name, hence long column names
/// and error messages. Text without `{{` is returned as is.
pub fn expand_long(sql: &str) -> Cow<'_, str> {
    if !sql.contains("{{") {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut budget = MAX_EXPANSION;
    let mut rest = sql;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let units = after[..digits].parse::<usize>().ok();
        match units {
            Some(units) if digits <= 4 && after[digits..].starts_with("}}") => {
                let len = (units.min(MAX_LONG_UNITS) * LONG_UNIT).min(budget);
                budget -= len;
                out.extend((b'a'..=b'z').cycle().take(len).map(char::from));
                rest = &after[digits + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
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

/// Runs `data` (as UTF-8, invalid sequences replaced, `{{N}}` expanded) as
/// the SQL of a fresh tenant on this thread's shared instance and checks
/// the instance, the tenant and the co-tenant during and afterwards. After a
/// finding the instance is dropped and the next call builds a new one.
pub fn run(data: &[u8]) -> Result<(), Finding> {
    run_with_report(data).map(|_| ())
}

/// [`run`], also saying what the input did.
pub fn run_with_report(data: &[u8]) -> Result<Report, Finding> {
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
