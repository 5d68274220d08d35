//! Statements on one connection: prepare, bind, step and read rows, run a
//! script, and reuse prepared statements through the database's
//! [`StatementCache`].
//!
//! Why a borrowed [`Connection`]: every operation here needs the guest and
//! the `sqlite3*` together, and only for the length of one call, which
//! [`Guest::with_db`](crate::guest::Guest::with_db) has already entered.
//!
//! Two rules keep a call to what its own statement produced. The shape of
//! a result (column count and names) is read only after the first step,
//! because that step may re-prepare a cached statement whose schema
//! changed. And the shim writes how many columns it recorded for a row;
//! a row whose count differs from the shape read is refused, so the host
//! never reads records this call did not write.

use vfs_core::sqlite;

use crate::cache::StatementCache;
use crate::error::{Error, Result};
use crate::guest::{ConnPtr, Guest, StmtPtr};
use crate::memory::GuestPtr;
use crate::value::{Rows, Value};

/// Size of one column record written by `shim_row`.
const COLUMN_RECORD: u32 = 16;

/// One connection of the guest, borrowed for one call.
pub(crate) struct Connection<'g> {
    guest: &'g mut Guest,
    conn: ConnPtr,
}

impl<'g> Connection<'g> {
    /// Wraps an open connection.
    pub(crate) fn new(guest: &'g mut Guest, conn: ConnPtr) -> Self {
        Self { guest, conn }
    }

    /// Opens a connection to `name`; a failed open is closed again and
    /// returned as its error.
    pub(crate) fn open(guest: &'g mut Guest, name: &str) -> Result<Self> {
        let (rc, conn) = guest.open(name)?;
        if rc != sqlite::SQLITE_OK {
            let err = guest.sqlite_error(conn, rc);
            if !conn.is_null() {
                guest.close(conn)?;
            }
            return Err(err);
        }
        Ok(Self { guest, conn })
    }

    /// The `sqlite3*`.
    pub(crate) fn ptr(&self) -> ConnPtr {
        self.conn
    }

    /// The guest, for calls that are not about statements.
    pub(crate) fn guest(&mut self) -> &mut Guest {
        self.guest
    }

    /// The error for result code `rc` on this connection.
    pub(crate) fn error(&mut self, rc: i32) -> Error {
        self.guest.sqlite_error(self.conn, rc)
    }

    /// Finalizes every cached statement, then closes the connection.
    pub(crate) fn close(mut self, cache: StatementCache) -> Result<()> {
        for stmt in cache.into_statements() {
            self.guest.finalize(stmt)?;
        }
        let rc = self.guest.close(self.conn)?;
        if rc != sqlite::SQLITE_OK {
            return Err(self.error(rc));
        }
        Ok(())
    }

    /// Runs every statement of `sql`, all under the budget of the call
    /// that was entered, discarding rows.
    pub(crate) fn exec_script(&mut self, sql: &str) -> Result<()> {
        let (buf, out) = self.guest.alloc(sql.as_bytes(), 8)?;
        let result = self.exec_in_guest(buf, sql.len() as u32, out);
        if !self.guest.is_broken() {
            self.guest.free(buf)?;
        }
        result
    }

    fn exec_in_guest(&mut self, buf: GuestPtr, len: u32, out: GuestPtr) -> Result<()> {
        let mut offset = 0;
        while offset < len {
            let (stmt, consumed) =
                self.guest
                    .prepare(self.conn, buf.add(offset), len - offset, out, 0)?;
            offset += consumed.max(1);
            let Some(stmt) = stmt else {
                continue;
            };
            // Each statement reports its own storage failure, not one an
            // earlier statement of the script recovered from.
            self.guest.state().last_error = None;
            let result = self.step_all(stmt, None);
            self.guest.finalize(stmt)?;
            result?;
        }
        Ok(())
    }

