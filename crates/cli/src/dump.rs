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
    let mut writable_schema = false;
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
        } else if sql
            .get(..20)
            .is_some_and(|start| start.eq_ignore_ascii_case("CREATE VIRTUAL TABLE"))
        {
            // Recorded in the schema as it is, not created: creating it
            // would make its shadow tables, which the dump makes (with
            // their rows) as ordinary tables.
            if !writable_schema {
                writeln!(out, "PRAGMA writable_schema=ON;")?;
                writable_schema = true;
            }
            let name = sql_literal(&Value::Text(name.clone()));
            writeln!(
                out,
                "INSERT INTO sqlite_schema(type,name,tbl_name,rootpage,sql) \
                 VALUES('table',{name},{name},0,{});",
                sql_literal(&Value::Text(sql.clone()))
            )?;
            continue;
        } else {
            writeln!(out, "{sql};")?;
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
    if writable_schema {
        writeln!(out, "PRAGMA writable_schema=OFF;")?;
    }
    writeln!(out, "COMMIT;")?;
    Ok(())
}

/// One `INSERT` per row of `table`, read a page at a time: by rowid
/// (under a name no column hides), or by offset for a table without one.
/// Generated columns are left out, with the other columns named.
async fn dump_rows(db: &Database, table: &str, out: &mut dyn Write) -> Result<()> {
    let quoted = quote_name(table);
    let info = db
        .query(
            "SELECT name, hidden FROM pragma_table_xinfo(?1)",
            &[Value::Text(table.to_owned())],
        )
        .await?;
    let mut names = Vec::new();
    let mut visible = Vec::new();
    for row in &info.rows {
        if let (Some(Value::Text(name)), Some(Value::Integer(hidden))) = (row.first(), row.get(1)) {
            names.push(name.to_ascii_lowercase());
            if *hidden == 0 {
                visible.push(quote_name(name));
            }
        }
    }
    let columns = visible.join(",");
    let target = if visible.len() == names.len() {
        quoted.clone()
    } else {
        format!("{quoted}({columns})")
    };
    let without_rowid = db
        .query(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            &[Value::Text(table.to_owned())],
        )
        .await?
        .rows
        .first()
        .is_some_and(|row| row.first() == Some(&Value::Integer(1)));
    let rowid = ["_rowid_", "rowid", "oid"]
        .into_iter()
        .find(|alias| !names.iter().any(|name| name == alias));
    let Some(rowid) = rowid.filter(|_| !without_rowid) else {
        return dump_rows_by_offset(db, &quoted, &target, &columns, out).await;
    };
    let first = format!("SELECT {rowid}, {columns} FROM {quoted} ORDER BY {rowid} LIMIT ?1");
    let next = format!(
        "SELECT {rowid}, {columns} FROM {quoted} WHERE {rowid} > ?2 ORDER BY {rowid} LIMIT ?1"
    );
    let mut page = db.query(&first, &[Value::Integer(PAGE_ROWS)]).await?;
    loop {
        let mut last = None;
        for row in &page.rows {
            if let Some(Value::Integer(id)) = row.first() {
                last = Some(*id);
            }
            write_insert(out, &target, &row[1..])?;
        }
        let (Some(after), true) = (last, page.rows.len() as i64 == PAGE_ROWS) else {
            return Ok(());
        };
        page = db
            .query(&next, &[Value::Integer(PAGE_ROWS), Value::Integer(after)])
            .await?;
    }
}

async fn dump_rows_by_offset(
    db: &Database,
    quoted: &str,
    target: &str,
    columns: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let sql = format!("SELECT {columns} FROM {quoted} LIMIT ?1 OFFSET ?2");
    let mut offset = 0;
    loop {
        let page = db
            .query(&sql, &[Value::Integer(PAGE_ROWS), Value::Integer(offset)])
            .await?;
        for row in &page.rows {
            write_insert(out, target, row)?;
        }
        if (page.rows.len() as i64) < PAGE_ROWS {
            return Ok(());
        }
        offset += PAGE_ROWS;
    }
}

fn write_insert(out: &mut dyn Write, target: &str, values: &[Value]) -> Result<()> {
    let values: Vec<String> = values.iter().map(sql_literal).collect();
    writeln!(out, "INSERT INTO {target} VALUES({});", values.join(","))?;
    Ok(())
}
