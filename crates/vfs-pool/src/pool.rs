//! Assignment of actors to instances and the instances' lifecycle.
//!
//! All bookkeeping lives in one `State` behind one mutex that is never held
//! across an `.await`: an acquire reserves its seat (and, when every instance
//! is full, creates the next instance) in one critical section, which is what
//! makes N concurrent acquires of distinct actors create exactly
//! `ceil(N / actors_per_instance)` instances, and concurrent acquires of one
//! actor share one handle.
//!
//! An instance that broke (its guest trapped, a call panicked on its thread)
//! or whose thread hangs (one call held it past the bound of
//! [`PoolConfig::close_timeout`]) is skipped when seating actors and is
//! destroyed as soon as its last actor is released and its last operation
//! ended. Release, close and shutdown wait for an instance's thread only
//! while its calls keep ending within that bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle as TaskHandle;
use tracing::Instrument;
use vfs_core::{KvError, KvStore};
use vfs_wasm::{DbId, ModuleConfig};

use crate::flush::{Unsettled, WriteBehind};
use crate::handle::PooledHandle;
use crate::idle::{self, Activity};
use crate::worker::{self, InlineLimit, Startup, Stopping, Worker, WorkerSender};
use crate::{Error, PoolConfig, Result};

/// Longest accepted actor id, in bytes.
pub const MAX_ACTOR_ID_LEN: usize = 256;

/// A pool of shared SQLite instances serving many actors.
///
/// Cheap to share: wrap it in an `Arc` and call it from any task. See the
/// crate docs for an example.
pub struct SqliteVfsPool {
    shared: Arc<Shared>,
}

/// What an instance looks like from outside, for dashboards and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The pool-assigned instance id (increasing, never reused).
    pub id: u64,
    /// Actors currently assigned to the instance.
    pub actors: usize,
    /// Short names that can never be reused in this instance because a close
    /// failed while they were in use.
    pub poisoned_names: usize,
    /// Bytes of guest linear memory the instance holds; 0 for a broken
    /// instance (its thread is not asked).
    pub guest_memory_bytes: u64,
    /// Whether the instance is broken (its guest trapped, a call panicked on
    /// its thread, or its thread hangs): it takes no new actors, its actors'
    /// calls fail with [`Error::InstanceBroken`], and it is destroyed once
    /// its last actor is released.
    pub broken: bool,
}

pub(crate) struct Shared {
    config: PoolConfig,
    module: ModuleConfig,
    state: Mutex<State>,
    /// Set once, under the state lock, by `shutdown` or the pool's drop;
    /// read without it by every operation.
    shutting_down: AtomicBool,
    live_workers: Arc<AtomicUsize>,
    inline: Arc<InlineLimit>,
    instance_count: watch::Sender<usize>,
    /// Write-behind queues of databases being closed, or closed while a
    /// flush was still running, by actor id. Registered before the close
    /// awaits anything and dropped once quiet: the actor opens again (or is
    /// deleted) only once they are all quiet, so a late write can never
    /// land on top of newer data.
    unsettled: Mutex<HashMap<String, Vec<Arc<Closing>>>>,
    /// Whether the task that releases idle databases' memory was started
    /// (by the first acquire inside a runtime; see [`crate::idle`]).
    sweeper_started: AtomicBool,
}

#[derive(Default)]
struct State {
    next_instance: u64,
    next_timer: u64,
    instances: BTreeMap<u64, Slot>,
    /// Instances taken out of `instances` whose threads are still being joined.
    tearing_down: usize,
    actors: HashMap<String, Arc<ActorState>>,
}

/// One instance and its bookkeeping.
struct Slot {
    worker: Worker,
    occupancy: Arc<Occupancy>,
    names: ShortNames,
    idle_timer: Option<(u64, TaskHandle<()>)>,
}

/// Who is using an instance: its actors and the operations running on it.
///
/// Operations are counted without the pool's lock (twice per statement,
/// so it matters); what must never happen is an operation running on an
/// instance that is being destroyed. An operation counts itself in `ops`
/// and then checks `retired`; a destroyer sets `retired` and then checks
/// `ops` (see [`try_retire`](Self::try_retire)). Both sides use sequentially
/// consistent atomics, so at least one of them sees the other and backs
/// off. `actors` is written under the pool's lock and read without it by
/// an operation that ends, to decide whether to start the idle countdown.
#[derive(Debug, Default)]
pub(crate) struct Occupancy {
    actors: AtomicUsize,
    ops: AtomicUsize,
    retired: AtomicBool,
}

