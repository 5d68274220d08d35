//! The `kv_file_ops` target on fixed inputs: what `cargo test` runs of it.

mod common;

use common::Rng;
use vfs_core::testing::FileOp;
use vfs_fuzz::kv_file_ops::{MAX_OPS, decode_ops, run};

#[test]
fn random_inputs_from_fixed_seeds_match_the_model() {
    for seed in 0..300 {
        let input = Rng::new(seed).bytes(400);
        if let Err(finding) = run(&input) {
            panic!("seed {seed}, input {input:02x?}: {finding}");
        }
    }
}

#[test]
fn hand_written_inputs_match_the_model() {
    let inputs: [&[u8]; 5] = [
        b"",
        // Begin, a big write (several batches: too large to commit), commit.
        &[10, 0, 9, 0, 7, 0, 0, 1, 11],
        // Fail after one call, then write across a page boundary, heal, sync.
        &[14, 1, 0, 1, 3, 4, 0x55, 15, 9],
        // Write, truncate mid-page with the next call failing, read back.
        &[0, 2, 0, 5, 9, 13, 0, 7, 1, 2, 5, 0, 0, 7],
        // Atomic batch with a failed commit, then rollback and re-commit.
        &[10, 0, 0, 0, 3, 1, 13, 0, 11, 12, 11],
    ];
    for input in inputs {
        if let Err(finding) = run(input) {
            panic!("input {input:02x?}: {finding}");
        }
    }
}

#[test]
fn decoding_reaches_every_operation_and_stops_at_the_cap() {
    let mut seen = [false; 10];
    for seed in 0..50 {
        for op in decode_ops(&Rng::new(seed).bytes(200)) {
            let index = match op {
                FileOp::Write { .. } => 0,
                FileOp::Read { .. } => 1,
                FileOp::Truncate { .. } => 2,
                FileOp::Sync => 3,
                FileOp::Begin => 4,
                FileOp::Commit => 5,
                FileOp::Rollback => 6,
                FileOp::FailNext(_) => 7,
                FileOp::FailAfter(_) => 8,
                FileOp::Heal => 9,
            };
            seen[index] = true;
        }
    }
    assert_eq!(seen, [true; 10]);
    assert!(decode_ops(&[]).is_empty());
    assert_eq!(decode_ops(&[9; 1000]).len(), MAX_OPS);
    assert_eq!(decode_ops(&[9; 1000])[0], FileOp::Sync);
}
