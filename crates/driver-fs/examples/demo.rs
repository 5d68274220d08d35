//! The product working end to end: many actors, each with its own SQLite
//! database, sharing a few WebAssembly instances, stored crash-safe on local
//! disk. Run it with `cargo xtask demo` (`--help` lists the flags).
//!
//! Run it twice on the same data directory: the second run reopens every
//! actor and verifies every row the first run acknowledged before adding more.

// Counts and byte sizes become f64 only to print rates and averages; they
// stay far below 2^52, where the conversion would lose precision.
#![allow(clippy::cast_precision_loss)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use driver_fs::FsDriver;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use vfs_pool::{ActorDriver, Database, PoolConfig, Value};

/// Many actors on the local-disk driver: create, write, read back, verify.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask demo",
    bin_name = "cargo xtask demo",
    about = "Many actors on the local-disk driver: create, write, read back, verify (run twice on one --data-dir to verify a reopen)."
)]
struct Args {
    /// Number of actors, each with its own database.
    #[arg(long, default_value_t = 1000)]
    actors: usize,
    /// Rows each actor writes per run, one transaction per row.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// Where the actors' data lives; reused (and verified) across runs.
    #[arg(long, default_value = "target/demo-data")]
    data_dir: PathBuf,
    /// Actors sharing one WebAssembly instance.
    #[arg(long, default_value_t = 50)]
    per_instance: usize,
    /// Actors driven at the same time (their commits share disk syncs).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Latencies of one kind of call, in microseconds.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn record(&mut self, d: Duration) {
        self.0
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((self.0.len() - 1) as f64 * p).round() as usize;
        Duration::from_micros(self.0[rank])
    }
}

/// What one actor did.
struct ActorReport {
    verified: usize,
    writes: Latencies,
}

fn value_for(actor: &str, id: i64) -> String {
    // 100 characters, derived from the actor and row so a mix-up is caught.
    let mut v = format!("{actor}:{id}:");
    while v.len() < 100 {
        v.push('.');
    }
    v.truncate(100);
    v
}

fn actor_id(i: usize) -> String {
    format!("demo-actor-{i:05}")
}

/// Reopened actors carry the rows of earlier runs: ids 1..=n, in order, with
/// exactly the values written.
async fn verify_existing(db: &Database, actor: &str) -> Result<usize> {
    let rows = db.query("SELECT id, v FROM kv ORDER BY id", &[]).await?;
    for (i, row) in rows.rows.iter().enumerate() {
        let expected_id = i as i64 + 1;
        let expected = [
            Value::Integer(expected_id),
            Value::Text(value_for(actor, expected_id)),
        ];
        ensure!(
            row.as_slice() == expected,
            "actor {actor}: row {expected_id} is {row:?}, expected {expected:?}"
        );
    }
    Ok(rows.rows.len())
}

