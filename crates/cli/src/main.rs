//! `vfs`: an operator's command line for the actors' SQLite databases,
//! in a driver-fs data directory or a driver-engine PostgreSQL database.
//!
//! Read-only commands (`actors`, `sql` with statements that only read,
//! `shell` without `--write`, `export`, `dump`, `check`) work on a
//! snapshot: a private copy of the actor's last durable state, taken
//! without ownership, so a live host serving the actor on PostgreSQL is
//! never fenced. Commands that write take the actor over like any host,
//! and say so.

mod dump;
mod output;
mod shell;
mod statements;
mod target;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vfs_pool::{Database, Error, ImportMode, Rows, Value};

use crate::output::Format;
use crate::target::{Target, TargetArgs};

/// Look into, export, import and check the actors' SQLite databases.
#[derive(Debug, Parser)]
#[command(name = "vfs", version, about)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    command: Command,
}

/// How a command prints rows.
#[derive(Debug, clap::Args)]
struct FormatArgs {
    /// Print JSON (blobs as {"hex": "…"}).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV with a header row.
    #[arg(long)]
    csv: bool,
}

impl FormatArgs {
    fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else if self.csv {
            Format::Csv
        } else {
            Format::Table
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the actors that have data, with the size of each database.
    Actors {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run SQL on an actor and print the results. Statements that only
    /// read run on a snapshot and never take the actor over; statements
    /// that write take it over (on PostgreSQL the host serving it is
    /// fenced) and run on the actor itself.
    Sql {
        /// The actor.
        actor: String,
        /// One or more statements.
        sql: String,
        #[command(flatten)]
        format: FormatArgs,
        /// Run on the actor itself from the start (creating it if it has
        /// no data yet).
        #[arg(long)]
        write: bool,
    },
    /// An interactive SQL prompt on an actor, with line editing, history,
    /// multi-line statements and .tables, .schema, .quit. Reads SQL piped
    /// on stdin too. Read-only unless --write.
    Shell {
        /// The actor.
        actor: String,
        /// Take the actor over and allow statements that write.
        #[arg(long)]
        write: bool,
    },
    /// Write an actor's database to FILE as a standard SQLite file.
    Export {
        /// The actor.
        actor: String,
        /// The file to write (replaced if it exists).
        file: PathBuf,
    },
    /// Load a standard SQLite file into an actor, after checking it.
    Import {
        /// The SQLite database file.
        file: PathBuf,
        /// The actor.
        actor: String,
        /// Replace the actor's data if it has any.
        #[arg(long)]
        replace: bool,
    },
    /// Print an actor's database as SQL text (like sqlite3's .dump).
    Dump {
        /// The actor.
        actor: String,
    },
    /// Run PRAGMA integrity_check on actors (every actor by default).
    /// Exits with status 1 and names them if any fail.
    Check {
        /// The actors to check.
        actors: Vec<String>,
    },
    /// Delete an actor and all of its data.
    Rm {
        /// The actor.
        actor: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vfs: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        // The reader of our output went away (`vfs dump … | head`).
        Err(e)
            if e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vfs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let target = Target::open(&cli.target).await?;
    let outcome = command(&target, cli.command).await;
    target.shutdown().await;
    outcome
}

async fn command(target: &Target, command: Command) -> Result<ExitCode> {
    let driver = target.driver();
    let stdout = std::io::stdout();
    match command {
        Command::Actors { json } => {
            let actors = driver.actor_sizes().await?;
            let rows = Rows {
                columns: vec!["actor".into(), "size_bytes".into()],
                rows: actors
                    .into_iter()
                    .map(|a| vec![Value::Text(a.actor_id), Value::Integer(a.size_bytes as i64)])
                    .collect(),
            };
            let format = if json { Format::Json } else { Format::Table };
            output::print_rows(&rows, format, &mut stdout.lock())?;
        }
        Command::Sql {
            actor,
            sql,
            format,
            write,
        } => {
            let statements = statements::split(&sql);
            if statements.is_empty() {
                bail!("no SQL statement given");
            }
            let results = sql_command(target, &actor, &statements, write).await?;
            let mut out = stdout.lock();
            for rows in &results {
                output::print_rows(rows, format.format(), &mut out)?;
            }
        }
        Command::Shell { actor, write } => return shell::run(target, &actor, write).await,
        Command::Export { actor, file } => {
            let mut image = Vec::new();
            let size = driver.export(&actor, &mut image).await?;
            write_new_file(&file, &image)?;
            eprintln!(
                "vfs: exported actor {actor:?} to {} ({size} bytes)",
                file.display()
            );
        }
        Command::Import {
            file,
            actor,
            replace,
        } => {
            let image =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            refuse_sidecars(&file)?;
            let mode = if replace {
                ImportMode::Replace
            } else {
                ImportMode::Create
            };
            let size = driver.import(&actor, &mut &image[..], mode).await?;
            target.announce_write(&actor);
            eprintln!(
                "vfs: imported {} into actor {actor:?} ({size} bytes)",
                file.display()
            );
        }
        Command::Dump { actor } => {
            let snapshot = driver.snapshot(&actor).await?;
            let mut out = std::io::BufWriter::new(stdout.lock());
            let dumped = dump::dump(snapshot.database(), &mut out).await;
            snapshot.close().await?;
            dumped?;
            out.flush()?;
        }
        Command::Check { actors } => return check(target, actors).await,
        Command::Rm { actor } => {
            if !driver.list_actors().await?.contains(&actor) {
                return Err(Error::NoSuchActor { actor }.into());
            }
            driver.delete_actor(&actor).await?;
            target.announce_write(&actor);
            eprintln!("vfs: deleted actor {actor:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `statements` on `db`, stopping at the first that fails.
async fn run_all(db: &Database, statements: &[String]) -> vfs_pool::Result<Vec<Rows>> {
    let mut results = Vec::with_capacity(statements.len());
    for statement in statements {
        results.push(db.query(statement, &[]).await?);
    }
    Ok(results)
}

/// `sql`: on a snapshot first; if that wrote to the copy, the statements
/// write, so they run again on the actor itself.
async fn sql_command(
    target: &Target,
    actor: &str,
    statements: &[String],
    write: bool,
) -> Result<Vec<Rows>> {
    let driver = target.driver();
    if !write {
        let snapshot = match driver.snapshot(actor).await {
            Err(Error::NoSuchActor { .. }) => {
                bail!("actor {actor:?} has no data (use --write to create it)")
            }
            other => other?,
        };
        let results = run_all(snapshot.database(), statements).await;
        let modified = snapshot.is_modified();
        snapshot.close().await?;
        if !modified {
            return Ok(results?);
        }
    }
    target.announce_write(actor);
    let db = driver.open_database(actor).await?;
    let results = run_all(&db, statements).await;
    driver.close_actor(actor).await?;
    Ok(results?)
}

/// `check`: integrity_check on a snapshot of each actor.
async fn check(target: &Target, actors: Vec<String>) -> Result<ExitCode> {
    let driver = target.driver();
    let actors = if actors.is_empty() {
        driver.list_actors().await?
    } else {
        actors
    };
    let bar = ProgressBar::new(actors.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .expect("a valid progress template"),
    );
    let mut failed = Vec::new();
    for actor in &actors {
        bar.set_message(actor.clone());
        if let Err(problem) = check_one(target, actor).await {
            bar.suspend(|| eprintln!("vfs: actor {actor:?} FAILED: {problem:#}"));
            failed.push(actor.as_str());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if failed.is_empty() {
        writeln!(out, "{} actors checked: all ok", actors.len())?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "{} of {} actors failed the check: {}",
            failed.len(),
            actors.len(),
            failed.join(", ")
        )?;
        Ok(ExitCode::FAILURE)
    }
}

async fn check_one(target: &Target, actor: &str) -> Result<()> {
    let snapshot = target.driver().snapshot(actor).await?;
    let checked = snapshot
        .database()
        .query("PRAGMA integrity_check", &[])
        .await;
    snapshot.close().await?;
    let rows = checked?.rows;
    if rows == [vec![Value::Text("ok".into())]] {
        return Ok(());
    }
    let problems: Vec<String> = rows
        .iter()
        .take(5)
        .filter_map(|row| match row.first() {
            Some(Value::Text(text)) => Some(text.clone()),
            _ => None,
        })
        .collect();
    bail!("{}", problems.join("; "))
}

/// Refuses a database whose write-ahead log or rollback journal beside it
/// holds something: the file alone would lose committed transactions (a
/// WAL not checkpointed) or be caught mid-transaction (a hot journal).
fn refuse_sidecars(file: &Path) -> Result<()> {
    for (suffix, what) in [
        (
            "-wal",
            "a write-ahead log with transactions not yet in the file",
        ),
        (
            "-journal",
            "a rollback journal: the file may be mid-transaction",
        ),
    ] {
        let mut sidecar = file.as_os_str().to_owned();
        sidecar.push(suffix);
        let sidecar = PathBuf::from(sidecar);
        if std::fs::metadata(&sidecar).is_ok_and(|m| m.len() > 0) {
            bail!(
                "{} has {what} ({}); open it once with sqlite3 (and run \
                 PRAGMA wal_checkpoint(TRUNCATE) for a WAL) and import again",
                file.display(),
                sidecar.display()
            );
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same
/// directory, so the path holds either its old content or all of the new.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let cannot = || format!("cannot write {}", path.display());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).with_context(cannot)?;
    file.write_all(bytes).with_context(cannot)?;
    file.as_file().sync_all().with_context(cannot)?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(cannot)?;
    Ok(())
}
