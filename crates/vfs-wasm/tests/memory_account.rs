//! The per-database memory account adds up: opening N more databases on
//! one instance grows the guest's SQLite heap by about N times what each
//! of them is charged (`Instance::database_memory_bytes`), and what
//! `sqlite3_db_status` names (page cache, schema, statements) fits inside
//! that charge.
//!
//! Why it matters: the bench's `density` breakdown (BENCHMARKS.md, "Where
//! the memory goes") multiplies the per-database figure by the number of
//! databases. If a database made the instance allocate memory that is not
//! charged to it (charged to the instance's own slot, or to nobody), that
//! product would undercount, and this test fails.

mod common;

use std::sync::Arc;

use vfs_core::MemoryKv;
use vfs_wasm::{DbId, Instance, InstanceConfig, Value};

/// `SQLITE_DBSTATUS_CACHE_USED`: bytes of the page cache.
const CACHE_USED: i32 = 1;
/// `SQLITE_DBSTATUS_SCHEMA_USED`: bytes of the parsed schema.
const SCHEMA_USED: i32 = 2;
/// `SQLITE_DBSTATUS_STMT_USED`: bytes of prepared statements.
const STMT_USED: i32 = 3;

/// Databases opened after the warm-up, whose memory the test accounts for.
const N: usize = 20;

