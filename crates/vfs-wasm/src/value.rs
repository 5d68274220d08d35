//! SQL values and result rows as the host sees them: owned copies, because
//! anything pointing into guest memory would dangle after the next guest
//! call.

/// One SQL value (parameter or result column).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// The result of a query: column names and rows of values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Every row, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the query returned no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
