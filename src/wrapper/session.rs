//! The wrapper's rows in the ledger: the `sessions` row of one run (opened before Nix
//! starts so that even a crash leaves a trace, closed at the end), its builds through
//! [`record_build`] (merged with the hook's records), and the expected duration of a
//! derivation from earlier builds of the same name.

use rusqlite::{params, OptionalExtension, Transaction};

use super::state::FinishedBuild;
use crate::ledger::record::{record_build, BuildRecord, Source, Status};
use crate::ledger::Ledger;
use crate::Result;

/// What is known of the session when it starts.
#[derive(Debug, Clone)]
pub struct Opening {
    pub kind: String,
    pub command: Vec<String>,
    pub cwd: Option<String>,
    pub started_ms: i64,
    pub hostname: Option<String>,
}

/// What is known when it ends.
#[derive(Debug, Clone, Default)]
pub struct Closing {
    pub finished_ms: i64,
    /// `succeeded`, `failed` or `interrupted`.
    pub status: &'static str,
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
}

/// Inserts the session's row, status `running`; returns its id.
pub fn open(ledger: &Ledger, s: &Opening) -> Result<i64> {
    let command = serde_json::to_string(&s.command).unwrap_or_else(|_| "[]".into());
    ledger
        .conn()
        .execute(
            "INSERT INTO sessions (kind, command, cwd, started_ms, hostname) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.kind, command, s.cwd, s.started_ms, s.hostname],
        )
        .map_err(|e| ledger.err(e))?;
    Ok(ledger.conn().last_insert_rowid())
}

