//! `cargo xtask bench`: the numbers we stand behind, each next to a baseline
//! measured in the same process, so every figure reads as a ratio.
//!
//! Every scenario runs in a child process of its own (the parent re-executes
//! this binary with `--scenario NAME`), so one scenario's memory never shows
//! up in another's RSS figures. `--json` prints one JSON object per scenario
//! (and backend) per line, with stable field names.
//!
//! It is a crate of its own (never published) so that the baselines it
//! compiles (rusqlite) and the drivers it compares stay out of the library
//! crates' dependency graphs.

#![forbid(unsafe_code)]
// Counts and byte sizes become f64 only to print rates and averages; they
// stay far below 2^52, where the conversion would lose precision.
#![allow(clippy::cast_precision_loss)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use serde_json::{Map, Value as Json, json};
use vfs_pool::{
    ActorDriver, ActorStorage, CountingKv, Database, FaultyKv, KvStore, Lookaside, MemoryKv,
    PoolConfig, SqliteVfsPool, Value,
};
use vfs_wasm::{Instance, InstanceConfig, ModuleConfig, SqliteModule};

const SCENARIOS: &[&str] = &[
    "pool_workload",
    "large_txn",
    "cold_open",
    "instantiate",
    "density",
    "stall",
    "engine_commits",
];

/// Benchmarks of the SQLite VFS pool, each with its baseline.
#[derive(Debug, Parser, Clone)]
#[command(
    name = "cargo xtask bench",
    bin_name = "cargo xtask bench",
    about = "Benchmarks of the SQLite VFS pool, each scenario next to a baseline measured in the same run."
)]
struct Args {
    /// Print one JSON object per scenario per line instead of tables.
    #[arg(long)]
    json: bool,
    /// Run only these scenarios (repeatable): pool_workload, large_txn,
    /// cold_open, instantiate, density, stall, engine_commits.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// pool_workload: number of actors.
    #[arg(long, default_value_t = 1000)]
    actors: usize,
    /// pool_workload: rows each actor writes and reads.
    #[arg(long, default_value_t = 100)]
    rows: usize,
    /// Actors per instance.
    #[arg(long, default_value_t = 50)]
    per_instance: usize,
    /// density: actors open at once (100000 for the one-process scale run
    /// BENCHMARKS.md records; not part of CI).
    #[arg(long, default_value_t = 10_000)]
    density_actors: usize,
    /// pool_workload, density, engine_commits: SQLite lookaside slots (of
    /// 128 bytes) per actor's connection; 0 turns lookaside off. Default:
    /// `PoolConfig`'s. `pool_workload` also runs its phases once with the
    /// other setting.
    #[arg(long, value_name = "SLOTS")]
    lookaside: Option<u32>,
    /// engine_commits: actors committing concurrently (on each backend).
    #[arg(long, default_value_t = 1000)]
    commit_actors: usize,
    /// PostgreSQL URL for the engine backend; without it a throwaway server
    /// is started from the machine's PostgreSQL binaries (or the engine rows
    /// are skipped when there are none).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Internal: this process is the child running one scenario.
    #[arg(long, hide = true)]
    child: bool,
    /// Internal: this child runs only `density`'s probe of bare instances
    /// (a fresh process, so the heap it measures is new, not reused).
    #[arg(long, hide = true)]
    bare_probe: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    for s in &args.scenarios {
        ensure!(
            SCENARIOS.contains(&s.as_str()),
            "unknown scenario {s:?}; known: {SCENARIOS:?}"
        );
    }
    if args.child && args.bare_probe {
        let probe = bare_probe(&scenario_config(&args), BARE_INSTANCES, args.per_instance)?;
        println!("{}", Json::Object(probe));
        return Ok(());
    }
    if args.child {
        let name = args.scenarios.first().context("child needs --scenario")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        for record in runtime.block_on(run_scenario(name, &args))? {
            println!("{}", Json::Object(record));
        }
        return Ok(());
    }
    let chosen: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        args.scenarios.iter().map(String::as_str).collect()
    };
    let exe = std::env::current_exe()?;
    for name in chosen {
        if !args.json {
            eprintln!("running {name}…");
        }
        // The child's own `--scenario` list must be just this one.
        let filtered: Vec<std::ffi::OsString> = std::env::args_os()
            .skip(1)
            .scan(false, |skip_next, a| {
                let keep = !*skip_next && a != "--scenario";
                *skip_next = a == "--scenario";
                Some(keep.then_some(a))
            })
            .flatten()
            .collect();
        let mut child = Command::new(&exe);
        child.args(filtered).args(["--child", "--scenario", name]);
        let output = child
            .output()
            .with_context(|| format!("running scenario {name}"))?;
        if !output.status.success() {
            bail!(
                "scenario {name} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let record: Map<String, Json> =
                serde_json::from_str(line).with_context(|| format!("scenario output {line:?}"))?;
            if args.json {
                println!("{line}");
            } else {
                print_table(&record);
            }
        }
    }
    Ok(())
}

fn print_table(record: &Map<String, Json>) {
    let title = record
        .get("scenario")
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_owned();
    let backend = record.get("backend").and_then(Json::as_str);
    println!(
        "\n{title}{}",
        backend.map(|b| format!(" ({b})")).unwrap_or_default()
    );
    let width = record.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in record {
        if key == "scenario" || key == "backend" {
            continue;
        }
        let shown = match value {
            Json::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
            other => other.to_string(),
        };
        println!("  {key:<width$}  {shown}");
    }
}

async fn run_scenario(name: &str, args: &Args) -> Result<Vec<Map<String, Json>>> {
    match name {
        "pool_workload" => pool_workload(args).await.map(|r| vec![r]),
        "large_txn" => large_txn(args).await,
        "cold_open" => cold_open(args).await,
        "instantiate" => instantiate().await.map(|r| vec![r]),
        "density" => density(args).await.map(|r| vec![r]),
        "stall" => stall().await.map(|r| vec![r]),
        "engine_commits" => engine_commits(args).await,
        other => bail!("unknown scenario {other}"),
    }
}

fn record(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------- helpers

/// Resident set size of this process in KiB (Linux `/proc`).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn text100(actor: usize, row: usize) -> String {
    let mut v = format!("actor-{actor}-row-{row}-");
    while v.len() < 100 {
        v.push('x');
    }
    v.truncate(100);
    v
}

fn per_s(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((samples.len() - 1) as f64 * p).round() as usize;
    ms(samples[rank])
}

/// CPU time (user + system) this process has used so far: all its threads,
/// running and ended, from `/proc/self/stat` (the crate forbids the
/// `unsafe` a `getrusage` call needs). The kernel reports it in clock ticks
/// (USER_HZ, 100 per second on Linux), so a difference of two readings is
/// exact to about 10 ms: time phases that use a second or more of CPU.
fn cpu_time() -> Result<Duration> {
    const TICKS_PER_S: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // field 3 comes right after its closing one.
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no command name in /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("/proc/self/stat has no field {n}"))?
            .parse()
            .with_context(|| format!("/proc/self/stat field {n}"))
    };
    // Field 14 is utime, field 15 stime.
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_S))
}

/// CPU microseconds per operation between two [`cpu_time`] readings.
fn cpu_us_per(count: usize, before: Duration, after: Duration) -> f64 {
    after.saturating_sub(before).as_secs_f64() * 1e6 / count.max(1) as f64
}

fn config(per_instance: usize) -> PoolConfig {
    PoolConfig {
        actors_per_instance: per_instance,
        // Memory figures must not depend on how long a scenario ran: a
        // phase past 30 s would otherwise see early actors' caches freed.
        release_memory_after: None,
        ..PoolConfig::default()
    }
}

