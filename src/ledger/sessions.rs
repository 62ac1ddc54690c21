//! The wrapper's sessions in the ledger: one `sessions` row per `nix-ledger build` (or
//! switch…), opened before Nix starts so that even a crash leaves a trace, and closed at
//! the end; its builds go through [`record_build`] (merged with the hook's records).

use rusqlite::{params, Transaction};

use super::model::{BuildStatus, SessionKind, SessionStatus};
use super::record::{record_build, BuildRecord};
use super::Ledger;
use crate::{Error, Result};

/// What is known of a session when it starts.
#[derive(Debug, Clone)]
pub struct SessionOpening {
    pub kind: SessionKind,
    /// The `nix` command line as run.
    pub command: Vec<String>,
    pub cwd: Option<String>,
    pub started_ms: i64,
    pub hostname: Option<String>,
    /// The wrapper's process id: `doctor` tells a session left `running` by a crash from
    /// one still running by it.
    pub pid: u32,
}

/// What is known of a session when it ends.
#[derive(Debug, Clone)]
pub struct SessionClosing {
    pub finished_ms: i64,
    pub status: SessionStatus,
    pub exit_code: i32,
    pub nix_version: Option<String>,
    pub max_jobs: Option<i64>,
    pub cores: Option<i64>,
    pub host_cores: Option<i64>,
    pub host_memory_bytes: Option<i64>,
    pub built: i64,
    pub substituted: i64,
    pub failed: i64,
    pub downloaded_bytes: i64,
    /// How long Nix evaluated before its last realisation began (import-from-derivation
    /// builds included), of which `ifd_ms` in such builds, and the downloads evaluation
    /// made; `None` when unknown.
    pub eval_ms: Option<i64>,
    pub ifd_ms: Option<i64>,
    pub eval_fetches: Option<i64>,
}

impl SessionClosing {
    /// A closing with only the outcome set.
    pub fn new(finished_ms: i64, status: SessionStatus, exit_code: i32) -> SessionClosing {
        SessionClosing {
            finished_ms,
            status,
            exit_code,
            nix_version: None,
            max_jobs: None,
            cores: None,
            host_cores: None,
            host_memory_bytes: None,
            built: 0,
            substituted: 0,
            failed: 0,
            downloaded_bytes: 0,
            eval_ms: None,
            ifd_ms: None,
            eval_fetches: None,
        }
    }
}

/// A build recorded earlier in the session that the log later said otherwise of (an
/// error message naming it, after the early record).
#[derive(Debug, Clone)]
pub struct Restatement {
    pub build_id: i64,
    pub status: BuildStatus,
    pub log_tail: Option<String>,
}

impl Ledger {
    /// Inserts a session's row, status `running`; returns its id.
    pub fn open_session(&self, s: &SessionOpening) -> Result<i64> {
        let command = serde_json::to_string(&s.command).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "INSERT INTO sessions (kind, command, cwd, started_ms, hostname, status, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.kind.as_str(),
                    command,
                    s.cwd,
                    s.started_ms,
                    s.hostname,
                    SessionStatus::Running.as_str(),
                    s.pid
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a session's builds (each carrying its `session_id`) in one transaction,
    /// each merged with the hook's record of it if that was ingested; returns each
    /// record's row id, in order.
    pub fn record_session_builds(&mut self, records: &[BuildRecord]) -> Result<Vec<i64>> {
        let path = self.path.clone();
        let err = |e| Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        let rows = record_rows(&tx, records).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(rows)
    }

    /// Ends session `id` in one transaction: restates builds recorded before, records
    /// the builds not recorded yet (each carrying its `session_id`), and closes the session's row. Nothing is written when
    /// the session's row is not there.
    pub fn finish_session(
        &mut self,
        id: i64,
        restated: &[Restatement],
        records: &[BuildRecord],
        c: &SessionClosing,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        for r in restated {
            tx.prepare_cached("UPDATE builds SET status = ?2, log_tail = ?3 WHERE id = ?1")
                .and_then(|mut stmt| {
                    stmt.execute(params![r.build_id, r.status.as_str(), r.log_tail])
                })
                .map_err(err)?;
        }
        record_rows(&tx, records).map_err(err)?;
        let closed = tx
            .execute(
                "UPDATE sessions SET finished_ms = ?2, status = ?3, exit_code = ?4, nix_version = ?5,
                     max_jobs = ?6, cores = ?7, host_cores = ?8, host_memory_bytes = ?9,
                     built_count = ?10, substituted_count = ?11, failed_count = ?12,
                     downloaded_bytes = ?13, eval_ms = ?14, ifd_ms = ?15, eval_fetches = ?16
                 WHERE id = ?1",
                params![
                    id,
                    c.finished_ms,
                    c.status.as_str(),
                    c.exit_code,
                    c.nix_version,
                    c.max_jobs,
                    c.cores,
                    c.host_cores,
                    c.host_memory_bytes,
                    c.built,
                    c.substituted,
                    c.failed,
                    c.downloaded_bytes,
                    c.eval_ms,
                    c.ifd_ms,
                    c.eval_fetches
                ],
            )
            .map_err(err)?;
        if closed != 1 {
            // Dropping the transaction takes back what it wrote.
            return Err(Error::NotFound(format!(
                "session {id} in {}",
                path.display()
            )));
        }
        tx.commit().map_err(err)
    }
}

/// A session still marked `running`.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub id: i64,
    pub started_ms: i64,
    /// The wrapper's process id (`None` for sessions recorded before it was kept).
    pub pid: Option<u32>,
}

impl Ledger {
    /// The sessions recorded on the host `hostname` that are still marked `running`.
    pub fn running_sessions(&self, hostname: Option<&str>) -> Result<Vec<OpenSession>> {
        self.conn
            .prepare(
                "SELECT id, started_ms, pid FROM sessions
                 WHERE status = ?1 AND (hostname IS ?2 OR hostname IS NULL) AND origin IS NULL
                 ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![SessionStatus::Running.as_str(), hostname], |r| {
                    Ok(OpenSession {
                        id: r.get(0)?,
                        started_ms: r.get(1)?,
                        pid: r.get(2)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Marks sessions whose wrapper is gone as interrupted (they never recorded an end).
    pub fn close_abandoned_sessions(&mut self, ids: &[i64]) -> Result<usize> {
        let path = self.path.clone();
        let err = |e| Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        let mut closed = 0;
        for id in ids {
            closed += tx
                .execute(
                    "UPDATE sessions SET status = ?2 WHERE id = ?1 AND status = ?3",
                    params![
                        id,
                        SessionStatus::Interrupted.as_str(),
                        SessionStatus::Running.as_str()
                    ],
                )
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(closed)
    }
}

fn record_rows(tx: &Transaction<'_>, records: &[BuildRecord]) -> rusqlite::Result<Vec<i64>> {
    records
        .iter()
        .map(|rec| record_build(tx, rec).map(|r| r.build_id()))
        .collect()
}
