//! Attacks by a hostile tenant, and stores that misbehave, against one
//! shared instance: each test is the regression test of a break that was
//! found, plus its neighbours. Everything goes through the public API.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vfs_core::{KvError, KvLimits, KvStore, MemoryKv};
use vfs_wasm::{DbId, Error, Instance, InstanceConfig, Value};

use common::{assert_integrity, instance, instance_with, ints, memory_kv, module};

// ---- 1. a cached statement whose shape changed ---------------------------

#[test]
fn a_cached_select_star_never_shows_a_co_tenants_values_after_drop_column() {
    let mut inst = instance();
    let a = inst.open("a", memory_kv()).unwrap();
    let b = inst.open("b", memory_kv()).unwrap();
    inst.exec(
        b,
        "CREATE TABLE secret (v); INSERT INTO secret VALUES ('SECRET')",
    )
    .unwrap();
    inst.exec(
        a,
        "CREATE TABLE t (x, y, z); INSERT INTO t VALUES (1, 2, 3)",
    )
    .unwrap();
    let rows = inst.query(a, "SELECT * FROM t", &[]).unwrap();
    assert_eq!(rows.columns, ["x", "y", "z"]);
    inst.exec(
        a,
        "ALTER TABLE t DROP COLUMN z; ALTER TABLE t DROP COLUMN y",
    )
    .unwrap();
    let spy = inst.query(b, "SELECT v, v, v FROM secret", &[]).unwrap();
    assert_eq!(spy.rows[0].len(), 3);
    let rows = inst.query(a, "SELECT * FROM t", &[]).unwrap();
    assert_eq!(rows.columns, ["x"]);
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
}

#[test]
fn a_cached_select_star_follows_add_and_rename_column() {
    let mut inst = instance();
    let a = inst.open("a", memory_kv()).unwrap();
    inst.exec(a, "CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        .unwrap();
    assert_eq!(
        inst.query(a, "SELECT * FROM t", &[]).unwrap().columns,
        ["x"]
    );
    inst.exec(a, "ALTER TABLE t ADD COLUMN w DEFAULT 'new'")
        .unwrap();
    let rows = inst.query(a, "SELECT * FROM t", &[]).unwrap();
    assert_eq!(rows.columns, ["x", "w"]);
    assert_eq!(rows.rows, vec![vec![Value::Integer(1), Value::from("new")]]);
    inst.exec(a, "ALTER TABLE t RENAME COLUMN x TO renamed")
        .unwrap();
    let rows = inst.query(a, "SELECT * FROM t", &[]).unwrap();
    assert_eq!(rows.columns, ["renamed", "w"]);
    // A statement that returns no row still reports its new shape.
    inst.exec(a, "DELETE FROM t; ALTER TABLE t ADD COLUMN v2")
        .unwrap();
    let rows = inst.query(a, "SELECT * FROM t", &[]).unwrap();
    assert_eq!(rows.columns, ["renamed", "w", "v2"]);
    assert!(rows.rows.is_empty());
    // The same through a parameterised statement re-prepared by a schema
    // change made by another statement.
    inst.exec(a, "INSERT INTO t VALUES (5, 6, 7)").unwrap();
    let sql = "SELECT * FROM t WHERE renamed = ?1";
    let rows = inst.query(a, sql, &[Value::Integer(5)]).unwrap();
    assert_eq!(rows.rows[0].len(), 3);
    inst.exec(a, "ALTER TABLE t DROP COLUMN v2").unwrap();
    let rows = inst.query(a, sql, &[Value::Integer(5)]).unwrap();
    assert_eq!(rows.columns, ["renamed", "w"]);
    assert_eq!(rows.rows, vec![vec![Value::Integer(5), Value::Integer(6)]]);
    assert_integrity(&mut inst, a);
}

// ---- 2. a store that panics -------------------------------------------------

/// A store over memory whose calls panic while armed.
struct PanickingKv {
    inner: MemoryKv,
    panic_puts: AtomicBool,
    panic_gets: AtomicBool,
    panics: AtomicUsize,
}

impl PanickingKv {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            panic_puts: AtomicBool::new(false),
            panic_gets: AtomicBool::new(false),
            panics: AtomicUsize::new(0),
        })
    }

    fn boom(&self) -> ! {
        self.panics.fetch_add(1, Ordering::SeqCst);
        panic!("the store fell over");
    }
}

