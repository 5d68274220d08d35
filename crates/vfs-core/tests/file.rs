//! Behaviour of one KV-backed file at the edges SQLite relies on: short
//! reads, partial pages, the 16 TiB limit, atomic batches within the store
//! limits, and the SQLite code (plus original error) of every failure.

use std::sync::Arc;

use futures::executor::block_on;
use vfs_core::{
    CountingKv, FaultyKv, FileMeta, FileTag, KvError, KvFile, KvLimits, KvStore, MAX_FILE_SIZE,
    MemoryKv, PAGE_SIZE, ReadOutcome, chunk_key, meta_key, sqlite,
};

const P: u64 = PAGE_SIZE as u64;

fn limits(keys: usize) -> KvLimits {
    KvLimits {
        max_batch_keys: keys,
        max_value_bytes: PAGE_SIZE,
    }
}

fn mem(keys: usize) -> Arc<MemoryKv> {
    Arc::new(MemoryKv::with_limits(limits(keys)))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

async fn read_all(file: &mut KvFile) -> Vec<u8> {
    let mut buf = vec![0xEE; file.size() as usize];
    let outcome = file.read(&mut buf, 0).await.unwrap();
    assert_eq!(outcome, ReadOutcome::Full);
    buf
}

async fn reopen_all(store: &Arc<dyn KvStore>, tag: FileTag) -> Vec<u8> {
    let mut file = KvFile::open(Arc::clone(store), tag, false, None)
        .await
        .unwrap();
    read_all(&mut file).await
}

#[test]
fn missing_file_needs_create() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let err = KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_CANTOPEN);
        assert!(!KvFile::exists(&store, FileTag::Main).await.unwrap());
        let file = KvFile::open(Arc::clone(&store), FileTag::Journal, true, None)
            .await
            .unwrap();
        assert_eq!(file.size(), 0);
    });
}

#[test]
fn created_file_exists_after_first_write_or_sync() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let mut j = KvFile::open(Arc::clone(&store), FileTag::Journal, true, None)
            .await
            .unwrap();
        assert!(!KvFile::exists(&store, FileTag::Journal).await.unwrap());
        j.sync().await.unwrap();
        assert!(KvFile::exists(&store, FileTag::Journal).await.unwrap());
        let mut w = KvFile::open(Arc::clone(&store), FileTag::Wal, true, None)
            .await
            .unwrap();
        w.write(b"hello", 0).await.unwrap();
        assert!(KvFile::exists(&store, FileTag::Wal).await.unwrap());
        assert_eq!(reopen_all(&store, FileTag::Wal).await, b"hello");
    });
}

#[test]
fn seeded_database_costs_one_put_and_reopen_one_get() {
    block_on(async {
        let counting = Arc::new(CountingKv::new(mem(8)));
        let store: Arc<dyn KvStore> = counting.clone();
        let seed = pattern(PAGE_SIZE, 7);
        let file = KvFile::open(Arc::clone(&store), FileTag::Main, true, Some(&seed))
            .await
            .unwrap();
        assert_eq!(file.size(), P);
        assert_eq!((counting.get_calls(), counting.put_calls()), (1, 1));

        counting.reset();
        // The seed only matters for a file being created.
        let mut file = KvFile::open(
            Arc::clone(&store),
            FileTag::Main,
            false,
            Some(&pattern(PAGE_SIZE, 0)),
        )
        .await
        .unwrap();
        let mut header = [0u8; 100];
        file.read(&mut header, 0).await.unwrap();
        let mut page = vec![0u8; PAGE_SIZE];
        file.read(&mut page, 0).await.unwrap();
        assert_eq!(page, seed);
        assert_eq!(&header[..], &seed[..100]);
        assert_eq!(
            counting.total(),
            1,
            "open + header + page 1 in one round trip"
        );
        // The read-ahead copy was consumed: the next read goes to the store.
        file.read(&mut page, 0).await.unwrap();
        assert_eq!(counting.get_calls(), 2);
    });
}

#[test]
fn seed_must_be_one_page() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let err = KvFile::open(store, FileTag::Main, true, Some(&[0; 100]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_MISUSE);
    });
}

#[test]
fn tiny_store_limits_are_refused_at_open() {
    block_on(async {
        let store: Arc<dyn KvStore> = Arc::new(MemoryKv::with_limits(KvLimits {
            max_batch_keys: 8,
            max_value_bytes: 1000,
        }));
        let err = KvFile::open(store, FileTag::Main, true, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_CANTOPEN);
    });
}

