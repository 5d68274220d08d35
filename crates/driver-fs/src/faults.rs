//! Disk-failure injection for the data file, so the failure paths of the
//! committer (a failed shared transaction, a poisoned engine) can be tested
//! without a broken disk.
//!
//! The injection sits below the embedded engine, at its file layer: a write
//! or sync that fails here fails exactly as an I/O error of the disk would.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// A switch that makes writes to a store's data file fail, for tests.
///
/// Pass it to [`FsStorage::open_with_faults`](crate::FsStorage::open_with_faults);
/// clones share the switch. While failing, every write and sync of the data
/// file returns an I/O error (a plain one, or the operating system's "no
/// space left on device" after [`fill_disk`](Self::fill_disk)); reads keep
/// working.
#[derive(Clone, Default)]
pub struct FileFaults {
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    fail_writes: AtomicBool,
    disk_full: AtomicBool,
    injected: AtomicU64,
}

impl fmt::Debug for FileFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileFaults")
            .field(
                "fail_writes",
                &self.state.fail_writes.load(Ordering::SeqCst),
            )
            .field("disk_full", &self.state.disk_full.load(Ordering::SeqCst))
            .field("injected", &self.injected())
            .finish()
    }
}

impl FileFaults {
    /// A switch that is off: nothing fails until [`fail_writes`](Self::fail_writes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns write failures on or off.
    pub fn fail_writes(&self, on: bool) {
        self.state.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Makes writes fail as on a full disk (`ENOSPC`, "No space left on
    /// device"), or stops doing so. Independent of
    /// [`fail_writes`](Self::fail_writes), which takes precedence.
    pub fn fill_disk(&self, on: bool) {
        self.state.disk_full.store(on, Ordering::SeqCst);
    }

    /// Whether writes currently fail (for either switch).
    pub fn is_failing(&self) -> bool {
        self.state.fail_writes.load(Ordering::SeqCst) || self.state.disk_full.load(Ordering::SeqCst)
    }

    /// How many file operations failed because of this switch.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::SeqCst)
    }

    fn check(&self, what: &str) -> io::Result<()> {
        if self.state.fail_writes.load(Ordering::SeqCst) {
            self.state.injected.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other(format!("injected {what} failure")));
        }
        if self.state.disk_full.load(Ordering::SeqCst) {
            self.state.injected.fetch_add(1, Ordering::SeqCst);
            return Err(no_space());
        }
        Ok(())
    }
}

/// The error a write to a full disk gets from the operating system.
fn no_space() -> io::Error {
    // ENOSPC is 28 on every Unix this crate runs on; elsewhere only the kind
    // can be given.
    if cfg!(unix) {
        io::Error::from_raw_os_error(28)
    } else {
        io::Error::new(io::ErrorKind::StorageFull, "no space left on device")
    }
}

/// The engine's own file layer with the [`FileFaults`] switch in front of
/// every write and sync; everything else (reads, locks) is passed through.
pub(crate) struct FaultyFile {
    inner: FileBackend,
    faults: FileFaults,
}

impl fmt::Debug for FaultyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyFile")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl FaultyFile {
    pub(crate) fn new(file: File, faults: FileFaults) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check("resize")?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.faults.check("sync")?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check("write")?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
