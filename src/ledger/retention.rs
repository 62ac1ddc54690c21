//! Retention's tables (migration 0007): garbage-collection runs and their deletions,
//! profile generations removed, and binary-cache answers; and the reads that price a
//! path (what its build took, what its name usually takes, how fast downloads go).
//!
//! A run's deletions are written before each `nix-store --delete` batch starts
//! (`pending`) and settled when it ends, each in its own transaction, so a run killed at
//! any moment leaves rows that say what was about to go; [`Ledger::pending_deletions`]
//! lets the next command settle them against the store.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::model::BuildStatus;
use super::Ledger;
use crate::time::{now_ms, rfc3339_ms};
use crate::Result;

/// What became of a planned deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeletionState {
    /// Its batch has started (or was about to) and has not been settled.
    Pending,
    Deleted,
    /// Nix refused: the path was alive (a new root, a running build).
    Refused,
    /// Dropped from the plan because it became live before its batch ran.
    Kept,
    /// Not attempted: the run stopped first.
    Skipped,
}

impl DeletionState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionState::Pending => "pending",
            DeletionState::Deleted => "deleted",
            DeletionState::Refused => "refused",
            DeletionState::Kept => "kept",
            DeletionState::Skipped => "skipped",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Finished,
    Interrupted,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

/// The start of a run.
#[derive(Debug, Clone)]
pub struct RunStart<'a> {
    /// `command` or `maintenance`.
    pub trigger: &'a str,
    /// The policy as JSON.
    pub policy: &'a str,
    pub store_dir: &'a str,
    pub planned_paths: i64,
    pub planned_bytes: i64,
}

/// One path a run plans to delete.
#[derive(Debug, Clone)]
pub struct PlannedDeletion<'a> {
    pub path: &'a str,
    pub unit: i64,
    pub nar_size: i64,
    pub unit_cost_ms: Option<i64>,
    pub cost_basis: &'a str,
    pub reason: &'a str,
}

/// A run as `nix-ledger store` and the reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct GcRunSummary {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub trigger: String,
    pub policy: serde_json::Value,
    pub planned_paths: i64,
    pub deleted_paths: i64,
    /// Whole builds deleted (a .drv with its outputs is one).
    pub deleted_builds: i64,
    pub freed_bytes: i64,
    pub cost_to_restore_ms: i64,
    pub unknown_cost_builds: i64,
    pub refused_paths: i64,
    pub generations_removed: i64,
    pub error: Option<String>,
}

/// A recorded deletion of one path, for `nix-ledger show`.
#[derive(Debug, Clone, Serialize)]
pub struct DeletionRecord {
    pub run_id: i64,
    pub path: String,
    pub state: String,
    pub at: Option<String>,
    pub reason: String,
    pub unit_cost_ms: Option<i64>,
    pub cost_basis: String,
}

const BUILT: &str = BuildStatus::Built.as_str();