#[test]
fn writes_across_page_boundaries_read_back() {
    block_on(async {
        let counting = Arc::new(CountingKv::new(mem(64)));
        let store: Arc<dyn KvStore> = counting.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        let mut model = vec![0u8; 3 * PAGE_SIZE];
        file.write(&model, 0).await.unwrap();
        // Straddles pages 0..=2 with both ends partial: one get for both.
        counting.reset();
        let data = pattern(PAGE_SIZE + 200, 3);
        let off = P - 100;
        file.write(&data, off).await.unwrap();
        model[off as usize..off as usize + data.len()].copy_from_slice(&data);
        assert_eq!(counting.get_calls(), 1);
        assert_eq!(counting.put_calls(), 1);
        assert_eq!(read_all(&mut file).await, model);
        assert_eq!(reopen_all(&store, FileTag::Main).await, model);
        // Whole pages are written without reading.
        counting.reset();
        file.write(&pattern(2 * PAGE_SIZE, 9), P).await.unwrap();
        assert_eq!(counting.get_calls(), 0);
        // A read spanning pages.
        let mut buf = vec![0u8; 10];
        file.read(&mut buf, P - 5).await.unwrap();
        assert_eq!(&buf[..5], &model[PAGE_SIZE - 5..PAGE_SIZE]);
        assert_eq!(&buf[5..], &pattern(2 * PAGE_SIZE, 9)[..5]);
    });
}

#[test]
fn zero_length_io_is_a_no_op() {
    block_on(async {
        let counting = Arc::new(CountingKv::new(mem(8)));
        let store: Arc<dyn KvStore> = counting.clone();
        let mut file = KvFile::open(store, FileTag::Main, true, None)
            .await
            .unwrap();
        counting.reset();
        file.write(&[], 12_345).await.unwrap();
        assert_eq!(file.read(&mut [], 99).await.unwrap(), ReadOutcome::Full);
        assert_eq!(file.size(), 0);
        assert_eq!(counting.total(), 0);
    });
}

#[test]
fn short_reads_zero_fill() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let mut file = KvFile::open(store, FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(b"abc", 0).await.unwrap();
        let mut buf = [0xFFu8; 8];
        assert_eq!(file.read(&mut buf, 1).await.unwrap(), ReadOutcome::Short);
        assert_eq!(buf, [b'b', b'c', 0, 0, 0, 0, 0, 0]);
        let mut buf = [0xFFu8; 4];
        assert_eq!(file.read(&mut buf, 100).await.unwrap(), ReadOutcome::Short);
        assert_eq!(buf, [0; 4]);
        let mut buf = [0xFFu8; 4];
        assert_eq!(
            file.read(&mut buf, u64::MAX - 1).await.unwrap(),
            ReadOutcome::Short
        );
        assert_eq!(buf, [0; 4]);
    });
}

#[test]
fn truncate_mid_page_then_extend_reads_zeros() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        let data = pattern(3 * PAGE_SIZE, 1);
        file.write(&data, 0).await.unwrap();
        file.truncate(P + 10).await.unwrap();
        assert_eq!(file.size(), P + 10);
        // Two chunks (pages 0 and 1) plus the meta remain.
        assert!(KvFile::exists(&store, FileTag::Main).await.unwrap());
        file.truncate(3 * P).await.unwrap();
        let mut expected = data[..PAGE_SIZE + 10].to_vec();
        expected.resize(3 * PAGE_SIZE, 0);
        assert_eq!(read_all(&mut file).await, expected);
        assert_eq!(reopen_all(&store, FileTag::Main).await, expected);
        // Extending by a write past a gap also shows zeros.
        file.truncate(5).await.unwrap();
        file.write(b"z", 2 * P).await.unwrap();
        let mut expected = data[..5].to_vec();
        expected.resize(2 * PAGE_SIZE, 0);
        expected.push(b'z');
        assert_eq!(reopen_all(&store, FileTag::Main).await, expected);
    });
}

#[test]
fn truncate_deletes_chunks_past_the_end_before_storing_the_size() {
    block_on(async {
        let memory = mem(3);
        let store: Arc<dyn KvStore> = memory.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(10 * PAGE_SIZE, 2), 0).await.unwrap();
        assert_eq!(memory.len(), 11);
        file.truncate(P).await.unwrap();
        let snap = memory.snapshot();
        assert_eq!(snap.len(), 2);
        assert!(snap.contains_key(&chunk_key(FileTag::Main, 0)));
        assert_eq!(
            FileMeta::decode(&snap[&meta_key(FileTag::Main)]).unwrap(),
            FileMeta { size: P }
        );
    });
}

