//! Statements on one connection: prepare, bind, step and read rows, run a
//! script, and reuse prepared statements through the database's
//! [`StatementCache`].
//!
//! Why a borrowed [`Connection`]: every operation here needs the guest and
//! the `sqlite3*` together, and only for the length of one call, which
//! [`Guest::with_db`](crate::guest::Guest::with_db) has already entered.
//!
//! A cached statement runs with one crossing into the guest per step: the
//! first also binds every parameter from one buffer, each writes its row's
//! column records, and the one that completes the statement also reads the
//! changes and resets it. Each crossing costs about what SQLite takes to
//! find a row by its key.
//!
//! Two rules keep a call to what its own statement produced. The shape of
//! a result (column count and names) is taken only after the first step,
//! because that step may re-prepare a cached statement whose schema
//! changed; names kept from an earlier call are used only while SQLite's
//! count of re-preparations has not moved. And the shim writes how many
//! columns it recorded for a row; a row whose count differs from the shape
//! taken is refused, so the host never reads records this call did not
//! write.

use vfs_core::sqlite;

use crate::cache::{Shape, StatementCache};
use crate::error::{Error, Result};
use crate::guest::{ConnPtr, Guest, SCRATCH_MAX, Step, StmtPtr, WRONG_COUNT};
use crate::memory::GuestPtr;
use crate::value::{Rows, Value};

