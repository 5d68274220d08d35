//! Where an instance's calls run.
//!
//! A wasm instance runs SQLite synchronously, and SQLite's VFS calls block on
//! the tenant's key-value store. Each instance sits behind an async mutex
//! (its [`Seat`]), and a call runs on one of two threads:
//!
//! - **Inline**, on a multi-thread tokio runtime, when the instance is free:
//!   the caller takes the lock and runs the call on its own thread inside
//!   [`tokio::task::block_in_place`], which hands that worker's other tasks
//!   to another thread for as long as the call blocks. No thread hop.
//! - **On the instance's thread** otherwise: when the instance is busy (the
//!   thread then serves the queue back to back, cheaper than one hand-over
//!   of a runtime worker per queued call), past
//!   [`PoolConfig::max_inline_calls`](crate::PoolConfig::max_inline_calls),
//!   with no runtime or on a current-thread runtime (where blocking the
//!   caller would stall every task), and for the closes whose wait must
//!   stay bounded (a close waits on a reply it can give up on, see
//!   [`await_progress`]). Callers send closures to the thread and await the
//!   reply on a oneshot channel, so callers waiting for a busy instance are
//!   tasks, not threads.
//!
//! Either way a slow store stalls only the tenants of its own instance.
//!
//! The thread also creates the instance and drops it. It enters the
//! caller's tokio runtime (when there is one) so that stores built on tokio
//! (timers, sockets) work when their futures are polled there; the futures
//! themselves are driven on the thread that runs the call, never on a
//! tokio worker that is not inside `block_in_place`.
//!
//! Each worker shares a [`Health`] with the pool. A call marks it broken
//! when its guest trapped or the call panicked (a panicking call also drops
//! the instance: an instance whose call unwound half-way is not run again),
//! and records when the running call started. The pool marks it stuck when
//! one call held the instance past the stuck bound (see [`await_progress`]):
//! a queue of calls that each end in time is progress, however long it is;
//! a single call that never ends is not. Whichever thread runs a call
//! records, thread-locally, which worker it is serving, so that a store
//! calling back into its own instance gets [`Error::Reentrant`] instead of
//! waiting for a lock held by the very call that waits for it.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use vfs_wasm::{Instance, InstanceConfig, ModuleConfig, SqliteModule};

use crate::{Error, Result};

/// A unit of work for the instance's thread.
type Job = Box<dyn FnOnce(&mut Instance) + Send>;

/// The instance, shared by its thread and the callers that run calls
/// inline. `None` until the thread has created it, and again once it is
/// dropped (a call panicked, or the thread is finishing).
type Seat = Arc<tokio::sync::Mutex<Option<Instance>>>;

/// Why a call did not run: the instance is gone, or the call panicked.
struct NotRun;

/// What the instance's thread receives.
enum Message {
    /// Run this job.
    Run(Job),
    /// Finish: jobs queued before this one have run; drop the instance and exit.
    Stop,
}

/// Ids of workers, unique in the process (pools number their instances
/// each from zero, so those ids cannot tell two pools' workers apart).
static NEXT_WORKER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The workers this thread is running a call for, innermost last: its
    /// own worker on an instance's thread, and every instance whose call is
    /// running here (a store may call another instance from inside a call,
    /// which may call a third, and so on).
    static SERVING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread is running a call of worker `id` (so a call to it
/// from here would wait for itself).
fn serving(id: u64) -> bool {
    SERVING.with_borrow(|ids| ids.contains(&id))
}

/// Runs `body` counted in [`SERVING`] as a call of worker `id`.
fn as_serving<R>(id: u64, body: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            SERVING.with_borrow_mut(Vec::pop);
        }
    }
    SERVING.with_borrow_mut(|ids| ids.push(id));
    let _pop = Pop;
    body()
}

/// How many calls may run inline at once, in one pool.
#[derive(Debug)]
pub(crate) struct InlineLimit {
    running: AtomicUsize,
    max: usize,
}

