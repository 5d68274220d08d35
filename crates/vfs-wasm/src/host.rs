//! The host side of the VFS: the functions the guest imports from `env`.
//!
//! Why the host and not the guest decides: the guest runs SQL from several
//! tenants, so it cannot be trusted to pick files. Before every call into
//! the guest the instance records which database it runs for; the rules
//! that follow from it (a name resolves only if it belongs to that
//! database, an open file serves only the database that opened it, a
//! poisoned database is refused) live in [`KvVfs`], in `vfs-core`, where
//! they are tested without wasmer. What is left here is the adapter:
//! pointers and lengths in guest memory, result codes, and the time bound
//! of every store call. Anything refused gets a SQLite error code that only
//! the calling tenant sees.
//!
//! These functions never unwind into the guest and never call back into it.
//! Every failure goes through [`HostState::fail`], which keeps the first
//! [`VfsError`] with a storage error behind it (with its
//! [`vfs_core::KvError`]) for the caller of the SQL statement and hands
//! SQLite only the result code; the kept error names the operation that
//! failed ("commit of the main file failed ..."). The page logic is async;
//! the guest is not, so each store call is driven to completion on the
//! thread running the instance by [`wait::drive`], bounded by the call's
//! deadline and the store timeout, and polled inside
//! [`vfs_core::with_deadline`] so the store can bound its own retries by the
//! same instant. A store that panics, does not answer in time, or cannot
//! tell whether a call was applied ([`KvError::OutcomeUnknown`]) may have
//! left the database's pages other than SQLite believes: its database is
//! poisoned (every later file operation of it fails) until it is closed and
//! reopened.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use vfs_core::{FileTag, KvError, KvVfs, ReadOutcome, VfsError, sqlite};
use wasmer::{Function, FunctionEnv, FunctionEnvMut, Imports, Memory, Store, imports};

use crate::memory::GuestMemory;
use crate::wait::{self, Stall};

/// Longest sleep the guest may ask for (SQLite only sleeps in busy handlers,
/// which never fire with exclusive, unshared connections).
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// State shared by all host functions of one instance.
pub(crate) struct HostState {
    memory: Option<GuestMemory>,
    /// The databases, their files and the caller.
    pub(crate) vfs: KvVfs,
    /// When the running call must stop.
    pub(crate) deadline: Option<Instant>,
    /// Longest wait for one store call.
    pub(crate) store_timeout: Duration,
    /// Set when the progress handler asked SQLite to stop.
    pub(crate) interrupted: bool,
    /// The last VFS failure, kept for the error returned to the caller.
    pub(crate) last_error: Option<VfsError>,
}

impl HostState {
    pub(crate) fn new(store_timeout: Duration) -> Self {
        Self {
            store_timeout,
            memory: None,
            vfs: KvVfs::new(),
            deadline: None,
            interrupted: false,
            last_error: None,
        }
    }

    pub(crate) fn set_memory(&mut self, memory: GuestMemory) {
        self.memory = Some(memory);
    }

    /// The single path from a failure to a SQLite result code: the error is
    /// kept for the caller, SQLite gets the code.
    ///
    /// The first failure with a storage error behind it wins: SQLite often
    /// retries a failed commit through its journal, and the retry's failure
    /// ("disk I/O error") would otherwise hide the cause ("no space left").
    fn fail(&mut self, err: VfsError) -> i32 {
        let rc = err.code();
        tracing::debug!(code = rc, error = %err.message(), "vfs call failed");
        if self
            .last_error
            .as_ref()
            .is_none_or(|kept| kept.kv_error().is_none())
        {
            self.last_error = Some(err);
        }
        rc
    }

    /// Marks the calling database unusable until it is reopened, because
    /// of `err`.
    fn poison(&mut self, err: &VfsError) {
        if let Some(me) = self.vfs.caller() {
            let reason = describe(err);
            tracing::warn!(database = %me, %reason, "database poisoned");
            let cause = err.kv_error().is_some().then(|| err.clone());
            self.vfs.poison(reason, cause);
        }
    }

