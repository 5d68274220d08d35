//! [`PgStorage`]: every actor's key-value namespace in one PostgreSQL
//! database, behind a connection pool shared by all of them.
//!
//! This module owns the pool, the retry policy and the translation of
//! PostgreSQL failures into [`KvError`]s; the per-actor statements live in
//! [`crate::store`]. Every call runs as a task on the tokio runtime that
//! connected, whoever polls it: SQLite's worker threads drive key-value
//! futures with a plain executor, and a call abandoned half-way must not
//! leave a connection in the middle of the wire protocol.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Client, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    StatementCache,
};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use vfs_core::{KvError, KvStore};
use vfs_pool::ActorStorage;

use crate::error::{Error, Result, chain};
use crate::store::{self, PgActorStore};
use crate::{PgOptions, schema};

/// Counters of the statements a [`PgStorage`] sent, for tests and benches
/// that check how many round trips an operation costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgStats {
    /// `get_batch` statements sent (one per call, plus retries).
    pub get_batches: u64,
    /// `put_batch` statements sent (one per call).
    pub put_batches: u64,
    /// `delete_batch` statements sent (one per call).
    pub delete_batches: u64,
    /// Entries written by all `put_batch` statements.
    pub put_entries: u64,
    /// Most entries written by one `put_batch` statement.
    pub largest_put: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// Calls refused because their store was fenced.
    pub fenced: u64,
    /// Lease renewal statements sent (each renews up to 10,000 stores).
    pub lease_renewals: u64,
    /// Writes whose answer was lost and that were settled by ending their
    /// backend or reading the write count back.
    pub settled_writes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) get_batches: AtomicU64,
    pub(crate) put_batches: AtomicU64,
    pub(crate) delete_batches: AtomicU64,
    pub(crate) put_entries: AtomicU64,
    pub(crate) largest_put: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) fenced: AtomicU64,
    pub(crate) lease_renewals: AtomicU64,
    pub(crate) settled_writes: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PgStats {
        PgStats {
            get_batches: self.get_batches.load(Ordering::Relaxed),
            put_batches: self.put_batches.load(Ordering::Relaxed),
            delete_batches: self.delete_batches.load(Ordering::Relaxed),
            put_entries: self.put_entries.load(Ordering::Relaxed),
            largest_put: self.largest_put.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            fenced: self.fenced.load(Ordering::Relaxed),
            lease_renewals: self.lease_renewals.load(Ordering::Relaxed),
            settled_writes: self.settled_writes.load(Ordering::Relaxed),
        }
    }
}

/// What the stores of one [`PgStorage`] share.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) options: PgOptions,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) counters: Counters,
    /// The server backend of each pooled connection, learned on its first
    /// write (keyed by its statement cache, which lives as long as it).
    pub(crate) backends: parking_lot::Mutex<
        std::collections::HashMap<usize, (std::sync::Weak<StatementCache>, crate::store::Backend)>,
    >,
    /// The stores whose leases the renewal task keeps alive, by actor row.
    pub(crate) leases:
        parking_lot::Mutex<std::collections::HashMap<i64, std::sync::Weak<crate::store::Owner>>>,
    /// Whether the renewal task runs (started by the first open).
    pub(crate) renewing: std::sync::atomic::AtomicBool,
    target: String,
}

/// Why one attempt of a call failed.
pub(crate) enum Failure {
    /// PostgreSQL or the network failed the statement.
    Pg(tokio_postgres::Error),
    /// The store is not the actor's owner any more.
    Fenced(String),
    /// Anything else, already in its final form.
    Kv(KvError),
    /// Nothing was applied and trying again may work (the words say why).
    Retry(String),
    /// No answer within this time: [`PgOptions::statement_timeout`], or less
    /// when the call's deadline came first.
    TimedOut(Duration),
}

/// A failed attempt, sorted.
pub(crate) enum Settled {
    /// Repeating cannot help: report this.
    Final(KvError),
    /// Nothing was applied and the next attempt may work; it does not use
    /// up an attempt (only the deadline bounds these).
    Again(String),
    /// The connection or the server failed; the cause in words.
    Transient(String),
}

/// Drops a connection that failed at the connection level instead of
/// returning it to the pool.
pub(crate) fn discard(client: Arc<Client>) {
    if let Some(client) = Arc::into_inner(client) {
        drop(Object::take(client));
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Failure::Pg(error)
    }
}

