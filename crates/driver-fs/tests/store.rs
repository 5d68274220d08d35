//! Store-level tests of `FsStorage` through its public API: the key-value
//! contract per actor, namespaces, limits, group commit, deletion, reopen,
//! and every way opening a data directory can fail.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use driver_fs::{
    DATA_FILE, Error, FileFaults, FsOptions, FsStorage, MAX_BATCH_KEYS, MAX_VALUE_BYTES,
};
use vfs_pool::testing::report;
use vfs_pool::{ActorStorage, KvError};

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn page(seed: u32) -> Bytes {
    let mut v = vec![0u8; 4096];
    for (i, byte) in v.iter_mut().enumerate() {
        *byte = (seed as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    Bytes::from(v)
}

/// Pages 0 to `count - 1`, each under its number (big-endian) as the key.
fn pages(count: u32) -> Vec<(Bytes, Bytes)> {
    (0..count)
        .map(|i| (Bytes::copy_from_slice(&i.to_be_bytes()), page(i)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("actor-a").await.unwrap();
    kv.put_batch(&[(b(b"k1"), b(b"v1")), (b(b"k2"), page(2))])
        .await
        .unwrap();
    let got = kv
        .get_batch(&[b(b"k2"), b(b"missing"), b(b"k1")])
        .await
        .unwrap();
    assert_eq!(got, vec![Some(page(2)), None, Some(b(b"v1"))]);

    kv.put_batch(&[(b(b"k1"), b(b"v1-new"))]).await.unwrap();
    kv.delete_batch(&[b(b"k2"), b(b"never-existed")])
        .await
        .unwrap();
    let got = kv.get_batch(&[b(b"k1"), b(b"k2")]).await.unwrap();
    assert_eq!(got, vec![Some(b(b"v1-new")), None]);
    assert_eq!(storage.list_actors().await.unwrap(), vec!["actor-a"]);
    storage.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("a").await.unwrap();
    let limits = kv.limits();
    assert_eq!(limits.max_batch_keys, MAX_BATCH_KEYS);
    assert!(limits.max_value_bytes >= 4096 + 64);
    assert!(limits.max_batch_keys >= 4096);

    let too_big = vec![0u8; MAX_VALUE_BYTES + 1];
    let err = kv
        .put_batch(&[(b(b"ok"), b(b"v")), (b(b"big"), Bytes::from(too_big))])
        .await
        .unwrap_err();
    assert!(matches!(err, KvError::ValueTooLarge { .. }), "{err}");
    let too_many: Vec<(Bytes, Bytes)> = (0..=MAX_BATCH_KEYS as u32)
        .map(|i| (Bytes::copy_from_slice(&i.to_be_bytes()), b(b"x")))
        .collect();
    let err = kv.put_batch(&too_many).await.unwrap_err();
    assert!(matches!(err, KvError::BatchTooLarge { .. }), "{err}");
    let keys: Vec<Bytes> = too_many.iter().map(|(k, _)| k.clone()).collect();
    assert!(matches!(
        kv.get_batch(&keys).await.unwrap_err(),
        KvError::BatchTooLarge { .. }
    ));
    assert!(matches!(
        kv.delete_batch(&keys).await.unwrap_err(),
        KvError::BatchTooLarge { .. }
    ));
    // Nothing of the refused batches was applied, and nothing was committed.
    assert_eq!(kv.get_batch(&[b(b"ok")]).await.unwrap(), vec![None]);
    assert_eq!(storage.stats().write_transactions, 0);
    assert!(storage.list_actors().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_of_pages_commits_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("big").await.unwrap();
    // 4096 pages = 16 MiB, far beyond a journal-sized batch.
    let entries = pages(4096);
    kv.put_batch(&entries).await.unwrap();
    let stats = storage.stats();
    assert_eq!(stats.write_transactions, 1);
    assert_eq!(stats.put_batches, 1);
    assert_eq!(stats.entries_written, 4096);
    let keys: Vec<Bytes> = entries.iter().map(|(k, _)| k.clone()).collect();
    let got = kv.get_batch(&keys).await.unwrap();
    assert!(
        got.iter()
            .zip(&entries)
            .all(|(got, (_, want))| got.as_ref() == Some(want))
    );
    assert_eq!(storage.stats().get_batches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_transactions() {
    const ACTORS: usize = 100;
    const COMMITS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FsStorage::open(dir.path()).unwrap());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for a in 0..ACTORS {
        let kv = storage.open_actor(&format!("actor-{a}")).await.unwrap();
        tasks.push(tokio::spawn(async move {
            for c in 0..COMMITS {
                kv.put_batch(&[
                    (b(b"meta"), Bytes::from(format!("{a}-{c}"))),
                    (Bytes::from(format!("page-{c}")), page(c as u32)),
                ])
                .await
                .unwrap();
            }
            kv
        }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let stats = storage.stats();
    let commits = (ACTORS * COMMITS) as u64;
    eprintln!(
        "{commits} durable commits in {elapsed:?} ({:.0}/s) using {} transactions",
        f64::from(u32::try_from(commits).unwrap()) / elapsed.as_secs_f64(),
        stats.write_transactions
    );
    assert_eq!(stats.put_batches, commits);
    assert_eq!(stats.batches_committed, commits);
    assert!(
        stats.write_transactions < commits,
        "group commit should share transactions: {stats:?}"
    );
    assert!(stats.largest_group > 1, "{stats:?}");
    for (a, kv) in stores.iter().enumerate() {
        let got = kv
            .get_batch(&[b(b"meta"), b(b"page-4"), b(b"page-0")])
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Some(Bytes::from(format!("{a}-{}", COMMITS - 1))),
                Some(page(4)),
                Some(page(0))
            ]
        );
    }
    assert_eq!(storage.list_actors().await.unwrap().len(), ACTORS);
}

/// Ids that are prefixes of each other, or differ only after a NUL, must not
/// share keys, and deleting one must leave every other intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_actor_removes_its_keys_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let ids = ["a", "a\0", "a\0b", "a\u{1}", "ab", "", "b", "a/b", "../a"];
    for id in ids {
        let kv = storage.open_actor(id).await.unwrap();
        let entries: Vec<(Bytes, Bytes)> = (0..50u32)
            .map(|i| {
                (
                    Bytes::copy_from_slice(&i.to_be_bytes()),
                    Bytes::from(format!("{id}:{i}")),
                )
            })
            .collect();
        kv.put_batch(&entries).await.unwrap();
        kv.put_batch(&[(Bytes::new(), b(b"empty key"))])
            .await
            .unwrap();
    }
    let mut sorted: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    sorted.sort();
    assert_eq!(storage.list_actors().await.unwrap(), sorted);

    storage.delete_actor("a").await.unwrap();
    let keys: Vec<Bytes> = (0..50u32)
        .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
        .chain([Bytes::new()])
        .collect();
    let gone = storage.open_actor("a").await.unwrap();
    assert!(
        gone.get_batch(&keys)
            .await
            .unwrap()
            .iter()
            .all(Option::is_none)
    );
    for id in ids.iter().filter(|id| **id != "a") {
        let kv = storage.open_actor(id).await.unwrap();
        let got = kv.get_batch(&keys).await.unwrap();
        for (i, value) in got.iter().take(50).enumerate() {
            assert_eq!(
                value,
                &Some(Bytes::from(format!("{id}:{i}"))),
                "actor {id:?}"
            );
        }
        assert_eq!(got[50], Some(b(b"empty key")));
    }
    sorted.retain(|s| s != "a");
    assert_eq!(storage.list_actors().await.unwrap(), sorted);

    // Deleting an unknown actor is not an error; a deleted actor can write again.
    storage.delete_actor("never-existed").await.unwrap();
    gone.put_batch(&[(b(b"k"), b(b"again"))]).await.unwrap();
    assert_eq!(
        gone.get_batch(&[b(b"k")]).await.unwrap(),
        vec![Some(b(b"again"))]
    );
    assert!(
        storage
            .list_actors()
            .await
            .unwrap()
            .contains(&"a".to_owned())
    );
}

/// Actor ids are data: whatever they contain, only the data file appears in
/// the directory and nothing outside it is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_actor_ids_stay_inside_the_data_file() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let storage = FsStorage::open(&dir).unwrap();
    let long = "x".repeat(256);
    let longer = "y/".repeat(5000);
    let ids = [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "nul\0inside",
        "\0",
        "",
        long.as_str(),
        longer.as_str(),
        "..",
        ".",
        "ünïcødé/✓",
    ];
    for id in ids {
        let kv = storage.open_actor(id).await.unwrap();
        kv.put_batch(&[(b(b"k"), Bytes::from(id.to_owned()))])
            .await
            .unwrap();
        assert_eq!(
            kv.get_batch(&[b(b"k")]).await.unwrap(),
            vec![Some(Bytes::from(id.to_owned()))]
        );
    }
    assert_eq!(storage.list_actors().await.unwrap().len(), ids.len());
    for id in ids {
        storage.delete_actor(id).await.unwrap();
    }
    assert!(storage.list_actors().await.unwrap().is_empty());
    storage.close().await;

    let names = |p: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&dir), vec![DATA_FILE.to_owned()]);
    assert_eq!(names(parent.path()), vec!["data".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = FsStorage::open(dir.path()).unwrap();
        let kv = storage.open_actor("persist").await.unwrap();
        kv.put_batch(&[(b(b"k"), page(7)), (b(b"gone"), b(b"x"))])
            .await
            .unwrap();
        kv.delete_batch(&[b(b"gone")]).await.unwrap();
        storage.close().await;
        // Closed: every call fails clearly, close stays idempotent.
        assert!(storage.is_closed());
        assert!(storage.open_actor("persist").await.is_err());
        assert!(kv.get_batch(&[b(b"k")]).await.is_err());
        assert!(kv.put_batch(&[(b(b"k"), b(b"v"))]).await.is_err());
        assert!(storage.list_actors().await.is_err());
        storage.close().await;
    }
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("persist").await.unwrap();
    assert_eq!(
        kv.get_batch(&[b(b"k"), b(b"gone")]).await.unwrap(),
        vec![Some(page(7)), None]
    );
    assert_eq!(storage.list_actors().await.unwrap(), vec!["persist"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_storage_releases_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("x").await.unwrap();
    kv.put_batch(&[(b(b"k"), b(b"v"))]).await.unwrap();
    drop(storage);
    // The actor's store outlives the storage but no longer works.
    assert!(kv.put_batch(&[(b(b"k"), b(b"w"))]).await.is_err());
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("x").await.unwrap();
    assert_eq!(kv.get_batch(&[b(b"k")]).await.unwrap(), vec![Some(b(b"v"))]);
}

#[test]
fn second_open_in_the_same_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = FsStorage::open(dir.path()).unwrap();
    let err = FsStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains(DATA_FILE), "{err}");
    drop(first);
    FsStorage::open(dir.path()).unwrap();
}

#[test]
fn missing_dir_is_a_clear_error() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("does-not-exist");
    let err = FsStorage::open(&missing).unwrap_err();
    assert!(matches!(err, Error::MissingDir { .. }), "{err}");
    assert!(err.to_string().contains("does-not-exist"));
    // Not created behind the user's back.
    assert!(!missing.exists());
}

#[test]
fn a_file_is_not_a_data_dir() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("plain-file");
    std::fs::write(&file, b"hello").unwrap();
    let err = FsStorage::open(&file).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");
}

/// `/proc` exists and is a directory, but nobody (not even root) can create
/// a file in it.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_dir_is_a_clear_error() {
    let err = FsStorage::open("/proc").unwrap_err();
    assert!(matches!(err, Error::Unwritable { .. }), "{err}");
}

#[test]
fn data_file_that_is_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(DATA_FILE)).unwrap();
    let err = FsStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Unwritable { .. }), "{err}");
}