#[async_trait::async_trait]
impl KvStore for PanickingKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        if self.panic_gets.load(Ordering::SeqCst) {
            self.boom();
        }
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.panic_puts.load(Ordering::SeqCst) {
            self.boom();
        }
        self.inner.put_batch(entries).await
    }
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        if self.panic_puts.load(Ordering::SeqCst) {
            self.boom();
        }
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

#[test]
fn a_store_panic_during_a_commit_poisons_only_that_database_and_loses_nothing_acknowledged() {
    let store = PanickingKv::new();
    let mut inst = instance();
    let db = inst
        .open("victim", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.exec(db, "CREATE TABLE t (v)").unwrap();
    inst.execute(db, "INSERT INTO t VALUES (1)", &[]).unwrap();
    store.panic_puts.store(true, Ordering::SeqCst);
    let err = inst
        .execute(db, "INSERT INTO t VALUES (2)", &[])
        .expect_err("the commit's store call panicked");
    assert!(
        matches!(&err, Error::Poisoned { reason } if reason.contains("panicked")),
        "{err:?}"
    );
    store.panic_puts.store(false, Ordering::SeqCst);
    // Nothing more is accepted on the poisoned connection, even once the
    // store behaves again: it must be reopened.
    for sql in ["INSERT INTO t VALUES (3)", "SELECT count(*) FROM t"] {
        let err = inst.execute(db, sql, &[]).expect_err(sql);
        assert!(matches!(err, Error::Poisoned { .. }), "{sql}: {err:?}");
    }
    assert!(matches!(
        inst.exec(db, "SELECT 1"),
        Err(Error::Poisoned { .. })
    ));
    // The co-tenant never noticed.
    inst.exec(neighbour, "CREATE TABLE n (x); INSERT INTO n VALUES (1)")
        .unwrap();
    assert!(!inst.is_broken());
    inst.close(db).unwrap();
    // Reopened, the database holds exactly what was acknowledged.
    let db = inst.open("victim", store as Arc<dyn KvStore>).unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t"), [1]);
    inst.execute(db, "INSERT INTO t VALUES (4)", &[]).unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t ORDER BY v"), [1, 4]);
    assert_integrity(&mut inst, db);
    assert_eq!(ints(&mut inst, neighbour, "SELECT x FROM n"), [1]);
}

#[test]
fn hundreds_of_store_panics_never_trap_the_instance() {
    let store = PanickingKv::new();
    let mut inst = instance();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.exec(neighbour, "CREATE TABLE n (x); INSERT INTO n VALUES (7)")
        .unwrap();
    {
        let db = inst
            .open("reader", Arc::clone(&store) as Arc<dyn KvStore>)
            .unwrap();
        inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
            .unwrap();
        inst.close(db).unwrap();
    }
    store.panic_gets.store(true, Ordering::SeqCst);
    for round in 0..300 {
        let err = inst
            .open("reader", Arc::clone(&store) as Arc<dyn KvStore>)
            .expect_err("every read panics");
        assert!(
            matches!(err, Error::Poisoned { .. } | Error::Sqlite { .. }),
            "round {round}: {err:?}"
        );
        assert!(!inst.is_broken(), "round {round}");
    }
    assert!(store.panics.load(Ordering::SeqCst) >= 300);
    assert_eq!(ints(&mut inst, neighbour, "SELECT x FROM n"), [7]);
    store.panic_gets.store(false, Ordering::SeqCst);
    let db = inst.open("reader", store as Arc<dyn KvStore>).unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t"), [1]);
}

// ---- 3. an interior NUL ----------------------------------------------------

#[test]
fn sql_with_an_interior_nul_is_refused_by_every_entry_point() {
    let mut inst = instance();
    let db = inst.open("nul", memory_kv()).unwrap();
    inst.exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        .unwrap();
    let hidden = "SELECT 1\0DROP TABLE t";
    let err = inst.exec(db, hidden).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("NUL")),
        "{err:?}"
    );
    let err = inst.execute(db, hidden, &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = inst.query(db, hidden, &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = inst.exec(db, "\0DROP TABLE t").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(ints(&mut inst, db, "SELECT x FROM t"), [1]);
    // A NUL inside a bound value is data, not SQL.
    inst.execute(db, "INSERT INTO t VALUES (?1)", &[Value::from("a\0b")])
        .unwrap();
    let rows = inst
        .query(db, "SELECT x FROM t WHERE x = ?1", &[Value::from("a\0b")])
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::from("a\0b")]]);
}