impl Shared {
    /// A pooled connection, mapping pool failures to store errors.
    async fn client(&self) -> Result<Client, KvError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Closed => KvError::Backend {
                message: "the PostgreSQL storage is closed".into(),
                source: None,
            },
            PoolError::Backend(pg) => {
                let message = format!("cannot reach PostgreSQL at {}: {}", self.target, chain(&pg));
                if is_transient(&pg) {
                    KvError::Unavailable { message }
                } else {
                    permanent(message, pg)
                }
            }
            PoolError::Timeout(kind) => KvError::Unavailable {
                message: format!(
                    "no PostgreSQL connection to {} within the timeout ({kind:?})",
                    self.target
                ),
            },
            other => KvError::Backend {
                message: format!("connection pool: {other}"),
                source: None,
            },
        })
    }

    /// The instant a call that starts now must be over by: the deadline of
    /// the database call that made it ([`vfs_core::call_deadline`], read by
    /// the caller on its first poll), and never later than the retry budget
    /// of [`PgOptions`] allows.
    pub(crate) fn deadline(&self, call: Option<Instant>) -> Instant {
        let now = Instant::now();
        let budget = self
            .options
            .statement_timeout
            .saturating_add(self.options.retry_max_backoff)
            .saturating_mul(self.options.retry_attempts);
        let cap = now.checked_add(budget).unwrap_or(now);
        call.map_or(cap, |d| d.min(cap))
    }

    /// Runs `attempt` on a pooled connection, repeating it with backoff while
    /// the failure is transient, attempts remain and `deadline` is not
    /// reached. Only for calls that are safe to repeat: each attempt must be
    /// harmless if it lands late (reads, and writes made conditional on the
    /// state they expect).
    ///
    /// The attempt gets the connection behind an `Arc`, so that once it has
    /// finished the connection is ours again: one that failed with a
    /// connection-level error is dropped instead of going back to the pool,
    /// where the next call could pick it before it notices it is dead.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        attempt: F,
    ) -> Result<T, KvError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run_patiently(what, deadline, self.options.statement_timeout, attempt)
            .await
    }

    /// [`Shared::run`], giving each attempt up to `patience` (instead of the
    /// statement timeout) before abandoning it.
    pub(crate) async fn run_patiently<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        patience: Duration,
        attempt: F,
    ) -> Result<T, KvError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let attempts = self.options.retry_attempts;
        let mut tried = 0;
        loop {
            tried += 1;
            let last = tried >= attempts;
            let client = match self.client_before(deadline).await {
                Ok(client) => Arc::new(client),
                // Nothing was sent: any call may be tried again.
                Err(e) if e.is_transient() && !last && Instant::now() < deadline => {
                    self.backoff(what, tried, &e, deadline).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let cause = match self
                .attempt_within(deadline, patience, attempt(Arc::clone(&client)))
                .await
            {
                Ok(value) => return Ok(value),
                Err(failure) => match self.settle_failure(what, failure) {
                    Settled::Final(e) => return Err(e),
                    Settled::Transient(cause) => cause,
                    Settled::Again(cause) => {
                        // The connection is fine; the state was not.
                        drop(client);
                        if Instant::now() >= deadline {
                            return Err(KvError::Unavailable {
                                message: format!("{what}: {cause}, until the call's deadline"),
                            });
                        }
                        tried -= 1;
                        let error = KvError::Unavailable { message: cause };
                        self.backoff(what, 1, &error, deadline).await;
                        continue;
                    }
                },
            };
            discard(client);
            if last || Instant::now() >= deadline {
                return Err(KvError::Unavailable {
                    message: format!(
                        "{what}: PostgreSQL unreachable after {tried} attempts \
                         (within the call's deadline): {cause}"
                    ),
                });
            }
            let error = KvError::Unavailable { message: cause };
            self.backoff(what, tried, &error, deadline).await;
        }
    }

    /// A pooled connection, waiting at most until `deadline`.
    pub(crate) async fn client_before(&self, deadline: Instant) -> Result<Client, KvError> {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, self.client())
            .await
            .unwrap_or_else(|_| {
                Err(KvError::Unavailable {
                    message: format!(
                        "no PostgreSQL connection to {} before the call's deadline",
                        self.target
                    ),
                })
            })
    }

    /// Runs one attempt, giving up after the statement timeout or at
    /// `deadline`, whichever comes first.
    pub(crate) async fn attempt_before<T>(
        &self,
        deadline: Instant,
        attempt: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        self.attempt_within(deadline, self.options.statement_timeout, attempt)
            .await
    }

    /// Runs one attempt, giving up after `patience` or at `deadline`.
    async fn attempt_within<T>(
        &self,
        deadline: Instant,
        patience: Duration,
        attempt: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = patience.min(left);
        tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or(Err(Failure::TimedOut(limit)))
    }

    /// Sorts a failed attempt into a final error or a transient cause.
    pub(crate) fn settle_failure(&self, what: &str, failure: Failure) -> Settled {
        match failure {
            Failure::Kv(e) => Settled::Final(e),
            Failure::Fenced(message) => {
                Counters::bump(&self.counters.fenced);
                Settled::Final(KvError::Fenced { message })
            }
            Failure::Retry(cause) => Settled::Again(cause),
            Failure::TimedOut(limit) => Settled::Transient(format!(
                "no answer within {limit:?} (the statement timeout or the call's deadline)"
            )),
            Failure::Pg(pg) if !is_transient(&pg) => {
                Settled::Final(permanent(format!("{what}: {}", chain(&pg)), pg))
            }
            Failure::Pg(pg) => Settled::Transient(chain(&pg)),
        }
    }

    /// Counts a retry and waits before attempt `tried + 1`.
    pub(crate) async fn backoff(&self, what: &str, tried: u32, error: &KvError, deadline: Instant) {
        Counters::bump(&self.counters.retries);
        tracing::debug!(what, attempt = tried, error = %error, "retrying PostgreSQL call");
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(self.options.backoff(tried).min(left)).await;
    }

    /// Runs `call` as a task on the runtime that connected, so that it runs
    /// to completion (and keeps the connection's protocol state sane) even
    /// when its caller is a plain executor or gives up waiting.
    pub(crate) async fn spawn<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, KvError>> + Send + 'static,
    ) -> Result<T, KvError> {
        self.runtime
            .spawn(call)
            .await
            .map_err(|e| KvError::Backend {
                message: format!("PostgreSQL storage task failed: {e}"),
                source: None,
            })?
    }
}

