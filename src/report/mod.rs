//! Reports over the ledger: `history`, `show` and read-only `query`. Each report is a
//! serialisable value (what `--json` prints) with a plain-text rendering for people.

pub mod query;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::ledger::Ledger;
use crate::timefmt::{human_bytes, human_duration_ms, rfc3339_ms};
use crate::{Error, Result};

/// One output of a build.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub path: String,
}

/// One build, as `history` and `show` list it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildEntry {
    pub id: i64,
    pub drv_path: String,
    pub name: String,
    pub system: Option<String>,
    pub outputs: Vec<Output>,
    pub started_at: Option<String>,
    pub finished_at: String,
    pub duration_ms: Option<i64>,
    pub status: String,
    pub source: String,
    pub session_id: Option<i64>,
    pub machine: Option<String>,
    pub peak_rss_bytes: Option<i64>,
    pub cpu_user_ms: Option<i64>,
    pub cpu_system_ms: Option<i64>,
    pub hook_recorded_at: Option<String>,
}

/// Which builds `history` lists.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub limit: Option<u32>,
    /// Case-insensitive substring of the derivation name.
    pub name: Option<String>,
}

const BUILD_COLUMNS: &str = "b.id, b.drv_path, d.name, d.system, b.started_ms, b.finished_ms,
    b.duration_ms, b.status, b.source, b.session_id, b.machine, b.peak_rss_bytes,
    b.cpu_user_ms, b.cpu_system_ms, b.hook_recorded_ms";

fn build_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BuildEntry> {
    Ok(BuildEntry {
        id: row.get(0)?,
        drv_path: row.get(1)?,
        name: row.get(2)?,
        system: row.get(3)?,
        outputs: Vec::new(),
        started_at: row.get::<_, Option<i64>>(4)?.map(rfc3339_ms),
        finished_at: rfc3339_ms(row.get(5)?),
        duration_ms: row.get(6)?,
        status: row.get(7)?,
        source: row.get(8)?,
        session_id: row.get(9)?,
        machine: row.get(10)?,
        peak_rss_bytes: row.get(11)?,
        cpu_user_ms: row.get(12)?,
        cpu_system_ms: row.get(13)?,
        hook_recorded_at: row.get::<_, Option<i64>>(14)?.map(rfc3339_ms),
    })
}

