//! The per-database policy of a VFS that serves several databases at once:
//! which files the calling database may open, who owns an open file,
//! which databases are poisoned, and what is known about sidecar files
//! without asking the store.
//!
//! Why here and not next to the guest: these rules are what keeps one
//! tenant out of another's files, so they are plain Rust that a test (or
//! a fuzzer) drives directly, with no WebAssembly around it. The host that
//! serves SQLite's `xOpen`, `xRead`, ... only translates pointers and
//! result codes, and bounds each store call in time.

use std::collections::HashMap;
use std::sync::Arc;

use crate::file::{KvFile, VfsError};
use crate::format::FileTag;
use crate::registry::{FileRegistry, ResolvedFile};
use crate::sqlite;

/// Why a database was poisoned.
#[derive(Debug, Clone)]
pub struct Poison {
    /// What happened first, in words, the store's own message included.
    pub reason: String,
    /// The failure itself when a store error is behind it (an
    /// [`KvError::OutcomeUnknown`](crate::KvError::OutcomeUnknown)): the
    /// call that met it hands it to its caller intact.
    pub cause: Option<VfsError>,
}

struct OpenFile {
    /// The database that opened the file.
    owner: Arc<str>,
    file: KvFile,
}

/// The files of the registered databases, served to one calling database
/// at a time.
///
/// The host sets the caller ([`KvVfs::set_caller`]) before it lets SQLite
/// run for a database and clears it afterwards. In between, a name
/// resolves only if it is a file of that database, and an open file is
/// usable only by the database that opened it. A database that is
/// [poisoned](KvVfs::poison) refuses both until it is
/// [forgotten](KvVfs::forget).
pub struct KvVfs {
    registry: FileRegistry,
    caller: Option<Arc<str>>,
    files: HashMap<u32, OpenFile>,
    next_file: u32,
    page1: Option<Arc<[u8]>>,
    poisoned: HashMap<Arc<str>, Poison>,
    /// Whether a database's journal or WAL exists, as far as this VFS
    /// knows without asking the store: learned when the main file opens
    /// (probed in the same call) or deletes a sidecar, forgotten whenever the
    /// sidecar is opened (it may then be written). Every change to a
    /// database's files goes through this VFS, so a known answer is exact,
    /// and SQLite's hot-journal checks cost no round trip.
    sidecars: HashMap<(Arc<str>, FileTag), bool>,
}

impl Default for KvVfs {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for KvVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvVfs")
            .field("caller", &self.caller)
            .field("open_files", &self.files.len())
            .field("poisoned", &self.poisoned.len())
            .finish_non_exhaustive()
    }
}

impl KvVfs {
    /// A VFS with no database and nobody calling.
    pub fn new() -> Self {
        Self {
            registry: FileRegistry::new(),
            caller: None,
            files: HashMap::new(),
            next_file: 1,
            page1: None,
            poisoned: HashMap::new(),
            sidecars: HashMap::new(),
        }
    }

    /// The databases this VFS serves.
    pub fn registry(&self) -> &FileRegistry {
        &self.registry
    }

    /// The database SQLite runs for from now on; `None` refuses every file.
    pub fn set_caller(&mut self, db: Option<Arc<str>>) {
        self.caller = db;
    }

    /// The database SQLite runs for, if any.
    pub fn caller(&self) -> Option<&Arc<str>> {
        self.caller.as_ref()
    }

    /// Page 1 of an empty database, stored with every main file this VFS
    /// creates (see [`KvFile::open`]).
    pub fn page1(&self) -> Option<&Arc<[u8]>> {
        self.page1.as_ref()
    }

    /// Sets the page 1 new main files start with.
    pub fn set_page1(&mut self, page: Arc<[u8]>) {
        self.page1 = Some(page);
    }

    /// Resolves `name` for the caller, refusing (`SQLITE_CANTOPEN`) every
    /// name that is not a file of the calling database, and every file of
    /// a poisoned one.
    pub fn resolve(&self, name: &str) -> Result<ResolvedFile, VfsError> {
        let Some(me) = &self.caller else {
            return Err(VfsError::new(
                sqlite::SQLITE_CANTOPEN,
                format!("refused to open {name:?}: no database is running"),
            ));
        };
        let refused = || {
            VfsError::new(
                sqlite::SQLITE_CANTOPEN,
                format!("refused to open {name:?}: not a file of this database"),
            )
        };
        let resolved = self.registry.resolve(name).map_err(|_| refused())?;
        if *resolved.db_name != **me {
            return Err(refused());
        }
        self.check_not_poisoned(me)?;
        Ok(resolved)
    }

