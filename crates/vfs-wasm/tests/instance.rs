//! Instances serving several tenants: persistence through the key-value
//! store, journal fallback, storage faults, isolation refusals and resource
//! limits, all through the public API. Every scenario ends with
//! `PRAGMA integrity_check`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfs_core::{CountingKv, FaultyKv, KvError, KvLimits, KvStore, MemoryKv};
use vfs_wasm::{DbId, Error, Instance, InstanceConfig, Rows, Value};

use common::{assert_integrity, instance, memory_kv, module};

fn count(inst: &mut Instance, db: DbId, table: &str) -> i64 {
    let rows = inst
        .query(db, &format!("SELECT count(*) FROM {table}"), &[])
        .expect("count");
    match rows.rows.as_slice() {
        [row] => match row.as_slice() {
            [Value::Integer(n)] => *n,
            other => panic!("unexpected count row {other:?}"),
        },
        other => panic!("unexpected count rows {other:?}"),
    }
}

#[test]
fn databases_in_one_instance_stay_separate() {
    let mut inst = instance();
    let names = ["1", "10", "tenant-b"];
    let dbs: Vec<DbId> = names
        .iter()
        .map(|n| inst.open(n, memory_kv()).expect("open"))
        .collect();
    assert_eq!(inst.database_count(), 3);
    for (i, &db) in dbs.iter().enumerate() {
        inst.exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, owner TEXT)")
            .unwrap();
        for _ in 0..=i {
            inst.execute(
                db,
                "INSERT INTO t (owner) VALUES (?1)",
                &[Value::from(names[i])],
            )
            .unwrap();
        }
    }
    for (i, &db) in dbs.iter().enumerate() {
        let rows = inst.query(db, "SELECT DISTINCT owner FROM t", &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from(names[i])]]);
        assert_eq!(count(&mut inst, db, "t"), i as i64 + 1);
        assert_integrity(&mut inst, db);
    }
    // Closing "1" leaves "10" alone (exact names, never prefixes).
    inst.close(dbs[0]).unwrap();
    assert!(matches!(
        inst.query(dbs[0], "SELECT 1", &[]),
        Err(Error::UnknownDatabase)
    ));
    assert_eq!(count(&mut inst, dbs[1], "t"), 2);
    // The name is free again once closed.
    let again = inst.open("1", memory_kv()).unwrap();
    assert_eq!(
        inst.query(again, "SELECT count(*) FROM sqlite_schema", &[])
            .unwrap()
            .rows,
        vec![vec![Value::Integer(0)]]
    );
    assert!(matches!(inst.close(dbs[0]), Err(Error::UnknownDatabase)));
}

#[test]
fn data_reads_back_identically_in_a_new_instance() {
    let kv = memory_kv();
    let values = vec![
        vec![Value::Integer(i64::MIN), Value::Real(-0.5), Value::from("")],
        vec![
            Value::Integer(i64::MAX),
            Value::Real(1e300),
            Value::from("héllo ✓"),
        ],
        vec![
            Value::Null,
            Value::Blob(vec![]),
            Value::Blob(vec![0, 1, 2, 255]),
        ],
        vec![
            Value::from(Some(7_i64)),
            Value::from(None::<f64>),
            Value::from("x".repeat(10_000)),
        ],
    ];
    let written: Rows;
    {
        let mut inst = instance();
        let db = inst.open("persist", Arc::clone(&kv)).unwrap();
        inst.exec(db, "CREATE TABLE v (id INTEGER PRIMARY KEY, a, b, c)")
            .unwrap();
        for row in &values {
            let n = inst
                .execute(db, "INSERT INTO v (a, b, c) VALUES (?1, ?2, ?3)", row)
                .unwrap();
            assert_eq!(n, 1);
        }
        inst.exec(
            db,
            "BEGIN; CREATE TABLE big (k INTEGER PRIMARY KEY, s TEXT);
             WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 2000)
             INSERT INTO big SELECT i, printf('row-%06d', i) FROM r; COMMIT;",
        )
        .unwrap();
        written = inst
            .query(db, "SELECT a, b, c FROM v ORDER BY id", &[])
            .unwrap();
        assert_eq!(written.rows, values);
        assert_eq!(written.columns, ["a", "b", "c"]);
        assert_integrity(&mut inst, db);
        inst.close(db).unwrap();
    }
    let mut inst = instance();
    let db = inst.open("persist", kv).unwrap();
    let read = inst
        .query(db, "SELECT a, b, c FROM v ORDER BY id", &[])
        .unwrap();
    assert_eq!(read, written);
    assert_eq!(count(&mut inst, db, "big"), 2000);
    let last = inst
        .query(
            db,
            "SELECT s FROM big WHERE k = ?1",
            &[Value::Integer(2000)],
        )
        .unwrap();
    assert_eq!(last.rows, vec![vec![Value::from("row-002000")]]);
    assert_integrity(&mut inst, db);
}