#[test]
fn garbage_data_file_is_reported_as_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let mut garbage = vec![0u8; 64 * 1024];
    let mut x: u32 = 0x9e37_79b9;
    for byte in &mut garbage {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    std::fs::write(dir.path().join(DATA_FILE), &garbage).unwrap();
    let err = FsStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    // The damaged file is left as it was for inspection.
    assert_eq!(std::fs::read(dir.path().join(DATA_FILE)).unwrap(), garbage);
}

/// A real data file with its pages overwritten in the middle (the header
/// intact) must fail at open, not at some later read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pages_are_detected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = FsStorage::open(dir.path()).unwrap();
        let kv = storage.open_actor("victim").await.unwrap();
        let entries = pages(512);
        kv.put_batch(&entries).await.unwrap();
        storage.close().await;
    }
    let path = dir.path().join(DATA_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    assert!(len > 1024 * 1024, "file of {len} bytes");
    for byte in &mut bytes[len / 4..len / 2] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = FsStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_layout_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATA_FILE);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut info = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("info"))
                .unwrap();
            info.insert("layout_version", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = FsStorage::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 99, .. }),
        "{err}"
    );
}

/// When the disk fails under a shared transaction, every batch in it gets
/// the error, none is acknowledged, and after a reopen the data is exactly
/// the last acknowledged state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_transaction_fails_every_batch_in_it() {
    const ACTORS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let faults = FileFaults::new();
    let storage = FsStorage::open_with_faults(dir.path(), FsOptions::default(), &faults).unwrap();
    let mut stores = Vec::new();
    for a in 0..ACTORS {
        let kv = storage.open_actor(&format!("actor-{a}")).await.unwrap();
        kv.put_batch(&[(b(b"k"), b(b"before"))]).await.unwrap();
        stores.push(kv);
    }
    let before = storage.stats();

    faults.fail_writes(true);
    let mut tasks = Vec::new();
    for kv in &stores {
        let kv = Arc::clone(kv);
        tasks.push(tokio::spawn(async move {
            kv.put_batch(&[(b(b"k"), b(b"after")), (b(b"new"), page(1))])
                .await
        }));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, KvError::Backend { .. }), "{err}");
    }
    let after = storage.stats();
    assert!(faults.injected() > 0);
    assert_eq!(after.batches_committed, before.batches_committed);
    assert_eq!(after.put_batches, before.put_batches);
    assert!(after.failed_transactions >= 1, "{after:?}");
    // Reads still see the last durable state.
    for kv in &stores {
        assert_eq!(
            kv.get_batch(&[b(b"k"), b(b"new")]).await.unwrap(),
            vec![Some(b(b"before")), None]
        );
    }
    faults.fail_writes(false);
    // The engine is fail-stop: after an I/O error it refuses writes until
    // the file is reopened (and checked), rather than guess what is on disk.
    let retry = stores[0].put_batch(&[(b(b"k"), b(b"retry"))]).await;
    assert!(retry.is_err(), "{retry:?}");
    storage.close().await;
    drop(storage);

    let storage = FsStorage::open(dir.path()).unwrap();
    for a in 0..ACTORS {
        let kv = storage.open_actor(&format!("actor-{a}")).await.unwrap();
        assert_eq!(
            kv.get_batch(&[b(b"k"), b(b"new")]).await.unwrap(),
            vec![Some(b(b"before")), None]
        );
    }
    let kv = storage.open_actor("actor-0").await.unwrap();
    kv.put_batch(&[(b(b"k"), b(b"later"))]).await.unwrap();
    assert_eq!(
        kv.get_batch(&[b(b"k")]).await.unwrap(),
        vec![Some(b(b"later"))]
    );
}

