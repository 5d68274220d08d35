//! Crash consistency: the store stops accepting calls at every possible
//! point of a workload (an acknowledged call is durable, the next one never
//! happens), and a fresh handle must then find exactly the state after the
//! last acknowledged commit or truncate — never a mix of two states — with
//! one allowance: a crash inside a shrinking truncate may leave the old size
//! with the region being cut reading zeros from its start (its chunks are
//! deleted, lowest first, before the smaller size is stored). A crash
//! inside a file delete likewise leaves the whole file, or the file with its
//! pages reading zeros from its start, and never chunks without a file.

use std::sync::Arc;

use futures::executor::block_on;
use vfs_core::testing::cut_started;
use vfs_core::{
    FaultyKv, FileTag, KvFile, KvLimits, KvStore, MemoryKv, PAGE_SIZE, VfsError, sqlite,
};

const P: u64 = PAGE_SIZE as u64;

/// One step of the workload; each is all-or-nothing by contract.
enum Step {
    /// An atomic batch of writes `(offset, len, fill byte)` and an optional
    /// truncate, committed as one.
    Txn(Vec<(u64, usize, u8)>, Option<u64>),
    /// A plain truncate: the pages past the new end are deleted first,
    /// then the size is stored.
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
                            if e.code() == sqlite::SQLITE_IOERR_TRUNCATE
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
            if let Some(Step::Truncate(size)) = steps.get(done)
                && cut_started(&got, &states[done], *size)
            {
                continue;
            }
            assert!(
                got == states[done],
                "crash at call {crash_at} after {done} steps: {} bytes stored, {} expected",
                got.len(),
                states[done].len()
            );
        }
    });
}

/// Regression: a crash between a shrinking truncate's metadata write and its
/// chunk deletions left the chunks past the new end in the store, and the
/// next handle knew nothing of them. Growing the file with a gap (SQLite
/// does: `pager_truncate` grows a database by writing only its last page)
/// then served the old pages in the gap instead of zeros.
///
/// At every crash point of the truncate, a fresh handle (the process
/// restarted) must find either the old size (its pages intact, or zeroed
/// from the cut upwards) or the new one, and growing the file over the cut
/// region with a gap must read zeros past the new end.
#[test]
fn crash_inside_truncate_never_resurrects_cut_pages() {
    const OLD_PAGES: u64 = 10;
    const GROWN: u64 = 12 * P;
    block_on(async {
        let limits = KvLimits {
            max_batch_keys: 4,
            max_value_bytes: PAGE_SIZE,
        };
        for cut in [2 * P, 2 * P + 100] {
            let old = vec![0x11; (OLD_PAGES * P) as usize];
            for crash_at in 0.. {
                let inner: Arc<dyn KvStore> = Arc::new(MemoryKv::with_limits(limits));
                let faulty = Arc::new(FaultyKv::new(Arc::clone(&inner)));
                let mut file = KvFile::open(faulty.clone(), FileTag::Main, true, None)
                    .await
                    .unwrap();
                file.write(&old, 0).await.unwrap();
                let before = faulty.calls();
                faulty.fail_after(crash_at);
                let finished = file.truncate(cut).await.is_ok();
                let calls = faulty.calls() - before;
                drop(file);

                let mut file = KvFile::open(Arc::clone(&inner), FileTag::Main, false, None)
                    .await
                    .unwrap();
                let size = file.size();
                assert!(
                    size == cut || size == OLD_PAGES * P,
                    "crash at {crash_at}: size {size}"
                );
                assert!(
                    !finished || size == cut,
                    "an acknowledged truncate is durable"
                );
                let mut got = vec![0xAA; size as usize];
                file.read(&mut got, 0).await.unwrap();
                assert!(got[..cut as usize].iter().all(|&b| b == 0x11));
                if size > cut {
                    // Not truncated: the cut region is old pages, zeroed from
                    // its start (a hot journal cut to 0 loses its header first).
                    let tail = &got[cut.next_multiple_of(P) as usize..];
                    let zeroed = tail
                        .chunks(PAGE_SIZE)
                        .take_while(|page| page.iter().all(|&b| b == 0))
                        .count();
                    assert!(
                        tail.chunks(PAGE_SIZE)
                            .skip(zeroed)
                            .all(|page| page.iter().all(|&b| b == 0x11)),
                        "crash at {crash_at}: cut region not zeroed from its start"
                    );
                }

                // Grow by writing only the last page, leaving a gap over the
                // pages the truncate cut.
                file.write(&[0x22; PAGE_SIZE], GROWN - P).await.unwrap();
                let mut grown = vec![0xAA; GROWN as usize];
                file.read(&mut grown, 0).await.unwrap();
                let zeros_from = size.max(cut) as usize;
                assert!(
                    grown[zeros_from..(GROWN - P) as usize]
                        .iter()
                        .all(|&b| b == 0),
                    "crash at {crash_at} (cut {cut}): the gap shows old pages"
                );
                assert_eq!(grown[..zeros_from], got[..zeros_from]);

                if calls <= u64::from(crash_at) {
                    // The truncate made all its calls: every crash point is covered.
                    break;
                }
            }
        }
    });
}

