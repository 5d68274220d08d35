//! One actor's key-value namespace in PostgreSQL, fenced by a generation,
//! sequenced writes and an ownership lease.
//!
//! Each key-value call is ONE statement, so ONE round trip and (in
//! autocommit) ONE transaction, whatever the batch size: keys and values
//! travel as two `bytea[]` parameters and are unnested on the server.
//!
//! **Fencing.** A store is created by bumping its actor's `generation`
//! ([`OPEN_SQL`], conditional on the generation read just before, so an
//! open that arrives late changes nothing) and carries the generation it
//! got. Every call checks it in the same statement: a store whose actor was
//! opened again elsewhere fails every later call with [`KvError::Fenced`],
//! and never writes a page after the takeover.
//!
//! **Sequenced writes.** Every write names the actor's write count (`seq`) it
//! expects and advances it in the same statement, taking the actor row's
//! lock. A write that reaches the server late (after its caller gave up, or
//! after a later write of the same actor) finds another count and applies
//! nothing. A write whose answer is lost is settled before anything is
//! reported: the store ends the backend that carried it (so it can never
//! land afterwards) and reads the count back, which says whether it landed.
//! So [`KvStore`]'s contract holds: `Ok` means applied, an error means
//! nothing was applied. The one exception is a check that itself fails
//! before the call's deadline (PostgreSQL unreachable): the error then says
//! the outcome is unknown, and the store settles it before any other call,
//! read or write. If it had landed after all, that next call fails with
//! [`KvError::OutcomeUnknown`], so whoever cached the data drops it; nothing
//! is written or read on top of a guess.
//!
//! **Lease.** The owner holds a lease ([`PgOptions::lease_duration`]),
//! renewed in the background, and [`KvStore::check_owner`] refuses once it
//! may have run out by the owner's own clock, with a margin for drift. A
//! takeover waits for the previous owner's lease to run out (or for its
//! explicit release when that owner closed the actor), and ends a stale
//! backend that holds the actor's row once that lease is over. So after a
//! new owner's first acknowledged write, no other host returns data.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Client;
use tokio_postgres::error::SqlState;
use vfs_core::{KvError, KvLimits, KvStore};

use crate::PgOptions;
use crate::connection::{
    Backend, Connections, Failure, Settled, aborted_transiently, definitely_not_applied, discard,
    is_transient, millis,
};
use crate::error::chain;
use crate::stats::Counters;

/// Keys per batch. At most 8192 × 64 KiB = 512 MiB of values per statement,
/// safely under PostgreSQL's 1 GiB limit on one array value and one message.
pub const MAX_BATCH_KEYS: usize = 8192;
/// Largest value accepted (16 SQLite pages of 4 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest key accepted; keeps index entries far below PostgreSQL's btree
/// row limit (about 2.7 KB). The storage format's keys are 8 bytes or less.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest actor id accepted: the pool's own limit
/// ([`vfs_pool::MAX_ACTOR_ID_LEN`]), so every actor this storage keeps can
/// also be opened.
pub const MAX_ACTOR_ID_BYTES: usize = vfs_pool::MAX_ACTOR_ID_LEN;

/// Most bytes of an actor id quoted in an error message.
const QUOTED_ID_BYTES: usize = 64;

/// The actor's current generation (none yet: 0).
pub(crate) const CURRENT_SQL: &str = "SELECT generation FROM vfs_actors WHERE actor_id = $1";

/// Every statement that locks an actor's row starts with this comment, which
/// `pg_stat_activity.query` shows: a takeover recognises a stale backend of
/// this driver by it, whatever the hosts' `application_name`s.
const MARKER: &str = "/* driver-engine */";

/// Takes ownership: creates the actor at generation 1 or bumps the
/// generation read before (`$2`), and takes a lease of `$3` ms. Records the
/// lease of the owner it fences, unless the owner token (`$4`) says that
/// owner was an earlier attempt of this same open. Returns the wait, in
/// seconds, until that previous lease is over.
const OPEN_SQL: &str = "/* driver-engine */
    INSERT INTO vfs_actors (actor_id, generation, lease_until, owner_token)
    VALUES ($1, $2::bigint + 1, clock_timestamp() + $3::bigint * interval '1 millisecond', $4)
    ON CONFLICT (actor_id) DO UPDATE SET
        generation = vfs_actors.generation + 1,
        opened_at = now(),
        opened_seq = vfs_actors.seq,
        prior_lease_until = CASE WHEN vfs_actors.owner_token = $4
            THEN vfs_actors.prior_lease_until ELSE vfs_actors.lease_until END,
        lease_until = clock_timestamp() + $3::bigint * interval '1 millisecond',
        owner_token = $4
    WHERE vfs_actors.generation = $2::bigint
    RETURNING id, generation, seq,
        EXTRACT(EPOCH FROM GREATEST(interval '0',
            COALESCE(prior_lease_until - clock_timestamp(), interval '0')))::float8";

/// Sequenced, fenced multi-row upsert: `owned` is 0 when the generation
/// moved on or the write count is not the expected one. Extends the lease
/// by `$6` ms too: a busy owner's row is often locked by its own writes,
/// which the renewal round skips.
const PUT_SQL: &str = "/* driver-engine */
    WITH owner AS (
        UPDATE vfs_actors SET seq = seq + 1,
            lease_until = GREATEST(lease_until,
                clock_timestamp() + $6::bigint * interval '1 millisecond')
        WHERE id = $1 AND generation = $2 AND seq = $3
        RETURNING id
    ), written AS (
        INSERT INTO vfs_pages (actor, key, value)
        SELECT owner.id, e.key, e.value
        FROM owner, UNNEST($4::bytea[], $5::bytea[]) AS e(key, value)
        ON CONFLICT (actor, key) DO UPDATE SET value = EXCLUDED.value
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM written)";

