//! SQLite's own vocabulary, with the values of `sqlite3.h`: result codes,
//! the limits, file-control and open-flag numbers the host passes to the
//! guest or reads back, and the database header's magic string.
//!
//! Every crate that speaks to SQLite takes its numbers from here, so each
//! is written down once. Only what the workspace uses is listed.

// Result codes.

/// `SQLITE_OK`: success.
pub const SQLITE_OK: i32 = 0;
/// `SQLITE_ERROR`: generic error.
pub const SQLITE_ERROR: i32 = 1;
/// `SQLITE_PERM`: access permission denied.
pub const SQLITE_PERM: i32 = 3;
/// `SQLITE_NOMEM`: an allocation failed.
pub const SQLITE_NOMEM: i32 = 7;
/// `SQLITE_IOERR`: some kind of I/O error.
pub const SQLITE_IOERR: i32 = 10;
/// `SQLITE_CORRUPT`: the stored data is malformed.
pub const SQLITE_CORRUPT: i32 = 11;
/// `SQLITE_NOTFOUND`: unknown opcode (e.g. an unsupported file control).
pub const SQLITE_NOTFOUND: i32 = 12;
/// `SQLITE_FULL`: the file cannot grow any further.
pub const SQLITE_FULL: i32 = 13;
/// `SQLITE_CANTOPEN`: unable to open the file.
pub const SQLITE_CANTOPEN: i32 = 14;
/// `SQLITE_TOOBIG`: string or blob exceeds the size limit.
pub const SQLITE_TOOBIG: i32 = 18;
/// `SQLITE_MISUSE`: library used incorrectly.
pub const SQLITE_MISUSE: i32 = 21;
/// `SQLITE_IOERR_READ`: a read failed.
pub const SQLITE_IOERR_READ: i32 = SQLITE_IOERR | (1 << 8);
/// `SQLITE_IOERR_SHORT_READ`: a read reached the end of the file; the
/// rest of the buffer was zero-filled.
pub const SQLITE_IOERR_SHORT_READ: i32 = SQLITE_IOERR | (2 << 8);
/// `SQLITE_IOERR_WRITE`: a write failed.
pub const SQLITE_IOERR_WRITE: i32 = SQLITE_IOERR | (3 << 8);
/// `SQLITE_IOERR_FSYNC`: a sync failed.
pub const SQLITE_IOERR_FSYNC: i32 = SQLITE_IOERR | (4 << 8);
/// `SQLITE_IOERR_TRUNCATE`: a truncate failed.
pub const SQLITE_IOERR_TRUNCATE: i32 = SQLITE_IOERR | (6 << 8);
/// `SQLITE_IOERR_FSTAT`: reading the file size failed.
pub const SQLITE_IOERR_FSTAT: i32 = SQLITE_IOERR | (7 << 8);
/// `SQLITE_IOERR_DELETE`: a delete failed.
pub const SQLITE_IOERR_DELETE: i32 = SQLITE_IOERR | (10 << 8);
/// `SQLITE_IOERR_ACCESS`: checking whether a file exists failed.
pub const SQLITE_IOERR_ACCESS: i32 = SQLITE_IOERR | (13 << 8);
/// `SQLITE_IOERR_DELETE_NOENT`: the file to delete does not exist.
pub const SQLITE_IOERR_DELETE_NOENT: i32 = SQLITE_IOERR | (23 << 8);
/// `SQLITE_IOERR_BEGIN_ATOMIC`: starting an atomic write batch failed.
pub const SQLITE_IOERR_BEGIN_ATOMIC: i32 = SQLITE_IOERR | (29 << 8);
/// `SQLITE_IOERR_COMMIT_ATOMIC`: committing an atomic write batch
/// failed; nothing of the batch was stored.
pub const SQLITE_IOERR_COMMIT_ATOMIC: i32 = SQLITE_IOERR | (30 << 8);
/// `SQLITE_IOERR_ROLLBACK_ATOMIC`: rolling back an atomic batch failed.
pub const SQLITE_IOERR_ROLLBACK_ATOMIC: i32 = SQLITE_IOERR | (31 << 8);
/// `SQLITE_INTERRUPT`: the statement was interrupted.
pub const SQLITE_INTERRUPT: i32 = 9;
/// `SQLITE_ROW`: `sqlite3_step` has another row ready.
pub const SQLITE_ROW: i32 = 100;
/// `SQLITE_DONE`: `sqlite3_step` has finished executing.
pub const SQLITE_DONE: i32 = 101;
/// `SQLITE_IOERR_NOMEM`: the VFS could not allocate memory.
pub const SQLITE_IOERR_NOMEM: i32 = SQLITE_IOERR | (12 << 8);

// Run-time limits (`sqlite3_limit` categories).

/// `SQLITE_LIMIT_LENGTH`: longest string or blob, in bytes.
pub const SQLITE_LIMIT_LENGTH: i32 = 0;
/// `SQLITE_LIMIT_SQL_LENGTH`: longest SQL text, in bytes.
pub const SQLITE_LIMIT_SQL_LENGTH: i32 = 1;
/// `SQLITE_LIMIT_LIKE_PATTERN_LENGTH`: longest LIKE or GLOB pattern.
pub const SQLITE_LIMIT_LIKE_PATTERN_LENGTH: i32 = 8;
/// `SQLITE_LIMIT_TRIGGER_DEPTH`: deepest trigger recursion.
pub const SQLITE_LIMIT_TRIGGER_DEPTH: i32 = 10;

// Fundamental datatypes (`sqlite3_column_type`).

/// `SQLITE_INTEGER`: a 64-bit signed integer.
pub const SQLITE_INTEGER: i32 = 1;
/// `SQLITE_FLOAT`: a 64-bit IEEE float.
pub const SQLITE_FLOAT: i32 = 2;
/// `SQLITE_TEXT`: a string.
pub const SQLITE_TEXT: i32 = 3;
/// `SQLITE_BLOB`: a blob.
pub const SQLITE_BLOB: i32 = 4;
/// `SQLITE_NULL`: NULL.
pub const SQLITE_NULL: i32 = 5;

// Prepare flags.

/// `SQLITE_PREPARE_PERSISTENT`: the statement will be kept and reused.
pub const SQLITE_PREPARE_PERSISTENT: i32 = 0x01;

// VFS flags and file controls.

/// `SQLITE_OPEN_CREATE`: `xOpen` may create the file.
pub const SQLITE_OPEN_CREATE: i32 = 0x0000_0004;
/// `SQLITE_FCNTL_BEGIN_ATOMIC_WRITE`: start an atomic write batch.
pub const SQLITE_FCNTL_BEGIN_ATOMIC_WRITE: i32 = 31;
/// `SQLITE_FCNTL_COMMIT_ATOMIC_WRITE`: commit the atomic write batch.
pub const SQLITE_FCNTL_COMMIT_ATOMIC_WRITE: i32 = 32;
/// `SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE`: abandon the atomic write batch.
pub const SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE: i32 = 33;

// The database file format.

/// The 16 bytes every SQLite database file starts with.
pub const HEADER_MAGIC: &[u8; 16] = b"SQLite format 3\0";