impl InlineLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            running: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more inline call, if there is one.
    fn enter(&self) -> Option<InlineSlot<'_>> {
        if self.running.fetch_add(1, Ordering::SeqCst) < self.max {
            Some(InlineSlot(self))
        } else {
            self.running.fetch_sub(1, Ordering::SeqCst);
            None
        }
    }
}

/// One inline call counted in its [`InlineLimit`] until dropped.
struct InlineSlot<'a>(&'a InlineLimit);

impl Drop for InlineSlot<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Start-up state of a worker, observed by the acquires waiting for it.
#[derive(Debug, Clone)]
pub(crate) enum Startup {
    /// The instance is being created.
    Starting,
    /// The instance is serving.
    Ready,
    /// The instance could not be created, for this reason.
    Failed(Arc<vfs_wasm::Error>),
}

/// Whether an instance may take new actors, shared by its thread and the pool.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Why the instance must take no new actors; set once, never cleared.
    broken: OnceLock<String>,
    /// The thread did not answer in time: nothing may wait for it again.
    stuck: AtomicBool,
    /// When the running job started, in microseconds since [`epoch`], plus
    /// one; zero while the thread waits for work.
    busy_since: AtomicU64,
}

/// The origin of [`Health::busy_since`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Health {
    fn start_job(&self) {
        let since = u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.busy_since.store(since + 1, Ordering::SeqCst);
    }

    fn end_job(&self) {
        self.busy_since.store(0, Ordering::SeqCst);
    }

    /// How long the running job has held the thread; `None` between jobs.
    pub(crate) fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::SeqCst) {
            0 => None,
            since => {
                let started = Duration::from_micros(since - 1);
                Some(epoch().elapsed().saturating_sub(started))
            }
        }
    }

    /// Marks the instance broken; the first reason is kept.
    pub(crate) fn mark_broken(&self, reason: impl Into<String>) {
        let _ = self.broken.set(reason.into());
    }

    /// Marks the instance's thread stuck (and so the instance broken).
    pub(crate) fn mark_stuck(&self, reason: impl Into<String>) {
        self.stuck.store(true, Ordering::SeqCst);
        self.mark_broken(reason);
    }

    /// Why the instance is broken, if it is.
    pub(crate) fn broken(&self) -> Option<&str> {
        self.broken.get().map(String::as_str)
    }

    /// Whether the thread was found stuck.
    pub(crate) fn is_stuck(&self) -> bool {
        self.stuck.load(Ordering::SeqCst)
    }
}

/// The owning side of an instance's thread.
pub(crate) struct Worker {
    jobs: mpsc::Sender<Message>,
    seat: Seat,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread ends (its sender is dropped last).
    exited: mpsc::Receiver<()>,
    startup: watch::Receiver<Startup>,
    health: Arc<Health>,
    inline: Arc<InlineLimit>,
    id: u64,
}

/// A cloneable sender of jobs to one worker.
#[derive(Clone)]
pub(crate) struct WorkerSender {
    jobs: mpsc::Sender<Message>,
    seat: Seat,
    health: Arc<Health>,
    inline: Arc<InlineLimit>,
    id: u64,
}

/// A worker told to stop, whose thread has yet to be joined.
pub(crate) struct Stopping {
    thread: JoinHandle<()>,
    exited: mpsc::Receiver<()>,
    health: Arc<Health>,
}