/// [`config`] for the scenarios that take `--per-instance` and
/// `--lookaside`.
fn scenario_config(args: &Args) -> PoolConfig {
    let default = config(args.per_instance);
    PoolConfig {
        lookaside: match args.lookaside {
            None => default.lookaside,
            Some(0) => None,
            Some(slots) => Some(Lookaside {
                slot_size: LOOKASIDE_SLOT_BYTES,
                slots,
            }),
        },
        ..default
    }
}

/// The slot size `--lookaside` gives (SQLite's usual small-slot size).
const LOOKASIDE_SLOT_BYTES: u32 = 128;

/// The same configuration with lookaside switched: off if it is on, else
/// SQLite's usual 64 slots of 128 bytes.
fn other_lookaside(config: &PoolConfig) -> PoolConfig {
    PoolConfig {
        lookaside: match config.lookaside {
            Some(_) => None,
            None => Some(Lookaside {
                slot_size: LOOKASIDE_SLOT_BYTES,
                slots: 64,
            }),
        },
        ..config.clone()
    }
}

/// Lookaside bytes per connection under `config`.
fn lookaside_bytes(config: &PoolConfig) -> u32 {
    config.lookaside.map_or(0, |l| l.slot_size * l.slots)
}

/// The engine settings the pool gives each of its instances for `config`
/// (a copy of the crate-private `PoolConfig::instance_config`): the same
/// limits, and each database's memory reserve cut so that a full
/// instance's reserves take at most half its memory.
fn instance_config(config: &PoolConfig) -> InstanceConfig {
    let engine = InstanceConfig::default();
    let fair = config.memory_limit_bytes / 2 / config.actors_per_instance.max(1) as u64;
    InstanceConfig {
        statement_timeout: config.statement_timeout,
        memory_limit_bytes: config.memory_limit_bytes,
        cache_size_kib: config.cache_size_kib,
        tenant_memory_limit_bytes: config.tenant_memory_limit_bytes,
        tenant_memory_reserve_bytes: engine
            .tenant_memory_reserve_bytes
            .min(fair)
            .min(config.tenant_memory_limit_bytes),
        max_result_bytes: config.max_result_bytes,
        store_timeout: config.store_timeout,
        lookaside: config.lookaside,
        ..engine
    }
}

const CREATE: &str = "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL)";
const INSERT: &str = "INSERT INTO kv (id, v) VALUES (?1, ?2)";
const SELECT: &str = "SELECT v FROM kv WHERE id = ?1";

