//! [`Connections`]: the pool of connections to one PostgreSQL database and
//! the rules for using them, below any notion of actor or store.
//!
//! This module connects (URL, keepalives, schema, prepared statements), runs
//! attempts of a call on pooled connections with retries, backoff and
//! deadlines, sorts failures into final and transient ones, translates
//! PostgreSQL's failures into [`KvError`]s, and knows which server backend
//! each connection is (so a lost write's backend can be ended). Every call
//! runs as a task on the tokio runtime that connected, whoever polls it:
//! SQLite's worker threads drive key-value futures with a plain executor,
//! and a call abandoned half-way must not leave a connection in the middle
//! of the wire protocol.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Client, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
    StatementCache,
};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use vfs_core::KvError;

use crate::error::{Error, Result, chain};
use crate::stats::Counters;
use crate::{PgOptions, schema};

/// Which backend this connection is, to end it if a write on it is lost.
const BACKEND_SQL: &str =
    "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// Ends backend `$1` if it is still the one that started at `$2`, waiting
/// up to `$3` ms for it to exit. No row: it is gone already.
const END_BACKEND_SQL: &str = "
    SELECT pg_terminate_backend(pid, $3::bigint) FROM pg_stat_activity
    WHERE pid = $1 AND backend_start::text = $2";

/// The pooled connections to one database, with the settings and counters
/// every call on them uses.
pub(crate) struct Connections {
    pub(crate) pool: Pool,
    pub(crate) options: PgOptions,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) counters: Counters,
    /// The server backend of each pooled connection, learned on its first
    /// write (keyed by its statement cache, which lives as long as it).
    backends: parking_lot::Mutex<std::collections::HashMap<usize, (Weak<StatementCache>, Backend)>>,
    /// "host:port/dbname", never the password.
    pub(crate) target: String,
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

impl Connections {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string) with one real connection, creates or
    /// upgrades the schema, and prepares `statements` on that connection.
    /// Must be called within a tokio runtime, which then runs every call.
    pub(crate) async fn connect(
        url: &str,
        options: PgOptions,
        statements: &[&str],
    ) -> Result<Self> {
        options.validate()?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| Error::InvalidUrl {
            reason: "not a postgres:// URL nor a key=value connection string".into(),
            source: Some(e),
        })?;
        if config.get_hosts().is_empty() {
            return Err(Error::InvalidUrl {
                reason: "no host given".into(),
                source: None,
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
            .map_err(Error::PoolBuild)?;
        let mut client = pool.get().await.map_err(|e| Error::Connect {
            target: target.clone(),
            source: match e {
                PoolError::Backend(pg) => Box::new(pg),
                other => Box::new(other),
            },
        })?;
        schema::migrate(&mut client).await?;
        prepare(&client, statements)
            .await
            .map_err(|source| Error::Migration {
                step: "preparing the driver's statements",
                source,
            })?;
        drop(client);
        Ok(Self {
            pool,
            options,
            runtime: tokio::runtime::Handle::current(),
            counters: Counters::default(),
            backends: parking_lot::Mutex::default(),
            target,
        })
    }

    /// A pooled connection, mapping pool failures to store errors.
    async fn client(&self) -> Result<Client, KvError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Closed => KvError::Backend {
                message: "the PostgreSQL storage is closed".into(),
                source: None,
            },
            PoolError::Backend(pg) if is_transient(&pg) => KvError::Unavailable {
                message: format!("cannot reach PostgreSQL at {}: {}", self.target, chain(&pg)),
            },
            PoolError::Backend(pg) => {
                permanent(format!("cannot reach PostgreSQL at {}", self.target), pg)
            }
            PoolError::Timeout(kind) => KvError::Unavailable {
                message: format!(
                    "no PostgreSQL connection to {} within the timeout ({kind:?})",
                    self.target
                ),
            },
            other => KvError::backend("the PostgreSQL connection pool failed", other),
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

    /// [`Connections::run`], giving each attempt up to `patience` (instead of the
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
                Settled::Final(permanent(format!("{what}: the statement failed"), pg))
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

    /// Runs a call that is safe to repeat ([`Connections::run`]) as a task
    /// on the runtime that connected ([`Connections::spawn`]), within the
    /// deadline of the database call that made it.
    pub(crate) async fn spawn_run<T, F, Fut>(
        self: &Arc<Self>,
        what: &'static str,
        attempt: F,
    ) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: Fn(Arc<Client>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Failure>> + Send,
    {
        let deadline = self.deadline(vfs_core::call_deadline());
        let connections = Arc::clone(self);
        self.spawn(async move { connections.run(what, deadline, attempt).await })
            .await
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
            .map_err(|e| KvError::backend("PostgreSQL storage task failed", e))?
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

/// `duration` in whole milliseconds, as PostgreSQL parameters take it.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A server error that aborted the statement before anything was applied
/// and that goes away by itself: a lock wait that timed out, a cancelled
/// statement, a serialization failure or deadlock.
pub(crate) fn aborted_transiently(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        let code = db.code();
        *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::QUERY_CANCELED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// A server error that says the statement failed and was rolled back, so
/// nothing was applied: any error response except the ones that end the
/// connection (after which the fate of the statement is not known).
pub(crate) fn definitely_not_applied(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        let state = db.code().code();
        !(state.starts_with("08") || state.starts_with("57P"))
    })
}

/// Identity of one server backend (a pid is reused; with its start time it
/// is not).
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pid: i32,
    started: String,
}

impl Backend {
    /// The backend named by a row's first two columns: its pid and its
    /// `backend_start` as text.
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            pid: row.try_get(0)?,
            started: row.try_get(1)?,
        })
    }

    /// The backend's process id, for logs and messages.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Ends this backend and waits (up to `wait`) until it has exited.
    /// `true` when it is gone; `false` when it is still there.
    pub(crate) async fn end(
        &self,
        client: &Client,
        wait: Duration,
    ) -> Result<bool, tokio_postgres::Error> {
        let rows = client
            .query(
                END_BACKEND_SQL,
                &[&self.pid, &self.started, &millis(wait).max(1)],
            )
            .await?;
        Ok(rows.first().is_none_or(|row| row.get::<_, bool>(0)))
    }
}

impl Connections {
    /// The backend of `client`, asked once per connection.
    pub(crate) async fn backend_of(
        &self,
        client: &Client,
    ) -> Result<Backend, tokio_postgres::Error> {
        let key = Arc::as_ptr(&client.statement_cache) as usize;
        if let Some(known) = self
            .backends
            .lock()
            .get(&key)
            .and_then(|(cache, backend)| (cache.strong_count() > 0).then(|| backend.clone()))
        {
            return Ok(known);
        }
        let backend = Backend::from_row(&client.query_one(BACKEND_SQL, &[]).await?)?;
        let mut backends = self.backends.lock();
        backends.retain(|_, (cache, _)| cache.strong_count() > 0);
        backends.insert(
            key,
            (Arc::downgrade(&client.statement_cache), backend.clone()),
        );
        Ok(backend)
    }
}

/// Prepares `statements` on a fresh connection (they are cached per
/// connection and reused by every later call on it).
async fn prepare(client: &Client, statements: &[&str]) -> Result<(), tokio_postgres::Error> {
    for sql in statements {
        client.prepare_cached(sql).await?;
    }
    Ok(())
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
