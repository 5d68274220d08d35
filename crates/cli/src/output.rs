//! Query results as an aligned table, JSON or CSV, and SQL values as SQL
//! literals (for `dump`).

use std::io::Write;

use anyhow::Result;
use comfy_table::{Table, presets};
use serde_json::{Map, Value as Json};
use vfs_pool::{Rows, Value};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned table with a header row.
    #[default]
    Table,
    /// One JSON array of objects per statement, keyed by column name.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Bytes of a blob shown in a table before it is cut short.
const BLOB_SHOWN: usize = 32;

/// Prints the rows of one statement. A statement without columns (an
/// INSERT, say) prints nothing in a table or CSV, and `[]` in JSON.
pub fn print_rows(rows: &Rows, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            if rows.columns.is_empty() {
                return Ok(());
            }
            let mut table = Table::new();
            table.load_style(presets::ASCII_MARKDOWN);
            table.set_header(&rows.columns);
            for row in &rows.rows {
                table.add_row(row.iter().map(table_cell));
            }
            writeln!(out, "{table}")?;
        }
        Format::Json => {
            let objects: Vec<Json> = rows
                .rows
                .iter()
                .map(|row| {
                    let object: Map<String, Json> = rows
                        .columns
                        .iter()
                        .cloned()
                        .zip(row.iter().map(json_value))
                        .collect();
                    Json::Object(object)
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &objects)?;
            writeln!(out)?;
        }
        Format::Csv => {
            if rows.columns.is_empty() {
                return Ok(());
            }
            let mut writer = csv::Writer::from_writer(&mut *out);
            writer.write_record(&rows.columns)?;
            for row in &rows.rows {
                writer.write_record(row.iter().map(csv_field))?;
            }
            writer.flush()?;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn table_cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(n) => n.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) if b.len() > BLOB_SHOWN => {
            format!("x'{}…' ({} bytes)", hex(&b[..BLOB_SHOWN]), b.len())
        }
        Value::Blob(b) => format!("x'{}'", hex(b)),
    }
}

fn csv_field(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Blob(b) => hex(b),
        other => table_cell(other),
    }
}

/// A blob becomes `{"hex": "…"}`, so it is never mistaken for text.
fn json_value(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(n) => Json::from(*n),
        Value::Real(r) => Json::from(*r),
        Value::Text(t) => Json::from(t.as_str()),
        Value::Blob(b) => serde_json::json!({ "hex": hex(b) }),
    }
}

/// `value` as a SQL literal that reads back as the same value and type.
pub fn sql_literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(n) => n.to_string(),
        // Debug keeps a decimal point or an exponent, so a real reads back
        // as a real, and prints the shortest digits that round-trip.
        Value::Real(r) if r.is_finite() => format!("{r:?}"),
        Value::Real(r) if *r > 0.0 => "9e999".into(),
        Value::Real(_) => "-9e999".into(),
        Value::Text(t) if t.contains('\0') => format!("CAST(X'{}' AS TEXT)", hex(t.as_bytes())),
        // Line ends as char() calls: a reader of the text (the sqlite3
        // shell among them) may turn a "\r\n" inside a line into "\n".
        Value::Text(t) if t.contains(['\r', '\n']) => {
            let mut parts = Vec::new();
            let mut plain = String::new();
            for c in t.chars() {
                if c == '\r' || c == '\n' {
                    if !plain.is_empty() {
                        parts.push(format!(
                            "'{}'",
                            std::mem::take(&mut plain).replace('\'', "''")
                        ));
                    }
                    parts.push(format!("char({})", u32::from(c)));
                } else {
                    plain.push(c);
                }
            }
            if !plain.is_empty() {
                parts.push(format!("'{}'", plain.replace('\'', "''")));
            }
            format!("({})", parts.join("||"))
        }
        Value::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Value::Blob(b) => format!("X'{}'", hex(b)),
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_keep_their_type() {
        assert_eq!(sql_literal(&Value::Real(2.0)), "2.0");
        assert_eq!(sql_literal(&Value::Real(1e300)), "1e300");
        assert_eq!(sql_literal(&Value::Real(f64::INFINITY)), "9e999");
        assert_eq!(sql_literal(&Value::from("it's")), "'it''s'");
        assert_eq!(sql_literal(&Value::Blob(vec![0, 255])), "X'00ff'");
        assert_eq!(
            sql_literal(&Value::from("a'\r\nb")),
            "('a'''||char(13)||char(10)||'b')"
        );
        assert_eq!(sql_literal(&Value::from("\n")), "(char(10))");
        assert_eq!(quote_name("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn formats() {
        let rows = Rows {
            columns: vec!["id".into(), "v".into()],
            rows: vec![
                vec![Value::Integer(1), Value::from("x,y")],
                vec![Value::Integer(2), Value::Blob(vec![1, 2])],
            ],
        };
        let render = |format| {
            let mut out = Vec::new();
            print_rows(&rows, format, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(render(Format::Csv), "id,v\n1,\"x,y\"\n2,0102\n");
        let json: Json = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(json[1]["v"]["hex"], "0102");
        let table = render(Format::Table);
        assert!(table.contains("| id | v "), "{table}");
        assert!(table.contains("| 1  | x,y "), "{table}");
        assert!(table.contains("x'0102'"), "{table}");
    }
}
