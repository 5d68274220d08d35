//! The tables this crate keeps in PostgreSQL, created and upgraded through a
//! versioned list of migrations.
//!
//! Every host runs [`migrate`] when it connects. The whole run is one
//! transaction holding a transaction-scoped advisory lock, so two hosts that
//! connect at the same moment apply each migration exactly once: the second
//! waits for the first, then finds nothing left to do. A database whose
//! schema is newer than this build is refused rather than written to.
//!
//! Layout (migration 1):
//! - `vfs_actors`: one row per actor ever opened, with a numeric id (short
//!   index keys for the pages) and the ownership `generation` used for
//!   fencing. Rows are never deleted, so a generation never goes backwards,
//!   even across `delete_actor`.
//! - `vfs_pages`: one row per key of an actor's key-value namespace. There is
//!   no foreign key to `vfs_actors`: every write already locks and checks the
//!   owner row in the same statement, and a per-row foreign-key trigger would
//!   cost more than the rest of a large batch.
//!
//! Migration 2 adds what makes writes exact under partial failure and
//! ownership time-bounded:
//! - `seq`: the number of writes applied to the actor. Every write names the
//!   value it expects and advances it in the same statement, so a write that
//!   arrives late (after its caller gave up, or after a later write) applies
//!   nothing, and a caller that lost an answer can read back whether its
//!   write landed.
//! - `lease_until`: until when (server clock) the current owner may serve the
//!   actor without asking; renewed by the owner, `NULL` once released.
//! - `prior_lease_until`: the previous owner's lease, recorded by the
//!   takeover that fenced it, which waits for it to run out.
//! - `owner_token`: a random number per opening, so an open whose answer was
//!   lost and that is repeated recognises its own first attempt.
//! - `opened_seq`: the write count when the current generation took over,
//!   so a fenced owner can still tell whether its last write landed.

use deadpool_postgres::Client;

use crate::error::{Error, Result};

/// One step of the schema; applied in order, each at most once.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// Every migration this build knows, in order. Append only: an applied
/// migration never changes.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "actors with ownership generations; pages per actor",
        sql: "
        CREATE TABLE vfs_actors (
            id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            actor_id    TEXT NOT NULL UNIQUE,
            generation  BIGINT NOT NULL,
            opened_at   TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE vfs_pages (
            actor  BIGINT NOT NULL,
            key    BYTEA NOT NULL,
            value  BYTEA NOT NULL,
            PRIMARY KEY (actor, key)
        );
    ",
    },
    Migration {
        version: 2,
        description: "per-actor write sequence; ownership leases",
        sql: "
        ALTER TABLE vfs_actors
            ADD COLUMN seq               BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN lease_until       TIMESTAMPTZ,
            ADD COLUMN prior_lease_until TIMESTAMPTZ,
            ADD COLUMN owner_token       BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN opened_seq        BIGINT NOT NULL DEFAULT 0;
    ",
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 2;

/// Key of the advisory lock that serializes migrations across hosts
/// (the bytes of "vfspool1").
const MIGRATION_LOCK: i64 = 0x7666_7370_6f6f_6c31;

/// Brings the database's schema to [`SCHEMA_VERSION`], or refuses a newer
/// one. Returns the version found before migrating.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32> {
    let failed = |source| Error::Migration {
        step: "checking and upgrading the schema",
        source,
    };
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    // The one table that cannot be created by a migration: the record of them.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vfs_schema_migrations (
            version     INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(failed)?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM vfs_schema_migrations",
            &[],
        )
        .await
        .map_err(failed)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO vfs_schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "applied schema migration"
        );
    }
    tx.commit().await.map_err(failed)?;
    Ok(found)
}
