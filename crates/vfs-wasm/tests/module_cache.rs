//! The compiled-module disk cache: a warm load skips compilation, and a
//! damaged or foreign cache file is never trusted but rebuilt.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfs_core::MemoryKv;
use vfs_wasm::{Instance, InstanceConfig, ModuleConfig, SqliteModule, Value};

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("cache dir exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
}

/// Proves a module is usable, wherever it came from.
fn runs_sql(module: &SqliteModule) {
    let mut inst = Instance::new(module, InstanceConfig::default()).unwrap();
    let db = inst.open("probe", Arc::new(MemoryKv::new())).unwrap();
    let rows = inst.query(db, "SELECT 6 * 7", &[]).unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(42)]]);
}

#[test]
fn a_cache_hit_skips_compilation() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModuleConfig {
        cache_dir: Some(dir.path().to_owned()),
    };
    let cold = SqliteModule::load(&config).unwrap();
    assert!(!cold.loaded_from_cache());
    let files = cache_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "one artifact, no temp files left: {files:?}"
    );

    let warm = SqliteModule::load(&config).unwrap();
    assert!(warm.loaded_from_cache());
    assert!(
        warm.load_time() * 4 < cold.load_time(),
        "deserializing ({:?}) should be far faster than compiling ({:?})",
        warm.load_time(),
        cold.load_time()
    );
    assert_eq!(cache_files(dir.path()), files);
    runs_sql(&warm);
}

#[test]
fn damaged_or_foreign_cache_files_are_ignored_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModuleConfig {
        cache_dir: Some(dir.path().to_owned()),
    };
    SqliteModule::load(&config).unwrap();
    let [file] = cache_files(dir.path()).try_into().expect("one cache file");
    let good = fs::read(&file).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x5a;
    let mut foreign_key = good.clone();
    foreign_key[12] ^= 0x01;
    let damaged: [(&str, Vec<u8>); 5] = [
        ("flipped byte in the artifact", flipped),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("header only", good[..40].to_vec()),
        ("key of another build", foreign_key),
        (
            "not a cache file",
            b"hello, I am definitely native code".to_vec(),
        ),
    ];
    for (what, bytes) in damaged {
        fs::write(&file, &bytes).unwrap();
        let module = SqliteModule::load(&config).unwrap();
        assert!(!module.loaded_from_cache(), "{what}: must recompile");
        runs_sql(&module);
        assert_eq!(fs::read(&file).unwrap(), good, "{what}: file rewritten");
        assert!(
            SqliteModule::load(&config).unwrap().loaded_from_cache(),
            "{what}"
        );
    }
}

#[test]
fn shared_module_is_loaded_once_per_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModuleConfig {
        cache_dir: Some(dir.path().to_owned()),
    };
    let first = SqliteModule::shared(&config).unwrap();
    let second = SqliteModule::shared(&config).unwrap();
    // The second call did not load again: same compile, same timing.
    assert_eq!(first.load_time(), second.load_time());
    assert!(!second.loaded_from_cache());
    runs_sql(&second);
}

/// A cache directory another user could write to is never read or written:
/// its files would become native code in this process.
#[cfg(unix)]
#[test]
fn a_cache_dir_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = ModuleConfig {
        cache_dir: Some(dir.path().to_owned()),
    };
    // A valid artifact, written while the directory was private...
    SqliteModule::load(&config).unwrap();
    assert_eq!(cache_files(dir.path()).len(), 1);
    // ...is ignored once the directory is open to everyone.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let module = SqliteModule::load(&config).unwrap();
    assert!(!module.loaded_from_cache());
    runs_sql(&module);

    // A new cache directory is created private to this user.
    let nested = dir.path().join("fresh").join("cache");
    let module = SqliteModule::load(&ModuleConfig {
        cache_dir: Some(nested.clone()),
    })
    .unwrap();
    assert!(!module.loaded_from_cache());
    let mode = fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(cache_files(&nested).len(), 1);
}
