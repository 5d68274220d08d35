//! Which store holds which file: SQLite opens files by path, the VFS needs a
//! store and a file tag.
//!
//! Resolution is by exact name only. Closing actor "1" must never touch
//! actor "10", and "db-journal" must mean the journal of "db" and nothing
//! else — so names that end in a sidecar suffix are refused at
//! registration, which makes every path resolve to at most one file.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::format::FileTag;
use crate::kv::KvStore;

/// Longest database name accepted, in bytes (SQLite paths must fit the
/// VFS's `mxPathname` with room for the longest suffix).
pub const MAX_NAME_LEN: usize = 256;

/// Why a name could not be registered or a path resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The path names no registered database or sidecar file of one.
    #[error("no registered database file named {0:?}")]
    Unknown(String),
    /// The name is already registered.
    #[error("database name {0:?} is already registered")]
    Duplicate(String),
    /// The name cannot be used as a database name.
    #[error("invalid database name {name:?}: {reason}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// A path resolved to its database, file and store.
#[derive(Clone)]
pub struct ResolvedFile {
    /// The registered database name (without suffix).
    pub db_name: Arc<str>,
    /// Which of the database's files the path names.
    pub tag: FileTag,
    /// The store holding the database's files.
    pub store: Arc<dyn KvStore>,
}

impl fmt::Debug for ResolvedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedFile")
            .field("db_name", &self.db_name)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Maps database names to their stores. Shared (`&self` methods, internal
/// lock) so the VFS callbacks and the code opening databases can use one
/// registry.
#[derive(Default)]
pub struct FileRegistry {
    files: RwLock<HashMap<Arc<str>, Arc<dyn KvStore>>>,
}

impl fmt::Debug for FileRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.files.read();
        let mut names: Vec<&str> = files.keys().map(|name| &**name).collect();
        names.sort_unstable();
        f.debug_struct("FileRegistry")
            .field("names", &names)
            .finish()
    }
}

/// Checks that `name` can be a database name: what every layer that names
/// a database accepts, checked here once. Refused: the empty name, names
/// over [`MAX_NAME_LEN`] bytes, NUL and other control characters, '/',
/// '?' and '#', URI filenames (`file:`), `":memory:"` (it never reaches a
/// VFS) and names ending in a sidecar suffix (`-journal`, `-wal`, `-shm`),
/// so that every path resolves to at most one file and no name can be read
/// as something other than a plain name.
pub fn validate_database_name(name: &str) -> Result<(), RegistryError> {
    let refuse = |reason| {
        Err(RegistryError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("longer than MAX_NAME_LEN bytes");
    }
    if name.contains('\0') {
        return refuse("contains NUL");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    if name.contains('/') {
        return refuse("contains '/'");
    }
    if name.contains('?') || name.contains('#') {
        return refuse("contains '?' or '#'");
    }
    if name.starts_with("file:") {
        return refuse("URI filenames are not allowed");
    }
    if name == ":memory:" {
        return refuse("\":memory:\" never reaches the VFS");
    }
    if FileTag::ALL
        .iter()
        .any(|tag| !tag.suffix().is_empty() && name.ends_with(tag.suffix()))
    {
        return refuse("ends with a sidecar suffix (-journal, -wal, -shm)");
    }
    Ok(())
}

impl FileRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers database `name` with its store. Refuses names
    /// [`validate_database_name`] refuses and names already registered.
    pub fn register(&self, name: &str, store: Arc<dyn KvStore>) -> Result<(), RegistryError> {
        validate_database_name(name)?;
        let mut files = self.files.write();
        if files.contains_key(name) {
            return Err(RegistryError::Duplicate(name.to_owned()));
        }
        files.insert(Arc::from(name), store);
        Ok(())
    }

    /// Removes database `name` (exact match); true if it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.files.write().remove(name).is_some()
    }

    /// Resolves a path SQLite opens: `"name"` is the main file of `name`,
    /// `"name-journal"`, `"name-wal"` and `"name-shm"` its sidecar files.
    /// Only exact matches count; anything else is [`RegistryError::Unknown`].
    pub fn resolve(&self, path: &str) -> Result<ResolvedFile, RegistryError> {
        let files = self.files.read();
        for tag in FileTag::ALL {
            let Some(base) = path.strip_suffix(tag.suffix()) else {
                continue;
            };
            if let Some((name, store)) = files.get_key_value(base) {
                return Ok(ResolvedFile {
                    db_name: Arc::clone(name),
                    tag,
                    store: Arc::clone(store),
                });
            }
        }
        Err(RegistryError::Unknown(path.to_owned()))
    }

    /// The store of database `name` (exact match, no sidecar suffix).
    pub fn store(&self, name: &str) -> Option<Arc<dyn KvStore>> {
        self.files.read().get(name).map(Arc::clone)
    }

    /// True if database `name` is registered (exact match).
    pub fn contains(&self, name: &str) -> bool {
        self.files.read().contains_key(name)
    }

    /// Number of registered databases.
    pub fn len(&self) -> usize {
        self.files.read().len()
    }

    /// True when no database is registered.
    pub fn is_empty(&self) -> bool {
        self.files.read().is_empty()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.files.read().keys().cloned().collect();
        names.sort_unstable();
        names
    }
}