/// The store error for a PostgreSQL failure that repeating will not cure:
/// [`KvError::StorageFull`] when the server is out of disk space (see
/// [`means_storage_full`]), [`KvError::Backend`] otherwise.
fn permanent(message: String, error: tokio_postgres::Error) -> KvError {
    let full = error
        .as_db_error()
        .is_some_and(|db| means_storage_full(db.code(), db.message(), db.hint()));
    let source: Option<Arc<dyn std::error::Error + Send + Sync>> = Some(Arc::new(error));
    if full {
        KvError::StorageFull { message, source }
    } else {
        KvError::Backend { message, source }
    }
}

/// Whether a server error with SQLSTATE `code` means the server has no
/// space left: always for 53100 `disk_full`; for the class's catch-all
/// 53000 `insufficient_resources` only when the message or hint speaks of
/// space (the class also covers memory and connection slots, which are not
/// a full store).
fn means_storage_full(code: &SqlState, message: &str, hint: Option<&str>) -> bool {
    if *code == SqlState::DISK_FULL {
        return true;
    }
    if *code != SqlState::INSUFFICIENT_RESOURCES {
        return false;
    }
    let says_no_space = |text: &str| {
        let text = text.to_ascii_lowercase();
        ["no space left", "disk full", "disk space", "quota exceeded"]
            .iter()
            .any(|phrase| text.contains(phrase))
    };
    says_no_space(message) || hint.is_some_and(says_no_space)
}

