//! A database as SQL text that rebuilds it, in the shape of the sqlite3
//! shell's `.dump`: tables with their rows, then indexes, triggers and
//! views, in one transaction.

use std::io::Write;

use anyhow::{Context, Result};
use vfs_pool::{Database, Value};

use crate::output::{quote_name, sql_literal};

/// Rows read per query, so a large table never needs one huge result.
const PAGE_ROWS: i64 = 500;

/// Writes the dump of `db` to `out`.
pub async fn dump(db: &Database, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "PRAGMA foreign_keys=OFF;")?;
    writeln!(out, "BEGIN TRANSACTION;")?;
    let tables = db
        .query(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql NOT NULL \
             ORDER BY rowid",
            &[],
        )
        .await
        .context("reading the schema")?;
    for table in &tables.rows {
        let (Some(Value::Text(name)), Some(Value::Text(sql))) = (table.first(), table.get(1))
        else {
            continue;
        };
        if name == "sqlite_sequence" {
            writeln!(out, "DELETE FROM sqlite_sequence;")?;
        } else if name.starts_with("sqlite_stat") {
            writeln!(out, "ANALYZE sqlite_schema;")?;
        } else if name.starts_with("sqlite_") {
            continue;
        } else {
            writeln!(out, "{sql};")?;
        }
        if sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL TABLE") {
            continue;
        }
        dump_rows(db, name, out)
            .await
            .with_context(|| format!("reading the rows of table {name:?}"))?;
    }
    let others = db
        .query(
            "SELECT sql FROM sqlite_schema WHERE sql NOT NULL \
             AND type IN ('index', 'trigger', 'view') ORDER BY rowid",
            &[],
        )
        .await
        .context("reading the schema")?;
    for row in &others.rows {
        if let Some(Value::Text(sql)) = row.first() {
            writeln!(out, "{sql};")?;
        }
    }
    writeln!(out, "COMMIT;")?;
    Ok(())
}

/// One `INSERT` per row of `table`, read a page at a time: by rowid, or
/// by offset for a table without one.
async fn dump_rows(db: &Database, table: &str, out: &mut dyn Write) -> Result<()> {
    let quoted = quote_name(table);
    let by_rowid =
        format!("SELECT _rowid_, * FROM {quoted} WHERE _rowid_ > ?1 ORDER BY _rowid_ LIMIT ?2");
    let mut after = i64::MIN;
    let first = db
        .query(
            &by_rowid,
            &[Value::Integer(after), Value::Integer(PAGE_ROWS)],
        )
        .await;
    let Ok(mut page) = first else {
        return dump_rows_by_offset(db, &quoted, out).await;
    };
    loop {
        for row in &page.rows {
            if let Some(Value::Integer(rowid)) = row.first() {
                after = *rowid;
            }
            write_insert(out, &quoted, &row[1..])?;
        }
        if (page.rows.len() as i64) < PAGE_ROWS {
            return Ok(());
        }
        page = db
            .query(
                &by_rowid,
                &[Value::Integer(after), Value::Integer(PAGE_ROWS)],
            )
            .await?;
    }
}

async fn dump_rows_by_offset(db: &Database, quoted: &str, out: &mut dyn Write) -> Result<()> {
    let sql = format!("SELECT * FROM {quoted} LIMIT ?1 OFFSET ?2");
    let mut offset = 0;
    loop {
        let page = db
            .query(&sql, &[Value::Integer(PAGE_ROWS), Value::Integer(offset)])
            .await?;
        for row in &page.rows {
            write_insert(out, quoted, row)?;
        }
        if (page.rows.len() as i64) < PAGE_ROWS {
            return Ok(());
        }
        offset += PAGE_ROWS;
    }
}

fn write_insert(out: &mut dyn Write, quoted: &str, values: &[Value]) -> Result<()> {
    let values: Vec<String> = values.iter().map(sql_literal).collect();
    writeln!(out, "INSERT INTO {quoted} VALUES({});", values.join(","))?;
    Ok(())
}
