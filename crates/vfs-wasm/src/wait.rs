//! Waiting for a store on the thread that runs the guest.
//!
//! The guest is synchronous and the `KvStore` is async, so every store call
//! made for SQLite is driven to completion right here, on the thread inside
//! the host function. Two things must never escape that wait: a store that
//! does not answer (it would hold the instance, and every tenant on it, for
//! ever) and a store that panics (the unwind would cross guest frames and
//! leave the guest's stack and SQLite's state half-torn). [`drive`] bounds
//! the first by a deadline and turns the second into a value.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Why a store future did not produce its output.
#[derive(Debug)]
pub(crate) enum Stall {
    /// Still pending at the deadline, after waiting this long.
    TimedOut(Duration),
    /// Polling it panicked, with this message.
    Panicked(String),
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::TimedOut(waited) => {
                write!(
                    f,
                    "the store did not answer within {} ms",
                    waited.as_millis()
                )
            }
            Stall::Panicked(message) => write!(f, "the store panicked: {message}"),
        }
    }
}

/// Wakes the thread that waits in [`drive`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// One waker per thread, built on first use.
    static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// Polls `future` on this thread until it is ready or `deadline` passes.
///
/// The future is always polled at least once, so a store that answers at
/// once is never refused for lateness. A panic while polling is caught and
/// returned; the caller decides what the half-run call means.
pub(crate) fn drive<F: Future>(future: F, deadline: Instant) -> Result<F::Output, Stall> {
    let started = Instant::now();
    let mut future = std::pin::pin!(future);
    WAKER.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Ready(output)) => return Ok(output),
                Ok(Poll::Pending) => {}
                Err(payload) => return Err(Stall::Panicked(take_panic(payload))),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Stall::TimedOut(now - started));
            }
            // A wake-up that comes early (or spuriously) just polls again.
            thread::park_timeout(deadline - now);
        }
    })
}

/// The message of a caught panic. The payload itself is leaked, never
/// dropped: a payload whose `Drop` panics again would otherwise unwind from
/// here, past the very fence that caught the first panic.
pub(crate) fn take_panic(payload: Box<dyn Any + Send>) -> String {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    };
    std::mem::forget(payload);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_future_is_returned_even_past_its_deadline() {
        let past = Instant::now();
        assert_eq!(drive(async { 7 }, past).unwrap(), 7);
    }

    #[test]
    fn a_pending_future_times_out_at_its_deadline() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let stall = drive(std::future::pending::<()>(), deadline).unwrap_err();
        assert!(matches!(stall, Stall::TimedOut(w) if w >= Duration::from_millis(20)));
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn a_panic_becomes_a_value() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let stall = drive(async { panic!("disk on fire") }, deadline).unwrap_err();
        assert!(
            matches!(&stall, Stall::Panicked(m) if m == "disk on fire"),
            "{stall}"
        );
    }

    /// A panic payload whose drop panics again.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            if !thread::panicking() {
                std::panic::panic_any(Bomb);
            }
        }
    }

    #[test]
    fn a_payload_that_panics_when_dropped_stays_caught() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let outcome = std::panic::catch_unwind(|| {
            drive(
                async {
                    if deadline > Instant::now() {
                        std::panic::panic_any(Bomb);
                    }
                },
                deadline,
            )
        });
        let stall = outcome.expect("nothing unwinds out of drive").unwrap_err();
        assert!(matches!(stall, Stall::Panicked(_)), "{stall}");
    }

    #[test]
    fn a_future_woken_from_another_thread_completes() {
        let (tx, rx) = futures::channel::oneshot::channel::<u32>();
        let sender = thread::spawn(move || {
            #[expect(
                clippy::disallowed_methods,
                reason = "the waiter must be parked before the wake-up comes"
            )]
            thread::sleep(Duration::from_millis(10));
            tx.send(3).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(drive(rx, deadline).unwrap().unwrap(), 3);
        sender.join().unwrap();
    }
}
