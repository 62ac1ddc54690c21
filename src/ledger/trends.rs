//! The ledger's reads for `trends` and `report`: every successful local build of every
//! series in one ordered pass over the partial covering index `builds_by_series`
//! (migration 0008; no join, so a million builds take a fraction of a second), the
//! sessions of a period, and the memory their builds used; and the rebuild verdicts the
//! report keeps once judged.

use std::collections::HashMap;

use rusqlite::params;

use super::model::{BuildStatus, Scope};
use super::queries::BuiltRow;
use super::Ledger;
use crate::time::now_ms;
use crate::Result;

/// One successful build of a series on this machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub build_id: i64,
    pub finished_ms: i64,
    pub duration_ms: Option<i64>,
    pub peak_rss_bytes: Option<i64>,
    pub output_bytes: Option<i64>,
    /// Index into [`SeriesRows::versions`].
    pub version: usize,
}

/// The builds of one series, oldest first.
#[derive(Debug, Clone, Default)]
pub struct SeriesRows {
    pub series_id: i64,
    pub points: Vec<Point>,
    /// The distinct versions of these builds, in the order first seen.
    pub versions: Vec<String>,
}

impl SeriesRows {
    fn clear(&mut self, series_id: i64) {
        self.series_id = series_id;
        self.points.clear();
        self.versions.clear();
    }

    /// The index of `version` in [`SeriesRows::versions`], added if new. A series has
    /// few versions, and consecutive builds mostly share one: a scan, not a map.
    fn version_index(&mut self, version: &str) -> usize {
        if let Some(last) = self.points.last() {
            if self.versions[last.version] == version {
                return last.version;
            }
        }
        match self.versions.iter().position(|v| v == version) {
            Some(i) => i,
            None => {
                self.versions.push(version.to_string());
                self.versions.len() - 1
            }
        }
    }
}

/// One wrapper session, as the sessions report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub status: String,
    pub built: i64,
    pub substituted: i64,
    pub failed: i64,
    pub downloaded_bytes: Option<i64>,
    pub host_memory_bytes: Option<i64>,
    pub eval_ms: Option<i64>,
    pub ifd_ms: Option<i64>,
}

/// When a build of a session ran and the most memory it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildMemory {
    pub session_id: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub peak_rss_bytes: i64,
}

/// A build's verdict as a rebuild, to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedVerdict {
    pub build_id: i64,
    /// (kind, the earlier .drv, what caused it) of an avoidable or no-op rebuild; `None`
    /// for any other build.
    pub wasted: Option<(String, String, String)>,
}

/// A kept avoidable or no-op rebuild, with its build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RememberedRebuild {
    pub build_id: i64,
    pub drv_path: String,
    pub name: String,
    pub previous_drv: String,
    pub finished_ms: i64,
    pub duration_ms: Option<i64>,
    pub kind: String,
    pub detail: String,
}

/// The same predicate as the index's, literally: SQLite uses a partial index only when it
/// can see that the query implies its predicate, which a bound parameter would hide
/// (`INDEXED BY` fails loudly if a change ever made it unusable).
const SERIES_SCAN: &str = "SELECT series_id, id, finished_ms, duration_ms, peak_rss_bytes,
        output_nar_bytes, version
    FROM builds INDEXED BY builds_by_series
    WHERE status = 'built' AND coalesce(machine, '') = '' AND origin IS NULL";

/// [`SERIES_SCAN`] for the builds another fleet machine made (`?9`: its name).
const FLEET_SERIES_SCAN: &str = "SELECT series_id, id, finished_ms, duration_ms,
        peak_rss_bytes, output_nar_bytes, version
    FROM builds INDEXED BY builds_by_fleet_series
    WHERE status = 'built' AND coalesce(machine, '') = '' AND origin IS NOT NULL
      AND origin_machine = ?9";

