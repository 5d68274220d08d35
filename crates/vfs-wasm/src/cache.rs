//! The prepared statements one database keeps for reuse, keyed by SQL.
//!
//! Why only statements, not their result shape: a cached statement may be
//! re-prepared by SQLite inside `sqlite3_step` when its schema changed (a
//! dropped, added or renamed column), and with it its column count and
//! names. So the shape of a result is read after the first step of every
//! call (see `statement.rs`), never remembered here: a remembered shape
//! could make a call read column records its own statement did not write.

use std::collections::VecDeque;

use crate::guest::StmtPtr;

/// A least-recently-used set of prepared statements of one connection.
///
/// The cache only holds handles; finalizing is the caller's, since it
/// needs the guest: [`StatementCache::insert`] hands back what it evicted,
/// and [`StatementCache::into_statements`] everything that is left.
#[derive(Debug)]
pub(crate) struct StatementCache {
    capacity: usize,
    /// Least recently used first.
    entries: VecDeque<(Box<str>, StmtPtr)>,
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
    pub(crate) fn get(&mut self, sql: &str) -> Option<StmtPtr> {
        let pos = self.entries.iter().position(|(s, _)| &**s == sql)?;
        let hit = self.entries.remove(pos)?;
        let stmt = hit.1;
        self.entries.push_back(hit);
        Some(stmt)
    }

    /// Adds `stmt`, prepared for `sql`, as the most recently used one, and
    /// returns the statements evicted to make room, for the caller to
    /// finalize.
    pub(crate) fn insert(&mut self, sql: &str, stmt: StmtPtr) -> Vec<StmtPtr> {
        let mut evicted = Vec::new();
        while self.entries.len() >= self.capacity {
            if let Some((_, old)) = self.entries.pop_front() {
                evicted.push(old);
            }
        }
        self.entries.push_back((Box::from(sql), stmt));
        evicted
    }

    /// Every statement still cached, for the caller to finalize.
    pub(crate) fn into_statements(self) -> impl Iterator<Item = StmtPtr> {
        self.entries.into_iter().map(|(_, stmt)| stmt)
    }
}