#[test]
fn ten_mib_blob_round_trips_and_survives_reopen() {
    let kv = memory_kv();
    let blob: Vec<u8> = (0..10 * 1024 * 1024_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    {
        let mut inst = instance();
        let db = inst.open("blob", Arc::clone(&kv)).unwrap();
        inst.exec(db, "CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB)")
            .unwrap();
        inst.execute(
            db,
            "INSERT INTO b (data) VALUES (?1)",
            &[Value::Blob(blob.clone())],
        )
        .unwrap();
        let rows = inst.query(db, "SELECT data FROM b", &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Blob(blob.clone())]]);
        inst.close(db).unwrap();
    }
    let mut inst = instance();
    let db = inst.open("blob", kv).unwrap();
    let rows = inst
        .query(db, "SELECT length(data), data FROM b", &[])
        .unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(blob.len() as i64), Value::Blob(blob)]]
    );
    assert_integrity(&mut inst, db);
}

#[test]
fn transaction_over_the_batch_limit_falls_back_to_the_journal_and_survives_reopen() {
    let limits = KvLimits {
        max_batch_keys: 8,
        max_value_bytes: 64 * 1024,
    };
    let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::with_limits(limits));
    let counting = Arc::new(CountingKv::new(Arc::clone(&memory)));
    {
        let mut inst = instance();
        let db = inst
            .open("wide", Arc::clone(&counting) as Arc<dyn KvStore>)
            .unwrap();
        inst.exec(db, "CREATE TABLE w (id INTEGER PRIMARY KEY, pad TEXT)")
            .unwrap();
        counting.reset();
        // About 60 pages in one transaction: far beyond 8 keys per batch.
        inst.exec(
            db,
            "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 240)
             INSERT INTO w SELECT i, printf('%01000d', i) FROM r",
        )
        .unwrap();
        // An atomic batch commit would be a single put; the journal path
        // needs many.
        assert!(
            counting.put_calls() > 1,
            "expected the journal fallback, saw {} puts",
            counting.put_calls()
        );
        assert_eq!(count(&mut inst, db, "w"), 240);
        // VACUUM rewrites every page in one transaction: journal path too.
        inst.exec(db, "DELETE FROM w WHERE id % 2 = 0; VACUUM")
            .unwrap();
        inst.exec(
            db,
            "WITH RECURSIVE r(i) AS (SELECT 2 UNION ALL SELECT i + 2 FROM r WHERE i < 240)
             INSERT INTO w SELECT i, printf('%01000d', i) FROM r",
        )
        .unwrap();
        inst.close(db).unwrap();
    }
    let mut inst = instance();
    let db = inst.open("wide", memory).unwrap();
    assert_eq!(count(&mut inst, db, "w"), 240);
    let rows = inst
        .query(db, "SELECT pad FROM w WHERE id = 240", &[])
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Text(format!("{:01000}", 240))]]);
    assert_integrity(&mut inst, db);
}

fn is_injected(err: &Error) -> bool {
    matches!(
        err,
        Error::Sqlite {
            kv: Some(KvError::Injected { .. }),
            ..
        }
    )
}

