//! libFuzzer entry point: bytes become operations on one `KvFile` over a
//! faulty store, checked against a `Vec<u8>` model (`vfs_fuzz::kv_file_ops`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(finding) = vfs_fuzz::kv_file_ops::run(data) {
        panic!("{finding}");
    }
});