/// A substitution whose deriver is known.
#[derive(Debug, Clone)]
pub struct SubstitutedDrv {
    pub drv_path: String,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// Records builds and substitutions of session `id` in one transaction (each merged with
/// the hook's record of it, if ingested); returns each build's row id, in order.
pub fn record(
    ledger: &mut Ledger,
    id: i64,
    builds: &[FinishedBuild],
    substituted: &[SubstitutedDrv],
) -> Result<Vec<i64>> {
    let path = ledger.path().to_path_buf();
    let err = |e| crate::Error::ledger(&path, e);
    let tx = ledger.conn_mut().transaction().map_err(err)?;
    let rows = record_rows(&tx, id, builds, substituted).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(rows)
}

/// Ends session `id` in one transaction: rewrites the outcome of builds recorded before
/// that the stream later said otherwise of (`(row, build)`, e.g. an error naming it),
/// records the builds and substitutions not recorded yet, and closes the session's row.
pub fn finish(
    ledger: &mut Ledger,
    id: i64,
    restated: &[(i64, &FinishedBuild)],
    builds: &[FinishedBuild],
    substituted: &[SubstitutedDrv],
    c: &Closing,
) -> Result<()> {
    let path = ledger.path().to_path_buf();
    let err = |e| crate::Error::ledger(&path, e);
    let tx = ledger.conn_mut().transaction().map_err(err)?;
    for (row, b) in restated {
        tx.prepare_cached("UPDATE builds SET status = ?2, log_tail = ?3 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![row, b.status.as_str(), log_tail(b)]))
            .map_err(err)?;
    }
    record_rows(&tx, id, builds, substituted).map_err(err)?;
    tx.execute(
        "UPDATE sessions SET finished_ms = ?2, status = ?3, exit_code = ?4, nix_version = ?5,
             max_jobs = ?6, cores = ?7, host_cores = ?8, host_memory_bytes = ?9,
             built_count = ?10, substituted_count = ?11, failed_count = ?12,
             downloaded_bytes = ?13
         WHERE id = ?1",
        params![
            id,
            c.finished_ms,
            c.status,
            c.exit_code,
            c.nix_version,
            c.max_jobs,
            c.cores,
            c.host_cores,
            c.host_memory_bytes,
            c.built,
            c.substituted,
            c.failed,
            c.downloaded_bytes
        ],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}

fn record_rows(
    tx: &Transaction<'_>,
    id: i64,
    builds: &[FinishedBuild],
    substituted: &[SubstitutedDrv],
) -> rusqlite::Result<Vec<i64>> {
    let mut rows = Vec::with_capacity(builds.len());
    for b in builds {
        let mut rec = BuildRecord::new(&b.drv_path, Source::Wrapper, b.status, b.finished_ms);
        rec.session_id = Some(id);
        rec.started_ms = Some(b.started_ms);
        rec.timing_source = Some("wrapper");
        rec.machine = b.machine.clone();
        rec.log_lines = Some(b.log_lines as i64);
        rec.log_tail = log_tail(b);
        if let Some(u) = b.usage {
            rec.peak_rss_bytes = Some(u.peak_rss_bytes as i64);
            rec.cpu_user_ms = Some(u.cpu_user_ms as i64);
            rec.cpu_system_ms = Some(u.cpu_system_ms as i64);
        }
        rows.push(record_build(tx, &rec)?.build_id());
    }
    for s in substituted {
        let mut rec = BuildRecord::new(
            &s.drv_path,
            Source::Wrapper,
            Status::Substituted,
            s.finished_ms,
        );
        rec.session_id = Some(id);
        rec.started_ms = Some(s.started_ms);
        rec.timing_source = Some("wrapper");
        record_build(tx, &rec)?;
    }
    Ok(rows)
}

/// What is kept of a build's log: its tail, for failed builds only.
fn log_tail(b: &FinishedBuild) -> Option<String> {
    if b.status != Status::Failed {
        return None;
    }
    let mut tail = b.tail.joined();
    if b.interrupted {
        tail.push_str("(interrupted)\n");
    }
    Some(tail)
}

/// The average duration of the last few successful builds of derivations named `name`.
pub fn expected_ms(ledger: &Ledger, name: &str) -> Option<i64> {
    let mut stmt = ledger
        .conn()
        .prepare_cached(
            "SELECT CAST(avg(duration_ms) AS INTEGER) FROM (
                 SELECT b.duration_ms FROM builds b JOIN derivations d USING (drv_path)
                 WHERE d.name = ?1 AND b.status = 'built' AND b.duration_ms IS NOT NULL
                 ORDER BY b.finished_ms DESC LIMIT 5)",
        )
        .ok()?;
    stmt.query_row([name], |row| row.get::<_, Option<i64>>(0))
        .optional()
        .ok()
        .flatten()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::state::Tail;

    fn build(drv: &str, start: i64, stop: i64, status: Status) -> FinishedBuild {
        let mut tail = Tail::default();
        tail.push("oops");
        FinishedBuild {
            drv_path: drv.into(),
            name: "t-a".into(),
            machine: None,
            started_ms: start,
            finished_ms: stop,
            log_lines: 1,
            tail,
            status,
            pending: false,
            interrupted: false,
            usage: None,
        }
    }

    /// A new ledger (kept alive by the returned directory) with one open session.
    fn ledger_with_session() -> (tempfile::TempDir, Ledger, i64) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let id = open(
            &ledger,
            &Opening {
                kind: "build".into(),
                command: vec!["nix".into(), "build".into()],
                cwd: None,
                started_ms: 0,
                hostname: None,
            },
        )
        .unwrap();
        (dir, ledger, id)
    }

    #[test]
    fn a_session_records_its_builds_and_history_gives_the_expected_time() {
        let (_dir, mut ledger, id) = ledger_with_session();
        let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t-a.drv";
        let b = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-t-a.drv";
        let builds = [
            build(a, 0, 1_000, Status::Built),
            build(b, 0, 3_000, Status::Built),
            build(b, 5_000, 6_000, Status::Failed),
        ];
        let closing = Closing {
            finished_ms: 7_000,
            status: "failed",
            exit_code: 1,
            built: 2,
            failed: 1,
            ..Closing::default()
        };
        finish(&mut ledger, id, &[], &builds, &[], &closing).unwrap();
        assert_eq!(expected_ms(&ledger, "t-a"), Some(2_000));
        assert_eq!(expected_ms(&ledger, "never-built"), None);
        let (status, tail): (String, String) = ledger
            .conn()
            .query_row(
                "SELECT s.status, b.log_tail FROM sessions s JOIN builds b ON b.session_id = s.id WHERE b.status = 'failed'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), tail.as_str()), ("failed", "oops\n"));
    }

    #[test]
    fn a_recorded_build_the_stream_later_calls_failed_is_restated_in_place() {
        let (_dir, mut ledger, id) = ledger_with_session();
        let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-t-a.drv";
        let mut b = build(a, 0, 1_000, Status::Built);
        let rows = record(&mut ledger, id, std::slice::from_ref(&b), &[]).unwrap();
        b.status = Status::Failed;
        let stored = |ledger: &Ledger| -> Vec<(String, Option<String>)> {
            ledger
                .conn()
                .prepare("SELECT status, log_tail FROM builds")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        // One transaction: a session row that cannot be written takes the rest back.
        let invalid = Closing::default();
        assert!(finish(&mut ledger, id, &[(rows[0], &b)], &[], &[], &invalid).is_err());
        assert_eq!(stored(&ledger), vec![("built".to_string(), None)]);
        let closing = Closing {
            status: "failed",
            ..Closing::default()
        };
        finish(&mut ledger, id, &[(rows[0], &b)], &[], &[], &closing).unwrap();
        assert_eq!(
            stored(&ledger),
            vec![("failed".to_string(), Some("oops\n".to_string()))]
        );
    }
}