    /// Runs a single statement without parameters or caching (internal
    /// pragmas) and returns its rows.
    pub(crate) fn query_once(&mut self, sql: &str) -> Result<Vec<Vec<Value>>> {
        let (buf, out) = self.guest.alloc(sql.as_bytes(), 8)?;
        let prepared = self.guest.prepare(self.conn, buf, sql.len() as u32, out, 0);
        self.guest.free(buf)?;
        let (stmt, _) = prepared?;
        let Some(stmt) = stmt else {
            return Ok(Vec::new());
        };
        let mut rows = Rows::default();
        let result = self.step_all(stmt, Some(&mut rows));
        self.guest.finalize(stmt)?;
        result.map(|()| rows.rows)
    }

    /// Runs one statement with `params`, reusing its prepared form from
    /// `cache`, and returns its rows (when `collect`) and the number of
    /// rows it changed. The statement is reset and its bindings cleared
    /// afterwards, so nothing of this call reaches the next one.
    pub(crate) fn run(
        &mut self,
        cache: &mut StatementCache,
        sql: &str,
        params: &[Value],
        collect: bool,
    ) -> Result<(Rows, u64)> {
        let Some(stmt) = self.cached_statement(cache, sql)? else {
            if params.is_empty() {
                return Ok((Rows::default(), 0));
            }
            return Err(Error::InvalidArgument(format!(
                "{} parameters given for an empty statement",
                params.len()
            )));
        };
        let result = self.bind_and_step(stmt, params, collect);
        if !self.guest.is_broken() {
            self.guest.reset(stmt)?;
            self.guest.clear_bindings(stmt)?;
        }
        result
    }

    /// The prepared statement for `sql`, from `cache` or freshly prepared
    /// (evicting the least recently used one). `None` for SQL with no
    /// statement in it; more than one statement is refused.
    fn cached_statement(
        &mut self,
        cache: &mut StatementCache,
        sql: &str,
    ) -> Result<Option<StmtPtr>> {
        if let Some(stmt) = cache.get(sql) {
            return Ok(Some(stmt));
        }
        let (buf, out) = self.guest.alloc(sql.as_bytes(), 8)?;
        let prepared = self.guest.prepare(
            self.conn,
            buf,
            sql.len() as u32,
            out,
            sqlite::SQLITE_PREPARE_PERSISTENT,
        );
        if !self.guest.is_broken() {
            self.guest.free(buf)?;
        }
        let (stmt, consumed) = prepared?;
        let Some(stmt) = stmt else {
            return Ok(None);
        };
        let rest = sql.get(consumed as usize..).unwrap_or_default();
        match self.holds_statement(rest) {
            Ok(false) => {}
            Ok(true) => {
                self.guest.finalize(stmt)?;
                return Err(Error::InvalidArgument(
                    "more than one statement; use exec for scripts".into(),
                ));
            }
            Err(e) => {
                if !self.guest.is_broken() {
                    self.guest.finalize(stmt)?;
                }
                return Err(e);
            }
        }
        for old in cache.insert(sql, stmt) {
            self.guest.finalize(old)?;
        }
        Ok(Some(stmt))
    }

    /// True if `sql` (the tail after a statement) holds another statement;
    /// whitespace, semicolons and comments do not count.
    fn holds_statement(&mut self, sql: &str) -> Result<bool> {
        if sql.bytes().all(|b| b.is_ascii_whitespace() || b == b';') {
            return Ok(false);
        }
        let (buf, out) = self.guest.alloc(sql.as_bytes(), 8)?;
        let mut offset = 0;
        let len = sql.len() as u32;
        let mut found = Ok(false);
        while offset < len {
            match self
                .guest
                .prepare(self.conn, buf.add(offset), len - offset, out, 0)
            {
                Ok((None, consumed)) => offset += consumed.max(1),
                Ok((Some(stmt), _)) => {
                    self.guest.finalize(stmt)?;
                    found = Ok(true);
                    break;
                }
                // A second statement that does not even parse is still a
                // second statement.
                Err(Error::Sqlite { .. }) => {
                    found = Ok(true);
                    break;
                }
                Err(e) => {
                    found = Err(e);
                    break;
                }
            }
        }
        if !self.guest.is_broken() {
            self.guest.free(buf)?;
        }
        found
    }

