//! `shell`: an interactive SQL prompt on one actor, or a script piped on
//! stdin.
//!
//! Without `--write` the session runs on a snapshot and refuses every
//! statement that writes (the copy is then taken afresh, so later reads
//! never see the refused change). With `--write` it takes the actor over
//! and runs on the actor itself.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use vfs_pool::{Database, Rows, Snapshot, Value};

use crate::output::{self, Format};
use crate::statements;
use crate::target::Target;

/// Where the session's statements run.
enum Session<'a> {
    ReadOnly {
        target: &'a Target,
        snapshot: Option<Snapshot>,
    },
    Live(Database),
}

/// A snapshot for a read-only session: `query_only` makes SQLite refuse
/// every statement that would write, inside a transaction too.
async fn read_only_snapshot(target: &Target, actor: &str) -> Result<Snapshot> {
    let snapshot = target.driver().snapshot(actor).await?;
    snapshot.database().exec("PRAGMA query_only = 1").await?;
    Ok(snapshot)
}

impl Session<'_> {
    /// Runs one statement; a read-only session refuses it if it wrote.
    async fn run(&mut self, sql: &str) -> Result<Rows> {
        match self {
            Session::Live(db) => Ok(db.query(sql, &[]).await?),
            Session::ReadOnly { target, snapshot } => {
                let Some(copy) = snapshot.as_ref() else {
                    bail!("the snapshot of this session is gone; start the shell again");
                };
                let rows = copy.database().query(sql, &[]).await;
                if !copy.is_modified() {
                    return Ok(rows?);
                }
                // query_only missed it (a statement turned it off): throw
                // the copy away and take a fresh one.
                let old = snapshot.take().expect("checked above");
                let actor = old.actor_id().to_owned();
                old.close().await?;
                *snapshot = Some(read_only_snapshot(target, &actor).await?);
                bail!(
                    "this shell is read-only and the statement writes; nothing was changed \
                     (start the shell with --write to change the actor)"
                )
            }
        }
    }

    async fn close(self) -> Result<()> {
        match self {
            Session::ReadOnly { snapshot, .. } => {
                if let Some(snapshot) = snapshot {
                    snapshot.close().await?;
                }
            }
            Session::Live(db) => db.close().await?,
        }
        Ok(())
    }
}

/// Runs the shell; the exit status is 1 if a piped script had errors.
pub async fn run(target: &Target, actor: &str, write: bool) -> Result<ExitCode> {
    let mut session = if write {
        target.announce_write(actor);
        Session::Live(target.driver().open_database(actor).await?)
    } else {
        Session::ReadOnly {
            target,
            snapshot: Some(read_only_snapshot(target, actor).await?),
        }
    };
    let outcome = if std::io::stdin().is_terminal() {
        interactive(&mut session, actor).await
    } else {
        piped(&mut session).await
    };
    session.close().await?;
    outcome
}

/// What a line of input asks for.
enum Step {
    Continue,
    Quit,
}

async fn interactive(session: &mut Session<'_>, actor: &str) -> Result<ExitCode> {
    let mut editor = DefaultEditor::new().context("starting the line editor")?;
    let history = history_file();
    if let Some(path) = &history {
        // A missing history file is the first session's normal state.
        let _ = editor.load_history(path);
    }
    let mode = match session {
        Session::ReadOnly { .. } => "read-only snapshot",
        Session::Live(_) => "live, writes allowed",
    };
    writeln!(
        std::io::stdout().lock(),
        "actor {actor:?} ({mode}). Enter SQL ending with ';', or .help"
    )?;
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "vfs> " } else { "...> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        if pending.is_empty() && line.trim_start().starts_with('.') {
            let _ = editor.add_history_entry(line.as_str());
            match dot_command(session, line.trim()).await {
                Ok(Step::Quit) => break,
                Ok(Step::Continue) => {}
                Err(e) => eprintln!("error: {e:#}"),
            }
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        if !statements::is_complete(&pending) {
            continue;
        }
        let _ = editor.add_history_entry(pending.as_str());
        for statement in statements::split(&pending) {
            if let Err(e) = print_statement(session, &statement).await {
                eprintln!("error: {e:#}");
            }
        }
        pending.clear();
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(ExitCode::SUCCESS)
}

/// A script on stdin: every statement runs; errors are reported and make
/// the exit status 1.
async fn piped(session: &mut Session<'_>) -> Result<ExitCode> {
    let mut script = String::new();
    std::io::stdin()
        .read_to_string(&mut script)
        .context("reading SQL from stdin")?;
    let mut failed = false;
    let mut sql = String::new();
    // Lines keep their own line ends: a text value may hold a "\r\n".
    for line in script.split_inclusive('\n') {
        if statements::is_blank(&sql) && line.trim_start().starts_with('.') {
            match dot_command(session, line.trim()).await {
                Ok(Step::Quit) => break,
                Ok(Step::Continue) => {}
                Err(e) => {
                    eprintln!("error: {e:#}");
                    failed = true;
                }
            }
            continue;
        }
        sql.push_str(line);
        if statements::is_complete(&sql) {
            failed |= run_script(session, &sql).await;
            sql.clear();
        }
    }
    failed |= run_script(session, &sql).await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs every statement of `sql`; true if one failed.
async fn run_script(session: &mut Session<'_>, sql: &str) -> bool {
    let mut failed = false;
    for statement in statements::split(sql) {
        if let Err(e) = print_statement(session, &statement).await {
            eprintln!("error: {e:#}");
            failed = true;
        }
    }
    failed
}

async fn print_statement(session: &mut Session<'_>, sql: &str) -> Result<()> {
    let rows = session.run(sql).await?;
    output::print_rows(&rows, Format::Table, &mut std::io::stdout().lock())?;
    Ok(())
}

async fn dot_command(session: &mut Session<'_>, line: &str) -> Result<Step> {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let argument = words.next();
    let mut out = std::io::stdout().lock();
    match command {
        ".quit" | ".exit" | ".q" => return Ok(Step::Quit),
        ".help" => writeln!(
            out,
            ".tables [PATTERN]   list tables and views\n\
             .schema [PATTERN]   show CREATE statements\n\
             .quit               leave (also Ctrl-D)\n\
             Anything else is SQL; a statement ends with ';'."
        )?,
        ".tables" => {
            let rows = session
                .run(&format!(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
                     AND name NOT LIKE 'sqlite_%' AND name LIKE {} ORDER BY name",
                    output::sql_literal(&Value::from(argument.unwrap_or("%")))
                ))
                .await?;
            let names: Vec<String> = texts(&rows);
            if !names.is_empty() {
                writeln!(out, "{}", names.join("  "))?;
            }
        }
        ".schema" => {
            let rows = session
                .run(&format!(
                    "SELECT sql FROM sqlite_schema WHERE sql NOT NULL AND name LIKE {} \
                     ORDER BY type = 'table' DESC, rowid",
                    output::sql_literal(&Value::from(argument.unwrap_or("%")))
                ))
                .await?;
            for sql in texts(&rows) {
                writeln!(out, "{sql};")?;
            }
        }
        other => bail!("unknown command {other:?}; .help lists them"),
    }
    Ok(Step::Continue)
}

fn texts(rows: &Rows) -> Vec<String> {
    rows.rows
        .iter()
        .filter_map(|row| match row.first() {
            Some(Value::Text(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// `~/.vfs_history`, when there is a home directory.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".vfs_history"))
}
