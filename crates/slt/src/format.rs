//! Result values printed the way SQLite's own sqllogictest runner prints
//! them.
//!
//! That runner formats every value by the type letter its record declares
//! for the column, not by the value's storage class: an `I` column asks
//! SQLite for the value as a 64-bit integer, an `R` column as a double
//! printed with `%.3f`, a `T` column as text. NULL is `NULL` whatever the
//! letter, and an empty text is `(empty)`. In text, every byte outside
//! printable ASCII becomes `@`.
//!
//! When the storage class matches the letter (or the conversion is exact in
//! Rust: an integer as text, a real truncated to an integer), [`render`]
//! prints the value itself. Otherwise the conversion is SQLite's own (text
//! to integer, real to text, anything to `%.3f`), and [`render`] answers
//! with a one-parameter query that makes the same SQLite do it; the caller
//! runs it on the engine under test and prints the single value it returns
//! with [`render_converted`].

use vfs_pool::Value;

/// The type letter a `query` record declares for one result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `I`: the value as a 64-bit integer, in decimal.
    Integer,
    /// `T`: the value as text.
    Text,
    /// `R`: the value as a double, printed with `%.3f`.
    Real,
}

impl ColumnKind {
    /// The kind of a type letter, `None` for a letter the format does not
    /// have.
    pub fn from_letter(letter: char) -> Option<Self> {
        match letter {
            'I' => Some(Self::Integer),
            'T' => Some(Self::Text),
            'R' => Some(Self::Real),
            _ => None,
        }
    }

    /// The type letter of this kind.
    pub fn letter(self) -> char {
        match self {
            Self::Integer => 'I',
            Self::Text => 'T',
            Self::Real => 'R',
        }
    }
}

/// Converts a text or blob to an integer as `sqlite3_column_int64` does
/// (its leading integer, else 0).
pub const CAST_TO_INTEGER: &str = "SELECT CAST(?1 AS INTEGER)";
/// Converts a real to text as `sqlite3_column_text` does.
pub const CAST_TO_TEXT: &str = "SELECT CAST(?1 AS TEXT)";
/// Prints any value as `sqlite3_column_double` and then SQLite's `%.3f`.
pub const PRINT_REAL: &str = "SELECT printf('%.3f', ?1)";

/// How one value of a declared column kind is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// The final text.
    Done(String),
    /// SQLite must convert the value first: run this query with the value
    /// bound to `?1` on the same engine and print its single result with
    /// [`render_converted`].
    Convert(&'static str),
}

/// Prints `value` for a column declared as `kind`, or says which conversion
/// SQLite must do first.
pub fn render(kind: ColumnKind, value: &Value) -> Rendered {
    match (kind, value) {
        (_, Value::Null) => Rendered::Done("NULL".to_owned()),
        (ColumnKind::Integer | ColumnKind::Text, Value::Integer(v)) => {
            Rendered::Done(v.to_string())
        }
        // SQLite truncates towards zero and saturates at the i64 bounds,
        // which is what `as` does (SQLite never returns a NaN).
        (ColumnKind::Integer, Value::Real(v)) => Rendered::Done((*v as i64).to_string()),
        (ColumnKind::Integer, Value::Text(_) | Value::Blob(_)) => {
            Rendered::Convert(CAST_TO_INTEGER)
        }
        (ColumnKind::Text, Value::Text(text)) => Rendered::Done(printable(text.as_bytes())),
        (ColumnKind::Text, Value::Blob(bytes)) => Rendered::Done(printable(bytes)),
        (ColumnKind::Text, Value::Real(_)) => Rendered::Convert(CAST_TO_TEXT),
        (ColumnKind::Real, _) => Rendered::Convert(PRINT_REAL),
    }
}

/// Prints the result of a conversion [`render`] asked for: the value as
/// its own storage class gives it.
pub fn render_converted(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Integer(v) => v.to_string(),
        Value::Real(v) => v.to_string(),
        Value::Text(text) => printable(text.as_bytes()),
        Value::Blob(bytes) => printable(bytes),
    }
}

/// Text as the runner prints it: `(empty)` for an empty string, and `@` for
/// every byte that is not printable ASCII.
fn printable(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_owned();
    }
    bytes
        .iter()
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                b as char
            } else {
                '@'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(kind: ColumnKind, value: &Value) -> String {
        match render(kind, value) {
            Rendered::Done(text) => text,
            Rendered::Convert(sql) => panic!("{value:?} as {kind:?} needs {sql}"),
        }
    }

    #[test]
    fn values_matching_their_letter_print_directly() {
        assert_eq!(done(ColumnKind::Integer, &Value::Integer(-42)), "-42");
        assert_eq!(done(ColumnKind::Text, &Value::from("a b")), "a b");
        assert_eq!(done(ColumnKind::Text, &Value::Integer(7)), "7");
        assert_eq!(done(ColumnKind::Real, &Value::Null), "NULL");
        assert_eq!(done(ColumnKind::Integer, &Value::Null), "NULL");
        assert_eq!(done(ColumnKind::Text, &Value::from("")), "(empty)");
        assert_eq!(done(ColumnKind::Text, &Value::from("é\t")), "@@@");
    }

    #[test]
    fn reals_in_integer_columns_truncate_and_saturate() {
        assert_eq!(done(ColumnKind::Integer, &Value::Real(2.9)), "2");
        assert_eq!(done(ColumnKind::Integer, &Value::Real(-2.9)), "-2");
        assert_eq!(
            done(ColumnKind::Integer, &Value::Real(1e30)),
            i64::MAX.to_string()
        );
    }

    #[test]
    fn other_conversions_are_left_to_sqlite() {
        assert_eq!(
            render(ColumnKind::Integer, &Value::from("12abc")),
            Rendered::Convert(CAST_TO_INTEGER)
        );
        assert_eq!(
            render(ColumnKind::Text, &Value::Real(0.5)),
            Rendered::Convert(CAST_TO_TEXT)
        );
        assert_eq!(
            render(ColumnKind::Real, &Value::Integer(1)),
            Rendered::Convert(PRINT_REAL)
        );
    }

    #[test]
    fn letters_round_trip() {
        for letter in ['I', 'T', 'R'] {
            assert_eq!(ColumnKind::from_letter(letter).unwrap().letter(), letter);
        }
        assert_eq!(ColumnKind::from_letter('X'), None);
    }
}
