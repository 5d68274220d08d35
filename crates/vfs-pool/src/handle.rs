//! What a caller holds: an actor's handle and its open database.
//!
//! Both are cheap clones of shared state. Every database call is counted as
//! an operation in flight on its instance for as long as it runs (including
//! while the caller awaits the reply), so an instance is never destroyed
//! under a running call.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vfs_core::KvStore;
use vfs_wasm::{DbId, Instance, Rows, Value};

use crate::flush::WriteBehind;
use crate::pool::{ActorState, DbSlot, Shared};
use crate::{Error, Result};

/// An actor's seat in the pool, returned by
/// [`SqliteVfsPool::acquire`](crate::SqliteVfsPool::acquire).
///
/// Clones share one state. Dropping a handle does not release the actor;
/// [`release`](Self::release) does.
#[derive(Clone)]
pub struct PooledHandle {
    shared: Arc<Shared>,
    actor: Arc<ActorState>,
}

impl fmt::Debug for PooledHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledHandle")
            .field("actor", &self.actor.id)
            .field("instance", &self.actor.instance)
            .field("released", &self.is_released())
            .finish_non_exhaustive()
    }
}

impl PooledHandle {
    pub(crate) fn new(shared: Arc<Shared>, actor: Arc<ActorState>) -> Self {
        Self { shared, actor }
    }

    /// The actor id this handle serves.
    pub fn actor_id(&self) -> &str {
        &self.actor.id
    }

    /// The id of the instance serving this actor (see
    /// [`SqliteVfsPool::instances`](crate::SqliteVfsPool::instances)).
    pub fn instance_id(&self) -> u64 {
        self.actor.instance
    }

    /// Whether [`release`](Self::release) was called (on any clone).
    pub fn is_released(&self) -> bool {
        self.actor.released.load(Ordering::SeqCst)
    }

    /// Whether two handles share one state (the same acquire of one actor).
    pub fn same_as(&self, other: &PooledHandle) -> bool {
        Arc::ptr_eq(&self.actor, &other.actor)
    }

    /// Opens the actor's database on `kv`, the actor's own key-value
    /// namespace. A new (empty) store gets a new database.
    ///
    /// An actor has at most one open database at a time; open again after
    /// [`Database::close`].
    ///
    /// On a broken instance (see [`Error::InstanceBroken`]) this fails: release
    /// the actor and acquire it again, which seats it on a healthy instance.
    #[tracing::instrument(name = "open", skip_all, fields(actor = %self.actor.id))]
    pub async fn open(&self, kv: Arc<dyn KvStore>) -> Result<Database> {
        {
            let mut slot = self.actor.db.lock();
            if *slot != DbSlot::Empty {
                return Err(Error::AlreadyOpen {
                    actor: self.actor.id.clone(),
                });
            }
            *slot = DbSlot::Opening;
        }
        let opened = self.open_on_worker(kv).await;
        let (orphan, failure) = {
            let mut slot = self.actor.db.lock();
            match opened {
                Ok((db, behind)) => {
                    self.actor.behind.lock().clone_from(&behind);
                    if self.is_released() {
                        *slot = DbSlot::Empty;
                        (db, None)
                    } else if let Some(poison) = behind.as_ref().and_then(|b| b.poison()) {
                        // Its first writes (a new database's page 1) failed.
                        *slot = DbSlot::Empty;
                        (db, Some(Error::Poisoned(poison)))
                    } else {
                        self.actor.activity.opened();
                        *slot = DbSlot::Open(db);
                        return Ok(Database {
                            inner: Arc::new(DbState {
                                shared: Arc::clone(&self.shared),
                                actor: Arc::clone(&self.actor),
                                db,
                                behind,
                                closed: AtomicBool::new(false),
                            }),
                        });
                    }
                }
                Err(e) => {
                    *slot = DbSlot::Empty;
                    return Err(e);
                }
            }
        };
        // Released while opening (the release could not see this database)
        // or unusable: close it here (a failure poisons the name).
        let _ = self.shared.close_db(&self.actor, orphan, "close").await;
        Err(failure.unwrap_or_else(|| Error::Released {
            actor: self.actor.id.clone(),
        }))
    }

    /// Opens the database on its instance, and waits until whatever the
    /// open wrote (a new database's first page) is durable.
    async fn open_on_worker(
        &self,
        kv: Arc<dyn KvStore>,
    ) -> Result<(DbId, Option<Arc<WriteBehind>>)> {
        self.shared.settle_earlier(&self.actor.id).await?;
        let (kv, behind) = self.shared.write_behind(kv);
        let db = {
            let _op = self.shared.begin_op(&self.actor)?;
            let name = self.actor.short_name.to_string();
            self.actor
                .worker
                .call_healthy(move |i| i.open(&name, kv))
                .await??
        };
        if let Some(behind) = &behind {
            // A failure poisons `behind`; the caller closes the database.
            let _ = self.shared.gate(behind, behind.mark()).await;
        }
        Ok((db, behind))
    }

    /// Releases the actor: force-closes its database (only this actor's:
    /// names are matched exactly, so releasing "1" never touches "10") and
    /// frees its seat. Idempotent; later calls on this handle or its
    /// databases fail with [`Error::Released`].
    #[tracing::instrument(name = "release", skip_all, fields(actor = %self.actor.id))]
    pub async fn release(&self) {
        self.shared.release(&self.actor).await;
    }
}

/// An open database of one actor. Clones share one connection.
#[derive(Clone)]
pub struct Database {
    inner: Arc<DbState>,
}

