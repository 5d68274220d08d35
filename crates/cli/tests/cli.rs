//! The `vfs` binary end to end, checked with clients nobody here wrote:
//! the system's `sqlite3` shell makes and reads the files, a pseudo-terminal
//! drives the interactive shell, and a live PostgreSQL host keeps writing
//! while the command line reads its actor.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use driver_engine::EngineDriver;
use driver_engine::testing::fresh_database_url;
use vfs_pool::testing::sqlite3_shell as sqlite3;
use vfs_pool::{ActorDriver, PoolConfig, Value};

/// A data directory and scratch space for files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        Self { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `vfs --data-dir DATA args…`.
    fn vfs(&self, args: &[&str]) -> Output {
        self.vfs_with_stdin(args, "")
    }

    fn vfs_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = vfs_command(self.dir.path());
        command.arg("--data-dir").arg(self.data()).args(args);
        run_with_stdin(command, stdin)
    }
}

/// The binary, with a home of its own (history) and the module cache of
/// the other test binaries.
fn vfs_command(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vfs"));
    command.env("HOME", home);
    command.env_remove("VFS_DATA_DIR");
    command.env_remove("VFS_URL");
    command
}

fn run_with_stdin(mut command: Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Asserts exit status 1 with one line on stderr that contains `words`.
fn fails_with(out: &Output, words: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {err}\nstdout: {}",
        stdout(out)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(words), "{words:?} not in {err}");
}

/// A database with tables, an index, a view, a trigger and blobs, made by
/// the sqlite3 shell.
fn source_database(path: &Path) {
    sqlite3(
        path,
        "CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL, photo BLOB);
         CREATE INDEX person_name ON person (name);
         CREATE TABLE audit (person INTEGER, note TEXT);
         CREATE VIEW named AS SELECT name FROM person ORDER BY name;
         CREATE TRIGGER person_added AFTER INSERT ON person
             BEGIN INSERT INTO audit VALUES (new.id, 'added ' || new.name); END;
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500)
         INSERT INTO person (id, name, photo)
             SELECT i, 'person ' || i, randomblob(i % 7 * 100) FROM c;",
    );
}