async fn insert_rows(
    db: &Database,
    actor: usize,
    ids: std::ops::RangeInclusive<usize>,
) -> Result<()> {
    for id in ids {
        db.execute(
            INSERT,
            &[Value::Integer(id as i64), Value::Text(text100(actor, id))],
        )
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- scenarios

/// Many actors on in-memory stores: open, write, read; memory per actor.
/// Baselines: the same statements on the same instances without the pool
/// (`floor_*`: wasm SQLite called directly on one thread), and on native
/// SQLite.
async fn pool_workload(args: &Args) -> Result<Map<String, Json>> {
    let (actors, rows) = (args.actors, args.rows);
    let rss_before = rss_kb();
    let pool_config = scenario_config(args);
    let pool = SqliteVfsPool::new(pool_config.clone())?;
    // Compile (or load) the module before timing opens.
    pool.acquire("warm-up").await?.release().await;
    // What the actors cost, without the process's one-time costs (the
    // compiled module, the runtime, the first instance's creation).
    let rss_warm = rss_kb();

    let started = Instant::now();
    let opened = open_actors(&pool, actors).await?;
    let open_ms_per_actor = ms(started.elapsed()) / actors as f64;
    let open_steps = [
        opened.per_actor(opened.acquire),
        opened.per_actor(opened.open),
        opened.per_actor(opened.create),
    ];
    let Opened { dbs, stores, .. } = opened;

    // RSS and the stores' bytes, taken together after the reads.
    let store_bytes = std::sync::atomic::AtomicUsize::new(0);
    let inline = timed_phases(&dbs, rows, || {
        let rss = rss_kb();
        store_bytes.store(
            stores.iter().map(|s| stored_bytes(s)).sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
        rss
    })
    .await?;
    let rss_after = inline.rss_after_reads;
    let store_kb_per_actor = store_bytes.into_inner() as f64 / 1024.0 / actors as f64;
    drop(stores);
    let instances = pool.instance_count();
    pool.shutdown().await;
    drop(dbs);

    // The same phases with every call taking the hop to its instance's
    // thread (inline calls off), the way every call ran before inline
    // execution: the before-and-after of that change, in one run.
    let hop_pool = SqliteVfsPool::new(PoolConfig {
        max_inline_calls: 0,
        ..pool_config.clone()
    })?;
    let dbs = open_actors(&hop_pool, actors).await?.dbs;
    let hop = timed_phases(&dbs, rows, || 0).await?;
    hop_pool.shutdown().await;
    drop(dbs);

    // The same phases with SQLite's lookaside switched (off if the
    // configuration has it, on if not): what it buys in speed. Its memory
    // is `density`'s to measure (`--lookaside`), in a process of its own.
    let other = other_lookaside(&pool_config);
    let lookaside_pool = SqliteVfsPool::new(other.clone())?;
    let started = Instant::now();
    let dbs = open_actors(&lookaside_pool, actors).await?.dbs;
    let lookaside_open_ms_per_actor = ms(started.elapsed()) / actors as f64;
    let lookaside = timed_phases(&dbs, rows, || 0).await?;
    lookaside_pool.shutdown().await;
    drop(dbs);

    let floor =
        tokio::task::spawn_blocking(move || floor_workload(&pool_config, actors, rows)).await??;

    let (native_write_tx_per_s, native_point_reads_per_s) =
        tokio::task::spawn_blocking(move || native_workload(actors, rows)).await??;

    Ok(record(json!({
        "scenario": "pool_workload",
        "actors": actors,
        "rows": rows,
        "per_instance": args.per_instance,
        "instances": instances,
        "lookaside_bytes_per_actor": lookaside_bytes(&scenario_config(args)),
        "rss_delta_kb_per_actor": rss_after.saturating_sub(rss_before) as f64 / actors as f64,
        "rss_actors_kb_per_actor": rss_after.saturating_sub(rss_warm) as f64 / actors as f64,
        "rss_actors_without_store_kb_per_actor":
            rss_after.saturating_sub(rss_warm) as f64 / actors as f64 - store_kb_per_actor,
        "store_pages_kb_per_actor": store_kb_per_actor,
        "open_ms_per_actor": open_ms_per_actor,
        "open_acquire_ms_per_actor": open_steps[0],
        "open_open_ms_per_actor": open_steps[1],
        "open_create_ms_per_actor": open_steps[2],
        "floor_open_ms_per_actor": floor.open_ms_per_actor,
        "floor_open_open_ms_per_actor": floor.open_open_ms_per_actor,
        "write_tx_per_s": inline.write_tx_per_s,
        "point_reads_per_s": inline.point_reads_per_s,
        "concurrent_write_tx_per_s": inline.concurrent_write_tx_per_s,
        "write_cpu_us_per_tx": inline.write_cpu_us_per_tx,
        "concurrent_write_cpu_us_per_tx": inline.concurrent_write_cpu_us_per_tx,
        "hop_write_tx_per_s": hop.write_tx_per_s,
        "hop_point_reads_per_s": hop.point_reads_per_s,
        "hop_concurrent_write_tx_per_s": hop.concurrent_write_tx_per_s,
        "hop_write_cpu_us_per_tx": hop.write_cpu_us_per_tx,
        "hop_concurrent_write_cpu_us_per_tx": hop.concurrent_write_cpu_us_per_tx,
        "lookaside_alt_bytes_per_actor": lookaside_bytes(&other),
        "lookaside_alt_open_ms_per_actor": lookaside_open_ms_per_actor,
        "lookaside_alt_write_tx_per_s": lookaside.write_tx_per_s,
        "lookaside_alt_point_reads_per_s": lookaside.point_reads_per_s,
        "lookaside_alt_write_cpu_us_per_tx": lookaside.write_cpu_us_per_tx,
        "lookaside_alt_concurrent_write_tx_per_s": lookaside.concurrent_write_tx_per_s,
        "floor_instances": floor.instances,
        "floor_write_tx_per_s": floor.write_tx_per_s,
        "floor_point_reads_per_s": floor.point_reads_per_s,
        "floor_write_cpu_us_per_tx": floor.write_cpu_us_per_tx,
        "pool_over_floor_write": floor.write_tx_per_s / inline.write_tx_per_s,
        "pool_over_floor_read": floor.point_reads_per_s / inline.point_reads_per_s,
        "native_write_tx_per_s": native_write_tx_per_s,
        "native_point_reads_per_s": native_point_reads_per_s,
    })))
}

/// Acquires `actor-0` … `actor-{actors - 1}`, opens each on a fresh
/// `MemoryKv` and creates the table; returns the databases, their stores
/// and the time the three steps took.
async fn open_actors(pool: &SqliteVfsPool, actors: usize) -> Result<Opened> {
    let mut opened = Opened {
        dbs: Vec::with_capacity(actors),
        stores: Vec::with_capacity(actors),
        acquire: Duration::ZERO,
        open: Duration::ZERO,
        create: Duration::ZERO,
    };
    for a in 0..actors {
        let started = Instant::now();
        let handle = pool.acquire(&format!("actor-{a}")).await?;
        let acquired = Instant::now();
        let store = Arc::new(MemoryKv::new());
        let db = handle.open(Arc::clone(&store) as Arc<dyn KvStore>).await?;
        let open = Instant::now();
        db.exec(CREATE).await?;
        opened.create += open.elapsed();
        opened.open += open - acquired;
        opened.acquire += acquired - started;
        opened.dbs.push(db);
        opened.stores.push(store);
    }
    Ok(opened)
}

/// What [`open_actors`] opened, and how long each step took in all.
struct Opened {
    dbs: Vec<Database>,
    stores: Vec<Arc<MemoryKv>>,
    acquire: Duration,
    open: Duration,
    create: Duration,
}

impl Opened {
    /// Milliseconds per actor of `step`.
    fn per_actor(&self, step: Duration) -> f64 {
        ms(step) / self.dbs.len().max(1) as f64
    }
}

/// What [`timed_phases`] measured.
struct Phases {
    write_tx_per_s: f64,
    write_cpu_us_per_tx: f64,
    point_reads_per_s: f64,
    /// `rss()` taken after the reads.
    rss_after_reads: u64,
    concurrent_write_tx_per_s: f64,
    concurrent_write_cpu_us_per_tx: f64,
}

/// The timed part of `pool_workload` on open databases holding the table
/// and no rows: `rows` single-row write transactions per actor, one actor
/// at a time; a point read of each row; then `rows` more write
/// transactions per actor with all actors at once.
async fn timed_phases(dbs: &[Database], rows: usize, rss: impl Fn() -> u64) -> Result<Phases> {
    let actors = dbs.len();
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    for (a, db) in dbs.iter().enumerate() {
        insert_rows(db, a, 1..=rows).await?;
    }
    let write_tx_per_s = per_s(actors * rows, started.elapsed());
    let write_cpu_us_per_tx = cpu_us_per(actors * rows, cpu_before, cpu_time()?);

    let started = Instant::now();
    for (a, db) in dbs.iter().enumerate() {
        for id in 1..=rows {
            let got = db.query(SELECT, &[Value::Integer(id as i64)]).await?;
            ensure!(
                got.rows == vec![vec![Value::Text(text100(a, id))]],
                "row {a}/{id}"
            );
        }
    }
    let point_reads_per_s = per_s(actors * rows, started.elapsed());
    let rss_after_reads = rss();

    let cpu_before = cpu_time()?;
    let started = Instant::now();
    let tasks: Vec<_> = dbs
        .iter()
        .cloned()
        .enumerate()
        .map(|(a, db)| tokio::spawn(async move { insert_rows(&db, a, rows + 1..=2 * rows).await }))
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(Phases {
        write_tx_per_s,
        write_cpu_us_per_tx,
        point_reads_per_s,
        rss_after_reads,
        concurrent_write_tx_per_s: per_s(actors * rows, started.elapsed()),
        concurrent_write_cpu_us_per_tx: cpu_us_per(actors * rows, cpu_before, cpu_time()?),
    })
}

/// What [`floor_workload`] measured.
struct Floor {
    instances: usize,
    /// Opening an actor's database and creating its table.
    open_ms_per_actor: f64,
    /// The open alone.
    open_open_ms_per_actor: f64,
    write_tx_per_s: f64,
    point_reads_per_s: f64,
    write_cpu_us_per_tx: f64,
}

/// The pool part of `pool_workload` without the pool: the same statements
/// on `vfs_wasm` instances called directly on this one thread (no worker
/// threads, no channels, no async), as many instances as the pool used,
/// built from the same module with the same settings, each actor's
/// database on its own `MemoryKv`. The pool's per-call overhead is what
/// separates its figures from these.
fn floor_workload(pool_config: &PoolConfig, actors: usize, rows: usize) -> Result<Floor> {
    let per_instance = pool_config.actors_per_instance;
    let module = SqliteModule::shared(&ModuleConfig {
        cache_dir: pool_config.module_cache_dir.clone(),
    })?;
    let mut instances = (0..actors.div_ceil(per_instance))
        .map(|_| Instance::new(&module, instance_config(pool_config)))
        .collect::<Result<Vec<_>, _>>()?;
    // The pool fills one instance before it starts the next; so does this.
    let mut dbs = Vec::with_capacity(actors);
    let (mut opening, mut creating) = (Duration::ZERO, Duration::ZERO);
    for a in 0..actors {
        let i = a / per_instance;
        let instance = &mut instances[i];
        let started = Instant::now();
        let db = instance.open(&format!("actor-{a}"), Arc::new(MemoryKv::new()))?;
        let opened = Instant::now();
        instance.exec(db, CREATE)?;
        creating += opened.elapsed();
        opening += opened - started;
        dbs.push((i, db));
    }

    let cpu_before = cpu_time()?;
    let started = Instant::now();
    for (a, &(i, db)) in dbs.iter().enumerate() {
        for id in 1..=rows {
            instances[i].execute(
                db,
                INSERT,
                &[Value::Integer(id as i64), Value::Text(text100(a, id))],
            )?;
        }
    }
    let write_tx_per_s = per_s(actors * rows, started.elapsed());
    let write_cpu_us_per_tx = cpu_us_per(actors * rows, cpu_before, cpu_time()?);

    let started = Instant::now();
    for (a, &(i, db)) in dbs.iter().enumerate() {
        for id in 1..=rows {
            let got = instances[i].query(db, SELECT, &[Value::Integer(id as i64)])?;
            ensure!(
                got.rows == vec![vec![Value::Text(text100(a, id))]],
                "floor row {a}/{id}"
            );
        }
    }
    let point_reads_per_s = per_s(actors * rows, started.elapsed());

    for &(i, db) in &dbs {
        instances[i].close(db)?;
    }
    Ok(Floor {
        instances: instances.len(),
        open_ms_per_actor: ms(opening + creating) / actors as f64,
        open_open_ms_per_actor: ms(opening) / actors as f64,
        write_tx_per_s,
        point_reads_per_s,
        write_cpu_us_per_tx,
    })
}

/// The same workload on native SQLite (in-memory databases, one per actor).
fn native_workload(actors: usize, rows: usize) -> Result<(f64, f64)> {
    let mut conns = Vec::with_capacity(actors);
    for _ in 0..actors {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute(CREATE, [])?;
        conns.push(conn);
    }
    let started = Instant::now();
    for (a, conn) in conns.iter().enumerate() {
        let mut insert = conn.prepare_cached(INSERT)?;
        for id in 1..=rows {
            insert.execute(rusqlite::params![id as i64, text100(a, id)])?;
        }
    }
    let writes = per_s(actors * rows, started.elapsed());
    let started = Instant::now();
    for (a, conn) in conns.iter().enumerate() {
        let mut select = conn.prepare_cached(SELECT)?;
        for id in 1..=rows {
            let v: String = select.query_row([id as i64], |r| r.get(0))?;
            ensure!(v == text100(a, id), "native row {a}/{id}");
        }
    }
    Ok((writes, per_s(actors * rows, started.elapsed())))
}

/// A backend for the storage scenarios.
enum Backend {
    Memory,
    Fs(tempfile::TempDir),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Fs(_) => "fs",
        }
    }
}

fn backends() -> Result<Vec<Backend>> {
    Ok(vec![Backend::Memory, Backend::Fs(tempfile::tempdir()?)])
}

/// A store for `actor` on `backend`; for `fs`, the driver is returned too so
/// it stays open as long as the store is used.
async fn store_on(
    backend: &Backend,
    actor: &str,
    memory: &Arc<dyn KvStore>,
) -> Result<(Arc<dyn KvStore>, Option<driver_fs::FsDriver>)> {
    match backend {
        Backend::Memory => Ok((Arc::clone(memory), None)),
        Backend::Fs(dir) => {
            let driver = driver_fs::FsDriver::open(dir.path(), config(50)).await?;
            let store = driver.storage().open_actor(actor).await?;
            Ok((store, Some(driver)))
        }
    }
}

/// One actor inserts 1 MiB, then 10 MiB, each in one transaction.
async fn large_txn(_args: &Args) -> Result<Vec<Map<String, Json>>> {
    let mut out = Vec::new();
    for backend in backends()? {
        let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
        let (store, driver) = store_on(&backend, "large", &memory).await?;
        let counting = Arc::new(CountingKv::new(store));
        let pool = SqliteVfsPool::new(config(50))?;
        let db = pool
            .acquire("large")
            .await?
            .open(Arc::clone(&counting) as Arc<dyn KvStore>)
            .await?;
        db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
            .await?;
        let mut next_id = 1_i64;
        for mib in [1_usize, 10] {
            let rows = mib * 1024; // 1 KiB per row
            counting.reset();
            let started = Instant::now();
            db.exec("BEGIN").await?;
            for _ in 0..rows {
                db.execute(
                    "INSERT INTO blobs (id, b) VALUES (?1, randomblob(1024))",
                    &[Value::Integer(next_id)],
                )
                .await?;
                next_id += 1;
            }
            db.exec("COMMIT").await?;
            let elapsed = started.elapsed();
            let trips = counting.total();
            let native_ms = tokio::task::spawn_blocking(move || native_large(rows)).await??;
            out.push(record(json!({
                "scenario": "large_txn",
                "backend": backend.name(),
                "mib": mib,
                "ms": ms(elapsed),
                "kv_round_trips": trips,
                "native_ms": native_ms,
            })));
        }
        pool.shutdown().await;
        if let Some(driver) = driver {
            driver.shutdown().await;
        }
    }
    Ok(out)
}

fn native_large(rows: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("native.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; PRAGMA synchronous=NORMAL;
         CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
    )?;
    let started = Instant::now();
    conn.execute_batch("BEGIN")?;
    {
        let mut insert =
            conn.prepare_cached("INSERT INTO blobs (id, b) VALUES (?1, randomblob(1024))")?;
        for id in 1..=rows {
            insert.execute([id as i64])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(ms(started.elapsed()))
}

/// Reopen an existing 100-row database in a new pool and run its first query.
async fn cold_open(_args: &Args) -> Result<Vec<Map<String, Json>>> {
    let mut out = Vec::new();
    // Load the module once so the figure is the open, not the compile.
    let warm = SqliteVfsPool::new(config(50))?;
    warm.acquire("warm").await?.release().await;
    warm.shutdown().await;
    for backend in backends()? {
        let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
        {
            let (store, driver) = store_on(&backend, "cold", &memory).await?;
            let pool = SqliteVfsPool::new(config(50))?;
            let db = pool.acquire("cold").await?.open(store).await?;
            db.exec(CREATE).await?;
            insert_rows(&db, 0, 1..=100).await?;
            pool.shutdown().await;
            if let Some(driver) = driver {
                driver.shutdown().await;
            }
        }
        let (store, driver) = store_on(&backend, "cold", &memory).await?;
        let counting = Arc::new(CountingKv::new(store));
        let pool = SqliteVfsPool::new(config(50))?;
        let handle = pool.acquire("cold").await?; // instance creation is `instantiate`'s figure
        let started = Instant::now();
        let db = handle
            .open(Arc::clone(&counting) as Arc<dyn KvStore>)
            .await?;
        let rows = db.query("SELECT count(*) FROM kv", &[]).await?;
        let elapsed = started.elapsed();
        ensure!(
            rows.rows == vec![vec![Value::Integer(100)]],
            "cold open lost rows"
        );
        let trips = counting.total();
        pool.shutdown().await;
        if let Some(driver) = driver {
            driver.shutdown().await;
        }
        let native_us = tokio::task::spawn_blocking(native_cold_open).await??;
        out.push(record(json!({
            "scenario": "cold_open",
            "backend": backend.name(),
            "kv_round_trips": trips,
            "us": elapsed.as_secs_f64() * 1e6,
            "native_us": native_us,
        })));
    }
    Ok(out)
}

fn native_cold_open() -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cold.db");
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute(CREATE, [])?;
        for id in 1..=100 {
            conn.execute(INSERT, rusqlite::params![id, text100(0, id)])?;
        }
    }
    let started = Instant::now();
    let conn = rusqlite::Connection::open(&path)?;
    let n: i64 = conn.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?;
    let elapsed = started.elapsed();
    ensure!(n == 100, "native cold open lost rows");
    Ok(elapsed.as_secs_f64() * 1e6)
}

/// Module compile (cold and from the disk cache), instance creation, and
/// acquiring a seat on an existing instance.
async fn instantiate() -> Result<Map<String, Json>> {
    const N: u32 = 200;
    let cold = SqliteModule::load(&ModuleConfig { cache_dir: None })?;
    ensure!(!cold.loaded_from_cache(), "a cache-less load must compile");
    let cache = tempfile::tempdir()?;
    let cached_config = ModuleConfig {
        cache_dir: Some(cache.path().to_path_buf()),
    };
    SqliteModule::load(&cached_config)?; // fills the cache
    let cached = SqliteModule::load(&cached_config)?;
    ensure!(
        cached.loaded_from_cache(),
        "second load must hit the disk cache"
    );

    let started = Instant::now();
    for _ in 0..N {
        drop(Instance::new(&cached, InstanceConfig::default())?);
    }
    let instantiate_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(N);

    let pool = SqliteVfsPool::new(config(10_000))?;
    pool.acquire("first").await?;
    let started = Instant::now();
    for i in 0..N {
        pool.acquire(&format!("seat-{i}")).await?;
    }
    let acquire_slot_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(N);
    pool.shutdown().await;

    let started = Instant::now();
    for _ in 0..N {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
    }
    let native_open_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(N);

    Ok(record(json!({
        "scenario": "instantiate",
        "compile_cold_ms": ms(cold.load_time()),
        "compile_cached_ms": ms(cached.load_time()),
        "instantiate_us": instantiate_us,
        "acquire_slot_us": acquire_slot_us,
        "native_open_us": native_open_us,
    })))
}

/// Many actors open at once after one write each: memory per actor, and
/// an account of where it goes (see "Where the memory goes" in
/// BENCHMARKS.md).
///
/// The account has three sources:
/// - the process's resident memory by kind, from `/proc/self/smaps`, before
///   and after the actors open ([`Residency`]): guest linear memories,
///   thread stacks, wasmer's coroutine stacks, mapped files and the rest
///   (malloc's heap);
/// - the stores' own copy of the pages: the bytes every actor's `MemoryKv`
///   holds (keys and values);
/// - what the pool does not expose, measured on bare `vfs_wasm::Instance`s
///   built like `floor_workload`'s (same module, same `instance_config()`),
///   with `--per-instance` databases each, in a fresh process of its own
///   ([`bare_probe`]; a heap that memory was freed into would hand it out
///   again and hide the growth); its fields start with `bare_`, and the
///   per-actor figures taken from it say so below.
///
/// The `*_kb_per_actor` parts that add up to `rss_kb_per_actor` are:
/// `guest_resident`, `worker_stack_resident`, `wasm_stack_resident`,
/// `other_stack_resident`, `file_resident`, `store_pages`, `wasmer_heap`,
/// `host_heap` and `unaccounted` (what is left). The `sqlite_*` parts lie
/// inside `guest_resident` (SQLite's heap is in the guest memory), and
/// `guest_committed` is address space made accessible, resident or not.
async fn density(args: &Args) -> Result<Map<String, Json>> {
    let actors = args.density_actors;
    let pool_config = scenario_config(args);
    let res_before = Residency::now()?;
    let rss_before = rss_kb();
    let pool = SqliteVfsPool::new(pool_config.clone())?;
    let mut dbs = Vec::with_capacity(actors);
    let mut stores = Vec::with_capacity(actors);
    let opening = Instant::now();
    for a in 0..actors {
        let store = Arc::new(MemoryKv::new());
        let db = pool
            .acquire(&format!("dense-{a}"))
            .await?
            .open(Arc::clone(&store) as Arc<dyn KvStore>)
            .await?;
        db.exec(CREATE).await?;
        insert_rows(&db, a, 1..=1).await?;
        dbs.push(db);
        stores.push(store);
    }
    // Wall time to open every actor (acquire, open, create and one insert).
    let open_s = opening.elapsed().as_secs_f64();
    let rss_kb_per_actor = rss_kb().saturating_sub(rss_before) as f64 / actors as f64;
    let res = Residency::now()?.minus(&res_before);
    let instances = pool.instance_count();
    let store_bytes: usize = stores.iter().map(|s| stored_bytes(s)).sum();
    drop(stores);
    pool.shutdown().await;
    drop(dbs);

    // Baseline, measured after the pool is gone (its guest memories are
    // unmapped; the allocator may reuse freed heap, which favours the baseline).
    let native_rss_kb_per_actor = tokio::task::spawn_blocking(move || -> Result<f64> {
        let before = rss_kb();
        let mut conns = Vec::with_capacity(actors);
        for a in 0..actors {
            let conn = rusqlite::Connection::open_in_memory()?;
            conn.execute(CREATE, [])?;
            conn.execute(INSERT, rusqlite::params![1, text100(a, 1)])?;
            conns.push(conn);
        }
        Ok(rss_kb().saturating_sub(before) as f64 / actors as f64)
    })
    .await??;

    let (per_instance, lookaside_slots) = (args.per_instance, args.lookaside);
    let bare = tokio::task::spawn_blocking(move || run_bare_probe(per_instance, lookaside_slots))
        .await??;
    let field = |name: &str| bare.get(name).and_then(Json::as_f64).unwrap_or(0.0);

    let per_actor = |kib: u64| kib as f64 / actors as f64;
    let instances_per_actor = instances as f64 / actors as f64;
    let store_pages = store_bytes as f64 / 1024.0 / actors as f64;
    // From the bare probe: wasmer's (and the host's) heap per instance,
    // spread over its actors, and the host's heap per database.
    let wasmer_heap = field("bare_wasmer_heap_kb_per_instance") * instances_per_actor;
    let host_heap = field("bare_host_heap_kb_per_database");
    let sqlite_db = field("bare_sqlite_db_heap_kb");
    let sqlite_instance = field("bare_sqlite_instance_heap_kb_per_instance") * instances_per_actor;
    let (cache, schema, stmt) = (
        field("bare_sqlite_cache_kb"),
        field("bare_sqlite_schema_kb"),
        field("bare_sqlite_stmt_kb"),
    );
    let lookaside = f64::from(lookaside_bytes(&pool_config)) / 1024.0;
    let guest_resident = per_actor(res.guest_resident_kb);
    let accounted = guest_resident
        + per_actor(res.worker_stack_kb)
        + per_actor(res.wasm_stack_kb)
        + per_actor(res.other_stack_kb)
        + per_actor(res.file_kb)
        + store_pages
        + wasmer_heap
        + host_heap;
    let rss_without_store = rss_kb_per_actor - store_pages;

    let mut out = record(json!({
        "scenario": "density",
        "actors": actors,
        "instances": instances,
        "open_s": open_s,
        "rss_kb_per_actor": rss_kb_per_actor,
        "native_rss_kb_per_actor": native_rss_kb_per_actor,
        "ratio_to_native": rss_kb_per_actor / native_rss_kb_per_actor,
        // Like with like: a native connection holds its pages once (its
        // page cache); an actor holds them in its page cache and in the
        // store's copy, which a remote store would not keep in this process.
        "rss_without_store_kb_per_actor": rss_without_store,
        "ratio_to_native_without_store": rss_without_store / native_rss_kb_per_actor,
        // Measured in the pool (smaps, before and after the actors opened).
        "smaps_resident_kb_per_actor": per_actor(res.total_kb()),
        "guest_memories": res.guest_memories,
        "guest_committed_kb_per_actor": per_actor(res.guest_committed_kb),
        "guest_resident_kb_per_actor": guest_resident,
        "worker_threads": res.worker_threads,
        "worker_stack_resident_kb_per_actor": per_actor(res.worker_stack_kb),
        "wasm_stacks": res.wasm_stacks,
        "wasm_stack_resident_kb_per_actor": per_actor(res.wasm_stack_kb),
        "other_stack_resident_kb_per_actor": per_actor(res.other_stack_kb),
        "file_resident_kb_per_actor": per_actor(res.file_kb),
        "heap_resident_kb_per_actor": per_actor(res.heap_kb),
        // The heap, split: the stores' bytes are measured in the pool,
        // wasmer's and the host's per-database state on bare instances;
        // the pool's own bookkeeping is in what is left.
        "store_pages_kb_per_actor": store_pages,
        "wasmer_heap_kb_per_actor": wasmer_heap,
        "host_heap_kb_per_actor": host_heap,
        "heap_unaccounted_kb_per_actor": per_actor(res.heap_kb) - store_pages - wasmer_heap - host_heap,
        // Inside the guest memory, from the bare probe.
        "sqlite_heap_kb_per_actor": sqlite_db + sqlite_instance,
        "sqlite_db_heap_kb_per_actor": sqlite_db,
        "sqlite_cache_kb_per_actor": cache,
        "sqlite_schema_kb_per_actor": schema,
        "sqlite_stmt_kb_per_actor": stmt,
        "sqlite_lookaside_kb_per_actor": lookaside,
        "sqlite_connection_and_spare_cache_kb_per_actor": sqlite_db - cache - schema - stmt - lookaside,
        "sqlite_instance_heap_kb_per_actor": sqlite_instance,
        "guest_outside_sqlite_heap_kb_per_actor": guest_resident - sqlite_db - sqlite_instance,
        "unaccounted_kb_per_actor": rss_kb_per_actor - accounted,
    }));
    out.extend(bare);
    Ok(out)
}

/// Bytes a `MemoryKv` holds: its keys and values (the store's copy of the
/// pages; the map's own nodes are not counted).
fn stored_bytes(store: &MemoryKv) -> usize {
    store
        .snapshot()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum()
}

/// Bare instances the probe builds.
const BARE_INSTANCES: usize = 20;

/// Runs [`bare_probe`] in a fresh child process and returns its fields.
fn run_bare_probe(per_instance: usize, lookaside: Option<u32>) -> Result<Map<String, Json>> {
    let mut probe = Command::new(std::env::current_exe()?);
    probe
        .args(["--child", "--bare-probe", "--scenario", "density"])
        .args(["--per-instance", &per_instance.to_string()]);
    if let Some(slots) = lookaside {
        probe.args(["--lookaside", &slots.to_string()]);
    }
    let output = probe.output().context("running the bare-instance probe")?;
    ensure!(
        output.status.success(),
        "the bare-instance probe failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("the probe printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("probe output {line:?}"))
}

/// `SQLITE_DBSTATUS_CACHE_USED`: page cache bytes in use.
const DBSTATUS_CACHE_USED: i32 = 1;
/// `SQLITE_DBSTATUS_SCHEMA_USED`: bytes of the parsed schema.
const DBSTATUS_SCHEMA_USED: i32 = 2;
/// `SQLITE_DBSTATUS_STMT_USED`: bytes of prepared statements.
const DBSTATUS_STMT_USED: i32 = 3;

/// What the pool does not expose, measured on `count` bare instances built
/// like `floor_workload`'s (same module, same `instance_config()`), each
/// with `per_instance` databases holding what a `density` actor holds (one
/// table, one row, over a `MemoryKv`). Run in a process of its own, on its
/// main thread, after one warm-up instance (module loaded, page 1
/// generated, this thread's wasm stack mapped).
///
/// Fields (KiB, per instance or per database):
/// - `bare_wasmer_heap_kb_per_instance`: heap growth per instance created,
///   before any database opens (wasmer's store, instance, tables, globals
///   and function environments; the host's VFS state);
/// - `bare_guest_{committed,resident}_kb_per_{empty,full}_instance`: the
///   guest memory of an instance before and after its databases open;
/// - `bare_heap_kb_per_database`: heap growth per database opened, its
///   store included; `bare_store_pages_kb_per_database` the store's bytes;
///   `bare_host_heap_kb_per_database` the difference: the host's state of
///   one database (registry entry, open `KvFile`s with the pages they keep
///   after open, which share the `MemoryKv`'s buffers here, VFS maps,
///   statement-cache entries) and the store's map nodes;
/// - `bare_sqlite_db_heap_kb`: guest heap charged to one database
///   (`database_memory_bytes`), and what `sqlite3_db_status` names in it:
///   `bare_sqlite_{cache,schema,stmt}_kb`;
/// - `bare_sqlite_instance_heap_kb_per_instance`: guest heap charged to no
///   database.
fn bare_probe(
    pool_config: &PoolConfig,
    count: usize,
    per_instance: usize,
) -> Result<Map<String, Json>> {
    let module = SqliteModule::shared(&ModuleConfig {
        cache_dir: pool_config.module_cache_dir.clone(),
    })?;
    let mut warm = Instance::new(&module, instance_config(pool_config))?;
    let warm_db = warm.open("warm", Arc::new(MemoryKv::new()))?;
    warm.exec(warm_db, CREATE)?;

    let before = Residency::now()?;
    let mut instances = (0..count)
        .map(|_| Instance::new(&module, instance_config(pool_config)))
        .collect::<Result<Vec<_>, _>>()?;
    let empty = Residency::now()?.minus(&before);

    let mut dbs = Vec::with_capacity(count * per_instance);
    let mut stores = Vec::with_capacity(count * per_instance);
    for (i, instance) in instances.iter_mut().enumerate() {
        for d in 0..per_instance {
            let store = Arc::new(MemoryKv::new());
            let db = instance.open(
                &format!("bare-{i}-{d}"),
                Arc::clone(&store) as Arc<dyn KvStore>,
            )?;
            instance.exec(db, CREATE)?;
            instance.execute(db, INSERT, &[Value::Integer(1), Value::Text(text100(d, 1))])?;
            dbs.push((i, db));
            stores.push(store);
        }
    }
    let full = Residency::now()?.minus(&before);

    let (mut charged, mut cache, mut schema, mut stmt) = (0u64, 0i64, 0i64, 0i64);
    for &(i, db) in &dbs {
        let instance = &mut instances[i];
        charged += instance.database_memory_bytes(db)?;
        cache += instance.database_status(db, DBSTATUS_CACHE_USED)?;
        schema += instance.database_status(db, DBSTATUS_SCHEMA_USED)?;
        stmt += instance.database_status(db, DBSTATUS_STMT_USED)?;
    }
    let mut heap = 0;
    for instance in &mut instances {
        heap += instance.guest_heap_bytes()?;
    }
    let store_bytes: usize = stores.iter().map(|s| stored_bytes(s)).sum();
    let n = count as f64;
    let databases = dbs.len() as f64;
    let per_db_kb = |bytes: f64| bytes / 1024.0 / databases;
    let heap_per_db = full.heap_kb.saturating_sub(empty.heap_kb) as f64 / databases;
    let store_per_db = per_db_kb(store_bytes as f64);
    Ok(record(json!({
        "bare_instances": count,
        "bare_databases_per_instance": per_instance,
        "bare_wasmer_heap_kb_per_instance": empty.heap_kb as f64 / n,
        "bare_guest_committed_kb_per_empty_instance": empty.guest_committed_kb as f64 / n,
        "bare_guest_resident_kb_per_empty_instance": empty.guest_resident_kb as f64 / n,
        "bare_guest_committed_kb_per_full_instance": full.guest_committed_kb as f64 / n,
        "bare_guest_resident_kb_per_full_instance": full.guest_resident_kb as f64 / n,
        "bare_heap_kb_per_database": heap_per_db,
        "bare_store_pages_kb_per_database": store_per_db,
        "bare_host_heap_kb_per_database": heap_per_db - store_per_db,
        "bare_sqlite_db_heap_kb": per_db_kb(charged as f64),
        "bare_sqlite_cache_kb": per_db_kb(cache as f64),
        "bare_sqlite_schema_kb": per_db_kb(schema as f64),
        "bare_sqlite_stmt_kb": per_db_kb(stmt as f64),
        "bare_sqlite_instance_heap_kb_per_instance": heap.saturating_sub(charged) as f64 / 1024.0 / n,
    })))
}

/// This process's resident memory by kind, in KiB, from `/proc/self/smaps`
/// (a mapping's `Rss:` is the memory it has touched and still holds).
///
/// Kinds, by mapping:
/// - guest memory: a read-write anonymous mapping followed at once by an
///   inaccessible one, together at least 4 GiB: wasmer's static memory
///   (the accessible part is what the guest committed, the rest reserved
///   address space). Committed is the read-write size, resident its `Rss`;
/// - thread stacks: the mapping holding a thread's stack pointer (from
///   `/proc/self/task/*/syscall`, which a thread blocked in a system call
///   reports), split into the pool's workers (threads named
///   `vfs-instance-*`) and the others (the main thread's `[stack]`, tokio's);
/// - wasm stacks: wasmer's coroutine stacks, on which guest code runs (a
///   1 MiB read-write mapping right above a guard page), cached per thread
///   that ran guest code;
/// - files: mappings of files (the binary, libraries, the compiled module);
/// - heap: every other anonymous mapping: malloc's heap and arenas, and
///   the small signal stacks.
#[derive(Debug, Default, Clone, Copy)]
struct Residency {
    guest_memories: usize,
    guest_committed_kb: u64,
    guest_resident_kb: u64,
    worker_threads: usize,
    worker_stack_kb: u64,
    other_stack_kb: u64,
    wasm_stacks: usize,
    wasm_stack_kb: u64,
    file_kb: u64,
    heap_kb: u64,
}

/// How the pool names its worker threads (`vfs-instance-ID`, cut to 15
/// bytes in `/proc`).
const WORKER_PREFIX: &str = "vfs-instance";

/// One mapping of `/proc/self/smaps`.
struct Vma {
    start: u64,
    end: u64,
    readable: bool,
    accessible: bool,
    /// A file or a named kernel mapping (`[heap]`, `[stack]`, `[vdso]`).
    path: Option<String>,
    rss_kb: u64,
}

impl Residency {
    fn now() -> Result<Residency> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").context("reading smaps")?;
        let vmas = parse_smaps(&smaps);
        let stacks = thread_stack_pointers();
        let mut r = Residency {
            worker_threads: stacks
                .iter()
                .filter(|(_, name)| name.starts_with(WORKER_PREFIX))
                .count(),
            ..Residency::default()
        };
        for (i, vma) in vmas.iter().enumerate() {
            let next = vmas.get(i + 1);
            let prev = i.checked_sub(1).map(|p| &vmas[p]);
            let stack_of = stacks
                .iter()
                .find(|(sp, _)| (vma.start..vma.end).contains(sp))
                .map(|(_, name)| name.as_str());
            match (&vma.path, stack_of) {
                (_, Some(name)) if name.starts_with(WORKER_PREFIX) => {
                    r.worker_stack_kb += vma.rss_kb;
                }
                (_, Some(_)) => r.other_stack_kb += vma.rss_kb,
                (Some(path), None) if path == "[heap]" => r.heap_kb += vma.rss_kb,
                (Some(path), None) if path == "[stack]" => r.other_stack_kb += vma.rss_kb,
                (Some(_), None) => r.file_kb += vma.rss_kb,
                (None, None) => {
                    let size = vma.end - vma.start;
                    let guest = vma.readable
                        && next.is_some_and(|n| {
                            n.start == vma.end
                                && !n.accessible
                                && n.path.is_none()
                                && size + (n.end - n.start) >= 4 << 30
                        });
                    let wasm_stack = vma.readable
                        && size == 1 << 20
                        && prev.is_some_and(|p| {
                            p.end == vma.start && !p.accessible && p.end - p.start == 4096
                        });
                    if guest {
                        r.guest_memories += 1;
                        r.guest_committed_kb += size / 1024;
                        r.guest_resident_kb += vma.rss_kb;
                    } else if wasm_stack {
                        r.wasm_stacks += 1;
                        r.wasm_stack_kb += vma.rss_kb;
                    } else {
                        r.heap_kb += vma.rss_kb;
                    }
                }
            }
        }
        Ok(r)
    }

    /// What changed since `before` (counts and sizes may shrink: zero then).
    fn minus(&self, before: &Residency) -> Residency {
        Residency {
            guest_memories: self.guest_memories.saturating_sub(before.guest_memories),
            guest_committed_kb: self
                .guest_committed_kb
                .saturating_sub(before.guest_committed_kb),
            guest_resident_kb: self
                .guest_resident_kb
                .saturating_sub(before.guest_resident_kb),
            worker_threads: self.worker_threads.saturating_sub(before.worker_threads),
            worker_stack_kb: self.worker_stack_kb.saturating_sub(before.worker_stack_kb),
            other_stack_kb: self.other_stack_kb.saturating_sub(before.other_stack_kb),
            wasm_stacks: self.wasm_stacks.saturating_sub(before.wasm_stacks),
            wasm_stack_kb: self.wasm_stack_kb.saturating_sub(before.wasm_stack_kb),
            file_kb: self.file_kb.saturating_sub(before.file_kb),
            heap_kb: self.heap_kb.saturating_sub(before.heap_kb),
        }
    }

    /// Every kind's resident KiB together.
    fn total_kb(&self) -> u64 {
        self.guest_resident_kb
            + self.worker_stack_kb
            + self.other_stack_kb
            + self.wasm_stack_kb
            + self.file_kb
            + self.heap_kb
    }
}