/// Sequenced, fenced multi-key delete.
const DELETE_SQL: &str = "/* driver-engine */
    WITH owner AS (
        UPDATE vfs_actors SET seq = seq + 1,
            lease_until = GREATEST(lease_until,
                clock_timestamp() + $5::bigint * interval '1 millisecond')
        WHERE id = $1 AND generation = $2 AND seq = $3
        RETURNING id
    ), removed AS (
        DELETE FROM vfs_pages p USING owner
        WHERE p.actor = owner.id AND p.key = ANY($4::bytea[])
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM removed)";

/// Fenced multi-key read: one row per key in key order, or no row at all
/// when the generation moved on.
const GET_SQL: &str = "
    SELECT p.value
    FROM vfs_actors a
    CROSS JOIN UNNEST($3::bytea[]) WITH ORDINALITY AS k(key, ord)
    LEFT JOIN vfs_pages p ON p.actor = a.id AND p.key = k.key
    WHERE a.id = $1 AND a.generation = $2
    ORDER BY k.ord";

/// Extends the leases of the owners `($1[i], $2[i])` by `$3` ms, skipping
/// rows another transaction holds and leases already released (a renewal
/// racing a release must not bring the lease back). One row per owner: its
/// id, whether it was renewed, and whether it still owns the actor.
const RENEW_SQL: &str = "/* driver-engine */
    WITH mine AS (
        SELECT a.id FROM vfs_actors a
        JOIN UNNEST($1::bigint[], $2::bigint[]) AS o(id, generation)
          ON a.id = o.id AND a.generation = o.generation
        WHERE a.lease_until IS NOT NULL
        FOR UPDATE OF a SKIP LOCKED
    ), renewed AS (
        UPDATE vfs_actors a
        SET lease_until = clock_timestamp() + $3::bigint * interval '1 millisecond'
        FROM mine WHERE a.id = mine.id
        RETURNING a.id
    )
    SELECT o.id,
           o.id IN (SELECT id FROM renewed),
           COALESCE(a.generation = o.generation, false)
    FROM UNNEST($1::bigint[], $2::bigint[]) AS o(id, generation)
    LEFT JOIN vfs_actors a ON a.id = o.id";

/// Gives the lease up, so the next owner need not wait for it.
const RELEASE_SQL: &str = "/* driver-engine */ UPDATE vfs_actors SET lease_until = NULL WHERE id = $1 AND generation = $2";

/// The actor's generation, write count, and the count when the current
/// generation took over, to settle a write.
const STATE_SQL: &str = "SELECT generation, seq, opened_seq FROM vfs_actors WHERE id = $1";

/// Moves the write count past a write that may still arrive (used only when
/// its backend cannot be ended): it then finds another count.
const SKIP_SQL: &str = "/* driver-engine */
    UPDATE vfs_actors SET seq = seq + 2
    WHERE id = $1 AND generation = $2 AND seq = $3 RETURNING seq";

/// The driver backend holding the actor's row lock (a write or takeover in
/// progress, recognised by [`MARKER`] at the start of its statement), and
/// whether the lease of the actor's owner is over.
const HOLDER_SQL: &str = "
    SELECT l.pid, s.backend_start::text,
           (a.lease_until IS NULL OR a.lease_until <= clock_timestamp())
    FROM vfs_actors a
    JOIN pg_locks l ON l.locktype = 'transactionid' AND l.transactionid = a.xmax
                   AND l.granted AND l.mode = 'ExclusiveLock'
    JOIN pg_stat_activity s ON s.pid = l.pid
    WHERE a.actor_id = $1 AND l.pid <> pg_backend_pid()
      AND starts_with(s.query, $2)";

/// The hot statements, prepared on every fresh connection (they are cached
/// per connection and reused by every later call on it).
pub(crate) const HOT_STATEMENTS: &[&str] = &[OPEN_SQL, PUT_SQL, DELETE_SQL, GET_SQL];

/// At most [`QUOTED_ID_BYTES`] of an actor id, for error messages.
pub(crate) fn quoted(actor_id: &str) -> String {
    if actor_id.len() <= QUOTED_ID_BYTES {
        return format!("{actor_id:?}");
    }
    let mut end = QUOTED_ID_BYTES;
    while !actor_id.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &actor_id[..end], actor_id.len())
}

pub(crate) fn check_actor_id(actor_id: &str) -> Result<(), KvError> {
    vfs_pool::validate_actor_id(actor_id)
        .map_err(|e| KvError::backend(format!("actor id {}", quoted(actor_id)), e))
}

fn check_key_sizes<'a>(keys: impl Iterator<Item = &'a Bytes>) -> Result<(), KvError> {
    for key in keys {
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::Backend {
                message: format!(
                    "key of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes",
                    key.len()
                ),
                source: None,
            });
        }
    }
    Ok(())
}

