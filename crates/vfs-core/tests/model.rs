//! State-machine test of `KvFile` against a plain `Vec<u8>`, with store
//! failures injected at random.
//!
//! What the contract promises, and so what is checked after every step:
//! - The handle always reads exactly what the model holds, and a fresh
//!   handle on the store (opened on the inner store, bypassing the faults)
//!   reads the model outside a batch and the pre-batch state inside one.
//! - An atomic batch is all or nothing: after a failed commit the store
//!   still holds the state from before `begin_atomic`, never a mix, and
//!   after a successful one it holds the model.
//! - Outside a batch SQLite does not get all-or-nothing (that is what its
//!   journal is for): a failed write may leave some pages written. The test
//!   then checks the damage is bounded — the size is unchanged and every
//!   page holds either its old or its new content — and resynchronises the
//!   model from the store. A failed truncate leaves either the old or the
//!   new file (metadata is written first, in one batch with the new last
//!   page; only garbage past the end can remain).
//! - Operations that only read or buffer (reads, writes and truncates inside
//!   a batch, sync) change nothing when they fail.

use std::sync::Arc;

use futures::executor::block_on;
use proptest::prelude::*;
use vfs_core::{
    FaultyKv, FileTag, KvFile, KvLimits, KvStore, MemoryKv, PAGE_SIZE, ReadOutcome, code,
};

const P: u64 = PAGE_SIZE as u64;
const BATCH_KEYS: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: usize, seed: u8 },
    Read { offset: u64, len: usize },
    Truncate { size: u64 },
    Sync,
    Begin,
    Commit,
    Rollback,
    FailNext(u32),
    FailAfter(u32),
    Heal,
}

fn offset() -> impl Strategy<Value = u64> {
    (
        0_u64..14,
        prop_oneof![Just(0), Just(1), Just(P / 2), Just(P - 1), 0..P],
    )
        .prop_map(|(page, within)| page * P + within)
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0),
        1 => Just(1),
        1 => Just(100),
        1 => Just(PAGE_SIZE),
        1 => Just(PAGE_SIZE + 1),
        1 => Just(2 * PAGE_SIZE),
        1 => 0..3 * PAGE_SIZE,
        // Large enough to need several plain put batches.
        2 => 6 * PAGE_SIZE..12 * PAGE_SIZE,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (offset(), len(), any::<u8>()).prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        12 => (offset(), len()).prop_map(|(offset, len)| Op::Read { offset, len }),
        10 => offset().prop_map(|size| Op::Truncate { size }),
        4 => Just(Op::Sync),
        10 => Just(Op::Begin),
        10 => Just(Op::Commit),
        3 => Just(Op::Rollback),
        5 => (1_u32..3).prop_map(Op::FailNext),
        5 => (0_u32..3).prop_map(Op::FailAfter),
        8 => Just(Op::Heal),
    ]
}

fn fill(len: usize, seed: u8) -> Vec<u8> {
    // Never zero, so a page that wrongly reads as a hole is noticed.
    (0..len).map(|i| ((i as u8) ^ seed) | 0x80).collect()
}

fn apply_write(model: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let end = offset as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[offset as usize..end].copy_from_slice(data);
}

/// The file as stored, read through a fresh handle on the fault-free store.
async fn stored(inner: &Arc<dyn KvStore>) -> Vec<u8> {
    let mut file = match KvFile::open(Arc::clone(inner), FileTag::Main, false, None).await {
        Ok(file) => file,
        Err(e) if e.code() == code::SQLITE_CANTOPEN && e.kv_error().is_none() => return Vec::new(),
        Err(e) => panic!("reopen failed: {e}"),
    };
    let mut buf = vec![0xAA; file.size() as usize];
    assert_eq!(file.read(&mut buf, 0).await.unwrap(), ReadOutcome::Full);
    buf
}

async fn handle_view(file: &mut KvFile, faulty: &FaultyKv) -> Vec<u8> {
    // Reading through the handle must not be disturbed by injected faults.
    let saved_calls = faulty.calls();
    let mut buf = vec![0xAA; file.size() as usize];
    let outcome = loop {
        match file.read(&mut buf, 0).await {
            Ok(outcome) => break outcome,
            Err(e) => {
                assert_eq!(e.code(), code::SQLITE_IOERR_READ);
                assert!(faulty.calls() > saved_calls);
                faulty.heal();
            }
        }
    };
    assert_eq!(outcome, ReadOutcome::Full);
    buf
}