/// The mappings of a `/proc/self/smaps` text, in address order.
fn parse_smaps(text: &str) -> Vec<Vma> {
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or("");
            // offset, device, inode, then the path (which may hold spaces).
            let path = fields.skip(3).collect::<Vec<_>>().join(" ");
            vmas.push(Vma {
                start,
                end,
                readable: perms.starts_with('r'),
                accessible: perms.chars().take(3).any(|c| c != '-'),
                path: (!path.is_empty()).then_some(path),
                rss_kb: 0,
            });
        } else if first == "Rss:"
            && let Some(vma) = vmas.last_mut()
        {
            vma.rss_kb = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    vmas
}

/// Each thread's stack pointer and name, for the threads blocked in a
/// system call (`/proc/self/task/TID/syscall` ends with the stack pointer
/// and the program counter; a running thread reports `running`).
fn thread_stack_pointers() -> Vec<(u64, String)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let dir = task.path();
            let syscall = std::fs::read_to_string(dir.join("syscall")).ok()?;
            let fields: Vec<&str> = syscall.split_whitespace().collect();
            let sp = fields.len().checked_sub(2).map(|i| fields[i])?;
            let sp = u64::from_str_radix(sp.trim_start_matches("0x"), 16).ok()?;
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            Some((sp, name.trim().to_owned()))
        })
        .collect()
}