/// What the stores of one [`PgStorage`](crate::PgStorage) share: the
/// connections, and the leases the renewal task keeps alive. Every store
/// holds it, so renewals go on while any store lives.
pub(crate) struct Shared {
    pub(crate) pg: Arc<Connections>,
    /// The stores whose leases the renewal task keeps alive, by actor row.
    leases: parking_lot::Mutex<HashMap<i64, Weak<Owner>>>,
    /// Whether the renewal task runs (started by the first open).
    renewing: AtomicBool,
    /// Lease releases of dropped stores still running, and their wake-up:
    /// closing the storage waits for them, so a process that exits right
    /// after closing an actor does not leave the next owner waiting for
    /// the lease to run out.
    releasing: AtomicUsize,
    released: tokio::sync::Notify,
}

/// Counts one lease release as running until dropped (also when its task
/// is cancelled).
struct ReleasePending(Arc<Shared>);

impl ReleasePending {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.releasing.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(shared))
    }
}

impl Drop for ReleasePending {
    fn drop(&mut self) {
        self.0.releasing.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

impl Shared {
    pub(crate) fn new(pg: Connections) -> Self {
        Self {
            pg: Arc::new(pg),
            leases: parking_lot::Mutex::default(),
            renewing: AtomicBool::new(false),
            releasing: AtomicUsize::new(0),
            released: tokio::sync::Notify::new(),
        }
    }

    /// Waits until every lease release of a dropped store has ended, at
    /// most `bound`.
    pub(crate) async fn settle_releases(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.releasing.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::debug!(
                    "gave up waiting for lease releases; the leases run out by themselves"
                );
                return;
            }
        }
    }
}

/// Takes ownership of `actor_id` (see
/// [`PgStorage::open_store`](crate::PgStorage::open_store)).
pub(crate) async fn open(shared: Arc<Shared>, actor_id: &str) -> Result<PgActorStore, KvError> {
    check_actor_id(actor_id)?;
    let actor: Arc<str> = Arc::from(actor_id);
    let task_shared = Arc::clone(&shared);
    let task_actor = Arc::clone(&actor);
    let token = owner_token();
    // A takeover may wait for the previous owner's lease (and for a stale
    // backend to be ended once it is over) on top of the usual budget.
    let lease = shared.pg.options.lease_duration;
    let deadline = shared
        .pg
        .deadline(vfs_core::call_deadline())
        .max(Instant::now() + lease.saturating_mul(2) + shared.pg.options.statement_timeout);
    let store = shared
        .pg
        .spawn(async move {
            let shared = task_shared;
            // An attempt may wait for the row lock (up to the lock timeout)
            // and then end the backend that held it.
            let patience =
                shared.pg.options.statement_timeout + shared.pg.options.lock_timeout() * 2;
            let (sent, (id, generation, seq, wait)) = shared
                .pg
                .run_patiently("open_actor", deadline, patience, |client| {
                    let actor = Arc::clone(&task_actor);
                    let shared = Arc::clone(&shared);
                    async move { take_over(&shared, &client, &actor, token).await }
                })
                .await?;
            let owner = Arc::new(Owner {
                shared: Arc::clone(&shared),
                actor: task_actor,
                id,
                generation,
                writes: tokio::sync::Mutex::new(WriteState { seq, pending: None }),
                lease: LeaseClock::new(sent, &shared.pg.options),
            });
            {
                // An older store of the same actor on this storage was just
                // fenced by this open.
                let mut leases = shared.leases.lock();
                let other = leases.get(&id).and_then(Weak::upgrade);
                match other {
                    Some(other) if other.generation > generation => {
                        owner.lease.fenced.store(true, Ordering::Release);
                    }
                    other => {
                        if let Some(older) = other {
                            older.lease.fenced.store(true, Ordering::Release);
                        }
                        leases.insert(id, Arc::downgrade(&owner));
                    }
                }
            }
            if !shared.renewing.swap(true, Ordering::AcqRel) {
                tokio::spawn(renew_leases(Arc::downgrade(&shared)));
            }
            if !wait.is_zero() {
                tracing::info!(
                    actor = %quoted(&owner.actor),
                    wait_ms = wait.as_millis(),
                    "waiting for the previous owner's lease to run out"
                );
                tokio::time::sleep(wait).await;
            }
            Ok(PgActorStore { owner })
        })
        .await?;
    tracing::debug!(
        actor = %quoted(actor_id),
        generation = store.owner.generation,
        "took ownership"
    );
    Ok(store)
}

/// A random number identifying one opening of an actor.
fn owner_token() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    i64::from_ne_bytes(hasher.finish().to_ne_bytes())
}