impl Occupancy {
    fn actors(&self) -> usize {
        self.actors.load(Ordering::SeqCst)
    }

    fn is_busy(&self) -> bool {
        self.ops.load(Ordering::SeqCst) != 0
    }

    /// Marks the instance retired if no operation is running on it; every
    /// later operation then fails. Returns whether it was retired.
    fn try_retire(&self) -> bool {
        self.retired.store(true, Ordering::SeqCst);
        if self.is_busy() {
            self.retired.store(false, Ordering::SeqCst);
            false
        } else {
            true
        }
    }

    /// Marks the instance retired whatever runs on it (the pool is
    /// shutting down or the instance failed to start).
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }
}

/// Short names of the actors of one instance: the names their databases have
/// inside the instance. Recycled after a clean release; a name whose close
/// failed may still be registered in the instance, so it is never reused.
#[derive(Default)]
struct ShortNames {
    next: u32,
    free: BTreeSet<u32>,
    poisoned: BTreeSet<u32>,
}

impl ShortNames {
    fn take(&mut self) -> u32 {
        self.free.pop_first().unwrap_or_else(|| {
            let n = self.next;
            self.next += 1;
            n
        })
    }

    fn give_back(&mut self, name: u32, poisoned: bool) {
        if poisoned {
            self.poisoned.insert(name);
        } else {
            self.free.insert(name);
        }
    }
}

/// The state an actor's handles share until it is released.
pub(crate) struct ActorState {
    pub(crate) id: String,
    pub(crate) instance: u64,
    pub(crate) short_name: u32,
    pub(crate) worker: WorkerSender,
    occupancy: Arc<Occupancy>,
    startup: watch::Receiver<Startup>,
    pub(crate) released: AtomicBool,
    /// Set when closing one of the actor's databases failed: its short name
    /// must then never be reused in this instance.
    pub(crate) poisoned: AtomicBool,
    pub(crate) db: Mutex<DbSlot>,
    /// The write-behind queue of the open database, if it has one.
    pub(crate) behind: Mutex<Option<Arc<WriteBehind>>>,
    /// Its calls, for releasing an idle database's memory.
    pub(crate) activity: Activity,
}

/// The write-behind queue of a database being closed.
pub(crate) struct Closing {
    behind: Arc<WriteBehind>,
    /// Set once its close has finished (or was abandoned): nothing more
    /// will be queued.
    done: AtomicBool,
    /// Woken when `done` is set.
    finished: tokio::sync::Notify,
}

impl Closing {
    /// Whether nothing more can reach the store through it.
    fn is_settled(&self) -> bool {
        self.done.load(Ordering::SeqCst) && self.behind.is_quiet()
    }

    /// Waits until [`is_settled`](Self::is_settled).
    async fn settled(&self) {
        loop {
            let changed = self.behind.changed();
            let finished = self.finished.notified();
            if self.is_settled() {
                return;
            }
            if self.done.load(Ordering::SeqCst) {
                changed.await;
            } else {
                finished.await;
            }
        }
    }

    /// Marks its close finished.
    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.finished.notify_waiters();
    }
}

/// Ends a close that was abandoned (its future dropped) before it finished:
/// the queue is poisoned, so nothing the guest's close might still write is
/// accepted, and marked done.
struct ClosingGuard(Option<Arc<Closing>>);

impl Drop for ClosingGuard {
    fn drop(&mut self) {
        if let Some(closing) = self.0.take() {
            closing.behind.poison_now(KvError::Unavailable {
                message: "the close of this database was abandoned".into(),
            });
            closing.finish();
        }
    }
}

/// The actor's database, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbSlot {
    Empty,
    Opening,
    Open(DbId),
}

/// Counts an operation as in flight on its instance until dropped, so the
/// instance is never destroyed under a running call.
pub(crate) struct OpGuard<'a> {
    shared: &'a Arc<Shared>,
    actor: &'a ActorState,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        let occupancy = &self.actor.occupancy;
        // Only the last operation on an instance with no actors left takes
        // the pool's lock, to start the idle countdown.
        if occupancy.ops.fetch_sub(1, Ordering::SeqCst) == 1 && occupancy.actors() == 0 {
            let mut state = self.shared.state.lock();
            self.shared.arm_idle_timer(&mut state, self.actor.instance);
        }
    }
}