// ---- 4. long strings from the guest ------------------------------------------

#[test]
fn long_column_names_and_messages_are_read_whole_and_break_nothing() {
    let mut inst = instance();
    let db = inst.open("long", memory_kv()).unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    let long = "x".repeat(70_000);
    let rows = inst.query(db, &format!("SELECT '{long}'"), &[]).unwrap();
    assert_eq!(rows.columns, [format!("'{long}'")]);
    assert_eq!(rows.rows, vec![vec![Value::Text(long.clone())]]);
    let err = inst
        .query(db, &format!("SELECT * FROM \"{long}\""), &[])
        .unwrap_err();
    assert!(
        matches!(&err, Error::Sqlite { message, .. } if message.contains(&long)),
        "the whole message is kept"
    );
    let err = inst.exec(db, &format!("SELECT {long}(1)")).unwrap_err();
    assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
    assert!(!inst.is_broken());
    assert_eq!(ints(&mut inst, neighbour, "SELECT 3"), [3]);
}

// ---- 5. the time budget covers a whole call -----------------------------------

fn budget(ms: u64) -> InstanceConfig {
    InstanceConfig {
        statement_timeout: Some(Duration::from_millis(ms)),
        ..InstanceConfig::default()
    }
}

#[test]
fn instr_over_huge_values_is_fast_and_exact() {
    let mut inst = instance_with(budget(2000));
    let db = inst.open("instr", memory_kv()).unwrap();
    let start = Instant::now();
    let rows = inst
        .query(
            db,
            "SELECT instr(zeroblob(600000), zeroblob(300000) || x'01')",
            &[],
        )
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(0)]]);
    let rows = inst
        .query(
            db,
            "SELECT instr(zeroblob(600000) || x'01', zeroblob(300000) || x'01'),
                    length(replace(hex(zeroblob(300000)), '00000001', 'x')),
                    length(replace(hex(zeroblob(300000)), '0000', 'abcdefgh'))",
            &[],
        )
        .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![
            Value::Integer(300_001),
            Value::Integer(600_000),
            Value::Integer(1_200_000)
        ]]
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn instr_and_replace_agree_with_sqlite_on_edge_cases() {
    let mut inst = instance();
    let db = inst.open("semantics", memory_kv()).unwrap();
    // Expected values are SQLite's own built-ins' (checked against an
    // unmodified SQLite).
    let cases: &[(&str, Value)] = &[
        ("instr('hello', 'l')", Value::Integer(3)),
        ("instr('hello', 'lo')", Value::Integer(4)),
        ("instr('hello', 'z')", Value::Integer(0)),
        ("instr('hello', '')", Value::Integer(1)),
        ("instr('', '')", Value::Integer(1)),
        ("instr('', 'a')", Value::Integer(0)),
        ("instr(NULL, 'a')", Value::Null),
        ("instr('a', NULL)", Value::Null),
        ("instr('héllo wörld', 'w')", Value::Integer(7)),
        ("instr('日本語テキスト', 'テ')", Value::Integer(4)),
        ("instr(x'00010203', x'0203')", Value::Integer(3)),
        ("instr(x'00010203', x'')", Value::Integer(1)),
        ("instr(12345, 34)", Value::Integer(3)),
        ("instr(1.5, '.')", Value::Integer(2)),
        ("instr(x'616263', 'c')", Value::Integer(3)),
        ("instr('abc', x'63')", Value::Integer(3)),
        ("instr('aaa', 'aaaa')", Value::Integer(0)),
        ("replace('hello', 'l', 'L')", Value::from("heLLo")),
        ("replace('hello', '', 'x')", Value::from("hello")),
        ("replace('hello', 'hello', '')", Value::from("")),
        ("replace('aaaa', 'aa', 'b')", Value::from("bb")),
        ("replace('aaa', 'aa', 'b')", Value::from("ba")),
        ("replace('héllo', 'é', 'e')", Value::from("hello")),
        ("replace(NULL, 'a', 'b')", Value::Null),
        ("replace('a', NULL, 'b')", Value::Null),
        ("replace('a', 'a', NULL)", Value::Null),
        ("replace(12321, 2, 9)", Value::from("19391")),
        ("replace(x'616263', 'b', 'B')", Value::from("aBc")),
        ("typeof(replace('', 'a', 'b'))", Value::from("text")),
        ("typeof(replace(x'', 'a', 'b'))", Value::from("text")),
        (
            "replace('abc', cast(x'00' as text), 'z')",
            Value::from("abc"),
        ),
        ("trim('  abc  ')", Value::from("abc")),
        ("trim('xxabcxx', 'x')", Value::from("abc")),
        ("ltrim('xxabcxx', 'x')", Value::from("abcxx")),
        ("rtrim('xxabcxx', 'x')", Value::from("xxabc")),
        ("trim('héllo', 'hoé')", Value::from("ll")),
        ("trim('ééaéé', 'é')", Value::from("a")),
        ("trim(NULL, 'a')", Value::Null),
        ("trim('abc', NULL)", Value::Null),
        ("trim('abc', '')", Value::from("abc")),
        ("typeof(trim(123, '1'))", Value::from("text")),
        ("trim(12321, 1)", Value::from("232")),
        ("trim(x'616263', 'a')", Value::from("bc")),
        // The set is split into characters as SQLite splits it, and the
        // first character of the set that matches decides.
        (
            "hex(trim(cast(x'c3a9c3' as text), cast(x'c3' as text)))",
            Value::from("A9"),
        ),
        (
            "hex(ltrim(cast(x'c3a941' as text), cast(x'c341c3a9' as text)))",
            Value::from("A941"),
        ),
        (
            "hex(ltrim(cast(x'c3a941' as text), cast(x'c3a9c341' as text)))",
            Value::from(""),
        ),
        (
            "hex(rtrim(cast(x'41c3a9' as text), cast(x'a9c3' as text)))",
            Value::from("41"),
        ),
        // Invalid UTF-8: SQLite compares only where a character starts.
        (
            "instr(cast(x'80616263' as text), cast(x'8061' as text))",
            Value::Integer(1),
        ),
        (
            "instr(cast(x'41806263' as text), cast(x'8062' as text))",
            Value::Integer(0),
        ),
    ];
    for (expr, expected) in cases {
        let rows = inst.query(db, &format!("SELECT {expr}"), &[]).unwrap();
        assert_eq!(&rows.rows[0][0], expected, "{expr}");
    }
}