/// One attempt to take ownership: read the generation, bump it if it is
/// still that one. Returns when the bump was sent, and what it returned. A lock wait that times out means a write or a takeover
/// holds the actor's row; if that is a driver backend and the owner's
/// lease is over, the backend is stale (its client vanished mid-statement)
/// and is ended, so the next attempt gets through.
async fn take_over(
    shared: &Shared,
    client: &Client,
    actor: &str,
    token: i64,
) -> Result<(Instant, (i64, i64, i64, Duration)), Failure> {
    let current: i64 = client
        .query_opt(CURRENT_SQL, &[&actor])
        .await?
        .map_or(Ok(0), |row| row.try_get(0))?;
    let statement = client.prepare_cached(OPEN_SQL).await?;
    let lease = millis(shared.pg.options.lease_duration);
    // The lease runs from the bump, which is after this instant.
    let sent = Instant::now();
    match client
        .query_opt(&statement, &[&actor, &current, &lease, &token])
        .await
    {
        Ok(Some(row)) => {
            let wait: f64 = row.try_get(3)?;
            let wait = Duration::try_from_secs_f64(wait).unwrap_or(Duration::ZERO);
            Ok((
                sent,
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, wait),
            ))
        }
        Ok(None) => Err(Failure::Retry(format!(
            "actor {} was opened elsewhere at the same moment",
            quoted(actor)
        ))),
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            let holder = client.query_opt(HOLDER_SQL, &[&actor, &MARKER]).await?;
            if let Some(row) = holder {
                let backend = Backend::from_row(&row)?;
                let lapsed: bool = row.try_get(2)?;
                if lapsed {
                    tracing::warn!(
                        actor = %quoted(actor),
                        pid = backend.pid(),
                        "ending a stale backend that holds the actor after its owner's lease ran out"
                    );
                    match backend.end(client, shared.pg.options.lock_timeout()).await {
                        Ok(_) => {}
                        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                            return Err(Failure::Retry(format!(
                                "the row of actor {} is held by a stale backend (pid {}) \
                                 that this role may not end ({}); grant it \
                                 pg_signal_backend, or wait for the server to drop the \
                                 connection",
                                quoted(actor),
                                backend.pid(),
                                chain(&e)
                            )));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(Failure::Retry(format!(
                "the row of actor {} is held by another session (a write in \
                 flight, or a stale one ended once the owner's lease is over)",
                quoted(actor)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Renews the leases of every store of one storage, every third of the
/// lease period, in one statement per [`RENEWALS_PER_STATEMENT`] stores,
/// until the storage is dropped. A store that was fenced learns it here;
/// one whose row is busy (a write or a takeover holds it) is skipped this
/// round instead of holding up the others.
pub(crate) async fn renew_leases(shared: Weak<Shared>) {
    let Some(every) = shared.upgrade().map(|s| s.pg.options.lease_renewal()) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.pg.pool.is_closed() {
            return;
        }
        let owners: Vec<Arc<Owner>> = {
            let mut leases = shared.leases.lock();
            leases.retain(|_, owner| owner.strong_count() > 0);
            leases
                .values()
                .filter_map(Weak::upgrade)
                .filter(|owner| !owner.lease.fenced.load(Ordering::Acquire))
                .collect()
        };
        for chunk in owners.chunks(RENEWALS_PER_STATEMENT) {
            renew_chunk(&shared, chunk, every).await;
        }
    }
}

/// Most leases renewed by one statement.
const RENEWALS_PER_STATEMENT: usize = 10_000;

async fn renew_chunk(shared: &Shared, owners: &[Arc<Owner>], within: Duration) {
    let sent = Instant::now();
    let ids: Vec<i64> = owners.iter().map(|o| o.id).collect();
    let generations: Vec<i64> = owners.iter().map(|o| o.generation).collect();
    let lease = millis(shared.pg.options.lease_duration);
    let answer = async {
        let client = shared
            .pg
            .client_before(sent + within)
            .await
            .map_err(|e| e.to_string())?;
        Counters::bump(&shared.pg.counters.lease_renewals);
        match tokio::time::timeout(
            within,
            client.query(RENEW_SQL, &[&ids, &generations, &lease]),
        )
        .await
        {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                if !definitely_not_applied(&e) {
                    discard(Arc::new(client));
                }
                Err(chain(&e))
            }
            Err(_) => {
                discard(Arc::new(client));
                Err("no answer in time".to_owned())
            }
        }
    }
    .await;
    let rows = match answer {
        Ok(rows) => rows,
        Err(cause) => {
            tracing::warn!(
                stores = owners.len(),
                error = %cause,
                "could not renew leases; their actors are refused once the leases run out"
            );
            return;
        }
    };
    let mut outcome = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (id, renewed, owned): (i64, bool, bool) = (row.get(0), row.get(1), row.get(2));
        outcome.insert(id, (renewed, owned));
    }
    for owner in owners {
        match outcome.get(&owner.id) {
            Some((true, _)) => owner.lease.extend(sent, &shared.pg.options),
            Some((false, true)) => {
                tracing::debug!(actor = %quoted(&owner.actor), "row busy; lease renewed next round");
            }
            _ => owner.lease.fenced.store(true, Ordering::Release),
        }
    }
}

/// The owner's view of its lease, on its own monotonic clock.
struct LeaseClock {
    /// Origin of `valid_until`.
    epoch: Instant,
    /// Nanoseconds after `epoch` until which the lease surely holds.
    valid_until: AtomicU64,
    /// Another owner took the actor over (a renewal found a newer
    /// generation); nothing brings the lease back.
    fenced: AtomicBool,
}

impl LeaseClock {
    fn new(sent: Instant, options: &PgOptions) -> Self {
        let clock = Self {
            epoch: sent,
            valid_until: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
        };
        clock.extend(sent, options);
        clock
    }

    /// The server granted a lease for a request sent at `sent`: it runs at
    /// least until `sent + lease_duration` by the server's clock, and this
    /// store uses it until `sent + lease_duration - lease_margin` by its own.
    fn extend(&self, sent: Instant, options: &PgOptions) {
        let usable = options
            .lease_duration
            .saturating_sub(options.lease_margin());
        let until = sent.saturating_duration_since(self.epoch) + usable;
        let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.valid_until.fetch_max(nanos, Ordering::AcqRel);
    }

    fn holds(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now < self.valid_until.load(Ordering::Acquire)
    }
}

/// The writes of one store: serialized, so each knows the count it expects.
struct WriteState {
    /// The actor's write count as this store last left it.
    seq: i64,
    /// A write whose outcome could not be settled yet.
    pending: Option<Pending>,
}

/// A write whose answer was lost: what it expected, and where it went.
#[derive(Debug, Clone)]
struct Pending {
    seq: i64,
    backend: Backend,
}

/// How a lost write was settled.
enum Settlement {
    /// It landed: the count moved on by one.
    Applied,
    /// It did not land and now never will; the count to use next.
    NotApplied(i64),
    /// The actor has a newer owner. `landed` says whether the write landed
    /// before the takeover, when the actor's row can still tell.
    Fenced { landed: Option<bool> },
}

/// What a store, its lease renewal and its settling tasks share.
pub(crate) struct Owner {
    shared: Arc<Shared>,
    actor: Arc<str>,
    id: i64,
    generation: i64,
    writes: tokio::sync::Mutex<WriteState>,
    lease: LeaseClock,
}

/// A page write: the entries to upsert or the keys to delete.
enum WriteOp {
    Put(Vec<(Bytes, Bytes)>),
    Delete(Vec<Bytes>),
}

impl WriteOp {
    fn name(&self) -> &'static str {
        match self {
            WriteOp::Put(_) => "put_batch",
            WriteOp::Delete(_) => "delete_batch",
        }
    }

    fn len(&self) -> usize {
        match self {
            WriteOp::Put(entries) => entries.len(),
            WriteOp::Delete(keys) => keys.len(),
        }
    }

    /// Sends the write expecting count `seq`; `true` when it was applied.
    async fn send(
        &self,
        client: &Client,
        counters: &Counters,
        (id, generation, seq, lease): (i64, i64, i64, i64),
    ) -> Result<bool, tokio_postgres::Error> {
        let owned: i64 = match self {
            WriteOp::Put(entries) => {
                let statement = client.prepare_cached(PUT_SQL).await?;
                let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
                let values: Vec<&[u8]> = entries.iter().map(|(_, v)| &v[..]).collect();
                Counters::bump(&counters.put_batches);
                client
                    .query_one(
                        &statement,
                        &[&id, &generation, &seq, &keys, &values, &lease],
                    )
                    .await?
                    .try_get(0)?
            }
            WriteOp::Delete(keys) => {
                let statement = client.prepare_cached(DELETE_SQL).await?;
                let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                Counters::bump(&counters.delete_batches);
                client
                    .query_one(&statement, &[&id, &generation, &seq, &keys, &lease])
                    .await?
                    .try_get(0)?
            }
        };
        if owned == 1
            && let WriteOp::Put(entries) = self
        {
            let written = entries.len() as u64;
            counters.put_entries.fetch_add(written, Ordering::Relaxed);
            counters.largest_put.fetch_max(written, Ordering::Relaxed);
        }
        Ok(owned == 1)
    }
}

impl Owner {
    fn fenced_message(&self) -> String {
        format!(
            "actor {} was taken over by a newer owner; this store \
             (generation {}) may no longer read or write it",
            quoted(&self.actor),
            self.generation
        )
    }

    fn fenced(&self) -> KvError {
        self.lease.fenced.store(true, Ordering::Release);
        Counters::bump(&self.shared.pg.counters.fenced);
        KvError::Fenced {
            message: self.fenced_message(),
        }
    }

    fn check(&self) -> Result<(), KvError> {
        if self.lease.fenced.load(Ordering::Acquire) {
            Counters::bump(&self.shared.pg.counters.fenced);
            return Err(KvError::Fenced {
                message: self.fenced_message(),
            });
        }
        if !self.lease.holds() {
            return Err(KvError::Unavailable {
                message: format!(
                    "the lease on actor {} could not be renewed in time (PostgreSQL \
                     unreachable?); its data is refused until the lease is renewed, \
                     since another host may take the actor over",
                    quoted(&self.actor)
                ),
            });
        }
        Ok(())
    }

    /// The store's write state, once no other call of this store writes or
    /// settles a write; `late` says why not when `deadline` comes first.
    async fn writes_before(
        &self,
        deadline: Instant,
        late: impl FnOnce() -> String,
    ) -> Result<tokio::sync::MutexGuard<'_, WriteState>, KvError> {
        tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.writes.lock(),
        )
        .await
        .map_err(|_| KvError::Unavailable { message: late() })
    }

    /// Applies `op` exactly once or not at all (see the module docs).
    async fn write(self: Arc<Self>, op: WriteOp, deadline: Instant) -> Result<(), KvError> {
        let what = op.name();
        let shared = Arc::clone(&self.shared);
        let mut state = self
            .writes_before(deadline, || {
                format!(
                    "{what}: an earlier write of actor {} was still being settled at \
                     the call's deadline; nothing of this call was applied",
                    quoted(&self.actor)
                )
            })
            .await?;
        self.settle_pending(&mut state, deadline, what).await?;
        let attempts = shared.pg.options.retry_attempts;
        let mut tried = 0;
        loop {
            tried += 1;
            let may_retry = tried < attempts && Instant::now() < deadline;
            let client = match shared.pg.client_before(deadline).await {
                Ok(client) => Arc::new(client),
                Err(e) if e.is_transient() && may_retry => {
                    shared.pg.backoff(what, tried, &e, deadline).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Nothing is sent before the backend is known.
            let asked = shared
                .pg
                .attempt_before(deadline, async {
                    shared.pg.backend_of(&client).await.map_err(Failure::Pg)
                })
                .await;
            let backend = match asked {
                Ok(backend) => backend,
                Err(failure) => {
                    discard(client);
                    let (cause, transient) = match failure {
                        Failure::Pg(e) => (chain(&e), is_transient(&e)),
                        Failure::TimedOut(limit) => (format!("no answer within {limit:?}"), true),
                        _ => ("asking the connection's backend failed".to_owned(), false),
                    };
                    let error = KvError::Unavailable {
                        message: format!("{what}: {cause}"),
                    };
                    if may_retry && transient {
                        shared.pg.backoff(what, tried, &error, deadline).await;
                        continue;
                    }
                    return Err(error);
                }
            };
            let seq = state.seq;
            let lease = millis(shared.pg.options.lease_duration);
            let sent_at = Instant::now();
            let sent = shared
                .pg
                .attempt_before(deadline, async {
                    op.send(
                        &client,
                        &shared.pg.counters,
                        (self.id, self.generation, seq, lease),
                    )
                    .await
                    .map_err(Failure::Pg)
                })
                .await;
            let cause = match sent {
                Ok(true) => {
                    state.seq = seq + 1;
                    self.lease.extend(sent_at, &shared.pg.options);
                    return Ok(());
                }
                Ok(false) => return Err(self.refused(&mut state, deadline).await),
                Err(Failure::Pg(e)) if definitely_not_applied(&e) => {
                    if aborted_transiently(&e) && may_retry {
                        let error = KvError::Unavailable { message: chain(&e) };
                        shared.pg.backoff(what, tried, &error, deadline).await;
                        continue;
                    }
                    return Err(match shared.pg.settle_failure(what, Failure::Pg(e)) {
                        Settled::Final(e) => e,
                        Settled::Transient(cause) | Settled::Again(cause) => KvError::Unavailable {
                            message: format!("{what}: {cause}"),
                        },
                    });
                }
                Err(failure) => match shared.pg.settle_failure(what, failure) {
                    Settled::Final(e) => return Err(e),
                    Settled::Transient(cause) | Settled::Again(cause) => cause,
                },
            };
            // The statement was sent and its answer is lost: settle it.
            discard(client);
            let pending = Pending { seq, backend };
            // Settling gets a little time of its own past the deadline (at
            // most a second): it is what makes the report exact.
            let grace = Instant::now()
                + shared
                    .pg
                    .options
                    .lock_timeout()
                    .min(shared.pg.options.statement_timeout)
                    .min(Duration::from_secs(1));
            let settled = self.settle(&pending, deadline.max(grace)).await;
            if settled.is_ok() {
                Counters::bump(&shared.pg.counters.settled_writes);
            }
            return match settled {
                Ok(Settlement::Applied) => {
                    state.seq = seq + 1;
                    tracing::debug!(what, "a write whose answer was lost had landed");
                    Ok(())
                }
                Ok(Settlement::NotApplied(next)) => {
                    state.seq = next;
                    Err(KvError::Unavailable {
                        message: format!(
                            "{what} of {} entries: PostgreSQL failed mid-call ({cause}); \
                             the outcome unknown at first was checked: not applied, \
                             and it can no longer land (safe to repeat)",
                            op.len()
                        ),
                    })
                }
                Ok(Settlement::Fenced { landed: Some(true) }) => {
                    // It landed before the takeover: that is what happened,
                    // and the new owner has it. Later calls are refused.
                    let _ = self.fenced();
                    Ok(())
                }
                Ok(Settlement::Fenced {
                    landed: Some(false),
                }) => Err(self.fenced()),
                Ok(Settlement::Fenced { landed: None }) => {
                    let _ = self.fenced();
                    Err(KvError::OutcomeUnknown {
                        message: format!(
                            "{what} to actor {}: its answer was lost and the actor was \
                             taken over by a newer owner before it could be checked; \
                             whether it landed is unknown",
                            quoted(&self.actor)
                        ),
                    })
                }
                Err(check) => {
                    state.pending = Some(pending);
                    Err(KvError::Unavailable {
                        message: format!(
                            "{what} of {} entries to actor {}: PostgreSQL failed mid-call \
                             ({cause}), outcome unknown: it could not be checked before the \
                             deadline ({check}). The store settles it before its next call; \
                             if it landed, that call fails as outcome unknown",
                            op.len(),
                            quoted(&self.actor)
                        ),
                    })
                }
            };
        }
    }

    /// Settles the write left unsettled by an earlier call, before any
    /// other call of this store reads or writes. If it did not land, the
    /// store carries on as if that call had failed cleanly, which is what
    /// its caller was told. If it landed, its caller's cached view is now
    /// wrong (it was told the write failed): this call fails with
    /// [`KvError::OutcomeUnknown`], which makes the database drop its
    /// caches (vfs-wasm poisons it until it is reopened).
    async fn settle_pending(
        &self,
        state: &mut WriteState,
        deadline: Instant,
        what: &str,
    ) -> Result<(), KvError> {
        let Some(pending) = state.pending.take() else {
            return Ok(());
        };
        let settled = self.settle(&pending, deadline).await;
        if settled.is_ok() {
            Counters::bump(&self.shared.pg.counters.settled_writes);
        }
        match settled {
            Ok(Settlement::Applied) => {
                state.seq = pending.seq + 1;
                Err(KvError::OutcomeUnknown {
                    message: format!(
                        "a write to actor {} reported as failed with an unknown outcome \
                         turned out to have landed; what was cached of the actor is stale \
                         and must be read again",
                        quoted(&self.actor)
                    ),
                })
            }
            Ok(Settlement::NotApplied(seq)) => {
                state.seq = seq;
                Ok(())
            }
            // Whatever became of it, every later call is refused.
            Ok(Settlement::Fenced { .. }) => Err(self.fenced()),
            Err(cause) => {
                state.pending = Some(pending);
                Err(KvError::Unavailable {
                    message: format!(
                        "{what}: an earlier write's outcome is still unknown ({cause}); \
                         nothing of this call was done"
                    ),
                })
            }
        }
    }

    /// Why a write found another generation or count.
    async fn refused(&self, state: &mut WriteState, deadline: Instant) -> KvError {
        let read = self
            .shared
            .pg
            .run("write check", deadline, |client| async move {
                let row = client.query_opt(STATE_SQL, &[&self.id]).await?;
                Ok(row.map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))))
            })
            .await;
        match read {
            Ok(Some((generation, seq))) if generation == self.generation => {
                // Cannot happen while writes are serialized; if it does, the
                // next write starts from the server's count.
                let expected = state.seq;
                state.seq = seq;
                KvError::Backend {
                    message: format!(
                        "the write count of actor {} is {seq}, not the {expected} this \
                         store expected; nothing was applied",
                        quoted(&self.actor)
                    ),
                    source: None,
                }
            }
            Ok(_) => self.fenced(),
            Err(e) => e,
        }
    }

    /// Settles a write whose answer was lost: ends the backend that carried
    /// it, so it cannot land later, then reads the count back. When the
    /// backend cannot be ended (no permission, or it does not exit), moves
    /// the count past the write instead. `Err` (in words) when neither
    /// worked before `deadline`.
    async fn settle(&self, pending: &Pending, deadline: Instant) -> Result<Settlement, String> {
        let shared = &self.shared;
        let mut tried = 0;
        loop {
            tried += 1;
            let attempt = async {
                let client = shared
                    .pg
                    .client_before(deadline)
                    .await
                    .map_err(|e| e.to_string())?;
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = shared.pg.options.lock_timeout().min(left);
                let ended = match pending.backend.end(&client, wait).await {
                    Ok(ended) => ended,
                    Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => false,
                    Err(e) => return Err(chain(&e)),
                };
                if !ended {
                    let skipped = client
                        .query_opt(SKIP_SQL, &[&self.id, &self.generation, &pending.seq])
                        .await
                        .map_err(|e| chain(&e))?;
                    if let Some(row) = skipped {
                        return Ok(Settlement::NotApplied(row.get(0)));
                    }
                }
                let row = client
                    .query_opt(STATE_SQL, &[&self.id])
                    .await
                    .map_err(|e| chain(&e))?;
                let Some(row) = row else {
                    return Ok(Settlement::Fenced { landed: None });
                };
                let (generation, seq, opened_seq): (i64, i64, i64) =
                    (row.get(0), row.get(1), row.get(2));
                if generation != self.generation {
                    // Opens do not move the count, and the takeover right
                    // after this store's generation recorded it.
                    let landed = if generation == self.generation + 1 {
                        (opened_seq == pending.seq + 1)
                            .then_some(true)
                            .or((opened_seq == pending.seq).then_some(false))
                    } else {
                        (seq == pending.seq).then_some(false)
                    };
                    Ok(Settlement::Fenced { landed })
                } else if seq == pending.seq + 1 {
                    Ok(Settlement::Applied)
                } else if seq == pending.seq {
                    Ok(Settlement::NotApplied(seq))
                } else {
                    Err(format!(
                        "the write count is {seq}, neither {} nor {}",
                        pending.seq,
                        pending.seq + 1
                    ))
                }
            };
            let patience = deadline
                .saturating_duration_since(Instant::now())
                .min(shared.pg.options.statement_timeout);
            let outcome = tokio::time::timeout(patience, attempt)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {patience:?}")));
            match outcome {
                Ok(settled) => return Ok(settled),
                Err(cause)
                    if Instant::now() >= deadline || tried >= shared.pg.options.retry_attempts =>
                {
                    return Err(cause);
                }
                Err(cause) => {
                    let error = KvError::Unavailable { message: cause };
                    shared
                        .pg
                        .backoff("settling a write", tried, &error, deadline)
                        .await;
                }
            }
        }
    }
}

