//! Prints what one statement costs on an instance called directly, next to
//! native SQLite (the same amalgamation) and to one bare call into the
//! guest, so that the share of the guest boundary in a point read shows.
//!
//! `cargo run --release --locked -p vfs-wasm --example hot_path [ROUNDS]`
//!
//! For a profile: `perf record -g target/release/examples/hot_path`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfs_core::MemoryKv;
use vfs_wasm::{Instance, InstanceConfig, ModuleConfig, SqliteModule, Value};

const ROWS: i64 = 100;
const CREATE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)";
const INSERT: &str = "INSERT INTO t (id, v) VALUES (?1, ?2)";
const SELECT: &str = "SELECT v FROM t WHERE id = ?1";

fn text(id: i64) -> String {
    format!("{id:>8}-{}", "x".repeat(91))
}

fn per_call(total: Duration, calls: u32) -> f64 {
    total.as_secs_f64() * 1e9 / f64::from(calls)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(200_000);
    // A compiled module cached on disk keeps the compiler out of a profile.
    let module = SqliteModule::shared(&ModuleConfig {
        cache_dir: Some(std::env::temp_dir().join("vfs-wasm-hot-path")),
    })?;
    let mut instance = Instance::new(&module, InstanceConfig::default())?;
    let db = instance.open("hot", Arc::new(MemoryKv::new()))?;
    instance.exec(db, CREATE)?;
    for id in 1..=ROWS {
        instance.execute(db, INSERT, &[Value::Integer(id), Value::Text(text(id))])?;
    }

    let native = rusqlite::Connection::open_in_memory()?;
    native.execute(CREATE, [])?;
    for id in 1..=ROWS {
        native.execute(INSERT, rusqlite::params![id, text(id)])?;
    }

    // One call into the guest and back, with no SQL.
    let started = Instant::now();
    for _ in 0..rounds {
        instance.database_status(db, 1)?;
    }
    let bare = per_call(started.elapsed(), rounds);

    let started = Instant::now();
    for i in 0..rounds {
        let id = i64::from(i) % ROWS + 1;
        let rows = instance.query(db, SELECT, &[Value::Integer(id)])?;
        assert_eq!(rows.rows, vec![vec![Value::Text(text(id))]]);
    }
    let wasm_read = per_call(started.elapsed(), rounds);

    let mut select = native.prepare_cached(SELECT)?;
    let started = Instant::now();
    for i in 0..rounds {
        let id = i64::from(i) % ROWS + 1;
        let v: String = select.query_row([id], |r| r.get(0))?;
        assert_eq!(v, text(id));
    }
    let native_read = per_call(started.elapsed(), rounds);

    println!("bare guest call:   {bare:8.0} ns");
    println!("wasm point read:   {wasm_read:8.0} ns");
    println!("native point read: {native_read:8.0} ns");
    println!("native / wasm:     {:8.3}", native_read / wasm_read);
    Ok(())
}
