//! State-machine test of `KvFile` against a plain `Vec<u8>`, with store
//! failures injected at random.
//!
//! The model and every check live in `vfs_core::testing` (its module
//! documentation lists the contract), shared with the `kv_file_ops` fuzz
//! target; this file only generates operation sequences with proptest, which
//! shrinks a failing one to a minimal case.

use futures::executor::block_on;
use proptest::prelude::*;
use vfs_core::PAGE_SIZE;
use vfs_core::testing::{FileOp as Op, check_file_ops};

const P: u64 = PAGE_SIZE as u64;

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

/// A sequential run of reads (SQLite walking a blob's overflow pages, or
/// replaying a journal), so that reads are served from pages fetched ahead,
/// with other operations (writes and truncates over those pages, batches,
/// faults) slipped in between its reads.
fn read_run() -> impl Strategy<Value = Vec<Op>> {
    (
        0_u64..14,
        2_u64..24,
        prop_oneof![
            2 => Just(PAGE_SIZE),
            1 => Just(100),
            1 => 1..2 * PAGE_SIZE,
        ],
        proptest::collection::vec((0_usize..24, slipped()), 0..6),
    )
        .prop_map(|(start, reads, len, slipped)| {
            let mut ops: Vec<Op> = (0..reads)
                .map(|i| Op::Read {
                    offset: start * P + i * len as u64,
                    len,
                })
                .collect();
            for (at, op) in slipped {
                ops.insert(at.min(ops.len()), op);
            }
            ops
        })
}

/// What changes the file under a read run: writes and truncates (a shrink
/// then a regrowth makes the pages read ahead visible again), batches and
/// faults.
fn slipped() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (offset(), len(), any::<u8>()).prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        3 => offset().prop_map(|size| Op::Truncate { size }),
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => (1_u32..3).prop_map(Op::FailNext),
        1 => Just(Op::Heal),
    ]
}

/// Single operations and read runs, flattened.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            4 => op().prop_map(|op| vec![op]),
            1 => read_run(),
        ],
        1..40,
    )
    .prop_map(|groups| groups.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn kv_file_matches_model(ops in ops()) {
        if let Err(divergence) = block_on(check_file_ops(&ops)) {
            return Err(TestCaseError::fail(divergence.to_string()));
        }
    }
}

/// An operation the model cannot follow (a 16 EiB file) is reported with
/// its step and operation instead of exhausting memory.
#[test]
fn checker_refuses_sizes_beyond_the_model_with_the_step() {
    let ops = [
        Op::Write {
            offset: 0,
            len: 10,
            seed: 1,
        },
        Op::Truncate { size: u64::MAX },
    ];
    let divergence = block_on(check_file_ops(&ops)).unwrap_err();
    assert_eq!(divergence.step, Some(1));
    assert_eq!(divergence.op, Some(ops[1].clone()));
}
