//! What `tune` reads of the ledger: every measured local build with the settings of its
//! session, the recent sessions that built something, and a session's builds. Also the
//! one thing it needs written: how much CPU the rest of the host used while each build
//! wanted CPU (`build_contention`, migration 0009), recorded with the wrapper's builds.

use rusqlite::{params, Transaction};
use serde::Serialize;

use super::model::{BuildStatus, Scope};
use super::Ledger;
use crate::Result;

/// What the sampler saw while a build used CPU (see `build_contention` in
/// docs/schema.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Contention {
    /// Total length of the samples in which the build's CPU time grew.
    pub cpu_window_ms: i64,
    /// CPU time the rest of the host used in those samples.
    pub others_cpu_ms: i64,
}

/// One successful build on this machine with a known duration, and what is known of its
/// resources and of the settings it ran under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    pub name: String,
    pub duration_ms: i64,
    /// User + system CPU time; `None` when nothing sampled it (hook-only records).
    pub cpu_ms: Option<i64>,
    pub peak_rss_bytes: Option<i64>,
    /// The session's `cores` and host cores; `None` outside a session.
    pub cores: Option<i64>,
    pub host_cores: Option<i64>,
    pub contention: Option<Contention>,
}

/// A wrapper session that built something here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildSession {
    pub id: i64,
    pub started_ms: i64,
    pub max_jobs: Option<i64>,
    pub cores: Option<i64>,
    pub host_cores: Option<i64>,
    pub host_memory_bytes: Option<i64>,
}

/// Builds on the machine that recorded them, not on a remote builder: `machine` is NULL
/// or empty for them. Every read below also keeps to one [`Scope`]: another machine's
/// times and sessions would tune this one on other hardware.
const LOCAL: &str = "(b.machine IS NULL OR b.machine = '')";

const BUILT: &str = BuildStatus::Built.as_str();

impl Ledger {
    /// The newest `limit` measured builds (successful, local, with a duration), newest
    /// first: what the model's defaults for unknown derivations come from.
    pub fn build_measurements(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<Measurement>> {
        let sql = format!(
            "SELECT d.name, b.duration_ms, b.cpu_user_ms + b.cpu_system_ms, b.peak_rss_bytes,
                    s.cores, s.host_cores, c.cpu_window_ms, c.others_cpu_ms
             FROM builds b JOIN derivations d USING (drv_path)
             LEFT JOIN sessions s ON s.id = b.session_id
             LEFT JOIN build_contention c ON c.build_id = b.id
             WHERE b.status = ?1 AND b.duration_ms IS NOT NULL AND {LOCAL} AND {}
             ORDER BY b.finished_ms DESC, b.id DESC LIMIT ?2",
            Scope::filter(3)
        );
        self.rows(&sql, params![BUILT, limit as i64, scope.machine()])
    }

    /// The measured builds of the newest `per_name` derivations of each name in `names`
    /// (a derivation is usually built once): what the model is fitted from, for the
    /// derivations of a workload. One indexed query per name.
    pub fn build_measurements_named(
        &self,
        scope: Scope<'_>,
        names: &[&str],
        per_name: usize,
    ) -> Result<Vec<Measurement>> {
        let mut out = Vec::new();
        for name in names {
            out.extend(self.measurements(
                "name = ?3",
                params![BUILT, per_name as i64, name, scope.machine()],
            )?);
        }
        Ok(out)
    }

    /// The measured builds of the newest `limit` derivations whose name starts with
    /// `prefix` and a `-` (`hello` gives `hello-2.12`, and `hello-world-1.0` too: the
    /// caller filters): the same package at other versions.
    pub fn build_measurements_prefixed(
        &self,
        scope: Scope<'_>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<Measurement>> {
        // A range on the name index: from "<prefix>-" up to "<prefix>." ('.' follows '-').
        self.measurements(
            "name >= ?3 || '-' AND name < ?3 || '.'",
            params![BUILT, limit as i64, prefix, scope.machine()],
        )
    }

    /// Measured builds of the newest `?2` derivations `which` selects (a condition on
    /// `derivations`, with `?3` its value), of the scope in `?4`. Only derivations with a
    /// measured build of the scope count towards the limit: another machine's newer
    /// derivations of a name must not crowd this one's out.
    fn measurements(&self, which: &str, args: impl rusqlite::Params) -> Result<Vec<Measurement>> {
        let measured = format!(
            "EXISTS (SELECT 1 FROM builds b WHERE b.drv_path = derivations.drv_path
                     AND b.status = ?1 AND b.duration_ms IS NOT NULL AND {LOCAL} AND {})",
            Scope::filter(4)
        );
        let sql = format!(
            "SELECT d.name, b.duration_ms, b.cpu_user_ms + b.cpu_system_ms, b.peak_rss_bytes,
                    s.cores, s.host_cores, c.cpu_window_ms, c.others_cpu_ms
             FROM (SELECT drv_path, name FROM derivations
                   WHERE {which} AND {measured} ORDER BY first_seen_ms DESC LIMIT ?2) d
             JOIN builds b USING (drv_path)
             LEFT JOIN sessions s ON s.id = b.session_id
             LEFT JOIN build_contention c ON c.build_id = b.id
             WHERE b.status = ?1 AND b.duration_ms IS NOT NULL AND {LOCAL} AND {}
             ORDER BY b.finished_ms DESC, b.id DESC",
            Scope::filter(4)
        );
        self.rows(&sql, args)
    }