/// A write that finds the disk full (`ENOSPC` from the file layer, under
/// the engine's transaction) fails with `KvError::StorageFull`, and so does
/// every write the fail-stop engine refuses afterwards; reads keep the last
/// durable state, and a reopen writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_storage_full_at_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FileFaults::new();
    let storage = FsStorage::open_with_faults(dir.path(), FsOptions::default(), &faults).unwrap();
    let kv = storage.open_actor("actor-a").await.unwrap();
    kv.put_batch(&[(b(b"k"), b(b"before"))]).await.unwrap();

    faults.fill_disk(true);
    let err = kv
        .put_batch(&[(b(b"k"), b(b"after")), (b(b"new"), page(1))])
        .await
        .unwrap_err();
    assert!(err.is_storage_full(), "{err:?}");
    assert!(matches!(err, KvError::StorageFull { .. }), "{err:?}");
    assert!(!err.is_transient());
    let text = report(&err);
    assert!(
        text.starts_with("no space left on the storage device"),
        "{text}"
    );
    assert!(text.contains("No space left on device"), "{text}");
    assert!(faults.injected() > 0);

    // Space is back, but the engine refuses writes until it is reopened;
    // the refusal still names the full disk as its cause.
    faults.fill_disk(false);
    let err = kv.put_batch(&[(b(b"k"), b(b"retry"))]).await.unwrap_err();
    assert!(err.is_storage_full(), "{err:?}");
    assert!(report(&err).contains("no space left"), "{err}");
    assert_eq!(
        kv.get_batch(&[b(b"k"), b(b"new")]).await.unwrap(),
        vec![Some(b(b"before")), None]
    );
    storage.close().await;
    drop(storage);

    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("actor-a").await.unwrap();
    assert_eq!(
        kv.get_batch(&[b(b"k"), b(b"new")]).await.unwrap(),
        vec![Some(b(b"before")), None]
    );
    kv.put_batch(&[(b(b"k"), b(b"later"))]).await.unwrap();
}