/// One actor's key-value namespace, owned at one generation under a lease.
///
/// Returned by [`PgStorage::open_store`](crate::PgStorage::open_store) (and,
/// as `Arc<dyn KvStore>`, by `ActorStorage::open_actor`). Once another
/// store of the same actor is opened, on this host or any other, every call
/// of this one fails with [`KvError::Fenced`]; once its lease may have run
/// out, every call fails until it is renewed. Dropping the store gives the
/// lease up, so the next owner need not wait for it.
pub struct PgActorStore {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for PgActorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgActorStore")
            .field("actor", &self.owner.actor)
            .field("generation", &self.owner.generation)
            .finish_non_exhaustive()
    }
}

impl PgActorStore {
    /// The actor this store belongs to.
    pub fn actor_id(&self) -> &str {
        &self.owner.actor
    }

    /// The ownership generation this store writes under.
    pub fn generation(&self) -> i64 {
        self.owner.generation
    }

    /// Refuses a batch of more keys than [`MAX_BATCH_KEYS`] or with a key
    /// longer than [`MAX_KEY_BYTES`], before anything is sent.
    fn check_keys(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.limits().check_keys(keys.len())?;
        check_key_sizes(keys.iter())
    }

    async fn write(&self, op: WriteOp) -> Result<(), KvError> {
        self.owner.check()?;
        let deadline = self.owner.shared.pg.deadline(vfs_core::call_deadline());
        let owner = Arc::clone(&self.owner);
        self.owner
            .shared
            .pg
            .spawn(async move { owner.write(op, deadline).await })
            .await
    }
}