    /// Runs a query whose columns are those of [`Measurement`], in order.
    fn rows(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<Measurement>> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| {
                stmt.query_map(args, |r| {
                    let contention = match (r.get(6)?, r.get(7)?) {
                        (Some(cpu_window_ms), Some(others_cpu_ms)) => Some(Contention {
                            cpu_window_ms,
                            others_cpu_ms,
                        }),
                        _ => None,
                    };
                    Ok(Measurement {
                        name: r.get(0)?,
                        duration_ms: r.get(1)?,
                        cpu_ms: r.get(2)?,
                        peak_rss_bytes: r.get(3)?,
                        cores: r.get(4)?,
                        host_cores: r.get(5)?,
                        contention,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` sessions that built something on this machine, newest first.
    pub fn recent_build_sessions(
        &self,
        scope: Scope<'_>,
        limit: usize,
    ) -> Result<Vec<BuildSession>> {
        self.build_sessions(LOCAL, scope, limit)
    }

    /// The newest `limit` sessions that built something here or on a remote builder,
    /// newest first: what `tune` with builders simulates.
    pub fn recent_build_sessions_anywhere(
        &self,
        scope: Scope<'_>,
        limit: usize,
    ) -> Result<Vec<BuildSession>> {
        self.build_sessions("1", scope, limit)
    }

    fn build_sessions(
        &self,
        which: &str,
        scope: Scope<'_>,
        limit: usize,
    ) -> Result<Vec<BuildSession>> {
        let sql = format!(
            "SELECT s.id, s.started_ms, s.max_jobs, s.cores, s.host_cores, s.host_memory_bytes
             FROM sessions s
             WHERE EXISTS (SELECT 1 FROM builds b WHERE b.session_id = s.id
                           AND b.status = ?1 AND {which} AND {})
             ORDER BY s.started_ms DESC, s.id DESC LIMIT ?2",
            Scope::filter(3)
        );
        self.conn
            .prepare(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![BUILT, limit as i64, scope.machine()], |r| {
                    Ok(BuildSession {
                        id: r.get(0)?,
                        started_ms: r.get(1)?,
                        max_jobs: r.get(2)?,
                        cores: r.get(3)?,
                        host_cores: r.get(4)?,
                        host_memory_bytes: r.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The derivations session `id` built on its own machine, each once, as (.drv,
    /// name), in the order they started. (A session's builds are all of one scope.)
    pub fn session_built(&self, id: i64) -> Result<Vec<(String, String)>> {
        self.session_derivations(LOCAL, id)
    }

    /// As [`Ledger::session_built`], also those it built on remote builders.
    pub fn session_built_anywhere(&self, id: i64) -> Result<Vec<(String, String)>> {
        self.session_derivations("1", id)
    }

    fn session_derivations(&self, which: &str, id: i64) -> Result<Vec<(String, String)>> {
        let sql = format!(
            "SELECT b.drv_path, d.name, min(coalesce(b.started_ms, b.finished_ms)) AS at
             FROM builds b JOIN derivations d USING (drv_path)
             WHERE b.session_id = ?1 AND b.status = ?2 AND {which}
             GROUP BY b.drv_path ORDER BY at, b.drv_path"
        );
        self.conn
            .prepare(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![id, BUILT], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }
}

/// Records what the sampler saw of build `build_id` (inside the caller's transaction).
pub(super) fn record_contention(
    tx: &Transaction<'_>,
    build_id: i64,
    c: &Contention,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO build_contention (build_id, cpu_window_ms, others_cpu_ms)
         VALUES (?1, ?2, ?3)
         ON CONFLICT (build_id) DO UPDATE SET cpu_window_ms = excluded.cpu_window_ms,
             others_cpu_ms = excluded.others_cpu_ms",
    )?
    .execute(params![build_id, c.cpu_window_ms, c.others_cpu_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::model::{SessionKind, SessionStatus};
    use crate::ledger::record::{BuildRecord, Source, TimingSource};
    use crate::ledger::sessions::{SessionClosing, SessionOpening};

    fn drv(c: char, name: &str) -> String {
        format!("/nix/store/{}-{name}.drv", c.to_string().repeat(32))
    }

    #[test]
    fn newer_derivations_built_elsewhere_do_not_crowd_out_this_machines_measurements() {
        // One build of `hello-2.12` here, then five newer .drv files of the same name
        // built on a remote builder: the three newest derivations asked for are the
        // newest with a build here, not the newest of all.
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let chars = ['a', 'b', 'c', 'd', 'e', 'f'];
        for (i, c) in chars.iter().enumerate() {
            let finished = 10_000 * (i as i64 + 1);
            let mut rec = BuildRecord::new(
                &drv(*c, "hello-2.12"),
                Source::Wrapper,
                BuildStatus::Built,
                finished,
            );
            rec.started_ms = Some(finished - 1_000);
            rec.cpu_user_ms = Some(900);
            rec.cpu_system_ms = Some(100);
            rec.peak_rss_bytes = Some(1 << 20);
            if i > 0 {
                rec.machine = Some("ssh://far".into());
            }
            ledger.record_session_builds(&[rec]).unwrap();
        }
        let named = ledger
            .build_measurements_named(Scope::Here, &["hello-2.12"], 3)
            .unwrap();
        assert_eq!(named.len(), 1, "{named:?}");
        assert_eq!(named[0].duration_ms, 1_000);
        let prefixed = ledger
            .build_measurements_prefixed(Scope::Here, "hello", 3)
            .unwrap();
        assert_eq!(prefixed, named);
    }

    #[test]
    fn measured_builds_come_with_their_sessions_settings_and_contention() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let id = ledger
            .open_session(&SessionOpening {
                kind: SessionKind::Build,
                command: vec!["nix".into()],
                cwd: None,
                started_ms: 0,
                hostname: None,
                pid: 1,
            })
            .unwrap();
        let record = |c: char, name: &str, status: BuildStatus, machine: Option<&str>| {
            let mut rec = BuildRecord::new(&drv(c, name), Source::Wrapper, status, 3_000);
            rec.session_id = Some(id);
            rec.started_ms = Some(1_000);
            rec.timing_source = Some(TimingSource::Wrapper);
            rec.machine = machine.map(str::to_string);
            rec.cpu_user_ms = Some(1_500);
            rec.cpu_system_ms = Some(500);
            rec.peak_rss_bytes = Some(1 << 20);
            rec.contention = Some(Contention {
                cpu_window_ms: 1_800,
                others_cpu_ms: 900,
            });
            rec
        };
        let records = [
            record('a', "par-1", BuildStatus::Built, None),
            record('b', "par-2", BuildStatus::Built, Some("ssh://far")),
            record('c', "par-3", BuildStatus::Failed, None),
            record('d', "par-4", BuildStatus::Built, Some("")),
        ];
        let closing = SessionClosing {
            cores: Some(2),
            max_jobs: Some(4),
            host_cores: Some(8),
            ..SessionClosing::new(4_000, SessionStatus::Succeeded, 0)
        };
        ledger.finish_session(id, &[], &records, &closing).unwrap();
        let measured = ledger.build_measurements(Scope::Here, 10).unwrap();
        let names: Vec<&str> = measured.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["par-4", "par-1"], "local successful builds only");
        let named = ledger
            .build_measurements_named(Scope::Here, &["par-1", "par-9"], 10)
            .unwrap();
        assert_eq!(named, measured[1..]);
        let prefixed = ledger
            .build_measurements_prefixed(Scope::Here, "par", 10)
            .unwrap();
        assert_eq!(prefixed, measured);
        assert!(ledger
            .build_measurements_prefixed(Scope::Here, "pa", 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            measured[1],
            Measurement {
                name: "par-1".into(),
                duration_ms: 2_000,
                cpu_ms: Some(2_000),
                peak_rss_bytes: Some(1 << 20),
                cores: Some(2),
                host_cores: Some(8),
                contention: Some(Contention {
                    cpu_window_ms: 1_800,
                    others_cpu_ms: 900
                }),
            }
        );
        let sessions = ledger.recent_build_sessions(Scope::Here, 5).unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            (sessions[0].max_jobs, sessions[0].cores),
            (Some(4), Some(2))
        );
        let built = ledger.session_built(id).unwrap();
        assert_eq!(
            built,
            [
                (drv('a', "par-1"), "par-1".to_string()),
                (drv('d', "par-4"), "par-4".to_string())
            ]
        );
        assert!(ledger.session_built(id + 1).unwrap().is_empty());
        // With remote builders: the build on ssh://far too.
        let anywhere = ledger.session_built_anywhere(id).unwrap();
        let drvs: Vec<&str> = anywhere.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(drvs, ["par-1", "par-2", "par-4"]);
        assert_eq!(
            ledger
                .recent_build_sessions_anywhere(Scope::Here, 5)
                .unwrap(),
            sessions
        );
    }
}
