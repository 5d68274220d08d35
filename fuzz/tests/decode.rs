//! The `decode` target on fixed inputs: every valid encoding, its one-byte
//! corruptions and truncations, and random bytes.

mod common;

use common::Rng;
use vfs_core::{FileMeta, FileTag, MAX_FILE_SIZE, chunk_key, decode_key, meta_key};
use vfs_fuzz::decode::run;

fn valid_encodings() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for tag in FileTag::ALL {
        out.push(meta_key(tag).to_vec());
        for page in [0, 1, 255, 256, u32::MAX - 1, u32::MAX] {
            out.push(chunk_key(tag, page).to_vec());
        }
    }
    for size in [0, 1, 4096, MAX_FILE_SIZE - 1, MAX_FILE_SIZE] {
        out.push(FileMeta { size }.encode().to_vec());
    }
    out
}

#[test]
fn valid_encodings_decode_and_round_trip() {
    let encodings = valid_encodings();
    let decoded = encodings
        .iter()
        .filter(|e| decode_key(e).is_ok() || FileMeta::decode(e).is_ok())
        .count();
    assert_eq!(decoded, encodings.len(), "the target would check nothing");
    for input in &encodings {
        run(input).unwrap_or_else(|f| panic!("{f}"));
    }
}

#[test]
fn corrupted_and_truncated_encodings_never_panic_or_alias() {
    for valid in valid_encodings() {
        for cut in 0..valid.len() {
            run(&valid[..cut]).unwrap_or_else(|f| panic!("{f}"));
        }
        for at in 0..valid.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut input = valid.clone();
                input[at] ^= flip;
                run(&input).unwrap_or_else(|f| panic!("{f}"));
            }
        }
        let mut longer = valid.clone();
        longer.push(0);
        run(&longer).unwrap_or_else(|f| panic!("{f}"));
    }
}

#[test]
fn random_bytes_from_fixed_seeds() {
    for seed in 0..2000 {
        let input = Rng::new(seed).bytes(12);
        run(&input).unwrap_or_else(|f| panic!("seed {seed}: {f}"));
    }
}
