//! Export, import, snapshots and sizes on the local-disk driver, checked by
//! clients nobody here wrote: the system's `sqlite3` shell reads what we
//! export, and Python's `sqlite3` module writes what we import.

mod common;

use std::path::Path;
use std::process::Command;

use common::config;
use driver_fs::FsDriver;
use vfs_pool::testing::integrity;
use vfs_pool::testing::sqlite3_shell as sqlite3;
use vfs_pool::{ActorDriver, Error, ImportMode, Value, WrapsStorageDriver};

/// Runs a Python script with `file` as its first argument.
fn python(script: &str, file: &Path) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .expect("python3 (Debian's python3 package; `cargo xtask deps` installs it)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A driver on a data directory inside `dir`, apart from the test's files.
async fn driver_in(dir: &Path) -> FsDriver {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    FsDriver::open(data, config(10)).await.unwrap()
}

/// Tables, an index, a view, a trigger and blobs.
const SCHEMA: &str = "
    CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL, photo BLOB);
    CREATE INDEX person_name ON person (name);
    CREATE TABLE audit (person INTEGER, note TEXT);
    CREATE VIEW named AS SELECT name FROM person ORDER BY name;
    CREATE TRIGGER person_added AFTER INSERT ON person
        BEGIN INSERT INTO audit VALUES (new.id, 'added ' || new.name); END;
";

async fn fill(db: &vfs_pool::Database) {
    db.exec(SCHEMA).await.unwrap();
    db.exec("BEGIN").await.unwrap();
    for i in 0..500_i64 {
        let photo: Vec<u8> = (0..(i % 7) * 300).map(|b| (b * 31 + i) as u8).collect();
        db.execute(
            "INSERT INTO person (id, name, photo) VALUES (?1, ?2, ?3)",
            &[
                Value::Integer(i),
                Value::from(format!("person {i:03}")),
                Value::Blob(photo),
            ],
        )
        .await
        .unwrap();
    }
    db.exec("COMMIT").await.unwrap();
}