    /// Asks the store of database `name` whether it may still serve it
    /// ([`KvStore::check_owner`]): no I/O, so it runs around every call. A
    /// store that panics here refuses, as a failed check would; the panic
    /// goes no further.
    pub(crate) fn check_owner(&self, name: &str) -> Result<(), KvError> {
        let Some(store) = self.vfs.registry().store(name) else {
            return Ok(());
        };
        match catch_unwind(AssertUnwindSafe(|| store.check_owner())) {
            Ok(checked) => checked,
            Err(payload) => Err(KvError::Backend {
                message: format!("check_owner panicked: {}", wait::take_panic(payload)),
                source: None,
            }),
        }
    }

    /// When a store call made now must have answered: the call's deadline
    /// or the store timeout, whichever comes first.
    fn store_deadline(&self) -> Instant {
        let now = Instant::now();
        let cap = now.checked_add(self.store_timeout).unwrap_or(now);
        self.deadline.map_or(cap, |d| d.min(cap))
    }

    fn mem(&self) -> Result<&GuestMemory, VfsError> {
        self.memory
            .as_ref()
            .ok_or_else(|| VfsError::new(sqlite::SQLITE_MISUSE, "guest memory not attached"))
    }

    /// The file name SQLite passed as `(ptr, len)` in guest memory.
    fn read_name(
        &self,
        store: &wasmer::StoreMut<'_>,
        ptr: u32,
        len: u32,
    ) -> Result<String, VfsError> {
        self.mem()?
            .read_str(store, ptr, len)
            .map_err(|e| bad_pointer(&e))
    }
}

fn bad_pointer(e: &crate::memory::OutOfBounds) -> VfsError {
    VfsError::new(sqlite::SQLITE_MISUSE, e.to_string())
}

/// What the caller reads for a failed file operation: what failed, then
/// the store's own error when there is one.
pub(crate) fn describe(err: &VfsError) -> String {
    match err.kv_error() {
        Some(kv) => format!("{}: {kv}", err.message()),
        None => err.message().to_owned(),
    }
}

/// Puts the SQLite-level operation in front of a failure's own message
/// (which names the store call, when the page logic made one): "read of
/// page 7 of the main file failed (read Main file pages)". Code and store
/// error are kept.
fn in_context(op: &str, err: VfsError) -> VfsError {
    let message = format!("{op} failed ({})", err.message());
    let code = err.code();
    match err.into_kv_error() {
        Some(kv) => VfsError::from_kv(code, message, kv),
        None => VfsError::new(code, message),
    }
}

/// A file in words.
fn file_words(tag: FileTag) -> &'static str {
    match tag {
        FileTag::Main => "the main file",
        FileTag::Journal => "the journal",
        FileTag::Wal => "the WAL",
        FileTag::Shm => "the WAL index",
    }
}

/// A read or write in words: by page for whole pages of the main file
/// (SQLite numbers them from 1), by bytes otherwise.
fn span_words(verb: &str, tag: FileTag, offset: u64, amt: u64) -> String {
    const PAGE: u64 = vfs_core::PAGE_SIZE as u64;
    let file = file_words(tag);
    if tag == FileTag::Main && amt > 0 && offset.is_multiple_of(PAGE) && amt.is_multiple_of(PAGE) {
        let first = offset / PAGE + 1;
        let last = first + (amt / PAGE - 1);
        if first == last {
            format!("{verb} of page {first} of {file}")
        } else {
            format!("{verb} of pages {first} to {last} of {file}")
        }
    } else {
        format!("{verb} of {amt} bytes at offset {offset} of {file}")
    }
}

/// How a host function failed.
enum Failure {
    /// An ordinary failure: SQLite gets its code, the database stays sound.
    Vfs(VfsError),
    /// The store panicked, did not answer, or said the outcome is unknown:
    /// what it holds is unknown, so the calling database is poisoned as
    /// well.
    Poison(VfsError),
}

impl Failure {
    fn map(self, f: impl FnOnce(VfsError) -> VfsError) -> Failure {
        match self {
            Failure::Vfs(e) => Failure::Vfs(f(e)),
            Failure::Poison(e) => Failure::Poison(f(e)),
        }
    }
}

impl From<VfsError> for Failure {
    fn from(e: VfsError) -> Self {
        Failure::Vfs(e)
    }
}