/// Size of one column record `shim_step` writes, and of one parameter
/// record it binds.
const RECORD: u32 = 16;
/// Longest text or blob parameter copied through the parameter buffer;
/// a longer one gets an allocation of its own that SQLite takes over.
const INLINE_MAX: usize = 1024;
/// The mark on a text or blob parameter record whose bytes SQLite takes
/// over.
const OWNED: i32 = 0x100;
/// Most bytes of column names a cached statement keeps between calls;
/// longer ones are read again by every call, so that host memory nobody
/// counts stays small.
const NAMES_KEPT_MAX: usize = 4096;

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
            let result = self.step_all(stmt, None, None, None, None).map(drop);
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
        let result = self.step_all(stmt, Some(&mut rows), None, None, None);
        self.guest.finalize(stmt)?;
        result.map(|_| rows.rows)
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
        if !self.cached_statement(cache, sql)? {
            if params.is_empty() {
                return Ok((Rows::default(), 0));
            }
            return Err(Error::InvalidArgument(format!(
                "{} parameters given for an empty statement",
                params.len()
            )));
        }
        let cached = cache
            .get(sql)
            .expect("cached_statement left the statement in the cache");
        // Checked before anything is allocated for the parameters.
        if params.len() != cached.params as usize {
            return Err(Error::InvalidArgument(format!(
                "statement expects {} parameters, {} given",
                cached.params,
                params.len()
            )));
        }
        let stmt = cached.stmt;
        let result = self.bind_and_step(stmt, params, collect, &mut cached.shape);
        if let Err(broken) = self.guest.check_usable() {
            return Err(result.err().unwrap_or(broken));
        }
        // A statement that completed was finished by its last step; one
        // that failed, or whose rows were refused, is finished here.
        let (rows, changes) = match result {
            Ok((rows, Some(changes))) => (rows, changes),
            Ok((rows, None)) => (rows, self.guest.finish(self.conn, stmt)?),
            Err(e) => {
                self.guest.finish(self.conn, stmt)?;
                return Err(e);
            }
        };
        Ok((rows, u64::try_from(changes).unwrap_or(0)))
    }

    /// Makes sure `cache` holds the prepared statement for `sql`, as its
    /// most recently used one (preparing it, and evicting the least
    /// recently used, if needed). False for SQL with no statement in it;
    /// more than one statement is refused.
    fn cached_statement(&mut self, cache: &mut StatementCache, sql: &str) -> Result<bool> {
        if cache.get(sql).is_some() {
            return Ok(true);
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
            return Ok(false);
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
        let params = match self.guest.param_count(stmt) {
            Ok(n) => u32::try_from(n).unwrap_or(0),
            Err(e) => {
                if !self.guest.is_broken() {
                    self.guest.finalize(stmt)?;
                }
                return Err(e);
            }
        };
        for old in cache.insert(sql, stmt, params) {
            self.guest.finalize(old)?;
        }
        Ok(true)
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
        shape: &mut Option<Shape>,
    ) -> Result<(Rows, Option<i64>)> {
        let (buf, own_buf) = self.stage(params)?;
        let mut rows = Rows::default();
        let conn = self.conn;
        let bind = Some((buf, params.len() as u32));
        let changes = self.step_all(
            stmt,
            collect.then_some(&mut rows),
            Some(shape),
            Some(conn),
            bind,
        );
        if own_buf && !self.guest.is_broken() {
            self.guest.free(buf)?;
        }
        Ok((rows, changes?))
    }

    /// Writes `params` where the first step of the call binds them to
    /// `?1`, `?2`, … (see [`Guest::step`]); returns the buffer, and
    /// whether it is this call's to free.
    ///
    /// Each parameter is a record of 16 bytes: {i32 type, i32 len, i64
    /// value}, the value being the integer, the double's bits, or a
    /// pointer to a text's or blob's bytes. Bytes up to [`INLINE_MAX`]
    /// follow the records in the same buffer, and SQLite copies them; a
    /// longer value is allocated on its own and handed over ([`OWNED`]):
    /// the step frees it or gives it to SQLite whatever happens. The
    /// buffer is the shim's scratch when it fits [`SCRATCH_MAX`], an
    /// allocation of this call's otherwise.
    fn stage(&mut self, params: &[Value]) -> Result<(GuestPtr, bool)> {
        let max_length = self.guest.config().max_length as usize;
        let mut inline = 0usize;
        for param in params {
            let len = match param {
                Value::Text(s) => s.len(),
                Value::Blob(b) => b.len(),
                _ => continue,
            };
            if len > max_length {
                return Err(Error::LimitExceeded {
                    what: format!("parameter of {len} bytes exceeds max_length {max_length}"),
                });
            }
            if len <= INLINE_MAX {
                inline += len.next_multiple_of(8);
            }
        }
        let records = params.len() * RECORD as usize;
        let total = u32::try_from(records + inline).map_err(|_| Error::LimitExceeded {
            what: "parameters larger than 4 GiB".into(),
        })?;
        let (buf, own_buf) = if total <= SCRATCH_MAX {
            (self.guest.scratch(), false)
        } else {
            (self.guest.alloc(&[], total)?.0, true)
        };
        match self.stage_in(params, buf, records as u32) {
            Ok(()) => Ok((buf, own_buf)),
            Err(e) => {
                if own_buf && !self.guest.is_broken() {
                    self.guest.free(buf)?;
                }
                Err(e)
            }
        }
    }

    /// [`Connection::stage`] with the buffer `buf` in hand: `records`
    /// bytes of records, then the inline bytes.
    fn stage_in(&mut self, params: &[Value], buf: GuestPtr, records: u32) -> Result<()> {
        let mut data = Vec::with_capacity(records as usize);
        let mut bytes_at = buf.add(records);
        let mut inline = Vec::new();
        let mut owned = Vec::new();
        let mut failed = None;
        for param in params {
            let (kind, len, value) = match param {
                Value::Null => (sqlite::SQLITE_NULL, 0, 0),
                Value::Integer(v) => (sqlite::SQLITE_INTEGER, 0, *v),
                Value::Real(v) => (sqlite::SQLITE_FLOAT, 0, v.to_bits() as i64),
                Value::Text(_) | Value::Blob(_) => {
                    let (kind, bytes) = match param {
                        Value::Text(s) => (sqlite::SQLITE_TEXT, s.as_bytes()),
                        Value::Blob(b) => (sqlite::SQLITE_BLOB, b.as_slice()),
                        _ => unreachable!("matched above"),
                    };
                    let len = bytes.len() as u32;
                    if bytes.len() <= INLINE_MAX {
                        let at = bytes_at;
                        inline.extend_from_slice(bytes);
                        let padded = bytes.len().next_multiple_of(8);
                        inline.resize(inline.len() + padded - bytes.len(), 0);
                        bytes_at = bytes_at.add(padded as u32);
                        (kind, len, i64::from(at.get()))
                    } else {
                        match self.guest.alloc(bytes, 0) {
                            Ok((ptr, _)) => {
                                owned.push(ptr);
                                (kind | OWNED, len, i64::from(ptr.get()))
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
            };
            data.extend_from_slice(&kind.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&value.to_le_bytes());
        }
        if failed.is_none() {
            data.extend_from_slice(&inline);
            failed = self.guest.write(buf, &data).err();
        }
        if let Some(e) = failed {
            // Nothing was handed to SQLite yet: the blocks are still ours.
            for ptr in owned {
                if !self.guest.is_broken() {
                    self.guest.free(ptr)?;
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Steps `stmt` to completion, collecting rows when `rows` is given;
    /// `shape` keeps the column names a cached statement's result had.
    /// Given `finish`, the last step also finishes the statement and the
    /// rows changed are returned; given `bind`, parameters staged by
    /// [`Connection::stage`], the first step binds them (see
    /// [`Guest::step`]).
    ///
    /// The shape of the result (column count and names) is taken only
    /// after the first step: that step may re-prepare a cached statement
    /// whose schema changed, and with it the number and names of its
    /// columns. Kept names are used only when SQLite's count of
    /// re-preparations is still the one they were read at.
    fn step_all(
        &mut self,
        stmt: StmtPtr,
        mut rows: Option<&mut Rows>,
        mut shape: Option<&mut Option<Shape>>,
        finish: Option<ConnPtr>,
        mut bind: Option<(GuestPtr, u32)>,
    ) -> Result<Option<i64>> {
        let given = bind.map_or(0, |(_, n)| n);
        let mut first = true;
        let mut budget = ResultBudget::new(self.guest.config().max_result_bytes);
        loop {
            let step = self.guest.step(stmt, rows.is_some(), finish, bind.take())?;
            if step.unbound {
                if step.rc == WRONG_COUNT {
                    let expected = self.guest.param_count(stmt)?;
                    return Err(Error::InvalidArgument(format!(
                        "statement expects {expected} parameters, {given} given"
                    )));
                }
                return Err(self.error(step.rc));
            }
            if first && (step.rc == sqlite::SQLITE_ROW || step.rc == sqlite::SQLITE_DONE) {
                first = false;
                if let Some(rows) = rows.as_deref_mut() {
                    let (names, fresh) = self.column_names(stmt, &step, shape.as_deref())?;
                    let bytes: usize = names.iter().map(String::len).sum();
                    budget.charge((bytes + names.len() * size_of::<String>()) as u64)?;
                    if fresh && let Some(shape) = shape.as_deref_mut() {
                        *shape = (bytes <= NAMES_KEPT_MAX).then(|| Shape {
                            reprepared: step.reprepared,
                            names: names.clone(),
                        });
                    }
                    rows.columns = names;
                }
            }
            match step.rc {
                sqlite::SQLITE_ROW => {
                    if let Some(rows) = rows.as_deref_mut()
                        && !rows.columns.is_empty()
                    {
                        let row = self.read_row(&step, rows.columns.len(), &mut budget)?;
                        rows.rows.push(row);
                    }
                }
                sqlite::SQLITE_DONE => return Ok(step.finished),
                rc => return Err(self.error(rc)),
            }
        }
    }

    /// The column names of `stmt` after its first `step`: those `shape`
    /// kept if the statement was not prepared again since, and false; or
    /// read from the guest, and true.
    fn column_names(
        &mut self,
        stmt: StmtPtr,
        step: &Step,
        shape: Option<&Option<Shape>>,
    ) -> Result<(Vec<String>, bool)> {
        if let Some(Some(kept)) = shape
            && kept.reprepared == step.reprepared
            && kept.names.len() == step.columns as usize
        {
            return Ok((kept.names.clone(), false));
        }
        let mut names = Vec::with_capacity(step.columns as usize);
        for i in 0..step.columns {
            names.push(self.guest.column_name(stmt, i as i32)?);
        }
        Ok((names, true))
    }

    /// Reads the row `step` recorded, which must have `ncol` columns,
    /// charging its bytes to `budget` (the call's result-size allowance).
    fn read_row(
        &mut self,
        step: &Step,
        ncol: usize,
        budget: &mut ResultBudget,
    ) -> Result<Vec<Value>> {
        let written = step.columns;
        if written as usize != ncol {
            // The shape changed under a running statement: never read
            // records this call did not write.
            return Err(Error::Sqlite {
                code: sqlite::SQLITE_ERROR,
                message: format!("the row has {written} columns where the statement had {ncol}"),
                kv: None,
            });
        }
        if step.records.is_null() {
            return Err(Error::LimitExceeded {
                what: "guest memory exhausted reading a row".into(),
            });
        }
        let raw = self.guest.read(step.records, written * RECORD)?;
        let records: Vec<(i32, u32, i64)> = raw
            .chunks_exact(RECORD as usize)
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