#[test]
fn max_file_size_is_16_tib() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        let last_page = pattern(PAGE_SIZE, 5);
        file.write(&last_page, MAX_FILE_SIZE - P).await.unwrap();
        assert_eq!(file.size(), MAX_FILE_SIZE);
        let mut reopened = KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap();
        assert_eq!(reopened.size(), MAX_FILE_SIZE);
        let mut buf = vec![0u8; PAGE_SIZE];
        reopened.read(&mut buf, MAX_FILE_SIZE - P).await.unwrap();
        assert_eq!(buf, last_page);
        let mut buf = [0xFFu8; 16];
        assert_eq!(
            reopened.read(&mut buf, 1 << 40).await.unwrap(),
            ReadOutcome::Full
        );
        assert_eq!(buf, [0; 16], "the sparse middle reads as zeros");

        for (len, offset) in [(1, MAX_FILE_SIZE), (2, MAX_FILE_SIZE - 1), (1, u64::MAX)] {
            let err = file.write(&vec![1; len], offset).await.unwrap_err();
            assert_eq!(err.code(), sqlite::SQLITE_FULL, "{len} bytes at {offset}");
        }
        let err = file.truncate(MAX_FILE_SIZE + 1).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_FULL);
        assert_eq!(file.size(), MAX_FILE_SIZE);
    });
}

#[test]
fn plain_writes_are_split_within_limits_with_the_size_last() {
    block_on(async {
        let memory = mem(4);
        let faulty = Arc::new(FaultyKv::new(memory.clone()));
        let store: Arc<dyn KvStore> = faulty.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        let before = faulty.calls();
        let data = pattern(10 * PAGE_SIZE, 4);
        file.write(&data, 0).await.unwrap();
        assert_eq!(
            faulty.calls() - before,
            3,
            "10 pages + meta in batches of 4"
        );
        assert_eq!(reopen_all(&store, FileTag::Main).await, data);

        // A failure in the last batch leaves the old size: the new pages are
        // past the end and invisible.
        faulty.fail_after(2);
        let err = file
            .write(&pattern(10 * PAGE_SIZE, 8), 10 * P)
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_IOERR_WRITE);
        faulty.heal();
        assert_eq!(file.size(), 10 * P);
        assert_eq!(reopen_all(&store, FileTag::Main).await, data);
        // Growing over them with a gap shows zeros, not those pages.
        file.write(b"end", 25 * P).await.unwrap();
        let all = reopen_all(&store, FileTag::Main).await;
        assert_eq!(&all[..data.len()], &data[..]);
        assert!(all[data.len()..25 * PAGE_SIZE].iter().all(|&b| b == 0));
    });
}

#[test]
fn atomic_commit_is_one_put_and_reads_see_dirty_pages() {
    block_on(async {
        let counting = Arc::new(CountingKv::new(mem(8)));
        let store: Arc<dyn KvStore> = counting.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(2 * PAGE_SIZE, 1), 0).await.unwrap();
        counting.reset();
        file.begin_atomic().unwrap();
        assert!(file.in_atomic());
        assert_eq!(
            file.begin_atomic().unwrap_err().code(),
            sqlite::SQLITE_IOERR_BEGIN_ATOMIC
        );
        let page = pattern(PAGE_SIZE, 2);
        file.write(&page, 0).await.unwrap();
        file.write(&page, 3 * P).await.unwrap();
        assert_eq!(file.size(), 4 * P);
        let mut buf = vec![0u8; PAGE_SIZE];
        file.read(&mut buf, 3 * P).await.unwrap();
        assert_eq!(buf, page);
        assert_eq!(counting.put_calls(), 0, "nothing stored before the commit");
        assert_eq!(reopen_all(&store, FileTag::Main).await.len(), 2 * PAGE_SIZE);
        counting.reset();
        file.commit_atomic().await.unwrap();
        assert!(!file.in_atomic());
        assert_eq!(counting.put_calls(), 1);
        assert_eq!(counting.total(), 1);
        let mut expected = page.clone();
        expected.extend_from_slice(&pattern(2 * PAGE_SIZE, 1)[PAGE_SIZE..]);
        expected.resize(3 * PAGE_SIZE, 0);
        expected.extend_from_slice(&page);
        assert_eq!(reopen_all(&store, FileTag::Main).await, expected);
    });
}

#[test]
fn rollback_restores_the_size() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(PAGE_SIZE, 1), 0).await.unwrap();
        file.begin_atomic().unwrap();
        file.write(&pattern(3 * PAGE_SIZE, 2), 0).await.unwrap();
        file.truncate(100).await.unwrap();
        assert_eq!(file.size(), 100);
        file.rollback_atomic();
        assert_eq!(file.size(), P);
        assert_eq!(read_all(&mut file).await, pattern(PAGE_SIZE, 1));
        assert_eq!(
            reopen_all(&store, FileTag::Main).await,
            pattern(PAGE_SIZE, 1)
        );
    });
}