/// How a store stall is reported to SQLite: an I/O error of the kind the
/// operation would have failed with.
fn stalled(stall: &Stall, io_code: i32) -> VfsError {
    VfsError::new(io_code, stall.to_string())
}

/// Drives a store future within the store deadline, which the store sees
/// as [`vfs_core::call_deadline`] (the future is polled here, on this
/// thread, inside [`vfs_core::with_deadline`]), so its retries end when
/// the wait does.
///
/// A stall or a [`KvError::OutcomeUnknown`] poisons the calling database,
/// except for `read_only` operations that time out (a read that never
/// answered changed nothing). A failure is named by `op`, the operation in
/// SQLite's terms, built only when it fails.
fn settle<T>(
    deadline: Instant,
    io_code: i32,
    read_only: bool,
    op: impl FnOnce() -> String,
    future: impl Future<Output = Result<T, VfsError>>,
) -> Result<T, Failure> {
    let failure = match vfs_core::with_deadline(deadline, || wait::drive(future, deadline)) {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) if e.kv_error().is_some_and(KvError::is_outcome_unknown) => Failure::Poison(e),
        Ok(Err(e)) => Failure::Vfs(e),
        Err(stall @ Stall::TimedOut(_)) if read_only => Failure::Vfs(stalled(&stall, io_code)),
        Err(stall) => Failure::Poison(stalled(&stall, io_code)),
    };
    let op = op();
    Err(failure.map(|e| in_context(&op, e)))
}

/// Runs `body`; an error becomes its result code through [`HostState::fail`].
/// A panic anywhere in it is caught here, before it could unwind through
/// guest frames, and poisons the calling database.
fn guard(
    env: &mut FunctionEnvMut<'_, HostState>,
    body: impl FnOnce(&mut HostState, &wasmer::StoreMut<'_>) -> Result<i32, Failure>,
) -> i32 {
    let (state, store) = env.data_and_store_mut();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&mut *state, &store)));
    match outcome {
        Ok(Ok(rc)) => rc,
        Ok(Err(Failure::Vfs(e))) => state.fail(e),
        Ok(Err(Failure::Poison(e))) => {
            state.poison(&e);
            state.fail(e)
        }
        Err(payload) => {
            let e = VfsError::new(
                sqlite::SQLITE_IOERR,
                format!("the host panicked: {}", wait::take_panic(payload)),
            );
            state.poison(&e);
            state.fail(e)
        }
    }
}

