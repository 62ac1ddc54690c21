//! `nix-ledger query`: read-only SQL over the ledger.
//!
//! Three locks keep it read-only: the connection is opened read-only, `query_only` is on,
//! and a statement SQLite does not call read-only is refused before it runs, with an
//! error that says so instead of SQLite's "attempt to write a readonly database".

use rusqlite::types::ValueRef;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ledger::Ledger;
use crate::{Error, Result};

/// The result of one query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl QueryResult {
    /// The rows as JSON objects keyed by column name (what `--json` prints).
    pub fn to_objects(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect();
                Value::Object(object)
            })
            .collect()
    }

    /// Tab-separated text with a header line.
    pub fn render(&self) -> String {
        let mut out = self.columns.join("\t");
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .map(|v| match v {
                    Value::Null => "NULL".to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
        out
    }
}

/// Runs one read-only statement against the ledger.
pub fn run(ledger: &Ledger, sql: &str) -> Result<QueryResult> {
    let conn = ledger.conn();
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| ledger.err(e))?;
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| Error::Sql(format!("query {:?}: {}", short(sql), one_line(&e))))?;
    if !stmt.readonly() {
        return Err(Error::QueryRefused(format!(
            "{:?} would change the ledger; query runs read-only statements only (SELECT, WITH, read-only PRAGMA)",
            short(sql)
        )));
    }
    let columns: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let width = columns.len();
    let mut rows_out = Vec::new();
    let mut rows = stmt
        .query([])
        .map_err(|e| Error::Sql(format!("query {:?}: {}", short(sql), one_line(&e))))?;
    loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                return Err(Error::Sql(format!(
                    "query {:?}: {}",
                    short(sql),
                    one_line(&e)
                )))
            }
        };
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let value = match row.get_ref(i) {
                Ok(ValueRef::Null) | Err(_) => Value::Null,
                Ok(ValueRef::Integer(n)) => Value::from(n),
                Ok(ValueRef::Real(f)) => Value::from(f),
                Ok(ValueRef::Text(t)) => Value::from(String::from_utf8_lossy(t).into_owned()),
                Ok(ValueRef::Blob(b)) => Value::from(hex(b)),
            };
            values.push(value);
        }
        rows_out.push(values);
    }
    Ok(QueryResult {
        columns,
        rows: rows_out,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 60 {
        format!("{}…", flat.chars().take(60).collect::<String>())
    } else {
        flat
    }
}

fn one_line(e: &rusqlite::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledgers() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        Ledger::open(&path).unwrap();
        (dir, Ledger::open_read_only(&path).unwrap())
    }

    #[test]
    fn selects_return_columns_and_rows() {
        let (_dir, ledger) = ledgers();
        let result = run(
            &ledger,
            "SELECT 1 AS one, 'x' AS x, NULL AS n, x'ff00' AS b",
        )
        .unwrap();
        assert_eq!(result.columns, ["one", "x", "n", "b"]);
        assert_eq!(
            result.rows,
            vec![vec![
                Value::from(1),
                Value::from("x"),
                Value::Null,
                Value::from("ff00")
            ]]
        );
        assert_eq!(result.to_objects()[0]["x"], "x");
    }

    #[test]
    fn writes_are_refused_with_a_clear_error() {
        let (_dir, ledger) = ledgers();
        for sql in [
            "DELETE FROM builds",
            "INSERT INTO sessions (kind, command, started_ms) VALUES ('b', '[]', 0)",
            "DROP TABLE builds",
            "UPDATE builds SET status = 'failed'",
            "CREATE TABLE x (y)",
        ] {
            let err = run(&ledger, sql).unwrap_err();
            assert!(matches!(err, Error::QueryRefused(_)), "{sql}: {err}");
            assert!(err.to_string().contains("read-only"), "{err}");
        }
    }

    #[test]
    fn bad_sql_is_a_one_line_error_naming_the_query() {
        let (_dir, ledger) = ledgers();
        let err = run(&ledger, "SELEC nonsense").unwrap_err().to_string();
        assert!(err.contains("SELEC nonsense"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = run(&ledger, "SELECT 1; SELECT 2").unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
    }
}