#[test]
fn oversized_batch_fails_commit_without_calling_the_store() {
    block_on(async {
        let counting = Arc::new(CountingKv::new(mem(4)));
        let store: Arc<dyn KvStore> = counting.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.begin_atomic().unwrap();
        file.write(&pattern(4 * PAGE_SIZE, 1), 0).await.unwrap();
        counting.reset();
        let err = file.commit_atomic().await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_IOERR_COMMIT_ATOMIC);
        assert!(err.kv_error().is_none());
        assert_eq!(counting.total(), 0);
        assert!(file.in_atomic(), "the batch stays open until rollback");
        file.rollback_atomic();
        assert_eq!(file.size(), 0);
        // Three pages + meta fit exactly.
        file.begin_atomic().unwrap();
        file.write(&pattern(3 * PAGE_SIZE, 1), 0).await.unwrap();
        file.commit_atomic().await.unwrap();
        assert_eq!(counting.put_calls(), 1);
    });
}

#[test]
fn failed_commit_keeps_the_kv_error_and_stores_nothing() {
    block_on(async {
        let memory = mem(8);
        let faulty = Arc::new(FaultyKv::new(memory.clone()));
        let store: Arc<dyn KvStore> = faulty.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(2 * PAGE_SIZE, 1), 0).await.unwrap();
        let before = memory.snapshot();
        file.begin_atomic().unwrap();
        file.write(&pattern(PAGE_SIZE, 9), P / 2).await.unwrap();
        file.truncate(P + P / 2).await.unwrap();
        faulty.fail_next(1);
        let err = file.commit_atomic().await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_IOERR_COMMIT_ATOMIC);
        assert!(matches!(err.kv_error(), Some(KvError::Injected { .. })));
        let source = std::error::Error::source(&err).expect("KvError is the source");
        assert_eq!(
            source.to_string(),
            "injected fault (fail_next) on put_batch"
        );
        assert_eq!(memory.snapshot(), before);
        assert!(file.in_atomic());
        file.rollback_atomic();
        assert_eq!(read_all(&mut file).await, pattern(2 * PAGE_SIZE, 1));
    });
}

#[test]
fn shrinking_batch_then_regrowing_exposes_zeros() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(16);
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        let data = pattern(4 * PAGE_SIZE, 3);
        file.write(&data, 0).await.unwrap();
        file.begin_atomic().unwrap();
        file.truncate(10).await.unwrap();
        file.write(b"x", 3 * P).await.unwrap();
        let mut expected = data[..10].to_vec();
        expected.resize(3 * PAGE_SIZE, 0);
        expected.push(b'x');
        assert_eq!(read_all(&mut file).await, expected);
        file.commit_atomic().await.unwrap();
        assert_eq!(reopen_all(&store, FileTag::Main).await, expected);
    });
}

#[test]
fn every_kv_failure_has_its_code_and_keeps_the_error() {
    block_on(async {
        let faulty = Arc::new(FaultyKv::new(mem(8)));
        let store: Arc<dyn KvStore> = faulty.clone();
        faulty.fail_next(1);
        let err = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_CANTOPEN);
        assert!(err.kv_error().is_some());
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(3 * PAGE_SIZE, 1), 0).await.unwrap();
        file.drop_prefetch();

        let mut errors = Vec::new();
        faulty.fail_next(1);
        errors.push((
            file.read(&mut [0; 10], 0).await.unwrap_err(),
            sqlite::SQLITE_IOERR_READ,
        ));
        faulty.fail_next(1);
        errors.push((
            file.write(b"x", 0).await.unwrap_err(),
            sqlite::SQLITE_IOERR_WRITE,
        ));
        faulty.fail_next(1);
        errors.push((
            file.truncate(10).await.unwrap_err(),
            sqlite::SQLITE_IOERR_TRUNCATE,
        ));
        let mut journal = KvFile::open(Arc::clone(&store), FileTag::Journal, true, None)
            .await
            .unwrap();
        faulty.fail_next(1);
        errors.push((
            journal.sync().await.unwrap_err(),
            sqlite::SQLITE_IOERR_FSYNC,
        ));
        faulty.fail_next(1);
        errors.push((
            KvFile::exists(&store, FileTag::Main).await.unwrap_err(),
            sqlite::SQLITE_IOERR_ACCESS,
        ));
        faulty.fail_next(1);
        errors.push((
            KvFile::delete(&store, FileTag::Main).await.unwrap_err(),
            sqlite::SQLITE_IOERR_DELETE,
        ));
        for (err, expected) in &errors {
            assert_eq!(err.code(), *expected, "{err}");
            assert!(
                matches!(err.kv_error(), Some(KvError::Injected { .. })),
                "{err}"
            );
        }
        // The file is unchanged by all of that.
        assert_eq!(
            reopen_all(&store, FileTag::Main).await,
            pattern(3 * PAGE_SIZE, 1)
        );
    });
}

