//! libFuzzer entry point: bytes become SQL run by one tenant of a shared
//! SQLite instance, while a co-tenant must stay intact
//! (`vfs_fuzz::sql_tenant`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(finding) = vfs_fuzz::sql_tenant::run(data) {
        panic!("{finding}");
    }
});
