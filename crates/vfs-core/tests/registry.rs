//! Exact-name resolution: releasing actor "1" must never touch actor "10",
//! and "db-journal" must only ever mean the journal of "db".

use std::sync::Arc;

use vfs_core::{FileRegistry, FileTag, KvStore, MemoryKv, RegistryError};

fn store() -> Arc<dyn KvStore> {
    Arc::new(MemoryKv::new())
}

#[test]
fn resolves_main_and_sidecars_by_exact_name() {
    let reg = FileRegistry::new();
    let s = store();
    reg.register("db", Arc::clone(&s)).unwrap();
    for tag in FileTag::ALL {
        let path = format!("db{}", tag.suffix());
        let resolved = reg.resolve(&path).unwrap();
        assert_eq!(&*resolved.db_name, "db");
        assert_eq!(resolved.tag, tag);
        assert!(Arc::ptr_eq(&resolved.store, &s));
    }
    for path in [
        "d",
        "db2",
        "xdb",
        "db-",
        "db-journalx",
        "db-wal-shm",
        "db-JOURNAL",
        "",
    ] {
        assert_eq!(
            reg.resolve(path).unwrap_err(),
            RegistryError::Unknown(path.to_owned())
        );
    }
}

#[test]
fn one_is_not_ten() {
    let reg = FileRegistry::new();
    let one = store();
    let ten = store();
    reg.register("1", Arc::clone(&one)).unwrap();
    reg.register("10", Arc::clone(&ten)).unwrap();
    assert!(Arc::ptr_eq(&reg.resolve("1").unwrap().store, &one));
    assert!(Arc::ptr_eq(&reg.resolve("10").unwrap().store, &ten));
    assert!(Arc::ptr_eq(&reg.resolve("10-wal").unwrap().store, &ten));
    assert!(reg.unregister("1"));
    assert!(!reg.unregister("1"), "second unregister is a no-op");
    assert!(reg.contains("10"));
    assert!(!reg.contains("1"));
    assert!(reg.resolve("1").is_err());
    assert!(reg.resolve("10").is_ok());
    assert_eq!(reg.len(), 1);
}

#[test]
fn sidecar_named_databases_are_refused() {
    let reg = FileRegistry::new();
    reg.register("a", store()).unwrap();
    for name in ["a-journal", "a-wal", "a-shm", "b-wal"] {
        let err = reg.register(name, store()).unwrap_err();
        assert!(
            matches!(err, RegistryError::InvalidName { .. }),
            "{name}: {err}"
        );
    }
    // So "a-journal" can only mean the journal of "a".
    assert_eq!(reg.resolve("a-journal").unwrap().tag, FileTag::Journal);
    // A suffix-like string inside a name is fine.
    reg.register("a-journal-x", store()).unwrap();
    assert_eq!(reg.resolve("a-journal-x").unwrap().tag, FileTag::Main);
    assert_eq!(reg.resolve("a-journal-x-wal").unwrap().tag, FileTag::Wal);
}

#[test]
fn bad_names_are_refused() {
    let reg = FileRegistry::new();
    let long = "x".repeat(vfs_core::MAX_NAME_LEN + 1);
    for name in [
        "",
        "a/b",
        "/abs",
        "nul\0byte",
        "tab\tname",
        ":memory:",
        "file:a.db",
        "a?mode=ro",
        "a#frag",
        long.as_str(),
    ] {
        let err = reg.register(name, store()).unwrap_err();
        assert!(
            matches!(err, RegistryError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    assert!(reg.is_empty());
    let max = "x".repeat(vfs_core::MAX_NAME_LEN);
    reg.register(&max, store()).unwrap();
}

#[test]
fn duplicates_are_refused_and_keep_the_first_store() {
    let reg = FileRegistry::new();
    let first = store();
    reg.register("db", Arc::clone(&first)).unwrap();
    assert_eq!(
        reg.register("db", store()).unwrap_err(),
        RegistryError::Duplicate("db".into())
    );
    assert!(Arc::ptr_eq(&reg.resolve("db").unwrap().store, &first));
    assert_eq!(reg.names().iter().map(|n| &**n).collect::<Vec<_>>(), ["db"]);
}
