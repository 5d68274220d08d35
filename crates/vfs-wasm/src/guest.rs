//! The guest: one wasmer store with SQLite instantiated in it, and the
//! only code that calls its exports.
//!
//! Why a type of its own: everything that can go wrong *below* SQL lives
//! here, once. A trap marks the guest broken (every later call returns
//! [`Error::Broken`]); a pointer the guest hands back outside its memory
//! does the same; a SQLite result code becomes an [`Error`] with the VFS
//! failure and its store error behind it. The layers above (statements,
//! [`Instance`](crate::Instance)) see typed handles ([`ConnPtr`],
//! [`StmtPtr`], [`GuestPtr`], [`Slot`]) and `Result`s, never a raw export.
//!
//! Every call into the guest runs for someone: [`Guest::with_caller`] and
//! [`Guest::with_db`] record the caller (the VFS serves only its files),
//! charge its allocations to its memory slot and start its time budget,
//! run the closure, and end the call, whatever the closure returned.

use std::sync::Arc;
use std::time::Instant;

use vfs_core::{Poison, sqlite};
use wasmer::{
    AsStoreMut, AsStoreRef, FunctionEnv, Memory, MemoryType, Pages, RuntimeError, Store, StoreMut,
    StoreObjects, StoreRef, TypedFunction,
};

use crate::config::InstanceConfig;
use crate::error::{Error, Result};
use crate::host::{self, HostState};
use crate::memory::{GuestMemory, GuestPtr, OutOfBounds};
use crate::module::SqliteModule;

/// Virtual-machine steps between two deadline checks.
const PROGRESS_OPS: i32 = 1000;
/// Guest memory kept outside the SQLite heap limit: allocator bookkeeping
/// and fragmentation, so SQLite reports NOMEM before `memory.grow` fails.
const HEAP_SLACK: u64 = 1 << 20;
const WASM_PAGE: u64 = 65536;

/// A `sqlite3*` connection in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnPtr(u32);

impl ConnPtr {
    /// True for the NULL connection a failed open may leave.
    pub(crate) fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// A `sqlite3_stmt*` in guest memory; never NULL (an empty statement is
/// `None` where one may occur).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StmtPtr(u32);

/// A memory-accounting slot of the shim's allocator: one per open
/// database, [`Slot::INSTANCE`] for allocations charged to nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(i32);

impl Slot {
    /// Charges to the instance itself.
    pub(crate) const INSTANCE: Slot = Slot(0);
    /// The first slot handed to a database.
    pub(crate) const FIRST: Slot = Slot(1);

    /// The slot after this one.
    pub(crate) fn next(self) -> Slot {
        Slot(self.0 + 1)
    }
}

/// Size of the parameter buffer the shim keeps for the host from the
/// start ([`Guest::scratch`]); a call whose parameters need more
/// allocates its own.
pub(crate) const SCRATCH_MAX: u32 = 16 * 1024;
/// SQLite's largest possible column count (`SQLITE_MAX_COLUMN`'s ceiling):
/// a step that reports more came from a guest that cannot be trusted.
const MAX_COLUMNS: u32 = 32767;
/// The code `shim_step` reports when the number of parameters is not the
/// statement's.
pub(crate) const WRONG_COUNT: i32 = -1;
/// Size of the header `shim_step` describes a step with.
const STEP_HEADER: u32 = 32;

/// What one step of a statement did, as `shim_step` describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// `sqlite3_step`'s result code.
    pub rc: i32,
    /// The statement's column count after this step.
    pub columns: u32,
    /// How often SQLite has prepared the statement again since it was
    /// first prepared; column names kept from an earlier call hold only
    /// while it stands still.
    pub reprepared: u32,
    /// When the step completed the statement and the shim finished it
    /// (see [`Guest::finish`]): the rows the connection's last write
    /// changed.
    pub finished: Option<i64>,
    /// The parameters could not be bound (`rc` says why: [`WRONG_COUNT`]
    /// or SQLite's code), and nothing was stepped.
    pub unbound: bool,
    /// The row's column records, `columns` records of 16 bytes, when a
    /// row was asked for; NULL otherwise, and when the guest had no
    /// memory for them.
    pub records: GuestPtr,
}

