//! [`PgStorage`]: every actor's key-value namespace in one PostgreSQL
//! database, behind a connection pool shared by all of them.
//!
//! The storage opens actor stores ([`crate::actor_store`]), and lists and
//! deletes actors with statements of its own; connecting, retries and the
//! translation of PostgreSQL's failures are [`crate::connection`]'s.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::Client;
use vfs_core::{KvError, KvStore};
use vfs_pool::ActorStorage;

use crate::actor_store::{self, CURRENT_SQL, PgActorStore, Shared, check_actor_id, quoted};
use crate::connection::{Connections, Failure};
use crate::{PgOptions, PgStats, Result};

/// Deletes every page and fences whoever owns the actor, if the generation
/// is still the one read before (`$2`): a delete that arrives late, after
/// the actor was opened again, changes nothing. The lease is left alone, so
/// a host that opens the actor next still waits for the old owner's lease.
const DELETE_ACTOR_SQL: &str = "/* driver-engine */
    WITH fenced AS (
        UPDATE vfs_actors SET generation = generation + 1
        WHERE actor_id = $1 AND generation = $2 RETURNING id
    ), removed AS (
        DELETE FROM vfs_pages p USING fenced WHERE p.actor = fenced.id
    )
    SELECT count(*) FROM fenced";

/// Actors that have at least one page (an index probe per actor).
const LIST_SQL: &str = "
    SELECT a.actor_id FROM vfs_actors a
    WHERE EXISTS (SELECT 1 FROM vfs_pages p WHERE p.actor = a.id)";

/// Every key of one actor, in ONE statement, so from one snapshot of the
/// database: each write of a store is one statement too, so the snapshot
/// holds whole writes only. A plain read: it takes no row lock and bumps
/// no generation, so the owner (on any host) is not fenced.
const SNAPSHOT_SQL: &str = "
    SELECT p.key, p.value FROM vfs_pages p JOIN vfs_actors a ON a.id = p.actor
    WHERE a.actor_id = $1 ORDER BY p.key";

/// Whether an actor has a page (one index probe).
const HAS_DATA_SQL: &str = "
    SELECT EXISTS (SELECT 1 FROM vfs_pages p JOIN vfs_actors a ON a.id = p.actor
                   WHERE a.actor_id = $1)";

/// Every actor with a page, with its value of one key (`$1`), in one
/// statement.
const LIST_VALUES_SQL: &str = "
    SELECT a.actor_id, v.value FROM vfs_actors a
    LEFT JOIN vfs_pages v ON v.actor = a.id AND v.key = $1
    WHERE EXISTS (SELECT 1 FROM vfs_pages p WHERE p.actor = a.id)";

/// Every actor's key-value namespace in one PostgreSQL database.
///
/// Cheap to clone (clones share the pool). See the crate documentation for
/// the schema, the fencing protocol and the retry rules.
#[derive(Clone)]
pub struct PgStorage {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("target", &self.shared.pg.target)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PgStorage {
    /// Connects with [`PgOptions::default`]; see [`PgStorage::connect_with`].
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PgOptions::default()).await
    }

    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string), creates or upgrades the schema, and
    /// keeps a pool of connections for the actors' stores.
    ///
    /// This opens a real connection, so a malformed URL, an unreachable
    /// server, a wrong password or a missing database fail here, with the
    /// server's explanation, rather than on the first page read. Must be
    /// called within a tokio runtime, which then runs every storage call.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<Self> {
        let pg = Connections::connect(url, options, actor_store::HOT_STATEMENTS).await?;
        Ok(Self {
            shared: Arc::new(Shared::new(pg)),
        })
    }

    /// Takes ownership of `actor_id` and returns its store.
    ///
    /// Ownership is a generation number bumped in the actor's row: the store
    /// carries the new generation and every later call checks it, so the
    /// store that owned the actor before (on any host) is fenced from now on.
    /// When that owner still held a lease (it did not close the actor), this
    /// waits until the lease is over, at most [`PgOptions::lease_duration`],
    /// so that it has stopped serving the actor before this store does.
    pub async fn open_store(&self, actor_id: &str) -> Result<PgActorStore, KvError> {
        actor_store::open(Arc::clone(&self.shared), actor_id).await
    }

    /// The actor's current generation, `None` when it was never opened.
    pub async fn generation(&self, actor_id: &str) -> Result<Option<i64>, KvError> {
        self.run_for_actor("generation", actor_id, |client, actor| async move {
            let row = client.query_opt(CURRENT_SQL, &[&&*actor]).await?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })
        .await
    }

    /// Statements sent so far by every store of this storage.
    pub fn stats(&self) -> PgStats {
        self.shared.pg.counters.snapshot()
    }

    /// The server and database this storage talks to (no password).
    pub fn target(&self) -> &str {
        &self.shared.pg.target
    }

    /// Connections currently open in the pool.
    pub fn open_connections(&self) -> usize {
        self.shared.pg.pool.status().size
    }
    /// Runs a call about one actor that is safe to repeat, after checking
    /// its id: `attempt` gets a pooled connection and the id.
    async fn run_for_actor<T, F, Fut>(
        &self,
        what: &'static str,
        actor_id: &str,
        attempt: F,
    ) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: Fn(Arc<Client>, Arc<str>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send,
    {
        check_actor_id(actor_id)?;
        let actor: Arc<str> = Arc::from(actor_id);
        self.shared
            .pg
            .spawn_run(what, move |client| attempt(client, Arc::clone(&actor)))
            .await
    }
}

