//! The `kv_file_ops` target: bytes become a sequence of operations on one
//! `KvFile` over a faulty in-memory store, checked step by step against the
//! `Vec<u8>` model of `vfs_core::testing` (the same checker the proptest
//! state machine uses).
//!
//! The decoding favours the values where page logic goes wrong: offsets at
//! and around page boundaries, lengths of zero, one page, one page plus one
//! and several batches' worth, and store faults armed for the next few calls.

use futures::executor::block_on;
use vfs_core::PAGE_SIZE;
use vfs_core::testing::{FileOp, check_file_ops};

use crate::{ByteReader, Finding};

const P: u64 = PAGE_SIZE as u64;

/// Most operations decoded from one input: enough for batches, faults and
/// recovery to interleave, few enough to keep an execution in milliseconds.
pub const MAX_OPS: usize = 64;

/// Pages an offset may start in (the file stays a few dozen pages long).
const PAGES: u64 = 14;

fn offset(r: &mut ByteReader<'_>) -> u64 {
    let page = u64::from(r.u8()) % PAGES;
    let within = match r.u8() % 5 {
        0 => 0,
        1 => 1,
        2 => P / 2,
        3 => P - 1,
        _ => u64::from(r.u16()) % P,
    };
    page * P + within
}

fn len(r: &mut ByteReader<'_>) -> usize {
    match r.u8() % 8 {
        0 => 0,
        1 => 1,
        2 => 100,
        3 => PAGE_SIZE,
        4 => PAGE_SIZE + 1,
        5 => 2 * PAGE_SIZE,
        6 => usize::from(r.u16()) % (3 * PAGE_SIZE),
        // Large enough to need several plain put batches.
        _ => 6 * PAGE_SIZE + usize::from(r.u16()) % (6 * PAGE_SIZE),
    }
}

/// Decodes `data` into at most [`MAX_OPS`] operations. Every byte string
/// decodes; the empty one to no operation.
pub fn decode_ops(data: &[u8]) -> Vec<FileOp> {
    let mut r = ByteReader::new(data);
    let mut ops = Vec::new();
    while !r.is_empty() && ops.len() < MAX_OPS {
        let op = match r.u8() % 16 {
            0..=4 => FileOp::Write {
                offset: offset(&mut r),
                len: len(&mut r),
                seed: r.u8(),
            },
            5 | 6 => FileOp::Read {
                offset: offset(&mut r),
                len: len(&mut r),
            },
            7 | 8 => FileOp::Truncate {
                size: offset(&mut r),
            },
            9 => FileOp::Sync,
            10 => FileOp::Begin,
            11 => FileOp::Commit,
            12 => FileOp::Rollback,
            13 => FileOp::FailNext(1 + u32::from(r.u8() % 3)),
            14 => FileOp::FailAfter(u32::from(r.u8() % 4)),
            _ => FileOp::Heal,
        };
        ops.push(op);
    }
    ops
}

/// Decodes `data` and checks the resulting operations against the model.
pub fn run(data: &[u8]) -> Result<(), Finding> {
    block_on(check_file_ops(&decode_ops(data)))?;
    Ok(())
}