/// The guest functions the host calls, looked up once.
struct Exports {
    shim_open: TypedFunction<(u32, u32, i32), i32>,
    lockdown: TypedFunction<u32, i32>,
    step: TypedFunction<(u32, i32, u32, u32, i32), u32>,
    finish: TypedFunction<(u32, u32), i64>,
    close: TypedFunction<u32, i32>,
    prepare: TypedFunction<(u32, u32, i32, i32, u32, u32), i32>,
    finalize: TypedFunction<u32, i32>,
    param_count: TypedFunction<u32, i32>,
    column_name: TypedFunction<(u32, i32), u32>,
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
    /// `sqlite3_db_status`, for memory accounting; `None` for a prebuilt
    /// module (`VFS_WASM_MODULE`) built without it.
    db_status: Option<DbStatusFn>,
    /// `sqlite3_db_release_memory`; `None` for a prebuilt module built
    /// without it (releasing memory then frees only statements).
    db_release_memory: Option<TypedFunction<u32, i32>>,
}

/// `sqlite3_db_status(conn, op, *current, *highwater, reset)`.
type DbStatusFn = TypedFunction<(u32, i32, u32, u32, i32), i32>;

/// The guest's wasmer store, which may move to another thread between calls.
///
/// wasmer's `Store` is not `Send` because of what it *could* hold:
/// - an `on_called` hook, a boxed closure with no `Send` bound, set only by
///   a host function through `StoreMut::on_called` (none of ours does);
/// - host data of its functions (`Box<dyn Any>` with no `Send` bound): ours
///   come from `Function::new_typed_with_env`, which requires the
///   environment to be `Send` and the function `Send + Sync`;
/// - raw pointers to the instance, memory, table and global records, which
///   point into memory the store itself owns and frees.
///
/// wasmer's per-thread state for a store (the trap-handling context, the
/// unwinding point, the stack of installed stores) is pushed when a call
/// into the guest starts and popped when it returns; the coroutine stacks
/// and signal stacks it caches are per thread, not per store. The two
/// features that would tie a store to a thread between calls (the
/// `experimental-async` host functions, which have no `Send` bound, and
/// `experimental-host-interrupt`, which records the thread running a
/// store) are not enabled: the workspace asks for `sys` and `cranelift`
/// only, and `cargo xtask ci` fails if any crate turns them on.
struct MovableStore(Store);

// SAFETY: see the type's documentation: nothing a guest store holds here is
// tied to a thread between calls. The store is only reached through
// `&mut Guest`, so it is used by one thread at a time and never moved in
// the middle of a call (a call borrows the guest until it returns).
unsafe impl Send for MovableStore {}

impl AsStoreRef for MovableStore {
    fn as_store_ref(&self) -> StoreRef<'_> {
        self.0.as_store_ref()
    }
}

impl AsStoreMut for MovableStore {
    fn as_store_mut(&mut self) -> StoreMut<'_> {
        self.0.as_store_mut()
    }

    fn objects_mut(&mut self) -> &mut StoreObjects {
        self.0.objects_mut()
    }
}

/// Calls guest function `$name` with `$args`; a trap breaks the guest.
macro_rules! call {
    ($self:ident . $name:ident ( $($arg:expr),* )) => {
        $self.f.$name.call(&mut $self.store $(, $arg)*).map_err(|e| $self.trap(&e))
    };
}

/// SQLite in one wasmer store: the exports, the guest memory, the host
/// state its imports share, and whether a trap has broken it.
pub(crate) struct Guest {
    store: MovableStore,
    env: FunctionEnv<HostState>,
    mem: GuestMemory,
    f: Exports,
    config: InstanceConfig,
    broken: Option<String>,
    /// The shim's parameter buffer, [`SCRATCH_MAX`] bytes.
    scratch: GuestPtr,
    /// Where the shim keeps the running call's slot and its `refused`
    /// flag (`shim_call_state`).
    call_state: GuestPtr,
    /// Slots the shim has been told about since they were last released
    /// (its table has room for them, their limit is set, they hold their
    /// reserve): for those, a call only writes [`Guest::call_state`].
    armed: Vec<bool>,
}