/// A shrinking truncate deletes the cut pages, lowest first, before it
/// stores the smaller size: when a deletion fails the file keeps its old
/// size, the cut region reads zeros from its start, no chunk is left past
/// the end, and the truncate SQLite retries finishes the job.
#[test]
fn failed_chunk_deletion_keeps_the_old_size_and_a_retry_finishes() {
    block_on(async {
        let memory = mem(4);
        let faulty = Arc::new(FaultyKv::new(memory.clone()));
        let store: Arc<dyn KvStore> = faulty.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(8 * PAGE_SIZE, 1), 0).await.unwrap();
        faulty.fail_after(1); // pages 1..5 are deleted, the deletion of 5..8 fails
        let err = file.truncate(P).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_IOERR_TRUNCATE);
        faulty.heal();
        assert_eq!(file.size(), 8 * P, "the size is stored last");
        let mut expected = pattern(8 * PAGE_SIZE, 1);
        expected[PAGE_SIZE..5 * PAGE_SIZE].fill(0);
        assert_eq!(read_all(&mut file).await, expected);
        assert_eq!(reopen_all(&store, FileTag::Main).await, expected);
        assert_eq!(memory.len(), 1 + 4, "meta, page 0 and pages 5..8");

        file.truncate(P).await.unwrap();
        assert_eq!(memory.len(), 2);
        assert_eq!(
            reopen_all(&store, FileTag::Main).await,
            pattern(PAGE_SIZE, 1)
        );
    });
}

/// Pages a shrinking atomic commit could not delete after committing are
/// remembered by the handle and deleted by the next sync.
#[test]
fn failed_deletion_after_a_shrinking_commit_is_retried_by_sync() {
    block_on(async {
        let memory = mem(8);
        let faulty = Arc::new(FaultyKv::new(memory.clone()));
        let store: Arc<dyn KvStore> = faulty.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(6 * PAGE_SIZE, 1), 0).await.unwrap();
        file.begin_atomic().unwrap();
        file.truncate(P).await.unwrap();
        faulty.fail_after(1); // the commit passes, the deletion after it fails
        file.commit_atomic().await.unwrap();
        faulty.heal();
        assert_eq!(
            reopen_all(&store, FileTag::Main).await,
            pattern(PAGE_SIZE, 1)
        );
        assert!(memory.len() > 2);
        file.sync().await.unwrap();
        assert_eq!(memory.len(), 2, "sync deleted the leftover chunks");
    });
}

#[test]
fn delete_and_missing_delete() {
    block_on(async {
        let memory = mem(3);
        let store: Arc<dyn KvStore> = memory.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Wal, true, None)
            .await
            .unwrap();
        file.write(&pattern(7 * PAGE_SIZE, 1), 0).await.unwrap();
        let mut main = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        main.write(b"keep", 0).await.unwrap();
        KvFile::delete(&store, FileTag::Wal).await.unwrap();
        assert!(!KvFile::exists(&store, FileTag::Wal).await.unwrap());
        assert_eq!(memory.len(), 2, "only the main file is left");
        let err = KvFile::delete(&store, FileTag::Wal).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_IOERR_DELETE_NOENT);
    });
}

#[test]
fn corrupt_stored_values_are_errors_not_panics() {
    block_on(async {
        let memory = mem(8);
        let store: Arc<dyn KvStore> = memory.clone();
        store
            .put_batch(&[(meta_key(FileTag::Main), bytes::Bytes::from_static(&[9, 9]))])
            .await
            .unwrap();
        let err = KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_CORRUPT);
        store
            .put_batch(&[
                (meta_key(FileTag::Main), FileMeta { size: 10 * P }.encode()),
                (
                    chunk_key(FileTag::Main, 6),
                    bytes::Bytes::from_static(b"short"),
                ),
            ])
            .await
            .unwrap();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap();
        let err = file.read(&mut [0; 8], 6 * P).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_CORRUPT);
    });
}

#[test]
fn databases_with_another_page_size_are_refused() {
    block_on(async {
        let store: Arc<dyn KvStore> = mem(8);
        let mut page = vec![0u8; PAGE_SIZE];
        page[..16].copy_from_slice(b"SQLite format 3\0");
        page[16..18].copy_from_slice(&1024_u16.to_be_bytes());
        KvFile::open(Arc::clone(&store), FileTag::Main, true, Some(&page))
            .await
            .unwrap();
        let err = KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_CANTOPEN);
        assert!(err.message().contains("1024"), "{err}");

        let store: Arc<dyn KvStore> = mem(8);
        page[16..18].copy_from_slice(&4096_u16.to_be_bytes());
        KvFile::open(Arc::clone(&store), FileTag::Main, true, Some(&page))
            .await
            .unwrap();
        KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap();
    });
}