#[test]
fn a_quadratic_trim_is_stopped_by_the_budget_and_harms_nothing() {
    let mut inst = instance_with(budget(300));
    let db = inst.open("trim", memory_kv()).unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.exec(db, "CREATE TABLE kept (x); INSERT INTO kept VALUES (1)")
        .unwrap();
    // 400,000 characters to trim, each compared against 20,000 characters
    // of the set before the one that matches: minutes without a check.
    let sql = "SELECT length(ltrim(hex(zeroblob(200000)), \
               replace(hex(zeroblob(10000)), '0', 'é') || '0'))";
    let start = Instant::now();
    let err = inst.query(db, sql, &[]).expect_err("far over the budget");
    let took = start.elapsed();
    assert!(
        matches!(err, Error::Interrupted { budget_ms: 300 }),
        "{err:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "held the instance for {took:?}"
    );
    assert_eq!(ints(&mut inst, neighbour, "SELECT 2"), [2]);
    assert_eq!(ints(&mut inst, db, "SELECT x FROM kept"), [1]);
    assert_eq!(
        ints(
            &mut inst,
            db,
            "SELECT length(rtrim(hex(zeroblob(1000)) || 'ab', 'éba'))"
        ),
        [2000]
    );
}

#[test]
fn like_and_glob_over_huge_strings_are_stopped_by_the_budget() {
    let mut inst = instance_with(budget(500));
    let db = inst.open("like", memory_kv()).unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.execute(db, "CREATE TABLE t (x)", &[]).unwrap();
    inst.execute(
        db,
        "INSERT INTO t VALUES (?1)",
        &[Value::Text("a".repeat(1_000_000))],
    )
    .unwrap();
    // 1,000,000 positions x a 2,000-byte pattern: seconds of matching.
    let like = format!("%{}b", "a".repeat(1998));
    let glob = format!("*{}b", "a".repeat(1998));
    for (sql, pattern) in [
        ("SELECT x LIKE ?1 FROM t", &like),
        ("SELECT like(?1, x) FROM t", &like),
        ("SELECT x LIKE ?1 ESCAPE '!' FROM t", &like),
        ("SELECT x GLOB ?1 FROM t", &glob),
    ] {
        let start = Instant::now();
        let err = inst
            .query(db, sql, &[Value::Text(pattern.clone())])
            .expect_err("far over the budget");
        let took = start.elapsed();
        assert!(matches!(err, Error::Interrupted { .. }), "{sql}: {err:?}");
        assert!(
            took < Duration::from_secs(2),
            "{sql} held the instance for {took:?}"
        );
        assert_eq!(ints(&mut inst, neighbour, "SELECT 4"), [4]);
    }
    // Ordinary matching is untouched, and SQLite's own LIKE (which the
    // budget cannot reach) cannot be brought back.
    assert_eq!(ints(&mut inst, db, "SELECT x LIKE 'a%' FROM t"), [1]);
    let err = inst.exec(db, "PRAGMA case_sensitive_like = 1").unwrap_err();
    assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
    assert_eq!(ints(&mut inst, db, "SELECT 'ABC' LIKE 'abc'"), [1]);
}

