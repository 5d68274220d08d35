//! One wasmer store + instance serving several tenants' databases.
//!
//! Why one instance for many databases: an instance costs microseconds and a
//! little memory, a database inside it tens of KiB; isolation between the
//! databases comes from the host (see `host.rs`), not from separate
//! sandboxes. Every public method names the database it runs for, and the
//! instance records that caller before it enters the guest, so the VFS can
//! refuse every file that is not the caller's.
//!
//! Resource limits live here too: the guest memory is created by the host
//! with a maximum (the module imports its memory), SQLite gets a hard heap
//! limit just below it, each database's allocations are charged to its own
//! share by the shim's allocator, each call runs under one deadline (checked
//! by SQLite's progress handler, by the shim's slow built-ins and by every
//! store wait), and each call's result is capped before it is copied out. A
//! trap in the guest marks the instance broken: each later call returns
//! [`Error::Broken`] and the process lives on. A store that panics, does
//! not answer or cannot tell whether a write was applied poisons only its
//! own database ([`Error::Poisoned`]).
//!
//! Every database call also asks the database's store whether it may still
//! serve it ([`KvStore::check_owner`]), before the call and after it: with
//! `locking_mode = EXCLUSIVE` SQLite answers reads from its page cache
//! without calling the store, so a host that lost its lease would
//! otherwise keep serving rows another host may have changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfs_core::{KvStore, RegistryError, code};
use wasmer::{FunctionEnv, Memory, MemoryType, Pages, RuntimeError, Store, TypedFunction};

use crate::error::{Error, Result};
use crate::host::{self, Caller, HostState, Poison};
use crate::memory::{GuestMemory, OutOfBounds};
use crate::module::SqliteModule;
use crate::value::{Rows, Value};

const SQLITE_ROW: i32 = 100;
const SQLITE_DONE: i32 = 101;
const SQLITE_INTERRUPT: i32 = 9;
const SQLITE_TOOBIG: i32 = 18;
/// `SQLITE_IOERR_NOMEM`: a memory file (sorter spill) could not grow.
const SQLITE_IOERR_NOMEM: i32 = code::SQLITE_IOERR | (12 << 8);
const SQLITE_LIMIT_LENGTH: i32 = 0;
const SQLITE_LIMIT_SQL_LENGTH: i32 = 1;
const SQLITE_LIMIT_LIKE_PATTERN_LENGTH: i32 = 8;
const SQLITE_LIMIT_TRIGGER_DEPTH: i32 = 10;

/// `SQLITE_PREPARE_PERSISTENT`: the statement will be reused.
const PREPARE_PERSISTENT: i32 = 0x01;
/// Virtual-machine steps between two deadline checks.
const PROGRESS_OPS: i32 = 1000;
/// Size of one column record written by `shim_row`.
const COLUMN_RECORD: u32 = 16;
/// Guest memory kept outside the SQLite heap limit: allocator bookkeeping
/// and fragmentation, so SQLite reports NOMEM before `memory.grow` fails.
const HEAP_SLACK: u64 = 1 << 20;
const WASM_PAGE: u64 = 65536;

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
    /// Checks every value; [`Instance::new`] calls it, and a pool checks
    /// its configuration with it before any instance exists.
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

/// A database opened in an [`Instance`]. Only meaningful for the instance
/// that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DbId(u64);

/// The guest functions the host calls, looked up once.
struct Exports {
    shim_open: TypedFunction<(u32, u32, i32), i32>,
    lockdown: TypedFunction<u32, i32>,
    bind_text: TypedFunction<(u32, i32, u32, i32), i32>,
    bind_blob: TypedFunction<(u32, i32, u32, i32), i32>,
    row: TypedFunction<u32, u32>,
    close: TypedFunction<u32, i32>,
    prepare: TypedFunction<(u32, u32, i32, i32, u32, u32), i32>,
    finalize: TypedFunction<u32, i32>,
    reset: TypedFunction<u32, i32>,
    clear_bindings: TypedFunction<u32, i32>,
    step: TypedFunction<u32, i32>,
    bind_null: TypedFunction<(u32, i32), i32>,
    bind_int64: TypedFunction<(u32, i32, i64), i32>,
    bind_double: TypedFunction<(u32, i32, f64), i32>,
    param_count: TypedFunction<u32, i32>,
    column_count: TypedFunction<u32, i32>,
    column_name: TypedFunction<(u32, i32), u32>,
    changes: TypedFunction<u32, i64>,
    errmsg: TypedFunction<u32, u32>,
    errcode: TypedFunction<u32, i32>,
    malloc: TypedFunction<u64, u32>,
    free: TypedFunction<u32, ()>,
    limit: TypedFunction<(u32, i32, i32), i32>,
    memory_used: TypedFunction<(), i64>,
    set_tenant: TypedFunction<(i32, i64), i32>,
    tenant_used: TypedFunction<i32, i64>,
    release_tenant: TypedFunction<i32, ()>,
    trap: TypedFunction<(), ()>,
    refused: TypedFunction<(), i32>,
}

struct Db {
    name: Arc<str>,
    /// `sqlite3*` in guest memory.
    handle: u32,
    /// The shim's memory-accounting slot of this database.
    slot: i32,
    /// Prepared statements by SQL text, least recently used first.
    stmts: Vec<(String, u32)>,
}

