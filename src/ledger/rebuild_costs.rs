//! What the report's retention advice reads: the builds of a period that were costly to
//! make here and that no cache is known to have (what a collection blind to cost would
//! throw away), and what a recorded GC run deleted that only a rebuild gets back.
//!
//! Only the ledger: no store scan, no question to a cache. "Known to have" means a
//! substituter said so when `nix-ledger gc` last asked it (`cache_answers`).

use std::collections::HashSet;

use rusqlite::params;
use serde::Serialize;

use super::model::BuildStatus;
use super::Ledger;
use crate::Result;

/// The derivations built here in a period whose latest build took at least a given time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CostlyBuilds {
    /// Derivations (each counted once, at its latest build) that no cache is known to have.
    pub builds: u64,
    /// Their build times, summed.
    pub total_ms: i64,
    /// The longest of them: name and build time.
    pub longest: Option<(String, i64)>,
    /// Of `builds`, those some cache was asked about and said it lacks (the rest no cache
    /// was asked about).
    pub known_uncached: u64,
    /// As costly, but a cache said it has one of its outputs: a download gets it back.
    pub cached: u64,
}

/// The builds of one GC run that went and that only a rebuild gets back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebuildsDeleted {
    pub builds: u64,
    /// What rebuilding them costs, summed.
    pub cost_ms: i64,
}

const BUILT: &str = BuildStatus::Built.as_str();

