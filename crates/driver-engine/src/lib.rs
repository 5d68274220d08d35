//! PostgreSQL-backed storage for vfs-pool actors (arrives with the driver-engine issue).

pub use vfs_pool;