#[test]
fn every_command_on_a_data_directory() {
    let scratch = Scratch::new();
    let source = scratch.file("source.db");
    source_database(&source);
    let source_size = std::fs::metadata(&source).unwrap().len();

    let out = scratch.vfs(&["import", source.to_str().unwrap(), "tenant"]);
    ok(&out);
    assert!(stderr(&out).contains("imported"), "{}", stderr(&out));

    let listed: serde_json::Value =
        serde_json::from_str(&ok(&scratch.vfs(&["actors", "--json"]))).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{ "actor": "tenant", "size_bytes": source_size }])
    );
    let table = ok(&scratch.vfs(&["actors"]));
    assert!(
        table.contains("| tenant ") && table.contains(&source_size.to_string()),
        "{table}"
    );

    // Reads, in every format.
    let csv = ok(&scratch.vfs(&[
        "sql",
        "tenant",
        "SELECT count(*) AS n FROM person; SELECT count(*) AS audits FROM audit",
        "--csv",
    ]));
    assert_eq!(csv, "n\n500\naudits\n500\n");
    let json = ok(&scratch.vfs(&[
        "sql",
        "tenant",
        "SELECT id, name FROM person WHERE id = 7",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json, serde_json::json!([{ "id": 7, "name": "person 7" }]));

    // A statement that writes runs on the actor itself (and fires the trigger).
    ok(&scratch.vfs(&["sql", "tenant", "INSERT INTO person (name) VALUES ('new')"]));
    let csv = ok(&scratch.vfs(&[
        "sql",
        "tenant",
        "SELECT count(*) FROM person; SELECT count(*) FROM audit",
        "--csv",
    ]));
    assert_eq!(csv, "count(*)\n501\ncount(*)\n501\n");

    // Export: the sqlite3 shell reads it and finds the same rows.
    let exported = scratch.file("exported.db");
    ok(&scratch.vfs(&["export", "tenant", exported.to_str().unwrap()]));
    assert_eq!(sqlite3(&exported, "PRAGMA integrity_check"), "ok\n");
    assert_eq!(
        sqlite3(&exported, "SELECT count(*), sum(length(photo)) FROM person"),
        sqlite3(
            &source,
            "SELECT count(*) + 1, sum(length(photo)) FROM person"
        )
    );
    let schema = sqlite3(&exported, ".schema");
    for object in ["person_name", "VIEW named", "TRIGGER person_added"] {
        assert!(schema.contains(object), "{object} missing from {schema}");
    }

    // Dump: the sqlite3 shell rebuilds from it a database with the same dump.
    let dump = ok(&scratch.vfs(&["dump", "tenant"]));
    let rebuilt = scratch.file("rebuilt.db");
    let out = Command::new("sqlite3")
        .arg(&rebuilt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(dump.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        stderr(&out)
    );
    assert_eq!(sqlite3(&rebuilt, ".dump"), sqlite3(&exported, ".dump"));

    // The shell reads SQL piped on stdin, dot commands included.
    let out = scratch.vfs_with_stdin(
        &["shell", "tenant"],
        ".tables\nSELECT name\n  FROM person WHERE id = 3;\n.schema audit\n",
    );
    let printed = ok(&out);
    assert!(printed.contains("audit  named  person"), "{printed}");
    assert!(printed.contains("person 3"), "{printed}");
    assert!(printed.contains("CREATE TABLE audit"), "{printed}");
    // Without --write it refuses a statement that writes, and changes nothing,
    // inside a transaction too.
    let out = scratch.vfs_with_stdin(&["shell", "tenant"], "DELETE FROM person;\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("readonly"), "{}", stderr(&out));
    let out = scratch.vfs_with_stdin(
        &["shell", "tenant"],
        "BEGIN;\nINSERT INTO person (name) VALUES ('sneaky');\n\
         SELECT count(*) AS people FROM person;\nCOMMIT;\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("readonly"), "{}", stderr(&out));
    assert!(stdout(&out).contains("| 501 "), "{}", stdout(&out));
    // Turning query_only off does not get a write through either: the
    // write is caught in the copy and the copy is taken afresh.
    let out = scratch.vfs_with_stdin(
        &["shell", "tenant"],
        "PRAGMA query_only = 0;\nDELETE FROM person;\n\
         SELECT count(*) AS people FROM person;\nDELETE FROM audit;\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).matches("read-only").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("readonly"), "{}", stderr(&out));
    assert!(stdout(&out).contains("| 501 "), "{}", stdout(&out));
    let out = scratch.vfs_with_stdin(
        &["shell", "tenant", "--write"],
        "DELETE FROM person WHERE id > 10;\nSELECT count(*) AS left_over FROM person;\n",
    );
    assert!(ok(&out).contains("| 10 "), "{}", stdout(&out));

    // Check: all actors by default, each named one otherwise.
    let out = scratch.vfs(&["check"]);
    assert!(
        ok(&out).contains("1 actors checked: all ok"),
        "{}",
        stdout(&out)
    );
    fails_with(&scratch.vfs(&["check", "tenant", "ghost"]), "ghost");

    ok(&scratch.vfs(&["rm", "tenant"]));
    assert_eq!(ok(&scratch.vfs(&["actors", "--json"])).trim(), "[]");
}

#[test]
fn bad_input_gets_one_line_and_status_1_and_writes_nothing() {
    let scratch = Scratch::new();
    let source = scratch.file("source.db");
    source_database(&source);
    ok(&scratch.vfs(&["import", source.to_str().unwrap(), "tenant"]));

    let out_file = scratch.file("out.db");
    let out_path = out_file.to_str().unwrap();
    fails_with(
        &scratch.vfs(&["export", "ghost", out_path]),
        "\"ghost\" has no data",
    );
    assert!(!out_file.exists());
    fails_with(&scratch.vfs(&["sql", "ghost", "SELECT 1"]), "has no data");
    fails_with(&scratch.vfs(&["rm", "ghost"]), "has no data");

    let text = scratch.file("notes.txt");
    std::fs::write(&text, "these are not the pages you are looking for").unwrap();
    fails_with(
        &scratch.vfs(&["import", text.to_str().unwrap(), "other"]),
        "not a SQLite database",
    );
    let truncated = scratch.file("truncated.db");
    let bytes = std::fs::read(&source).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 4096]).unwrap();
    fails_with(
        &scratch.vfs(&["import", truncated.to_str().unwrap(), "other"]),
        "truncated",
    );
    fails_with(
        &scratch.vfs(&[
            "import",
            scratch.file("missing.db").to_str().unwrap(),
            "other",
        ]),
        "cannot read",
    );
    let with_wal = scratch.file("with-wal.db");
    std::fs::write(&with_wal, &bytes).unwrap();
    std::fs::write(scratch.file("with-wal.db-wal"), b"frames").unwrap();
    fails_with(
        &scratch.vfs(&["import", with_wal.to_str().unwrap(), "other"]),
        "write-ahead log",
    );
    fails_with(
        &scratch.vfs(&["import", source.to_str().unwrap(), "tenant"]),
        "already has data",
    );
    fails_with(
        &scratch.vfs(&["export", "tenant", "/proc/no-such-dir/out.db"]),
        "cannot write /proc/no-such-dir/out.db",
    );
    fails_with(&scratch.vfs(&["sql", "tenant", "SELEKT 1"]), "syntax error");
    assert!(
        !ok(&scratch.vfs(&["actors", "--json"])).contains("other"),
        "a refused import leaves no actor"
    );

    let mut command = vfs_command(scratch.dir.path());
    command.args(["--url", "postgres://nobody@127.0.0.1:1/none", "actors"]);
    fails_with(&run_with_stdin(command, ""), "127.0.0.1");
    let mut command = vfs_command(scratch.dir.path());
    command.args(["--url", "mysql://what", "actors"]);
    fails_with(&run_with_stdin(command, ""), "URL");
    let mut command = vfs_command(scratch.dir.path());
    command.args([
        "--data-dir",
        scratch.file("nowhere").to_str().unwrap(),
        "actors",
    ]);
    fails_with(&run_with_stdin(command, ""), "does not exist");

    // A host holding the directory: said plainly.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = runtime
        .block_on(driver_fs::FsDriver::open(
            scratch.data(),
            PoolConfig::default(),
        ))
        .unwrap();
    fails_with(&scratch.vfs(&["actors"]), "in use by another process");
    runtime.block_on(host.shutdown());
}

/// Tables a dump gets wrong easily: generated columns, full-text search
/// (a virtual table and its shadow tables), WITHOUT ROWID, columns that
/// hide the rowid, the smallest rowid, AUTOINCREMENT, and text holding
/// "\r\n".
const AWKWARD: &str = "
    CREATE TABLE g (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL,
                    c TEXT GENERATED ALWAYS AS (a || 'x') STORED);
    INSERT INTO g (a) VALUES (1), (2);
    CREATE VIRTUAL TABLE ft USING fts5(body);
    INSERT INTO ft VALUES ('hello world'), ('goodbye moon');
    CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
    INSERT INTO w VALUES ('a', 1), ('b', 2);
    CREATE TABLE r (rowid TEXT, _rowid_ TEXT, x);
    INSERT INTO r VALUES ('one', 'two', 3), ('three', 'four', 5);
    CREATE TABLE m (x);
    INSERT INTO m (rowid, x) VALUES (-9223372036854775808, 'min'), (9223372036854775807, 'max');
    CREATE TABLE crlf (t TEXT);
    INSERT INTO crlf VALUES ('a' || char(13) || char(10) || 'b''c');
    CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, v);
    INSERT INTO seq (v) VALUES (1), (2);
";

#[test]
fn the_dump_rebuilds_awkward_tables() {
    let scratch = Scratch::new();
    let source = scratch.file("awkward.db");
    sqlite3(&source, AWKWARD);
    ok(&scratch.vfs(&["import", source.to_str().unwrap(), "odd"]));
    let dump = ok(&scratch.vfs(&["dump", "odd"]));

    let rebuilt = scratch.file("rebuilt.db");
    let mut load = Command::new("sqlite3");
    load.arg(&rebuilt);
    let out = run_with_stdin(load, &dump);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        stderr(&out)
    );
    assert_eq!(sqlite3(&rebuilt, ".dump"), sqlite3(&source, ".dump"));
    assert_eq!(
        sqlite3(&rebuilt, "SELECT body FROM ft WHERE ft MATCH 'moon'"),
        "goodbye moon\n"
    );

    // Piped into a shell that writes (another directory), the "\r\n" stays.
    let other = Scratch::new();
    let plain: String = dump
        .split_inclusive('\n')
        .filter(|line| !line.contains("writable_schema") && !line.contains("sqlite_schema"))
        .collect();
    ok(&other.vfs_with_stdin(&["shell", "copy", "--write"], &plain));
    let csv = ok(&other.vfs(&["sql", "copy", "SELECT hex(t) FROM crlf", "--csv"]));
    assert_eq!(csv, "hex(t)\n610D0A622763\n");
}

/// `vfs dump … | head -1`: the reader goes away after one line, and the
/// command ends quietly with status 0 instead of a panic.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    let scratch = Scratch::new();
    let source = scratch.file("source.db");
    source_database(&source);
    ok(&scratch.vfs(&["import", source.to_str().unwrap(), "tenant"]));
    let mut child = vfs_command(scratch.dir.path())
        .arg("--data-dir")
        .arg(scratch.data())
        .args(["dump", "tenant"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "PRAGMA foreign_keys=OFF;\n");
    // The dump is far larger than a pipe's buffer; the read end is closed.
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn the_shell_on_a_terminal() {
    let scratch = Scratch::new();
    let source = scratch.file("source.db");
    source_database(&source);
    ok(&scratch.vfs(&["import", source.to_str().unwrap(), "tenant"]));

    let mut command = vfs_command(scratch.dir.path());
    command
        .env("TERM", "xterm")
        .arg("--data-dir")
        .arg(scratch.data())
        .args(["shell", "tenant"]);
    let mut shell = rexpect::session::spawn_command(command, Some(60_000)).unwrap();
    shell.exp_string("read-only snapshot").unwrap();
    shell.exp_string("vfs> ").unwrap();
    shell.send_line("SELECT count(*) AS people").unwrap();
    shell.exp_string("...> ").unwrap();
    shell.send_line("  FROM person WHERE id <= 42;").unwrap();
    shell.exp_string("people").unwrap();
    shell.exp_string("42").unwrap();
    shell.exp_string("vfs> ").unwrap();
    shell.send_line(".tables").unwrap();
    shell.exp_string("audit  named  person").unwrap();
    shell.exp_string("vfs> ").unwrap();
    shell.send_line(".quit").unwrap();
    shell.exp_eof().unwrap();
    let history = std::fs::read_to_string(scratch.file(".vfs_history")).unwrap();
    assert!(history.contains(".tables"), "{history}");
}

/// A host owns an actor on PostgreSQL and writes without pause; the
/// command line lists, queries, exports, dumps and checks it meanwhile.
/// None of that fences the host.
#[test]
fn reading_a_live_postgresql_actor_never_fences_its_host() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(fresh_database_url()).unwrap();
    let host = runtime
        .block_on(EngineDriver::connect(&url, PoolConfig::default()))
        .unwrap();
    let db = runtime
        .block_on(async {
            let db = host.open_database("live").await?;
            db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                .await?;
            Ok::<_, vfs_pool::Error>(db)
        })
        .unwrap();
    let generation = runtime.block_on(host.storage().generation("live")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = runtime.spawn({
        let db = db.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut written = 0_i64;
            while !stop.load(Ordering::SeqCst) {
                db.execute(
                    "INSERT INTO t (id, v) VALUES (?1, 'x')",
                    &[Value::Integer(written)],
                )
                .await?;
                written += 1;
            }
            Ok::<i64, vfs_pool::Error>(written)
        }
    });

    let scratch = Scratch::new();
    let vfs = |args: &[&str]| {
        let mut command = vfs_command(scratch.dir.path());
        command.arg("--url").arg(&url).args(args);
        run_with_stdin(command, "")
    };
    let listed = ok(&vfs(&["actors", "--json"]));
    assert!(listed.contains("\"live\""), "{listed}");
    let counted = ok(&vfs(&["sql", "live", "SELECT count(*) FROM t", "--csv"]));
    assert!(counted.starts_with("count(*)\n"), "{counted}");
    let exported = scratch.file("live.db");
    ok(&vfs(&["export", "live", exported.to_str().unwrap()]));
    ok(&vfs(&["dump", "live"]));
    ok(&vfs(&["check"]));
    let out = vfs(&["shell", "live"]);
    ok(&out);
    assert!(!stderr(&out).contains("took ownership"), "{}", stderr(&out));

    stop.store(true, Ordering::SeqCst);
    let written = runtime
        .block_on(writer)
        .unwrap()
        .expect("the host's writes kept succeeding");
    assert_eq!(
        runtime.block_on(host.storage().generation("live")).unwrap(),
        generation,
        "never taken over"
    );
    assert_eq!(sqlite3(&exported, "PRAGMA integrity_check"), "ok\n");
    let in_file: i64 = sqlite3(&exported, "SELECT count(*) FROM t")
        .trim()
        .parse()
        .unwrap();
    assert!(in_file <= written, "{in_file} of {written}");

    // A command that writes takes the actor over, and says so.
    let out = vfs(&[
        "sql",
        "live",
        "INSERT INTO t (id, v) VALUES (-1, 'operator')",
    ]);
    ok(&out);
    assert!(stderr(&out).contains("took ownership"), "{}", stderr(&out));
    let err = runtime
        .block_on(db.execute("INSERT INTO t (id, v) VALUES (-2, 'host')", &[]))
        .unwrap_err();
    assert!(err.is_fenced() || err.is_poisoned(), "{err}");
    // It gave the lease back before it exited: the host reopens at once.
    let released: bool = runtime
        .block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT lease_until IS NULL FROM vfs_actors WHERE actor_id = 'live'",
                    &[],
                )
                .await?;
            Ok::<bool, tokio_postgres::Error>(row.get(0))
        })
        .unwrap();
    assert!(released, "the command line's lease is still held");
    runtime.block_on(host.shutdown());
}