    /// Opens the resolved file (a created main file starts with
    /// [`KvVfs::page1`]) and learns from it whether the database's
    /// sidecars exist. Add it with [`KvVfs::add_file`] to use it.
    pub async fn open(&mut self, file: &ResolvedFile, create: bool) -> Result<KvFile, VfsError> {
        let seed = if file.tag == FileTag::Main {
            self.page1.clone()
        } else {
            None
        };
        // Forget first: even a failed open may have created the file.
        self.sidecars.remove(&(Arc::clone(&file.db_name), file.tag));
        let opened =
            KvFile::open(Arc::clone(&file.store), file.tag, create, seed.as_deref()).await?;
        for sidecar in [FileTag::Journal, FileTag::Wal] {
            if let Some(exists) = opened.sidecar_existed_at_open(sidecar) {
                self.sidecars
                    .insert((Arc::clone(&file.db_name), sidecar), exists);
            }
        }
        Ok(opened)
    }

    /// The id [`KvVfs::add_file`] gives the next file.
    pub fn next_file_id(&self) -> u32 {
        self.next_file
    }

    /// Adds a file `owner` opened; returns its id ([`KvVfs::next_file_id`]).
    pub fn add_file(&mut self, owner: Arc<str>, file: KvFile) -> u32 {
        let id = self.next_file;
        self.next_file = self.next_file.wrapping_add(1).max(1);
        self.files.insert(id, OpenFile { owner, file });
        id
    }

    /// The open file `id`, if the caller owns it (`SQLITE_MISUSE`
    /// otherwise) and is not poisoned.
    pub fn file(&mut self, id: u32) -> Result<&mut KvFile, VfsError> {
        let Some(me) = &self.caller else {
            return Err(VfsError::new(
                sqlite::SQLITE_MISUSE,
                "file used outside a call",
            ));
        };
        self.check_not_poisoned(me)?;
        match self.files.get_mut(&id) {
            Some(f) if f.owner == *me => Ok(&mut f.file),
            _ => Err(VfsError::new(
                sqlite::SQLITE_MISUSE,
                format!("file id {id} is not open for this database"),
            )),
        }
    }

    /// Closes the caller's file `id`.
    pub fn close(&mut self, id: u32) -> Result<(), VfsError> {
        self.file(id)?;
        self.files.remove(&id);
        Ok(())
    }

    /// Deletes the resolved file from its store. A file found missing is
    /// still an error (`SQLITE_IOERR_DELETE_NOENT`), but then known not to
    /// exist.
    pub async fn delete(&mut self, file: &ResolvedFile) -> Result<(), VfsError> {
        let key = (Arc::clone(&file.db_name), file.tag);
        self.sidecars.remove(&key);
        match KvFile::delete(&file.store, file.tag).await {
            Ok(()) => {
                self.sidecars.insert(key, false);
                Ok(())
            }
            Err(e) => {
                if e.code() == sqlite::SQLITE_IOERR_DELETE_NOENT {
                    self.sidecars.insert(key, false);
                }
                Err(e)
            }
        }
    }

    /// Whether the resolved file exists: known without a store call for a
    /// sidecar whose state this VFS has learned.
    pub async fn exists(&self, file: &ResolvedFile) -> Result<bool, VfsError> {
        match self.sidecars.get(&(Arc::clone(&file.db_name), file.tag)) {
            Some(known) => Ok(*known),
            None => KvFile::exists(&file.store, file.tag).await,
        }
    }

    /// Drops the page images the files of database `db` keep (read ahead,
    /// or last written; see [`KvFile::drop_prefetch`]): memory given back
    /// when the database goes idle. Its next reads fetch from the store.
    pub fn drop_cached_pages(&mut self, db: &str) {
        for open in self.files.values_mut().filter(|f| &*f.owner == db) {
            open.file.drop_prefetch();
        }
    }

    /// Marks the calling database unusable until it is forgotten: its
    /// store may hold something other than SQLite believes. The first
    /// reason is kept.
    pub fn poison(&mut self, reason: String, cause: Option<VfsError>) {
        if let Some(me) = &self.caller {
            self.poisoned
                .entry(Arc::clone(me))
                .or_insert(Poison { reason, cause });
        }
    }

    /// Why database `db` is poisoned, if it is.
    pub fn poisoned(&self, db: &str) -> Option<&Poison> {
        self.poisoned.get(db)
    }

    /// Forgets everything about database `db` except its registration:
    /// files it left open (none in normal operation), what is known about
    /// its sidecars, and its poisoning.
    pub fn forget(&mut self, db: &str) {
        self.files.retain(|_, f| &*f.owner != db);
        self.sidecars.retain(|(name, _), _| &**name != db);
        self.poisoned.remove(db);
    }