#[test]
fn kv_failures_carry_the_injected_cause_and_heal_restores_the_last_acknowledged_state() {
    let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
    let faulty = Arc::new(FaultyKv::new(Arc::clone(&memory)));
    let mut inst = instance();
    let db = inst
        .open("faulty", Arc::clone(&faulty) as Arc<dyn KvStore>)
        .unwrap();
    inst.exec(db, "CREATE TABLE f (id INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    for i in 1..=3 {
        inst.execute(
            db,
            "INSERT INTO f (id, v) VALUES (?1, 'acked')",
            &[Value::Integer(i)],
        )
        .unwrap();
    }
    faulty.fail_after(0);
    let err = inst
        .execute(db, "INSERT INTO f (id, v) VALUES (4, 'lost')", &[])
        .expect_err("the store refuses every call");
    assert!(is_injected(&err), "{err:?}");
    let source = std::error::Error::source(&err).expect("source is the KvError");
    assert!(source.to_string().contains("injected"), "{source}");
    // A co-tenant on a healthy store is not affected.
    let other = inst.open("healthy", memory_kv()).unwrap();
    inst.exec(other, "CREATE TABLE h (x); INSERT INTO h VALUES (1)")
        .unwrap();
    assert_eq!(count(&mut inst, other, "h"), 1);

    faulty.heal();
    // The same connection recovers once the store is back ...
    let rows = inst.query(db, "SELECT id FROM f ORDER BY id", &[]).unwrap();
    assert_eq!(rows.len(), 3);
    inst.execute(db, "INSERT INTO f (id, v) VALUES (4, 'after heal')", &[])
        .unwrap();
    inst.execute(db, "DELETE FROM f WHERE id = 4", &[]).unwrap();
    assert_integrity(&mut inst, db);
    inst.close(db).unwrap();
    // ... and a new instance reads exactly the acknowledged state.
    let mut fresh = instance();
    let db = fresh.open("faulty", memory).unwrap();
    let rows = fresh
        .query(db, "SELECT id, v FROM f ORDER BY id", &[])
        .unwrap();
    let expected: Vec<Vec<Value>> = (1..=3)
        .map(|i| vec![Value::Integer(i), Value::from("acked")])
        .collect();
    assert_eq!(rows.rows, expected);
    assert_integrity(&mut fresh, db);
}

#[test]
fn faults_at_every_point_of_a_commit_never_leave_partial_transactions() {
    // A failure after n successful store calls, for every n: a statement
    // that returned Ok must be durable, a failed one may be durable or not
    // (the store may fail after the commit point) but never half applied.
    let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
    let faulty = Arc::new(FaultyKv::new(Arc::clone(&memory)));
    let mut acked = 0_i64;
    let mut maybe = 0_i64;
    for n in 0..12 {
        let mut inst = instance();
        let db = inst
            .open("points", Arc::clone(&faulty) as Arc<dyn KvStore>)
            .unwrap();
        inst.exec(
            db,
            "CREATE TABLE IF NOT EXISTS p (batch INTEGER, k INTEGER)",
        )
        .unwrap();
        faulty.fail_after(n);
        let result = inst.exec(
            db,
            &format!(
                "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 50)
                 INSERT INTO p SELECT {n}, i FROM r"
            ),
        );
        match result {
            Ok(()) => acked += 1,
            Err(e) => {
                assert!(is_injected(&e), "n={n}: {e:?}");
                maybe += 1;
            }
        }
        faulty.heal();
        let _ = inst.close(db);

        let mut check = instance();
        let db = check.open("points", Arc::clone(&memory)).unwrap();
        let rows = check
            .query(db, "SELECT batch, count(*) FROM p GROUP BY batch", &[])
            .unwrap();
        for row in &rows.rows {
            assert_eq!(row[1], Value::Integer(50), "n={n}: partial batch {row:?}");
        }
        let batches = rows.rows.len() as i64;
        assert!(batches >= acked && batches <= acked + maybe, "n={n}");
        assert_integrity(&mut check, db);
        check.close(db).unwrap();
    }
    assert!(maybe > 0, "some commits must have failed");
    assert!(acked > 0, "late faults must let some commits through");
}