fn vfs_open(
    mut env: FunctionEnvMut<'_, HostState>,
    name_ptr: u32,
    name_len: u32,
    flags: i32,
    out_id: u32,
) -> i32 {
    guard(&mut env, |state, store| {
        let name = state.read_name(store, name_ptr, name_len)?;
        let resolved = state.vfs.resolve(&name)?;
        let tag = resolved.tag;
        let file = settle(
            state.store_deadline(),
            sqlite::SQLITE_CANTOPEN,
            false,
            || format!("open of {}", file_words(tag)),
            state
                .vfs
                .open(&resolved, flags & sqlite::SQLITE_OPEN_CREATE != 0),
        )?;
        state
            .mem()?
            .write(store, out_id, &state.vfs.next_file_id().to_le_bytes())
            .map_err(|e| bad_pointer(&e))?;
        state.vfs.add_file(resolved.db_name, file);
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_close(mut env: FunctionEnvMut<'_, HostState>, id: u32) -> i32 {
    guard(&mut env, |state, _| {
        state.vfs.close(id)?;
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_read(
    mut env: FunctionEnvMut<'_, HostState>,
    id: u32,
    buf: u32,
    amt: i32,
    offset: i64,
) -> i32 {
    guard(&mut env, |state, store| {
        let (Ok(amt), Ok(offset)) = (usize::try_from(amt), u64::try_from(offset)) else {
            return Err(VfsError::new(sqlite::SQLITE_IOERR_READ, "negative read").into());
        };
        // The buffer must lie in guest memory before the host allocates
        // its copy: the guest cannot make the host allocate more than that.
        let mem = state.mem()?.clone();
        if u64::from(buf) + amt as u64 > mem.size(store) {
            return Err(VfsError::new(
                sqlite::SQLITE_IOERR_READ,
                "read buffer outside guest memory",
            )
            .into());
        }
        let mut data = vec![0u8; amt];
        let deadline = state.store_deadline();
        let file = state.vfs.file(id)?;
        let tag = file.tag();
        let outcome = settle(
            deadline,
            sqlite::SQLITE_IOERR_READ,
            true,
            || span_words("read", tag, offset, amt as u64),
            file.read(&mut data, offset),
        )?;
        state
            .mem()?
            .write(store, buf, &data)
            .map_err(|e| bad_pointer(&e))?;
        Ok(match outcome {
            ReadOutcome::Full => sqlite::SQLITE_OK,
            ReadOutcome::Short => sqlite::SQLITE_IOERR_SHORT_READ,
        })
    })
}

fn vfs_write(
    mut env: FunctionEnvMut<'_, HostState>,
    id: u32,
    buf: u32,
    amt: i32,
    offset: i64,
) -> i32 {
    guard(&mut env, |state, store| {
        let (Ok(amt), Ok(offset)) = (u32::try_from(amt), u64::try_from(offset)) else {
            return Err(VfsError::new(sqlite::SQLITE_IOERR_WRITE, "negative write").into());
        };
        let data = state
            .mem()?
            .read(store, buf, amt)
            .map_err(|e| bad_pointer(&e))?;
        let deadline = state.store_deadline();
        let file = state.vfs.file(id)?;
        let tag = file.tag();
        settle(
            deadline,
            sqlite::SQLITE_IOERR_WRITE,
            false,
            || span_words("write", tag, offset, u64::from(amt)),
            file.write(&data, offset),
        )?;
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_truncate(mut env: FunctionEnvMut<'_, HostState>, id: u32, size: i64) -> i32 {
    guard(&mut env, |state, _| {
        let Ok(size) = u64::try_from(size) else {
            return Err(VfsError::new(sqlite::SQLITE_IOERR_TRUNCATE, "negative size").into());
        };
        let deadline = state.store_deadline();
        let file = state.vfs.file(id)?;
        let tag = file.tag();
        settle(
            deadline,
            sqlite::SQLITE_IOERR_TRUNCATE,
            false,
            || format!("truncate of {} to {size} bytes", file_words(tag)),
            file.truncate(size),
        )?;
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_sync(mut env: FunctionEnvMut<'_, HostState>, id: u32, _flags: i32) -> i32 {
    guard(&mut env, |state, _| {
        let deadline = state.store_deadline();
        let file = state.vfs.file(id)?;
        let tag = file.tag();
        settle(
            deadline,
            sqlite::SQLITE_IOERR_FSYNC,
            false,
            || format!("sync of {}", file_words(tag)),
            file.sync(),
        )?;
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_file_size(mut env: FunctionEnvMut<'_, HostState>, id: u32, out: u32) -> i32 {
    guard(&mut env, |state, store| {
        let size = i64::try_from(state.vfs.file(id)?.size()).unwrap_or(i64::MAX);
        state
            .mem()?
            .write(store, out, &size.to_le_bytes())
            .map_err(|e| bad_pointer(&e))?;
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_file_control(mut env: FunctionEnvMut<'_, HostState>, id: u32, op: i32) -> i32 {
    guard(&mut env, |state, _| {
        let deadline = state.store_deadline();
        let file = state.vfs.file(id)?;
        match op {
            sqlite::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => file.begin_atomic()?,
            sqlite::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => {
                let tag = file.tag();
                settle(
                    deadline,
                    sqlite::SQLITE_IOERR_COMMIT_ATOMIC,
                    false,
                    || format!("commit of {}", file_words(tag)),
                    file.commit_atomic(),
                )?;
            }
            sqlite::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => file.rollback_atomic(),
            _ => return Ok(sqlite::SQLITE_NOTFOUND),
        }
        Ok(sqlite::SQLITE_OK)
    })
}

fn vfs_delete(
    mut env: FunctionEnvMut<'_, HostState>,
    name_ptr: u32,
    name_len: u32,
    _sync_dir: i32,
) -> i32 {
    guard(&mut env, |state, store| {
        let name = state.read_name(store, name_ptr, name_len)?;
        let resolved = state
            .vfs
            .resolve(&name)
            .map_err(|e| VfsError::new(sqlite::SQLITE_IOERR_DELETE, e.message().to_owned()))?;
        let tag = resolved.tag;
        settle(
            state.store_deadline(),
            sqlite::SQLITE_IOERR_DELETE,
            false,
            || format!("delete of {}", file_words(tag)),
            state.vfs.delete(&resolved),
        )?;
        Ok(sqlite::SQLITE_OK)
    })
}

/// `xAccess`: `SQLITE_ACCESS_EXISTS`, `_READWRITE` and `_READ` all mean
/// "exists" here, so the flags are not looked at.
fn vfs_access(
    mut env: FunctionEnvMut<'_, HostState>,
    name_ptr: u32,
    name_len: u32,
    _flags: i32,
    out: u32,
) -> i32 {
    guard(&mut env, |state, store| {
        let name = state.read_name(store, name_ptr, name_len)?;
        // A name the caller may not open simply does not exist for it.
        let exists = match state.vfs.resolve(&name) {
            Ok(resolved) => settle(
                state.store_deadline(),
                sqlite::SQLITE_IOERR_ACCESS,
                true,
                || format!("existence check of {}", file_words(resolved.tag)),
                state.vfs.exists(&resolved),
            )?,
            Err(_) => false,
        };
        state
            .mem()?
            .write(store, out, &u32::from(exists).to_le_bytes())
            .map_err(|e| bad_pointer(&e))?;
        Ok(sqlite::SQLITE_OK)
    })
}

fn host_random(mut env: FunctionEnvMut<'_, HostState>, buf: u32, len: i32) {
    let (state, store) = env.data_and_store_mut();
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    let mut data = vec![0u8; len];
    if getrandom::fill(&mut data).is_err() {
        // No OS randomness: derive bytes from the clock rather than fail.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.as_nanos().to_le_bytes());
        hasher.finalize_xof().fill(&mut data);
    }
    if let Ok(mem) = state.mem() {
        let _ = mem.write(&store, buf, &data);
    }
}

fn host_time_ms(_env: FunctionEnvMut<'_, HostState>) -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn host_sleep(_env: FunctionEnvMut<'_, HostState>, micros: i32) -> i32 {
    let wanted = Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    #[expect(
        clippy::disallowed_methods,
        reason = "SQLite's xSleep asks for exactly this, bounded by MAX_SLEEP"
    )]
    std::thread::sleep(wanted.min(MAX_SLEEP));
    micros
}

/// SQLite's progress handler: nonzero stops the running statement.
fn host_progress(mut env: FunctionEnvMut<'_, HostState>) -> i32 {
    let state = env.data_mut();
    match state.deadline {
        Some(deadline) if Instant::now() >= deadline => {
            state.interrupted = true;
            1
        }
        _ => 0,
    }
}

/// The import object for one instance.
pub(crate) fn imports(store: &mut Store, env: &FunctionEnv<HostState>, memory: &Memory) -> Imports {
    imports! {
        "env" => {
            "memory" => memory.clone(),
            "vfs_open" => Function::new_typed_with_env(store, env, vfs_open),
            "vfs_close" => Function::new_typed_with_env(store, env, vfs_close),
            "vfs_read" => Function::new_typed_with_env(store, env, vfs_read),
            "vfs_write" => Function::new_typed_with_env(store, env, vfs_write),
            "vfs_truncate" => Function::new_typed_with_env(store, env, vfs_truncate),
            "vfs_sync" => Function::new_typed_with_env(store, env, vfs_sync),
            "vfs_file_size" => Function::new_typed_with_env(store, env, vfs_file_size),
            "vfs_file_control" => Function::new_typed_with_env(store, env, vfs_file_control),
            "vfs_delete" => Function::new_typed_with_env(store, env, vfs_delete),
            "vfs_access" => Function::new_typed_with_env(store, env, vfs_access),
            "host_random" => Function::new_typed_with_env(store, env, host_random),
            "host_time_ms" => Function::new_typed_with_env(store, env, host_time_ms),
            "host_sleep" => Function::new_typed_with_env(store, env, host_sleep),
            "host_progress" => Function::new_typed_with_env(store, env, host_progress),
        }
    }
}
