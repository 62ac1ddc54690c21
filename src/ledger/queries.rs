//! The ledger's typed reads: every question a feature asks of the ledger, as a named
//! method on [`Ledger`] with its SQL beside it. Features never write SQL of their own
//! (`nix-ledger query` alone runs the user's, read-only: [`super::raw`]).

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::model::BuildStatus;
use super::{manifests, Ledger};
use crate::nix::store_path::parse_any_store;
use crate::store::manifest::Manifest;
use crate::time::rfc3339_ms;
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
    /// The remote builder it ran on (its store URI), `None` when it ran where recorded.
    pub machine: Option<String>,
    /// The fleet machine that recorded it, for rows pulled from the hub; `None` for this
    /// machine's own.
    pub recorded_by: Option<String>,
    pub peak_rss_bytes: Option<i64>,
    pub cpu_user_ms: Option<i64>,
    pub cpu_system_ms: Option<i64>,
    pub hook_recorded_at: Option<String>,
    /// Remote builds: copying to and from the builder, and connecting to it.
    pub upload_ms: Option<i64>,
    pub download_ms: Option<i64>,
    pub connect_ms: Option<i64>,
}

/// Which builds `history` lists.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub limit: Option<u32>,
    /// Case-insensitive substring of the derivation name.
    pub name: Option<String>,
    /// Only builds that ran on this machine: a remote builder (its URI, the URI without
    /// the query, or its host), or a fleet machine by its name (builds it ran itself).
    pub machine: Option<String>,
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

/// Everything known of one derivation.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    pub drv_path: String,
    pub name: String,
    pub system: Option<String>,
    pub first_seen_at: String,
    /// Every recorded build of this derivation, newest first.
    pub builds: Vec<BuildEntry>,
    pub store_paths: Vec<StorePathEntry>,
    /// What garbage collections by nix-ledger did with its .drv and outputs.
    pub gc_deletions: Vec<super::retention::DeletionRecord>,
}

/// A successful build, for the list of wasted rebuilds.
#[derive(Debug, Clone)]
pub struct BuiltRow {
    pub id: i64,
    pub drv_path: String,
    pub name: String,
    pub finished_ms: i64,
    pub duration_ms: Option<i64>,
}

const BUILD_COLUMNS: &str = "b.id, b.drv_path, d.name, d.system, b.started_ms, b.finished_ms,
    b.duration_ms, b.status, b.source, b.session_id, b.machine, b.peak_rss_bytes,
    b.cpu_user_ms, b.cpu_system_ms, b.hook_recorded_ms, b.origin_machine, b.upload_ms,
    b.download_ms, b.connect_ms";

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
        machine: row.get::<_, Option<String>>(10)?.filter(|m| !m.is_empty()),
        recorded_by: row.get(15)?,
        peak_rss_bytes: row.get(11)?,
        cpu_user_ms: row.get(12)?,
        cpu_system_ms: row.get(13)?,
        hook_recorded_at: row.get::<_, Option<i64>>(14)?.map(rfc3339_ms),
        upload_ms: row.get(16)?,
        download_ms: row.get(17)?,
        connect_ms: row.get(18)?,
    })
}

/// The status most reads select on, as stored.
const BUILT: &str = BuildStatus::Built.as_str();

