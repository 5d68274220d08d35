//! Durable-ack write-behind: the store writes of one open database are
//! applied by a flusher task, not by the call that made them.
//!
//! A database's store is wrapped in a [`WriteBehind`] when it is opened.
//! Its `put_batch` and `delete_batch` queue the batch and return at once, so
//! a commit no longer holds its instance (and every co-tenant on it) for the
//! store's round trip. The caller's future then waits for the output gate,
//! [`WriteBehind::settled`], before it reports anything: success is only
//! ever reported for writes the store has made durable.
//!
//! What the wrapper keeps true:
//! - **Order.** Batches reach the store in the order they were queued. A
//!   run of queued puts (or of deletions) waiting behind the one in flight
//!   is sent as one batch, within the store's limits: each batch is atomic,
//!   so the store only ever holds a prefix of the queued batches, which is
//!   what a crash between two direct writes could leave too.
//! - **Reads see every queued write.** A key with a queued write is read
//!   from the queue (the newest write wins); only the other keys go to the
//!   store, which no queued write touches.
//! - **A failed flush poisons.** The batch that failed and every batch
//!   queued after it are dropped, and every later call (reads too) fails
//!   with the store's error, so nothing built on the lost writes is ever
//!   acknowledged. Opening the database again reads the last durable state.
//! - **Bounded memory.** Past `max_pending_bytes` of queued values, a new
//!   batch waits for the flusher (inside its call, whose own deadline
//!   bounds the wait).
//!
//! A flush runs with [`vfs_core::with_deadline`] set to `store_timeout`
//! from its start, and a store that panics poisons the database with that
//! panic's message instead of unwinding into the runtime.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use vfs_core::{KvError, KvLimits, KvStore};

/// Why [`WriteBehind::settled_within`] did not see its writes durable.
pub(crate) enum Unsettled {
    /// A flush failed (this one or an earlier one): the poison.
    Failed(KvError),
    /// The bound passed first; the database is now poisoned with this.
    TimedOut(KvError),
}

/// One open database's store, written behind its calls.
pub(crate) struct WriteBehind {
    inner: Arc<dyn KvStore>,
    /// Itself, for spawning the flusher from `&self`.
    me: Weak<WriteBehind>,
    runtime: tokio::runtime::Handle,
    store_timeout: Duration,
    max_pending_bytes: usize,
    state: Mutex<State>,
    /// Woken whenever a flush ends (durable progress, room, or poison).
    changed: Notify,
}

impl State {
    /// Forgets every queued batch (after a poison).
    fn drop_queue(&mut self) {
        self.queue = VecDeque::new();
        self.index = HashMap::new();
        self.pending_bytes = 0;
    }
}

#[derive(Default)]
struct State {
    /// Batches not yet durable, oldest first; the first ones may be in
    /// flight.
    queue: VecDeque<Queued>,
    /// For each key with a queued write: the sequence number of its newest
    /// write and the value it writes (`None`: deleted).
    index: HashMap<Bytes, (u64, Option<Bytes>)>,
    /// Sequence number of the last batch queued (0: none yet).
    last: u64,
    /// Every batch up to this sequence number is durable.
    durable: u64,
    /// Value bytes held by `queue`.
    pending_bytes: usize,
    /// Whether a flusher task is running.
    flushing: bool,
    /// The last batch of the flush the store is writing now (0: none).
    in_flight: u64,
    /// The failure that ended write-behind for this database.
    poison: Option<KvError>,
}

struct Queued {
    seq: u64,
    op: Op,
    bytes: usize,
}

#[derive(Clone)]
enum Op {
    Put(Arc<[(Bytes, Bytes)]>),
    Delete(Arc<[Bytes]>),
}

impl Op {
    fn keys(&self) -> Box<dyn Iterator<Item = &Bytes> + '_> {
        match self {
            Op::Put(entries) => Box::new(entries.iter().map(|(key, _)| key)),
            Op::Delete(keys) => Box::new(keys.iter()),
        }
    }
}