impl Worker {
    /// Spawns the thread, which creates the instance and then serves jobs
    /// until every sender is dropped, a `Stop` arrives or a job panics.
    pub(crate) fn spawn(
        name: String,
        module: ModuleConfig,
        config: InstanceConfig,
        live: &Arc<AtomicUsize>,
        inline: &Arc<InlineLimit>,
    ) -> Result<Worker> {
        let (jobs, receiver) = mpsc::channel::<Message>();
        let (startup_tx, startup) = watch::channel(Startup::Starting);
        let (exit_tx, exited) = mpsc::channel::<()>();
        let health = Arc::new(Health::default());
        let seat: Seat = Arc::new(tokio::sync::Mutex::new(None));
        let seat_in_thread = Arc::clone(&seat);
        let id = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
        let runtime = tokio::runtime::Handle::try_current().ok();
        live.fetch_add(1, Ordering::SeqCst);
        let live_in_thread = Arc::clone(live);
        let health_in_thread = Arc::clone(&health);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            // Declared first, dropped last: its end tells `join_within` that
            // the thread is done.
            let _exit = exit_tx;
            SERVING.with_borrow_mut(|ids| ids.push(id));
            {
                let _runtime = runtime.as_ref().map(tokio::runtime::Handle::enter);
                serve(
                    &Served {
                        module: &module,
                        seat: &seat_in_thread,
                        receiver: &receiver,
                        startup: &startup_tx,
                        health: &health_in_thread,
                        id,
                    },
                    config,
                );
            }
            live_in_thread.fetch_sub(1, Ordering::SeqCst);
        });
        match spawned {
            Ok(thread) => Ok(Worker {
                jobs,
                seat,
                thread: Some(thread),
                exited,
                startup,
                health,
                inline: Arc::clone(inline),
                id,
            }),
            Err(e) => {
                live.fetch_sub(1, Ordering::SeqCst);
                Err(Error::InstanceStart(Arc::new(e)))
            }
        }
    }

    pub(crate) fn sender(&self) -> WorkerSender {
        WorkerSender {
            jobs: self.jobs.clone(),
            seat: Arc::clone(&self.seat),
            health: Arc::clone(&self.health),
            inline: Arc::clone(&self.inline),
            id: self.id,
        }
    }

    pub(crate) fn startup(&self) -> watch::Receiver<Startup> {
        self.startup.clone()
    }

    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// Asks the thread to finish the jobs queued so far, drop the instance and
    /// exit (senders held elsewhere then get an error). Returns the thread to
    /// join.
    pub(crate) fn stop(mut self) -> Option<Stopping> {
        // A send error means the thread is already gone, which is the goal.
        let _ = self.jobs.send(Message::Stop);
        Some(Stopping {
            thread: self.thread.take()?,
            exited: self.exited,
            health: self.health,
        })
    }
}

/// How long to wait next for a worker that must not be declared stuck
/// before one of its jobs has held it for `stuck_after`; `None` once one has.
fn patience(health: &Health, stuck_after: Duration) -> Option<Duration> {
    match health.busy_for() {
        Some(busy) => stuck_after.checked_sub(busy).filter(|left| !left.is_zero()),
        // Between jobs: the next one (perhaps the awaited one) starts now.
        None => Some(stuck_after),
    }
}

/// Awaits `reply` (the answer of a job sent to `health`'s worker) for as
/// long as the worker makes progress: gives up, returning `None`, only once
/// a single job has held the thread for `stuck_after`. Jobs that each end
/// in time are waited for however many are queued ahead.
pub(crate) async fn await_progress<T>(
    health: &Health,
    reply: impl std::future::Future<Output = T>,
    stuck_after: Duration,
) -> Option<T> {
    let mut reply = std::pin::pin!(reply);
    loop {
        let wait = patience(health, stuck_after)?;
        if let Ok(answer) = tokio::time::timeout(wait, reply.as_mut()).await {
            return Some(answer);
        }
    }
}

