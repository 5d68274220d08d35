//! The `decode` target: arbitrary bytes into the storage format decoders.
//!
//! Decoders are the one place where bytes from storage (possibly corrupt,
//! possibly written by a newer release) enter the program, so they must
//! refuse rather than panic, and anything they accept must be exactly what
//! the encoder writes: a key or metadata value with two encodings would let
//! two stored entries describe the same page or size.

use vfs_core::{
    CHUNK_KEY_LEN, DecodedKey, FileMeta, MAX_FILE_SIZE, META_KEY_LEN, META_VALUE_LEN, chunk_key,
    decode_key, meta_key,
};

use crate::Finding;

/// Decodes `data` as a key and as file metadata; checks that every
/// successful decode re-encodes to `data` and that the lengths the format
/// defines are the only ones accepted.
pub fn run(data: &[u8]) -> Result<(), Finding> {
    if let Ok(key) = decode_key(data) {
        let (reencoded, len) = match key {
            DecodedKey::Meta(tag) => (meta_key(tag), META_KEY_LEN),
            DecodedKey::Chunk(tag, page) => (chunk_key(tag, page), CHUNK_KEY_LEN),
        };
        if data.len() != len {
            return Err(Finding::Decode(format!(
                "{data:02x?} decoded as {key:?} from {} bytes, expected {len}",
                data.len()
            )));
        }
        if reencoded != data {
            return Err(Finding::RoundTrip {
                what: "key",
                input: data.to_vec(),
                decoded: format!("{key:?}"),
                reencoded: reencoded.to_vec(),
            });
        }
    }
    if let Ok(meta) = FileMeta::decode(data) {
        if data.len() != META_VALUE_LEN || meta.size > MAX_FILE_SIZE {
            return Err(Finding::Decode(format!(
                "{data:02x?} accepted as {meta:?}, outside the format"
            )));
        }
        let reencoded = meta.encode();
        if reencoded != data {
            return Err(Finding::RoundTrip {
                what: "file metadata",
                input: data.to_vec(),
                decoded: format!("{meta:?}"),
                reencoded: reencoded.to_vec(),
            });
        }
    }
    Ok(())
}
