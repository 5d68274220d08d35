//! The storage format: how a file's pages and size become keys and values.
//!
//! This is a persistent format — data written today must be readable by
//! every later release — so every key carries a schema version and the
//! metadata value a format version, and the exact bytes are pinned by
//! golden snapshots (`tests/format.rs`). Changing anything here needs a
//! migration and a new version number, never an edit in place.
//!
//! Decoding never trusts its input: malformed bytes give a [`FormatError`].

use bytes::{BufMut, Bytes, BytesMut};

/// Size of one page and of one stored chunk value, in bytes. SQLite is
/// configured with the same page size.
pub const PAGE_SIZE: usize = 4096;

/// Largest file size: the page index is a `u32`, so 2^32 pages of 4 KiB
/// (16 TiB). A page at index 2^32 or beyond cannot be addressed.
pub const MAX_FILE_SIZE: u64 = (PAGE_SIZE as u64) << 32;

/// First byte of every key, so the keys of this format are recognisable in
/// a store shared with other data.
pub const KEY_PREFIX: u8 = 0x53;

/// Second byte of every key: the version of the key layout.
pub const SCHEMA_VERSION: u8 = 1;

/// Key kind of a file's metadata (its size).
pub const KIND_META: u8 = 0x01;

/// Key kind of one page of a file.
pub const KIND_CHUNK: u8 = 0x02;

/// Length of a metadata key: prefix, version, kind, tag.
pub const META_KEY_LEN: usize = 4;

/// Length of a chunk key: prefix, version, kind, tag, page index (u32 BE).
pub const CHUNK_KEY_LEN: usize = 8;

/// First byte of an encoded [`FileMeta`].
pub const META_FORMAT_VERSION: u8 = 1;

/// Length of an encoded [`FileMeta`]: version byte + size as u64 BE.
pub const META_VALUE_LEN: usize = 9;

/// Which of a database's files a key belongs to. Its byte value is part of
/// the stored keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FileTag {
    /// The database file itself.
    Main = 0,
    /// The rollback journal (`<name>-journal`).
    Journal = 1,
    /// The write-ahead log (`<name>-wal`).
    Wal = 2,
    /// The WAL index (`<name>-shm`).
    Shm = 3,
}

impl FileTag {
    /// Every tag, in byte order.
    pub const ALL: [FileTag; 4] = [FileTag::Main, FileTag::Journal, FileTag::Wal, FileTag::Shm];

    /// The suffix SQLite appends to the database name for this file.
    pub const fn suffix(self) -> &'static str {
        match self {
            FileTag::Main => "",
            FileTag::Journal => "-journal",
            FileTag::Wal => "-wal",
            FileTag::Shm => "-shm",
        }
    }

    /// The byte stored in keys.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The tag stored as `byte`, if any.
    pub const fn from_u8(byte: u8) -> Option<FileTag> {
        match byte {
            0 => Some(FileTag::Main),
            1 => Some(FileTag::Journal),
            2 => Some(FileTag::Wal),
            3 => Some(FileTag::Shm),
            _ => None,
        }
    }
}

impl TryFrom<u8> for FileTag {
    type Error = FormatError;

    fn try_from(byte: u8) -> Result<Self, FormatError> {
        FileTag::from_u8(byte).ok_or(FormatError::UnknownTag(byte))
    }
}