#[test]
fn json_patch_of_two_huge_objects_is_a_limit_error_not_a_minute() {
    let mut inst = instance_with(budget(1000));
    let db = inst.open("patch", memory_kv()).unwrap();
    inst.exec(
        db,
        "CREATE TABLE j (a, b);
         INSERT INTO j SELECT
           (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50000)
            SELECT json_group_object('t' || i, i) FROM c),
           (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50000)
            SELECT json_group_object('p' || i, i) FROM c);",
    )
    .unwrap();
    for sql in [
        "SELECT length(json_patch(a, b)) FROM j",
        "SELECT length(jsonb_patch(a, b)) FROM j",
    ] {
        let start = Instant::now();
        let err = inst.query(db, sql, &[]).expect_err("55 s of merging");
        assert!(
            matches!(&err, Error::LimitExceeded { what } if what.contains("merge work")),
            "{sql}: {err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    // A small patch into the same large object still merges.
    let rows = inst
        .query(
            db,
            "SELECT json_extract(json_patch(a, '{\"t7\":null,\"new\":1}'), '$.new') FROM j",
            &[],
        )
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
}

#[test]
fn the_budget_covers_a_whole_script_not_each_statement() {
    let mut inst = instance_with(budget(300));
    let db = inst.open("script", memory_kv()).unwrap();
    // Each statement alone fits well inside the budget; ten of them do not.
    let one = "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
               SELECT x + 1 FROM c WHERE x < 60000000) SELECT x FROM c);";
    let calibrate = Instant::now();
    let single = inst.exec(db, one);
    let took = calibrate.elapsed();
    // On a slow machine one statement may already be over; then the script
    // must be interrupted all the more.
    let script = one.repeat(10);
    let start = Instant::now();
    let err = inst
        .exec(db, &script)
        .expect_err("ten statements exceed the budget");
    let elapsed = start.elapsed();
    assert!(
        matches!(err, Error::Interrupted { budget_ms: 300 }),
        "{err:?} (single: {single:?}, {took:?})"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "held the instance for {elapsed:?}"
    );
}

// ---- 6. a tenant's memory share ----------------------------------------------

fn shares() -> InstanceConfig {
    InstanceConfig {
        memory_limit_bytes: 128 << 20,
        tenant_memory_limit_bytes: 24 << 20,
        statement_timeout: Some(Duration::from_secs(30)),
        ..InstanceConfig::default()
    }
}

fn assert_share_error(err: &Error) {
    assert!(
        matches!(err, Error::LimitExceeded { what } if what.contains("tenant_memory_limit_bytes")),
        "{err:?}"
    );
}