impl std::fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("WriteBehind")
            .field("queued", &state.queue.len())
            .field("pending_bytes", &state.pending_bytes)
            .field("durable", &state.durable)
            .field("last", &state.last)
            .field("poison", &state.poison)
            .finish_non_exhaustive()
    }
}

impl WriteBehind {
    /// Wraps `inner`; flushes run on `runtime`.
    pub(crate) fn new(
        inner: Arc<dyn KvStore>,
        runtime: tokio::runtime::Handle,
        store_timeout: Duration,
        max_pending_bytes: usize,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| WriteBehind {
            inner,
            me: me.clone(),
            runtime,
            store_timeout,
            max_pending_bytes,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    /// The sequence number of the last batch queued so far: a call that
    /// reads it when it ends waits for [`settled`](Self::settled) of it.
    pub(crate) fn mark(&self) -> u64 {
        self.state.lock().last
    }

    /// The failure that poisoned this database, if any.
    pub(crate) fn poison(&self) -> Option<KvError> {
        self.state.lock().poison.clone()
    }

    /// Poisons the database with `error` unless batch `upto` is durable
    /// already (used when a wait for it gave up). Returns the poison.
    pub(crate) fn give_up(&self, upto: u64, error: KvError) -> Option<KvError> {
        let mut state = self.state.lock();
        if state.durable >= upto {
            return None;
        }
        let in_flight = state.in_flight >= upto;
        let first = state.poison.get_or_insert_with(|| error.clone()).clone();
        // A batch the store is writing now may still land: the caller hears
        // that the outcome is unknown, whatever poisoned the queue before.
        let poison = if in_flight { error } else { first };
        // Nothing queued will be sent now (a flush in flight holds its own
        // copy of its batch).
        state.drop_queue();
        drop(state);
        self.changed.notify_waiters();
        Some(poison)
    }

    /// Poisons the database with `error` (unless it is poisoned already):
    /// nothing queued or queued later reaches the store.
    pub(crate) fn poison_now(&self, error: KvError) {
        // No batch is ever numbered `u64::MAX`: it always gives up.
        let _ = self.give_up(u64::MAX, error);
    }

    /// Waits up to `bound` until every batch up to `upto` is durable. On
    /// the way out it is [`Unsettled::Failed`] with the poison, or, when
    /// the bound passed first, [`Unsettled::TimedOut`] (the database is then
    /// poisoned with [`KvError::OutcomeUnknown`], see
    /// [`give_up`](Self::give_up)).
    pub(crate) async fn settled_within(&self, upto: u64, bound: Duration) -> Result<(), Unsettled> {
        // A store that answered at once was written during the call: no
        // timer needed.
        if let Some(settled) = self.try_settled(upto) {
            return settled.map_err(Unsettled::Failed);
        }
        match tokio::time::timeout(bound, self.settled(upto)).await {
            Ok(settled) => settled.map_err(Unsettled::Failed),
            Err(_) => match self.give_up(
                upto,
                KvError::OutcomeUnknown {
                    message: format!("the store did not confirm a write within {bound:?}"),
                },
            ) {
                Some(poison) => Err(Unsettled::TimedOut(poison)),
                None => Ok(()),
            },
        }
    }

    /// Completes at the next change of state (a flush ended, or the
    /// database was poisoned). Create it before checking the state.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Whether no flush is running (the store will get nothing more from
    /// this wrapper unless a new batch is queued).
    pub(crate) fn is_quiet(&self) -> bool {
        !self.state.lock().flushing
    }

    /// Whether every batch up to `upto` is durable (`Some(Ok)`), the
    /// database is poisoned first (`Some(Err)`), or neither yet (`None`).
    pub(crate) fn try_settled(&self, upto: u64) -> Option<Result<(), KvError>> {
        let state = self.state.lock();
        if state.durable >= upto {
            return Some(Ok(()));
        }
        if state.in_flight >= upto {
            // Poisoned or not, the store is writing it now: its answer
            // decides.
            return None;
        }
        state.poison.clone().map(Err)
    }

    /// Waits until every batch up to `upto` is durable (`Ok`), or the
    /// database is poisoned first (the poison).
    pub(crate) async fn settled(&self, upto: u64) -> Result<(), KvError> {
        loop {
            let notified = self.changed.notified();
            if let Some(settled) = self.try_settled(upto) {
                return settled;
            }
            notified.await;
        }
    }

    /// Waits until no flush is running.
    #[cfg(test)]
    pub(crate) async fn quiet(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_quiet() {
                return;
            }
            notified.await;
        }
    }

    /// Queues `op` (holding `bytes` of values) once there is room for it,
    /// and makes sure a flusher runs.
    async fn enqueue(&self, op: Op, bytes: usize) -> Result<(), KvError> {
        let mut op = Some(op);
        loop {
            let notified = self.changed.notified();
            let mut queued = false;
            {
                let mut state = self.state.lock();
                if let Some(poison) = &state.poison {
                    return Err(poison.clone());
                }
                if state.pending_bytes == 0
                    || state.pending_bytes.saturating_add(bytes) <= self.max_pending_bytes
                {
                    let Some(op) = op.take() else {
                        return Ok(());
                    };
                    state.last += 1;
                    let seq = state.last;
                    queued = true;
                    match &op {
                        Op::Put(entries) => {
                            for (key, value) in entries.iter() {
                                state.index.insert(key.clone(), (seq, Some(value.clone())));
                            }
                        }
                        Op::Delete(keys) => {
                            for key in keys.iter() {
                                state.index.insert(key.clone(), (seq, None));
                            }
                        }
                    }
                    state.pending_bytes += bytes;
                    state.queue.push_back(Queued { seq, op, bytes });
                    if state.flushing {
                        return Ok(());
                    }
                    state.flushing = true;
                }
            }
            if queued {
                self.start_flusher();
                return Ok(());
            }
            notified.await;
        }
    }

    /// Starts the flusher: its first poll runs right here, so a store that
    /// answers at once (an in-memory one) is written without a task at all,
    /// and a store that blocks its thread blocks the call that wrote, as it
    /// would without write-behind. Only a flush still pending after that
    /// poll goes on in a task of the runtime.
    fn start_flusher(&self) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let mut flusher = Box::pin(me.flush_loop());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if flusher.as_mut().poll(&mut cx).is_pending() {
            // The runtime polls it again at once, so no wake-up is lost.
            self.runtime.spawn(flusher);
        }
    }