#[test]
fn handles_and_their_futures_can_move_between_threads() {
    fn send<T: Send>(value: T) -> T {
        value
    }
    fn send_sync<T: Send + Sync>() {}
    send_sync::<KvFile>();
    send_sync::<vfs_core::VfsError>();
    send_sync::<vfs_core::FileRegistry>();
    let store: Arc<dyn KvStore> = mem(8);
    let mut file = block_on(send(KvFile::open(store, FileTag::Main, true, None))).unwrap();
    // Run the I/O futures on another thread, as a multi-thread runtime would.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                block_on(send(file.write(b"moved", 0))).unwrap();
                block_on(send(file.commit_atomic())).unwrap_err();
            })
            .join()
            .unwrap();
    });
    let mut buf = [0u8; 5];
    block_on(send(file.read(&mut buf, 0))).unwrap();
    assert_eq!(&buf, b"moved");
}

#[test]
fn sequential_appends_need_no_read_round_trips() {
    block_on(async {
        let counting = Arc::new(CountingKv::new(mem(8)));
        let store: Arc<dyn KvStore> = counting.clone();
        let mut journal = KvFile::open(Arc::clone(&store), FileTag::Journal, true, None)
            .await
            .unwrap();
        counting.reset();
        // A journal: a 28-byte header, then records of page number, page, checksum.
        let mut model = Vec::new();
        let mut parts = vec![pattern(28, 1)];
        for record in 0..5u8 {
            parts.push(pattern(4, record));
            parts.push(pattern(PAGE_SIZE, record + 10));
            parts.push(pattern(4, record + 20));
        }
        for part in parts {
            journal.write(&part, model.len() as u64).await.unwrap();
            model.extend_from_slice(&part);
        }
        assert_eq!(counting.get_calls(), 0, "the last written page is cached");
        assert_eq!(counting.put_calls(), 16);
        assert_eq!(reopen_all(&store, FileTag::Journal).await, model);
    });
}

/// A store whose every write fails because it is full, as a local disk
/// without space or a database server with a full disk reports it.
#[derive(Debug)]
struct FullKv(Arc<MemoryKv>);

fn full() -> KvError {
    KvError::StorageFull {
        message: "test store is full".into(),
        source: None,
    }
}

#[async_trait::async_trait]
impl KvStore for FullKv {
    async fn get_batch(&self, keys: &[bytes::Bytes]) -> Result<Vec<Option<bytes::Bytes>>, KvError> {
        self.0.get_batch(keys).await
    }
    async fn put_batch(&self, _: &[(bytes::Bytes, bytes::Bytes)]) -> Result<(), KvError> {
        Err(full())
    }
    async fn delete_batch(&self, _: &[bytes::Bytes]) -> Result<(), KvError> {
        Err(full())
    }
    fn limits(&self) -> KvLimits {
        self.0.limits()
    }
}

/// A full store is `SQLITE_FULL` whatever the operation, so SQLite stops
/// at once (no fallback to its journal that would hide the cause), and the
/// store error stays attached.
#[test]
fn a_full_store_is_sqlite_full_with_the_kv_error_kept() {
    block_on(async {
        let memory = mem(8);
        let store: Arc<dyn KvStore> = memory.clone();
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, None)
            .await
            .unwrap();
        file.write(&pattern(2 * PAGE_SIZE, 1), 0).await.unwrap();
        file.sync().await.unwrap();
        let store: Arc<dyn KvStore> = Arc::new(FullKv(memory.clone()));
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, false, None)
            .await
            .unwrap();

        let err = file.write(&pattern(PAGE_SIZE, 2), 0).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_FULL);
        assert!(
            err.kv_error().is_some_and(KvError::is_storage_full),
            "{err}"
        );

        file.begin_atomic().unwrap();
        file.write(&pattern(PAGE_SIZE, 3), P).await.unwrap();
        let err = file.commit_atomic().await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_FULL);
        let source = std::error::Error::source(&err).expect("KvError is the source");
        assert!(source.to_string().contains("no space left"), "{source}");
        file.rollback_atomic();

        let err = file.truncate(P).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_FULL);
        let err = KvFile::delete(&store, FileTag::Main).await.unwrap_err();
        assert_eq!(err.code(), sqlite::SQLITE_FULL);
        assert_eq!(
            reopen_all(&(memory as Arc<dyn KvStore>), FileTag::Main).await,
            pattern(2 * PAGE_SIZE, 1)
        );
    });
}