impl Ledger {
    /// The .drv of the latest recorded build that produced the output path `output`.
    pub fn deriver_of(&self, output: &str) -> Result<Option<String>> {
        self.conn
            .prepare_cached(
                "SELECT b.drv_path FROM build_outputs o JOIN builds b ON b.id = o.build_id
                 WHERE o.path = ?1 ORDER BY b.finished_ms DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([output], |row| row.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// The name the ledger recorded for a derivation.
    pub fn derivation_name(&self, drv_path: &str) -> Result<Option<String>> {
        self.conn
            .prepare_cached("SELECT name FROM derivations WHERE drv_path = ?1")
            .and_then(|mut stmt| stmt.query_row([drv_path], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// When the latest recorded build (of any status) of `drv_path` finished.
    pub fn last_built_ms(&self, drv_path: &str) -> Result<Option<i64>> {
        self.conn
            .prepare_cached("SELECT max(finished_ms) FROM builds WHERE drv_path = ?1")
            .and_then(|mut stmt| stmt.query_row([drv_path], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// The latest successful builds of other derivations named `name` finished before
    /// `before_ms` (when given), one per .drv, newest first, at most `limit`: the
    /// candidates for the baseline of a rebuild. This machine's builds only: what
    /// rebuilt here is explained against what was built here (a pulled build's .drv is
    /// the other machine's).
    pub fn earlier_builds(
        &self,
        name: &str,
        drv: &str,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        self.conn
            .prepare_cached(
                "SELECT b.drv_path, max(b.finished_ms) AS last FROM builds b
                 JOIN derivations d USING (drv_path)
                 WHERE d.name = ?1 AND b.drv_path != ?2 AND b.status = ?4
                   AND b.finished_ms < ?3 AND b.origin IS NULL
                 GROUP BY b.drv_path ORDER BY last DESC LIMIT ?5",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![
                        name,
                        drv,
                        before_ms.unwrap_or(i64::MAX),
                        BUILT,
                        limit as i64
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Whether a derivation named `name` other than `drv` was built before `before_ms`:
    /// whether [`Ledger::earlier_builds`] has any, without listing them, so it stops at
    /// the first one however often the name was built.
    pub fn built_before(&self, name: &str, drv: &str, before_ms: Option<i64>) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM builds b JOIN derivations d USING (drv_path)
                 WHERE d.name = ?1 AND b.drv_path != ?2 AND b.status = ?4
                   AND b.finished_ms < ?3 AND b.origin IS NULL)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![name, drv, before_ms.unwrap_or(i64::MAX), BUILT],
                    |r| r.get(0),
                )
            })
            .map_err(|e| self.err(e))
    }

    /// The derivations a wrapper session built (not substituted, not failed).
    pub fn built_in_session(&self, session_id: i64) -> Result<Vec<String>> {
        self.conn
            .prepare_cached("SELECT drv_path FROM builds WHERE session_id = ?1 AND status = ?2")
            .and_then(|mut stmt| {
                stmt.query_map(params![session_id, BUILT], |row| row.get(0))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The outputs of one build: (output name, path).
    pub fn outputs_of_build(&self, build_id: i64) -> Result<Vec<(String, String)>> {
        self.conn
            .prepare_cached(
                "SELECT output_name, path FROM build_outputs WHERE build_id = ?1 ORDER BY output_name",
            )
            .and_then(|mut stmt| {
                stmt.query_map([build_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The outputs of the latest successful build of `drv_path`.
    pub fn latest_outputs(&self, drv_path: &str) -> Result<Vec<(String, String)>> {
        let build: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT id FROM builds WHERE drv_path = ?1 AND status = ?2
                 ORDER BY finished_ms DESC LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![drv_path, BUILT], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        match build {
            Some(build) => self.outputs_of_build(build),
            None => Ok(Vec::new()),
        }
    }

    /// The digest of the stored manifest of `store_path`, if the ledger has one.
    pub fn manifest_digest(&self, store_path: &str) -> Result<Option<[u8; 32]>> {
        manifests::stored_digest(&self.conn, store_path).map_err(|e| self.err(e))
    }

    /// The stored manifest of `store_path`, if the ledger has one.
    pub fn manifest(&self, store_path: &str) -> Result<Option<Manifest>> {
        manifests::load(&self.conn, store_path).map_err(|e| self.err(e))
    }

    /// The summed duration of the latest successful build of each of `drvs`, and how
    /// many of them had one recorded.
    pub fn recorded_cost(&self, drvs: &[&str]) -> Result<(Option<i64>, usize)> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT duration_ms FROM builds WHERE drv_path = ?1 AND status = ?2
                   AND duration_ms IS NOT NULL ORDER BY finished_ms DESC LIMIT 1",
            )
            .map_err(|e| self.err(e))?;
        let (mut total, mut counted) = (0i64, 0usize);
        for drv in drvs {
            if let Some(ms) = stmt
                .query_row(params![drv, BUILT], |r| r.get::<_, i64>(0))
                .optional()
                .map_err(|e| self.err(e))?
            {
                total += ms;
                counted += 1;
            }
        }
        Ok(((counted > 0).then_some(total), counted))
    }

    /// The average duration of the last few successful builds of derivations named
    /// `name`: what a build of that name is expected to take.
    pub fn expected_duration_ms(&self, name: &str) -> Result<Option<i64>> {
        self.conn
            .prepare_cached(
                "SELECT CAST(avg(duration_ms) AS INTEGER) FROM (
                     SELECT b.duration_ms FROM builds b JOIN derivations d USING (drv_path)
                     WHERE d.name = ?1 AND b.status = ?2 AND b.duration_ms IS NOT NULL
                     ORDER BY b.finished_ms DESC LIMIT 5)",
            )
            .and_then(|mut stmt| stmt.query_row(params![name, BUILT], |row| row.get(0)))
            .map_err(|e| self.err(e))
    }

    /// This machine's successful builds finished since `since_ms`, oldest first.
    pub fn builds_since(&self, since_ms: i64) -> Result<Vec<BuiltRow>> {
        self.conn
            .prepare(
                "SELECT b.id, b.drv_path, d.name, b.finished_ms, b.duration_ms
                 FROM builds b JOIN derivations d USING (drv_path)
                 WHERE b.status = ?2 AND b.finished_ms >= ?1 AND b.origin IS NULL
                 ORDER BY b.finished_ms, b.id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![since_ms, BUILT], |r| {
                    Ok(BuiltRow {
                        id: r.get(0)?,
                        drv_path: r.get(1)?,
                        name: r.get(2)?,
                        finished_ms: r.get(3)?,
                        duration_ms: r.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    fn attach_outputs(&self, builds: &mut [BuildEntry]) -> Result<()> {
        for build in builds {
            build.outputs = self
                .outputs_of_build(build.id)?
                .into_iter()
                .map(|(name, path)| Output { name, path })
                .collect();
        }
        Ok(())
    }

    /// The remote builders builds were recorded on: their store URIs.
    pub fn builder_machines(&self) -> Result<Vec<String>> {
        self.conn
            .prepare_cached(
                "SELECT DISTINCT machine FROM builds WHERE machine IS NOT NULL AND machine != ''",
            )
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// Recent builds, newest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<BuildEntry>> {
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM builds b JOIN derivations d ON d.drv_path = b.drv_path
             WHERE (?1 IS NULL OR instr(lower(d.name), lower(?1)) > 0)
               AND (?3 IS NULL
                    OR b.machine IN (SELECT value FROM json_each(?4))
                    OR (NULLIF(b.machine, '') IS NULL
                        AND (b.origin_machine = ?3 OR (b.origin IS NULL AND ?5))))
             ORDER BY b.finished_ms DESC, b.id DESC LIMIT ?2"
        );
        let limit = filter.limit.map(i64::from).unwrap_or(-1);
        // A builder is matched by any of its names, so its URIs are found here first.
        let (builders, here) = match &filter.machine {
            Some(name) => (
                self.builder_machines()?
                    .into_iter()
                    .filter(|m| crate::nix::machines::names(m, name))
                    .collect(),
                *name == crate::machine::this_machine(),
            ),
            None => (Vec::new(), false),
        };
        let builders = serde_json::to_string(&builders).unwrap_or_else(|_| "[]".into());
        let mut builds: Vec<BuildEntry> = self
            .conn
            .prepare(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![filter.name, limit, filter.machine, builders, here],
                    build_from_row,
                )?
                .collect()
            })
            .map_err(|e| self.err(e))?;
        self.attach_outputs(&mut builds)?;
        Ok(builds)
    }

    /// Everything known of the derivation of `path` (a .drv or an output path).
    pub fn show(&self, path: &str) -> Result<ShowReport> {
        let Some(store_path) = parse_any_store(path) else {
            return Err(Error::NotStorePath(path.to_string()));
        };
        let drv_path: String = if store_path.is_drv() {
            path.to_string()
        } else {
            self.deriver_of(path)?
                .ok_or_else(|| Error::NotFound(path.to_string()))?
        };
        let (name, system, first_seen): (String, Option<String>, i64) = self
            .conn
            .query_row(
                "SELECT name, system, first_seen_ms FROM derivations WHERE drv_path = ?1",
                [&drv_path],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::NotFound(path.to_string()))?;
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM builds b JOIN derivations d ON d.drv_path = b.drv_path
             WHERE b.drv_path = ?1 ORDER BY b.finished_ms DESC, b.id DESC"
        );
        let mut builds: Vec<BuildEntry> = self
            .conn
            .prepare(&sql)
            .and_then(|mut stmt| stmt.query_map([&drv_path], build_from_row)?.collect())
            .map_err(|e| self.err(e))?;
        self.attach_outputs(&mut builds)?;
        let store_paths = self
            .conn
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
            .map_err(|e| self.err(e))?;
        let mut paths: Vec<&str> = vec![drv_path.as_str()];
        for b in &builds {
            paths.extend(b.outputs.iter().map(|o| o.path.as_str()));
        }
        paths.sort_unstable();
        paths.dedup();
        let mut gc_deletions = Vec::new();
        for p in paths {
            gc_deletions.extend(self.deletions_of(p)?);
        }
        gc_deletions.sort_by(|a, b| b.run_id.cmp(&a.run_id).then(a.path.cmp(&b.path)));
        Ok(ShowReport {
            drv_path,
            name,
            system,
            first_seen_at: rfc3339_ms(first_seen),
            builds,
            store_paths,
            gc_deletions,
        })
    }

    /// The most common reasons spool lines were skipped, with their counts.
    pub fn ingest_problem_reasons(&self, limit: usize) -> Result<Vec<(String, i64)>> {
        self.conn
            .prepare(
                "SELECT reason, count(*) FROM ingest_problems GROUP BY reason
                 ORDER BY count(*) DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Rotations that took spool records before this ledger read them: how many times,
    /// and the bytes lost (from the reasons `ingest` noted).
    pub fn rotation_losses(&self) -> Result<(i64, i64)> {
        let reasons: Vec<String> = self
            .conn
            .prepare("SELECT reason FROM ingest_problems WHERE reason LIKE ?1")
            .and_then(|mut s| {
                s.query_map([format!("{}%", super::ingest::LOST_TO_ROTATION)], |r| {
                    r.get(0)
                })?
                .collect()
            })
            .map_err(|e| self.err(e))?;
        let bytes = reasons
            .iter()
            .filter_map(|r| r.split(": ").nth(1)?.split(' ').next()?.parse::<i64>().ok())
            .sum();
        Ok((reasons.len() as i64, bytes))
    }

    /// How many builds were ingested from a spool file named `file_name` (any directory).
    pub fn builds_from_spool_file(&self, file_name: &str) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM builds WHERE spool_key LIKE ?1",
                [format!("%/{file_name}#%")],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// When the hook recorded its first build into this ledger.
    pub fn first_hook_record_ms(&self) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT min(hook_recorded_ms) FROM builds", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Of `drv_paths`, those the ledger has no build of at all.
    pub fn unrecorded<'p>(&self, drv_paths: &[&'p str]) -> Result<Vec<&'p str>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM builds WHERE drv_path = ?1 LIMIT 1")
            .map_err(|e| self.err(e))?;
        let mut missing = Vec::new();
        for drv in drv_paths {
            if !stmt.exists([drv]).map_err(|e| self.err(e))? {
                missing.push(*drv);
            }
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{record_build, BuildRecord, Source, TimingSource};

    #[test]
    fn earlier_builds_of_a_name_are_listed_newest_first_before_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let drv = |c: char| format!("/nix/store/{}-t-a.drv", c.to_string().repeat(32));
        let tx = ledger.conn_mut().transaction().unwrap();
        for (c, at) in [('a', 1_000), ('b', 2_000), ('c', 3_000)] {
            let mut rec = BuildRecord::new(&drv(c), Source::Wrapper, BuildStatus::Built, at);
            rec.started_ms = Some(at - 500);
            rec.timing_source = Some(TimingSource::Wrapper);
            record_build(&tx, &rec).unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(
            ledger.earlier_builds("t-a", &drv('c'), None, 5).unwrap(),
            [(drv('b'), 2_000), (drv('a'), 1_000)]
        );
        assert_eq!(
            ledger
                .earlier_builds("t-a", &drv('c'), Some(2_000), 5)
                .unwrap(),
            [(drv('a'), 1_000)]
        );
        assert!(!ledger.built_before("t-a", &drv('a'), Some(1_500)).unwrap());
        assert_eq!(ledger.expected_duration_ms("t-a").unwrap(), Some(500));
        assert_eq!(
            ledger.recorded_cost(&[&drv('a'), &drv('b')]).unwrap(),
            (Some(1_000), 2)
        );
        assert_eq!(
            ledger.unrecorded(&[&drv('a'), "/nix/store/x"]).unwrap(),
            ["/nix/store/x"]
        );
    }
}