    /// Sends queued batches to the store, oldest first, until the queue is
    /// empty or a flush fails.
    async fn flush_loop(self: Arc<Self>) {
        let mut ended = FlusherGone(Some(Arc::clone(&self)));
        self.flush_until_done().await;
        ended.0 = None;
    }

    /// The body of [`flush_loop`](Self::flush_loop).
    async fn flush_until_done(&self) {
        loop {
            let next = {
                let mut state = self.state.lock();
                if state.poison.is_some() || state.queue.is_empty() {
                    state.flushing = false;
                    drop(state);
                    self.changed.notify_waiters();
                    return;
                }
                let next = next_flush(&state.queue, self.inner.limits());
                state.in_flight = next.1;
                next
            };
            let (op, upto) = next;
            let deadline = Instant::now() + self.store_timeout;
            let result = match &op {
                Op::Put(entries) => Guarded::new(deadline, self.inner.put_batch(entries)).await,
                Op::Delete(keys) => Guarded::new(deadline, self.inner.delete_batch(keys)).await,
            };
            {
                let mut state = self.state.lock();
                state.in_flight = 0;
                match result {
                    Ok(()) => {
                        while state.queue.front().is_some_and(|q| q.seq <= upto) {
                            let Some(done) = state.queue.pop_front() else {
                                break;
                            };
                            for key in done.op.keys() {
                                if state
                                    .index
                                    .get(key)
                                    .is_some_and(|(seq, _)| *seq == done.seq)
                                {
                                    state.index.remove(key);
                                }
                            }
                            state.pending_bytes -= done.bytes;
                        }
                        state.durable = state.durable.max(upto);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a write-behind flush failed; the database is poisoned");
                        state.poison.get_or_insert(e);
                        state.drop_queue();
                    }
                }
                if state.queue.is_empty() && state.index.capacity() > 64 {
                    // A burst is over: give its memory back.
                    state.drop_queue();
                }
            }
            self.changed.notify_waiters();
        }
    }
}