/// One wasmer instance of SQLite serving several databases.
///
/// Methods take `&mut self`: an instance runs one call at a time. It is not
/// `Send` (wasmer 7's `Store` is not): create it on the thread that will
/// run it, from a [`SqliteModule`] (which is `Send + Sync`), for example
/// inside the closure given to `std::thread::spawn`.
pub struct Instance {
    store: Store,
    env: FunctionEnv<HostState>,
    mem: GuestMemory,
    f: Exports,
    module: SqliteModule,
    config: InstanceConfig,
    dbs: HashMap<DbId, Db>,
    next_id: u64,
    /// Accounting slots of closed databases, free for reuse.
    free_slots: Vec<i32>,
    next_slot: i32,
    broken: Option<String>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("databases", &self.dbs.len())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// Calls guest function `$name` with `$args`; a trap breaks the instance.
macro_rules! guest {
    ($self:ident . $name:ident ( $($arg:expr),* )) => {
        $self.f.$name.call(&mut $self.store $(, $arg)*).map_err(|e| $self.trap(&e))?
    };
}

impl Instance {
    /// Instantiates `module` with `config`'s limits.
    pub fn new(module: &SqliteModule, config: InstanceConfig) -> Result<Instance> {
        config.validate()?;
        let min_pages = module
            .module()
            .imports()
            .memories()
            .next()
            .map_or(1, |m| u64::from(m.ty().minimum.0));
        let max_pages = config.memory_limit_bytes / WASM_PAGE;
        if max_pages < min_pages + 32 || max_pages > 65536 {
            return Err(Error::Config(format!(
                "memory_limit_bytes must be between {} and 4 GiB",
                (min_pages + 32) * WASM_PAGE
            )));
        }
        let mut store = Store::new(module.engine().clone());
        let memory = Memory::new(
            &mut store,
            MemoryType::new(
                Pages(min_pages as u32),
                Some(Pages(max_pages as u32)),
                false,
            ),
        )
        .map_err(|e| Error::Instantiate(e.to_string()))?;
        let env = FunctionEnv::new(&mut store, HostState::new(config.store_timeout));
        let imports = host::imports(&mut store, &env, &memory);
        let instance = wasmer::Instance::new(&mut store, module.module(), &imports)
            .map_err(|e| Error::Instantiate(e.to_string()))?;
        let mem = GuestMemory::new(memory);
        env.as_mut(&mut store).set_memory(mem.clone());

        let ex = &instance.exports;
        macro_rules! get {
            ($name:literal) => {
                ex.get_typed_function(&store, $name)
                    .map_err(|e| Error::Instantiate(format!("{}: {e}", $name)))?
            };
        }
        let initialize: TypedFunction<(), ()> = get!("_initialize");
        let shim_init: TypedFunction<(i32, i32, i64, i64), i32> = get!("shim_init");
        let f = Exports {
            shim_open: get!("shim_open"),
            lockdown: get!("shim_lockdown"),
            bind_text: get!("shim_bind_text"),
            bind_blob: get!("shim_bind_blob"),
            row: get!("shim_row"),
            close: get!("sqlite3_close_v2"),
            prepare: get!("sqlite3_prepare_v3"),
            finalize: get!("sqlite3_finalize"),
            reset: get!("sqlite3_reset"),
            clear_bindings: get!("sqlite3_clear_bindings"),
            step: get!("sqlite3_step"),
            bind_null: get!("sqlite3_bind_null"),
            bind_int64: get!("sqlite3_bind_int64"),
            bind_double: get!("sqlite3_bind_double"),
            param_count: get!("sqlite3_bind_parameter_count"),
            column_count: get!("sqlite3_column_count"),
            column_name: get!("sqlite3_column_name"),
            changes: get!("sqlite3_changes64"),
            errmsg: get!("sqlite3_errmsg"),
            errcode: get!("sqlite3_extended_errcode"),
            malloc: get!("sqlite3_malloc64"),
            free: get!("sqlite3_free"),
            limit: get!("sqlite3_limit"),
            memory_used: get!("sqlite3_memory_used"),
            set_tenant: get!("shim_set_tenant"),
            tenant_used: get!("shim_tenant_used"),
            release_tenant: get!("shim_release_tenant"),
            trap: get!("shim_trap"),
            refused: get!("shim_refused"),
        };
        initialize
            .call(&mut store)
            .map_err(|e| Error::Instantiate(format!("_initialize trapped: {e}")))?;
        let heap_limit = (max_pages * WASM_PAGE).saturating_sub(min_pages * WASM_PAGE + HEAP_SLACK);
        let (slot, slots) = config
            .lookaside
            .map_or((0, 0), |l| (l.slot_size as i32, l.slots as i32));
        let rc = shim_init
            .call(
                &mut store,
                slot,
                slots,
                heap_limit as i64,
                i64::try_from(config.tenant_memory_reserve_bytes).unwrap_or(i64::MAX),
            )
            .map_err(|e| Error::Instantiate(format!("shim_init trapped: {e}")))?;
        if rc != code::SQLITE_OK {
            return Err(Error::Instantiate(format!(
                "sqlite3_initialize failed with code {rc}"
            )));
        }
        Ok(Instance {
            store,
            env,
            mem,
            f,
            module: module.clone(),
            config,
            dbs: HashMap::new(),
            next_id: 1,
            free_slots: Vec::new(),
            next_slot: 1,
            broken: None,
        })
    }

