//! Where SQL statements end, decided by SQLite's own tokenizer
//! (`sqlite3_complete`), so semicolons inside strings, quoted names,
//! comments and `CREATE TRIGGER … END` bodies never split a statement.

use std::ffi::CString;

/// Whether `sql` ends with a complete statement: a semicolon that is not
/// inside a string, a quoted name, a comment or an unfinished trigger.
pub fn is_complete(sql: &str) -> bool {
    // A NUL byte cannot reach the tokenizer; SQLite refuses such text when
    // it runs, with its own message.
    let Ok(text) = CString::new(sql) else {
        return true;
    };
    // SAFETY: `text` is a NUL-terminated string that outlives the call;
    // sqlite3_complete only reads it and keeps no pointer to it. It needs
    // no initialized library: it is a pure tokenizer.
    unsafe { libsqlite3_sys::sqlite3_complete(text.as_ptr()) != 0 }
}

/// Splits a script into its statements, each ending with its semicolon.
/// Text after the last complete statement is one more statement, unless
/// it is only whitespace and comments; empty statements (`;;`) are dropped.
pub fn split(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut start = 0;
    for (at, _) in sql.match_indices(';') {
        let candidate = &sql[start..=at];
        if is_complete(candidate) {
            if !is_blank(candidate) {
                statements.push(candidate.trim().to_owned());
            }
            start = at + 1;
        }
    }
    let rest = &sql[start..];
    if !is_blank(rest) {
        statements.push(rest.trim().to_owned());
    }
    statements
}

/// Whether `sql` holds nothing but whitespace, comments and semicolons.
pub fn is_blank(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return rest.is_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_where_sqlite_says_they_end() {
        assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1;", "SELECT 2"]);
        assert_eq!(
            split("SELECT 'a;b'; SELECT \"c;\" FROM t; -- done;\n"),
            ["SELECT 'a;b';", "SELECT \"c;\" FROM t;"]
        );
        let trigger = "CREATE TRIGGER x AFTER INSERT ON t BEGIN \
                       INSERT INTO u VALUES (1); DELETE FROM v; END;";
        assert_eq!(
            split(&format!("{trigger} SELECT 1;")),
            [trigger, "SELECT 1;"]
        );
        assert_eq!(split(" ;; /* nothing */ ; "), Vec::<String>::new());
        assert!(split("").is_empty());
    }

    #[test]
    fn completeness_follows_sqlite() {
        assert!(is_complete("SELECT 1;"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete(
            "CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1;"
        ));
        assert!(is_blank("  -- a comment\n /* and another */ ;"));
        assert!(!is_blank("-- a comment\nSELECT 1"));
    }
}