/// Every page of `got` holds the corresponding bytes of `old` or of `new`.
fn pagewise_old_or_new(got: &[u8], old: &[u8], new: &[u8]) -> bool {
    got.chunks(PAGE_SIZE).enumerate().all(|(i, page)| {
        let range = i * PAGE_SIZE..i * PAGE_SIZE + page.len();
        let slice = |v: &[u8]| -> Vec<u8> {
            let mut out = v.get(range.clone()).map(<[u8]>::to_vec).unwrap_or_default();
            if out.len() < page.len() {
                let start = range.start.min(v.len());
                out = v[start..].to_vec();
                out.resize(page.len(), 0);
            }
            out
        };
        page == slice(old).as_slice() || page == slice(new).as_slice()
    })
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let memory = Arc::new(MemoryKv::with_limits(KvLimits {
        max_batch_keys: BATCH_KEYS,
        max_value_bytes: PAGE_SIZE,
    }));
    let inner: Arc<dyn KvStore> = memory.clone();
    let faulty = Arc::new(FaultyKv::new(Arc::clone(&inner)));
    let store: Arc<dyn KvStore> = faulty.clone();
    let mut file = KvFile::open(store, FileTag::Main, true, None)
        .await
        .unwrap();

    let mut model: Vec<u8> = Vec::new();
    // What the store must hold: the model, or the pre-batch state in a batch.
    let mut committed: Vec<u8> = Vec::new();
    let mut in_batch = false;

    for op in ops {
        match op {
            Op::Write { offset, len, seed } => {
                let data = fill(len, seed);
                let mut after = model.clone();
                apply_write(&mut after, offset, &data);
                match file.write(&data, offset).await {
                    Ok(()) => model = after,
                    Err(e) => {
                        prop_assert_eq!(e.code(), code::SQLITE_IOERR_WRITE, "{}", e);
                        prop_assert!(e.kv_error().is_some());
                        if !in_batch {
                            let got = stored(&inner).await;
                            prop_assert_eq!(got.len(), model.len(), "size moved on failure");
                            prop_assert!(pagewise_old_or_new(&got, &model, &after));
                            model = got;
                        }
                    }
                }
            }
            Op::Read { offset, len } => {
                let mut buf = vec![0x55; len];
                match file.read(&mut buf, offset).await {
                    Ok(outcome) => {
                        let mut expected = vec![0; len];
                        let start = (offset as usize).min(model.len());
                        let end = (offset as usize + len).min(model.len());
                        expected[..end - start].copy_from_slice(&model[start..end]);
                        prop_assert_eq!(&buf, &expected);
                        let short = len > 0 && offset as usize + len > model.len();
                        prop_assert_eq!(outcome == ReadOutcome::Short, short);
                    }
                    Err(e) => prop_assert_eq!(e.code(), code::SQLITE_IOERR_READ),
                }
            }
            Op::Truncate { size } => {
                let mut after = model.clone();
                after.resize(size as usize, 0);
                match file.truncate(size).await {
                    Ok(()) => model = after,
                    Err(e) => {
                        prop_assert_eq!(e.code(), code::SQLITE_IOERR_TRUNCATE, "{}", e);
                        if !in_batch {
                            let got = stored(&inner).await;
                            prop_assert!(got == model || got == after, "truncate left a mix");
                            model = got;
                        }
                    }
                }
            }
            Op::Sync => {
                if let Err(e) = file.sync().await {
                    prop_assert_eq!(e.code(), code::SQLITE_IOERR_FSYNC);
                }
            }
            Op::Begin => {
                let result = file.begin_atomic();
                if in_batch {
                    prop_assert_eq!(result.unwrap_err().code(), code::SQLITE_IOERR_BEGIN_ATOMIC);
                } else {
                    result.unwrap();
                    in_batch = true;
                }
            }
            Op::Commit => {
                if in_batch {
                    match file.commit_atomic().await {
                        Ok(()) => in_batch = false,
                        Err(e) => {
                            prop_assert_eq!(e.code(), code::SQLITE_IOERR_COMMIT_ATOMIC);
                            prop_assert!(file.in_atomic(), "batch stays open until rollback");
                            // Nothing of the batch reached the store.
                            prop_assert_eq!(stored(&inner).await, committed.clone());
                            // What SQLite does next.
                            file.rollback_atomic();
                            model = committed.clone();
                            in_batch = false;
                        }
                    }
                } else {
                    let e = file.commit_atomic().await.unwrap_err();
                    prop_assert_eq!(e.code(), code::SQLITE_MISUSE);
                }
            }
            Op::Rollback => {
                file.rollback_atomic();
                if in_batch {
                    model = committed.clone();
                    in_batch = false;
                }
            }
            Op::FailNext(n) => faulty.fail_next(n),
            Op::FailAfter(n) => faulty.fail_after(n),
            Op::Heal => faulty.heal(),
        }
        if !in_batch {
            committed = model.clone();
        }
        prop_assert_eq!(file.in_atomic(), in_batch);
        prop_assert_eq!(file.size(), model.len() as u64);
        prop_assert_eq!(stored(&inner).await, committed.clone(), "store diverged");
        // Every stored key is well-formed.
        for key in memory.snapshot().keys() {
            prop_assert!(vfs_core::decode_key(key).is_ok());
        }
    }
    faulty.heal();
    prop_assert_eq!(handle_view(&mut file, &faulty).await, model.clone());
    if in_batch && file.commit_atomic().await.is_err() {
        // Only a batch too large for the store can fail without faults.
        file.rollback_atomic();
        model = committed;
    }
    file.sync().await.unwrap();
    prop_assert_eq!(stored(&inner).await, model.clone());
    // After a clean sync no garbage is left past the end.
    let pages = model.len().div_ceil(PAGE_SIZE) as u32;
    for key in memory.snapshot().keys() {
        if let Ok(vfs_core::DecodedKey::Chunk(_, page)) = vfs_core::decode_key(key) {
            prop_assert!(
                page < pages,
                "chunk {} left past the end ({} pages)",
                page,
                pages
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn kv_file_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        block_on(run(ops))?;
    }
}