/// Regression: deleting a file removed its metadata first and then its
/// pages from the highest down, so a crash in the middle left chunks without
/// a file. A new file of the same tag (SQLite creates and deletes its
/// rollback journal on every transaction in `journal_mode=DELETE`) only
/// spots such leftovers among the pages it reads ahead at open, and growing
/// it with a gap served the older pages instead of zeros.
///
/// At every crash point of the delete of a journal larger than that
/// read-ahead, the store must hold either the whole journal (the delete did
/// not start: SQLite finds it hot and rolls the transaction back entirely)
/// or a journal whose first page reads zeros (SQLite does not find it hot:
/// deleting the journal is the commit, and it stands), never a journal with
/// its header but not all of its records. Opening the journal again (as
/// SQLite does for its next transaction) and writing only a page past a gap
/// must read zeros in the gap, and a retried delete must leave nothing.
#[test]
fn crash_inside_delete_leaves_no_hot_partial_journal_nor_old_pages() {
    const GAP_PAGE: u64 = 30;
    block_on(async {
        let limits = KvLimits {
            max_batch_keys: 4,
            max_value_bytes: PAGE_SIZE,
        };
        for size in [20 * P, 20 * P + 100] {
            let journal: Vec<u8> = (0..size).map(|i| (i / P) as u8 | 0x80).collect();
            for crash_at in 0.. {
                let memory = Arc::new(MemoryKv::with_limits(limits));
                let inner: Arc<dyn KvStore> = memory.clone();
                let faulty = Arc::new(FaultyKv::new(Arc::clone(&inner)));
                let store: Arc<dyn KvStore> = faulty.clone();
                let mut file = KvFile::open(Arc::clone(&store), FileTag::Journal, true, None)
                    .await
                    .unwrap();
                file.write(&journal, 0).await.unwrap();
                drop(file);
                let before = faulty.calls();
                faulty.fail_after(crash_at);
                let finished = KvFile::delete(&store, FileTag::Journal).await.is_ok();
                let calls = faulty.calls() - before;

                // What SQLite's hasHotJournal sees after the restart: the
                // journal exists and its first byte is not zero.
                let exists = KvFile::exists(&inner, FileTag::Journal).await.unwrap();
                assert!(!finished || !exists, "an acknowledged delete is durable");
                let mut file = KvFile::open(Arc::clone(&inner), FileTag::Journal, true, None)
                    .await
                    .unwrap();
                let left = file.size();
                let mut got = vec![0xAA; left as usize];
                file.read(&mut got, 0).await.unwrap();
                let hot = got.first().is_some_and(|&b| b != 0);
                assert!(
                    !hot || got == journal,
                    "crash at {crash_at} (size {size}): a hot journal lost records"
                );
                if exists {
                    // The delete started: the journal reads zeros from its
                    // start, the rest unchanged.
                    assert_eq!(left, size, "crash at {crash_at}");
                    let zeroed = got
                        .chunks(PAGE_SIZE)
                        .take_while(|page| page.iter().all(|&b| b == 0))
                        .count();
                    assert!(
                        got[zeroed * PAGE_SIZE..] == journal[zeroed * PAGE_SIZE..],
                        "crash at {crash_at} (size {size}): not zeroed from its start"
                    );
                } else {
                    assert_eq!(left, 0, "crash at {crash_at}");
                }

                // Grow the journal by writing only a page past a gap.
                file.write(&[0x22; PAGE_SIZE], GAP_PAGE * P).await.unwrap();
                let mut grown = vec![0xAA; ((GAP_PAGE + 1) * P) as usize];
                file.read(&mut grown, 0).await.unwrap();
                assert_eq!(grown[..left as usize], got[..]);
                assert!(
                    grown[left as usize..(GAP_PAGE * P) as usize]
                        .iter()
                        .all(|&b| b == 0),
                    "crash at {crash_at} (size {size}): the gap shows old journal pages"
                );
                drop(file);

                // The delete SQLite retries (or its next one) leaves nothing.
                KvFile::delete(&inner, FileTag::Journal).await.unwrap();
                assert_eq!(memory.len(), 0, "crash at {crash_at}: keys left behind");

                if calls <= u64::from(crash_at) {
                    // The delete made all its calls: every crash point is covered.
                    break;
                }
            }
        }
    });
}