/// Opens database `name` with one small table and one row, as the bench's
/// `density` actors have.
fn open_small(instance: &mut Instance, name: &str) -> DbId {
    let db = instance
        .open(name, Arc::new(MemoryKv::new()))
        .expect("open");
    instance
        .exec(
            db,
            "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        )
        .expect("create");
    instance
        .execute(
            db,
            "INSERT INTO kv (id, v) VALUES (?1, ?2)",
            &[Value::Integer(1), Value::Text("x".repeat(100))],
        )
        .expect("insert");
    db
}

fn charged(instance: &mut Instance, dbs: &[DbId]) -> Vec<u64> {
    dbs.iter()
        .map(|&db| instance.database_memory_bytes(db).expect("charge"))
        .collect()
}

#[test]
fn opening_n_more_databases_grows_the_heap_by_n_times_the_per_database_figure() {
    // The pool's settings for 50 databases per instance: the engine's
    // defaults (lookaside on, 256 KiB cache) with the reserve cut to fit.
    let config = InstanceConfig {
        tenant_memory_reserve_bytes: 1 << 20,
        ..InstanceConfig::default()
    };
    let mut instance = common::instance_with(config);

    // The first ten warm the instance up: SQLite's global state, the
    // shim's accounting table, the page-1 template.
    let first: Vec<DbId> = (0..10)
        .map(|i| open_small(&mut instance, &format!("warm-{i}")))
        .collect();
    let heap_before = instance.guest_heap_bytes().expect("heap");
    let charged_before: u64 = charged(&mut instance, &first).iter().sum();

    let more: Vec<DbId> = (0..N)
        .map(|i| open_small(&mut instance, &format!("more-{i}")))
        .collect();
    let heap_after = instance.guest_heap_bytes().expect("heap");
    let charges = charged(&mut instance, &more);

    // Opening more databases does not change what the earlier ones hold.
    assert_eq!(
        charged(&mut instance, &first).iter().sum::<u64>(),
        charged_before,
        "earlier databases' charges moved"
    );

    // The databases are alike, so their charges are too (within 5%: the
    // names differ in length, and nothing else does).
    let per_db = charges.iter().sum::<u64>() / N as u64;
    assert!(per_db > 16 << 10, "a database charged only {per_db} bytes");
    for (i, &c) in charges.iter().enumerate() {
        assert!(
            c.abs_diff(per_db) * 20 <= per_db,
            "database {i} charged {c} bytes, the mean is {per_db}"
        );
    }

    // The account adds up: the heap grew by N times the per-database
    // figure. Tolerance: 2% of the growth plus 4 KiB, room for the
    // shim's accounting table growing by a few slots (charged to the
    // instance) and allocator rounding; a database that made the instance
    // allocate a page-cache page, a lookaside buffer or a schema outside
    // its own charge (each 1.3 KiB to 8 KiB, times 20) would fail it.
    let growth = heap_after - heap_before;
    let expected = per_db * N as u64;
    let tolerance = growth / 50 + 4096;
    eprintln!(
        "heap growth {growth} bytes for {N} databases; charged {per_db} each, \
         {expected} together; off by {}",
        growth.abs_diff(expected)
    );
    assert!(
        growth.abs_diff(expected) <= tolerance,
        "the heap grew by {growth} bytes for {N} databases, which are charged \
         {expected} ({per_db} each); off by {} bytes, more than {tolerance}",
        growth.abs_diff(expected)
    );

    // What sqlite3_db_status names fits inside each database's charge; the
    // rest is the connection itself (its lookaside buffer, pager, b-tree
    // and VFS file objects).
    for (&db, &c) in more.iter().zip(&charges) {
        let cache = instance.database_status(db, CACHE_USED).expect("cache");
        let schema = instance.database_status(db, SCHEMA_USED).expect("schema");
        let stmts = instance.database_status(db, STMT_USED).expect("stmts");
        assert!(cache > 0 && schema > 0, "cache {cache}, schema {schema}");
        let named = (cache + schema + stmts) as u64;
        assert!(
            named <= c,
            "db_status names {named} bytes (cache {cache}, schema {schema}, \
             statements {stmts}) but the database is charged only {c}"
        );
    }

    // The instance's guest memory holds all of it.
    assert!(instance.guest_memory_bytes() >= heap_after);

    // Closing gives the memory back: the heap returns to about where it
    // was before the N databases (the same tolerance).
    for db in more {
        instance.close(db).expect("close");
    }
    let heap_closed = instance.guest_heap_bytes().expect("heap");
    assert!(
        heap_closed.abs_diff(heap_before) <= tolerance,
        "after closing the {N} databases the heap is {heap_closed} bytes, \
         it was {heap_before} before they opened"
    );
}

/// An unknown `sqlite3_db_status` counter is an error, not a number.
#[test]
fn an_unknown_status_counter_is_an_error() {
    let mut instance = common::instance();
    let db = open_small(&mut instance, "status");
    assert!(instance.database_status(db, 9999).is_err());
    assert!(instance.database_status(db, CACHE_USED).expect("cache") > 0);
}

/// `release_memory` gives back exactly what the database's page cache and
/// cached statements held (the charge falls by what it reports), keeps its
/// schema, and leaves every row readable.
#[test]
fn releasing_a_database_frees_its_cache_and_statements_and_keeps_its_data() {
    let mut instance = common::instance();
    let db = open_small(&mut instance, "idle");
    instance
        .exec(
            db,
            "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
             INSERT INTO kv SELECT i, hex(zeroblob(250)) FROM n",
        )
        .expect("fill");
    let count = "SELECT count(*), sum(length(v)) FROM kv";
    let before = instance.query(db, count, &[]).expect("count").rows;
    let charged = instance.database_memory_bytes(db).expect("charge");
    let cache = instance.database_status(db, CACHE_USED).expect("cache");
    let stmts = instance.database_status(db, STMT_USED).expect("stmts");
    assert!(
        cache > 20 * 4096 && stmts > 0,
        "cache {cache}, statements {stmts}"
    );

    let heap = instance.guest_heap_bytes().expect("heap");
    let freed = instance.release_memory(db).expect("release");
    let left = instance.database_memory_bytes(db).expect("charge");
    assert_eq!(
        charged - left,
        freed,
        "the charge fell by what was reported"
    );
    // And the instance's whole heap by as much: the memory went back to
    // the instance, not to another database's charge.
    let heap_after = instance.guest_heap_bytes().expect("heap");
    assert_eq!(
        heap - heap_after,
        freed,
        "the heap fell by what was reported"
    );
    assert!(
        freed >= (cache + stmts) as u64 * 9 / 10,
        "freed {freed} bytes of a {cache}-byte cache and {stmts} bytes of statements"
    );
    assert_eq!(instance.database_status(db, STMT_USED).expect("stmts"), 0);
    assert!(instance.database_status(db, CACHE_USED).expect("cache") < 8192);
    assert!(instance.database_status(db, SCHEMA_USED).expect("schema") > 0);

    assert_eq!(instance.query(db, count, &[]).expect("count").rows, before);
    assert_eq!(
        instance
            .query(db, "PRAGMA integrity_check", &[])
            .expect("check")
            .rows,
        vec![vec![Value::Text("ok".into())]]
    );
}
