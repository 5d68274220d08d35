//! One actor's key-value namespace in PostgreSQL, fenced by a generation.
//!
//! Each key-value call is ONE statement, so ONE round trip and (in
//! autocommit) ONE transaction, whatever the batch size: keys and values
//! travel as two `bytea[]` parameters and are unnested on the server.
//!
//! Fencing. A store is created by bumping its actor's `generation`
//! ([`OPEN_SQL`]) and carries the generation it got. A write locks the
//! actor's row `FOR SHARE` and checks the generation in the same statement
//! before touching a page. A takeover's bump needs an exclusive row lock, so
//! it waits for writes in flight, and every write that starts after it sees
//! the new generation and applies nothing: a stale owner's pages never
//! interleave with the new owner's. Reads check the generation too (without
//! the lock): a fenced store fails every call with [`KvError::Fenced`], so a
//! stale host cannot keep serving data that another host is changing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use deadpool_postgres::Client;
use vfs_core::{KvError, KvLimits, KvStore};

use crate::storage::{Counters, Failure, Repeat, Shared};

/// Keys per batch. At most 8192 × 64 KiB = 512 MiB of values per statement,
/// safely under PostgreSQL's 1 GiB limit on one array value and one message.
pub const MAX_BATCH_KEYS: usize = 8192;
/// Largest value accepted (16 SQLite pages of 4 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest key accepted; keeps index entries far below PostgreSQL's btree
/// row limit (about 2.7 KB). The storage format's keys are 8 bytes or less.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest actor id accepted (the pool's own limit is 256 bytes).
pub const MAX_ACTOR_ID_BYTES: usize = 1024;

/// Takes ownership: creates the actor at generation 1 or bumps it.
pub(crate) const OPEN_SQL: &str = "
    INSERT INTO vfs_actors (actor_id, generation) VALUES ($1, 1)
    ON CONFLICT (actor_id) DO UPDATE
        SET generation = vfs_actors.generation + 1, opened_at = now()
    RETURNING id, generation";

/// Fenced multi-row upsert: `owned` is 0 when the generation moved on.
const PUT_SQL: &str = "
    WITH owner AS MATERIALIZED (
        SELECT id FROM vfs_actors WHERE id = $1 AND generation = $2 FOR SHARE
    ), written AS (
        INSERT INTO vfs_pages (actor, key, value)
        SELECT owner.id, e.key, e.value
        FROM owner, UNNEST($3::bytea[], $4::bytea[]) AS e(key, value)
        ON CONFLICT (actor, key) DO UPDATE SET value = EXCLUDED.value
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM owner), (SELECT count(*) FROM written)";