#[test]
fn memory_held_between_calls_cannot_starve_a_co_tenant() {
    let mut inst = instance_with(shares());
    let hog = inst.open("hog", memory_kv()).unwrap();
    let small = inst.open("small", memory_kv()).unwrap();
    inst.exec(small, "CREATE TABLE s (v)").unwrap();
    // A TEMP table lives in guest memory for as long as the connection.
    inst.exec(hog, "CREATE TEMP TABLE big (b)").unwrap();
    let err = inst
        .exec(
            hog,
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 200)
             INSERT INTO big SELECT randomblob(1000000) FROM r",
        )
        .expect_err("200 MB do not fit a 24 MiB share");
    assert_share_error(&err);
    // Fill it as far as the share allows, and keep it.
    for _ in 0..40 {
        if inst
            .exec(hog, "INSERT INTO big VALUES (randomblob(1000000))")
            .is_err()
        {
            break;
        }
    }
    let held = inst.database_memory_bytes(hog).unwrap();
    assert!(held > 16 << 20, "the hog holds {held} bytes");
    assert!(held <= 24 << 20, "the hog holds {held} bytes");
    // An open transaction holding dirty pages counts too.
    inst.exec(hog, "CREATE TABLE disk (b); BEGIN").unwrap();
    let _ = inst.exec(hog, "INSERT INTO disk SELECT b FROM big");
    // The co-tenant's own work goes through.
    let blob = Value::Blob(vec![7; 20_000]);
    for _ in 0..50 {
        inst.execute(
            small,
            "INSERT INTO s VALUES (?1)",
            std::slice::from_ref(&blob),
        )
        .unwrap();
    }
    assert_eq!(ints(&mut inst, small, "SELECT count(*) FROM s"), [50]);
    // Closing the hog gives its whole share back.
    inst.close(hog).unwrap();
    assert!(inst.database_memory_bytes(small).unwrap() < 4 << 20);
}

/// Three hogs fill TEMP tables as far as they are let; then a fourth
/// database asks for 2 MB. Returns what the fourth got.
fn hogs_then_a_small_tenant(reserve: u64) -> Result<(), Error> {
    let mut inst = instance_with(InstanceConfig {
        memory_limit_bytes: 64 << 20,
        tenant_memory_limit_bytes: 30 << 20,
        tenant_memory_reserve_bytes: reserve,
        statement_timeout: Some(Duration::from_secs(30)),
        ..InstanceConfig::default()
    });
    let hogs: Vec<DbId> = (0..3)
        .map(|i| inst.open(&format!("hog{i}"), memory_kv()).unwrap())
        .collect();
    let small = inst.open("small", memory_kv()).unwrap();
    for &hog in &hogs {
        inst.exec(hog, "CREATE TEMP TABLE h (b)").unwrap();
        for _ in 0..40 {
            if let Err(e) = inst.exec(hog, "INSERT INTO h VALUES (randomblob(1000000))") {
                assert!(matches!(e, Error::LimitExceeded { .. }), "{e:?}");
                break;
            }
        }
    }
    inst.exec(small, "CREATE TEMP TABLE s (b)")?;
    inst.exec(small, "INSERT INTO s VALUES (randomblob(1000000))")?;
    inst.exec(small, "INSERT INTO s VALUES (randomblob(1000000))")
}

#[test]
fn every_database_keeps_its_reserve_when_shares_overcommit_the_instance() {
    // Three 30 MiB shares overcommit a 64 MiB instance; without reserves
    // the hogs leave nothing to the fourth database.
    let err = hogs_then_a_small_tenant(0).expect_err("no reserve, no memory");
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    hogs_then_a_small_tenant(4 << 20).expect("the reserve is kept");
}

#[test]
fn a_scratch_attachment_is_charged_to_its_tenant() {
    let mut inst = instance_with(shares());
    let hog = inst.open("hog", memory_kv()).unwrap();
    let small = inst.open("small", memory_kv()).unwrap();
    inst.exec(hog, "ATTACH '' AS scratch; CREATE TABLE scratch.big (b)")
        .unwrap();
    let err = inst
        .exec(
            hog,
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 100)
             INSERT INTO scratch.big SELECT randomblob(1000000) FROM r",
        )
        .expect_err("100 MB do not fit a 24 MiB share");
    assert_share_error(&err);
    inst.exec(
        small,
        "CREATE TABLE s (v); INSERT INTO s VALUES (randomblob(20000))",
    )
    .unwrap();
}