#[test]
fn isolation_refusals_reach_only_the_offending_tenant() {
    let mut inst = instance();
    let b_kv = memory_kv();
    let a = inst.open("a", memory_kv()).unwrap();
    let b = inst.open("b", Arc::clone(&b_kv)).unwrap();
    inst.exec(
        b,
        "CREATE TABLE secret (s TEXT); INSERT INTO secret VALUES ('b-only')",
    )
    .unwrap();
    inst.exec(a, "CREATE TABLE mine (m)").unwrap();

    let attempts = [
        "ATTACH 'b' AS stolen",
        "ATTACH 'b-journal' AS stolen",
        "ATTACH 'file:b?mode=ro' AS stolen",
        "ATTACH ':memory:' AS scratch",
        "DETACH main",
        "VACUUM INTO 'b'",
        "VACUUM INTO 'file:c?vfs=host'",
        "SELECT load_extension('libevil')",
        "PRAGMA journal_mode = WAL",
        "PRAGMA page_size = 512",
        "PRAGMA cache_size = -1000000",
        "PRAGMA writable_schema = ON",
        "PRAGMA synchronous = OFF",
        "PRAGMA locking_mode = NORMAL",
    ];
    for sql in attempts {
        let err = inst.exec(a, sql).expect_err(sql);
        assert!(matches!(err, Error::Sqlite { .. }), "{sql}: {err:?}");
        // The offender keeps working ...
        assert_eq!(count(&mut inst, a, "mine"), 0, "{sql}");
        // ... and its neighbour saw nothing.
        let rows = inst.query(b, "SELECT s FROM secret", &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from("b-only")]], "{sql}");
    }
    // Tenant-chosen names that are not plain names are refused at open.
    for name in [
        "file:b?mode=memory",
        "file:x",
        ":memory:",
        "",
        "b-journal",
        "x/y",
        "a\u{1}",
    ] {
        let err = inst.open(name, memory_kv()).expect_err(name);
        assert!(
            matches!(err, Error::InvalidName { .. }),
            "{name:?}: {err:?}"
        );
    }
    assert!(matches!(
        inst.open("b", memory_kv()),
        Err(Error::NameInUse(_))
    ));
    // VACUUM itself (an in-memory scratch copy, no file) is allowed.
    inst.exec(a, "INSERT INTO mine VALUES (1); DELETE FROM mine; VACUUM")
        .unwrap();
    // Reading is still allowed.
    let rows = inst.query(a, "PRAGMA journal_mode", &[]).unwrap();
    assert_eq!(rows.rows, vec![vec![Value::from("delete")]]);
    assert_integrity(&mut inst, a);
    assert_integrity(&mut inst, b);
    inst.close(b).unwrap();
    // b's store still holds only b's data.
    let mut fresh = instance();
    let b = fresh.open("b", b_kv).unwrap();
    let tables = fresh
        .query(b, "SELECT name FROM sqlite_schema ORDER BY name", &[])
        .unwrap();
    assert_eq!(tables.rows, vec![vec![Value::from("secret")]]);
}

fn limited_config() -> InstanceConfig {
    InstanceConfig {
        memory_limit_bytes: 48 << 20,
        statement_timeout: Some(Duration::from_millis(300)),
        max_length: 4 << 20,
        ..InstanceConfig::default()
    }
}

#[test]
fn endless_query_is_interrupted_and_the_co_tenant_answers_right_after() {
    let mut inst = Instance::new(&module(), limited_config()).unwrap();
    let runaway = inst.open("runaway", memory_kv()).unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.exec(neighbour, "CREATE TABLE n (x); INSERT INTO n VALUES (42)")
        .unwrap();
    let start = Instant::now();
    let err = inst
        .query(
            runaway,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            &[],
        )
        .expect_err("an endless query cannot finish");
    let took = start.elapsed();
    assert!(
        matches!(err, Error::Interrupted { budget_ms: 300 }),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped late: {took:?}");
    let start = Instant::now();
    let rows = inst.query(neighbour, "SELECT x FROM n", &[]).unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(42)]]);
    assert!(start.elapsed() < Duration::from_millis(300));
    // The interrupted database itself is still usable, and so is exec.
    inst.exec(runaway, "CREATE TABLE ok (x); INSERT INTO ok VALUES (1)")
        .unwrap();
    let err = inst
        .exec(
            runaway,
            "CREATE TABLE forever AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
        )
        .expect_err("endless script");
    assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
    assert_eq!(count(&mut inst, runaway, "ok"), 1);
    assert_integrity(&mut inst, runaway);
    assert_integrity(&mut inst, neighbour);
}

