//! Shared set-up for the pool's integration tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use vfs_pool::{KvError, KvLimits, KvStore, MemoryKv, PoolConfig};

/// A configuration for tests: the module cache shared by all test binaries
/// under the target directory, and an idle delay long enough that only an
/// explicit `reap_idle` (or a test that shortens it) destroys instances.
pub fn config(actors_per_instance: usize) -> PoolConfig {
    PoolConfig {
        actors_per_instance,
        idle_destroy: Duration::from_hours(1),
        module_cache_dir: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("module-cache")),
        ..PoolConfig::default()
    }
}

/// A fresh in-memory store.
pub fn kv() -> Arc<dyn KvStore> {
    Arc::new(MemoryKv::new())
}

/// A store whose writes can be held at a gate: once armed, the next
/// `put_batch` announces itself on `entered` and waits until `open` is called.
/// Built on tokio's sync primitives, which need no runtime, so it works on the
/// instance's worker thread.
pub struct GateKv {
    inner: MemoryKv,
    armed: AtomicBool,
    gate: Semaphore,
    pub entered: Notify,
}

impl GateKv {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            armed: AtomicBool::new(false),
            gate: Semaphore::new(0),
            entered: Notify::new(),
        })
    }

    /// The next write will block at the gate.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Lets the blocked write (and every later one) through.
    pub fn open(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

#[async_trait::async_trait]
impl KvStore for GateKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.armed.load(Ordering::SeqCst) {
            self.entered.notify_one();
            let _permit = self
                .gate
                .acquire()
                .await
                .expect("gate semaphore is never closed");
        }
        self.inner.put_batch(entries).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}