/// Whether a PostgreSQL failure may go away by itself: a lost or refused
/// connection, a server shutting down or starting up, too many connections,
/// or a transaction the server aborted for serialization.
pub(crate) fn is_transient(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        let state = code.code();
        return state.starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::QUERY_CANCELED;
    }
    if error.is_closed() {
        return true;
    }
    // No server error: an I/O failure, a timeout or a refused connection.
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    error.to_string().contains("timeout")
}

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
            .field("target", &self.shared.target)
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
        options.validate()?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::InvalidUrl { reason: chain(&e) })?;
        if config.get_hosts().is_empty() {
            return Err(Error::InvalidUrl {
                reason: "no host given".into(),
            });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("driver-engine");
        }
        harden(&mut config, &options);
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| Error::InvalidOption(format!("connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| Error::Connect {
            target: target.clone(),
            message: match e {
                PoolError::Backend(pg) => chain(&pg),
                other => chain(&other),
            },
        })?;
        schema::migrate(&mut client).await?;
        store::prepare(&client)
            .await
            .map_err(|e| Error::Migration {
                message: format!("preparing statements: {}", chain(&e)),
            })?;
        drop(client);
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                options,
                runtime: tokio::runtime::Handle::current(),
                counters: Counters::default(),
                backends: parking_lot::Mutex::default(),
                leases: parking_lot::Mutex::default(),
                renewing: std::sync::atomic::AtomicBool::new(false),
                target,
            }),
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
        store::open(Arc::clone(&self.shared), actor_id).await
    }

    /// The actor's current generation, `None` when it was never opened.
    pub async fn generation(&self, actor_id: &str) -> Result<Option<i64>, KvError> {
        store::generation(&self.shared, actor_id).await
    }

    /// Statements sent so far by every store of this storage.
    pub fn stats(&self) -> PgStats {
        self.shared.counters.snapshot()
    }

    /// The server and database this storage talks to (no password).
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Connections currently open in the pool.
    pub fn open_connections(&self) -> usize {
        self.shared.pool.status().size
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
        store::delete_actor(&self.shared, actor_id).await
    }

    async fn list_actors(&self) -> Result<Vec<String>, KvError> {
        store::list_actors(&self.shared).await
    }

    /// Closes the pool: later calls fail with a "closed" error.
    async fn close(&self) {
        self.shared.pool.close();
    }
}

/// Makes both ends of every connection notice a dead peer in seconds, and
/// bounds how long a statement waits for a lock.
///
/// Client side: TCP keepalives and `tcp_user_timeout`. Server side (sent as
/// startup options, appended to any the URL gives): the same for the
/// backend's socket, so that a backend whose client vanished mid-statement
/// (holding an actor's row lock) is ended by the server within seconds, not
/// after the kernel's default two hours; and `lock_timeout`, so that a
/// statement queued behind such a lock fails (nothing applied, safe to
/// repeat) instead of waiting with it.
fn harden(config: &mut tokio_postgres::Config, options: &PgOptions) {
    const IDLE: Duration = Duration::from_secs(5);
    const INTERVAL: Duration = Duration::from_secs(2);
    const PROBES: u32 = 3;
    const USER_TIMEOUT: Duration = Duration::from_secs(15);
    config
        .keepalives(true)
        .keepalives_idle(IDLE)
        .keepalives_interval(INTERVAL)
        .keepalives_retries(PROBES)
        .tcp_user_timeout(USER_TIMEOUT);
    let server = format!(
        "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={PROBES} \
         -c tcp_user_timeout={} -c lock_timeout={}",
        IDLE.as_secs(),
        INTERVAL.as_secs(),
        USER_TIMEOUT.as_millis(),
        options.lock_timeout().as_millis(),
    );
    let combined = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {server}"),
        _ => server,
    };
    config.options(combined);
}

/// "host:port/dbname" for error messages, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::from("?"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_storage_full() {
        assert!(means_storage_full(
            &SqlState::DISK_FULL,
            "could not extend file \"base/16384/16385\": No space left on device",
            Some("Check free disk space."),
        ));
        assert!(means_storage_full(&SqlState::from_code("53100"), "", None));
    }

    #[test]
    fn insufficient_resources_is_storage_full_only_when_it_speaks_of_space() {
        let code = SqlState::from_code("53000");
        assert_eq!(code, SqlState::INSUFFICIENT_RESOURCES);
        assert!(means_storage_full(
            &code,
            "could not write to file \"pg_wal/xlogtemp.42\": No space left on device",
            None,
        ));
        assert!(means_storage_full(
            &code,
            "could not create file",
            Some("Check free disk space."),
        ));
        assert!(!means_storage_full(
            &code,
            "too many dynamic shared memory segments",
            None
        ));
    }

    #[test]
    fn other_resource_shortages_are_not_storage_full() {
        for code in [
            SqlState::OUT_OF_MEMORY,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            SqlState::UNIQUE_VIOLATION,
        ] {
            assert!(
                !means_storage_full(&code, "no space left on device", None),
                "{code:?}"
            );
        }
    }
}