// ---- 7. bytes returned by one call ---------------------------------------------

#[test]
fn one_call_cannot_return_more_than_max_result_bytes() {
    let mut inst = instance_with(InstanceConfig {
        max_result_bytes: 8 << 20,
        ..InstanceConfig::default()
    });
    let db = inst.open("big", memory_kv()).unwrap();
    inst.exec(
        db,
        "CREATE TABLE big (x); WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 100)
         INSERT INTO big SELECT i FROM r",
    )
    .unwrap();
    let err = inst
        .query(db, "SELECT zeroblob(3000000) FROM big LIMIT 34", &[])
        .expect_err("102 MB of results");
    assert!(
        matches!(&err, Error::LimitExceeded { what } if what.contains("max_result_bytes")),
        "{err:?}"
    );
    let rows = inst
        .query(db, "SELECT zeroblob(3000000) FROM big LIMIT 2", &[])
        .unwrap();
    assert_eq!(rows.len(), 2);
    // Empty values and NULLs cost the host memory too: 2000 columns of ''
    // over many rows are counted per value, not as zero bytes.
    let empties = vec!["''"; 2000].join(", ");
    let err = inst
        .query(
            db,
            &format!(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c)
                 SELECT {empties} FROM c LIMIT 25000"
            ),
            &[],
        )
        .expect_err("25000 rows of 2000 values are 1.6 GB on the host");
    assert!(
        matches!(&err, Error::LimitExceeded { what } if what.contains("max_result_bytes")),
        "{err:?}"
    );
}

// ---- 8. a store that does not answer -------------------------------------------

/// A store over memory whose calls never complete while armed.
struct HangingKv {
    inner: MemoryKv,
    hang_puts: AtomicBool,
    hang_gets: AtomicBool,
}

impl HangingKv {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryKv::new(),
            hang_puts: AtomicBool::new(false),
            hang_gets: AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl KvStore for HangingKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        if self.hang_gets.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.hang_puts.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.put_batch(entries).await
    }
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