async fn run_actor(driver: &FsDriver, actor: &str, rows: usize) -> Result<(Database, ActorReport)> {
    let db = driver.open_database(actor).await?;
    db.exec("CREATE TABLE IF NOT EXISTS kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await?;
    let verified = verify_existing(&db, actor).await?;
    let mut report = ActorReport {
        verified,
        writes: Latencies::default(),
    };
    let first = verified as i64 + 1;
    for id in first..first + rows as i64 {
        let started = Instant::now();
        db.execute(
            "INSERT INTO kv (id, v) VALUES (?1, ?2)",
            &[Value::Integer(id), Value::Text(value_for(actor, id))],
        )
        .await?;
        report.writes.record(started.elapsed());
    }
    Ok((db, report))
}

async fn read_back(db: &Database, actor: &str, first: i64, rows: usize) -> Result<Latencies> {
    let mut reads = Latencies::default();
    for id in first..first + rows as i64 {
        let started = Instant::now();
        let got = db
            .query("SELECT v FROM kv WHERE id = ?1", &[Value::Integer(id)])
            .await?;
        reads.record(started.elapsed());
        let expected = vec![vec![Value::Text(value_for(actor, id))]];
        ensure!(
            got.rows == expected,
            "actor {actor}: row {id} read back wrong"
        );
    }
    Ok(reads)
}

/// Resident set size of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>7} [{bar:40}] {pos}/{len} actors {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.actors == 0 || args.per_instance == 0 || args.concurrency == 0 {
        bail!("--actors, --per-instance and --concurrency must be at least 1");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    println!(
        "demo: {} actors x {} rows, {} actors per instance, data in {}",
        args.actors,
        args.rows,
        args.per_instance,
        data_dir.display()
    );

    let rss_before = rss_kib();
    let driver = Arc::new(
        FsDriver::open(
            &data_dir,
            PoolConfig {
                actors_per_instance: args.per_instance,
                ..PoolConfig::default()
            },
        )
        .await
        .with_context(|| format!("opening the data dir {}", data_dir.display()))?,
    );

    // Phase 1: open (and verify earlier runs), then write.
    let writing = bar(args.actors, "write");
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.actors);
    for i in 0..args.actors {
        let driver = Arc::clone(&driver);
        let limit = Arc::clone(&limit);
        let writing = writing.clone();
        let rows = args.rows;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let actor = actor_id(i);
            let result = run_actor(&driver, &actor, rows).await;
            writing.inc(1);
            result.with_context(|| format!("actor {actor}"))
        }));
    }
    let mut dbs = Vec::with_capacity(args.actors);
    let mut write_lat = Latencies::default();
    let mut verified_rows = 0;
    for task in tasks {
        let (db, report) = task.await??;
        verified_rows += report.verified;
        write_lat.0.extend(report.writes.0);
        dbs.push((db, report.verified));
    }
    let write_elapsed = started.elapsed();
    writing.finish();

    // Phase 2: point reads of every row just written.
    let reading = bar(args.actors, "read");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.actors);
    for (i, (db, verified)) in dbs.iter().enumerate() {
        let db = db.clone();
        let limit = Arc::clone(&limit);
        let reading = reading.clone();
        let first = *verified as i64 + 1;
        let rows = args.rows;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let actor = actor_id(i);
            let result = read_back(&db, &actor, first, rows).await;
            reading.inc(1);
            result.with_context(|| format!("actor {actor}"))
        }));
    }
    let mut read_lat = Latencies::default();
    for task in tasks {
        read_lat.0.extend(task.await??.0);
    }
    let read_elapsed = started.elapsed();
    reading.finish();

    // Every database is still open: this is the memory the actors cost.
    let rss_after = rss_kib();
    let instances = driver.pool().instance_count();
    let writes = write_lat.0.len() as f64;
    let reads = read_lat.0.len() as f64;
    driver.shutdown().await;
    drop(dbs);

    let rss_per_actor = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!("{:.1} KiB", a.saturating_sub(b) as f64 / args.actors as f64),
        _ => "n/a (no /proc)".to_owned(),
    };
    let rows: Vec<(&str, String)> = vec![
        ("actors", args.actors.to_string()),
        ("instances", instances.to_string()),
        ("rows verified from earlier runs", verified_rows.to_string()),
        ("RSS per actor (all open)", rss_per_actor),
        (
            "write transactions/s",
            format!("{:.0}", writes / write_elapsed.as_secs_f64()),
        ),
        (
            "write latency p50 / p99",
            format!(
                "{:.2?} / {:.2?}",
                write_lat.percentile(0.50),
                write_lat.percentile(0.99)
            ),
        ),
        (
            "point reads/s",
            format!("{:.0}", reads / read_elapsed.as_secs_f64()),
        ),
        (
            "read latency p50 / p99",
            format!(
                "{:.2?} / {:.2?}",
                read_lat.percentile(0.50),
                read_lat.percentile(0.99)
            ),
        ),
        ("data on disk", human_bytes(dir_size(&data_dir))),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!();
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
    println!("\nRun again with the same --data-dir to reopen and verify every row.");
    Ok(())
}