/// 50 actors on one instance: half write through a store with 5 ms latency
/// per call, half only read. Baseline: the same with no latency.
async fn stall() -> Result<Map<String, Json>> {
    let slow = stall_run(Duration::from_millis(5), config(50)).await?;
    let fast = stall_run(Duration::ZERO, config(50)).await?;
    // The same with write-behind off: each commit holds the instance for
    // its store's round trip, as before the output gates.
    let direct = stall_run(
        Duration::from_millis(5),
        PoolConfig {
            write_behind_bytes: 0,
            ..config(50)
        },
    )
    .await?;
    Ok(record(json!({
        "scenario": "stall",
        "reader_p50_ms": slow[0],
        "reader_p99_ms": slow[1],
        "writer_p50_ms": slow[2],
        "writer_p99_ms": slow[3],
        "baseline_reader_p50_ms": fast[0],
        "baseline_reader_p99_ms": fast[1],
        "baseline_writer_p50_ms": fast[2],
        "baseline_writer_p99_ms": fast[3],
        "direct_reader_p50_ms": direct[0],
        "direct_reader_p99_ms": direct[1],
        "direct_writer_p50_ms": direct[2],
        "direct_writer_p99_ms": direct[3],
        "reader_p99_over_baseline": slow[1] / fast[1],
    })))
}

