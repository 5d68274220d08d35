//! The only module that touches guest memory.
//!
//! Guest pointers are plain `u32` offsets. Every access goes through
//! [`GuestMemory`], which checks `ptr + len` for overflow and against the
//! current memory size, and derives a fresh `MemoryView` from the store for
//! each access. A view is never stored or returned: wasmer's rule is that a
//! view must not be used after the memory grows, and the guest can grow its
//! memory during any call into it, so the safe API simply gives no way to
//! keep one across such a call. All functions return an error instead of
//! panicking on a bad pointer.

use wasmer::{AsStoreRef, Memory, MemoryAccessError};

/// A guest pointer or length that does not fit the guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest memory access out of bounds: {len} bytes at {ptr:#x}")]
pub(crate) struct OutOfBounds {
    /// Start offset in guest memory.
    pub ptr: u32,
    /// Length of the access.
    pub len: u64,
}

/// Longest C string read from the guest (SQLite messages and column names).
const MAX_CSTR: u32 = 64 * 1024;

/// Bounds-checked access to one instance's linear memory.
#[derive(Clone)]
pub(crate) struct GuestMemory {
    memory: Memory,
}

impl GuestMemory {
    /// Wraps the instance's memory.
    pub(crate) fn new(memory: Memory) -> Self {
        Self { memory }
    }

    /// Current size of the memory in bytes.
    pub(crate) fn size(&self, store: &impl AsStoreRef) -> u64 {
        self.memory.view(store).data_size()
    }

    fn check(&self, store: &impl AsStoreRef, ptr: u32, len: u64) -> Result<u64, OutOfBounds> {
        let err = OutOfBounds { ptr, len };
        let end = u64::from(ptr).checked_add(len).ok_or(err)?;
        if end > self.size(store) {
            return Err(err);
        }
        Ok(u64::from(ptr))
    }

    /// Copies `len` bytes at `ptr` out of the guest.
    pub(crate) fn read(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
        len: u32,
    ) -> Result<Vec<u8>, OutOfBounds> {
        let offset = self.check(store, ptr, u64::from(len))?;
        let mut buf = vec![0; len as usize];
        self.memory
            .view(store)
            .read(offset, &mut buf)
            .map_err(|_: MemoryAccessError| OutOfBounds {
                ptr,
                len: u64::from(len),
            })?;
        Ok(buf)
    }

    /// Reads `len` bytes at `ptr` as UTF-8 (lossy: SQLite text may hold
    /// invalid UTF-8, which must not become a host error).
    pub(crate) fn read_str(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
        len: u32,
    ) -> Result<String, OutOfBounds> {
        let bytes = self.read(store, ptr, len)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Reads a NUL-terminated string at `ptr` (at most 64 KiB).
    pub(crate) fn read_cstr(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
    ) -> Result<String, OutOfBounds> {
        let size = self.size(store);
        let avail = size.saturating_sub(u64::from(ptr)).min(u64::from(MAX_CSTR));
        let chunk = self.read(store, ptr, avail as u32)?;
        let end = chunk.iter().position(|&b| b == 0).ok_or(OutOfBounds {
            ptr,
            len: avail + 1,
        })?;
        Ok(String::from_utf8_lossy(&chunk[..end]).into_owned())
    }

    /// Copies `data` into the guest at `ptr`.
    pub(crate) fn write(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
        data: &[u8],
    ) -> Result<(), OutOfBounds> {
        let err = OutOfBounds {
            ptr,
            len: data.len() as u64,
        };
        let offset = self.check(store, ptr, data.len() as u64)?;
        self.memory
            .view(store)
            .write(offset, data)
            .map_err(|_: MemoryAccessError| err)
    }

    /// Reads a little-endian `u32` at `ptr`.
    pub(crate) fn read_u32(&self, store: &impl AsStoreRef, ptr: u32) -> Result<u32, OutOfBounds> {
        let bytes = self.read(store, ptr, 4)?;
        let mut raw = [0; 4];
        raw.copy_from_slice(&bytes);
        Ok(u32::from_le_bytes(raw))
    }

    /// Writes a little-endian `u32` at `ptr`.
    pub(crate) fn write_u32(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
        value: u32,
    ) -> Result<(), OutOfBounds> {
        self.write(store, ptr, &value.to_le_bytes())
    }

    /// Writes a little-endian `i64` at `ptr`.
    pub(crate) fn write_i64(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
        value: i64,
    ) -> Result<(), OutOfBounds> {
        self.write(store, ptr, &value.to_le_bytes())
    }
}
