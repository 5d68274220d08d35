//! Crash consistency: the store stops accepting calls at every possible
//! point of a workload (an acknowledged call is durable, the next one never
//! happens), and a fresh handle must then find exactly the state after the
//! last acknowledged commit or truncate — never a mix of two states.

use std::sync::Arc;

use futures::executor::block_on;
use vfs_core::{FaultyKv, FileTag, KvFile, KvLimits, KvStore, MemoryKv, PAGE_SIZE, VfsError, code};

const P: u64 = PAGE_SIZE as u64;

/// One step of the workload; each is all-or-nothing by contract.
enum Step {
    /// An atomic batch of writes `(offset, len, fill byte)` and an optional
    /// truncate, committed as one.
    Txn(Vec<(u64, usize, u8)>, Option<u64>),
    /// A plain truncate (metadata first, so it is atomic for readers).
    Truncate(u64),
}

fn workload() -> Vec<Step> {
    vec![
        Step::Txn(vec![(0, 3 * PAGE_SIZE, 1)], None),
        Step::Txn(vec![(P / 2, 100, 2), (5 * P, PAGE_SIZE, 3)], None),
        Step::Txn(vec![(0, 10, 4)], Some(2 * P + 7)),
        Step::Truncate(P + 1),
        Step::Txn(vec![(4 * P - 3, 6, 5)], None),
        Step::Truncate(9 * P),
        Step::Txn(vec![(2 * P, PAGE_SIZE, 6)], Some(3 * P)),
        Step::Truncate(0),
        Step::Txn(vec![(P, 5, 7)], None),
    ]
}

fn apply(model: &mut Vec<u8>, step: &Step) {
    match step {
        Step::Txn(writes, truncate) => {
            for &(offset, len, byte) in writes {
                let end = offset as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].fill(byte);
            }
            if let Some(size) = truncate {
                model.resize(*size as usize, 0);
            }
        }
        Step::Truncate(size) => model.resize(*size as usize, 0),
    }
}

async fn run_step(file: &mut KvFile, step: &Step) -> Result<(), VfsError> {
    match step {
        Step::Txn(writes, truncate) => {
            file.begin_atomic()?;
            for &(offset, len, byte) in writes {
                file.write(&vec![byte; len], offset).await?;
            }
            if let Some(size) = truncate {
                file.truncate(*size).await?;
            }
            let result = file.commit_atomic().await;
            if result.is_err() {
                file.rollback_atomic();
            }
            result
        }
        Step::Truncate(size) => file.truncate(*size).await,
    }
}

async fn stored(inner: &Arc<dyn KvStore>) -> Option<Vec<u8>> {
    let mut file = KvFile::open(Arc::clone(inner), FileTag::Main, false, None)
        .await
        .ok()?;
    let mut buf = vec![0xAA; file.size() as usize];
    file.read(&mut buf, 0).await.unwrap();
    Some(buf)
}

#[test]
fn every_crash_point_leaves_a_whole_state() {
    block_on(async {
        let steps = workload();
        let mut states = vec![Vec::new()];
        for step in &steps {
            let mut next = states.last().unwrap().clone();
            apply(&mut next, step);
            states.push(next);
        }
        // Count the calls of a clean run to know every crash point.
        let limits = KvLimits {
            max_batch_keys: 4,
            max_value_bytes: PAGE_SIZE,
        };
        let clean = Arc::new(FaultyKv::new(Arc::new(MemoryKv::with_limits(limits))));
        let mut file = KvFile::open(clean.clone(), FileTag::Main, true, None)
            .await
            .unwrap();
        for step in &steps {
            run_step(&mut file, step).await.unwrap();
        }
        let total = clean.calls();
        assert!(total > steps.len() as u64);

        for crash_at in 0..=total {
            let inner: Arc<dyn KvStore> = Arc::new(MemoryKv::with_limits(limits));
            let faulty = Arc::new(FaultyKv::new(Arc::clone(&inner)));
            faulty.fail_after(crash_at as u32);
            let mut done = 0;
            if let Ok(mut file) = KvFile::open(faulty.clone(), FileTag::Main, true, None).await {
                for step in &steps {
                    match run_step(&mut file, step).await {
                        Ok(()) => done += 1,
                        Err(e) => {
                            assert!(e.kv_error().is_some(), "crash at {crash_at}: {e}");
                            // A truncate whose deletion failed did change the size.
                            if e.code() == code::SQLITE_IOERR_TRUNCATE
                                && file.size() == states[done + 1].len() as u64
                            {
                                done += 1;
                            }
                            break;
                        }
                    }
                }
            }
            let got = stored(&inner).await.unwrap_or_default();
            assert_eq!(
                got, states[done],
                "crash at call {crash_at} after {done} steps"
            );
        }
    });
}
