//! `nix-ledger query`: the user's read-only SQL over the ledger, printed as tab-separated
//! text or JSON while the rows come (the ledger runs it: [`Ledger::query_read_only`]).

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ledger::raw::RowSink;
use crate::ledger::Ledger;
use crate::{Error, Result};

/// The whole result of one query, for callers that want it in memory.
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
            .map(|row| object(&self.columns, row))
            .collect()
    }

    /// Tab-separated text with a header line.
    pub fn render(&self) -> String {
        let mut out = header_line(&self.columns);
        for row in &self.rows {
            out.push_str(&text_line(row));
        }
        out
    }
}

fn object(columns: &[String], row: &[Value]) -> Value {
    let object: Map<String, Value> = columns.iter().cloned().zip(row.iter().cloned()).collect();
    Value::Object(object)
}

fn header_line(columns: &[String]) -> String {
    let mut line = columns.join("\t");
    line.push('\n');
    line
}

fn text_line(row: &[Value]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|v| match v {
            Value::Null => "NULL".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let mut line = cells.join("\t");
    line.push('\n');
    line
}

impl RowSink for QueryResult {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.columns = names.to_vec();
        Ok(())
    }

    fn row(&mut self, values: &[Value]) -> Result<()> {
        self.rows.push(values.to_vec());
        Ok(())
    }
}

/// Runs one read-only statement and keeps its whole result.
pub fn run(ledger: &Ledger, sql: &str) -> Result<QueryResult> {
    let mut result = QueryResult {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    ledger.query_read_only(sql, &mut result)?;
    Ok(result)
}

/// How `query` prints its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line, then one tab-separated line per row.
    Text,
    /// A JSON array of objects keyed by column, one object per line.
    Json,
}

/// Writes rows to a stream as they come.
struct Printer<'o> {
    format: Format,
    out: &'o mut dyn Write,
    columns: Vec<String>,
    rows: usize,
}

fn write_error(source: std::io::Error) -> Error {
    Error::Write {
        path: "standard output".into(),
        source,
    }
}

impl RowSink for Printer<'_> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.columns = names.to_vec();
        match self.format {
            Format::Text => self.out.write_all(header_line(names).as_bytes()),
            Format::Json => self.out.write_all(b"["),
        }
        .map_err(write_error)
    }

    fn row(&mut self, values: &[Value]) -> Result<()> {
        let written = match self.format {
            Format::Text => self.out.write_all(text_line(values).as_bytes()),
            Format::Json => {
                let separator: &[u8] = if self.rows == 0 { b"\n" } else { b",\n" };
                self.out.write_all(separator).and_then(|()| {
                    serde_json::to_writer(&mut *self.out, &object(&self.columns, values))
                        .map_err(std::io::Error::from)
                })
            }
        };
        self.rows += 1;
        written.map_err(write_error)
    }
}

/// Runs one read-only statement and writes each row to `out` as it comes.
pub fn stream(ledger: &Ledger, sql: &str, format: Format, out: &mut dyn Write) -> Result<()> {
    let mut printer = Printer {
        format,
        out,
        columns: Vec::new(),
        rows: 0,
    };
    ledger.query_read_only(sql, &mut printer)?;
    let Printer { out, rows, .. } = printer;
    if format == Format::Json {
        out.write_all(if rows == 0 { b"]\n" } else { b"\n]\n" })
            .map_err(write_error)?;
    }
    out.flush().map_err(write_error)
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
    fn read_only_pragmas_answer_and_setting_ones_are_refused() {
        let (_dir, ledger) = ledgers();
        let mode = run(&ledger, "PRAGMA journal_mode").unwrap();
        assert_eq!(mode.rows, vec![vec![Value::from("wal")]]);
        let columns = run(&ledger, "pragma table_info(sessions);").unwrap();
        assert!(columns.rows.len() > 5);
        for sql in ["PRAGMA user_version = 3", "PRAGMA journal_mode=DELETE"] {
            let err = run(&ledger, sql).unwrap_err();
            assert!(matches!(err, Error::QueryRefused(_)), "{sql}: {err}");
        }
        let err = run(&ledger, "  ").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
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
