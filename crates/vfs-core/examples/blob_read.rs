//! `cargo xtask bench --scenario blob_read`: store round trips of reading
//! 4 bytes in the middle of a 10 MiB blob, with and without the read-ahead
//! of sequential runs.
//!
//! `SELECT substr(b, 5242880, 4) FROM t` loads the whole value, so SQLite
//! walks the blob's chain of overflow pages from its first: one 4 KiB read
//! per page at the page's offset, and the pages of a blob inserted in one
//! go are consecutive. This replays those reads on a [`KvFile`] over a
//! [`CountingKv`] (the file level, so it needs no SQLite), once with run
//! read-ahead off (what every read cost before it) and once on. The time
//! over a slow link is the round trips times its latency.
//!
//! Run alone with `cargo run --release -p vfs-core --example blob_read`;
//! `--json` prints one JSON object per line like the other benches.

// Counts become f64 only to print seconds; they stay far below 2^52.
#![allow(clippy::cast_precision_loss)]

use std::sync::Arc;

use futures::executor::block_on;
use vfs_core::{CountingKv, FileTag, KvFile, KvStore, MemoryKv, PAGE_SIZE, Result};

const P: u64 = PAGE_SIZE as u64;

/// The blob: 10 MiB.
const BLOB_BYTES: u64 = 10 << 20;

/// Blob bytes an overflow page holds: the page less its 4-byte pointer to
/// the next one.
const PER_OVERFLOW_PAGE: u64 = P - 4;

/// Bytes of the blob kept on the table's leaf page (SQLite's minimum local
/// payload for 4 KiB pages).
const LOCAL_BYTES: u64 = 489;

/// Index in the file of the leaf page holding the row: SQLite's page 2
/// (page 1, at index 0, holds the schema). The overflow pages follow it.
const LEAF: u64 = 1;

/// Latencies the round trips are priced at, in milliseconds.
const LATENCIES_MS: [u64; 2] = [5, 50];

fn main() -> Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let overflow_pages = (BLOB_BYTES - LOCAL_BYTES).div_ceil(PER_OVERFLOW_PAGE);
    block_on(async {
        let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::new());
        let mut file = KvFile::open(Arc::clone(&memory), FileTag::Main, true, None).await?;
        for page in 0..=LEAF + overflow_pages {
            file.write(&page_image(page), page * P).await?;
        }
        drop(file);

        let before = read_blob(&memory, overflow_pages, Some(0)).await?;
        let after = read_blob(&memory, overflow_pages, None).await?;
        let seconds = |round_trips: u64, ms: u64| (round_trips * ms) as f64 / 1000.0;
        if json {
            println!(
                "{{\"scenario\":\"blob_read\",\"blob_mib\":{},\"overflow_pages\":{overflow_pages},\
                 \"round_trips\":{},\"round_trips_without_read_ahead\":{},\
                 \"s_at_5ms\":{:.2},\"s_at_50ms\":{:.2},\
                 \"s_at_5ms_without_read_ahead\":{:.2},\"s_at_50ms_without_read_ahead\":{:.2}}}",
                BLOB_BYTES >> 20,
                after,
                before,
                seconds(after, 5),
                seconds(after, 50),
                seconds(before, 5),
                seconds(before, 50),
            );
        } else {
            println!(
                "\nblob_read: substr(b, 5 MiB, 4) of a {} MiB blob reads its leaf and {overflow_pages} overflow pages",
                BLOB_BYTES >> 20
            );
            for (what, round_trips) in [("without read-ahead", before), ("with read-ahead", after)]
            {
                let priced: Vec<String> = LATENCIES_MS
                    .iter()
                    .map(|&ms| format!("{:.2} s at {ms} ms", seconds(round_trips, ms)))
                    .collect();
                println!(
                    "  {what:<20} {round_trips:>5} round trips  ({})",
                    priced.join(", ")
                );
            }
        }
        Ok(())
    })
}

/// A page whose content differs from every other page's.
fn page_image(page: u64) -> Vec<u8> {
    let mut image = vec![(page % 251) as u8; PAGE_SIZE];
    image[..8].copy_from_slice(&page.to_be_bytes());
    image
}

/// Opens the database afresh, then counts the store round trips of reading
/// the schema page, the row's leaf and every overflow page, as SQLite does
/// for the query; `limit` caps the run read-ahead (`Some(0)`: off).
async fn read_blob(
    memory: &Arc<dyn KvStore>,
    overflow_pages: u64,
    limit: Option<usize>,
) -> Result<u64> {
    let counting = Arc::new(CountingKv::new(Arc::clone(memory)));
    let mut file = KvFile::open(counting.clone(), FileTag::Main, false, None).await?;
    if let Some(limit) = limit {
        file.set_run_ahead_limit(limit);
    }
    counting.reset();
    let mut buf = vec![0; PAGE_SIZE];
    file.read(&mut buf, 0).await?;
    for page in LEAF..=LEAF + overflow_pages {
        file.read(&mut buf, page * P).await?;
        assert!(buf == page_image(page), "page {page} read back wrong");
    }
    Ok(counting.total())
}