#[test]
fn a_hanging_store_is_bounded_by_the_call_budget_and_the_store_timeout() {
    // The call's budget ends the wait first.
    let mut inst = instance_with(InstanceConfig {
        statement_timeout: Some(Duration::from_millis(200)),
        store_timeout: Duration::from_mins(1),
        ..InstanceConfig::default()
    });
    let store = HangingKv::new();
    let db = inst
        .open("hangs", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .unwrap();
    store.hang_puts.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let err = inst
        .execute(db, "INSERT INTO t VALUES (2)", &[])
        .expect_err("the commit never answers");
    let waited = start.elapsed();
    assert!(
        matches!(&err, Error::Poisoned { reason } if reason.contains("did not answer")),
        "{err:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(ints(&mut inst, neighbour, "SELECT 5"), [5]);
    assert!(matches!(
        inst.query(db, "SELECT v FROM t", &[]),
        Err(Error::Poisoned { .. })
    ));
    inst.close(db).unwrap();
    store.hang_puts.store(false, Ordering::SeqCst);
    let db = inst
        .open("hangs", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t"), [1]);
    inst.close(db).unwrap();

    // Without a budget, the store timeout ends it; a read that never
    // answered changed nothing, so it is a plain I/O error and the
    // connection stays usable.
    let mut inst = instance_with(InstanceConfig {
        statement_timeout: None,
        store_timeout: Duration::from_millis(200),
        ..InstanceConfig::default()
    });
    let db = inst
        .open("hangs", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    // More pages than the page cache holds, so a scan must read the store.
    inst.exec(
        db,
        "CREATE TABLE wide (b); WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 400)
         INSERT INTO wide SELECT randomblob(3000) FROM r",
    )
    .unwrap();
    store.hang_gets.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let err = inst
        .query(db, "SELECT sum(length(b)) FROM wide", &[])
        .expect_err("reading a page never answers");
    assert!(
        matches!(&err, Error::Sqlite { message, .. } if message.contains("did not answer")),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    store.hang_gets.store(false, Ordering::SeqCst);
    assert_eq!(
        ints(&mut inst, db, "SELECT sum(length(b)) FROM wide"),
        [1_200_000]
    );
    inst.close(db).unwrap();
    // An open whose first read never answers fails within the bound too,
    // and the next open reads the store afresh.
    store.hang_gets.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let err = inst
        .open("hangs", Arc::clone(&store) as Arc<dyn KvStore>)
        .expect_err("reading page 1 never answers");
    assert!(err.to_string().contains("did not answer"), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    store.hang_gets.store(false, Ordering::SeqCst);
    let db = inst.open("hangs", store as Arc<dyn KvStore>).unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t"), [1]);
}

// ---- 10. configuration --------------------------------------------------------

#[test]
fn budgets_beyond_a_day_are_a_configuration_error() {
    for config in [
        budget(0),
        InstanceConfig {
            statement_timeout: Some(Duration::MAX),
            ..InstanceConfig::default()
        },
        InstanceConfig {
            store_timeout: Duration::MAX,
            ..InstanceConfig::default()
        },
        InstanceConfig {
            tenant_memory_limit_bytes: 0,
            ..InstanceConfig::default()
        },
        InstanceConfig {
            max_result_bytes: 0,
            ..InstanceConfig::default()
        },
        InstanceConfig {
            tenant_memory_limit_bytes: 4 << 20,
            tenant_memory_reserve_bytes: 8 << 20,
            ..InstanceConfig::default()
        },
    ] {
        let err = Instance::new(&module(), config.clone()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{config:?}: {err:?}");
        assert!(config.validate().is_err());
    }
    let day = InstanceConfig {
        statement_timeout: Some(vfs_wasm::MAX_BUDGET),
        ..InstanceConfig::default()
    };
    let mut inst = instance_with(day);
    let db = inst.open("day", memory_kv()).unwrap();
    assert_eq!(ints(&mut inst, db, "SELECT 1"), [1]);
}

// ---- 11. the first storage failure is the one reported --------------------------

/// A store that refuses every write with "no space left" while armed.
struct FullKv {
    inner: MemoryKv,
    full: AtomicBool,
}

#[async_trait::async_trait]
impl KvStore for FullKv {
    async fn get_batch(&self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>, KvError> {
        self.inner.get_batch(keys).await
    }
    async fn put_batch(&self, entries: &[(Bytes, Bytes)]) -> Result<(), KvError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(KvError::Backend {
                message: "write failed: No space left on device (os error 28)".into(),
                source: None,
            });
        }
        self.inner.put_batch(entries).await
    }
    async fn delete_batch(&self, keys: &[Bytes]) -> Result<(), KvError> {
        self.inner.delete_batch(keys).await
    }
    fn limits(&self) -> KvLimits {
        self.inner.limits()
    }
}

#[test]
fn a_full_disk_is_named_at_the_caller_even_after_the_journal_retry() {
    let store = Arc::new(FullKv {
        inner: MemoryKv::new(),
        full: AtomicBool::new(false),
    });
    let mut inst = instance();
    let db = inst
        .open("full", Arc::clone(&store) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, "CREATE TABLE t (v); INSERT INTO t VALUES (1)")
        .unwrap();
    store.full.store(true, Ordering::SeqCst);
    for sql in [
        "INSERT INTO t VALUES (2)",
        "INSERT INTO t SELECT randomblob(4000) FROM t",
    ] {
        let err = inst.execute(db, sql, &[]).expect_err("the disk is full");
        let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" <- ");
        assert!(chain.contains("No space left"), "{chain}");
    }
    // Inside an explicit transaction the commit's retry goes through the
    // journal: the first failure still wins.
    inst.exec(db, "BEGIN").unwrap();
    let _ = inst.exec(db, "INSERT INTO t SELECT randomblob(4000) FROM t");
    let err = inst.exec(db, "COMMIT").expect_err("the disk is full");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" <- ");
    assert!(chain.contains("No space left"), "{chain}");
    let _ = inst.exec(db, "ROLLBACK");
    store.full.store(false, Ordering::SeqCst);
    assert_eq!(ints(&mut inst, db, "SELECT v FROM t"), [1]);
    assert_integrity(&mut inst, db);
}