/// Ends a flusher whose task was dropped before it finished (its runtime
/// shut down) or that panicked outside a store call: the database is
/// poisoned, so its waiters get an error instead of waiting for a flush
/// that will never come.
struct FlusherGone(Option<Arc<WriteBehind>>);

impl Drop for FlusherGone {
    fn drop(&mut self) {
        if let Some(behind) = self.0.take() {
            let mut state = behind.state.lock();
            state.poison.get_or_insert(KvError::Unavailable {
                message: "the write-behind flusher stopped (its runtime shut down?)".into(),
            });
            state.drop_queue();
            state.flushing = false;
            state.in_flight = 0;
            drop(state);
            behind.changed.notify_waiters();
        }
    }
}

/// The next batch to send: the oldest queued one, with the batches of the
/// same kind queued right after it as long as the merged batch stays within
/// `limits` (a key written twice is sent once, with its newest value).
/// Returns it with the sequence number of its last batch.
fn next_flush(queue: &VecDeque<Queued>, limits: KvLimits) -> (Op, u64) {
    let first = &queue[0];
    let mut upto = first.seq;
    let alone = queue.get(1).is_none_or(|second| {
        !matches!(
            (&first.op, &second.op),
            (Op::Put(_), Op::Put(_)) | (Op::Delete(_), Op::Delete(_))
        )
    });
    if alone {
        return (first.op.clone(), upto);
    }
    match &first.op {
        Op::Put(_) => {
            let mut merged: Vec<(Bytes, Bytes)> = Vec::new();
            let mut at: HashMap<Bytes, usize> = HashMap::new();
            for queued in queue {
                let Op::Put(entries) = &queued.op else { break };
                let fresh = entries.iter().filter(|(k, _)| !at.contains_key(k)).count();
                if queued.seq != first.seq && merged.len() + fresh > limits.max_batch_keys {
                    break;
                }
                for (key, value) in entries.iter() {
                    if let Some(&i) = at.get(key) {
                        merged[i].1.clone_from(value);
                    } else {
                        at.insert(key.clone(), merged.len());
                        merged.push((key.clone(), value.clone()));
                    }
                }
                upto = queued.seq;
            }
            (Op::Put(merged.into()), upto)
        }
        Op::Delete(_) => {
            let mut merged: Vec<Bytes> = Vec::new();
            let mut seen: std::collections::HashSet<Bytes> = std::collections::HashSet::new();
            for queued in queue {
                let Op::Delete(keys) = &queued.op else { break };
                let fresh = keys.iter().filter(|k| !seen.contains(*k)).count();
                if queued.seq != first.seq && merged.len() + fresh > limits.max_batch_keys {
                    break;
                }
                for key in keys.iter() {
                    if seen.insert(key.clone()) {
                        merged.push(key.clone());
                    }
                }
                upto = queued.seq;
            }
            (Op::Delete(merged.into()), upto)
        }
    }
}