    /// Refuses every file operation of a poisoned database.
    fn check_not_poisoned(&self, db: &str) -> Result<(), VfsError> {
        match self.poisoned.get(db) {
            Some(poison) => Err(VfsError::new(
                sqlite::SQLITE_IOERR,
                format!("database poisoned until it is reopened: {}", poison.reason),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::{CountingKv, KvStore, MemoryKv};

    fn vfs_with(names: &[&str]) -> KvVfs {
        let vfs = KvVfs::new();
        for name in names {
            vfs.registry()
                .register(name, Arc::new(MemoryKv::new()))
                .unwrap();
        }
        vfs
    }

    fn open(vfs: &mut KvVfs, name: &str) -> u32 {
        let resolved = vfs.resolve(name).unwrap();
        let file = block_on(vfs.open(&resolved, true)).unwrap();
        vfs.add_file(resolved.db_name, file)
    }

    #[test]
    fn a_caller_resolves_only_its_own_files() {
        let mut vfs = vfs_with(&["1", "10"]);
        let refused = |vfs: &KvVfs, name| vfs.resolve(name).unwrap_err().code();
        assert_eq!(refused(&vfs, "1"), sqlite::SQLITE_CANTOPEN);
        vfs.set_caller(Some(Arc::from("1")));
        assert_eq!(vfs.resolve("1").unwrap().tag, FileTag::Main);
        assert_eq!(vfs.resolve("1-journal").unwrap().tag, FileTag::Journal);
        assert_eq!(refused(&vfs, "10"), sqlite::SQLITE_CANTOPEN);
        assert_eq!(refused(&vfs, "10-journal"), sqlite::SQLITE_CANTOPEN);
        assert_eq!(refused(&vfs, "2"), sqlite::SQLITE_CANTOPEN);
    }

    #[test]
    fn an_open_file_serves_only_the_database_that_opened_it() {
        let mut vfs = vfs_with(&["a", "b"]);
        vfs.set_caller(Some(Arc::from("a")));
        let id = open(&mut vfs, "a");
        assert!(vfs.file(id).is_ok());
        vfs.set_caller(Some(Arc::from("b")));
        assert_eq!(vfs.file(id).unwrap_err().code(), sqlite::SQLITE_MISUSE);
        assert_eq!(vfs.close(id).unwrap_err().code(), sqlite::SQLITE_MISUSE);
        vfs.set_caller(None);
        assert_eq!(vfs.file(id).unwrap_err().code(), sqlite::SQLITE_MISUSE);
        vfs.set_caller(Some(Arc::from("a")));
        vfs.close(id).unwrap();
        assert_eq!(vfs.file(id).unwrap_err().code(), sqlite::SQLITE_MISUSE);
    }

    #[test]
    fn a_poisoned_database_refuses_everything_until_it_is_forgotten() {
        let mut vfs = vfs_with(&["a", "b"]);
        vfs.set_caller(Some(Arc::from("a")));
        let id = open(&mut vfs, "a");
        vfs.poison("the store panicked".into(), None);
        vfs.poison("a later reason".into(), None);
        assert_eq!(vfs.poisoned("a").unwrap().reason, "the store panicked");
        assert_eq!(vfs.file(id).unwrap_err().code(), sqlite::SQLITE_IOERR);
        assert_eq!(vfs.resolve("a").unwrap_err().code(), sqlite::SQLITE_IOERR);
        vfs.set_caller(Some(Arc::from("b")));
        assert!(vfs.poisoned("b").is_none());
        open(&mut vfs, "b");
        vfs.forget("a");
        vfs.set_caller(Some(Arc::from("a")));
        assert!(vfs.poisoned("a").is_none());
        // Its files are gone with it.
        assert_eq!(vfs.file(id).unwrap_err().code(), sqlite::SQLITE_MISUSE);
        assert!(vfs.resolve("a").is_ok());
    }

    #[test]
    fn what_is_known_about_a_sidecar_costs_no_store_call() {
        let counting = Arc::new(CountingKv::new(Arc::new(MemoryKv::new())));
        let mut vfs = KvVfs::new();
        vfs.registry()
            .register("a", Arc::clone(&counting) as Arc<dyn KvStore>)
            .unwrap();
        vfs.set_caller(Some(Arc::from("a")));
        open(&mut vfs, "a");
        let journal = vfs.resolve("a-journal").unwrap();
        let before = counting.total();
        assert!(!block_on(vfs.exists(&journal)).unwrap());
        assert_eq!(
            counting.total(),
            before,
            "learned when the main file opened"
        );
        // Opened, the journal may be written: the VFS asks the store again.
        let file = block_on(vfs.open(&journal, true)).unwrap();
        vfs.add_file(Arc::from("a"), file);
        let before = counting.total();
        assert!(!block_on(vfs.exists(&journal)).unwrap());
        assert!(counting.total() > before);
        // A delete, even of a missing file, teaches it again.
        let missing = block_on(vfs.delete(&journal)).unwrap_err();
        assert_eq!(missing.code(), sqlite::SQLITE_IOERR_DELETE_NOENT);
        let before = counting.total();
        assert!(!block_on(vfs.exists(&journal)).unwrap());
        assert_eq!(counting.total(), before);
    }
}