fn attach_outputs(ledger: &Ledger, builds: &mut [BuildEntry]) -> Result<()> {
    let mut stmt = ledger
        .conn()
        .prepare_cached(
            "SELECT output_name, path FROM build_outputs WHERE build_id = ?1 ORDER BY output_name",
        )
        .map_err(|e| ledger.err(e))?;
    for build in builds {
        build.outputs = stmt
            .query_map([build.id], |row| {
                Ok(Output {
                    name: row.get(0)?,
                    path: row.get(1)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| ledger.err(e))?;
    }
    Ok(())
}

/// Recent builds, newest first.
pub fn history(ledger: &Ledger, filter: &HistoryFilter) -> Result<Vec<BuildEntry>> {
    let sql = format!(
        "SELECT {BUILD_COLUMNS} FROM builds b JOIN derivations d ON d.drv_path = b.drv_path
         WHERE ?1 IS NULL OR instr(lower(d.name), lower(?1)) > 0
         ORDER BY b.finished_ms DESC, b.id DESC LIMIT ?2"
    );
    let limit = filter.limit.map(i64::from).unwrap_or(-1);
    let mut builds: Vec<BuildEntry> = ledger
        .conn()
        .prepare(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(params![filter.name, limit], build_from_row)?
                .collect()
        })
        .map_err(|e| ledger.err(e))?;
    attach_outputs(ledger, &mut builds)?;
    Ok(builds)
}

/// Plain-text rendering of a history: one build per line.
pub fn render_history(builds: &[BuildEntry]) -> String {
    let mut out = String::new();
    if builds.is_empty() {
        out.push_str("no builds recorded yet\n");
        return out;
    }
    out.push_str(&format!(
        "{:<20}  {:>8}  {:<11}  {:<7}  {}\n",
        "FINISHED (UTC)", "DURATION", "STATUS", "SOURCE", "NAME"
    ));
    for b in builds {
        let finished = b
            .finished_at
            .get(..19)
            .unwrap_or(&b.finished_at)
            .replace('T', " ");
        let duration = b
            .duration_ms
            .map(human_duration_ms)
            .unwrap_or_else(|| "?".into());
        out.push_str(&format!(
            "{finished:<20}  {duration:>8}  {:<11}  {:<7}  {}\n",
            b.status, b.source, b.name
        ));
    }
    out
}

/// What the store and the ledger know of one store path.
#[derive(Debug, Clone, Serialize)]
pub struct StorePathEntry {
    pub path: String,
    pub drv_path: Option<String>,
    pub nar_size: Option<i64>,
    pub registered_at: Option<String>,
    pub locally_built: Option<bool>,
}

/// Everything known of one .drv or output path.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    pub drv_path: String,
    pub name: String,
    pub system: Option<String>,
    pub first_seen_at: String,
    /// Every recorded build of this derivation, newest first.
    pub builds: Vec<BuildEntry>,
    pub store_paths: Vec<StorePathEntry>,
}

/// Finds the derivation of `path` (a .drv or an output path) and all that is known of it.
pub fn show(ledger: &Ledger, path: &str) -> Result<ShowReport> {
    let conn = ledger.conn();
    let drv_path: String = if path.ends_with(".drv") {
        path.to_string()
    } else {
        ledger
            .deriver_of(path)?
            .ok_or_else(|| Error::NotFound(path.to_string()))?
    };
    let (name, system, first_seen): (String, Option<String>, i64) = conn
        .query_row(
            "SELECT name, system, first_seen_ms FROM derivations WHERE drv_path = ?1",
            [&drv_path],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(|e| ledger.err(e))?
        .ok_or_else(|| Error::NotFound(path.to_string()))?;
    let sql = format!(
        "SELECT {BUILD_COLUMNS} FROM builds b JOIN derivations d ON d.drv_path = b.drv_path
         WHERE b.drv_path = ?1 ORDER BY b.finished_ms DESC, b.id DESC"
    );
    let mut builds: Vec<BuildEntry> = conn
        .prepare(&sql)
        .and_then(|mut stmt| stmt.query_map([&drv_path], build_from_row)?.collect())
        .map_err(|e| ledger.err(e))?;
    attach_outputs(ledger, &mut builds)?;
    let store_paths = conn
        .prepare(
            "SELECT DISTINCT s.path, s.drv_path, s.nar_size, s.registered_ms, s.locally_built
             FROM store_paths s JOIN build_outputs o ON o.path = s.path
             JOIN builds b ON b.id = o.build_id WHERE b.drv_path = ?1 ORDER BY s.path",
        )
        .and_then(|mut stmt| {
            stmt.query_map([&drv_path], |row| {
                Ok(StorePathEntry {
                    path: row.get(0)?,
                    drv_path: row.get(1)?,
                    nar_size: row.get(2)?,
                    registered_at: row.get::<_, Option<i64>>(3)?.map(rfc3339_ms),
                    locally_built: row.get::<_, Option<i64>>(4)?.map(|v| v != 0),
                })
            })?
            .collect()
        })
        .map_err(|e| ledger.err(e))?;
    Ok(ShowReport {
        drv_path,
        name,
        system,
        first_seen_at: rfc3339_ms(first_seen),
        builds,
        store_paths,
    })
}

/// Plain-text rendering of [`show`].
pub fn render_show(report: &ShowReport) -> String {
    let mut out = format!(
        "{}\n  derivation  {}\n  system      {}\n  first seen  {}\n",
        report.name,
        report.drv_path,
        report.system.as_deref().unwrap_or("?"),
        report.first_seen_at
    );
    if let Some(latest) = report.builds.first() {
        out.push_str("  outputs\n");
        for o in &latest.outputs {
            let size = report
                .store_paths
                .iter()
                .find(|s| s.path == o.path)
                .and_then(|s| s.nar_size)
                .map(|n| format!("  ({})", human_bytes(n)))
                .unwrap_or_default();
            out.push_str(&format!("    {:<8} {}{size}\n", o.name, o.path));
        }
    }
    out.push_str(&format!("  builds ({})\n", report.builds.len()));
    for b in &report.builds {
        let duration = b
            .duration_ms
            .map(human_duration_ms)
            .unwrap_or_else(|| "?".into());
        let rss = b
            .peak_rss_bytes
            .map(|n| format!("  peak {}", human_bytes(n)))
            .unwrap_or_default();
        out.push_str(&format!(
            "    {}  {:>8}  {:<11} {}{rss}\n",
            b.finished_at, duration, b.status, b.source
        ));
    }
    out
}
