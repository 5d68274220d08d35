//! A store wrapper that panics or hangs on purpose, for the `sql_tenant`
//! target's `-- panic_after N` and `-- hang_after N` directives.
//!
//! The engine promises that a `KvStore` which panics or never answers costs
//! only the database it serves (`vfs_wasm::Error::Poisoned`) and never the
//! instance. [`ChaosKv`] lets `N` calls through, then misbehaves on every
//! later call until [`ChaosKv::heal`]: a panic with the payload
//! [`STORE_PANIC`], or a future that stays pending (it would complete once
//! healed, but the engine gives up on it at its deadline and drops it). The
//! inner store is never reached by a call that misbehaves, so nothing is
//! half-applied by the wrapper itself.
//!
//! libFuzzer's panic hook aborts the process on *any* panic, caught or not,
//! so [`quiet_store_panics`] installs a hook in front of it that lets the
//! deliberate panics pass silently (they are caught by the engine) and hands
//! every other panic on.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::task::Poll;

use bytes::Bytes;
use vfs_core::{KvError, KvLimits, KvStore};

/// The payload of every deliberate store panic.
pub const STORE_PANIC: &str = "vfs-fuzz: the tenant's store panics on purpose";

/// How the store misbehaves once armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chaos {
    /// Every call panics with [`STORE_PANIC`].
    Panic,
    /// Every call returns a future that stays pending until healed.
    Hang,
}

#[derive(Debug, Default)]
struct ChaosState {
    /// The armed misbehaviour and how many calls still succeed before it.
    armed: Option<(Chaos, u32)>,
    /// Calls that panicked so far.
    panics: u32,
    /// Calls that hung so far.
    hangs: u32,
}

/// A store over `inner` that panics or hangs after a number of calls.
pub struct ChaosKv {
    inner: Arc<dyn KvStore>,
    state: Mutex<ChaosState>,
}

impl std::fmt::Debug for ChaosKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosKv")
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

/// What one call does.
enum Admit {
    Proceed,
    Panic,
    Hang,
}

/// The boxed future an object-safe `KvStore` method returns (what
/// `#[async_trait]` generates; written out so this crate needs no macro).
type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>;

impl ChaosKv {
    /// Wraps `inner`; well behaved until [`arm`](Self::arm).
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        ChaosKv {
            inner,
            state: Mutex::new(ChaosState::default()),
        }
    }

    /// `calls` more calls succeed, then every call misbehaves as `chaos`
    /// says until [`heal`](Self::heal).
    pub fn arm(&self, chaos: Chaos, calls: u32) {
        self.lock().armed = Some((chaos, calls));
    }

    /// Stops misbehaving; a hanging future polled again would now proceed.
    pub fn heal(&self) {
        self.lock().armed = None;
    }

    /// Calls that panicked so far.
    pub fn panics(&self) -> u32 {
        self.lock().panics
    }

    /// Calls that hung so far.
    pub fn hangs(&self) -> u32 {
        self.lock().hangs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChaosState> {
        // A deliberate panic never happens under the lock, but a poisoned
        // mutex must not turn the next call into an unplanned panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Admit {
        let mut state = self.lock();
        match state.armed {
            None => Admit::Proceed,
            Some((_, ref mut left @ 1..)) => {
                *left -= 1;
                Admit::Proceed
            }
            Some((Chaos::Panic, 0)) => {
                state.panics += 1;
                Admit::Panic
            }
            Some((Chaos::Hang, 0)) => {
                state.hangs += 1;
                Admit::Hang
            }
        }
    }

    fn is_hanging(&self) -> bool {
        matches!(self.lock().armed, Some((Chaos::Hang, 0)))
    }

    /// Decides the call's fate; panics (outside the lock) or waits while
    /// hanging.
    async fn gate(&self) {
        match self.admit() {
            Admit::Proceed => {}
            Admit::Panic => std::panic::panic_any(STORE_PANIC),
            Admit::Hang => {
                // No waker is kept: nothing will wake the caller, whose
                // deadline ends the wait.
                std::future::poll_fn(|_| {
                    if self.is_hanging() {
                        Poll::Pending
                    } else {
                        Poll::Ready(())
                    }
                })
                .await;
            }
        }
    }
}

impl KvStore for ChaosKv {
    fn get_batch<'life0, 'life1, 'async_trait>(
        &'life0 self,
        keys: &'life1 [Bytes],
    ) -> StoreFuture<'async_trait, Vec<Option<Bytes>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.gate().await;
            self.inner.get_batch(keys).await
        })
    }

    fn put_batch<'life0, 'life1, 'async_trait>(
        &'life0 self,
        entries: &'life1 [(Bytes, Bytes)],
    ) -> StoreFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.gate().await;
            self.inner.put_batch(entries).await
        })
    }

    fn delete_batch<'life0, 'life1, 'async_trait>(
        &'life0 self,
        keys: &'life1 [Bytes],
    ) -> StoreFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.gate().await;
            self.inner.delete_batch(keys).await
        })
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

/// Installs (once per process) a panic hook that stays silent for the
/// deliberate [`STORE_PANIC`] and hands every other panic to the hook that
/// was installed before (libFuzzer's, which aborts; or the default one).
pub fn quiet_store_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&STORE_PANIC) {
                previous(info);
            }
        }));
    });
}
