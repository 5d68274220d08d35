//! Prints the start-up figures of the engine room: cold compile, warm load
//! from the disk cache, instantiation, and opening a database.
//!
//! `cargo run --release -p vfs-wasm --example startup`

use std::sync::Arc;
use std::time::{Duration, Instant};

use vfs_core::MemoryKv;
use vfs_wasm::{Instance, InstanceConfig, ModuleConfig, SqliteModule, Value};

/// Instantiations averaged for the instantiate figure.
const ROUNDS: u32 = 200;

fn main() -> Result<(), vfs_wasm::Error> {
    let dir = std::env::temp_dir().join(format!("vfs-wasm-startup-{}", std::process::id()));
    let config = ModuleConfig {
        cache_dir: Some(dir.clone()),
    };
    let cold = SqliteModule::load(&config)?;
    let warm = SqliteModule::load(&config)?;
    println!("wasm module: {} bytes", SqliteModule::wasm_bytes().len());
    println!("cold compile (cranelift): {:?}", cold.load_time());
    println!(
        "warm load from disk cache: {:?} (from cache: {})",
        warm.load_time(),
        warm.loaded_from_cache()
    );

    let mut total = Duration::ZERO;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let instance = Instance::new(&warm, InstanceConfig::default())?;
        total += start.elapsed();
        drop(instance);
    }
    println!("instantiate (mean of {ROUNDS}): {:?}", total / ROUNDS);

    let mut instance = Instance::new(&warm, InstanceConfig::default())?;
    let base_memory = instance.guest_memory_bytes();
    let start = Instant::now();
    let first = instance.open("first", Arc::new(MemoryKv::new()))?;
    println!("first open (generates page 1): {:?}", start.elapsed());
    instance.close(first)?;
    let mut total = Duration::ZERO;
    let mut dbs = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        let db = instance.open(&format!("db{i}"), Arc::new(MemoryKv::new()))?;
        total += start.elapsed();
        instance.exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)")?;
        dbs.push(db);
    }
    println!("open new database (mean of 50): {:?}", total / 50);
    println!(
        "guest memory with 50 databases: {} KiB (+{} KiB over an empty instance), SQLite heap {} KiB",
        instance.guest_memory_bytes() / 1024,
        (instance.guest_memory_bytes() - base_memory) / 1024,
        instance.guest_heap_bytes()? / 1024
    );
    let db = dbs[0];
    instance.exec(db, "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")?;
    let start = Instant::now();
    for k in 0..1000_i64 {
        instance.execute(
            db,
            "INSERT INTO kv (k, v) VALUES (?1, ?2)",
            &[Value::Integer(k), Value::from(format!("value-{k}"))],
        )?;
    }
    println!(
        "autocommit INSERT over MemoryKv (mean of 1000): {:?}",
        start.elapsed() / 1000
    );
    let start = Instant::now();
    for k in 0..1000_i64 {
        instance.query(db, "SELECT v FROM kv WHERE k = ?1", &[Value::Integer(k)])?;
    }
    println!("point SELECT (mean of 1000): {:?}", start.elapsed() / 1000);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