const CHECKSUM: &str = "SELECT count(*), sum(length(photo)), \
     sum(unicode(substr(hex(photo), 5, 1))), (SELECT count(*) FROM audit), \
     (SELECT group_concat(name) FROM (SELECT name FROM named LIMIT 3)) FROM person";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_is_a_sqlite_file_that_the_sqlite3_shell_reads() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver_in(dir.path()).await;
    let db = driver.open_database("tenant").await.unwrap();
    fill(&db).await;
    let ours = db.query(CHECKSUM, &[]).await.unwrap();

    let mut file = Vec::new();
    let size = driver.export("tenant", &mut file).await.unwrap();
    assert_eq!(size, file.len() as u64);
    let path = dir.path().join("tenant.db");
    std::fs::write(&path, &file).unwrap();

    assert_eq!(sqlite3(&path, "PRAGMA integrity_check"), "ok\n");
    let theirs = sqlite3(&path, CHECKSUM);
    let expected = ours.rows[0]
        .iter()
        .map(|v| match v {
            Value::Integer(n) => n.to_string(),
            Value::Text(t) => t.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect::<Vec<_>>()
        .join("|");
    assert_eq!(theirs.trim_end(), expected);
    let schema = sqlite3(&path, ".schema");
    for object in ["person_name", "VIEW named", "TRIGGER person_added"] {
        assert!(schema.contains(object), "{object} missing from {schema}");
    }

    // The sizes listed are the exported files' sizes.
    let sizes = driver.actor_sizes().await.unwrap();
    assert_eq!(sizes.len(), 1);
    assert_eq!(
        (sizes[0].actor_id.as_str(), sizes[0].size_bytes),
        ("tenant", size)
    );
    driver.shutdown().await;
}

/// A database as Python's `sqlite3` module writes it, in WAL mode and
/// checkpointed (the file then says "WAL" in its header).
const PYTHON_WRITER: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA journal_mode = WAL")
con.executescript("""
    CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT UNIQUE, price REAL, raw BLOB);
    CREATE VIEW cheap AS SELECT label FROM item WHERE price < 10;
""")
con.executemany("INSERT INTO item VALUES (?, ?, ?, ?)",
    [(i, "item-%d" % i, i * 0.75, bytes(range(i % 256))) for i in range(2000)])
con.commit()
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_database_imports_and_exports_back_to_the_same_dump() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("python.db");
    python(PYTHON_WRITER, &original);
    let driver = driver_in(dir.path()).await;

    let bytes = std::fs::read(&original).unwrap();
    let size = driver
        .import("shop", &mut &bytes[..], ImportMode::Create)
        .await
        .unwrap();
    assert_eq!(size, bytes.len() as u64);

    let db = driver.open_database("shop").await.unwrap();
    assert_eq!(integrity(&db).await, "ok");
    let query = "SELECT count(*), sum(price), sum(length(raw)), \
                 (SELECT count(*) FROM cheap) FROM item";
    let ours = db.query(query, &[]).await.unwrap();
    assert_eq!(
        ours.rows[0],
        vec![
            Value::Integer(2000),
            Value::Real(1_499_250.0),
            Value::Integer((0..2000).map(|i| i % 256).sum()),
            Value::Integer(14),
        ]
    );
    // Writable through the pool like any actor.
    db.execute("INSERT INTO item (label, price) VALUES ('new', 1)", &[])
        .await
        .unwrap();
    db.execute("DELETE FROM item WHERE label = 'new'", &[])
        .await
        .unwrap();
    driver.close_actor("shop").await.unwrap();

    let mut exported = Vec::new();
    driver.export("shop", &mut exported).await.unwrap();
    let back = dir.path().join("back.db");
    std::fs::write(&back, &exported).unwrap();
    assert_eq!(sqlite3(&back, ".dump"), sqlite3(&original, ".dump"));
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.db");
    sqlite3(
        &good_path,
        "CREATE TABLE t (x TEXT); INSERT INTO t SELECT hex(randomblob(300)) FROM \
         (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200) \
         SELECT i FROM c); CREATE INDEX tx ON t (x);",
    );
    let good = std::fs::read(&good_path).unwrap();
    let small_pages = dir.path().join("small.db");
    sqlite3(&small_pages, "PRAGMA page_size = 1024; CREATE TABLE t (x);");

    let mut corrupt = good.clone();
    // Scribble over the middle of every page after the first, keeping the
    // header: the file still opens but its b-trees are garbage.
    for page in corrupt.chunks_mut(4096).skip(1) {
        page[100..900].fill(0x5a);
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not sqlite",
            b"just some text, not a database".to_vec(),
            "not a SQLite",
        ),
        ("empty", Vec::new(), "empty"),
        ("truncated", good[..good.len() - 4096].to_vec(), "truncated"),
        ("ragged", good[..good.len() - 10].to_vec(), "truncated"),
        (
            "small pages",
            std::fs::read(&small_pages).unwrap(),
            "1024 bytes",
        ),
        ("corrupt", corrupt, "corrupt"),
    ];
    let driver = driver_in(dir.path()).await;
    for (name, bytes, expected) in cases {
        let err = driver
            .import("victim", &mut &bytes[..], ImportMode::Create)
            .await
            .expect_err(name);
        assert!(
            matches!(&err, Error::InvalidImport { .. }) && err.to_string().contains(expected),
            "{name}: {err}"
        );
        assert!(driver.list_actors().await.unwrap().is_empty(), "{name}");
    }
    // Nothing was seated or left open either.
    assert!(driver.open_actors().is_empty());
    assert_eq!(driver.storage_driver().pool().actor_count(), 0);

    // The good file imports; a second import is refused unless replacing.
    driver
        .import("victim", &mut &good[..], ImportMode::Create)
        .await
        .unwrap();
    let err = driver
        .import("victim", &mut &good[..], ImportMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorExists { .. }), "{err}");
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_an_open_actor_closes_it_and_swaps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let driver = driver_in(dir.path()).await;
    let db = driver.open_database("a").await.unwrap();
    db.exec("CREATE TABLE old (x); INSERT INTO old VALUES (1)")
        .await
        .unwrap();
    let replacement = dir.path().join("new.db");
    sqlite3(
        &replacement,
        "CREATE TABLE fresh (y); INSERT INTO fresh VALUES ('hello')",
    );
    let bytes = std::fs::read(&replacement).unwrap();

    let err = driver
        .import("a", &mut &bytes[..], ImportMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ActorExists { .. }), "{err}");
    // A snapshot sees the open actor's acknowledged rows, and writing to
    // the snapshot changes only the copy.
    let snapshot = driver.snapshot("a").await.unwrap();
    let rows = snapshot
        .database()
        .query("SELECT x FROM old", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    assert!(!snapshot.is_modified(), "reads write nothing");
    snapshot.database().exec("DELETE FROM old").await.unwrap();
    assert!(snapshot.is_modified());
    snapshot.close().await.unwrap();
    let rows = db.query("SELECT count(*) FROM old", &[]).await.unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);

    driver
        .import("a", &mut &bytes[..], ImportMode::Replace)
        .await
        .unwrap();
    assert!(
        db.query("SELECT 1", &[]).await.is_err(),
        "the old database was closed"
    );
    let db = driver.open_database("a").await.unwrap();
    let rows = db
        .query("SELECT name FROM sqlite_schema ORDER BY name", &[])
        .await
        .unwrap();
    assert_eq!(rows.rows, vec![vec![Value::from("fresh")]]);

    let err = driver.snapshot("nobody").await.unwrap_err();
    assert!(matches!(err, Error::NoSuchActor { .. }), "{err}");
    let mut sink = Vec::new();
    let err = driver.export("nobody", &mut sink).await.unwrap_err();
    assert!(matches!(err, Error::NoSuchActor { .. }), "{err}");
    assert!(sink.is_empty());
    driver.shutdown().await;
}
