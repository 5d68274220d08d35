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

/// A pointer into guest memory, as the guest hands it over or the host
/// allocates it: a `u32` offset that only [`GuestMemory`] dereferences, and
/// a type of its own so it cannot be confused with a connection, a
/// statement or a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestPtr(u32);

impl GuestPtr {
    /// Wraps an offset the guest returned.
    pub(crate) fn new(offset: u32) -> Self {
        Self(offset)
    }

    /// The offset, to pass to the guest or to [`GuestMemory`].
    pub(crate) fn get(self) -> u32 {
        self.0
    }

    /// True for the guest's NULL.
    pub(crate) fn is_null(self) -> bool {
        self.0 == 0
    }

    /// The pointer `bytes` further on. Only used inside an allocation the
    /// host made, so it stays in bounds (and every access is checked anyway).
    pub(crate) fn add(self, bytes: u32) -> Self {
        Self(self.0 + bytes)
    }
}

/// Longest C string read from the guest (SQLite messages and column
/// names); a longer one is cut and ends with [`TRUNCATED`]. SQL text is at
/// most 1 MiB, so only a name or message built from a huge value is cut.
const MAX_CSTR: u64 = 1 << 20;
/// First chunk read when looking for a C string's end: most are short.
const CSTR_CHUNK: u64 = 256;
/// Marks a C string cut at [`MAX_CSTR`] bytes.
pub(crate) const TRUNCATED: &str = "…[truncated]";

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
        // Checked before anything is allocated: `len` may come from a
        // guest that cannot be trusted.
        self.check(store, ptr, u64::from(len))?;
        let mut buf = vec![0; len as usize];
        self.read_into(store, ptr, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the bytes at `ptr`.
    pub(crate) fn read_into(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
        buf: &mut [u8],
    ) -> Result<(), OutOfBounds> {
        let err = OutOfBounds {
            ptr,
            len: buf.len() as u64,
        };
        // The view checks the bounds itself, against the memory's current
        // size.
        self.memory
            .view(store)
            .read(u64::from(ptr), buf)
            .map_err(|_: MemoryAccessError| err)
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

    /// Reads a NUL-terminated string at `ptr`, lossily as UTF-8. Reads
    /// grow from a small chunk, so a short string costs a short copy. A
    /// string longer than 1 MiB is cut there and marked with [`TRUNCATED`];
    /// one that runs off the end of memory is an error.
    pub(crate) fn read_cstr(
        &self,
        store: &impl AsStoreRef,
        ptr: u32,
    ) -> Result<String, OutOfBounds> {
        let avail = self.size(store).saturating_sub(u64::from(ptr));
        let mut bytes = Vec::new();
        let mut chunk = CSTR_CHUNK;
        loop {
            let start = bytes.len() as u64;
            let want = chunk.min(avail - start).min(MAX_CSTR - start);
            if want == 0 {
                if start >= MAX_CSTR {
                    let mut text = String::from_utf8_lossy(&bytes).into_owned();
                    text.push_str(TRUNCATED);
                    return Ok(text);
                }
                return Err(OutOfBounds {
                    ptr,
                    len: avail + 1,
                });
            }
            let part = self.read(store, ptr + start as u32, want as u32)?;
            if let Some(end) = part.iter().position(|&b| b == 0) {
                bytes.extend_from_slice(&part[..end]);
                return Ok(String::from_utf8_lossy(&bytes).into_owned());
            }
            bytes.extend_from_slice(&part);
            chunk *= 2;
        }
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
}