impl Guest {
    /// Instantiates `module` in a memory capped by `config` and initializes
    /// SQLite with its heap limit and the shim's lookaside and reserves.
    pub(crate) fn new(module: &SqliteModule, config: InstanceConfig) -> Result<Guest> {
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
        .map_err(|e| Error::instantiate("cannot create the guest memory", e))?;
        let env = FunctionEnv::new(&mut store, HostState::new(config.store_timeout));
        let imports = host::imports(&mut store, &env, &memory);
        let instance = wasmer::Instance::new(&mut store, module.module(), &imports)
            .map_err(|e| Error::instantiate("cannot link the module", e))?;
        let mem = GuestMemory::new(memory);
        env.as_mut(&mut store).set_memory(mem.clone());

        let ex = &instance.exports;
        macro_rules! get {
            ($name:literal) => {
                ex.get_typed_function(&store, $name)
                    .map_err(|e| Error::instantiate(concat!("export ", $name), e))?
            };
        }
        let initialize: TypedFunction<(), ()> = get!("_initialize");
        let call_state: TypedFunction<(), u32> = get!("shim_call_state");
        let shim_init: TypedFunction<(i32, i32, i64, i64, i32), i32> = get!("shim_init");
        let shim_scratch: TypedFunction<(), u32> = get!("shim_scratch");
        let f = Exports {
            shim_open: get!("shim_open"),
            lockdown: get!("shim_lockdown"),
            step: get!("shim_step"),
            finish: get!("shim_finish"),
            close: get!("sqlite3_close_v2"),
            prepare: get!("sqlite3_prepare_v3"),
            finalize: get!("sqlite3_finalize"),
            param_count: get!("sqlite3_bind_parameter_count"),
            column_name: get!("sqlite3_column_name"),
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
            db_status: ex.get_typed_function(&store, "sqlite3_db_status").ok(),
            db_release_memory: ex
                .get_typed_function(&store, "sqlite3_db_release_memory")
                .ok(),
        };
        initialize
            .call(&mut store)
            .map_err(|e| Error::instantiate("_initialize trapped", e))?;
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
                SCRATCH_MAX as i32,
            )
            .map_err(|e| Error::instantiate("shim_init trapped", e))?;
        if rc != sqlite::SQLITE_OK {
            return Err(Error::Instantiate {
                what: format!("sqlite3_initialize failed with code {rc}"),
                source: None,
            });
        }
        let call_state = GuestPtr::new(
            call_state
                .call(&mut store)
                .map_err(|e| Error::instantiate("shim_call_state trapped", e))?,
        );
        let scratch = GuestPtr::new(
            shim_scratch
                .call(&mut store)
                .map_err(|e| Error::instantiate("shim_scratch trapped", e))?,
        );
        Ok(Guest {
            store: MovableStore(store),
            env,
            mem,
            f,
            config,
            broken: None,
            scratch,
            call_state,
            armed: Vec::new(),
        })
    }

    /// The limits this guest runs under.
    pub(crate) fn config(&self) -> &InstanceConfig {
        &self.config
    }

    /// The state the host functions share.
    pub(crate) fn state(&mut self) -> &mut HostState {
        self.env.as_mut(&mut self.store)
    }

    /// Current size of the guest memory in bytes.
    pub(crate) fn memory_size(&self) -> u64 {
        self.mem.size(&self.store)
    }

    /// Why the guest is broken, if it is.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// True once a trap (or a bad pointer) made the guest unusable.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// [`Error::Broken`] once the guest is broken.
    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.broken {
            Some(reason) => Err(Error::Broken {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a trap: from now on the guest only returns `Broken`.
    fn trap(&mut self, e: &RuntimeError) -> Error {
        let reason = format!("guest trapped: {e}");
        tracing::error!(%reason, "wasm instance broken");
        if self.broken.is_none() {
            self.broken = Some(reason.clone());
        }
        Error::Broken { reason }
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

    // ---- calls -----------------------------------------------------------

    /// Runs `f` as a call for database `db`: the VFS serves only its
    /// files, its allocations are charged to `slot`, and the time budget of
    /// the whole call starts now. Afterwards the VFS serves nobody and
    /// allocations are charged to the instance again, whatever `f`
    /// returned. Neither the store's ownership check nor poisoning applies
    /// (closing, seeding); a tenant's statement goes through
    /// [`Guest::with_db`].
    pub(crate) fn with_caller<T>(
        &mut self,
        db: Arc<str>,
        slot: Slot,
        f: impl FnOnce(&mut Guest) -> Result<T>,
    ) -> Result<T> {
        let result = self.enter(db, slot).and_then(|()| f(self));
        self.leave(result)
    }

    /// Runs `f` as a call for database `name` (see [`Guest::with_caller`]),
    /// once its store says it may still serve it; refused, nothing runs.
    ///
    /// If the call poisoned the database, its result becomes the poisoning
    /// failure: whatever SQLite said, nothing it did may be reported as
    /// stored. A store error whose outcome is unknown reaches the caller
    /// as [`Error::Sqlite`] with that error; a panic or a stall as
    /// [`Error::Poisoned`]. Otherwise the database's store is asked once
    /// more whether it may still serve it: refused, the result is withheld
    /// (rows SQLite read from its cache may be stale by now, and a write it
    /// made may or may not be stored).
    pub(crate) fn with_db<T>(
        &mut self,
        name: &Arc<str>,
        slot: Slot,
        f: impl FnOnce(&mut Guest) -> Result<T>,
    ) -> Result<T> {
        if let Err(kv) = self.state().check_owner(name) {
            let refused = Err(Error::Store {
                message: format!("the store of database {name:?} refused the call before it ran"),
                kv,
            });
            return self.leave(refused);
        }
        let result = self.with_caller(Arc::clone(name), slot, f);
        if matches!(result, Err(Error::Broken { .. })) {
            return result;
        }
        if let Some(poison) = self.state().vfs.poisoned(name).cloned() {
            return Err(poison_error(poison));
        }
        // A call that failed returns nothing anyway: its own error says
        // more (which read or commit failed) than the refusal would.
        if result.is_ok()
            && let Err(kv) = self.state().check_owner(name)
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

    fn enter(&mut self, db: Arc<str>, slot: Slot) -> Result<()> {
        // The budget is validated against MAX_BUDGET, so this cannot
        // overflow; were it to, the call would simply run unbudgeted.
        let deadline = self
            .config
            .statement_timeout
            .and_then(|t| Instant::now().checked_add(t));
        let state = self.state();
        state.vfs.set_caller(Some(db));
        state.last_error = None;
        state.interrupted = false;
        state.deadline = deadline;
        let index = usize::try_from(slot.0).unwrap_or(0);
        if self.armed.get(index).copied().unwrap_or(false) {
            return self.set_call_state(slot);
        }
        let limit = i64::try_from(self.config.tenant_memory_limit_bytes).unwrap_or(i64::MAX);
        if call!(self.set_tenant(slot.0, limit))? == 0 {
            return Err(Error::LimitExceeded {
                what: "guest memory exhausted growing the accounting table".into(),
            });
        }
        if slot != Slot::INSTANCE {
            if self.armed.len() <= index {
                self.armed.resize(index + 1, false);
            }
            self.armed[index] = true;
        }
        Ok(())
    }

    /// Charges new allocations to `slot`, which the shim already knows, and
    /// clears its `refused` flag, without a call into the guest.
    fn set_call_state(&mut self, slot: Slot) -> Result<()> {
        let mut state = [0u8; 8];
        state[..4].copy_from_slice(&slot.0.to_le_bytes());
        if let Err(e) = self.mem.write(&self.store, self.call_state.get(), &state) {
            return Err(self.mem_err(&e));
        }
        Ok(())
    }

    fn leave<T>(&mut self, result: Result<T>) -> Result<T> {
        let state = self.state();
        state.vfs.set_caller(None);
        state.deadline = None;
        if self.broken.is_none() {
            self.set_call_state(Slot::INSTANCE)?;
        }
        result
    }

    // ---- memory ----------------------------------------------------------

    /// Copies `data` into a fresh guest allocation with `extra` spare bytes
    /// (4-aligned) after it; returns the pointer and the pointer to the
    /// spare bytes. The caller frees it (or hands it to SQLite).
    pub(crate) fn alloc(&mut self, data: &[u8], extra: u32) -> Result<(GuestPtr, GuestPtr)> {
        let too_large = || Error::LimitExceeded {
            what: "value larger than 4 GiB".into(),
        };
        let len = u32::try_from(data.len()).map_err(|_| too_large())?;
        let spare = len.checked_add(3).map(|l| l & !3).ok_or_else(too_large)?;
        let total = u64::from(spare) + u64::from(extra);
        let ptr = GuestPtr::new(call!(self.malloc(total.max(1)))?);
        if ptr.is_null() {
            return Err(Error::LimitExceeded {
                what: format!("guest memory exhausted allocating {total} bytes"),
            });
        }
        if let Err(e) = self.mem.write(&self.store, ptr.get(), data) {
            return Err(self.mem_err(&e));
        }
        Ok((ptr, ptr.add(spare)))
    }

    /// Copies `data` into the guest at `ptr`, which the host allocated; a
    /// pointer outside its memory breaks the guest.
    pub(crate) fn write(&mut self, ptr: GuestPtr, data: &[u8]) -> Result<()> {
        self.mem
            .write(&self.store, ptr.get(), data)
            .map_err(|e| self.mem_err(&e))
    }

    /// Frees a guest allocation (`sqlite3_free`).
    pub(crate) fn free(&mut self, ptr: GuestPtr) -> Result<()> {
        call!(self.free(ptr.get()))
    }

    /// Copies `len` bytes at `ptr` out of the guest; a pointer outside its
    /// memory breaks the guest.
    pub(crate) fn read(&mut self, ptr: GuestPtr, len: u32) -> Result<Vec<u8>> {
        self.mem
            .read(&self.store, ptr.get(), len)
            .map_err(|e| self.mem_err(&e))
    }

    /// Reads `len` bytes at `ptr` as (lossy) UTF-8, like [`Guest::read`].
    pub(crate) fn read_str(&mut self, ptr: GuestPtr, len: u32) -> Result<String> {
        self.mem
            .read_str(&self.store, ptr.get(), len)
            .map_err(|e| self.mem_err(&e))
    }

    /// Reads the little-endian `u32` at `ptr`, like [`Guest::read`].
    fn read_u32(&mut self, ptr: GuestPtr) -> Result<u32> {
        self.mem
            .read_u32(&self.store, ptr.get())
            .map_err(|e| self.mem_err(&e))
    }

    /// Reads a C string SQLite handed back (a column name or a message).
    /// A long one is cut with a marker; one the host cannot read at all is
    /// this statement's error, never the instance's.
    pub(crate) fn read_cstr(&mut self, ptr: GuestPtr) -> Result<String> {
        if ptr.is_null() {
            return Ok(String::new());
        }
        self.mem
            .read_cstr(&self.store, ptr.get())
            .map_err(|e| Error::Sqlite {
                code: sqlite::SQLITE_ERROR,
                message: format!("SQLite returned a string the host cannot read: {e}"),
                kv: None,
            })
    }

    // ---- errors ----------------------------------------------------------

    /// The error for result code `rc` on connection `conn`, with the VFS
    /// failure (and its store error) behind it when there is one.
    pub(crate) fn sqlite_error(&mut self, conn: ConnPtr, rc: i32) -> Error {
        let (code, message) = match self.errinfo(conn) {
            Ok((code, message)) => (if code == 0 { rc } else { code }, message),
            Err(e) => return e,
        };
        let state = self.state();
        let vfs = state.last_error.take();
        let interrupted = state.interrupted;
        match code & 0xff {
            sqlite::SQLITE_INTERRUPT if interrupted => Error::Interrupted {
                budget_ms: self
                    .config
                    .statement_timeout
                    .map_or(0, |t| t.as_millis() as u64),
            },
            sqlite::SQLITE_NOMEM | sqlite::SQLITE_TOOBIG => Error::LimitExceeded {
                what: self.nomem_reason(message),
            },
            _ if code == sqlite::SQLITE_IOERR_NOMEM => Error::LimitExceeded {
                what: self.nomem_reason(message),
            },
            primary => {
                let relevant = matches!(
                    primary,
                    sqlite::SQLITE_IOERR | sqlite::SQLITE_CANTOPEN | sqlite::SQLITE_FULL
                );
                // SQLite's own words for these ("disk I/O error", "unable
                // to open database file") say less than the failed
                // operation and the store's error do; its code may be that
                // of its retry through the journal, not of the failure
                // named.
                match vfs.filter(|_| relevant) {
                    Some(vfs) => Error::Sqlite {
                        code: vfs.code(),
                        message: vfs.message().to_owned(),
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

    fn errinfo(&mut self, conn: ConnPtr) -> Result<(i32, String)> {
        if conn.is_null() {
            return Ok((0, "out of memory".into()));
        }
        let code = call!(self.errcode(conn.0))?;
        let ptr = GuestPtr::new(call!(self.errmsg(conn.0))?);
        Ok((code, self.read_cstr(ptr)?))
    }

    // ---- connections -----------------------------------------------------

    /// Opens a connection to `name` through the host VFS, with the shim's
    /// authorizer, progress handler and replaced built-ins. Returns the
    /// result code and the connection, which may be set even when the open
    /// failed (then it only carries the error).
    pub(crate) fn open(&mut self, name: &str) -> Result<(i32, ConnPtr)> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let (ptr, out) = self.alloc(&cname, 4)?;
        let rc = call!(self.shim_open(ptr.get(), out.get(), PROGRESS_OPS))?;
        let conn = self.mem.read_u32(&self.store, out.get());
        self.free(ptr)?;
        let conn = conn.map_err(|e| self.mem_err(&e))?;
        Ok((rc, ConnPtr(conn)))
    }

    /// `sqlite3_close_v2`.
    pub(crate) fn close(&mut self, conn: ConnPtr) -> Result<i32> {
        call!(self.close(conn.0))
    }

    /// `sqlite3_limit`.
    pub(crate) fn limit(&mut self, conn: ConnPtr, id: i32, value: i32) -> Result<i32> {
        call!(self.limit(conn.0, id, value))
    }

    /// Seals the connection (the shim's authorizer then denies ATTACH,
    /// DETACH and the fixed pragmas).
    pub(crate) fn lockdown(&mut self, conn: ConnPtr) -> Result<i32> {
        call!(self.lockdown(conn.0))
    }

    // ---- statements ------------------------------------------------------

    /// Prepares the first statement of the SQL at `sql` (`len` bytes) and
    /// returns it (`None` for an empty statement) with the number of bytes
    /// consumed. `out` points at 8 spare guest bytes.
    pub(crate) fn prepare(
        &mut self,
        conn: ConnPtr,
        sql: GuestPtr,
        len: u32,
        out: GuestPtr,
        flags: i32,
    ) -> Result<(Option<StmtPtr>, u32)> {
        let rc = call!(self.prepare(
            conn.0,
            sql.get(),
            len as i32,
            flags,
            out.get(),
            out.get() + 4
        ))?;
        if rc != sqlite::SQLITE_OK {
            return Err(self.sqlite_error(conn, rc));
        }
        let stmt = self.read_u32(out)?;
        let tail = self.read_u32(out.add(4))?;
        let consumed = tail
            .checked_sub(sql.get())
            .filter(|&c| c <= len)
            .unwrap_or(len);
        Ok(((stmt != 0).then_some(StmtPtr(stmt)), consumed))
    }

    /// `sqlite3_finalize`.
    pub(crate) fn finalize(&mut self, stmt: StmtPtr) -> Result<i32> {
        call!(self.finalize(stmt.0))
    }

    /// Ends a call's use of `stmt` on `conn` (`shim_finish`): returns the
    /// rows the connection's last write changed, then resets the statement
    /// and clears its bindings.
    pub(crate) fn finish(&mut self, conn: ConnPtr, stmt: StmtPtr) -> Result<i64> {
        call!(self.finish(conn.0, stmt.0))
    }

    /// `sqlite3_bind_parameter_count`.
    pub(crate) fn param_count(&mut self, stmt: StmtPtr) -> Result<i32> {
        call!(self.param_count(stmt.0))
    }

    /// The shim's parameter buffer, [`SCRATCH_MAX`] bytes; it is the
    /// host's to fill for [`Guest::step`].
    pub(crate) fn scratch(&self) -> GuestPtr {
        self.scratch
    }

    /// Steps `stmt` once (`shim_step`), with the row's column records
    /// written when `want_row`. Given `finish`, its connection, a step that
    /// completes the statement also finishes it ([`Guest::finish`]). Given
    /// `bind`, `n` parameter records the host wrote (see `statement.rs` for
    /// their layout), they are bound first; if that fails, nothing is
    /// stepped and [`Step::unbound`] says so.
    pub(crate) fn step(
        &mut self,
        stmt: StmtPtr,
        want_row: bool,
        finish: Option<ConnPtr>,
        bind: Option<(GuestPtr, u32)>,
    ) -> Result<Step> {
        let conn = finish.map_or(0, |c| c.0);
        let (records, n) = bind.map_or((0, -1), |(ptr, n)| (ptr.get(), n as i32));
        let ptr = GuestPtr::new(call!(self.step(
            stmt.0,
            i32::from(want_row),
            conn,
            records,
            n
        ))?);
        let mut header = [0u8; STEP_HEADER as usize];
        if let Err(e) = self.mem.read_into(&self.store, ptr.get(), &mut header) {
            return Err(self.mem_err(&e));
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let mut changes = [0u8; 8];
        changes.copy_from_slice(&header[16..24]);
        let step = Step {
            rc: word(0) as i32,
            columns: word(4),
            reprepared: word(8),
            finished: (word(12) == 1).then(|| i64::from_le_bytes(changes)),
            records: GuestPtr::new(word(24)),
            unbound: word(28) == 1,
        };
        if step.columns > MAX_COLUMNS {
            let e = OutOfBounds {
                ptr: step.records.get(),
                len: u64::from(step.columns) * 16,
            };
            return Err(self.mem_err(&e));
        }
        Ok(step)
    }

    /// `sqlite3_column_name`, read into the host.
    pub(crate) fn column_name(&mut self, stmt: StmtPtr, index: i32) -> Result<String> {
        let ptr = GuestPtr::new(call!(self.column_name(stmt.0, index))?);
        self.read_cstr(ptr)
    }

    // ---- memory accounting -----------------------------------------------

    /// Guest heap bytes charged to `slot`.
    pub(crate) fn slot_used(&mut self, slot: Slot) -> Result<i64> {
        call!(self.tenant_used(slot.0))
    }

    /// Releases a closed database's slot; true if it can be handed out
    /// again (nothing is still charged to it, which would be credited to
    /// the next owner).
    pub(crate) fn release_slot(&mut self, slot: Slot) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if let Some(armed) = usize::try_from(slot.0)
            .ok()
            .and_then(|i| self.armed.get_mut(i))
        {
            *armed = false;
        }
        if let Err(e) = self.f.release_tenant.call(&mut self.store, slot.0) {
            self.trap(&e);
            return false;
        }
        match self.f.tenant_used.call(&mut self.store, slot.0) {
            Ok(0) => true,
            Ok(left) => {
                tracing::warn!(
                    slot = slot.0,
                    left,
                    "closed database left memory charged; slot retired"
                );
                false
            }
            Err(e) => {
                self.trap(&e);
                false
            }
        }
    }

    /// Bytes currently allocated by SQLite inside the guest.
    pub(crate) fn memory_used(&mut self) -> Result<i64> {
        call!(self.memory_used())
    }

    /// `sqlite3_db_status(conn, op, &current, &highwater, 0)`: the current
    /// value of SQLite's per-connection counter `op` (a
    /// `SQLITE_DBSTATUS_*` code). Read only: nothing is reset. Used for
    /// memory accounting; a module without the export, or an `op` SQLite
    /// refuses, is [`Error::Sqlite`].
    pub(crate) fn db_status(&mut self, conn: ConnPtr, op: i32) -> Result<i32> {
        let Some(status) = self.f.db_status.clone() else {
            return Err(Error::Sqlite {
                code: sqlite::SQLITE_ERROR,
                message: "this SQLite module does not export sqlite3_db_status".into(),
                kv: None,
            });
        };
        let (out, _) = self.alloc(&[0; 8], 0)?;
        let rc = status
            .call(&mut self.store, conn.0, op, out.get(), out.get() + 4, 0)
            .map_err(|e| self.trap(&e))?;
        let current = self.read_u32(out);
        self.free(out)?;
        let current = current?;
        if rc != sqlite::SQLITE_OK {
            return Err(Error::Sqlite {
                code: rc,
                message: format!("sqlite3_db_status refused counter {op}"),
                kv: None,
            });
        }
        Ok(current as i32)
    }

    /// `sqlite3_db_release_memory(conn)`: frees every page of the
    /// connection's cache that no statement holds. Without the export
    /// (a prebuilt module) it frees nothing and succeeds.
    pub(crate) fn db_release_memory(&mut self, conn: ConnPtr) -> Result<i32> {
        let Some(release) = self.f.db_release_memory.clone() else {
            return Ok(sqlite::SQLITE_OK);
        };
        release
            .call(&mut self.store, conn.0)
            .map_err(|e| self.trap(&e))
    }

    /// Makes the guest trap (tests only).
    pub(crate) fn trap_now(&mut self) -> Result<()> {
        call!(self.trap())
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
                cause.message()
            ),
            kv: cause.into_kv_error(),
        },
        None => Error::Poisoned {
            reason: poison.reason,
        },
    }
}
