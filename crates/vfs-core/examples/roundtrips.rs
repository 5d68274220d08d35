//! Prints how many store round trips the common file operations cost and
//! how long the page logic takes over an in-memory store, so a change that
//! adds a round trip (the expensive part with a remote store) is visible.
//!
//! Run with `cargo run --release -p vfs-core --example roundtrips`.

use std::sync::Arc;
use std::time::Instant;

use futures::executor::block_on;
use vfs_core::{CountingKv, FileTag, KvFile, KvStore, MemoryKv, PAGE_SIZE, Result};

fn main() -> Result<()> {
    block_on(async {
        let counting = Arc::new(CountingKv::new(Arc::new(MemoryKv::new())));
        let store: Arc<dyn KvStore> = counting.clone();
        let report = |what: &str, counting: &CountingKv| {
            println!(
                "{what:<44} get {} put {} delete {}",
                counting.get_calls(),
                counting.put_calls(),
                counting.delete_calls()
            );
            counting.reset();
        };

        let seed = vec![0u8; PAGE_SIZE];
        let mut file = KvFile::open(Arc::clone(&store), FileTag::Main, true, Some(&seed)).await?;
        report("create with seed page", &counting);

        file.begin_atomic()?;
        for page in 0..10u64 {
            file.write(&[page as u8; PAGE_SIZE], page * PAGE_SIZE as u64)
                .await?;
        }
        file.commit_atomic().await?;
        report("atomic commit of 10 pages", &counting);

        let mut reopened = KvFile::open(Arc::clone(&store), FileTag::Main, false, None).await?;
        let mut header = [0u8; 100];
        reopened.read(&mut header, 0).await?;
        let mut page = vec![0u8; PAGE_SIZE];
        reopened.read(&mut page, 0).await?;
        report("open existing + header + page 1 reads", &counting);

        let mut journal = KvFile::open(Arc::clone(&store), FileTag::Journal, true, None).await?;
        journal.write(&[1; 512], 0).await?;
        journal.write(&[2; 4], 512).await?;
        journal.write(&[3; PAGE_SIZE], 516).await?;
        report("journal: header + one page record (3 writes)", &counting);

        journal.write(&vec![4; PAGE_SIZE * 200], 8192).await?;
        report("plain write of 200 pages (limit 128 keys)", &counting);

        KvFile::delete(&store, FileTag::Journal).await?;
        report("delete 203-page journal", &counting);

        let rounds = 20_000u32;
        let start = Instant::now();
        for i in 0..rounds {
            file.begin_atomic()?;
            for page in 0..4u64 {
                file.write(&[i as u8; PAGE_SIZE], page * PAGE_SIZE as u64)
                    .await?;
            }
            file.commit_atomic().await?;
        }
        let per = start.elapsed() / rounds;
        println!("atomic commit of 4 pages over MemoryKv: {per:?} each");

        let start = Instant::now();
        let mut buf = vec![0u8; PAGE_SIZE];
        for i in 0..rounds {
            file.read(&mut buf, u64::from(i % 10) * PAGE_SIZE as u64)
                .await?;
        }
        println!(
            "page read over MemoryKv: {:?} each",
            start.elapsed() / rounds
        );
        Ok(())
    })
}