    fn bind_and_step(
        &mut self,
        stmt: StmtPtr,
        params: &[Value],
        collect: bool,
    ) -> Result<(Rows, u64)> {
        self.bind(stmt, params)?;
        let mut rows = Rows::default();
        self.step_all(stmt, collect.then_some(&mut rows))?;
        let changes = self.guest.changes(self.conn)?;
        Ok((rows, u64::try_from(changes).unwrap_or(0)))
    }

    /// Binds `params` to `?1`, `?2`, …; their number must be the
    /// statement's.
    fn bind(&mut self, stmt: StmtPtr, params: &[Value]) -> Result<()> {
        let expected = self.guest.param_count(stmt)?;
        if usize::try_from(expected).ok() != Some(params.len()) {
            return Err(Error::InvalidArgument(format!(
                "statement expects {expected} parameters, {} given",
                params.len()
            )));
        }
        for (i, param) in params.iter().enumerate() {
            let index = i as i32 + 1;
            let rc = match param {
                Value::Null => self.guest.bind_null(stmt, index)?,
                Value::Integer(v) => self.guest.bind_int64(stmt, index, *v)?,
                Value::Real(v) => self.guest.bind_double(stmt, index, *v)?,
                Value::Text(s) => {
                    let value = self.alloc_value(s.as_bytes())?;
                    self.guest.bind_owned(stmt, index, value, true)?
                }
                Value::Blob(b) => {
                    let value = self.alloc_value(b)?;
                    self.guest.bind_owned(stmt, index, value, false)?
                }
            };
            if rc != sqlite::SQLITE_OK {
                return Err(self.error(rc));
            }
        }
        Ok(())
    }

    /// Copies a text/blob parameter into the guest (SQLite takes ownership).
    fn alloc_value(&mut self, bytes: &[u8]) -> Result<(GuestPtr, i32)> {
        let max_length = self.guest.config().max_length;
        if bytes.len() > max_length as usize {
            return Err(Error::LimitExceeded {
                what: format!(
                    "parameter of {} bytes exceeds max_length {max_length}",
                    bytes.len(),
                ),
            });
        }
        if bytes.is_empty() {
            return Ok((GuestPtr::NULL, 0));
        }
        let (ptr, _) = self.guest.alloc(bytes, 0)?;
        Ok((ptr, bytes.len() as i32))
    }

    /// Steps `stmt` to completion, collecting rows when `rows` is given.
    ///
    /// The shape of the result (column count and names) is read only after
    /// the first step: that step may re-prepare a cached statement whose
    /// schema changed, and with it the number and names of its columns.
    fn step_all(&mut self, stmt: StmtPtr, mut rows: Option<&mut Rows>) -> Result<()> {
        let mut first = true;
        let mut budget = ResultBudget::new(self.guest.config().max_result_bytes);
        loop {
            let rc = self.guest.step(stmt)?;
            if first && (rc == sqlite::SQLITE_ROW || rc == sqlite::SQLITE_DONE) {
                first = false;
                if let Some(rows) = rows.as_deref_mut() {
                    rows.columns = self.column_names(stmt)?;
                    let names: u64 = rows
                        .columns
                        .iter()
                        .map(|name| (name.len() + size_of::<String>()) as u64)
                        .sum();
                    budget.charge(names)?;
                }
            }
            match rc {
                sqlite::SQLITE_ROW => {
                    if let Some(rows) = rows.as_deref_mut()
                        && !rows.columns.is_empty()
                    {
                        let row = self.read_row(stmt, rows.columns.len(), &mut budget)?;
                        rows.rows.push(row);
                    }
                }
                sqlite::SQLITE_DONE => return Ok(()),
                rc => return Err(self.error(rc)),
            }
        }
    }

