//! The store the command works on: a driver-fs data directory or a
//! driver-engine PostgreSQL database, opened as an [`ActorDriver`].

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use driver_engine::EngineDriver;
use driver_fs::FsDriver;
use vfs_pool::{ActorDriver, PoolConfig};

/// Where the actors live: exactly one of the two.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// The data directory of a driver-fs store (local disk).
    #[arg(long, global = true, env = "VFS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The PostgreSQL database of a driver-engine store
    /// (postgres://user:password@host/db).
    #[arg(long, global = true, env = "VFS_URL", value_name = "URL")]
    pub url: Option<String>,
}

/// An open store.
pub struct Target {
    driver: Box<dyn ActorDriver>,
    /// Whether writing takes an actor over from the host serving it.
    has_owners: bool,
}

impl Target {
    /// Opens the store named by `args`.
    pub async fn open(args: &TargetArgs) -> Result<Self> {
        // One instance serves every actor this process touches. An
        // operator's query, check or dump of a large database may run long
        // and return much: no time budget (Ctrl-C ends it), a large cap.
        let config = PoolConfig {
            actors_per_instance: 64,
            statement_timeout: None,
            max_result_bytes: 1 << 30,
            ..PoolConfig::default()
        };
        match (&args.data_dir, &args.url) {
            (Some(dir), None) => {
                let driver = FsDriver::open(dir, config).await.map_err(|e| match e {
                    driver_fs::Error::Locked { .. } => anyhow!(
                        "data directory {} is in use by another process (a running host); \
                         stop it first, or copy the directory and point --data-dir at the copy",
                        dir.display()
                    ),
                    other => anyhow::Error::new(other),
                })?;
                Ok(Self {
                    driver: Box::new(driver),
                    has_owners: false,
                })
            }
            (None, Some(url)) => {
                let driver = EngineDriver::connect(url, config).await?;
                Ok(Self {
                    driver: Box::new(driver),
                    has_owners: true,
                })
            }
            (Some(_), Some(_)) => bail!("give either --data-dir or --url, not both"),
            (None, None) => bail!(
                "say where the actors are: --data-dir DIR (driver-fs) or --url postgres://… \
                 (driver-engine)"
            ),
        }
    }

    /// The driver.
    pub fn driver(&self) -> &dyn ActorDriver {
        &*self.driver
    }

    /// Says, on stderr, that a writing command takes `actor` over.
    pub fn announce_write(&self, actor: &str) {
        if self.has_owners {
            eprintln!(
                "vfs: took ownership of actor {actor:?}; a host that was serving it is fenced \
                 and reopens it on its next call"
            );
        }
    }

    /// Closes every database and the store.
    pub async fn shutdown(self) {
        self.driver.shutdown().await;
    }
}