#[test]
fn memory_bombs_fail_and_the_instance_keeps_serving() {
    let config = InstanceConfig {
        // Filling 48 MiB takes a while on a busy machine: the memory cap,
        // not the time budget, must be what stops these.
        statement_timeout: Some(Duration::from_secs(20)),
        ..limited_config()
    };
    let cap = config.memory_limit_bytes;
    let mut inst = Instance::new(&module(), config).unwrap();
    let bomber = inst.open("bomber", memory_kv()).unwrap();
    let neighbour = inst.open("neighbour", memory_kv()).unwrap();
    inst.exec(
        neighbour,
        "CREATE TABLE n (x); INSERT INTO n VALUES ('still here')",
    )
    .unwrap();
    let bombs = [
        "SELECT length(zeroblob(2000000000))",
        "SELECT length(randomblob(100000000))",
        "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) FROM r",
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 100)
         SELECT length(group_concat(randomblob(1000000))) FROM r",
        // Many large rows held at once by a sort: the heap limit, not a
        // length limit, stops this one.
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 200)
         SELECT i, length(b) FROM (SELECT i, randomblob(1000000) AS b FROM r) ORDER BY b",
    ];
    for sql in bombs {
        let err = inst.query(bomber, sql, &[]).expect_err(sql);
        assert!(matches!(err, Error::LimitExceeded { .. }), "{sql}: {err:?}");
        assert!(!inst.is_broken());
        assert!(inst.guest_memory_bytes() <= cap);
        let rows = inst.query(neighbour, "SELECT x FROM n", &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::from("still here")]]);
    }
    let too_long = Value::Blob(vec![0; 5 << 20]);
    let err = inst
        .execute(bomber, "SELECT length(?1)", &[too_long])
        .expect_err("parameter over max_length");
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    inst.exec(bomber, "CREATE TABLE fine (x); INSERT INTO fine VALUES (1)")
        .unwrap();
    assert_eq!(count(&mut inst, bomber, "fine"), 1);
    assert_integrity(&mut inst, bomber);
    assert_integrity(&mut inst, neighbour);
}

#[test]
fn prepared_statements_are_reused_and_evicted_correctly() {
    let mut inst = Instance::new(
        &module(),
        InstanceConfig {
            statement_cache: 3,
            ..InstanceConfig::default()
        },
    )
    .unwrap();
    let db = inst.open("stmts", memory_kv()).unwrap();
    inst.exec(db, "CREATE TABLE s (k INTEGER PRIMARY KEY, v TEXT)")
        .unwrap();
    for k in 0..200 {
        inst.execute(
            db,
            "INSERT INTO s (k, v) VALUES (?1, ?2)",
            &[Value::Integer(k), Value::Text(format!("v{k}"))],
        )
        .unwrap();
    }
    // More distinct statements than the cache holds, interleaved with a
    // reused one whose bindings must not leak between calls.
    for k in 0..50 {
        let distinct = format!("SELECT v FROM s WHERE k = {k}");
        let rows = inst.query(db, &distinct, &[]).unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Text(format!("v{k}"))]]);
        let rows = inst
            .query(
                db,
                "SELECT v FROM s WHERE k = ?1",
                &[Value::Integer(199 - k)],
            )
            .unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Text(format!("v{}", 199 - k))]]);
    }
    assert_eq!(
        inst.execute(
            db,
            "UPDATE s SET v = 'x' WHERE k < ?1",
            &[Value::Integer(10)]
        )
        .unwrap(),
        10
    );
    assert_integrity(&mut inst, db);
}