impl Ledger {
    /// Whether the fleet machine `name` has builds of its own here (pulled by `sync`).
    pub fn fleet_machine_has_builds(&self, name: &str) -> Result<bool> {
        let sql = format!("SELECT EXISTS ({FLEET_SERIES_SCAN})");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.raw_bind_parameter(9, name)?;
                let mut rows = stmt.raw_query();
                Ok(match rows.next()? {
                    Some(r) => r.get(0)?,
                    None => false,
                })
            })
            .map_err(|e| self.err(e))
    }

    /// The fleet machines with builds of their own here (pulled by `sync`), by name:
    /// those [`Ledger::fleet_machine_has_builds`] accepts.
    pub fn fleet_machines(&self) -> Result<Vec<String>> {
        self.conn
            .prepare_cached(
                "SELECT DISTINCT origin_machine FROM builds INDEXED BY builds_by_fleet_series
                 WHERE status = 'built' AND coalesce(machine, '') = '' AND origin IS NOT NULL
                   AND origin_machine IS NOT NULL
                 ORDER BY 1",
            )
            .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))
    }

    /// Every series key, by id.
    pub fn series_keys(&self) -> Result<HashMap<i64, String>> {
        self.conn
            .prepare("SELECT id, key FROM series")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The id of the series `key`, if the ledger has one.
    pub fn series_id(&self, key: &str) -> Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        self.conn
            .prepare_cached("SELECT id FROM series WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Calls `each` once per series (all of them, or those of `only`) with its
    /// successful local builds, oldest first, in one ordered pass over the index. Series
    /// come in id order; the rows handed over are reused for the next series.
    pub fn scan_series(
        &self,
        only: Option<&[i64]>,
        each: impl FnMut(&SeriesRows) -> Result<()>,
    ) -> Result<()> {
        self.scan_series_of(Scope::Here, only, each)
    }

    /// [`Ledger::scan_series`] over the builds of `scope`.
    pub fn scan_series_of(
        &self,
        scope: Scope<'_>,
        only: Option<&[i64]>,
        mut each: impl FnMut(&SeriesRows) -> Result<()>,
    ) -> Result<()> {
        let mut rows = SeriesRows::default();
        let mut emit = |rows: &SeriesRows| -> Result<()> {
            if rows.points.is_empty() {
                Ok(())
            } else {
                each(rows)
            }
        };
        let mut read = |series: Option<i64>| -> Result<()> {
            let scan = match scope {
                Scope::Here => SERIES_SCAN,
                Scope::Fleet(_) => FLEET_SERIES_SCAN,
            };
            let sql = match series {
                Some(_) => format!("{scan} AND series_id = ?1 ORDER BY finished_ms, id"),
                None => format!("{scan} ORDER BY series_id, finished_ms, id"),
            };
            let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
            if let Scope::Fleet(machine) = scope {
                stmt.raw_bind_parameter(9, machine)
                    .map_err(|e| self.err(e))?;
            }
            if let Some(id) = series {
                stmt.raw_bind_parameter(1, id).map_err(|e| self.err(e))?;
            }
            let mut cursor = stmt.raw_query();
            rows.clear(series.unwrap_or(i64::MIN));
            while let Some(r) = cursor.next().map_err(|e| self.err(e))? {
                let series_id: Option<i64> = r.get(0).map_err(|e| self.err(e))?;
                // Written by every record since migration 0008, which filled the rest.
                let Some(series_id) = series_id else { continue };
                if series_id != rows.series_id {
                    emit(&rows)?;
                    rows.clear(series_id);
                }
                let version = r
                    .get_ref(6)
                    .map_err(|e| self.err(e))?
                    .as_str_or_null()
                    .map_err(|e| self.err(e.into()))?
                    .unwrap_or("");
                let version = rows.version_index(version);
                let point = Point {
                    build_id: r.get(1).map_err(|e| self.err(e))?,
                    finished_ms: r.get(2).map_err(|e| self.err(e))?,
                    duration_ms: r.get(3).map_err(|e| self.err(e))?,
                    peak_rss_bytes: r.get(4).map_err(|e| self.err(e))?,
                    output_bytes: r.get(5).map_err(|e| self.err(e))?,
                    version,
                };
                rows.points.push(point);
            }
            emit(&rows)
        };
        match only {
            None => read(None),
            Some(ids) => ids.iter().try_for_each(|&id| read(Some(id))),
        }
    }

    /// The finished sessions of `scope` that started at or after `since_ms`, oldest first.
    pub fn sessions_since(&self, scope: Scope<'_>, since_ms: i64) -> Result<Vec<SessionRow>> {
        let sql = format!(
            "SELECT id, started_ms, finished_ms, status, coalesce(built_count, 0),
                    coalesce(substituted_count, 0), coalesce(failed_count, 0),
                    downloaded_bytes, host_memory_bytes, eval_ms, ifd_ms
             FROM sessions WHERE started_ms >= ?1 AND finished_ms IS NOT NULL AND {}
             ORDER BY started_ms, id",
            Scope::filter_on("", 2)
        );
        self.conn
            .prepare(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![since_ms, scope.machine()], |r| {
                    Ok(SessionRow {
                        id: r.get(0)?,
                        started_ms: r.get(1)?,
                        finished_ms: r.get(2)?,
                        status: r.get(3)?,
                        built: r.get(4)?,
                        substituted: r.get(5)?,
                        failed: r.get(6)?,
                        downloaded_bytes: r.get(7)?,
                        host_memory_bytes: r.get(8)?,
                        eval_ms: r.get(9)?,
                        ifd_ms: r.get(10)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The measured memory of the builds of sessions `first..=last` (ids), with when
    /// they ran: what "peak memory against RAM" adds up.
    pub fn session_build_memory(&self, first: i64, last: i64) -> Result<Vec<BuildMemory>> {
        self.conn
            .prepare(
                "SELECT session_id, started_ms, finished_ms, peak_rss_bytes FROM builds
                 WHERE session_id BETWEEN ?1 AND ?2 AND peak_rss_bytes IS NOT NULL
                   AND started_ms IS NOT NULL
                 ORDER BY session_id, started_ms",
            )
            .and_then(|mut stmt| {
                stmt.query_map([first, last], |r| {
                    Ok(BuildMemory {
                        session_id: r.get(0)?,
                        started_ms: r.get(1)?,
                        finished_ms: r.get(2)?,
                        peak_rss_bytes: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The ids of the series a session built.
    pub fn series_of_session(&self, session_id: i64) -> Result<Vec<i64>> {
        self.conn
            .prepare(
                "SELECT DISTINCT series_id FROM builds
                 WHERE session_id = ?1 AND status = ?2 AND series_id IS NOT NULL",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![session_id, BuildStatus::Built.as_str()], |r| {
                    r.get(0)
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Successful builds finished since `since_ms` whose rebuild verdict is not kept
    /// yet, oldest first, each with whether it was enriched.
    pub fn unjudged_builds_since(&self, since_ms: i64) -> Result<Vec<(BuiltRow, bool)>> {
        self.conn
            .prepare(
                "SELECT b.id, b.drv_path, d.name, b.finished_ms, b.duration_ms,
                        b.enriched_ms IS NOT NULL
                 FROM builds b JOIN derivations d USING (drv_path)
                 WHERE b.status = ?2 AND b.finished_ms >= ?1
                   AND NOT EXISTS (SELECT 1 FROM rebuild_verdicts v WHERE v.build_id = b.id)
                 ORDER BY b.finished_ms, b.id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![since_ms, BuildStatus::Built.as_str()], |r| {
                    Ok((
                        BuiltRow {
                            id: r.get(0)?,
                            drv_path: r.get(1)?,
                            name: r.get(2)?,
                            finished_ms: r.get(3)?,
                            duration_ms: r.get(4)?,
                        },
                        r.get(5)?,
                    ))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Keeps rebuild verdicts, in one transaction.
    pub fn remember_rebuild_verdicts(&mut self, verdicts: &[RememberedVerdict]) -> Result<()> {
        if verdicts.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |e| crate::Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        for v in verdicts {
            let (kind, previous, detail) = match &v.wasted {
                Some((k, p, d)) => (Some(k.as_str()), Some(p.as_str()), Some(d.as_str())),
                None => (None, None, None),
            };
            tx.prepare_cached(
                "INSERT OR REPLACE INTO rebuild_verdicts (build_id, kind, previous_drv, detail,
                     judged_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![v.build_id, kind, previous, detail, now_ms()])
            })
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The kept avoidable and no-op rebuilds finished since `since_ms`, oldest first.
    pub fn remembered_rebuilds_since(&self, since_ms: i64) -> Result<Vec<RememberedRebuild>> {
        self.conn
            .prepare(
                "SELECT b.id, b.drv_path, d.name, v.previous_drv, b.finished_ms, b.duration_ms,
                        v.kind, v.detail
                 FROM rebuild_verdicts v JOIN builds b ON b.id = v.build_id
                 JOIN derivations d USING (drv_path)
                 WHERE v.kind IS NOT NULL AND b.finished_ms >= ?1 AND b.status = ?2
                 ORDER BY b.finished_ms, b.id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![since_ms, BuildStatus::Built.as_str()], |r| {
                    Ok(RememberedRebuild {
                        build_id: r.get(0)?,
                        drv_path: r.get(1)?,
                        name: r.get(2)?,
                        previous_drv: r.get(3)?,
                        finished_ms: r.get(4)?,
                        duration_ms: r.get(5)?,
                        kind: r.get(6)?,
                        detail: r.get(7)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The latest finished session's id.
    pub fn latest_session(&self) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT max(id) FROM sessions WHERE finished_ms IS NOT NULL AND origin IS NULL",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{record_build, BuildRecord, Source, TimingSource};
    use rusqlite::Connection;

    fn drv(seed: char, name: &str) -> String {
        format!("/nix/store/{}-{name}.drv", seed.to_string().repeat(32))
    }

    /// (finished, duration, output size, version) of one build.
    type Seen = (i64, Option<i64>, Option<i64>, String);

    fn all_series(ledger: &Ledger) -> Vec<(String, Vec<Seen>)> {
        let keys = ledger.series_keys().unwrap();
        let mut found = Vec::new();
        ledger
            .scan_series(None, |rows| {
                let points = rows
                    .points
                    .iter()
                    .map(|p| {
                        (
                            p.finished_ms,
                            p.duration_ms,
                            p.output_bytes,
                            rows.versions[p.version].clone(),
                        )
                    })
                    .collect();
                found.push((keys[&rows.series_id].clone(), points));
                Ok(())
            })
            .unwrap();
        found.sort();
        found
    }

    #[test]
    fn a_ledger_written_before_migration_0008_is_filled_in_when_opened() {
        // As an older nix-ledger left it (restored from a CI cache, say): schema 5, rows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &super::super::MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            let rows = [
                ('a', "hello-2.12", 1_000, "built", Some(300)),
                ('b', "hello-2.13", 2_000, "built", Some(400)),
                ('c', "hello-2.13.tar.gz", 3_000, "built", None),
                ('d', "hello-2.14", 4_000, "substituted", Some(5)),
            ];
            for (seed, name, at, status, size) in rows {
                let d = drv(seed, name);
                let out = format!("/nix/store/{}-{name}", seed.to_string().repeat(32));
                conn.execute(
                    "INSERT INTO derivations (drv_path, name, first_seen_ms) VALUES (?1, ?2, ?3)",
                    params![d, name, at],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO builds (drv_path, source, status, started_ms, finished_ms,
                         duration_ms) VALUES (?1, 'hook', ?2, ?3, ?4, 100)",
                    params![d, status, at - 100, at],
                )
                .unwrap();
                let id = conn.last_insert_rowid();
                conn.execute(
                    "INSERT INTO build_outputs VALUES (?1, 'out', ?2)",
                    params![id, out],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO store_paths (path, nar_size, updated_ms) VALUES (?1, ?2, 0)",
                    params![out, size],
                )
                .unwrap();
            }
        }
        let ledger = Ledger::open(&path).unwrap();
        let v = |s: &str| s.to_string();
        assert_eq!(
            all_series(&ledger),
            vec![
                (
                    v("hello"),
                    vec![
                        (1_000, Some(100), Some(300), v("2.12")),
                        (2_000, Some(100), Some(400), v("2.13"))
                    ]
                ),
                // Its size is not known: no output size, the build still counts.
                (
                    v("hello-*.tar.gz"),
                    vec![(3_000, Some(100), None, v("2.13"))]
                ),
            ]
        );
    }

    #[test]
    fn recorded_builds_join_their_series_and_remote_ones_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let tx = ledger.conn_mut().transaction().unwrap();
        for (seed, name, at, machine) in [
            ('a', "hello-2.12", 1_000, None),
            ('b', "hello-2.13", 2_000, Some("ssh://builder")),
            ('c', "hello-2.13", 3_000, Some("")),
        ] {
            let mut rec =
                BuildRecord::new(&drv(seed, name), Source::Wrapper, BuildStatus::Built, at);
            rec.started_ms = Some(at - 10);
            rec.timing_source = Some(TimingSource::Wrapper);
            rec.machine = machine.map(str::to_string);
            record_build(&tx, &rec).unwrap();
        }
        tx.commit().unwrap();
        let v = |s: &str| s.to_string();
        assert_eq!(
            all_series(&ledger),
            vec![(
                v("hello"),
                vec![
                    (1_000, Some(10), None, v("2.12")),
                    (3_000, Some(10), None, v("2.13"))
                ]
            )]
        );
        let id = ledger.series_id("hello").unwrap().unwrap();
        let mut one = 0;
        ledger
            .scan_series(Some(&[id]), |rows| {
                one += rows.points.len();
                Ok(())
            })
            .unwrap();
        assert_eq!(one, 2);
    }
}
