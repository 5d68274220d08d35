//! Point reads through the pool, one actor at a time, on a multi-thread
//! runtime, beside the same reads on the instance itself: what the pool
//! adds to one call. For profiles of the call path.
//!
//! `cargo run --release --locked -p vfs-pool --example pool_reads [ROUNDS [ACTORS]]`
//!
//! With several actors, the rounds are shared out: each actor in turn
//! reads its share one after the other, as `cargo xtask bench` does.

use std::sync::Arc;
use std::time::Instant;

use vfs_pool::{MemoryKv, PoolConfig, SqliteVfsPool, Value};

const ROWS: i64 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(200_000);
    let actors: usize = std::env::args()
        .nth(2)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = SqliteVfsPool::new(PoolConfig {
            module_cache_dir: Some(std::env::temp_dir().join("vfs-pool-reads")),
            release_memory_after: None,
            ..PoolConfig::default()
        })?;
        let mut dbs = Vec::with_capacity(actors);
        for a in 0..actors {
            let handle = pool.acquire(&format!("reader-{a}")).await?;
            let db = handle.open(Arc::new(MemoryKv::new())).await?;
            db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
                .await?;
            for id in 1..=ROWS {
                db.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    &[
                        Value::Integer(id),
                        Value::Text(format!("{id:>8}-{}", "x".repeat(91))),
                    ],
                )
                .await?;
            }
            dbs.push(db);
        }
        let started = Instant::now();
        for i in 0..rounds {
            let id = i64::from(i) % ROWS + 1;
            let db = &dbs[i as usize * actors / rounds as usize];
            let rows = db
                .query("SELECT v FROM t WHERE id = ?1", &[Value::Integer(id)])
                .await?;
            assert_eq!(rows.rows.len(), 1);
        }
        let per_read = started.elapsed().as_secs_f64() * 1e9 / f64::from(rounds);
        println!("pool point read: {per_read:8.0} ns");
        for db in dbs {
            db.close().await?;
        }
        pool.shutdown().await;
        Ok(())
    })
}