    /// Opens database `name` stored in `kv`, creating it if `kv` holds none.
    ///
    /// `name` must be unique in this instance; it is the only file name the
    /// database's connection can open (plus its journal). A new database
    /// starts with an empty page 1 generated by SQLite. Every connection
    /// runs with page_size 4096 (an existing database with another page
    /// size is refused), journal_mode DELETE, locking_mode EXCLUSIVE,
    /// synchronous NORMAL, temp_store MEMORY and the configured cache; then
    /// it is sealed: ATTACH, DETACH and changing those pragmas are denied.
    pub fn open(&mut self, name: &str, kv: Arc<dyn KvStore>) -> Result<DbId> {
        self.check_usable()?;
        validate_name(name)?;
        self.ensure_page1()?;
        let state = self.state();
        if state.registry.contains(name) {
            return Err(Error::NameInUse(name.to_owned()));
        }
        state.registry.register(name, kv).map_err(|e| match e {
            RegistryError::Duplicate(n) => Error::NameInUse(n),
            other => Error::InvalidName {
                name: name.to_owned(),
                reason: other.to_string(),
            },
        })?;
        let name: Arc<str> = Arc::from(name);
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        let opened = self
            .enter_db(Arc::clone(&name), slot)
            .and_then(|()| self.open_connection(&name));
        let opened = self.leave(opened);
        match opened {
            Ok(handle) => {
                let id = DbId(self.next_id);
                self.next_id += 1;
                self.dbs.insert(
                    id,
                    Db {
                        name,
                        handle,
                        slot,
                        stmts: Vec::new(),
                    },
                );
                Ok(id)
            }
            Err(e) => {
                if self.broken.is_none() {
                    let state = self.state();
                    state.drop_files_of(&name);
                    state.registry.unregister(&name);
                    self.recycle_slot(slot);
                }
                Err(e)
            }
        }
    }

    /// Runs a script of one or more statements, discarding any rows. The
    /// time budget covers the whole script.
    pub fn exec(&mut self, db: DbId, sql: &str) -> Result<()> {
        refuse_nul(sql)?;
        let (name, handle, slot) = self.db(db)?;
        let result = self
            .enter_db(name, slot)
            .and_then(|()| self.exec_script(handle, sql));
        self.leave(result)
    }

    /// Runs one statement with `params` (`?1`, `?2`, …) and returns the
    /// number of rows it changed.
    pub fn execute(&mut self, db: DbId, sql: &str, params: &[Value]) -> Result<u64> {
        self.run(db, sql, params, false).map(|(_, changes)| changes)
    }

    /// Runs one statement with `params` and returns its rows.
    pub fn query(&mut self, db: DbId, sql: &str, params: &[Value]) -> Result<Rows> {
        self.run(db, sql, params, true).map(|(rows, _)| rows)
    }

    /// Closes the database and frees its name. Closing an unknown id is
    /// [`Error::UnknownDatabase`]. If SQLite refuses to close, the name
    /// stays reserved (poisoned) for the life of the instance.
    ///
    /// A poisoned database (see [`Error::Poisoned`]) closes without error:
    /// its connection is closed and its files forgotten, so the next open
    /// reads the store afresh.
    pub fn close(&mut self, db: DbId) -> Result<()> {
        let entry = self.dbs.remove(&db).ok_or(Error::UnknownDatabase)?;
        if self.broken.is_some() {
            // The guest is gone; only the bookkeeping remains.
            let state = self.state();
            state.drop_files_of(&entry.name);
            state.registry.unregister(&entry.name);
            return Ok(());
        }
        let result = self
            .enter(Caller::Db(Arc::clone(&entry.name)), entry.slot)
            .and_then(|()| self.close_connection(&entry));
        // Closing is not a tenant's statement: a poisoned database's close
        // reports only whether the connection itself closed.
        let result = self.leave_without_poison(result);
        if self.broken.is_none() {
            self.state().drop_files_of(&entry.name);
        }
        if result.is_ok() {
            self.state().registry.unregister(&entry.name);
            self.recycle_slot(entry.slot);
        }
        result
    }