/// Values come back byte for byte whatever their zero runs (the stored form
/// cuts the longest one out), across a reopen too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_round_trip_whatever_their_zero_runs() {
    let mut two_runs = vec![7u8; 300];
    two_runs[10..60].fill(0);
    two_runs[200..250].fill(0);
    let mut page_with_gap = page(3).to_vec();
    page_with_gap[100..4000].fill(0);
    let values: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0; 31],
        vec![0; 32],
        vec![0; 4096],
        [vec![0; 100], vec![1, 2, 3]].concat(),
        [vec![1, 2, 3], vec![0; 100]].concat(),
        [vec![9], vec![0; 40], vec![9], vec![0; 41], vec![9]].concat(),
        two_runs,
        page_with_gap,
        page(5).to_vec(),
        vec![0; MAX_VALUE_BYTES],
    ];
    let entries: Vec<(Bytes, Bytes)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (Bytes::from(vec![i as u8]), Bytes::from(v.clone())))
        .collect();
    let keys: Vec<Bytes> = entries.iter().map(|(k, _)| k.clone()).collect();
    let want: Vec<Option<Bytes>> = entries.iter().map(|(_, v)| Some(v.clone())).collect();
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = FsStorage::open(dir.path()).unwrap();
        let kv = storage.open_actor("codec").await.unwrap();
        kv.put_batch(&entries).await.unwrap();
        assert_eq!(kv.get_batch(&keys).await.unwrap(), want);
        storage.close().await;
    }
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("codec").await.unwrap();
    assert_eq!(kv.get_batch(&keys).await.unwrap(), want);
}

