//! Connection and retry settings of [`PgStorage`](crate::PgStorage).
//!
//! The defaults suit a handful of SQLite instances per host talking to one
//! PostgreSQL server on a local network: enough connections that instances
//! rarely wait for one, and read retries that ride out a server restart of a
//! few seconds without hiding a server that is really gone.

use std::time::Duration;

use crate::{Error, Result};

/// Settings of a [`PgStorage`](crate::PgStorage) connection pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Most connections the pool keeps open. Default 16.
    pub max_connections: usize,
    /// How long one connection attempt may take before it counts as failed,
    /// unless the URL sets `connect_timeout` itself. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection. Default 30 s.
    pub wait_timeout: Duration,
    /// Longest wait for the answer to one statement. A call that takes
    /// longer is abandoned (its connection is closed) and treated like a
    /// lost connection: reads are retried, a write fails as unavailable with
    /// an unknown outcome. Default 30 s.
    pub statement_timeout: Duration,
    /// Attempts of a call that is safe to repeat (reads, taking ownership,
    /// listing, deleting an actor, and any write that was never sent) when
    /// the server is unreachable, the first included. Default 10.
    pub retry_attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    /// Default 25 ms.
    pub retry_initial_backoff: Duration,
    /// Longest wait between two attempts. Default 1 s.
    pub retry_max_backoff: Duration,
    /// How long an owner may serve an actor without renewing its claim.
    ///
    /// The owner renews its lease in the background (every third of this
    /// period) and refuses every call, reads from SQLite's cache included,
    /// once the lease may have run out by its own clock (a fifth of the
    /// period is kept as a margin for clock drift). A host taking an actor
    /// over waits for the previous owner's lease to run out, unless that
    /// owner released it by closing the actor. So after a new owner's first
    /// acknowledged write, no other host returns the actor's data, and a
    /// takeover from a vanished host takes at most this long plus a few
    /// seconds. Default 10 s.
    pub lease_duration: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
            retry_attempts: 10,
            retry_initial_backoff: Duration::from_millis(25),
            retry_max_backoff: Duration::from_secs(1),
            lease_duration: Duration::from_secs(10),
        }
    }
}

impl PgOptions {
    /// Refuses settings that would make the pool unusable.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            return Err(Error::InvalidOption(
                "max_connections must be at least 1".into(),
            ));
        }
        if self.retry_attempts == 0 {
            return Err(Error::InvalidOption(
                "retry_attempts must be at least 1 (the first attempt)".into(),
            ));
        }
        if self.connect_timeout.is_zero()
            || self.wait_timeout.is_zero()
            || self.statement_timeout.is_zero()
        {
            return Err(Error::InvalidOption(
                "connect_timeout, wait_timeout and statement_timeout must be greater than zero"
                    .into(),
            ));
        }
        if self.lease_duration < Duration::from_millis(500) {
            return Err(Error::InvalidOption(
                "lease_duration must be at least 500 ms (renewals need a few round trips)".into(),
            ));
        }
        Ok(())
    }

    /// How often the owner renews its lease.
    pub(crate) fn lease_renewal(&self) -> Duration {
        self.lease_duration / 3
    }

    /// The part of the lease the owner does not use, so that it stops
    /// serving before the server's clock says the lease is over.
    pub(crate) fn lease_margin(&self) -> Duration {
        self.lease_duration / 5
    }

    /// How long one statement waits for a row lock before giving up (the
    /// lock of an actor's row, held by a write, a takeover or a stale
    /// backend). Bounded so that a lock held by a connection whose client
    /// vanished cannot hold a call for longer than a lease.
    pub(crate) fn lock_timeout(&self) -> Duration {
        (self.lease_duration / 4).max(Duration::from_millis(50))
    }

    /// The wait before attempt `attempt + 1` (so `attempt` starts at 1).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.retry_initial_backoff
            .saturating_mul(factor)
            .min(self.retry_max_backoff)
    }
}