/// Malformed stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A key is neither a metadata key nor a chunk key by length.
    #[error(
        "key of {0} bytes is neither a meta key ({META_KEY_LEN}) nor a chunk key ({CHUNK_KEY_LEN})"
    )]
    KeyLength(usize),
    /// A key does not start with [`KEY_PREFIX`].
    #[error("key prefix {0:#04x} is not {KEY_PREFIX:#04x}")]
    KeyPrefix(u8),
    /// A key was written by an unknown (newer) key layout.
    #[error("unsupported key schema version {0}")]
    SchemaVersion(u8),
    /// A key has an unknown kind byte, or a kind that does not match its length.
    #[error("unknown key kind {kind:#04x} for a key of {len} bytes")]
    KeyKind {
        /// The kind byte found.
        kind: u8,
        /// The key length.
        len: usize,
    },
    /// A key names an unknown file tag.
    #[error("unknown file tag {0}")]
    UnknownTag(u8),
    /// A metadata value has the wrong length.
    #[error("file metadata of {0} bytes, expected {META_VALUE_LEN}")]
    MetaLength(usize),
    /// A metadata value was written by an unknown (newer) format.
    #[error("unsupported file metadata version {0}")]
    MetaVersion(u8),
    /// A metadata value records a size above [`MAX_FILE_SIZE`].
    #[error("file size {0} exceeds the maximum of {MAX_FILE_SIZE}")]
    SizeTooLarge(u64),
    /// A stored page does not have [`PAGE_SIZE`] bytes.
    #[error("page {page} has {len} bytes, expected {PAGE_SIZE}")]
    ChunkLength {
        /// Index of the page.
        page: u32,
        /// Length found.
        len: usize,
    },
}

/// A decoded key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodedKey {
    /// The metadata of a file.
    Meta(FileTag),
    /// One page of a file.
    Chunk(FileTag, u32),
}

/// The key of page `page` of file `tag`.
pub fn chunk_key(tag: FileTag, page: u32) -> Bytes {
    let mut key = BytesMut::with_capacity(CHUNK_KEY_LEN);
    key.put_slice(&[KEY_PREFIX, SCHEMA_VERSION, KIND_CHUNK, tag.as_u8()]);
    key.put_u32(page);
    key.freeze()
}

/// The key of the metadata of file `tag`.
pub fn meta_key(tag: FileTag) -> Bytes {
    Bytes::copy_from_slice(&[KEY_PREFIX, SCHEMA_VERSION, KIND_META, tag.as_u8()])
}

/// Decodes a key written by [`chunk_key`] or [`meta_key`].
pub fn decode_key(key: &[u8]) -> Result<DecodedKey, FormatError> {
    if key.len() != META_KEY_LEN && key.len() != CHUNK_KEY_LEN {
        return Err(FormatError::KeyLength(key.len()));
    }
    if key[0] != KEY_PREFIX {
        return Err(FormatError::KeyPrefix(key[0]));
    }
    if key[1] != SCHEMA_VERSION {
        return Err(FormatError::SchemaVersion(key[1]));
    }
    let tag = FileTag::try_from(key[3])?;
    match (key[2], key.len()) {
        (KIND_META, META_KEY_LEN) => Ok(DecodedKey::Meta(tag)),
        (KIND_CHUNK, CHUNK_KEY_LEN) => {
            let page = u32::from_be_bytes([key[4], key[5], key[6], key[7]]);
            Ok(DecodedKey::Chunk(tag, page))
        }
        (kind, len) => Err(FormatError::KeyKind { kind, len }),
    }
}

/// The metadata stored for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// File size in bytes, at most [`MAX_FILE_SIZE`].
    pub size: u64,
}

impl FileMeta {
    /// Encodes as `[META_FORMAT_VERSION, size as u64 BE]`.
    pub fn encode(&self) -> Bytes {
        let mut value = BytesMut::with_capacity(META_VALUE_LEN);
        value.put_u8(META_FORMAT_VERSION);
        value.put_u64(self.size);
        value.freeze()
    }

    /// Decodes a value written by [`encode`](Self::encode).
    pub fn decode(value: &[u8]) -> Result<FileMeta, FormatError> {
        let Some((&version, rest)) = value.split_first() else {
            return Err(FormatError::MetaLength(0));
        };
        if version != META_FORMAT_VERSION {
            return Err(FormatError::MetaVersion(version));
        }
        let bytes: [u8; 8] = rest
            .try_into()
            .map_err(|_| FormatError::MetaLength(value.len()))?;
        let size = u64::from_be_bytes(bytes);
        if size > MAX_FILE_SIZE {
            return Err(FormatError::SizeTooLarge(size));
        }
        Ok(FileMeta { size })
    }
}