impl SqliteVfsPool {
    /// Creates an empty pool; instances are created by the first acquires.
    ///
    /// Fails for an unusable configuration, such as zero actors per instance.
    pub fn new(config: PoolConfig) -> Result<Self> {
        config.validate()?;
        let module = ModuleConfig {
            cache_dir: config.module_cache_dir.clone(),
        };
        let inline = Arc::new(InlineLimit::new(config.max_inline_calls));
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                module,
                state: Mutex::new(State::default()),
                shutting_down: AtomicBool::new(false),
                live_workers: Arc::new(AtomicUsize::new(0)),
                inline,
                instance_count: watch::channel(0).0,
                unsettled: Mutex::new(HashMap::new()),
                sweeper_started: AtomicBool::new(false),
            }),
        })
    }

    /// Waits (bounded) for a write of the actor's previous database that a
    /// close gave up waiting for; see `Shared::settle_earlier`.
    pub(crate) async fn settle_earlier(&self, actor_id: &str) -> Result<()> {
        self.shared.settle_earlier(actor_id).await
    }

    /// The configuration this pool was created with.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Returns the actor's handle, assigning the actor to an instance first
    /// if it has none: the fullest instance with room, or a new instance when
    /// all are full.
    ///
    /// Sticky: until [`PooledHandle::release`], every acquire of the same id
    /// returns a handle to the same state, even when called concurrently.
    #[tracing::instrument(name = "acquire", skip(self), fields(instance))]
    pub async fn acquire(&self, actor_id: &str) -> Result<PooledHandle> {
        validate_actor_id(actor_id)?;
        self.seated(actor_id).await
    }

    /// A seat of the pool's own, for a database no actor id names (an
    /// archive's private copy, see [`crate::archive`]). Its id starts with a
    /// NUL byte, which [`validate_actor_id`] refuses, so it can never be an
    /// actor's; it holds a place on an instance like any actor until
    /// released.
    pub(crate) async fn acquire_private(&self, purpose: &str) -> Result<PooledHandle> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!("\0{purpose}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.seated(&id).await
    }

    /// Finds or creates the seat of `id` and waits until its instance runs.
    async fn seated(&self, id: &str) -> Result<PooledHandle> {
        let actor = self.shared.seat(id)?;
        self.shared.start_sweeper();
        tracing::Span::current().record("instance", actor.instance);
        if let Err(e) = worker::wait_ready(actor.startup.clone()).await {
            self.shared.forget_instance(actor.instance);
            return Err(e);
        }
        Ok(PooledHandle::new(Arc::clone(&self.shared), actor))
    }

    /// Number of live instances (including ones still starting).
    pub fn instance_count(&self) -> usize {
        self.shared.state.lock().instances.len()
    }

    /// Number of actors currently assigned.
    pub fn actor_count(&self) -> usize {
        self.shared.state.lock().actors.len()
    }

    /// Number of instance worker threads still running, including threads
    /// that [`shutdown`](Self::shutdown) or an instance's destruction gave up
    /// waiting for (see [`PoolConfig::close_timeout`]; they end when the
    /// store call they are stuck in returns). Zero after `shutdown` returns
    /// unless a store hangs.
    pub fn worker_threads(&self) -> usize {
        self.shared.live_workers.load(Ordering::SeqCst)
    }

    /// A receiver that sees the instance count change, for autoscalers and
    /// dashboards that react to scale-up and idle scale-down without polling.
    /// It counts instances until their threads are joined (or, for a thread
    /// stuck in a store call, given up on), so once it reads zero,
    /// [`worker_threads`](Self::worker_threads) is zero too unless a store
    /// hangs.
    pub fn watch_instance_count(&self) -> watch::Receiver<usize> {
        self.shared.instance_count.subscribe()
    }

    /// A snapshot of every serving instance (started, not yet destroyed):
    /// its actors, guest memory and health. Broken instances are listed
    /// without asking their threads, so a hung thread never stalls this.
    pub async fn instances(&self) -> Vec<InstanceInfo> {
        let slots: Vec<(InstanceInfo, WorkerSender, watch::Receiver<Startup>)> = {
            let state = self.shared.state.lock();
            state
                .instances
                .iter()
                .map(|(id, slot)| {
                    let info = InstanceInfo {
                        id: *id,
                        actors: slot.occupancy.actors(),
                        poisoned_names: slot.names.poisoned.len(),
                        guest_memory_bytes: 0,
                        broken: slot.worker.health().broken().is_some(),
                    };
                    (info, slot.worker.sender(), slot.worker.startup())
                })
                .collect()
        };
        let mut out = Vec::with_capacity(slots.len());
        for (mut info, sender, startup) in slots {
            if !matches!(*startup.borrow(), Startup::Ready) {
                continue;
            }
            if !info.broken {
                match sender.call(|i| i.guest_memory_bytes()).await {
                    Ok(bytes) => info.guest_memory_bytes = bytes,
                    // Destroyed meanwhile.
                    Err(Error::InstanceGone) => continue,
                    // Broke meanwhile.
                    Err(_) => info.broken = true,
                }
            }
            out.push(info);
        }
        out
    }

    /// Destroys every instance that has no actors and no operations right
    /// now, without waiting for its idle delay; returns how many. Use it to
    /// give memory back at once (under memory pressure, before a snapshot).
    pub async fn reap_idle(&self) -> usize {
        let slots: Vec<Slot> = {
            let mut state = self.shared.state.lock();
            let idle: Vec<u64> = state
                .instances
                .iter()
                .filter(|(_, s)| s.occupancy.actors() == 0 && s.occupancy.try_retire())
                .map(|(id, _)| *id)
                .collect();
            take_slots(&mut state, &idle)
        };
        let reaped = slots.len();
        self.shared.destroy(abort_timers(slots), "reap").await;
        reaped
    }

    /// Test hook, not part of the API: makes the next job on instance
    /// `instance_id` panic, the way a bug in a job or a store unwinding
    /// through the instance would. The instance is then broken (see
    /// [`InstanceInfo::broken`]). Does nothing for an unknown id.
    #[doc(hidden)]
    pub async fn panic_instance_for_test(&self, instance_id: u64) {
        let sender = self
            .shared
            .state
            .lock()
            .instances
            .get(&instance_id)
            .map(|slot| slot.worker.sender());
        if let Some(sender) = sender {
            let _ = sender
                .call(|_| panic!("injected by SqliteVfsPool::panic_instance_for_test"))
                .await;
        }
    }

    /// Stops the pool: later acquires fail with [`Error::ShuttingDown`],
    /// calls already queued finish, every actor's database is closed, and
    /// every worker thread is joined before this returns. Idempotent.
    ///
    /// Even when a store hangs it returns: a thread one of whose calls held
    /// it past the bound of [`PoolConfig::close_timeout`] is given up on
    /// (the closes run concurrently, so each instance costs that bound at
    /// most once for its closes and once for its join) and detached, logged
    /// and still counted by [`worker_threads`](Self::worker_threads) until
    /// it ends.
    #[tracing::instrument(name = "shutdown", skip(self))]
    pub async fn shutdown(&self) {
        let actors: Vec<Arc<ActorState>> = {
            let mut state = self.shared.state.lock();
            self.shared.shutting_down.store(true, Ordering::SeqCst);
            state.actors.drain().map(|(_, a)| a).collect()
        };
        let mut closes = tokio::task::JoinSet::new();
        for actor in actors {
            let shared = Arc::clone(&self.shared);
            closes.spawn(async move { shared.close_actor(&actor).await });
        }
        while closes.join_next().await.is_some() {}
        let slots = {
            let mut state = self.shared.state.lock();
            let all: Vec<u64> = state.instances.keys().copied().collect();
            take_slots(&mut state, &all)
        };
        self.shared.destroy(abort_timers(slots), "shutdown").await;
    }
}