impl Ledger {
    /// Opens a run; its id.
    pub fn begin_gc_run(&mut self, start: &RunStart<'_>) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO gc_runs (started_ms, trigger, policy, store_dir, pid, planned_paths, planned_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    now_ms(),
                    start.trigger,
                    start.policy,
                    start.store_dir,
                    std::process::id(),
                    start.planned_paths,
                    start.planned_bytes
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a generation the run removes (`removed_ms` when nix-env did).
    pub fn record_generation(
        &mut self,
        run: i64,
        profile: &str,
        generation: u64,
        path: &str,
        made_ms: i64,
        removed_ms: Option<i64>,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO gc_generations (run_id, profile, generation, path, made_ms, removed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO UPDATE SET removed_ms = excluded.removed_ms",
                params![run, profile, generation as i64, path, made_ms, removed_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes a batch's paths as `pending`, in one transaction, before it runs.
    pub fn queue_batch(
        &mut self,
        run: i64,
        batch: i64,
        rows: &[PlannedDeletion<'_>],
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| crate::Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO gc_deletions (run_id, path, batch, unit, nar_size, unit_cost_ms,
                         cost_basis, reason, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending')
                     ON CONFLICT DO UPDATE SET batch = excluded.batch, state = 'pending'",
                )
                .map_err(err)?;
            for r in rows {
                stmt.execute(params![
                    run,
                    r.path,
                    batch,
                    r.unit,
                    r.nar_size,
                    r.unit_cost_ms,
                    r.cost_basis,
                    r.reason
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Settles paths of a run, in one transaction.
    pub fn settle_deletions(&mut self, run: i64, updates: &[(&str, DeletionState)]) -> Result<()> {
        let path = self.path.clone();
        let err = |e| crate::Error::ledger(&path, e);
        let now = now_ms();
        let tx = self.write_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE gc_deletions SET state = ?3, done_ms = ?4 WHERE run_id = ?1 AND path = ?2",
                )
                .map_err(err)?;
            for (p, state) in updates {
                stmt.execute(params![run, p, state.as_str(), now])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Closes a run, its totals summed from its rows.
    pub fn finish_gc_run(
        &mut self,
        run: i64,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE gc_runs SET finished_ms = ?2, status = ?3, error = ?4,
                     deleted_paths = (SELECT count(*) FROM gc_deletions WHERE run_id = ?1 AND state = 'deleted'),
                     freed_bytes = (SELECT coalesce(sum(nar_size), 0) FROM gc_deletions
                                    WHERE run_id = ?1 AND state = 'deleted'),
                     cost_to_restore_ms = (SELECT coalesce(sum(c), 0) FROM
                         (SELECT max(unit_cost_ms) AS c FROM gc_deletions
                          WHERE run_id = ?1 AND state = 'deleted' GROUP BY unit)),
                     unknown_cost_builds = (SELECT count(*) FROM
                         (SELECT unit FROM gc_deletions WHERE run_id = ?1 AND state = 'deleted'
                          GROUP BY unit HAVING max(unit_cost_ms) IS NULL)),
                     refused_paths = (SELECT count(*) FROM gc_deletions WHERE run_id = ?1 AND state = 'refused'),
                     generations_removed = (SELECT count(*) FROM gc_generations
                                            WHERE run_id = ?1 AND removed_ms IS NOT NULL)
                 WHERE id = ?1",
                params![run, now_ms(), status.as_str(), error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs still marked running: (id, the pid that ran it).
    pub fn unfinished_gc_runs(&self) -> Result<Vec<(i64, Option<i64>)>> {
        self.conn
            .prepare("SELECT id, pid FROM gc_runs WHERE status = 'running' ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.err(e))
    }

    /// A run's paths still `pending`.
    pub fn pending_deletions(&self, run: i64) -> Result<Vec<String>> {
        self.conn
            .prepare("SELECT path FROM gc_deletions WHERE run_id = ?1 AND state = 'pending'")
            .and_then(|mut s| s.query_map([run], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// One run.
    pub fn gc_run(&self, run: i64) -> Result<Option<GcRunSummary>> {
        self.gc_runs_where("id = ?1", &run, 1).map(|mut v| v.pop())
    }

    /// The latest runs, newest first.
    pub fn recent_gc_runs(&self, limit: usize) -> Result<Vec<GcRunSummary>> {
        self.gc_runs_where("?1 = ?1", &0, limit)
    }

    /// The newest `limit` runs started at or after `since_ms`, newest first.
    pub fn gc_runs_since(&self, since_ms: i64, limit: usize) -> Result<Vec<GcRunSummary>> {
        self.gc_runs_where("started_ms >= ?1", &since_ms, limit)
    }

    /// The latest run started by `trigger` (`command`, `maintenance`).
    pub fn latest_gc_run(&self, trigger: &str) -> Result<Option<GcRunSummary>> {
        self.gc_runs_where("trigger = ?1", &trigger, 1)
            .map(|mut v| v.pop())
    }

    fn gc_runs_where(
        &self,
        cond: &str,
        arg: &dyn rusqlite::ToSql,
        limit: usize,
    ) -> Result<Vec<GcRunSummary>> {
        let sql = format!(
            "SELECT id, started_ms, finished_ms, status, trigger, policy, planned_paths,
                    deleted_paths, freed_bytes, cost_to_restore_ms, unknown_cost_builds,
                    refused_paths, generations_removed, error,
                    (SELECT count(DISTINCT unit) FROM gc_deletions
                     WHERE run_id = gc_runs.id AND state = 'deleted')
             FROM gc_runs WHERE {cond} ORDER BY id DESC LIMIT ?2"
        );
        self.conn
            .prepare(&sql)
            .and_then(|mut s| {
                s.query_map(params![arg, limit as i64], |r| {
                    let policy: String = r.get(5)?;
                    Ok(GcRunSummary {
                        id: r.get(0)?,
                        started_at: rfc3339_ms(r.get(1)?),
                        finished_at: r.get::<_, Option<i64>>(2)?.map(rfc3339_ms),
                        status: r.get(3)?,
                        trigger: r.get(4)?,
                        policy: serde_json::from_str(&policy).unwrap_or(serde_json::Value::Null),
                        planned_paths: r.get(6)?,
                        deleted_paths: r.get(7)?,
                        deleted_builds: r.get(14)?,
                        freed_bytes: r.get(8)?,
                        cost_to_restore_ms: r.get(9)?,
                        unknown_cost_builds: r.get(10)?,
                        refused_paths: r.get(11)?,
                        generations_removed: r.get(12)?,
                        error: r.get(13)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// When the latest run started by `trigger` started.
    pub fn last_gc_run_ms(&self, trigger: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT max(started_ms) FROM gc_runs WHERE trigger = ?1",
                [trigger],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Every recorded deletion (or attempt) of `path`, newest first.
    pub fn deletions_of(&self, path: &str) -> Result<Vec<DeletionRecord>> {
        self.conn
            .prepare(
                "SELECT run_id, path, state, done_ms, reason, unit_cost_ms, cost_basis
                 FROM gc_deletions WHERE path = ?1 ORDER BY run_id DESC",
            )
            .and_then(|mut s| {
                s.query_map([path], |r| {
                    Ok(DeletionRecord {
                        run_id: r.get(0)?,
                        path: r.get(1)?,
                        state: r.get(2)?,
                        at: r.get::<_, Option<i64>>(3)?.map(rfc3339_ms),
                        reason: r.get(4)?,
                        unit_cost_ms: r.get(5)?,
                        cost_basis: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Whether the ledger has any successful, timed build (else no cost lookup can answer).
    pub fn has_builds(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM builds WHERE status = ?1 AND duration_ms IS NOT NULL)",
                [BUILT],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// How long the latest successful, timed build that produced `output` took.
    pub fn output_build_ms(&self, output: &str) -> Result<Option<i64>> {
        self.conn
            .prepare_cached(
                "SELECT b.duration_ms FROM build_outputs o JOIN builds b ON b.id = o.build_id
                 WHERE o.path = ?1 AND b.status = ?2 AND b.duration_ms IS NOT NULL
                 ORDER BY b.finished_ms DESC LIMIT 1",
            )
            .and_then(|mut s| s.query_row(params![output, BUILT], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// How long the latest successful, timed build of `drv_path` took.
    pub fn drv_build_ms(&self, drv_path: &str) -> Result<Option<i64>> {
        self.conn
            .prepare_cached(
                "SELECT duration_ms FROM builds WHERE drv_path = ?1 AND status = ?2
                   AND duration_ms IS NOT NULL ORDER BY finished_ms DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![drv_path, BUILT], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// The download rate the wrapper's sessions measured, in bytes per second: all bytes
    /// downloaded over the sessions' whole durations (which include building, so the
    /// rate errs low and a download's cost high).
    pub fn download_rate(&self) -> Result<Option<f64>> {
        self.conn
            .query_row(
                "SELECT sum(downloaded_bytes), sum(finished_ms - started_ms) FROM sessions
                 WHERE downloaded_bytes > 0 AND finished_ms > started_ms",
                [],
                |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .map(|(bytes, ms)| match (bytes, ms) {
                (Some(b), Some(ms)) if b > 0 && ms > 0 => Some(b as f64 * 1000.0 / ms as f64),
                _ => None,
            })
            .map_err(|e| self.err(e))
    }

    /// What `substituter` answered about `paths` since `fresh_since_ms`.
    pub fn cache_answers(
        &self,
        substituter: &str,
        paths: &[&str],
        fresh_since_ms: i64,
    ) -> Result<HashMap<String, bool>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT available FROM cache_answers
                 WHERE path = ?1 AND substituter = ?2 AND checked_ms >= ?3",
            )
            .map_err(|e| self.err(e))?;
        let mut found = HashMap::new();
        for p in paths {
            if let Some(available) = stmt
                .query_row(params![p, substituter, fresh_since_ms], |r| {
                    r.get::<_, bool>(0)
                })
                .optional()
                .map_err(|e| self.err(e))?
            {
                found.insert((*p).to_string(), available);
            }
        }
        Ok(found)
    }

    /// Remembers `substituter`'s answers.
    pub fn store_cache_answers(
        &mut self,
        substituter: &str,
        answers: &HashMap<String, bool>,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| crate::Error::ledger(&path, e);
        let now = now_ms();
        let tx = self.write_transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO cache_answers (path, substituter, available, checked_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET available = excluded.available,
                         checked_ms = excluded.checked_ms",
                )
                .map_err(err)?;
            for (p, available) in answers {
                stmt.execute(params![p, substituter, available, now])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(path: &'a str, unit: i64, cost: Option<i64>) -> PlannedDeletion<'a> {
        PlannedDeletion {
            path,
            unit,
            nar_size: 100,
            unit_cost_ms: cost,
            cost_basis: if cost.is_some() { "build" } else { "unknown" },
            reason: "dead",
        }
    }

    #[test]
    fn a_run_sums_what_its_settled_rows_say() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let run = ledger
            .begin_gc_run(&RunStart {
                trigger: "command",
                policy: r#"{"max_freed":1}"#,
                store_dir: "/s",
                planned_paths: 4,
                planned_bytes: 400,
            })
            .unwrap();
        ledger
            .queue_batch(
                run,
                1,
                &[
                    row("/s/a", 1, Some(5_000)),
                    row("/s/a.drv", 1, Some(5_000)),
                    row("/s/b", 2, None),
                ],
            )
            .unwrap();
        ledger
            .queue_batch(run, 2, &[row("/s/c", 3, Some(7))])
            .unwrap();
        assert_eq!(
            ledger.unfinished_gc_runs().unwrap(),
            [(run, Some(i64::from(std::process::id())))]
        );
        ledger
            .settle_deletions(
                run,
                &[
                    ("/s/a", DeletionState::Deleted),
                    ("/s/a.drv", DeletionState::Deleted),
                    ("/s/b", DeletionState::Deleted),
                ],
            )
            .unwrap();
        assert_eq!(ledger.pending_deletions(run).unwrap(), ["/s/c"]);
        ledger
            .settle_deletions(run, &[("/s/c", DeletionState::Refused)])
            .unwrap();
        ledger
            .record_generation(run, "/p/main", 3, "/s/x", 1, Some(2))
            .unwrap();
        ledger
            .finish_gc_run(run, RunStatus::Finished, None)
            .unwrap();
        let summary = ledger.gc_run(run).unwrap().unwrap();
        assert_eq!(summary.status, "finished");
        assert_eq!(summary.deleted_paths, 3);
        assert_eq!(
            summary.deleted_builds, 2,
            "a and a.drv are one build, b another"
        );
        assert_eq!(summary.freed_bytes, 300);
        assert_eq!(summary.cost_to_restore_ms, 5_000, "one build, counted once");
        assert_eq!(summary.unknown_cost_builds, 1);
        assert_eq!(summary.refused_paths, 1);
        assert_eq!(summary.generations_removed, 1);
        assert_eq!(summary.policy["max_freed"], 1);
        assert!(ledger.unfinished_gc_runs().unwrap().is_empty());
        assert!(ledger.last_gc_run_ms("command").unwrap().is_some());
        assert_eq!(ledger.gc_runs_since(0, 10).unwrap().len(), 1);
        assert_eq!(ledger.latest_gc_run("command").unwrap().unwrap().id, run);
        assert!(ledger.latest_gc_run("maintenance").unwrap().is_none());
        assert!(ledger.gc_runs_since(now_ms() + 1, 10).unwrap().is_empty());
        assert_eq!(ledger.deletions_of("/s/c").unwrap()[0].state, "refused");
    }

    #[test]
    fn cache_answers_are_kept_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let answers: HashMap<String, bool> =
            [("/s/a".to_string(), true), ("/s/b".to_string(), false)].into();
        ledger.store_cache_answers("file:///c", &answers).unwrap();
        let got = ledger
            .cache_answers("file:///c", &["/s/a", "/s/b", "/s/c"], 0)
            .unwrap();
        assert_eq!(got, answers);
        assert!(ledger
            .cache_answers("file:///c", &["/s/a"], now_ms() + 10_000)
            .unwrap()
            .is_empty());
        assert!(ledger
            .cache_answers("https://other", &["/s/a"], 0)
            .unwrap()
            .is_empty());
        assert_eq!(ledger.download_rate().unwrap(), None);
    }
}