/// A store counting the keys `get_batch` is asked for, to check how many
/// pages a read fetches (`CountingKv` counts the calls).
#[derive(Debug)]
struct GetKeysKv {
    inner: Arc<MemoryKv>,
    keys: std::sync::atomic::AtomicU64,
}

impl GetKeysKv {
    fn new(inner: Arc<MemoryKv>) -> Self {
        GetKeysKv {
            inner,
            keys: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn keys(&self) -> u64 {
        self.keys.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl KvStore for GetKeysKv {
    async fn get_batch(&self, keys: &[bytes::Bytes]) -> Result<Vec<Option<bytes::Bytes>>, KvError> {
        self.keys
            .fetch_add(keys.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(bytes::Bytes, bytes::Bytes)]) -> Result<(), KvError> {
        self.inner.put_batch(entries).await
    }
    async fn delete_batch(&self, keys: &[bytes::Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

/// The content of page `page` in [`counted_file`]: every page differs.
fn page_image(page: u64) -> Vec<u8> {
    let mut image = pattern(PAGE_SIZE, page as u8);
    image[..8].copy_from_slice(&page.to_le_bytes());
    image
}

/// A stored file of `pages` pages of [`page_image`] and a fresh handle on
/// it that counts its store calls (in `CountingKv`) and the keys it reads
/// (in `GetKeysKv`), with the counters at zero.
async fn counted_file(pages: u64, keys: usize) -> (KvFile, Arc<CountingKv>, Arc<GetKeysKv>) {
    let memory = mem(keys);
    let mut file = KvFile::open(memory.clone(), FileTag::Main, true, None)
        .await
        .unwrap();
    let content: Vec<u8> = (0..pages).flat_map(page_image).collect();
    file.write(&content, 0).await.unwrap();
    let get_keys = Arc::new(GetKeysKv::new(memory));
    let counting = Arc::new(CountingKv::new(get_keys.clone()));
    let file = KvFile::open(counting.clone(), FileTag::Main, false, None)
        .await
        .unwrap();
    counting.reset();
    get_keys.keys.store(0, std::sync::atomic::Ordering::Relaxed);
    (file, counting, get_keys)
}

/// Reads page `page` whole and checks it against [`page_image`].
async fn read_page(file: &mut KvFile, page: u64) {
    let mut buf = vec![0xEE; PAGE_SIZE];
    assert_eq!(
        file.read(&mut buf, page * P).await.unwrap(),
        ReadOutcome::Full
    );
    assert!(buf == page_image(page), "page {page} content");
}

/// SQLite reads a large blob one overflow page at a time: a sequential run
/// of `n` page reads costs O(log n) `get_batch` calls while the window
/// doubles, then one call per 64 pages, instead of one call per page.
#[test]
fn sequential_reads_fetch_ahead_in_doubling_windows() {
    block_on(async {
        for (n, most_calls) in [(2, 2), (10, 4), (64, 7), (127, 8), (1000, 8 + 1000 / 64)] {
            // Pages 0..8 come with the open; the run starts past them.
            let (mut file, counting, get_keys) = counted_file(n + 20, 128).await;
            for page in 10..10 + n {
                read_page(&mut file, page).await;
            }
            let calls = counting.get_calls();
            assert!(
                calls <= most_calls,
                "{n} sequential pages cost {calls} get_batch calls"
            );
            assert!(
                calls <= 2 + u64::from(n.ilog2()) || n > 64,
                "{n} pages: {calls} calls is not logarithmic"
            );
            // Past the run's last page it fetched at most one window more.
            assert!(
                get_keys.keys() <= n + 64,
                "{n} pages: {} keys",
                get_keys.keys()
            );
        }
    });
}

/// Point reads never fetch a page they do not need, and a run stops
/// fetching ahead as soon as a read goes elsewhere.
#[test]
fn random_reads_fetch_one_page_each() {
    block_on(async {
        let (mut file, counting, get_keys) = counted_file(200, 128).await;
        let pages: Vec<u64> = (0..40).map(|i| 10 + (i * 37) % 190).collect();
        for &page in &pages {
            read_page(&mut file, page).await;
        }
        assert_eq!(counting.get_calls(), 40);
        assert_eq!(get_keys.keys(), 40);

        // A run, then a read elsewhere: the pages read ahead are dropped and
        // the window starts again from one.
        counting.reset();
        for page in 100..110 {
            read_page(&mut file, page).await;
        }
        let run_keys = get_keys.keys();
        read_page(&mut file, 20).await;
        read_page(&mut file, 110).await;
        assert_eq!(get_keys.keys(), run_keys + 2, "nothing fetched ahead");
        read_page(&mut file, 111).await; // continues 110: one page ahead
        read_page(&mut file, 112).await; // served from it
        assert_eq!(get_keys.keys(), run_keys + 4);
    });
}

/// Replaying a journal reads records (page number, page, checksum) that
/// straddle pages: the run keeps the page a read ended in, so every page
/// is fetched once.
#[test]
fn straddling_sequential_reads_fetch_each_page_once() {
    block_on(async {
        let (mut file, counting, get_keys) = counted_file(60, 128).await;
        let content: Vec<u8> = (0..60).flat_map(page_image).collect();
        let mut offset = 10 * PAGE_SIZE + 28;
        for len in [4, PAGE_SIZE, 4].into_iter().cycle().take(3 * 45) {
            let mut buf = vec![0xEE; len];
            file.read(&mut buf, offset as u64).await.unwrap();
            assert!(buf == content[offset..offset + len], "at {offset}");
            offset += len;
        }
        assert_eq!(get_keys.keys(), 50, "pages 10..60, each once");
        assert!(counting.get_calls() <= 7, "{counting:?}");
    });
}

/// The pages fetched ahead fit the store's batch limit: they only fill the
/// `get_batch` the read makes anyway.
#[test]
fn read_ahead_stays_within_max_batch_keys() {
    block_on(async {
        let (mut file, counting, _) = counted_file(120, 4).await;
        for page in 10..110 {
            read_page(&mut file, page).await;
        }
        // Three pages ahead at most per call of four keys.
        assert!(counting.get_calls() <= 100 / 4 + 3, "{counting:?}");
    });
}

/// Reads page `page` whole and checks it against `model`.
async fn check_page(file: &mut KvFile, model: &[u8], page: u64) {
    let mut buf = vec![0xEE; PAGE_SIZE];
    file.read(&mut buf, page * P).await.unwrap();
    let start = (page * P) as usize;
    let mut expected = model.get(start..).unwrap_or_default().to_vec();
    expected.resize(PAGE_SIZE, 0);
    assert!(buf == expected[..PAGE_SIZE], "page {page}");
}

/// Writes, truncates and atomic batches change pages the run has fetched
/// ahead; the next reads of the run see the change, never the stored copy.
#[test]
fn read_ahead_never_serves_a_changed_page() {
    block_on(async {
        let (mut file, _, _) = counted_file(80, 128).await;
        let mut model: Vec<u8> = (0..80).flat_map(page_image).collect();
        for page in 10..40 {
            check_page(&mut file, &model, page).await;
        }
        // Pages 40.. are read ahead now. A plain write changes one.
        file.write(&[0x31; 10], 41 * P + 5).await.unwrap();
        model[(41 * P + 5) as usize..(41 * P + 15) as usize].fill(0x31);
        for page in 40..50 {
            check_page(&mut file, &model, page).await;
        }
        // An atomic batch changes one, is read inside, then rolled back.
        file.begin_atomic().unwrap();
        file.write(&[0x32; 10], 52 * P).await.unwrap();
        let mut in_batch = model.clone();
        in_batch[(52 * P) as usize..(52 * P + 10) as usize].fill(0x32);
        for page in 50..54 {
            check_page(&mut file, &in_batch, page).await;
        }
        file.rollback_atomic();
        for page in 54..56 {
            check_page(&mut file, &model, page).await;
        }
        check_page(&mut file, &model, 52).await;
        // A committed batch.
        for page in 56..60 {
            check_page(&mut file, &model, page).await;
        }
        file.begin_atomic().unwrap();
        file.write(&[0x33; 10], 61 * P).await.unwrap();
        file.commit_atomic().await.unwrap();
        model[(61 * P) as usize..(61 * P + 10) as usize].fill(0x33);
        for page in 60..64 {
            check_page(&mut file, &model, page).await;
        }
        // A truncate cuts pages read ahead; growing back over them, by a
        // truncate or by a write with a gap, shows zeros.
        for page in 64..67 {
            check_page(&mut file, &model, page).await;
        }
        // Pages 67.. are read ahead now.
        file.truncate(67 * P + 7).await.unwrap();
        file.truncate(80 * P).await.unwrap();
        model[(67 * P + 7) as usize..].fill(0);
        for page in 67..70 {
            check_page(&mut file, &model, page).await;
        }
        file.truncate(65 * P + 7).await.unwrap();
        model.truncate((65 * P + 7) as usize);
        file.write(&[0x34; 10], 75 * P).await.unwrap();
        model.resize((75 * P) as usize, 0);
        model.extend_from_slice(&[0x34; 10]);
        for page in 64..76 {
            check_page(&mut file, &model, page).await;
        }
        assert_eq!(read_all(&mut file).await, model);
    });
}
