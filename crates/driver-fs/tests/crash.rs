//! Crash safety of the local-disk driver against a real `SIGKILL`.
//!
//! This binary has its own `main` (no libtest harness) because it plays
//! three roles, chosen by the `DRIVER_FS_CRASH_ROLE` environment variable:
//!
//! - unset: the parent, which runs the checks below;
//! - `writer`: a child that writes rows in transactions from several actors
//!   at once (so commits share durable transactions) and prints each
//!   acknowledged id to stdout, flushed, only after its commit returned;
//! - `hold`: a child that holds the data file open until its stdin closes.
//!
//! The parent kills the writer with SIGKILL after reading a random number of
//! acknowledged lines (seeded: `DRIVER_FS_CRASH_SEED`), reopens the data
//! directory and checks that `PRAGMA integrity_check` is ok, that every
//! acknowledged id is present, that ids have no gaps (each transaction is
//! all or nothing), and that a counter updated in the same transactions
//! matches the row count. 20 rounds by default, `DRIVER_FS_CRASH_ROUNDS`
//! for more. It also checks that a data file held by another process is
//! refused with a clear error.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::config;
use driver_fs::{Error, FsDriver, FsStorage};
use vfs_pool::testing::{integrity, scalar};
use vfs_pool::{ActorDriver, Value};

const ROLE: &str = "DRIVER_FS_CRASH_ROLE";
const DIR: &str = "DRIVER_FS_CRASH_DIR";
const ACTORS: [&str; 3] = ["crash-a", "crash-b", "crash/../c"];

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("writer") => writer(&dir_from_env()),
        Ok("hold") => hold(&dir_from_env()),
        Ok(other) => {
            eprintln!("unknown {ROLE}: {other}");
            std::process::exit(2);
        }
        Err(_) => {
            run(
                "a data file held by another process is refused",
                lock_held_by_another_process,
            );
            run("acknowledged commits survive SIGKILL", kill_rounds);
        }
    }
}

fn run(name: &str, test: fn()) {
    eprint!("test {name} ... ");
    test();
    eprintln!("ok");
}