#[async_trait::async_trait]
impl KvStore for WriteBehind {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        let mut out = vec![None; keys.len()];
        let mut missing = Vec::new();
        {
            let state = self.state.lock();
            if let Some(poison) = &state.poison {
                return Err(poison.clone());
            }
            for (i, key) in keys.iter().enumerate() {
                match state.index.get(key) {
                    Some((_, value)) => out[i].clone_from(value),
                    None => missing.push(i),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        // No queued write touches these keys, and none can be queued while
        // this read runs (one database makes one store call at a time).
        let wanted: Vec<Bytes> = missing.iter().map(|&i| keys[i].clone()).collect();
        let fetched = self.inner.get_batch(&wanted).await?;
        if fetched.len() != wanted.len() {
            return Err(KvError::Backend {
                message: format!(
                    "the store answered {} values for {} keys",
                    fetched.len(),
                    wanted.len()
                ),
                source: None,
            });
        }
        for (i, value) in missing.into_iter().zip(fetched) {
            out[i] = value;
        }
        Ok(out)
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.inner.limits().check_entries(entries)?;
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.enqueue(Op::Put(entries.into()), bytes).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.limits().check_keys(keys.len())?;
        let bytes = keys.iter().map(Bytes::len).sum();
        self.enqueue(Op::Delete(keys.into()), bytes).await
    }

    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }

    fn check_owner(&self) -> Result<(), KvError> {
        if let Some(poison) = self.poison() {
            return Err(poison);
        }
        self.inner.check_owner()
    }
}

/// A store future run by the flusher: every poll happens inside
/// [`vfs_core::with_deadline`] (the store stops retrying at the deadline),
/// and a panic while polling becomes a [`KvError::Backend`].
struct Guarded<'a> {
    deadline: Instant,
    future: Pin<Box<dyn Future<Output = Result<(), KvError>> + Send + 'a>>,
}

impl<'a> Guarded<'a> {
    fn new(
        deadline: Instant,
        future: impl Future<Output = Result<(), KvError>> + Send + 'a,
    ) -> Self {
        Guarded {
            deadline,
            future: Box::pin(future),
        }
    }
}

