//! Local-disk storage for vfs-pool actors: the embedded default.
//!
//! Every actor's SQLite pages live in ONE embedded, crash-safe database file
//! (`<dir>/actors.redb`), each actor in its own key namespace. One file
//! instead of one per actor lets the commits of many actors share one fsync
//! (group commit), and keeps actor ids out of the file system entirely: an
//! id is data, so `../x`, `a/b` or NUL bytes can never reach a path.
//!
//! - [`FsDriver`]: the [`ActorDriver`](vfs_pool::ActorDriver) a runtime uses
//!   (open an actor's database, delete an actor, list, shut down).
//! - [`FsStorage`]: the storage alone, an
//!   [`ActorStorage`](vfs_pool::ActorStorage), with [`FsStats`] counters.
//!
//! A write is acknowledged only when it is durable; a batch of thousands of
//! pages commits as one transaction (see [`MAX_BATCH_KEYS`]).

mod codec;
mod driver;
mod error;
mod faults;
mod store;

pub use driver::FsDriver;
pub use error::{Error, Result};
pub use faults::FileFaults;
pub use store::{
    DATA_FILE, FsOptions, FsStats, FsStorage, LAYOUT_VERSION, MAX_BATCH_KEYS, MAX_VALUE_BYTES,
};

pub use vfs_pool;