/// Every kind of parameter, with texts and blobs on both sides of the
/// size up to which they travel in the shared parameter buffer (1 KiB),
/// comes back exactly as given; so do parameters too large together for
/// that buffer (64 KiB). A call whose parameters are refused leaves
/// nothing charged to its database, whatever it had allocated for them.
#[test]
fn parameters_of_every_kind_and_size_round_trip_and_leak_nothing() {
    let mut inst = instance();
    let db = inst.open("params", memory_kv()).unwrap();
    let text = |n: usize| Value::Text("é".repeat(n / 2) + &"t".repeat(n % 2));
    let blob = |n: usize| Value::Blob((0..n).map(|i| (i % 251) as u8).collect());
    let params = vec![
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Real(-0.5),
        Value::Real(f64::MAX),
        text(0),
        text(1),
        text(1023),
        text(1024),
        text(1025),
        text(70_000),
        blob(0),
        blob(1024),
        blob(1025),
        blob(70_000),
        Value::Integer(0),
    ];
    // `SELECT ?1 <sep> ?2 <sep> … ?n`.
    let select = |n: usize, sep: &str| {
        let marks: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
        format!("SELECT {}", marks.join(sep))
    };
    let sql = select(params.len(), ", ");
    for _ in 0..3 {
        let rows = inst.query(db, &sql, &params).unwrap();
        assert_eq!(rows.rows, vec![params.clone()]);
    }
    // 100 texts of 1000 bytes: more than the shared buffer holds.
    let many: Vec<Value> = (0..100)
        .map(|i| Value::Text(format!("{i:04}").repeat(250)))
        .collect();
    let sql = select(many.len(), " || ");
    let joined: String = many
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.as_str(),
            _ => unreachable!(),
        })
        .collect();
    let rows = inst.query(db, &sql, &many).unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Text(joined)]]);

    // Refused parameters: too many, and too few, with large ones among
    // them that were allocated on their own.
    inst.exec(db, "CREATE TABLE p (v)").unwrap();
    let one = "INSERT INTO p VALUES (?1)";
    let two = "INSERT INTO p VALUES (?1 || ?2)";
    // Both statements prepared and cached first: only the refused calls
    // are measured.
    inst.execute(db, one, &[Value::Null]).unwrap();
    inst.execute(db, two, &[Value::Null, Value::Null]).unwrap();
    inst.exec(db, "DELETE FROM p").unwrap();
    let before = inst.database_memory_bytes(db).unwrap();
    for _ in 0..20 {
        let err = inst
            .execute(db, one, &[blob(5000), text(5000), blob(10)])
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("expects 1 parameters, 3 given")),
            "{err:?}"
        );
        let err = inst.execute(db, two, &[blob(5000)]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    assert_eq!(inst.database_memory_bytes(db).unwrap(), before);
    // The statement that refused them still works, with nothing left bound.
    inst.execute(db, one, &[blob(5000)]).unwrap();
    let rows = inst.query(db, "SELECT length(v) FROM p", &[]).unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(5000)]]);
    assert_integrity(&mut inst, db);
}

#[test]
fn bad_input_is_a_clear_error() {
    let mut inst = instance();
    let db = inst.open("errors", memory_kv()).unwrap();
    inst.exec(db, "CREATE TABLE e (id INTEGER PRIMARY KEY)")
        .unwrap();
    inst.execute(db, "INSERT INTO e VALUES (1)", &[]).unwrap();
    let err = inst
        .execute(db, "INSERT INTO e VALUES (1)", &[])
        .unwrap_err();
    assert!(
        matches!(&err, Error::Sqlite { code: 1555, message, kv: None } if message.contains("UNIQUE")),
        "{err:?}"
    );
    let err = inst.exec(db, "SELEC nonsense").unwrap_err();
    assert!(
        matches!(&err, Error::Sqlite { code: 1, message, .. } if message.contains("syntax")),
        "{err:?}"
    );
    let err = inst
        .execute(db, "INSERT INTO e VALUES (?1)", &[])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = inst.execute(db, "SELECT 1; SELECT 2", &[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let rows = inst
        .query(
            db,
            "SELECT 7; -- a trailing comment\n /* and another */ ;",
            &[],
        )
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(7)]]);
    assert_eq!(inst.execute(db, "  -- nothing\n", &[]).unwrap(), 0);
    assert!(inst.query(db, "", &[]).unwrap().is_empty());
    let config = InstanceConfig {
        memory_limit_bytes: 1 << 20,
        ..InstanceConfig::default()
    };
    assert!(matches!(
        Instance::new(&module(), config),
        Err(Error::Config(_))
    ));
    assert_integrity(&mut inst, db);
}

#[test]
fn a_new_database_commits_each_transaction_as_one_atomic_batch() {
    let counting = Arc::new(CountingKv::new(memory_kv()));
    let mut inst = instance();
    let db = inst
        .open("atomic", Arc::clone(&counting) as Arc<dyn KvStore>)
        .unwrap();
    // Page 1 was seeded at open, so batch-atomic writes engage from the
    // very first transaction: no journal, one put per commit.
    counting.reset();
    inst.exec(db, "CREATE TABLE a (x)").unwrap();
    assert_eq!(counting.put_calls(), 1, "CREATE TABLE");
    counting.reset();
    inst.execute(db, "INSERT INTO a VALUES (?1)", &[Value::from("one")])
        .unwrap();
    assert_eq!(counting.put_calls(), 1, "INSERT");
    assert_eq!(counting.delete_calls(), 0, "no journal to delete");
    assert_integrity(&mut inst, db);
}