fn dir_from_env() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR).expect("the parent sets the data dir"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn spawn_child(role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

// ----------------------------------------------------------------- children

/// Holds the data file open until stdin is closed.
fn hold(dir: &Path) {
    let storage = FsStorage::open(dir).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    // Blocks until the parent closes our stdin.
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    drop(storage);
}

/// Writes forever (until killed); prints `actor id` for each id whose
/// transaction was acknowledged.
fn writer(dir: &Path) {
    runtime().block_on(async {
        // One actor per instance: each has its own worker thread, so their
        // commits are in flight together and share transactions.
        let driver = FsDriver::open(dir, config(1)).await.unwrap();
        let mut tasks = Vec::new();
        for (n, actor) in ACTORS.into_iter().enumerate() {
            let db = driver.open_database(actor).await.unwrap();
            tasks.push(tokio::spawn(async move {
                db.exec(
                    "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
                     CREATE TABLE IF NOT EXISTS c (n INTEGER NOT NULL);
                     INSERT INTO c SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM c);",
                )
                .await
                .unwrap();
                let mut next = scalar(&db, "SELECT coalesce(max(id), 0) + 1 FROM t").await;
                let mut rng = Rng::new(next as u64 * 7919 + n as u64);
                loop {
                    // Mostly small transactions, sometimes many rows at once.
                    let rows = if rng.below(8) == 0 {
                        1 + rng.below(40) as i64
                    } else {
                        1
                    };
                    db.exec("BEGIN").await.unwrap();
                    for id in next..next + rows {
                        let pad = vec![id as u8; 100 + rng.below(9000) as usize];
                        db.execute(
                            "INSERT INTO t (id, pad) VALUES (?1, ?2)",
                            &[Value::Integer(id), Value::Blob(pad)],
                        )
                        .await
                        .unwrap();
                    }
                    db.execute("UPDATE c SET n = n + ?1", &[Value::Integer(rows)])
                        .await
                        .unwrap();
                    db.exec("COMMIT").await.unwrap();
                    let mut out = std::io::stdout().lock();
                    for id in next..next + rows {
                        // The parent is gone when stdout breaks: stop.
                        if writeln!(out, "{actor} {id}").is_err() {
                            return;
                        }
                    }
                    if out.flush().is_err() {
                        return;
                    }
                    next += rows;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

// ------------------------------------------------------------------- parent

fn lock_held_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_child("hold", dir.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");

    let err = FsStorage::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    runtime().block_on(async {
        let err = FsDriver::open(dir.path(), config(50)).await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
    });

    // Once the holder exits, the file opens.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    FsStorage::open(dir.path()).unwrap();
}

fn kill_rounds() {
    let rounds: u32 = env_number("DRIVER_FS_CRASH_ROUNDS", 20);
    let seed: u64 = env_number("DRIVER_FS_CRASH_SEED", 0x5eed_cafe);
    eprint!("({rounds} rounds, seed {seed:#x}) ");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let runtime = runtime();
    for round in 0..rounds {
        let mut child = spawn_child("writer", dir.path());
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let target = 1 + rng.below(80);
        for _ in 0..target {
            if !read_ack(&mut lines, &mut acked) {
                let status = child.wait().unwrap();
                panic!("round {round}: the writer stopped early ({status})");
            }
        }
        child.kill().unwrap();
        // Lines already printed were acknowledged too.
        while read_ack(&mut lines, &mut acked) {}
        child.wait().unwrap();

        runtime.block_on(verify(dir.path(), &acked, round));
    }
    let total: usize = acked.values().map(BTreeSet::len).sum();
    eprint!("({total} acknowledged ids verified) ");
    assert!(total >= rounds as usize);
}

/// Reads one acknowledgement; false at end of output.
fn read_ack(
    lines: &mut BufReader<ChildStdout>,
    acked: &mut BTreeMap<String, BTreeSet<i64>>,
) -> bool {
    let mut line = String::new();
    if lines.read_line(&mut line).unwrap() == 0 {
        return false;
    }
    // A line cut by the kill has no newline: it was never fully printed.
    let Some(line) = line.strip_suffix('\n') else {
        return false;
    };
    let (actor, id) = line.rsplit_once(' ').expect("`actor id` lines");
    acked
        .entry(actor.to_owned())
        .or_default()
        .insert(id.parse().unwrap());
    true
}

async fn verify(dir: &Path, acked: &BTreeMap<String, BTreeSet<i64>>, round: u32) {
    let driver = FsDriver::open(dir, config(50)).await.unwrap();
    for actor in ACTORS {
        let db = driver.open_database(actor).await.unwrap();
        assert_eq!(integrity(&db).await, "ok", "round {round}, {actor}");
        let exists = scalar(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name IN ('t', 'c')",
        )
        .await;
        let Some(want) = acked.get(actor) else {
            // Killed before this actor's first commit was acknowledged.
            continue;
        };
        assert_eq!(exists, 2, "round {round}, {actor}: tables lost");
        let count = scalar(&db, "SELECT count(*) FROM t").await;
        let max = scalar(&db, "SELECT coalesce(max(id), 0) FROM t").await;
        let counter = scalar(&db, "SELECT n FROM c").await;
        assert_eq!(count, max, "round {round}, {actor}: ids have gaps");
        assert_eq!(counter, count, "round {round}, {actor}: counter disagrees");
        let highest = *want.last().unwrap();
        assert!(
            max >= highest,
            "round {round}, {actor}: acknowledged id {highest} lost (max {max})"
        );
        // Ids are 1..=max without gaps, so every acknowledged id (all at
        // most `highest`) is present. (Acknowledgements themselves may have
        // gaps: a commit that landed just before a kill was never printed.)
        assert!(want.iter().all(|id| (1..=max).contains(id)));
        let wrong_pads = scalar(
            &db,
            "SELECT count(*) FROM t WHERE length(pad) < 100 OR substr(pad, 1, 1) != unhex(printf('%02x', id % 256))",
        )
        .await;
        assert_eq!(wrong_pads, 0, "round {round}, {actor}: damaged rows");
    }
    driver.shutdown().await;
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// A small seeded generator (splitmix64): reproducible kill points.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