/// SQLite pages that are mostly free space cost far less than 4 KiB each
/// on disk (a full page would take two of the engine's 4 KiB pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_pages_are_stored_compactly() {
    const PAGES: u32 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::open(dir.path()).unwrap();
    let kv = storage.open_actor("sparse").await.unwrap();
    let entries: Vec<(Bytes, Bytes)> = (0..PAGES)
        .map(|i| {
            let mut v = vec![0u8; 4096];
            v[..8].copy_from_slice(&u64::from(i).to_be_bytes());
            v[4000..].fill(i as u8 | 1);
            (Bytes::copy_from_slice(&i.to_be_bytes()), Bytes::from(v))
        })
        .collect();
    kv.put_batch(&entries).await.unwrap();
    storage.close().await;
    let size = std::fs::metadata(dir.path().join(DATA_FILE)).unwrap().len();
    let logical = u64::from(PAGES) * 4096;
    assert!(
        size < logical / 4,
        "{size} bytes on disk for {logical} bytes of pages"
    );
}

/// The store needs no tokio runtime: its acknowledgements are
/// runtime-independent, and `close` joins the committer directly when there
/// is no runtime to wait on.
#[test]
fn works_on_any_executor() {
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(async {
        let storage = FsStorage::open(dir.path()).unwrap();
        let kv = storage.open_actor("plain").await.unwrap();
        kv.put_batch(&[(b(b"k"), page(9))]).await.unwrap();
        assert_eq!(kv.get_batch(&[b(b"k")]).await.unwrap(), vec![Some(page(9))]);
        storage.close().await;
        assert!(storage.is_closed());
        // Closed means released: the file opens again at once.
        let again = FsStorage::open(dir.path()).unwrap();
        let kv = again.open_actor("plain").await.unwrap();
        assert_eq!(kv.get_batch(&[b(b"k")]).await.unwrap(), vec![Some(page(9))]);
    });
}