#[async_trait::async_trait]
impl ActorStorage for PgStorage {
    async fn open_actor(&self, actor_id: &str) -> Result<Arc<dyn KvStore>, KvError> {
        Ok(Arc::new(self.open_store(actor_id).await?))
    }

    /// Deletes the actor's pages and bumps its generation, so that a store
    /// still open on another host is fenced instead of writing pages back.
    async fn delete_actor(&self, actor_id: &str) -> Result<(), KvError> {
        // Repeating is safe: each attempt is conditional on the generation it
        // read, so a lost attempt that lands late finds a newer one and
        // deletes nothing, while the repeat deletes the same pages.
        self.run_for_actor("delete_actor", actor_id, |client, actor| async move {
            let Some(row) = client.query_opt(CURRENT_SQL, &[&&*actor]).await? else {
                return Ok(());
            };
            let current: i64 = row.try_get(0)?;
            let statement = client.prepare_cached(DELETE_ACTOR_SQL).await?;
            let fenced: i64 = client
                .query_one(&statement, &[&&*actor, &current])
                .await?
                .try_get(0)?;
            if fenced == 0 {
                return Err(Failure::Retry(format!(
                    "actor {} was opened while it was being deleted",
                    quoted(&actor)
                )));
            }
            Ok(())
        })
        .await
    }

    async fn list_actors(&self) -> Result<Vec<String>, KvError> {
        let mut actors = self
            .shared
            .pg
            .spawn_run("list_actors", |client| async move {
                let rows = client.query(LIST_SQL, &[]).await?;
                Ok(rows
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>())
            })
            .await?;
        // Byte order, whatever the database's collation.
        actors.sort();
        Ok(actors)
    }

    /// One statement, so one snapshot; no ownership is taken.
    async fn snapshot(&self, actor_id: &str) -> Result<Vec<(Bytes, Bytes)>, KvError> {
        self.run_for_actor("snapshot", actor_id, |client, actor| async move {
            let rows = client.query(SNAPSHOT_SQL, &[&&*actor]).await?;
            rows.iter()
                .map(|row| {
                    let key: Vec<u8> = row.try_get(0)?;
                    let value: Vec<u8> = row.try_get(1)?;
                    Ok((Bytes::from(key), Bytes::from(value)))
                })
                .collect()
        })
        .await
    }

    async fn has_data(&self, actor_id: &str) -> Result<bool, KvError> {
        self.run_for_actor("has_data", actor_id, |client, actor| async move {
            let row = client.query_one(HAS_DATA_SQL, &[&&*actor]).await?;
            Ok(row.try_get::<_, bool>(0)?)
        })
        .await
    }

    async fn list_values(&self, key: &[u8]) -> Result<Vec<(String, Option<Bytes>)>, KvError> {
        let key = key.to_vec();
        let mut listed = self
            .shared
            .pg
            .spawn_run("list_values", move |client| {
                let key = key.clone();
                async move {
                    let rows = client.query(LIST_VALUES_SQL, &[&key]).await?;
                    rows.iter()
                        .map(|row| {
                            let actor: String = row.try_get(0)?;
                            let value: Option<Vec<u8>> = row.try_get(1)?;
                            Ok((actor, value.map(Bytes::from)))
                        })
                        .collect::<Result<Vec<_>, Failure>>()
                }
            })
            .await?;
        // Byte order, whatever the database's collation.
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listed)
    }

    /// Waits (at most a statement timeout) for the lease releases of
    /// stores dropped before, then closes the pool: later calls fail with
    /// a "closed" error.
    async fn close(&self) {
        let bound = self.shared.pg.options.statement_timeout;
        self.shared.settle_releases(bound).await;
        self.shared.pg.pool.close();
    }
}
