//! libFuzzer entry point: arbitrary bytes decoded as a storage key and as
//! file metadata (`vfs_fuzz::decode`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(finding) = vfs_fuzz::decode::run(data) {
        panic!("{finding}");
    }
});