impl Drop for SqliteVfsPool {
    fn drop(&mut self) {
        // Without a shutdown, stop the threads anyway (queued jobs still run).
        let slots: Vec<Slot> = {
            let mut state = self.shared.state.lock();
            self.shared.shutting_down.store(true, Ordering::SeqCst);
            std::mem::take(&mut state.instances).into_values().collect()
        };
        for mut slot in slots {
            slot.occupancy.retire();
            if let Some((_, timer)) = slot.idle_timer.take() {
                timer.abort();
            }
            drop(slot.worker.stop());
        }
    }
}

/// Stops the workers and joins their threads off the async runtime, waiting
/// at most `bound` (see [`worker::join_within`]).
async fn join_workers(workers: Vec<Worker>, bound: std::time::Duration) {
    let stopping: Vec<Stopping> = workers.into_iter().filter_map(Worker::stop).collect();
    if stopping.is_empty() {
        return;
    }
    let join = move || worker::join_within(stopping, bound);
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = tokio::task::spawn_blocking(join).await;
    } else {
        join();
    }
}

/// Checks an actor id the way [`SqliteVfsPool::acquire`] does: not empty, at
/// most [`MAX_ACTOR_ID_LEN`] bytes, no NUL. Storage backends use it too, so
/// that one limit holds everywhere.
pub fn validate_actor_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_ACTOR_ID_LEN {
        "it is longer than 256 bytes"
    } else if id.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidActorId { reason })
}