impl Ledger {
    /// This ledger's own successful local builds finished since `since_ms` that took at
    /// least `min_ms`, each derivation at its latest build. Reads the period's builds
    /// through `builds_by_finished`, nothing before it.
    pub fn costly_local_builds(&self, since_ms: i64, min_ms: i64) -> Result<CostlyBuilds> {
        let rows: Vec<(String, String, i64, bool, bool)> = self
            .conn
            .prepare(
                "SELECT b.drv_path, d.name, b.duration_ms,
                        EXISTS (SELECT 1 FROM build_outputs o JOIN cache_answers c ON c.path = o.path
                                WHERE o.build_id = b.id AND c.available = 1),
                        EXISTS (SELECT 1 FROM build_outputs o JOIN cache_answers c ON c.path = o.path
                                WHERE o.build_id = b.id)
                 FROM builds b JOIN derivations d USING (drv_path)
                 WHERE b.finished_ms >= ?1 AND b.status = ?2 AND b.duration_ms >= ?3
                   AND b.origin IS NULL AND (b.machine IS NULL OR b.machine = '')
                   -- The latest build of its .drv: an earlier slow one does not count
                   -- when the last took less (builds_by_drv).
                   AND NOT EXISTS (SELECT 1 FROM builds l
                                   WHERE l.drv_path = b.drv_path AND l.status = ?2
                                     AND l.origin IS NULL AND (l.machine IS NULL OR l.machine = '')
                                     AND (l.finished_ms > b.finished_ms
                                          OR (l.finished_ms = b.finished_ms AND l.id > b.id)))
                 ORDER BY b.finished_ms DESC, b.id DESC",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![since_ms, BUILT, min_ms], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))?;
        let mut seen = HashSet::new();
        let mut out = CostlyBuilds::default();
        for (drv, name, ms, cached, asked) in rows {
            if !seen.insert(drv) {
                continue;
            }
            if cached {
                out.cached += 1;
                continue;
            }
            out.builds += 1;
            out.total_ms += ms;
            out.known_uncached += u64::from(asked);
            if out
                .longest
                .as_ref()
                .is_none_or(|(_, longest)| ms > *longest)
            {
                out.longest = Some((name, ms));
            }
        }
        Ok(out)
    }

    /// The builds run `run` deleted whose way back is a rebuild (their cost came from
    /// the ledger's build times) of at least `min_ms` each.
    pub fn rebuilds_deleted(&self, run: i64, min_ms: i64) -> Result<RebuildsDeleted> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(cost), 0) FROM
                     (SELECT max(unit_cost_ms) AS cost FROM gc_deletions
                      WHERE run_id = ?1 AND state = 'deleted' AND cost_basis IN ('build', 'name')
                      GROUP BY unit HAVING max(unit_cost_ms) >= ?2)",
                params![run, min_ms],
                |r| {
                    Ok(RebuildsDeleted {
                        builds: r.get::<_, i64>(0)?.max(0) as u64,
                        cost_ms: r.get(1)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ledger::record::{BuildRecord, Source};
    use crate::ledger::retention::{DeletionState, PlannedDeletion, RunStart, RunStatus};

    fn drv(c: char, name: &str) -> String {
        format!("/nix/store/{}-{name}.drv", c.to_string().repeat(32))
    }

    fn built(ledger: &mut Ledger, c: char, name: &str, finished: i64, ms: i64, machine: &str) {
        let mut rec =
            BuildRecord::new(&drv(c, name), Source::Wrapper, BuildStatus::Built, finished);
        rec.started_ms = Some(finished - ms);
        rec.machine = (!machine.is_empty()).then(|| machine.to_string());
        rec.outputs = vec![(
            "out".into(),
            format!("/nix/store/{}-{name}", c.to_string().repeat(32)),
        )];
        ledger.record_session_builds(&[rec]).unwrap();
    }

    #[test]
    fn costly_builds_count_each_derivation_once_and_leave_out_what_a_cache_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let min = 600_000;
        built(&mut ledger, 'a', "big-1", 10_000_000, 900_000, "");
        // Built again later, faster: counted once, at its latest build.
        built(&mut ledger, 'a', "big-1", 20_000_000, 700_000, "");
        built(&mut ledger, 'b', "huge-2", 20_000_000, 1_800_000, "");
        built(&mut ledger, 'c', "cached-3", 20_000_000, 1_200_000, "");
        built(&mut ledger, 'd', "cheap-4", 20_000_000, 5_000, "");
        built(
            &mut ledger,
            'e',
            "far-5",
            20_000_000,
            3_000_000,
            "ssh-ng://far",
        );
        built(&mut ledger, 'f', "old-6", 1_000_000, 3_000_000, "");
        let out = |c: char, name: &str| format!("/nix/store/{}-{name}", c.to_string().repeat(32));
        let answers: HashMap<String, bool> =
            [(out('c', "cached-3"), true), (out('b', "huge-2"), false)].into();
        ledger
            .store_cache_answers("https://cache", &answers)
            .unwrap();
        let costly = ledger.costly_local_builds(5_000_000, min).unwrap();
        assert_eq!(
            costly,
            CostlyBuilds {
                builds: 2,
                total_ms: 700_000 + 1_800_000,
                longest: Some(("huge-2".into(), 1_800_000)),
                known_uncached: 1,
                cached: 1,
            }
        );
        assert_eq!(
            ledger.costly_local_builds(30_000_000, min).unwrap(),
            CostlyBuilds::default()
        );
    }

    #[test]
    fn a_run_s_deleted_rebuilds_are_summed_per_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let run = ledger
            .begin_gc_run(&RunStart {
                trigger: "maintenance",
                policy: "{}",
                store_dir: "/s",
                planned_paths: 5,
                planned_bytes: 500,
            })
            .unwrap();
        let row = |path, unit, cost, basis| PlannedDeletion {
            path,
            unit,
            nar_size: 100,
            unit_cost_ms: cost,
            cost_basis: basis,
            reason: "dead",
        };
        ledger
            .queue_batch(
                run,
                1,
                &[
                    row("/s/a", 1, Some(900_000), "build"),
                    row("/s/a.drv", 1, Some(900_000), "build"),
                    row("/s/b", 2, Some(700_000), "name"),
                    row("/s/c", 3, Some(2_000_000), "download"),
                    row("/s/d", 4, Some(1_000), "build"),
                    row("/s/e", 5, Some(5_000_000), "build"),
                ],
            )
            .unwrap();
        let deleted = ["/s/a", "/s/a.drv", "/s/b", "/s/c", "/s/d"];
        let mut updates: Vec<(&str, DeletionState)> = deleted
            .iter()
            .map(|p| (*p, DeletionState::Deleted))
            .collect();
        updates.push(("/s/e", DeletionState::Refused));
        ledger.settle_deletions(run, &updates).unwrap();
        ledger
            .finish_gc_run(run, RunStatus::Finished, None)
            .unwrap();
        assert_eq!(
            ledger.rebuilds_deleted(run, 600_000).unwrap(),
            RebuildsDeleted {
                builds: 2,
                cost_ms: 1_600_000
            }
        );
        assert_eq!(ledger.gc_run(run).unwrap().unwrap().deleted_builds, 4);
    }

    #[test]
    fn a_derivation_counts_at_its_latest_build_even_when_an_earlier_one_was_costly() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let drv = format!("/nix/store/{}-big-1.drv", "a".repeat(32));
        let build = |ledger: &mut Ledger, finished: i64, ms: i64| {
            let mut rec = BuildRecord::new(&drv, Source::Wrapper, BuildStatus::Built, finished);
            rec.started_ms = Some(finished - ms);
            ledger.record_session_builds(&[rec]).unwrap();
        };
        build(&mut ledger, 10_000_000, 900_000);
        build(&mut ledger, 20_000_000, 60_000);
        let costly = ledger.costly_local_builds(0, 600_000).unwrap();
        assert_eq!((costly.builds, costly.total_ms), (0, 0), "{costly:?}");
        build(&mut ledger, 30_000_000, 700_000);
        let costly = ledger.costly_local_builds(0, 600_000).unwrap();
        assert_eq!((costly.builds, costly.total_ms), (1, 700_000), "{costly:?}");
    }
}