/// Fenced multi-key delete.
const DELETE_SQL: &str = "
    WITH owner AS MATERIALIZED (
        SELECT id FROM vfs_actors WHERE id = $1 AND generation = $2 FOR SHARE
    ), removed AS (
        DELETE FROM vfs_pages p USING owner
        WHERE p.actor = owner.id AND p.key = ANY($3::bytea[])
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

/// Deletes every page and fences whoever owns the actor.
const DELETE_ACTOR_SQL: &str = "
    WITH fenced AS (
        UPDATE vfs_actors SET generation = generation + 1
        WHERE actor_id = $1 RETURNING id
    )
    DELETE FROM vfs_pages p USING fenced WHERE p.actor = fenced.id";

/// Actors that have at least one page (an index probe per actor).
const LIST_SQL: &str = "
    SELECT a.actor_id FROM vfs_actors a
    WHERE EXISTS (SELECT 1 FROM vfs_pages p WHERE p.actor = a.id)";

const GENERATION_SQL: &str = "SELECT generation FROM vfs_actors WHERE actor_id = $1";

/// Prepares the hot statements on a fresh connection (they are cached per
/// connection and reused by every later call on it).
pub(crate) async fn prepare(client: &Client) -> Result<(), tokio_postgres::Error> {
    for sql in [OPEN_SQL, PUT_SQL, DELETE_SQL, GET_SQL] {
        client.prepare_cached(sql).await?;
    }
    Ok(())
}

fn check_actor_id(actor_id: &str) -> Result<(), KvError> {
    let reason = if actor_id.is_empty() {
        "is empty"
    } else if actor_id.len() > MAX_ACTOR_ID_BYTES {
        "is longer than 1024 bytes"
    } else if actor_id.contains('\0') {
        "contains a NUL character"
    } else {
        return Ok(());
    };
    Err(KvError::Backend {
        message: format!("actor id {actor_id:?} {reason}"),
        source: None,
    })
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

pub(crate) async fn open(shared: Arc<Shared>, actor_id: &str) -> Result<PgActorStore, KvError> {
    check_actor_id(actor_id)?;
    let actor: Arc<str> = Arc::from(actor_id);
    let task_shared = Arc::clone(&shared);
    let task_actor = Arc::clone(&actor);
    // Repeating is safe: a bump whose answer was lost only skips a number.
    let (id, generation) = shared
        .spawn(async move {
            task_shared
                .run("open_actor", Repeat::Safe, |client| {
                    let actor = Arc::clone(&task_actor);
                    async move {
                        let statement = client.prepare_cached(OPEN_SQL).await?;
                        let row = client.query_one(&statement, &[&&*actor]).await?;
                        Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
                    }
                })
                .await
        })
        .await?;
    tracing::debug!(actor = actor_id, generation, "took ownership");
    Ok(PgActorStore {
        shared,
        actor,
        id,
        generation,
    })
}

pub(crate) async fn generation(
    shared: &Arc<Shared>,
    actor_id: &str,
) -> Result<Option<i64>, KvError> {
    check_actor_id(actor_id)?;
    let task_shared = Arc::clone(shared);
    let actor: Arc<str> = Arc::from(actor_id);
    shared
        .spawn(async move {
            task_shared
                .run("generation", Repeat::Safe, |client| {
                    let actor = Arc::clone(&actor);
                    async move {
                        let row = client.query_opt(GENERATION_SQL, &[&&*actor]).await?;
                        Ok(row.map(|r| r.get::<_, i64>(0)))
                    }
                })
                .await
        })
        .await
}

pub(crate) async fn delete_actor(shared: &Arc<Shared>, actor_id: &str) -> Result<(), KvError> {
    check_actor_id(actor_id)?;
    let task_shared = Arc::clone(shared);
    let actor: Arc<str> = Arc::from(actor_id);
    // Repeating is safe: deleting twice deletes the same pages.
    shared
        .spawn(async move {
            task_shared
                .run("delete_actor", Repeat::Safe, |client| {
                    let actor = Arc::clone(&actor);
                    async move {
                        let statement = client.prepare_cached(DELETE_ACTOR_SQL).await?;
                        client.execute(&statement, &[&&*actor]).await?;
                        Ok(())
                    }
                })
                .await
        })
        .await
}

pub(crate) async fn list_actors(shared: &Arc<Shared>) -> Result<Vec<String>, KvError> {
    let task_shared = Arc::clone(shared);
    let mut actors = shared
        .spawn(async move {
            task_shared
                .run("list_actors", Repeat::Safe, |client| async move {
                    let rows = client.query(LIST_SQL, &[]).await?;
                    Ok(rows
                        .iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>())
                })
                .await
        })
        .await?;
    // Byte order, whatever the database's collation.
    actors.sort();
    Ok(actors)
}

/// One actor's key-value namespace, owned at one generation.
///
/// Returned by [`PgStorage::open_store`](crate::PgStorage::open_store) (and,
/// as `Arc<dyn KvStore>`, by `ActorStorage::open_actor`). Once another
/// store of the same actor is opened, on this host or any other, every call
/// of this one fails with [`KvError::Fenced`].
pub struct PgActorStore {
    shared: Arc<Shared>,
    actor: Arc<str>,
    id: i64,
    generation: i64,
}

impl std::fmt::Debug for PgActorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgActorStore")
            .field("actor", &self.actor)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl PgActorStore {
    /// The actor this store belongs to.
    pub fn actor_id(&self) -> &str {
        &self.actor
    }

    /// The ownership generation this store writes under.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    fn fenced_message(actor: &str, generation: i64) -> String {
        format!(
            "actor {actor:?} was taken over by a newer owner; this store \
             (generation {generation}) may no longer read or write it"
        )
    }
}

#[async_trait::async_trait]
impl KvStore for PgActorStore {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.limits().check_keys(keys.len())?;
        check_key_sizes(keys.iter())?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let shared = Arc::clone(&self.shared);
        let (actor, id, generation) = (Arc::clone(&self.actor), self.id, self.generation);
        let keys: Arc<Vec<Bytes>> = Arc::new(keys.to_vec());
        self.shared
            .spawn(async move {
                let counters = &shared.counters;
                shared
                    .run("get_batch", Repeat::Safe, |client| {
                        let keys = Arc::clone(&keys);
                        let actor = Arc::clone(&actor);
                        async move {
                            let statement = client.prepare_cached(GET_SQL).await?;
                            let params: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                            Counters::bump(&counters.get_batches);
                            let rows = client
                                .query(&statement, &[&id, &generation, &params])
                                .await?;
                            if rows.is_empty() {
                                return Err(Failure::Fenced(Self::fenced_message(
                                    &actor, generation,
                                )));
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
                    .await
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
        // as if the entries were applied in order. Sorting by key makes
        // concurrent batches of one actor lock their rows in the same order,
        // so they cannot deadlock each other.
        let mut latest: BTreeMap<&Bytes, &Bytes> = BTreeMap::new();
        for (key, value) in entries {
            latest.insert(key, value);
        }
        let entries: Arc<Vec<(Bytes, Bytes)>> = Arc::new(
            latest
                .into_iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        );
        let shared = Arc::clone(&self.shared);
        let (actor, id, generation) = (Arc::clone(&self.actor), self.id, self.generation);
        self.shared
            .spawn(async move {
                let counters = &shared.counters;
                shared
                    .run("put_batch", Repeat::ReportUnknown, |client| {
                        let entries = Arc::clone(&entries);
                        let actor = Arc::clone(&actor);
                        async move {
                            let statement = client.prepare_cached(PUT_SQL).await?;
                            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
                            let values: Vec<&[u8]> = entries.iter().map(|(_, v)| &v[..]).collect();
                            Counters::bump(&counters.put_batches);
                            let row = client
                                .query_one(&statement, &[&id, &generation, &keys, &values])
                                .await?;
                            let owned: i64 = row.try_get(0)?;
                            if owned == 0 {
                                return Err(Failure::Fenced(Self::fenced_message(
                                    &actor, generation,
                                )));
                            }
                            let written = entries.len() as u64;
                            counters.put_entries.fetch_add(written, Ordering::Relaxed);
                            counters.largest_put.fetch_max(written, Ordering::Relaxed);
                            Ok(())
                        }
                    })
                    .await
            })
            .await
    }

    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.limits().check_keys(keys.len())?;
        check_key_sizes(keys.iter())?;
        if keys.is_empty() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let (actor, id, generation) = (Arc::clone(&self.actor), self.id, self.generation);
        let keys: Arc<Vec<Bytes>> = Arc::new(keys.to_vec());
        self.shared
            .spawn(async move {
                let counters = &shared.counters;
                shared
                    .run("delete_batch", Repeat::ReportUnknown, |client| {
                        let keys = Arc::clone(&keys);
                        let actor = Arc::clone(&actor);
                        async move {
                            let statement = client.prepare_cached(DELETE_SQL).await?;
                            let params: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                            Counters::bump(&counters.delete_batches);
                            let row = client
                                .query_one(&statement, &[&id, &generation, &params])
                                .await?;
                            let owned: i64 = row.try_get(0)?;
                            if owned == 0 {
                                return Err(Failure::Fenced(Self::fenced_message(
                                    &actor, generation,
                                )));
                            }
                            Ok(())
                        }
                    })
                    .await
            })
            .await
    }

    /// [`MAX_BATCH_KEYS`] keys and [`MAX_VALUE_BYTES`] per value: a commit of
    /// thousands of pages goes out as one statement.
    fn limits(&self) -> KvLimits {
        KvLimits {
            max_batch_keys: MAX_BATCH_KEYS,
            max_value_bytes: MAX_VALUE_BYTES,
        }
    }
}
