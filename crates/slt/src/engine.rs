//! The engines a script runs on, behind one adapter that the
//! `sqllogictest` runner drives.
//!
//! - [`Engine::Pool`]: the whole stack. Each script is an actor of one
//!   [`FsDriver`] (redb on a temporary directory) opened through the
//!   [`vfs_pool`] pool, so every page goes through the VFS, the pool and
//!   the store.
//! - [`Engine::Native`]: the same SQLite version, bundled by rusqlite, on a
//!   database file in a temporary directory.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use vfs_pool::{Database, Value};

use crate::EngineError;
use crate::format::{ColumnKind, Rendered, render, render_converted};

/// Which engine runs the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// SQLite in wasm, through driver-fs and the pool.
    #[default]
    Pool,
    /// rusqlite's bundled SQLite on a file, for comparison.
    Native,
}

impl Engine {
    /// The engine's name on the command line: `pool` or `native`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Native => "native",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pool" => Ok(Self::Pool),
            "native" => Ok(Self::Native),
            other => Err(format!(
                "unknown engine {other:?}: expected `pool` or `native`"
            )),
        }
    }
}

/// One script's database on one engine.
#[async_trait]
pub(crate) trait Backend: Send {
    /// Runs a statement, discarding any rows; returns the rows it changed.
    async fn statement(&mut self, sql: &str) -> Result<u64, EngineError>;
    /// Runs a query: its column count and rows, `None` when the SQL
    /// returns no columns at all (it was not a query).
    async fn query(&mut self, sql: &str) -> Result<Option<(usize, Vec<Vec<Value>>)>, EngineError>;
    /// Runs a one-parameter, one-value query (a conversion).
    async fn convert(&mut self, sql: &'static str, value: Value) -> Result<Value, EngineError>;
    /// Closes the database.
    async fn close(&mut self) -> Result<(), EngineError>;
}

/// The pool engine's database: an actor's [`Database`].
pub(crate) struct PoolBackend {
    pub(crate) db: Database,
}

#[async_trait]
impl Backend for PoolBackend {
    async fn statement(&mut self, sql: &str) -> Result<u64, EngineError> {
        Ok(self.db.execute(sql, &[]).await?)
    }

    async fn query(&mut self, sql: &str) -> Result<Option<(usize, Vec<Vec<Value>>)>, EngineError> {
        let rows = self.db.query(sql, &[]).await?;
        if rows.columns.is_empty() {
            return Ok(None);
        }
        Ok(Some((rows.columns.len(), rows.rows)))
    }

    async fn convert(&mut self, sql: &'static str, value: Value) -> Result<Value, EngineError> {
        let rows = self.db.query(sql, &[value]).await?;
        single(rows.rows)
    }

    async fn close(&mut self) -> Result<(), EngineError> {
        Ok(self.db.close().await?)
    }
}

/// The native engine's database.
pub(crate) struct NativeBackend {
    pub(crate) conn: rusqlite::Connection,
}

impl NativeBackend {
    fn rows(
        &self,
        sql: &str,
        params: &[rusqlite::types::Value],
    ) -> rusqlite::Result<(usize, Vec<Vec<Value>>)> {
        let mut stmt = self.conn.prepare(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(from_native(row.get_ref(i)?));
            }
            out.push(values);
        }
        Ok((columns, out))
    }
}

#[async_trait]
impl Backend for NativeBackend {
    async fn statement(&mut self, sql: &str) -> Result<u64, EngineError> {
        self.rows(sql, &[])?;
        Ok(self.conn.changes())
    }

    async fn query(&mut self, sql: &str) -> Result<Option<(usize, Vec<Vec<Value>>)>, EngineError> {
        let (columns, rows) = self.rows(sql, &[])?;
        Ok((columns > 0).then_some((columns, rows)))
    }

    async fn convert(&mut self, sql: &'static str, value: Value) -> Result<Value, EngineError> {
        let (_, rows) = self.rows(sql, &[to_native(value)])?;
        single(rows)
    }

    async fn close(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}

fn from_native(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Integer(v),
        ValueRef::Real(v) => Value::Real(v),
        ValueRef::Text(bytes) => Value::Text(String::from_utf8_lossy(bytes).into_owned()),
        ValueRef::Blob(bytes) => Value::Blob(bytes.to_vec()),
    }
}

fn to_native(value: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Native;
    match value {
        Value::Null => Native::Null,
        Value::Integer(v) => Native::Integer(v),
        Value::Real(v) => Native::Real(v),
        Value::Text(text) => Native::Text(text),
        Value::Blob(bytes) => Native::Blob(bytes),
    }
}

fn single(rows: Vec<Vec<Value>>) -> Result<Value, EngineError> {
    let mut rows = rows.into_iter();
    match (rows.next(), rows.next()) {
        (Some(row), None) if row.len() == 1 => Ok(row.into_iter().next().unwrap_or(Value::Null)),
        (first, _) => Err(EngineError::Conversion(format!(
            "expected one value, got {first:?}…"
        ))),
    }
}

/// What the record loop tells the adapter, and what the adapter leaves
/// for it: the runner's `AsyncDB` interface passes only the SQL.
#[derive(Default)]
pub(crate) struct Shared {
    /// The column letters of the `query` record about to run; `None` for a
    /// `statement`.
    pub(crate) declared: Option<Vec<ColumnKind>>,
    /// How closing the database failed, if it did.
    pub(crate) close_error: Option<String>,
}

/// Locks the shared state; a panic elsewhere cannot leave it inconsistent.
pub(crate) fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `sqllogictest` runner's view of one script's database.
pub(crate) struct SltDb<B> {
    pub(crate) backend: B,
    pub(crate) shared: Arc<Mutex<Shared>>,
}

#[async_trait]
impl<B: Backend> AsyncDB for SltDb<B> {
    type Error = EngineError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, EngineError> {
        let declared = lock(&self.shared).declared.take();
        let Some(kinds) = declared else {
            return Ok(DBOutput::StatementComplete(
                self.backend.statement(sql).await?,
            ));
        };
        let Some((columns, rows)) = self.backend.query(sql).await? else {
            return Ok(DBOutput::StatementComplete(0));
        };
        // Columns past the declared letters print as text; the column
        // validator then reports the count mismatch.
        let kind_of = |i: usize| kinds.get(i).copied().unwrap_or(ColumnKind::Text);
        let mut printed = Vec::with_capacity(rows.len());
        for row in rows {
            let mut out = Vec::with_capacity(row.len());
            for (i, value) in row.into_iter().enumerate() {
                out.push(match render(kind_of(i), &value) {
                    Rendered::Done(text) => text,
                    Rendered::Convert(sql) => {
                        render_converted(&self.backend.convert(sql, value).await?)
                    }
                });
            }
            printed.push(out);
        }
        let types = (0..columns)
            .map(|i| match kinds.get(i) {
                Some(ColumnKind::Integer) => DefaultColumnType::Integer,
                Some(ColumnKind::Text) => DefaultColumnType::Text,
                Some(ColumnKind::Real) => DefaultColumnType::FloatingPoint,
                None => DefaultColumnType::Any,
            })
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: printed,
        })
    }

    async fn shutdown(&mut self) {
        if let Err(e) = self.backend.close().await {
            lock(&self.shared).close_error = Some(e.to_string());
        }
    }

    fn engine_name(&self) -> &'static str {
        "sqlite"
    }
}
