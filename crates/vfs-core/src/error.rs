//! The crate's umbrella error: each operation has its own precise error
//! type, and a caller that does not care which one can use [`Error`].

use crate::file::VfsError;
use crate::format::FormatError;
use crate::kv::KvError;
use crate::registry::RegistryError;

/// Any error of this crate.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store call failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Stored bytes are malformed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A name could not be registered or a path resolved.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A file operation failed (SQLite code plus the store error behind it).
    #[error(transparent)]
    Vfs(#[from] VfsError),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