    /// Guest heap bytes charged to `db` right now (its share of the
    /// instance; see [`InstanceConfig::tenant_memory_limit_bytes`]).
    pub fn database_memory_bytes(&mut self, db: DbId) -> Result<u64> {
        let (_, _, slot) = self.db(db)?;
        let used = guest!(self.tenant_used(slot));
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Number of open databases.
    pub fn database_count(&self) -> usize {
        self.dbs.len()
    }

    /// Current size of the guest memory in bytes (it never shrinks).
    pub fn guest_memory_bytes(&self) -> u64 {
        self.mem.size(&self.store)
    }

    /// Bytes currently allocated by SQLite inside the guest.
    pub fn guest_heap_bytes(&mut self) -> Result<u64> {
        self.check_usable()?;
        let used = guest!(self.memory_used());
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Makes the guest trap, as a bug in SQLite would: the instance is then
    /// broken. For tests of what a trap does to the databases around it;
    /// there is no other use.
    #[doc(hidden)]
    pub fn trap_for_test(&mut self) -> Result<()> {
        self.check_usable()?;
        guest!(self.trap());
        Ok(())
    }

    /// True once a guest trap made this instance unusable.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// The configuration this instance was created with.
    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    // ---- internals -----------------------------------------------------

    fn state(&mut self) -> &mut HostState {
        self.env.as_mut(&mut self.store)
    }

    fn check_usable(&self) -> Result<()> {
        match &self.broken {
            Some(reason) => Err(Error::Broken {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The name, connection and accounting slot of an open, usable
    /// database.
    fn db(&mut self, db: DbId) -> Result<(Arc<str>, u32, i32)> {
        self.check_usable()?;
        let entry = self.dbs.get(&db).ok_or(Error::UnknownDatabase)?;
        let found = (Arc::clone(&entry.name), entry.handle, entry.slot);
        if let Some(poison) = self.state().poisoned.get(&found.0) {
            return Err(Error::Poisoned {
                reason: poison.reason.clone(),
            });
        }
        Ok(found)
    }

    /// Returns a closed database's accounting slot for reuse, unless blocks
    /// are still charged to it (they would be credited to the next owner).
    fn recycle_slot(&mut self, slot: i32) {
        if self.broken.is_some() {
            return;
        }
        if let Err(e) = self.f.release_tenant.call(&mut self.store, slot) {
            self.trap(&e);
            return;
        }
        match self.f.tenant_used.call(&mut self.store, slot) {
            Ok(0) => self.free_slots.push(slot),
            Ok(left) => {
                tracing::warn!(
                    slot,
                    left,
                    "closed database left memory charged; slot retired"
                );
            }
            Err(e) => {
                self.trap(&e);
            }
        }
    }

    /// Records a trap: from now on the instance only returns `Broken`.
    fn trap(&mut self, e: &RuntimeError) -> Error {
        let reason = format!("guest trapped: {e}");
        tracing::error!(%reason, "wasm instance broken");
        if self.broken.is_none() {
            self.broken = Some(reason.clone());
        }
        Error::Broken { reason }
    }

    /// Starts a call for `caller`: the VFS serves only its files, its
    /// allocations are charged to accounting `slot` (0 for none), and the
    /// time budget of the whole call starts now.
    fn enter(&mut self, caller: Caller, slot: i32) -> Result<()> {
        // The budget is validated against MAX_BUDGET, so this cannot
        // overflow; were it to, the call would simply run unbudgeted.
        let deadline = self
            .config
            .statement_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let state = self.state();
        state.caller = caller;
        state.last_error = None;
        state.interrupted = false;
        state.deadline = deadline;
        let limit = i64::try_from(self.config.tenant_memory_limit_bytes).unwrap_or(i64::MAX);
        if guest!(self.set_tenant(slot, limit)) == 0 {
            return Err(Error::LimitExceeded {
                what: "guest memory exhausted growing the accounting table".into(),
            });
        }
        Ok(())
    }

    /// Starts a call for database `name` (see [`Instance::enter`]) once its
    /// store says it may still serve it; refused, nothing runs.
    fn enter_db(&mut self, name: Arc<str>, slot: i32) -> Result<()> {
        self.state().check_owner(&name).map_err(|kv| Error::Store {
            message: format!("the store of database {name:?} refused the call before it ran"),
            kv,
        })?;
        self.enter(Caller::Db(name), slot)
    }

    /// Ends a call: from now on the VFS serves nobody and allocations are
    /// charged to the instance.
    ///
    /// If the call poisoned its database, its result becomes the poisoning
    /// failure: whatever SQLite said, nothing it did may be reported as
    /// stored. A store error whose outcome is unknown reaches the caller
    /// as [`Error::Sqlite`] with that error; a panic or a stall as
    /// [`Error::Poisoned`]. Otherwise the database's store is asked once
    /// more whether it may still serve it: refused, the result is withheld
    /// (rows SQLite read from its cache may be stale by now, and a write it
    /// made may or may not be stored).
    fn leave<T>(&mut self, result: Result<T>) -> Result<T> {
        let state = self.state();
        let (name, poisoned) = match &state.caller {
            Caller::Db(me) => (Some(Arc::clone(me)), state.poisoned.get(me).cloned()),
            _ => (None, None),
        };
        let result = self.leave_without_poison(result);
        if matches!(result, Err(Error::Broken { .. })) {
            return result;
        }
        if let Some(poison) = poisoned {
            return Err(poison_error(poison));
        }
        // A call that failed returns nothing anyway: its own error says
        // more (which read or commit failed) than the refusal would.
        if let Some(name) = name
            && result.is_ok()
            && let Err(kv) = self.state().check_owner(&name)
        {
            return Err(Error::Store {
                message: format!(
                    "the store of database {name:?} refused the call after it ran: its \
                     results are withheld, and whether a write it made was stored is unknown"
                ),
                kv,
            });
        }
        result
    }

    fn leave_without_poison<T>(&mut self, result: Result<T>) -> Result<T> {
        let state = self.state();
        state.caller = Caller::Nobody;
        state.deadline = None;
        if self.broken.is_none()
            && let Err(e) = self.f.set_tenant.call(&mut self.store, 0, 0)
        {
            return Err(self.trap(&e));
        }
        result
    }

    fn mem_err(&mut self, e: &OutOfBounds) -> Error {
        // The guest handed back a pointer outside its own memory: its state
        // cannot be trusted any more.
        let reason = format!("guest returned a bad pointer: {e}");
        if self.broken.is_none() {
            self.broken = Some(reason.clone());
        }
        Error::Broken { reason }
    }

    /// Copies `data` into a fresh guest allocation with `extra` spare bytes
    /// (4-aligned) after it; returns the pointer and the offset of the spare
    /// bytes. The caller frees it (or hands it to SQLite).
    fn alloc(&mut self, data: &[u8], extra: u32) -> Result<(u32, u32)> {
        let len = u32::try_from(data.len()).map_err(|_| Error::LimitExceeded {
            what: "value larger than 4 GiB".into(),
        })?;
        let spare = len
            .checked_add(3)
            .map(|l| l & !3)
            .ok_or(Error::LimitExceeded {
                what: "value larger than 4 GiB".into(),
            })?;
        let total = u64::from(spare) + u64::from(extra);
        let ptr = guest!(self.malloc(total.max(1)));
        if ptr == 0 {
            return Err(Error::LimitExceeded {
                what: format!("guest memory exhausted allocating {total} bytes"),
            });
        }
        if let Err(e) = self.mem.write(&self.store, ptr, data) {
            return Err(self.mem_err(&e));
        }
        Ok((ptr, ptr + spare))
    }

    fn free(&mut self, ptr: u32) -> Result<()> {
        guest!(self.free(ptr));
        Ok(())
    }

    /// Reads a C string SQLite handed back (a column name or a message).
    /// A long one is cut with a marker; one the host cannot read at all is
    /// this statement's error, never the instance's.
    fn read_cstr(&mut self, ptr: u32) -> Result<String> {
        if ptr == 0 {
            return Ok(String::new());
        }
        self.mem
            .read_cstr(&self.store, ptr)
            .map_err(|e| Error::Sqlite {
                code: code::SQLITE_ERROR,
                message: format!("SQLite returned a string the host cannot read: {e}"),
                kv: None,
            })
    }

    /// The error for result code `rc` on connection `handle`, with the VFS
    /// failure (and its store error) behind it when there is one.
    fn sqlite_error(&mut self, handle: u32, rc: i32) -> Error {
        let (code, message) = match self.errinfo(handle) {
            Ok((code, message)) => (if code == 0 { rc } else { code }, message),
            Err(e) => return e,
        };
        let state = self.state();
        let vfs = state.last_error.take();
        let interrupted = state.interrupted;
        match code & 0xff {
            SQLITE_INTERRUPT if interrupted => Error::Interrupted {
                budget_ms: self
                    .config
                    .statement_timeout
                    .map_or(0, |t| t.as_millis() as u64),
            },
            code::SQLITE_NOMEM | SQLITE_TOOBIG => Error::LimitExceeded {
                what: self.nomem_reason(message),
            },
            _ if code == SQLITE_IOERR_NOMEM => Error::LimitExceeded {
                what: self.nomem_reason(message),
            },
            primary => {
                let relevant = matches!(
                    primary,
                    code::SQLITE_IOERR | code::SQLITE_CANTOPEN | code::SQLITE_FULL
                );
                // SQLite's own words for these ("disk I/O error", "unable
                // to open database file") say less than the failed
                // operation and the store's error do; its code may be that
                // of its retry through the journal, not of the failure
                // named.
                match vfs.filter(|_| relevant) {
                    Some(vfs) => Error::Sqlite {
                        code: vfs.code(),
                        message: host::describe(&vfs),
                        kv: vfs.into_kv_error(),
                    },
                    None => Error::Sqlite {
                        code,
                        message,
                        kv: None,
                    },
                }
            }
        }
    }

    /// Says which limit an out-of-memory error hit: the database's own
    /// share, or the instance's memory.
    fn nomem_reason(&mut self, message: String) -> String {
        match self.f.refused.call(&mut self.store) {
            Ok(1) => format!(
                "{message}: this database's memory share of {} bytes \
                 (tenant_memory_limit_bytes) is used up",
                self.config.tenant_memory_limit_bytes
            ),
            Ok(2) => format!(
                "{message}: the instance's free memory is reserved for its other \
                 databases (tenant_memory_reserve_bytes each)"
            ),
            Ok(_) | Err(_) => message,
        }
    }

    fn errinfo(&mut self, handle: u32) -> Result<(i32, String)> {
        if handle == 0 {
            return Ok((0, "out of memory".into()));
        }
        let code = guest!(self.errcode(handle));
        let ptr = guest!(self.errmsg(handle));
        Ok((code, self.read_cstr(ptr)?))
    }

    fn open_connection(&mut self, name: &str) -> Result<u32> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let (ptr, out) = self.alloc(&cname, 4)?;
        let rc = guest!(self.shim_open(ptr, out, PROGRESS_OPS));
        let handle = self.mem.read_u32(&self.store, out);
        self.free(ptr)?;
        let handle = handle.map_err(|e| self.mem_err(&e))?;
        if rc != code::SQLITE_OK {
            let err = self.sqlite_error(handle, rc);
            if handle != 0 {
                guest!(self.close(handle));
            }
            return Err(err);
        }
        match self.configure(handle) {
            Ok(()) => Ok(handle),
            Err(e) => {
                if self.broken.is_none() {
                    guest!(self.close(handle));
                }
                Err(e)
            }
        }
    }

    fn configure(&mut self, handle: u32) -> Result<()> {
        let max_length = self.config.max_length.min(i32::MAX as u32) as i32;
        guest!(self.limit(handle, SQLITE_LIMIT_LENGTH, max_length));
        guest!(self.limit(handle, SQLITE_LIMIT_SQL_LENGTH, max_length.min(1 << 20)));
        guest!(self.limit(handle, SQLITE_LIMIT_TRIGGER_DEPTH, 100));
        let like = self.config.max_like_pattern.min(i32::MAX as u32) as i32;
        guest!(self.limit(handle, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, like));
        // locking_mode first: the lock taken by the first read is then kept,
        // so SQLite never re-validates its cache (no re-reads on reopen).
        // cache_spill = OFF: dirty pages stay in the page cache until commit
        // (bounded by the memory cap), so a transaction larger than the cache
        // still commits as ONE atomic batch instead of spilling to a journal.
        let pragmas = format!(
            "PRAGMA locking_mode = EXCLUSIVE; PRAGMA page_size = 4096; \
             PRAGMA journal_mode = DELETE; PRAGMA synchronous = NORMAL; \
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{}; \
             PRAGMA cache_spill = OFF;",
            self.config.cache_size_kib
        );
        self.exec_script(handle, &pragmas)?;
        let page_size = self.run_stmt_once(handle, "PRAGMA page_size")?;
        if page_size != [vec![Value::Integer(vfs_core::PAGE_SIZE as i64)]] {
            return Err(Error::Sqlite {
                code: code::SQLITE_CORRUPT,
                message: format!("database page size is {page_size:?}, expected 4096"),
                kv: None,
            });
        }
        let rc = guest!(self.lockdown(handle));
        if rc != code::SQLITE_OK {
            return Err(self.sqlite_error(handle, rc));
        }
        Ok(())
    }

    /// Makes sure the host has the empty page 1 that new databases start
    /// with, generating it with SQLite itself the first time: a database in
    /// host scratch memory gets one write transaction, and its only page is
    /// the template.
    fn ensure_page1(&mut self) -> Result<()> {
        if self.state().page1.is_some() {
            return Ok(());
        }
        if let Some(page) = self.module.page1() {
            let page: Arc<[u8]> = Arc::from(page);
            self.state().page1 = Some(page);
            return Ok(());
        }
        self.state().scratch.clear();
        let result = self.enter(Caller::Seed, 0).and_then(|()| self.seed_pass());
        let result = self.leave(result);
        let page = self.state().scratch.remove("seed");
        self.state().scratch.clear();
        result?;
        match page {
            Some(page)
                if page.len() == vfs_core::PAGE_SIZE && page.starts_with(b"SQLite format 3\0") =>
            {
                self.module.set_page1(page.clone());
                self.state().page1 = Some(Arc::from(page));
                Ok(())
            }
            other => Err(Error::Sqlite {
                code: code::SQLITE_ERROR,
                message: format!(
                    "generating page 1 produced {} bytes instead of one valid page",
                    other.map_or(0, |p| p.len())
                ),
                kv: None,
            }),
        }
    }

    fn seed_pass(&mut self) -> Result<()> {
        let (ptr, out) = self.alloc(b"seed\0", 4)?;
        let rc = guest!(self.shim_open(ptr, out, PROGRESS_OPS));
        let handle = self.mem.read_u32(&self.store, out);
        self.free(ptr)?;
        let handle = handle.map_err(|e| self.mem_err(&e))?;
        let result = if rc == code::SQLITE_OK {
            self.exec_script(
                handle,
                "PRAGMA page_size = 4096; PRAGMA journal_mode = MEMORY; PRAGMA user_version = 0;",
            )
        } else {
            Err(self.sqlite_error(handle, rc))
        };
        if handle != 0 {
            guest!(self.close(handle));
        }
        result
    }

    fn close_connection(&mut self, entry: &Db) -> Result<()> {
        for &(_, stmt) in &entry.stmts {
            guest!(self.finalize(stmt));
        }
        let rc = guest!(self.close(entry.handle));
        if rc != code::SQLITE_OK {
            return Err(self.sqlite_error(entry.handle, rc));
        }
        Ok(())
    }

    /// Prepares the first statement of the SQL at guest `ptr` (`len`
    /// bytes) and returns it (0 for an empty statement) with the number of
    /// bytes consumed. `out` points at 8 spare guest bytes.
    fn prepare_at(
        &mut self,
        handle: u32,
        ptr: u32,
        len: u32,
        out: u32,
        flags: i32,
    ) -> Result<(u32, u32)> {
        let rc = guest!(self.prepare(handle, ptr, len as i32, flags, out, out + 4));
        if rc != code::SQLITE_OK {
            return Err(self.sqlite_error(handle, rc));
        }
        let stmt = self
            .mem
            .read_u32(&self.store, out)
            .map_err(|e| self.mem_err(&e))?;
        let tail = self
            .mem
            .read_u32(&self.store, out + 4)
            .map_err(|e| self.mem_err(&e))?;
        let consumed = tail.checked_sub(ptr).filter(|&c| c <= len).unwrap_or(len);
        Ok((stmt, consumed))
    }

    /// Runs every statement of `sql` on `handle`, all under the budget of the
    /// call that was entered.
    fn exec_script(&mut self, handle: u32, sql: &str) -> Result<()> {
        let (buf, out) = self.alloc(sql.as_bytes(), 8)?;
        let result = self.exec_in_guest(handle, buf, sql.len() as u32, out);
        if self.broken.is_none() {
            self.free(buf)?;
        }
        result
    }

    fn exec_in_guest(&mut self, handle: u32, buf: u32, len: u32, out: u32) -> Result<()> {
        let mut offset = 0;
        while offset < len {
            let (stmt, consumed) = self.prepare_at(handle, buf + offset, len - offset, out, 0)?;
            offset += consumed.max(1);
            if stmt == 0 {
                continue;
            }
            // Each statement reports its own storage failure, not one an
            // earlier statement of the script recovered from.
            self.state().last_error = None;
            let result = self.step_all(handle, stmt, None);
            guest!(self.finalize(stmt));
            result?;
        }
        Ok(())
    }

    /// Steps `stmt` to completion, collecting rows when `rows` is given.
    ///
    /// The shape of the result (column count and names) is read only after
    /// the first step: that step may re-prepare a cached statement whose
    /// schema changed, and with it the number and names of its columns.
    fn step_all(&mut self, handle: u32, stmt: u32, mut rows: Option<&mut Rows>) -> Result<()> {
        let mut first = true;
        let mut budget = self.config.max_result_bytes;
        loop {
            let rc = guest!(self.step(stmt));
            if first && (rc == SQLITE_ROW || rc == SQLITE_DONE) {
                first = false;
                if let Some(rows) = rows.as_deref_mut() {
                    rows.columns = self.column_names(stmt)?;
                    let names: u64 = rows
                        .columns
                        .iter()
                        .map(|name| (name.len() + size_of::<String>()) as u64)
                        .sum();
                    self.charge_result(&mut budget, names)?;
                }
            }
            match rc {
                SQLITE_ROW => {
                    if let Some(rows) = rows.as_deref_mut()
                        && !rows.columns.is_empty()
                    {
                        let row = self.read_row(stmt, rows.columns.len(), &mut budget)?;
                        rows.rows.push(row);
                    }
                }
                SQLITE_DONE => return Ok(()),
                rc => return Err(self.sqlite_error(handle, rc)),
            }
        }
    }

    /// Takes `bytes` from what the call may still return.
    fn charge_result(&self, budget: &mut u64, bytes: u64) -> Result<()> {
        *budget = budget
            .checked_sub(bytes)
            .ok_or_else(|| Error::LimitExceeded {
                what: format!(
                    "the result exceeds max_result_bytes ({} bytes per call)",
                    self.config.max_result_bytes
                ),
            })?;
        Ok(())
    }

    fn column_names(&mut self, stmt: u32) -> Result<Vec<String>> {
        let n = guest!(self.column_count(stmt));
        let n = u32::try_from(n).unwrap_or(0);
        let mut names = Vec::with_capacity(n as usize);
        for i in 0..n {
            let ptr = guest!(self.column_name(stmt, i as i32));
            names.push(self.read_cstr(ptr)?);
        }
        Ok(names)
    }

    /// Reads the current row of `stmt`, which must have `ncol` columns,
    /// charging its bytes to `budget` (the call's result-size allowance).
    fn read_row(&mut self, stmt: u32, ncol: usize, budget: &mut u64) -> Result<Vec<Value>> {
        let ptr = guest!(self.row(stmt));
        if ptr == 0 {
            return Err(Error::LimitExceeded {
                what: "guest memory exhausted reading a row".into(),
            });
        }
        let header = self
            .mem
            .read(&self.store, ptr, COLUMN_RECORD)
            .map_err(|e| self.mem_err(&e))?;
        let written = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if written as usize != ncol {
            // The shape changed under a running statement: never read
            // records this call did not write.
            return Err(Error::Sqlite {
                code: code::SQLITE_ERROR,
                message: format!("the row has {written} columns where the statement had {ncol}"),
                kv: None,
            });
        }
        let raw = self
            .mem
            .read(&self.store, ptr + COLUMN_RECORD, written * COLUMN_RECORD)
            .map_err(|e| self.mem_err(&e))?;
        let records: Vec<(i32, u32, i64)> = raw
            .chunks_exact(COLUMN_RECORD as usize)
            .map(|rec| {
                let kind = i32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
                let len = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
                let mut wide = [0u8; 8];
                wide.copy_from_slice(&rec[8..16]);
                (kind, len, i64::from_le_bytes(wide))
            })
            .collect();
        // Charge the whole row before copying any of it out of the guest.
        // What the row costs the host: every value (an empty string
        // included) plus its text or blob bytes, and the row itself.
        let bytes: u64 = records
            .iter()
            .map(|&(kind, len, _)| {
                let data = if kind == 3 || kind == 4 {
                    u64::from(len)
                } else {
                    0
                };
                data + size_of::<Value>() as u64
            })
            .sum::<u64>()
            + size_of::<Vec<Value>>() as u64;
        self.charge_result(budget, bytes)?;
        let mut row = Vec::with_capacity(records.len());
        for (kind, len, value) in records {
            let value = match kind {
                1 => Value::Integer(value),
                2 => Value::Real(f64::from_bits(value as u64)),
                3 => Value::Text(
                    self.mem
                        .read_str(&self.store, value as u32, len)
                        .map_err(|e| self.mem_err(&e))?,
                ),
                4 if len == 0 => Value::Blob(Vec::new()),
                4 => Value::Blob(
                    self.mem
                        .read(&self.store, value as u32, len)
                        .map_err(|e| self.mem_err(&e))?,
                ),
                5 => Value::Null,
                _ => {
                    return Err(Error::LimitExceeded {
                        what: "guest memory exhausted converting a column".into(),
                    });
                }
            };
            row.push(value);
        }
        Ok(row)
    }

    /// Runs a single statement without parameters or caching (internal
    /// pragmas) and returns its rows.
    fn run_stmt_once(&mut self, handle: u32, sql: &str) -> Result<Vec<Vec<Value>>> {
        let (buf, out) = self.alloc(sql.as_bytes(), 8)?;
        let prepared = self.prepare_at(handle, buf, sql.len() as u32, out, 0);
        self.free(buf)?;
        let (stmt, _) = prepared?;
        let mut rows = Rows::default();
        let result = self.step_all(handle, stmt, Some(&mut rows));
        guest!(self.finalize(stmt));
        result.map(|()| rows.rows)
    }

    fn run(&mut self, db: DbId, sql: &str, params: &[Value], collect: bool) -> Result<(Rows, u64)> {
        refuse_nul(sql)?;
        let (name, handle, slot) = self.db(db)?;
        let result = self
            .enter_db(name, slot)
            .and_then(|()| self.run_cached(db, handle, sql, params, collect));
        self.leave(result)
    }

    fn run_cached(
        &mut self,
        db: DbId,
        handle: u32,
        sql: &str,
        params: &[Value],
        collect: bool,
    ) -> Result<(Rows, u64)> {
        let Some(stmt) = self.cached_statement(db, handle, sql)? else {
            if params.is_empty() {
                return Ok((Rows::default(), 0));
            }
            return Err(Error::InvalidArgument(format!(
                "{} parameters given for an empty statement",
                params.len()
            )));
        };
        let result = self.bind_and_step(handle, stmt, params, collect);
        if self.broken.is_none() {
            guest!(self.reset(stmt));
            guest!(self.clear_bindings(stmt));
        }
        result
    }

    fn bind_and_step(
        &mut self,
        handle: u32,
        stmt: u32,
        params: &[Value],
        collect: bool,
    ) -> Result<(Rows, u64)> {
        let expected = guest!(self.param_count(stmt));
        if usize::try_from(expected).ok() != Some(params.len()) {
            return Err(Error::InvalidArgument(format!(
                "statement expects {expected} parameters, {} given",
                params.len()
            )));
        }
        for (i, param) in params.iter().enumerate() {
            let index = i as i32 + 1;
            let rc = match param {
                Value::Null => guest!(self.bind_null(stmt, index)),
                Value::Integer(v) => guest!(self.bind_int64(stmt, index, *v)),
                Value::Real(v) => guest!(self.bind_double(stmt, index, *v)),
                Value::Text(s) => {
                    let (ptr, len) = self.alloc_value(s.as_bytes())?;
                    guest!(self.bind_text(stmt, index, ptr, len))
                }
                Value::Blob(b) => {
                    let (ptr, len) = self.alloc_value(b)?;
                    guest!(self.bind_blob(stmt, index, ptr, len))
                }
            };
            if rc != code::SQLITE_OK {
                return Err(self.sqlite_error(handle, rc));
            }
        }
        let mut rows = Rows::default();
        self.step_all(handle, stmt, collect.then_some(&mut rows))?;
        let changes = guest!(self.changes(handle));
        Ok((rows, u64::try_from(changes).unwrap_or(0)))
    }

    /// Copies a text/blob parameter into the guest (SQLite takes ownership).
    fn alloc_value(&mut self, bytes: &[u8]) -> Result<(u32, i32)> {
        if bytes.len() > self.config.max_length as usize {
            return Err(Error::LimitExceeded {
                what: format!(
                    "parameter of {} bytes exceeds max_length {}",
                    bytes.len(),
                    self.config.max_length
                ),
            });
        }
        if bytes.is_empty() {
            return Ok((0, 0));
        }
        let (ptr, _) = self.alloc(bytes, 0)?;
        Ok((ptr, bytes.len() as i32))
    }

    /// The prepared statement for `sql` on `db`, from the cache or freshly
    /// prepared (evicting the least recently used one). `None` for SQL with
    /// no statement in it.
    fn cached_statement(&mut self, db: DbId, handle: u32, sql: &str) -> Result<Option<u32>> {
        let entry = self.dbs.get_mut(&db).ok_or(Error::UnknownDatabase)?;
        if let Some(pos) = entry.stmts.iter().position(|(s, _)| s == sql) {
            let hit = entry.stmts.remove(pos);
            let stmt = hit.1;
            entry.stmts.push(hit);
            return Ok(Some(stmt));
        }
        let (buf, out) = self.alloc(sql.as_bytes(), 8)?;
        let prepared = self.prepare_at(handle, buf, sql.len() as u32, out, PREPARE_PERSISTENT);
        if self.broken.is_none() {
            self.free(buf)?;
        }
        let (stmt, consumed) = prepared?;
        if stmt == 0 {
            return Ok(None);
        }
        let rest = sql.get(consumed as usize..).unwrap_or_default();
        match self.holds_statement(handle, rest) {
            Ok(false) => {}
            Ok(true) => {
                guest!(self.finalize(stmt));
                return Err(Error::InvalidArgument(
                    "more than one statement; use exec for scripts".into(),
                ));
            }
            Err(e) => {
                if self.broken.is_none() {
                    guest!(self.finalize(stmt));
                }
                return Err(e);
            }
        }
        let capacity = self.config.statement_cache;
        let entry = self.dbs.get_mut(&db).ok_or(Error::UnknownDatabase)?;
        let mut evicted = Vec::new();
        while entry.stmts.len() >= capacity.max(1) {
            evicted.push(entry.stmts.remove(0).1);
        }
        entry.stmts.push((sql.to_owned(), stmt));
        for old in evicted {
            guest!(self.finalize(old));
        }
        Ok(Some(stmt))
    }
}

impl Instance {
    /// True if `sql` (the tail after a statement) holds another statement;
    /// whitespace, semicolons and comments do not count.
    fn holds_statement(&mut self, handle: u32, sql: &str) -> Result<bool> {
        if sql.bytes().all(|b| b.is_ascii_whitespace() || b == b';') {
            return Ok(false);
        }
        let (buf, out) = self.alloc(sql.as_bytes(), 8)?;
        let mut offset = 0;
        let len = sql.len() as u32;
        let mut found = Ok(false);
        while offset < len {
            match self.prepare_at(handle, buf + offset, len - offset, out, 0) {
                Ok((0, consumed)) => offset += consumed.max(1),
                Ok((stmt, _)) => {
                    guest!(self.finalize(stmt));
                    found = Ok(true);
                    break;
                }
                // A second statement that does not even parse is still a
                // second statement.
                Err(Error::Sqlite { .. }) => {
                    found = Ok(true);
                    break;
                }
                Err(e) => {
                    found = Err(e);
                    break;
                }
            }
        }
        if self.broken.is_none() {
            self.free(buf)?;
        }
        found
    }
}

/// The error of a call that poisoned its database: the store's error when
/// one is behind it (it reaches the caller intact), else
/// [`Error::Poisoned`].
fn poison_error(poison: Poison) -> Error {
    match poison.cause {
        Some(cause) => Error::Sqlite {
            code: cause.code(),
            message: format!(
                "{}; the database is poisoned until it is reopened",
                host::describe(&cause)
            ),
            kv: cause.into_kv_error(),
        },
        None => Error::Poisoned {
            reason: poison.reason,
        },
    }
}

/// SQL text goes to SQLite with its length, but SQLite stops reading at a
/// NUL: whatever follows one would be a statement nobody sees. Refused.
fn refuse_nul(sql: &str) -> Result<()> {
    match sql.bytes().position(|b| b == 0) {
        Some(at) => Err(Error::InvalidArgument(format!(
            "SQL contains a NUL byte at offset {at}"
        ))),
        None => Ok(()),
    }
}

/// Database names: what the registry accepts, minus anything that could be
/// read as something other than a plain name (URIs, control characters).
fn validate_name(name: &str) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.starts_with("file:") {
        return refuse("URI filenames are not allowed");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    if name.contains('?') || name.contains('#') {
        return refuse("contains '?' or '#'");
    }
    Ok(())
}

/// The module is shared across threads; instances are built where they run.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<SqliteModule>();
};
