//! The user's own SQL (`nix-ledger query`), read-only, rows streamed as SQLite yields
//! them so that a large answer is neither held in memory nor late.
//!
//! Three locks keep it read-only: the caller opens the ledger read-only, `query_only` is
//! on, and a statement SQLite does not call read-only is refused before it runs, with an
//! error that says so instead of SQLite's "attempt to write a readonly database".

use rusqlite::types::ValueRef;
use serde_json::Value;

use super::Ledger;
use crate::{Error, Result};

/// Where the rows of a query go, as they come.
pub trait RowSink {
    /// Called once, before any row, with the column names.
    fn columns(&mut self, names: &[String]) -> Result<()>;
    /// Called with each row's values: integers, reals, text, blobs as hex, NULL.
    fn row(&mut self, values: &[Value]) -> Result<()>;
}

impl Ledger {
    /// Runs one read-only statement, handing the columns and then each row to `sink` as
    /// SQLite yields them. An error from the sink stops the query and is returned.
    pub fn query_read_only(&self, sql: &str, sink: &mut dyn RowSink) -> Result<()> {
        let bad =
            |e: rusqlite::Error| Error::Sql(format!("query {:?}: {}", short(sql), one_line(&e)));
        if sql.trim().is_empty() {
            return Err(Error::Sql(
                "query: empty; give one SELECT (or other read-only) statement".into(),
            ));
        }
        self.conn
            .pragma_update(None, "query_only", true)
            .map_err(|e| self.err(e))?;
        let mut stmt = self.conn.prepare(sql).map_err(bad)?;
        if !stmt.readonly() && !is_pragma_read(sql) {
            return Err(Error::QueryRefused(format!(
                "{:?} would change the ledger; query runs read-only statements only (SELECT, WITH, read-only PRAGMA)",
                short(sql)
            )));
        }
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let width = names.len();
        sink.columns(&names)?;
        let mut rows = stmt.query([]).map_err(bad)?;
        let mut values = Vec::with_capacity(width);
        while let Some(r) = rows.next().map_err(bad)? {
            values.clear();
            for i in 0..width {
                values.push(match r.get_ref(i) {
                    Ok(ValueRef::Null) | Err(_) => Value::Null,
                    Ok(ValueRef::Integer(n)) => Value::from(n),
                    Ok(ValueRef::Real(f)) => Value::from(f),
                    Ok(ValueRef::Text(t)) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    Ok(ValueRef::Blob(b)) => Value::from(hex(b)),
                });
            }
            sink.row(&values)?;
        }
        Ok(())
    }
}

/// The read form of a pragma (`PRAGMA journal_mode`, `PRAGMA table_info(builds)`): SQLite
/// does not call every one read-only, but without `=` a pragma sets nothing, and the
/// connection is read-only and `query_only` besides.
fn is_pragma_read(sql: &str) -> bool {
    let sql = sql.trim().trim_end_matches(';').trim();
    sql.get(..6)
        .is_some_and(|head| head.eq_ignore_ascii_case("pragma"))
        && !sql.contains('=')
        && !sql.contains(';')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The statement as an error names it: on one line, cut after 60 characters.
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
