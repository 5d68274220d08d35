//! The prepared statements one database keeps for reuse, keyed by SQL,
//! each with the column names of its last result.
//!
//! A cached statement may be re-prepared by SQLite inside `sqlite3_step`
//! when its schema changed (a dropped, added or renamed column), and with
//! it its column count and names. So the names kept here are used only
//! after the first step of a call, and only while SQLite's count of the
//! statement's re-preparations is the one they were read at (see
//! `statement.rs`); the column count of every row is checked against them
//! all the same, so a call never reads column records its own statement
//! did not write.

use std::collections::VecDeque;

use crate::guest::StmtPtr;

/// The column names a statement's result had, and SQLite's count of its
/// re-preparations when they were read.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub reprepared: u32,
    pub names: Vec<String>,
}

/// One cached statement.
#[derive(Debug)]
pub(crate) struct Cached {
    pub stmt: StmtPtr,
    /// Its number of parameters (fixed by its SQL text, whatever a
    /// re-preparation changes).
    pub params: u32,
    /// Its result's column names, once a call has read them.
    pub shape: Option<Shape>,
}

/// A least-recently-used set of prepared statements of one connection.
///
/// The cache only holds handles; finalizing is the caller's, since it
/// needs the guest: [`StatementCache::insert`] hands back what it evicted,
/// and [`StatementCache::into_statements`] everything that is left.
#[derive(Debug)]
pub(crate) struct StatementCache {
    capacity: usize,
    /// Least recently used first.
    entries: VecDeque<(Box<str>, Cached)>,
}

impl StatementCache {
    /// An empty cache that keeps at most `capacity` statements (at least
    /// one: the statement a call runs is always in the cache).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
        }
    }

    /// The statement prepared for exactly `sql`, now the most recently
    /// used one.
    pub(crate) fn get(&mut self, sql: &str) -> Option<&mut Cached> {
        let pos = self.entries.iter().rposition(|(s, _)| &**s == sql)?;
        if pos + 1 != self.entries.len() {
            let hit = self.entries.remove(pos)?;
            self.entries.push_back(hit);
        }
        self.entries.back_mut().map(|(_, cached)| cached)
    }

    /// Adds `stmt`, prepared for `sql`, as the most recently used one, and
    /// returns the statements evicted to make room, for the caller to
    /// finalize.
    pub(crate) fn insert(&mut self, sql: &str, stmt: StmtPtr, params: u32) -> Vec<StmtPtr> {
        let mut evicted = Vec::new();
        while self.entries.len() >= self.capacity {
            if let Some((_, old)) = self.entries.pop_front() {
                evicted.push(old.stmt);
            }
        }
        self.entries.push_back((
            Box::from(sql),
            Cached {
                stmt,
                params,
                shape: None,
            },
        ));
        evicted
    }

    /// Every statement still cached, for the caller to finalize.
    pub(crate) fn into_statements(self) -> impl Iterator<Item = StmtPtr> {
        self.entries.into_iter().map(|(_, cached)| cached.stmt)
    }
}
