//! Pins the storage format byte for byte. Stored data must stay readable by
//! every later release, so a change to any of these snapshots is a format
//! change: it needs a new version and a migration, not a snapshot update.

use proptest::prelude::*;
use vfs_core::{
    DecodedKey, FileMeta, FileTag, FormatError, MAX_FILE_SIZE, PAGE_SIZE, chunk_key, decode_key,
    meta_key,
};

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[test]
fn meta_keys_golden() {
    let lines: Vec<String> = FileTag::ALL
        .iter()
        .map(|&tag| format!("{tag:?}: {}", hex(&meta_key(tag))))
        .collect();
    insta::assert_snapshot!("meta_keys", lines.join("\n"));
}

#[test]
fn chunk_keys_golden() {
    let mut lines = Vec::new();
    for tag in FileTag::ALL {
        for page in [0_u32, 1, 0x0102_0304, u32::MAX] {
            lines.push(format!(
                "{tag:?} page {page}: {}",
                hex(&chunk_key(tag, page))
            ));
        }
    }
    insta::assert_snapshot!("chunk_keys", lines.join("\n"));
}

#[test]
fn meta_value_golden() {
    let lines = [0_u64, 4096, 0x0102_0304_0506, MAX_FILE_SIZE]
        .iter()
        .map(|&size| format!("size {size}: {}", hex(&FileMeta { size }.encode())))
        .collect::<Vec<_>>();
    insta::assert_snapshot!("meta_values", lines.join("\n"));
}

#[test]
fn suffixes_and_constants() {
    let suffixes: Vec<&str> = FileTag::ALL.iter().map(|tag| tag.suffix()).collect();
    assert_eq!(suffixes, ["", "-journal", "-wal", "-shm"]);
    assert_eq!(PAGE_SIZE, 4096);
    assert_eq!(MAX_FILE_SIZE, 16 << 40);
}

#[test]
fn keys_round_trip() {
    for tag in FileTag::ALL {
        assert_eq!(decode_key(&meta_key(tag)), Ok(DecodedKey::Meta(tag)));
        for page in [0, 7, u32::MAX] {
            assert_eq!(
                decode_key(&chunk_key(tag, page)),
                Ok(DecodedKey::Chunk(tag, page))
            );
        }
    }
}

#[test]
fn chunk_keys_sort_by_page() {
    // Big-endian page indices keep a file's pages in order in ordered stores.
    let keys: Vec<_> = [0_u32, 1, 255, 256, 65_536, u32::MAX]
        .iter()
        .map(|&page| chunk_key(FileTag::Main, page))
        .collect();
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
}

#[test]
fn malformed_keys_are_errors() {
    let good = chunk_key(FileTag::Wal, 9);
    assert_eq!(decode_key(&[]), Err(FormatError::KeyLength(0)));
    assert_eq!(decode_key(&good[..5]), Err(FormatError::KeyLength(5)));
    let mut bad = good.to_vec();
    bad[0] = 0x00;
    assert_eq!(decode_key(&bad), Err(FormatError::KeyPrefix(0)));
    let mut bad = good.to_vec();
    bad[1] = 2;
    assert_eq!(decode_key(&bad), Err(FormatError::SchemaVersion(2)));
    let mut bad = good.to_vec();
    bad[3] = 4;
    assert_eq!(decode_key(&bad), Err(FormatError::UnknownTag(4)));
    // A meta kind with a chunk length, and a chunk kind with a meta length.
    let mut bad = good.to_vec();
    bad[2] = vfs_core::KIND_META;
    assert!(matches!(
        decode_key(&bad),
        Err(FormatError::KeyKind { len: 8, .. })
    ));
    let mut bad = meta_key(FileTag::Main).to_vec();
    bad[2] = vfs_core::KIND_CHUNK;
    assert!(matches!(
        decode_key(&bad),
        Err(FormatError::KeyKind { len: 4, .. })
    ));
}

#[test]
fn malformed_meta_is_error() {
    assert_eq!(FileMeta::decode(&[]), Err(FormatError::MetaLength(0)));
    assert_eq!(
        FileMeta::decode(&[1, 0, 0]),
        Err(FormatError::MetaLength(3))
    );
    let mut value = FileMeta { size: 5 }.encode().to_vec();
    value.push(0);
    assert_eq!(FileMeta::decode(&value), Err(FormatError::MetaLength(10)));
    let mut value = FileMeta { size: 5 }.encode().to_vec();
    value[0] = 2;
    assert_eq!(FileMeta::decode(&value), Err(FormatError::MetaVersion(2)));
    let mut too_big = vec![1];
    too_big.extend_from_slice(&(MAX_FILE_SIZE + 1).to_be_bytes());
    assert_eq!(
        FileMeta::decode(&too_big),
        Err(FormatError::SizeTooLarge(MAX_FILE_SIZE + 1))
    );
    assert_eq!(
        FileMeta::decode(
            &FileMeta {
                size: MAX_FILE_SIZE
            }
            .encode()
        ),
        Ok(FileMeta {
            size: MAX_FILE_SIZE
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        // Either decodes to something that encodes back to the same bytes,
        // or reports an error.
        match decode_key(&bytes) {
            Ok(DecodedKey::Meta(tag)) => prop_assert_eq!(&meta_key(tag)[..], &bytes[..]),
            Ok(DecodedKey::Chunk(tag, page)) => {
                prop_assert_eq!(&chunk_key(tag, page)[..], &bytes[..]);
            }
            Err(_) => {}
        }
        if let Ok(meta) = FileMeta::decode(&bytes) {
            prop_assert_eq!(&meta.encode()[..], &bytes[..]);
            prop_assert!(meta.size <= MAX_FILE_SIZE);
        }
    }

    #[test]
    fn near_valid_keys_never_panic(tag in 0_u8..6, kind in 0_u8..4, page in any::<u32>(), short in any::<bool>()) {
        let mut key = vec![vfs_core::KEY_PREFIX, vfs_core::SCHEMA_VERSION, kind, tag];
        if !short {
            key.extend_from_slice(&page.to_be_bytes());
        }
        let valid = tag < 4
            && ((short && kind == vfs_core::KIND_META) || (!short && kind == vfs_core::KIND_CHUNK));
        prop_assert_eq!(decode_key(&key).is_ok(), valid);
    }
}