impl Drop for PgActorStore {
    /// Gives the lease up once every write of this store is settled.
    fn drop(&mut self) {
        let owner = Arc::clone(&self.owner);
        let runtime = self.owner.shared.pg.runtime.clone();
        let pending = ReleasePending::new(&self.owner.shared);
        runtime.spawn(async move {
            let _pending = pending;
            let _writes = owner.writes.lock().await;
            // Marked first, so the renewal round leaves the lease alone.
            if owner.lease.fenced.swap(true, Ordering::AcqRel) {
                return;
            }
            let deadline = Instant::now() + owner.shared.pg.options.statement_timeout;
            let released = owner
                .shared
                .pg
                .run("release lease", deadline, |client| {
                    let owner = Arc::clone(&owner);
                    async move {
                        client
                            .execute(RELEASE_SQL, &[&owner.id, &owner.generation])
                            .await?;
                        Ok(())
                    }
                })
                .await;
            if let Err(e) = released {
                tracing::debug!(error = %e, "could not release the lease; it runs out by itself");
            }
        });
    }
}

#[async_trait::async_trait]
impl KvStore for PgActorStore {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.owner.check()?;
        self.check_keys(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = self.owner.shared.pg.deadline(vfs_core::call_deadline());
        let owner = Arc::clone(&self.owner);
        let keys: Arc<Vec<Bytes>> = Arc::new(keys.to_vec());
        self.owner
            .shared
            .pg
            .spawn(async move {
                {
                    // A read must not see, or miss, a write whose fate
                    // its database has not heard yet.
                    let mut state = owner
                        .writes_before(deadline, || {
                            "get_batch: a write of this store was still being settled at \
                             the call's deadline"
                                .into()
                        })
                        .await?;
                    owner
                        .settle_pending(&mut state, deadline, "get_batch")
                        .await?;
                }
                let counters = &owner.shared.pg.counters;
                let values = owner
                    .shared
                    .pg
                    .run("get_batch", deadline, |client| {
                        let keys = Arc::clone(&keys);
                        let owner = Arc::clone(&owner);
                        async move {
                            let statement = client.prepare_cached(GET_SQL).await?;
                            let params: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                            Counters::bump(&counters.get_batches);
                            let rows = client
                                .query(&statement, &[&owner.id, &owner.generation, &params])
                                .await?;
                            if rows.is_empty() {
                                return Err(Failure::Fenced(owner.fenced_message()));
                            }
                            if rows.len() != keys.len() {
                                return Err(Failure::Kv(KvError::Backend {
                                    message: format!(
                                        "get_batch of {} keys returned {} rows",
                                        keys.len(),
                                        rows.len()
                                    ),
                                    source: None,
                                }));
                            }
                            let mut values = Vec::with_capacity(rows.len());
                            for row in &rows {
                                let value: Option<Vec<u8>> = row.try_get(0)?;
                                values.push(value.map(Bytes::from));
                            }
                            Ok(values)
                        }
                    })
                    .await;
                if matches!(values, Err(KvError::Fenced { .. })) {
                    owner.lease.fenced.store(true, Ordering::Release);
                }
                values
            })
            .await
    }

    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        self.limits().check_entries(entries)?;
        check_key_sizes(entries.iter().map(|(k, _)| k))?;
        if entries.is_empty() {
            return Ok(());
        }
        // One upsert cannot touch a row twice: the last value of a key wins,
        // as if the entries were applied in order. Sorting by key keeps the
        // page rows locked in one order.
        let mut latest: BTreeMap<&Bytes, &Bytes> = BTreeMap::new();
        for (key, value) in entries {
            latest.insert(key, value);
        }
        let entries = latest
            .into_iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        self.write(WriteOp::Put(entries)).await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.check_keys(keys)?;
        if keys.is_empty() {
            return Ok(());
        }
        self.write(WriteOp::Delete(keys.to_vec())).await
    }

    /// [`MAX_BATCH_KEYS`] keys and [`MAX_VALUE_BYTES`] per value: a commit of
    /// thousands of pages goes out as one statement.
    fn limits(&self) -> KvLimits {
        KvLimits {
            max_batch_keys: MAX_BATCH_KEYS,
            max_value_bytes: MAX_VALUE_BYTES,
        }
    }

    /// Refuses once the actor was taken over, or once the lease may have
    /// run out (see [`PgOptions::lease_duration`]).
    fn check_owner(&self) -> Result<(), KvError> {
        self.owner.check()
    }
}
