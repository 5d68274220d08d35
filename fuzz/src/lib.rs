//! Fuzz targets for the workspace, written as a library so that plain
//! `cargo test` runs every one of them on fixed inputs and `cargo fuzz`
//! runs the same code under libFuzzer.
//!
//! Each module turns raw bytes into work for one layer and returns a
//! [`Finding`] instead of panicking when a property fails; the libFuzzer
//! binaries in `fuzz_targets/` only turn a finding into the panic libFuzzer
//! records as a crash.
//!
//! - [`kv_file_ops`]: operations on one `KvFile` over a faulty store,
//!   checked against the shared `Vec<u8>` model of `vfs_core::testing`;
//! - `sql_tenant` (feature `sql`, on by default): SQL text run by one tenant
//!   of a shared SQLite instance while a co-tenant must stay intact and
//!   answering, with directives for cached statements across schema
//!   changes, long names and stores that fail, panic or hang
//!   (`store_chaos`);
//! - [`decode`]: the storage format decoders on arbitrary bytes.
//!
//! Run them with `cargo xtask fuzz --smoke` (every target briefly) or
//! `cargo xtask fuzz <target> --time <seconds>`, or with `cargo fuzz`
//! directly from the workspace root:
//!
//! ```text
//! cargo +nightly fuzz run -s none --no-default-features --features libfuzzer kv_file_ops
//! VFS_FUZZ_MODULE_CACHE=target/fuzz/module-cache cargo +nightly fuzz run -s none \
//!     --features libfuzzer sql_tenant fuzz/corpus/sql_tenant fuzz/seeds/sql_tenant \
//!     -- -dict=fuzz/dict/sql.dict
//! ```
//!
//! A crash found this way becomes a test in `fuzz/tests/` holding the input
//! bytes, with a `//!` note on the bug it guards.

#![forbid(unsafe_code)]

mod bytes_reader;
pub mod decode;
pub mod kv_file_ops;
#[cfg(feature = "sql")]
pub mod sql_tenant;
#[cfg(feature = "sql")]
pub mod store_chaos;

pub use bytes_reader::ByteReader;

/// A property a fuzz target checks did not hold for an input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Finding {
    /// `KvFile` and its store diverged from the model.
    #[error("KvFile diverged from its model: {0}")]
    Model(#[from] vfs_core::testing::Divergence),
    /// A successful decode did not re-encode to the same bytes.
    #[error("{what} of {input:02x?} decoded to {decoded} but re-encodes to {reencoded:02x?}")]
    RoundTrip {
        /// Which decoder.
        what: &'static str,
        /// The input bytes.
        input: Vec<u8>,
        /// What it decoded to.
        decoded: String,
        /// What that encodes to.
        reencoded: Vec<u8>,
    },
    /// A decoder accepted bytes it must refuse (or the other way round).
    #[error("{0}")]
    Decode(String),
    /// The shared instance trapped and is broken.
    #[error("the shared instance broke on tenant SQL {sql:?}: {reason}")]
    InstanceBroken {
        /// The SQL the tenant ran (possibly shortened).
        sql: String,
        /// What broke it.
        reason: String,
    },
    /// The co-tenant's data or answers changed because of another tenant.
    #[error("the co-tenant was affected by tenant SQL {sql:?}: {what}")]
    CoTenant {
        /// The SQL the tenant ran (possibly shortened).
        sql: String,
        /// What went wrong for the co-tenant.
        what: String,
    },
    /// The tenant's own database is no longer sound after its SQL.
    #[error("tenant database unsound after {sql:?}: {what}")]
    Tenant {
        /// The SQL the tenant ran (possibly shortened).
        sql: String,
        /// What is wrong.
        what: String,
    },
    /// The harness itself could not be set up (module, instance, co-tenant).
    #[error("fuzz harness setup failed: {0}")]
    Setup(String),
}