struct DbState {
    shared: Arc<Shared>,
    actor: Arc<ActorState>,
    db: DbId,
    /// The database's write-behind queue, if it has one.
    behind: Option<Arc<WriteBehind>>,
    closed: AtomicBool,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("actor", &self.inner.actor.id)
            .field("closed", &self.inner.closed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Database {
    /// The actor this database belongs to.
    pub fn actor_id(&self) -> &str {
        &self.inner.actor.id
    }

    /// Runs a script of one or more statements, without parameters.
    pub async fn exec(&self, sql: &str) -> Result<()> {
        self.call_borrowing(
            |i, db| i.exec(db, sql),
            || {
                let sql = sql.to_owned();
                move |i: &mut Instance, db| i.exec(db, &sql)
            },
        )
        .await
    }

    /// Runs one statement with parameters; returns the number of rows it
    /// changed.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.call_borrowing(
            |i, db| i.execute(db, sql, params),
            || {
                let (sql, params) = (sql.to_owned(), params.to_vec());
                move |i: &mut Instance, db| i.execute(db, &sql, &params)
            },
        )
        .await
    }

    /// Runs one query with parameters and returns its column names and rows.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Rows> {
        self.call_borrowing(
            |i, db| i.query(db, sql, params),
            || {
                let (sql, params) = (sql.to_owned(), params.to_vec());
                move |i: &mut Instance, db| i.query(db, &sql, &params)
            },
        )
        .await
    }

    /// Gives the memory this database keeps only to be fast back: its page
    /// cache and cached prepared statements to its instance, where its
    /// co-tenants can use them, and the page images the host keeps for its
    /// files. Returns the bytes of guest heap freed (the host's images are
    /// not counted). Its data is untouched; its next call prepares its
    /// statement again and reads the pages it needs from the store again.
    ///
    /// The pool does this on its own for databases that had no call for
    /// [`PoolConfig::release_memory_after`](crate::PoolConfig::release_memory_after).
    /// It is not a call of the actor's: it does not count as activity.
    pub async fn release_memory(&self) -> Result<u64> {
        self.check_usable()?;
        self.inner
            .shared
            .release_memory(&self.inner.actor, self.inner.db)
            .await
    }

    /// Bytes of its instance's guest heap this database holds now (its page
    /// cache, schema, prepared statements and whatever its running
    /// statements hold), as counted against
    /// [`PoolConfig::tenant_memory_limit_bytes`](crate::PoolConfig::tenant_memory_limit_bytes).
    /// Not a call of the actor's: it does not count as activity.
    pub async fn memory_bytes(&self) -> Result<u64> {
        self.check_usable()?;
        self.inner
            .shared
            .uncounted_call(
                &self.inner.actor,
                self.inner.db,
                vfs_wasm::Instance::database_memory_bytes,
            )
            .await
    }

    /// Refuses a closed or poisoned database.
    fn check_usable(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if let Some(poison) = self.inner.behind.as_ref().and_then(|b| b.poison()) {
            return Err(Error::Poisoned(poison));
        }
        Ok(())
    }

    /// Whether [`close`](Self::close) was called on this database (any
    /// clone). A database closed by a release is not counted: its calls
    /// fail with [`Error::Released`].
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Closes the database. Idempotent; a database already closed by a
    /// release closes without error. A failed close poisons the actor's name
    /// in its instance (never reused while the instance lives).
    ///
    /// Gives up on an instance's thread that one call has held past the
    /// bound of [`PoolConfig::close_timeout`](crate::PoolConfig::close_timeout):
    /// this then fails with [`Error::TimedOut`] and the instance takes no
    /// new actors.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let actor = &self.inner.actor;
        let mine = {
            let mut slot = actor.db.lock();
            if *slot == DbSlot::Open(self.inner.db) {
                *slot = DbSlot::Empty;
                true
            } else {
                false
            }
        };
        if !mine {
            return Ok(());
        }
        let _op = match self.inner.shared.begin_op(actor) {
            Ok(op) => op,
            Err(e) => {
                actor.poisoned.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.inner
            .shared
            .close_db(actor, self.inner.db, "close")
            .await
    }

    /// Runs a call of the actor's: `inline` on the calling thread when it
    /// can run there, else the work `queued` makes on the instance's
    /// thread (see `WorkerSender::call_either`). Counts it as activity,
    /// and reports it only once what it wrote is durable.
    async fn call_borrowing<T, B, Q, F>(&self, inline: B, queued: Q) -> Result<T>
    where
        T: Send + 'static,
        B: FnOnce(&mut Instance, DbId) -> vfs_wasm::Result<T>,
        Q: FnOnce() -> F,
        F: FnOnce(&mut Instance, DbId) -> vfs_wasm::Result<T> + Send + 'static,
    {
        self.check_usable()?;
        let _running = self.inner.actor.activity.call();
        let behind = self.inner.behind.clone();
        let (result, upto) = {
            let _op = self.inner.shared.begin_op(&self.inner.actor)?;
            let db = self.inner.db;
            let mine = behind.clone();
            self.inner
                .actor
                .worker
                .call_healthy_either(
                    |i| {
                        let result = inline(i, db);
                        (result, behind.as_ref().map(|b| b.mark()))
                    },
                    move || {
                        let f = queued();
                        move |i: &mut Instance| {
                            let result = f(i, db);
                            (result, mine.map(|b| b.mark()))
                        }
                    },
                )
                .await?
        };
        // The output gate: nothing is reported before what the call wrote
        // is durable, and a failed flush is the call's error.
        if let (Some(behind), Some(upto)) = (&behind, upto) {
            self.inner.shared.gate(behind, upto).await?;
        }
        Ok(result?)
    }
}