    fn column_names(&mut self, stmt: StmtPtr) -> Result<Vec<String>> {
        let n = self.guest.column_count(stmt)?;
        let n = u32::try_from(n).unwrap_or(0);
        let mut names = Vec::with_capacity(n as usize);
        for i in 0..n {
            names.push(self.guest.column_name(stmt, i as i32)?);
        }
        Ok(names)
    }

    /// Reads the current row of `stmt`, which must have `ncol` columns,
    /// charging its bytes to `budget` (the call's result-size allowance).
    fn read_row(
        &mut self,
        stmt: StmtPtr,
        ncol: usize,
        budget: &mut ResultBudget,
    ) -> Result<Vec<Value>> {
        let ptr = self.guest.row(stmt)?;
        if ptr.is_null() {
            return Err(Error::LimitExceeded {
                what: "guest memory exhausted reading a row".into(),
            });
        }
        let header = self.guest.read(ptr, COLUMN_RECORD)?;
        let written = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if written as usize != ncol {
            // The shape changed under a running statement: never read
            // records this call did not write.
            return Err(Error::Sqlite {
                code: sqlite::SQLITE_ERROR,
                message: format!("the row has {written} columns where the statement had {ncol}"),
                kv: None,
            });
        }
        let raw = self
            .guest
            .read(ptr.add(COLUMN_RECORD), written * COLUMN_RECORD)?;
        let records: Vec<(i32, u32, i64)> = raw
            .chunks_exact(COLUMN_RECORD as usize)
            .map(|rec| {
                let kind = i32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
                let len = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
                let mut wide = [0u8; 8];
                wide.copy_from_slice(&rec[8..16]);
                (kind, len, i64::from_le_bytes(wide))
            })
            .collect();
        // Charge the whole row before copying any of it out of the guest.
        // What the row costs the host: every value (an empty string
        // included) plus its text or blob bytes, and the row itself.
        let bytes: u64 = records
            .iter()
            .map(|&(kind, len, _)| {
                let data = if kind == sqlite::SQLITE_TEXT || kind == sqlite::SQLITE_BLOB {
                    u64::from(len)
                } else {
                    0
                };
                data + size_of::<Value>() as u64
            })
            .sum::<u64>()
            + size_of::<Vec<Value>>() as u64;
        budget.charge(bytes)?;
        let mut row = Vec::with_capacity(records.len());
        for (kind, len, value) in records {
            let data = GuestPtr::new(value as u32);
            let value = match kind {
                sqlite::SQLITE_INTEGER => Value::Integer(value),
                sqlite::SQLITE_FLOAT => Value::Real(f64::from_bits(value as u64)),
                sqlite::SQLITE_TEXT => Value::Text(self.guest.read_str(data, len)?),
                sqlite::SQLITE_BLOB if len == 0 => Value::Blob(Vec::new()),
                sqlite::SQLITE_BLOB => Value::Blob(self.guest.read(data, len)?),
                sqlite::SQLITE_NULL => Value::Null,
                _ => {
                    return Err(Error::LimitExceeded {
                        what: "guest memory exhausted converting a column".into(),
                    });
                }
            };
            row.push(value);
        }
        Ok(row)
    }
}

/// What one call may still return to the host
/// ([`InstanceConfig::max_result_bytes`](crate::InstanceConfig::max_result_bytes)).
struct ResultBudget {
    left: u64,
    limit: u64,
}

impl ResultBudget {
    fn new(limit: u64) -> Self {
        Self { left: limit, limit }
    }

    /// Takes `bytes` from what the call may still return.
    fn charge(&mut self, bytes: u64) -> Result<()> {
        self.left = self
            .left
            .checked_sub(bytes)
            .ok_or_else(|| Error::LimitExceeded {
                what: format!(
                    "the result exceeds max_result_bytes ({} bytes per call)",
                    self.limit
                ),
            })?;
        Ok(())
    }
}