#[test]
fn hostile_sql_gets_errors_never_traps() {
    let mut inst = instance();
    let db = inst.open("hostile", memory_kv()).unwrap();
    let neighbour = inst.open("calm", memory_kv()).unwrap();
    let views: String = std::iter::once("CREATE VIEW v0 AS SELECT 1 AS x;".to_owned())
        .chain((1..1000).map(|i| format!("CREATE VIEW v{i} AS SELECT x FROM v{};", i - 1)))
        .collect();
    inst.exec(db, &views).unwrap();
    let deep = [
        format!(
            "SELECT json_valid('{}{}')",
            "[".repeat(990),
            "]".repeat(990)
        ),
        format!("SELECT {}1{}", "(".repeat(250), ")".repeat(250)),
        format!("SELECT {}1{}", "(SELECT ".repeat(300), ")".repeat(300)),
        format!(
            "SELECT * FROM {}(SELECT 1 AS x){}",
            "(SELECT x FROM ".repeat(200),
            ")".repeat(200)
        ),
        "SELECT * FROM v999".to_owned(),
        // One recursion level per wildcard in LIKE / GLOB.
        format!(
            "SELECT '{}' LIKE '{}'",
            "a".repeat(100_000),
            "%a".repeat(20_000)
        ),
        format!(
            "SELECT '{}' GLOB '{}'",
            "a".repeat(100_000),
            "*a".repeat(20_000)
        ),
        format!(
            "SELECT '{}' LIKE '{}'",
            "a".repeat(10_000),
            "%a".repeat(999)
        ),
        "CREATE TABLE tt (x); PRAGMA recursive_triggers = ON;
         CREATE TRIGGER tr AFTER INSERT ON tt WHEN new.x < 100000
         BEGIN INSERT INTO tt VALUES (new.x + 1); END;
         INSERT INTO tt VALUES (1);"
            .to_owned(),
    ];
    for sql in &deep {
        // Some of these are legal, some exceed a limit; none may trap.
        let _ = inst.exec(db, sql);
        assert!(!inst.is_broken(), "{}", &sql[..40]);
        assert_eq!(
            inst.query(neighbour, "SELECT 1", &[]).unwrap().rows,
            vec![vec![Value::Integer(1)]]
        );
    }
    assert_integrity(&mut inst, db);
}

#[test]
fn a_guest_trap_breaks_only_its_instance() {
    // A trap in the guest (a bug in SQLite, say) must become Error::Broken,
    // not a host crash. LIKE no longer recurses, so the test makes the
    // guest trap through the instance's test hook.
    let mut doomed = instance();
    let mut healthy = instance();
    let kv = memory_kv();
    let victim = doomed.open("victim", Arc::clone(&kv)).unwrap();
    let trigger = doomed.open("trigger", memory_kv()).unwrap();
    doomed
        .exec(victim, "CREATE TABLE v (x); INSERT INTO v VALUES ('kept')")
        .unwrap();
    let err = doomed.trap_for_test().unwrap_err();
    assert!(matches!(err, Error::Broken { .. }), "{err:?}");
    let err = doomed.query(trigger, "SELECT 1", &[]).unwrap_err();
    assert!(matches!(err, Error::Broken { .. }), "{err:?}");
    assert!(doomed.is_broken());
    // Every database of the broken instance reports it ...
    let err = doomed.query(victim, "SELECT x FROM v", &[]).unwrap_err();
    assert!(matches!(err, Error::Broken { .. }), "{err:?}");
    assert!(matches!(
        doomed.open("late", memory_kv()),
        Err(Error::Broken { .. })
    ));
    // ... closing still releases the bookkeeping ...
    doomed.close(victim).unwrap();
    assert_eq!(doomed.database_count(), 1);
    // ... and other instances, and the committed data, are unharmed.
    let db = healthy.open("victim", kv).unwrap();
    let rows = healthy.query(db, "SELECT x FROM v", &[]).unwrap();
    assert_eq!(rows.rows, vec![vec![Value::from("kept")]]);
    assert_integrity(&mut healthy, db);
}
