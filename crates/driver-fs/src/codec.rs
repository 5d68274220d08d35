//! How a value is laid out in the data file: with its longest run of zero
//! bytes cut out.
//!
//! The embedded engine stores data in 4 KiB pages, so a full 4 KiB SQLite
//! page plus its key does not fit in one and takes two: every value would
//! cost twice its size on disk. SQLite pages of tables that are not full
//! keep their free space as one gap of zeros between the cell pointers and
//! the cell content, so cutting that one run makes most pages small enough
//! to share engine pages, for the price of one scan per write.
//!
//! Layout (tag byte first):
//! - `0`, then the value as is;
//! - `1`, then the run's offset and length (u32 big-endian each), then the
//!   bytes before the run and the bytes after it.

/// Shortest zero run worth cutting out (the header costs 9 bytes).
const MIN_RUN: usize = 32;
const RAW: u8 = 0;
const ZERO_RUN: u8 = 1;
const HEADER: usize = 9;

/// The stored form of `value`.
pub(crate) fn encode(value: &[u8]) -> Vec<u8> {
    let (offset, len) = longest_zero_run(value);
    if len < MIN_RUN {
        let mut out = Vec::with_capacity(1 + value.len());
        out.push(RAW);
        out.extend_from_slice(value);
        return out;
    }
    let mut out = Vec::with_capacity(HEADER + value.len() - len);
    out.push(ZERO_RUN);
    out.extend_from_slice(&(offset as u32).to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&value[..offset]);
    out.extend_from_slice(&value[offset + len..]);
    out
}

/// Why a stored form cannot be decoded: the file was damaged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not even a tag byte.
    #[error("empty stored value")]
    Empty,
    /// A zero-run tag without its full header.
    #[error("truncated zero-run header")]
    TruncatedHeader,
    /// The run starts past the bytes that were kept.
    #[error("zero run at {offset} beyond the {stored} stored bytes")]
    RunBeyondEnd {
        /// Where the header says the run starts.
        offset: usize,
        /// Bytes kept around the run.
        stored: usize,
    },
    /// The header asks for a value larger than any the store accepts.
    #[error("decoded size {total} exceeds {max_len}")]
    TooLarge {
        /// The size the header asks for.
        total: usize,
        /// The largest value the store accepts.
        max_len: usize,
    },
    /// A tag this layout does not know.
    #[error("unknown value tag {0}")]
    UnknownTag(u8),
}

/// The value of a stored form; `max_len` bounds the decoded size so a
/// damaged header cannot ask for a huge allocation.
pub(crate) fn decode(stored: &[u8], max_len: usize) -> Result<Vec<u8>, DecodeError> {
    match stored.split_first() {
        None => Err(DecodeError::Empty),
        Some((&RAW, value)) => Ok(value.to_vec()),
        Some((&ZERO_RUN, rest)) => {
            let (header, kept) = rest
                .split_at_checked(HEADER - 1)
                .ok_or(DecodeError::TruncatedHeader)?;
            let offset = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if offset > kept.len() {
                return Err(DecodeError::RunBeyondEnd {
                    offset,
                    stored: kept.len(),
                });
            }
            let total = kept.len() + len;
            if total > max_len {
                return Err(DecodeError::TooLarge { total, max_len });
            }
            let mut value = Vec::with_capacity(total);
            value.extend_from_slice(&kept[..offset]);
            value.resize(offset + len, 0);
            value.extend_from_slice(&kept[offset..]);
            Ok(value)
        }
        Some((&tag, _)) => Err(DecodeError::UnknownTag(tag)),
    }
}

/// `(offset, length)` of the longest run of zero bytes (the first one on a
/// tie); length 0 when there is none.
fn longest_zero_run(value: &[u8]) -> (usize, usize) {
    let mut best = (0, 0);
    let mut start = None;
    for (i, &byte) in value.iter().enumerate() {
        if byte == 0 {
            start.get_or_insert(i);
        } else if let Some(s) = start.take()
            && i - s > best.1
        {
            best = (s, i - s);
        }
    }
    if let Some(s) = start
        && value.len() - s > best.1
    {
        best = (s, value.len() - s);
    }
    best
}