async fn stall_run(latency: Duration, config: PoolConfig) -> Result<[f64; 4]> {
    const ACTORS: usize = 50;
    const WRITES: usize = 20;
    const READS: usize = 200;
    ensure!(config.actors_per_instance == ACTORS, "one instance for all");
    let pool = Arc::new(SqliteVfsPool::new(config)?);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for a in 0..ACTORS {
        let faulty = Arc::new(FaultyKv::new(Arc::new(MemoryKv::new())));
        let db = pool
            .acquire(&format!("stall-{a}"))
            .await?
            .open(Arc::clone(&faulty) as Arc<dyn KvStore>)
            .await?;
        db.exec(CREATE).await?;
        insert_rows(&db, a, 1..=10).await?;
        if a % 2 == 0 {
            faulty.set_latency(latency);
            writers.push(db);
        } else {
            readers.push(db);
        }
    }
    ensure!(
        pool.instance_count() == 1,
        "all stall actors share one instance"
    );
    let writer_tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(a, db)| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(WRITES);
                for id in 11..11 + WRITES {
                    let started = Instant::now();
                    insert_rows(&db, a, id..=id).await?;
                    lat.push(started.elapsed());
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let reader_tasks: Vec<_> = readers
        .into_iter()
        .map(|db| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(READS);
                for i in 0..READS {
                    let started = Instant::now();
                    db.query(SELECT, &[Value::Integer((i % 10 + 1) as i64)])
                        .await?;
                    lat.push(started.elapsed());
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let mut write_lat = Vec::new();
    for t in writer_tasks {
        write_lat.extend(t.await??);
    }
    let mut read_lat = Vec::new();
    for t in reader_tasks {
        read_lat.extend(t.await??);
    }
    pool.shutdown().await;
    Ok([
        percentile(&mut read_lat, 0.50),
        percentile(&mut read_lat, 0.99),
        percentile(&mut write_lat, 0.50),
        percentile(&mut write_lat, 0.99),
    ])
}

/// Durable commits: many actors at once, and one actor alone, on the
/// local-disk driver and on PostgreSQL. Baseline for the disk: how many
/// `fdatasync`s per second its filesystem does, measured first.
async fn engine_commits(args: &Args) -> Result<Vec<Map<String, Json>>> {
    let mut out = Vec::new();
    // The probe file sits next to the data directory, on the same
    // filesystem.
    let parent = tempfile::tempdir()?;
    let probe = parent.path().join("fdatasync-probe");
    let disk_fdatasync_per_s =
        tokio::task::spawn_blocking(move || fdatasync_rate(&probe)).await??;
    let fs_dir = parent.path().join("data");
    std::fs::create_dir(&fs_dir)?;
    let fs = driver_fs::FsDriver::open(&fs_dir, scenario_config(args)).await?;
    let mut fs_row = commit_figures(&fs, "fs", args.commit_actors, || {
        let stats = fs.storage().stats();
        Some((stats.batches_committed, stats.write_transactions))
    })
    .await?;
    fs.shutdown().await;
    // The same with write-behind off (each instance waits for each commit's
    // store write, so at most one commit per instance joins a flush).
    let direct_dir = parent.path().join("data-direct");
    std::fs::create_dir(&direct_dir)?;
    let direct = driver_fs::FsDriver::open(
        &direct_dir,
        PoolConfig {
            write_behind_bytes: 0,
            ..scenario_config(args)
        },
    )
    .await?;
    let direct_row = commit_figures(&direct, "fs", args.commit_actors, || None).await?;
    direct.shutdown().await;
    for field in [
        "commits_per_s",
        "concurrent_commit_p50_ms",
        "concurrent_commit_p99_ms",
        "concurrent_cpu_us_per_commit",
        "single_commit_p50_ms",
    ] {
        if let Some(value) = direct_row.get(field) {
            fs_row.insert(format!("direct_{field}"), value.clone());
        }
    }
    let commits_per_s = fs_row
        .get("commits_per_s")
        .and_then(Json::as_f64)
        .unwrap_or(0.0);
    fs_row.insert("disk_fdatasync_per_s".into(), json!(disk_fdatasync_per_s));
    fs_row.insert(
        "commits_over_fdatasync".into(),
        json!(commits_per_s / disk_fdatasync_per_s),
    );
    out.push(fs_row);

    let url = match &args.database_url {
        Some(url) => Some(url.clone()),
        None => match driver_engine::testing::fresh_database_url().await {
            Ok(url) => Some(url),
            Err(e) => {
                eprintln!("engine rows skipped: no PostgreSQL server ({e})");
                None
            }
        },
    };
    if let Some(url) = url {
        let engine = driver_engine::EngineDriver::connect(&url, scenario_config(args)).await?;
        out.push(commit_figures(&engine, "engine", args.commit_actors, || None).await?);
        engine.shutdown().await;
    }
    Ok(out)
}

/// The disk's own rate of durable writes: 4 KiB written at offset 0 of
/// `path` and flushed with `fdatasync`, over and over for about a second.
fn fdatasync_rate(path: &std::path::Path) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut page = vec![0_u8; 4096];
    // Allocated and flushed once before timing, so every timed flush is
    // of data only, as a commit to an existing file is.
    file.write_all_at(&page, 0)?;
    file.sync_all()?;
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < Duration::from_secs(1) {
        let byte = done % page.len();
        page[byte] ^= 1;
        file.write_all_at(&page, 0)?;
        file.sync_data()?;
        done += 1;
    }
    Ok(per_s(done, started.elapsed()))
}

/// Commits of `actors` actors, all at once (throughput, each commit's
/// latency meanwhile, and this process's CPU per commit: for driver-fs that
/// includes its committer thread, for PostgreSQL not the server's work),
/// then of one actor alone. `store_counts` gives the store's (batches
/// committed, durable transactions) when it counts them.
async fn commit_figures(
    driver: &impl ActorDriver,
    backend: &str,
    actors: usize,
    store_counts: impl Fn() -> Option<(u64, u64)>,
) -> Result<Map<String, Json>> {
    const COMMITS: usize = 20;
    let mut dbs = Vec::with_capacity(actors);
    for a in 0..actors {
        let db = driver.open_database(&format!("commit-{a}")).await?;
        db.exec(CREATE).await?;
        dbs.push(db);
    }
    let counts_before = store_counts();
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    let tasks: Vec<_> = dbs
        .iter()
        .cloned()
        .enumerate()
        .map(|(a, db)| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(COMMITS);
                for id in 1..=COMMITS {
                    let started = Instant::now();
                    insert_rows(&db, a, id..=id).await?;
                    lat.push(started.elapsed());
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let mut concurrent_lat = Vec::with_capacity(actors * COMMITS);
    for t in tasks {
        concurrent_lat.extend(t.await??);
    }
    let commits_per_s = per_s(actors * COMMITS, started.elapsed());
    let concurrent_cpu_us_per_commit = cpu_us_per(actors * COMMITS, cpu_before, cpu_time()?);
    let counts_after = store_counts();

    let single = &dbs[0];
    let mut lat = Vec::with_capacity(200);
    for id in COMMITS + 1..=COMMITS + 200 {
        let started = Instant::now();
        insert_rows(single, 0, id..=id).await?;
        lat.push(started.elapsed());
    }
    let mut row = record(json!({
        "scenario": "engine_commits",
        "backend": backend,
        "actors": actors,
        "commits_per_s": commits_per_s,
        "concurrent_commit_p50_ms": percentile(&mut concurrent_lat, 0.50),
        "concurrent_commit_p99_ms": percentile(&mut concurrent_lat, 0.99),
        "concurrent_cpu_us_per_commit": concurrent_cpu_us_per_commit,
        "single_commit_p50_ms": percentile(&mut lat, 0.50),
        "single_commit_p99_ms": percentile(&mut lat, 0.99),
    }));
    if let (Some((batches0, txns0)), Some((batches1, txns1))) = (counts_before, counts_after) {
        // Group commit: how many commits shared each flush of the store
        // (each commit here is one batch: SQLite's atomic batch write).
        row.insert(
            "commits_per_store_flush".into(),
            json!((batches1 - batches0) as f64 / (txns1 - txns0).max(1) as f64),
        );
    }
    Ok(row)
}
