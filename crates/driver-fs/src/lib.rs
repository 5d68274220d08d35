//! Local-disk storage for vfs-pool actors (arrives with the driver-fs issue).

pub use vfs_pool;