impl Shared {
    /// Finds or creates the actor's seat, in one critical section.
    fn seat(&self, actor_id: &str) -> Result<Arc<ActorState>> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        if let Some(actor) = state.actors.get(actor_id) {
            return Ok(Arc::clone(actor));
        }
        let cap = self.config.actors_per_instance;
        // Bin-packing: the fullest instance that still has room, so that
        // emptier instances drain and can be destroyed when idle.
        let fullest = state
            .instances
            .iter()
            .filter(|(_, s)| s.occupancy.actors() < cap && s.worker.health().broken().is_none())
            .max_by_key(|(id, s)| (s.occupancy.actors(), std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let instance = if let Some(id) = fullest {
            id
        } else {
            let id = state.next_instance;
            state.next_instance += 1;
            let worker = Worker::spawn(
                format!("vfs-instance-{id}"),
                self.module.clone(),
                self.config.instance_config(),
                &self.live_workers,
                &self.inline,
            )?;
            tracing::debug!(instance = id, "instance created");
            state.instances.insert(
                id,
                Slot {
                    worker,
                    occupancy: Arc::default(),
                    names: ShortNames::default(),
                    idle_timer: None,
                },
            );
            self.publish(state);
            id
        };
        let slot = state
            .instances
            .get_mut(&instance)
            .ok_or(Error::InstanceGone)?;
        slot.occupancy.actors.fetch_add(1, Ordering::SeqCst);
        if let Some((_, timer)) = slot.idle_timer.take() {
            timer.abort();
        }
        let actor = Arc::new(ActorState {
            id: actor_id.to_owned(),
            instance,
            short_name: slot.names.take(),
            worker: slot.worker.sender(),
            occupancy: Arc::clone(&slot.occupancy),
            startup: slot.worker.startup(),
            released: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            db: Mutex::new(DbSlot::Empty),
            behind: Mutex::new(None),
            activity: Activity::default(),
        });
        state.actors.insert(actor_id.to_owned(), Arc::clone(&actor));
        Ok(actor)
    }

    /// Stops and joins the threads of slots already taken out of the state
    /// (with [`take_slots`]), then tells watchers the new count. Publishing
    /// after the join means a watcher that sees the count drop also sees the
    /// threads gone, even when several destroys overlap.
    async fn destroy(&self, slots: Vec<Slot>, reason: &'static str) {
        let count = slots.len();
        if count == 0 {
            return;
        }
        let workers = slots.into_iter().map(|s| s.worker).collect();
        join_workers(workers, self.config.stuck_after())
            .instrument(tracing::info_span!("destroy", instances = count, reason))
            .await;
        let mut state = self.state.lock();
        state.tearing_down -= count;
        self.publish(&state);
    }

    /// Tells watchers how many instances exist, counting those whose threads
    /// are still being joined.
    fn publish(&self, state: &State) {
        self.instance_count
            .send_replace(state.instances.len() + state.tearing_down);
    }

    /// Drops an instance that failed to start, with every actor seated on it,
    /// so the next acquire starts afresh (a failed compile is retried).
    fn forget_instance(&self, instance: u64) {
        let slot = {
            let mut state = self.state.lock();
            state.actors.retain(|_, a| a.instance != instance);
            let slot = state.instances.remove(&instance);
            if let Some(slot) = &slot {
                slot.occupancy.retire();
            }
            self.publish(&state);
            slot
        };
        if let Some(slot) = slot {
            drop(slot.worker.stop());
        }
    }

    /// Registers an operation on the actor's instance; fails when the pool is
    /// shutting down, the actor was released or its instance is destroyed.
    /// Takes no lock (see [`Occupancy`]).
    pub(crate) fn begin_op<'a>(self: &'a Arc<Self>, actor: &'a ActorState) -> Result<OpGuard<'a>> {
        // Checked first as well, so that calls on a released actor's
        // handle do not count themselves at all.
        if actor.released.load(Ordering::SeqCst) {
            return Err(Error::Released {
                actor: actor.id.clone(),
            });
        }
        actor.occupancy.ops.fetch_add(1, Ordering::SeqCst);
        // From here on, dropping the guard undoes the count.
        let op = OpGuard {
            shared: self,
            actor,
        };
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        if actor.released.load(Ordering::SeqCst) {
            return Err(Error::Released {
                actor: actor.id.clone(),
            });
        }
        if actor.occupancy.retired.load(Ordering::SeqCst) {
            return Err(Error::InstanceGone);
        }
        Ok(op)
    }

    /// Releases an actor: closes its database and frees its seat.
    pub(crate) async fn release(self: &Arc<Self>, actor: &Arc<ActorState>) {
        if actor.released.swap(true, Ordering::SeqCst) {
            return;
        }
        self.close_actor(actor).await;
        let mut state = self.state.lock();
        if state
            .actors
            .get(&actor.id)
            .is_some_and(|a| Arc::ptr_eq(a, actor))
        {
            state.actors.remove(&actor.id);
        }
        if let Some(slot) = state.instances.get_mut(&actor.instance) {
            slot.occupancy.actors.fetch_sub(1, Ordering::SeqCst);
            slot.names
                .give_back(actor.short_name, actor.poisoned.load(Ordering::SeqCst));
        }
        self.arm_idle_timer(&mut state, actor.instance);
    }

    /// Force-closes the actor's open database, if any; a failed close poisons
    /// the actor's short name. Gives up on a stuck thread (see
    /// [`PoolConfig::close_timeout`]).
    async fn close_actor(&self, actor: &ActorState) {
        actor.released.store(true, Ordering::SeqCst);
        let db = {
            let mut slot = actor.db.lock();
            match *slot {
                DbSlot::Open(db) => {
                    *slot = DbSlot::Empty;
                    Some(db)
                }
                // An open in progress sees `released` when it finishes and
                // closes the database itself.
                DbSlot::Opening | DbSlot::Empty => None,
            }
        };
        if let Some(db) = db
            && let Err(e) = self.close_db(actor, db, "release").await
        {
            tracing::warn!(actor = %actor.id, error = %e, "closing the database failed; its name is poisoned");
        }
    }

    /// Closes one of the actor's databases on its instance, waiting at most
    /// while the instance's thread makes progress (see
    /// [`PoolConfig::close_timeout`]). A failure poisons the
    /// actor's short name; a timeout also marks the instance stuck, so it
    /// takes no new actors and nothing waits for its thread again.
    pub(crate) async fn close_db(
        &self,
        actor: &ActorState,
        db: DbId,
        operation: &'static str,
    ) -> Result<()> {
        // The queue is registered before anything is awaited, so an open
        // racing this close, or a close whose future is dropped, can never
        // miss it.
        let closing = actor.behind.lock().take().map(|behind| {
            let closing = Arc::new(Closing {
                behind,
                done: AtomicBool::new(false),
                finished: tokio::sync::Notify::new(),
            });
            self.unsettled
                .lock()
                .entry(actor.id.clone())
                .or_default()
                .push(Arc::clone(&closing));
            closing
        });
        let mut guard = ClosingGuard(closing.clone());
        let closed = self.close_guest(actor, db, operation).await;
        let result = match &closing {
            Some(closing) => {
                let drained = self.drain(&actor.id, &closing.behind, operation).await;
                closed.and(drained)
            }
            None => closed,
        };
        guard.0 = None;
        if let Some(closing) = closing {
            closing.finish();
            self.forget_quiet(&actor.id);
        }
        result
    }

    /// [`close_db`](Self::close_db) on the instance: closes the database in
    /// the guest.
    async fn close_guest(
        &self,
        actor: &ActorState,
        db: DbId,
        operation: &'static str,
    ) -> Result<()> {
        let bound = self.config.stuck_after();
        if let Some(reason) = actor.worker.health().broken()
            && actor.worker.health().is_stuck()
        {
            // Its thread hangs: the close would only queue behind it.
            actor.poisoned.store(true, Ordering::SeqCst);
            return Err(Error::InstanceBroken {
                reason: reason.to_owned(),
            });
        }
        let health = actor.worker.health();
        let answer = worker::await_progress(
            health,
            actor.worker.call_queued(move |i| i.close(db)),
            bound,
        )
        .await;
        let closed = if let Some(closed) = answer {
            closed.and_then(|c| c.map_err(Error::from))
        } else {
            health.mark_stuck(format!("one call held its thread for more than {bound:?}"));
            tracing::error!(actor = %actor.id, instance = actor.instance, "close timed out; the instance takes no new actors");
            Err(Error::TimedOut {
                operation,
                after: bound,
            })
        };
        if closed.is_err() {
            actor.poisoned.store(true, Ordering::SeqCst);
        }
        closed
    }

    /// Drops the actor's closed queues that are quiet (nothing more will be
    /// written through them).
    fn forget_quiet(&self, actor_id: &str) {
        let mut unsettled = self.unsettled.lock();
        if let Some(queues) = unsettled.get_mut(actor_id) {
            queues.retain(|c| !c.is_settled());
            if queues.is_empty() {
                unsettled.remove(actor_id);
            }
        }
    }

    /// The store a database opened now gets: `kv` itself, or `kv` written
    /// behind (see [`crate::flush`]) when write-behind is on and a tokio
    /// runtime is there to run the flusher.
    pub(crate) fn write_behind(
        &self,
        kv: Arc<dyn KvStore>,
    ) -> (Arc<dyn KvStore>, Option<Arc<WriteBehind>>) {
        if self.config.write_behind_bytes == 0 {
            return (kv, None);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return (kv, None);
        };
        let behind = WriteBehind::new(
            kv,
            runtime,
            self.config.store_timeout,
            self.config.write_behind_bytes,
        );
        (Arc::clone(&behind) as Arc<dyn KvStore>, Some(behind))
    }

    /// The output gate: waits until every store write up to `upto` is
    /// durable. A flush that failed (now or before) is
    /// [`Error::Poisoned`]; one the store has not confirmed within twice
    /// [`PoolConfig::store_timeout`] (the flush ahead of it, then its own)
    /// poisons the database with [`KvError::OutcomeUnknown`].
    pub(crate) async fn gate(&self, behind: &WriteBehind, upto: u64) -> Result<()> {
        let bound = self.config.store_timeout.saturating_mul(2);
        behind.settled_within(upto, bound).await.map_err(
            |(Unsettled::Failed(poison) | Unsettled::TimedOut(poison))| Error::Poisoned(poison),
        )
    }

    /// Waits, within [`PoolConfig::close_timeout`], for every write of a
    /// database being closed to be durable (a database poisoned already
    /// has nothing more to wait for, and closes cleanly). Past the bound
    /// the queue is poisoned (nothing more is sent); a flush still running
    /// keeps the queue in `unsettled` (registered by `close_db`) until it
    /// ends, so the actor cannot open again before.
    async fn drain(
        &self,
        actor_id: &str,
        behind: &Arc<WriteBehind>,
        operation: &'static str,
    ) -> Result<()> {
        if behind.poison().is_some() {
            // Poisoned before the close: every call since has reported it,
            // and nothing more will be written.
            return Ok(());
        }
        let bound = self.config.close_timeout;
        match behind.settled_within(behind.mark(), bound).await {
            Ok(()) => Ok(()),
            Err(Unsettled::Failed(poison)) => Err(Error::Poisoned(poison)),
            Err(Unsettled::TimedOut(_)) => {
                tracing::error!(
                    actor = actor_id,
                    "the store did not take the database's last writes in time"
                );
                Err(Error::TimedOut {
                    operation,
                    after: bound,
                })
            }
        }
    }

    /// Before an actor opens a database: waits, within
    /// [`PoolConfig::close_timeout`], for a flush left running by its
    /// previous database to end. Fails with [`Error::Storage`] if it is
    /// still running then.
    pub(crate) async fn settle_earlier(&self, actor_id: &str) -> Result<()> {
        let earlier = self.unsettled.lock().get(actor_id).cloned();
        let Some(earlier) = earlier else {
            return Ok(());
        };
        let bound = self.config.close_timeout;
        let settled = async {
            for closing in &earlier {
                closing.settled().await;
            }
        };
        if tokio::time::timeout(bound, settled).await.is_err() {
            return Err(Error::Storage(KvError::Unavailable {
                message: format!(
                    "a write of actor {actor_id}'s previous database is still in flight after {bound:?}; \
                     it opens again once the store has answered it"
                ),
            }));
        }
        self.forget_quiet(actor_id);
        Ok(())
    }

    /// How long one call may hold its instance (see
    /// [`PoolConfig::close_timeout`]).
    pub(crate) fn stuck_after(&self) -> std::time::Duration {
        self.config.stuck_after()
    }

    /// Whether `shutdown` began or the pool was dropped.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Every seated actor's open database.
    pub(crate) fn open_databases(&self) -> Vec<(Arc<ActorState>, DbId)> {
        let state = self.state.lock();
        state
            .actors
            .values()
            .filter_map(|actor| match *actor.db.lock() {
                DbSlot::Open(db) => Some((Arc::clone(actor), db)),
                DbSlot::Empty | DbSlot::Opening => None,
            })
            .collect()
    }

    /// Starts the task that releases idle databases' memory, once, if the
    /// configuration asks for it and there is a runtime to run it on.
    fn start_sweeper(self: &Arc<Self>) {
        let Some(every) = self.config.release_memory_after else {
            return;
        };
        if self.sweeper_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.sweeper_started.swap(true, Ordering::SeqCst) {
            runtime.spawn(idle::sweep_every(Arc::downgrade(self), every));
        }
    }

    /// Starts the idle countdown of an instance with no actors and no
    /// operations; when it expires with the instance still idle, the instance
    /// is destroyed. A broken instance is destroyed at once; a delay too long
    /// to represent never expires.
    fn arm_idle_timer(self: &Arc<Self>, state: &mut State, instance: u64) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let timer_id = state.next_timer;
        let Some(slot) = state.instances.get_mut(&instance) else {
            return;
        };
        if slot.occupancy.actors() != 0 || slot.occupancy.is_busy() || slot.idle_timer.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to time with (the last operation ended outside
            // tokio): the instance stays until the next release or shutdown.
            return;
        };
        let delay = if slot.worker.health().broken().is_some() {
            std::time::Duration::ZERO
        } else {
            self.config.idle_destroy
        };
        let Some(deadline) = tokio::time::Instant::now().checked_add(delay) else {
            return;
        };
        state.next_timer += 1;
        let weak: Weak<Shared> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(shared) = weak.upgrade() {
                shared.idle_expired(instance, timer_id).await;
            }
        });
        slot.idle_timer = Some((timer_id, task));
    }

    async fn idle_expired(&self, instance: u64, timer_id: u64) {
        let slots = {
            let mut state = self.state.lock();
            let Some(slot) = state.instances.get_mut(&instance) else {
                return;
            };
            if slot.occupancy.actors() != 0
                || slot.idle_timer.as_ref().is_none_or(|(t, _)| *t != timer_id)
            {
                return;
            }
            if !slot.occupancy.try_retire() {
                // An operation is still running (one that is about to fail,
                // typically: its actor was released). This timer is spent;
                // that operation's end arms the next one, which it could
                // not do while this one was set.
                slot.idle_timer = None;
                return;
            }
            // The slot's timer is this very task: it is dropped (detached),
            // not aborted, so the teardown below runs to its end.
            take_slots(&mut state, &[instance])
        };
        self.destroy(slots, "idle").await;
    }
}