impl Future for Guarded<'_> {
    type Output = Result<(), KvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let deadline = self.deadline;
        let future = &mut self.future;
        // The flush's own deadline, not the one of the call whose commit
        // started it (its first poll can run inside that call).
        match catch_unwind(AssertUnwindSafe(|| {
            vfs_core::without_deadline(|| {
                vfs_core::with_deadline(deadline, || future.as_mut().poll(cx))
            })
        })) {
            Ok(poll) => poll,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic payload".to_owned());
                Poll::Ready(Err(KvError::Backend {
                    message: format!("the store panicked while flushing: {message}"),
                    source: None,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The queue against a model: under random store latency, the store
    //! only ever holds the state after some prefix of the queued batches
    //! (in order), reads always see every queued write, and once settled the
    //! store holds them all.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use vfs_core::MemoryKv;

    use super::*;

    /// A store over memory whose writes each take a latency drawn from a
    /// list, and that records its whole content after every write.
    struct SlowKv {
        inner: MemoryKv,
        latencies: Mutex<VecDeque<u64>>,
        history: Mutex<Vec<BTreeMap<Bytes, Bytes>>>,
    }

    impl SlowKv {
        async fn pause(&self) {
            let micros = self.latencies.lock().pop_front().unwrap_or(0);
            if micros > 0 {
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
        }

        fn record(&self) {
            self.history.lock().push(self.inner.snapshot());
        }
    }

    #[async_trait::async_trait]
    impl KvStore for SlowKv {
        async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
            self.pause().await;
            self.inner.get_batch(keys).await
        }

        async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
            self.pause().await;
            self.inner.put_batch(entries).await?;
            self.record();
            Ok(())
        }

        async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
            self.pause().await;
            self.inner.delete_batch(keys).await?;
            self.record();
            Ok(())
        }

        fn limits(&self) -> KvLimits {
            self.inner.limits()
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(BTreeMap<u8, u8>),
        Delete(std::collections::BTreeSet<u8>),
        Get(std::collections::BTreeSet<u8>),
        Settle,
    }

    fn step() -> impl Strategy<Value = Step> {
        let keys = || proptest::collection::btree_set(0u8..8, 1..=4);
        prop_oneof![
            4 => proptest::collection::btree_map(0u8..8, any::<u8>(), 1..=4).prop_map(Step::Put),
            2 => keys().prop_map(Step::Delete),
            3 => keys().prop_map(Step::Get),
            1 => Just(Step::Settle),
        ]
    }

    fn key(k: u8) -> Bytes {
        Bytes::from(vec![b'k', k])
    }

    fn value(v: u8) -> Bytes {
        Bytes::from(vec![v; 3])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn the_store_holds_a_prefix_and_reads_see_every_queued_write(
            steps in proptest::collection::vec(step(), 1..40),
            latencies in proptest::collection::vec(0u64..400, 0..60),
            max_pending_bytes in prop_oneof![Just(8usize), Just(64), Just(1 << 20)],
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .expect("runtime");
            let slow = Arc::new(SlowKv {
                inner: MemoryKv::with_limits(KvLimits {
                    max_batch_keys: 6,
                    max_value_bytes: 64,
                }),
                latencies: Mutex::new(latencies.into_iter().collect()),
                history: Mutex::new(Vec::new()),
            });
            let behind = WriteBehind::new(
                Arc::clone(&slow) as Arc<dyn KvStore>,
                runtime.handle().clone(),
                Duration::from_secs(10),
                max_pending_bytes,
            );
            // states[i]: the model after the first i queued batches.
            let mut states = vec![BTreeMap::<Bytes, Bytes>::new()];
            runtime.block_on(async {
                for step in &steps {
                    let mut now = states.last().cloned().unwrap_or_default();
                    match step {
                        Step::Put(entries) => {
                            let entries: Vec<(Bytes, Bytes)> =
                                entries.iter().map(|(&k, &v)| (key(k), value(v))).collect();
                            behind.put_batch(&entries).await.expect("put");
                            now.extend(entries);
                            states.push(now);
                        }
                        Step::Delete(keys) => {
                            let keys: Vec<Bytes> = keys.iter().map(|&k| key(k)).collect();
                            behind.delete_batch(&keys).await.expect("delete");
                            for k in &keys {
                                now.remove(k);
                            }
                            states.push(now);
                        }
                        Step::Get(keys) => {
                            let keys: Vec<Bytes> = keys.iter().map(|&k| key(k)).collect();
                            let got = behind.get_batch(&keys).await.expect("get");
                            let want: Vec<Option<Bytes>> =
                                keys.iter().map(|k| now.get(k).cloned()).collect();
                            assert_eq!(got, want, "a read missed a queued write");
                        }
                        Step::Settle => {
                            behind.settled(behind.mark()).await.expect("settled");
                            assert_eq!(&slow.inner.snapshot(), states.last().expect("state"));
                        }
                    }
                }
                behind.settled(behind.mark()).await.expect("settled");
                behind.quiet().await;
            });
            prop_assert_eq!(&slow.inner.snapshot(), states.last().expect("state"));
            // Every state the store passed through is the model after a
            // prefix of the batches, and the prefixes only grow.
            let mut at = 0;
            for seen in slow.history.lock().iter() {
                let found = (at..states.len()).find(|&i| &states[i] == seen);
                prop_assert!(found.is_some(), "the store held a state no prefix leads to: {:?}", seen);
                at = found.unwrap_or(at);
            }
        }
    }

    #[test]
    fn a_failed_flush_poisons_every_later_call() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        let faulty = Arc::new(vfs_core::FaultyKv::new(Arc::new(MemoryKv::new())));
        let behind = WriteBehind::new(
            Arc::clone(&faulty) as Arc<dyn KvStore>,
            runtime.handle().clone(),
            Duration::from_secs(10),
            1 << 20,
        );
        runtime.block_on(async {
            behind.put_batch(&[(key(1), value(1))]).await.expect("put");
            behind.settled(behind.mark()).await.expect("durable");
            faulty.fail_next(1);
            behind
                .put_batch(&[(key(2), value(2))])
                .await
                .expect("queued");
            let failed = behind.settled(behind.mark()).await;
            assert!(
                matches!(failed, Err(KvError::Injected { .. })),
                "{failed:?}"
            );
            assert!(behind.get_batch(&[key(1)]).await.is_err());
            assert!(behind.put_batch(&[(key(3), value(3))]).await.is_err());
            assert!(behind.check_owner().is_err());
            // Nothing after the failure reached the store.
            assert_eq!(
                faulty
                    .inner()
                    .get_batch(&[key(2), key(3)])
                    .await
                    .expect("get"),
                vec![None, None]
            );
        });
    }
}