/// Joins the stopped threads; a thread whose running job has held it for
/// `stuck_after` (or that was found stuck before) is detached and logged
/// instead: it keeps running until its store returns, then exits on its
/// own. Blocks the calling thread while the threads make progress.
pub(crate) fn join_within(stopping: Vec<Stopping>, stuck_after: Duration) {
    for worker in stopping {
        let mut exited = false;
        while !worker.health.is_stuck() {
            let Some(wait) = patience(&worker.health, stuck_after) else {
                break;
            };
            match worker.exited.recv_timeout(wait) {
                Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) => {
                    exited = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        if !exited {
            worker
                .health
                .mark_stuck("one call held its thread past the stuck bound");
            tracing::error!(
                thread = worker.thread.thread().name().unwrap_or("?"),
                "an instance worker thread did not stop in time (a store call \
                 hangs?); it is detached and ends when that call returns"
            );
        } else if worker.thread.join().is_err() {
            tracing::error!("an instance worker thread panicked");
        }
    }
}

/// What the instance's thread works with.
struct Served<'a> {
    module: &'a ModuleConfig,
    seat: &'a Seat,
    receiver: &'a mpsc::Receiver<Message>,
    startup: &'a watch::Sender<Startup>,
    health: &'a Health,
    id: u64,
}

/// The thread's body: create the instance, run jobs in order, and drop the
/// instance at the end (after the calls that hold its lock have finished).
fn serve(served: &Served<'_>, config: InstanceConfig) {
    let created = SqliteModule::shared(served.module).and_then(|m| Instance::new(&m, config));
    match created {
        Ok(instance) => *served.seat.blocking_lock() = Some(instance),
        Err(e) => {
            tracing::warn!(error = %e, "instance start failed");
            served.startup.send_replace(Startup::Failed(Arc::new(e)));
            return;
        }
    }
    served.startup.send_replace(Startup::Ready);
    while let Ok(Message::Run(job)) = served.receiver.recv() {
        let mut seat = served.seat.blocking_lock();
        if run(&mut seat, served.health, served.id, job).is_err() {
            // The instance is gone: the queued callers and every later one
            // get `InstanceBroken` (their replies are dropped with the jobs).
            return;
        }
    }
    let instance = served.seat.blocking_lock().take();
    drop(instance);
}

/// Runs `f` on the instance in `seat` (whose lock the caller holds) as
/// worker `id`, on the calling thread.
///
/// A trap marks the instance broken; a panic does too, and drops the
/// instance: the engine reports errors as values, so a panic is a bug or a
/// store that unwound through the instance, whose state can no longer be
/// trusted. `Err` when the instance was already gone or `f` panicked.
fn run<T>(
    seat: &mut Option<Instance>,
    health: &Health,
    id: u64,
    f: impl FnOnce(&mut Instance) -> T,
) -> Result<T, NotRun> {
    let instance = seat.as_mut().ok_or(NotRun)?;
    health.start_job();
    // A call made by a store from inside another call on this thread is a
    // call of its own: the outer call's store deadline does not cut it.
    let outcome = as_serving(id, || {
        vfs_core::without_deadline(|| catch_unwind(AssertUnwindSafe(|| f(instance))))
    });
    health.end_job();
    match outcome {
        Ok(answer) => {
            if instance.is_broken() {
                health.mark_broken("its WebAssembly guest trapped");
            }
            Ok(answer)
        }
        Err(panic) => {
            let reason = format!(
                "a call panicked on its instance: {}",
                panic_message(&*panic)
            );
            tracing::error!(%reason, "the instance is dropped");
            health.mark_broken(reason);
            *seat = None;
            Err(NotRun)
        }
    }
}

/// Whether a call made here may run inline: on a multi-thread runtime,
/// where [`tokio::task::block_in_place`] can move the worker's other tasks
/// away while the call blocks.
fn inline_here() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The message of a panic payload, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl WorkerSender {
    /// Runs `f` on the instance and returns its result: inline on a
    /// multi-thread runtime, on the instance's thread otherwise (see the
    /// module's documentation).
    ///
    /// Called while this instance runs a call on this thread (a store
    /// calling back into the pool), it fails at once with
    /// [`Error::Reentrant`]: it would wait for the very call that waits for
    /// it.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Instance) -> T + Send + 'static,
    {
        if serving(self.id) {
            return Err(Error::Reentrant);
        }
        match self.try_inline(f) {
            Ok(answer) => answer,
            Err(f) => self.call_queued(f).await,
        }
    }

    /// Like [`call`](Self::call), for a call whose work borrows from the
    /// caller: `inline` runs if the call can run inline, and only
    /// otherwise does `queued` make the owned work the instance's thread
    /// runs. Spares the copies of the SQL and parameters on the common
    /// path.
    pub(crate) async fn call_either<T, B, Q, F>(&self, inline: B, queued: Q) -> Result<T>
    where
        T: Send + 'static,
        B: FnOnce(&mut Instance) -> T,
        Q: FnOnce() -> F,
        F: FnOnce(&mut Instance) -> T + Send + 'static,
    {
        if serving(self.id) {
            return Err(Error::Reentrant);
        }
        match self.try_inline(inline) {
            Ok(answer) => answer,
            Err(_) => self.call_queued(queued()).await,
        }
    }

    /// Runs `f` on the calling thread if it may (see [`inline_here`]) and
    /// finds the instance free; hands `f` back otherwise.
    fn try_inline<T, F>(&self, f: F) -> std::result::Result<Result<T>, F>
    where
        F: FnOnce(&mut Instance) -> T,
    {
        let slot = if inline_here() {
            self.inline.enter()
        } else {
            None
        };
        let Some(_slot) = slot else {
            return Err(f);
        };
        // Only a call that finds its instance free runs inline. Under
        // contention the instance's thread serves the queue back to back,
        // which costs less than handing a runtime worker's tasks to another
        // thread (what `block_in_place` does) once per queued call. The lock
        // is fair: this never overtakes a call waiting for it.
        let Ok(mut seat) = self.seat.try_lock() else {
            return Err(f);
        };
        Ok(
            tokio::task::block_in_place(|| run(&mut seat, &self.health, self.id, f))
                .map_err(|NotRun| self.gone()),
        )
    }

    /// Runs `f` on the instance's thread and returns its result, whatever
    /// the runtime: the reply is a future that the caller can stop waiting
    /// for (see [`await_progress`]), which an inline call is not.
    pub(crate) async fn call_queued<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Instance) -> T + Send + 'static,
    {
        if serving(self.id) {
            return Err(Error::Reentrant);
        }
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |instance| {
            // The caller may have gone away; nobody to tell then.
            let _ = reply.send(f(instance));
        });
        self.jobs.send(Message::Run(job)).map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())
    }

    /// Like [`call`](Self::call), but refused with [`Error::InstanceBroken`]
    /// on an instance that is broken or stuck.
    pub(crate) async fn call_healthy<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Instance) -> T + Send + 'static,
    {
        self.refuse_broken()?;
        self.call(f).await
    }

    /// [`call_either`](Self::call_either), refused like
    /// [`call_healthy`](Self::call_healthy).
    pub(crate) async fn call_healthy_either<T, B, Q, F>(&self, inline: B, queued: Q) -> Result<T>
    where
        T: Send + 'static,
        B: FnOnce(&mut Instance) -> T,
        Q: FnOnce() -> F,
        F: FnOnce(&mut Instance) -> T + Send + 'static,
    {
        self.refuse_broken()?;
        self.call_either(inline, queued).await
    }

    /// [`Error::InstanceBroken`] once the instance is broken or stuck.
    fn refuse_broken(&self) -> Result<()> {
        match self.health.broken() {
            Some(reason) => Err(Error::InstanceBroken {
                reason: reason.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The instance's health, shared with its thread.
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// The error for a job that did not run or whose reply never came.
    fn gone(&self) -> Error {
        match self.health.broken() {
            Some(reason) => Error::InstanceBroken {
                reason: reason.to_owned(),
            },
            None => Error::InstanceGone,
        }
    }
}

/// Waits until the worker has started or failed.
pub(crate) async fn wait_ready(mut startup: watch::Receiver<Startup>) -> Result<()> {
    let state = startup
        .wait_for(|s| !matches!(s, Startup::Starting))
        .await
        .map_err(|_| Error::InstanceGone)?
        .clone();
    match state {
        Startup::Failed(reason) => Err(Error::InstanceStart(reason)),
        Startup::Ready | Startup::Starting => Ok(()),
    }
}