/// Removes the slots with these ids for destruction, counting them as being
/// torn down until [`Shared::destroy`] has joined their threads.
fn take_slots(state: &mut State, ids: &[u64]) -> Vec<Slot> {
    let slots: Vec<Slot> = ids
        .iter()
        .filter_map(|id| state.instances.remove(id))
        .collect();
    for slot in &slots {
        slot.occupancy.retire();
    }
    state.tearing_down += slots.len();
    slots
}

/// Cancels the idle countdowns of slots destroyed for another reason.
fn abort_timers(mut slots: Vec<Slot>) -> Vec<Slot> {
    for slot in &mut slots {
        if let Some((_, timer)) = slot.idle_timer.take() {
            timer.abort();
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::ShortNames;

    #[test]
    fn short_names_are_recycled_after_a_clean_release_and_never_when_poisoned() {
        let mut names = ShortNames::default();
        let (a, b, c) = (names.take(), names.take(), names.take());
        assert_eq!((a, b, c), (0, 1, 2));
        names.give_back(b, false);
        assert_eq!(names.take(), b, "a cleanly released name is reused first");
        names.give_back(a, true);
        let next: Vec<u32> = (0..3).map(|_| names.take()).collect();
        assert_eq!(
            next,
            vec![3, 4, 5],
            "a poisoned name is never handed out again"
        );
        assert_eq!(names.poisoned.len(), 1);
    }
}
