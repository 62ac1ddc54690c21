//! The ledger's side of `nix-ledger sync`: this ledger's rows the hub does not have yet
//! (or has an older revision of), marking them pushed, and the other machines' rows
//! pulled from the hub, stored with the watermark they bring in one transaction so that
//! a sync cut off anywhere resumes without losing or doubling a row.
//!
//! Own rows are those with `origin IS NULL`; a trigger bumps their `rev` on every change
//! (migration 0006), and `pushed_rev` is the revision the hub has. Pulled rows carry
//! `origin` (the recording ledger's id), `origin_id` (their id there, unique with it) and
//! `origin_machine`; they are never pushed and never merged with this machine's records.

use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;

use super::Ledger;
use crate::time::now_ms;
use crate::{Error, Result};

/// A session as the hub stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub local_id: i64,
    pub rev: i64,
    pub kind: String,
    pub command: String,
    pub cwd: Option<String>,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub status: String,
    /// exit_code, nix_version's absence aside: the numbers of the session's row, in the
    /// order of [`SESSION_NUMBERS`].
    pub numbers: [Option<i64>; 9],
    pub nix_version: Option<String>,
    pub hostname: Option<String>,
}

/// The numeric columns of a session, in [`SessionRow::numbers`]' order.
pub const SESSION_NUMBERS: [&str; 9] = [
    "exit_code",
    "max_jobs",
    "cores",
    "host_cores",
    "host_memory_bytes",
    "built_count",
    "substituted_count",
    "failed_count",
    "downloaded_bytes",
];

/// A build as the hub stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRow {
    pub local_id: i64,
    pub rev: i64,
    pub drv_path: String,
    pub name: String,
    pub system: Option<String>,
    pub session_local_id: Option<i64>,
    pub source: String,
    pub status: String,
    pub finished_ms: i64,
    pub timing_source: Option<String>,
    pub builder: Option<String>,
    pub log_tail: Option<String>,
    /// The nullable numbers, in the order of [`BUILD_NUMBERS`].
    pub numbers: [Option<i64>; 11],
    /// `{"out": "/nix/store/…"}`.
    pub outputs: Value,
}

/// The nullable numeric columns of a build, in [`BuildRow::numbers`]' order.
pub const BUILD_NUMBERS: [&str; 11] = [
    "started_ms",
    "duration_ms",
    "peak_rss_bytes",
    "cpu_user_ms",
    "cpu_system_ms",
    "log_lines",
    "hook_recorded_ms",
    "upload_ms",
    "download_ms",
    "connect_ms",
    "session_id",
];

/// A row of another ledger, as pulled: who recorded it, and the row.
#[derive(Debug, Clone)]
pub struct Pulled<T> {
    pub ledger_id: String,
    pub machine: String,
    pub row: T,
}

/// Which of the hub's streams a watermark is for.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Sessions,
    Builds,
    Snapshots,
    Manifests,
}

impl Stream {
    fn column(self) -> &'static str {
        match self {
            Stream::Sessions => "pulled_sessions",
            Stream::Builds => "pulled_builds",
            Stream::Snapshots => "pulled_snapshots",
            Stream::Manifests => "pulled_manifests",
        }
    }
}

impl Ledger {
    /// This ledger's random id (migration 0006), the key of its rows on a hub.
    pub fn ledger_id(&self) -> Result<String> {
        self.conn
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = 'ledger_id'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Prepares for syncing with hub `hub`: a hub other than the last one has none of
    /// this ledger's rows, so all are pushed again. Returns the pull watermarks.
    pub fn begin_sync(&mut self, hub: &str) -> Result<[i64; 4]> {
        let path = self.path.clone();
        let err = |e| Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        let last: Option<String> = tx
            .query_row("SELECT value FROM ledger_meta WHERE key = 'hub'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        if last.as_deref() != Some(hub) {
            tx.execute_batch(
                "UPDATE sessions SET pushed_rev = NULL WHERE origin IS NULL AND pushed_rev IS NOT NULL;
                 UPDATE builds SET pushed_rev = NULL WHERE origin IS NULL AND pushed_rev IS NOT NULL;",
            )
            .map_err(err)?;
            tx.execute(
                "INSERT INTO ledger_meta (key, value) VALUES ('hub', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [hub],
            )
            .map_err(err)?;
        }
        tx.execute("INSERT OR IGNORE INTO sync_state (hub) VALUES (?1)", [hub])
            .map_err(err)?;
        let marks = tx
            .query_row(
                "SELECT pulled_sessions, pulled_builds, pulled_snapshots, pulled_manifests
                 FROM sync_state WHERE hub = ?1",
                [hub],
                |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(marks)
    }

    /// Up to `limit` of this ledger's sessions the hub lacks, ids above `after`.
    pub fn sessions_to_push(&self, after: i64, limit: usize) -> Result<Vec<SessionRow>> {
        let sql = format!(
            "SELECT id, rev, kind, command, cwd, started_ms, finished_ms, status, nix_version,
                    hostname, {}
             FROM sessions WHERE origin IS NULL AND pushed_rev IS NOT rev AND id > ?1
             ORDER BY id LIMIT ?2",
            SESSION_NUMBERS.join(", ")
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![after, limit as i64], |r| {
                    let mut numbers = [None; 9];
                    for (i, n) in numbers.iter_mut().enumerate() {
                        *n = r.get(10 + i)?;
                    }
                    Ok(SessionRow {
                        local_id: r.get(0)?,
                        rev: r.get(1)?,
                        kind: r.get(2)?,
                        command: r.get(3)?,
                        cwd: r.get(4)?,
                        started_ms: r.get(5)?,
                        finished_ms: r.get(6)?,
                        status: r.get(7)?,
                        nix_version: r.get(8)?,
                        hostname: r.get(9)?,
                        numbers,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` of this ledger's builds the hub lacks, ids above `after`.
    pub fn builds_to_push(&self, after: i64, limit: usize) -> Result<Vec<BuildRow>> {
        let sql = format!(
            "SELECT b.id, b.rev, b.drv_path, d.name, d.system, b.source, b.status,
                    b.finished_ms, b.timing_source, NULLIF(b.machine, ''), b.log_tail,
                    (SELECT json_group_object(output_name, path) FROM build_outputs
                     WHERE build_id = b.id),
                    {}
             FROM builds b JOIN derivations d USING (drv_path)
             WHERE b.origin IS NULL AND b.pushed_rev IS NOT b.rev AND b.id > ?1
             ORDER BY b.id LIMIT ?2",
            BUILD_NUMBERS.map(|c| format!("b.{c}")).join(", ")
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params![after, limit as i64], |r| {
                    let mut numbers = [None; 11];
                    for (i, n) in numbers.iter_mut().enumerate() {
                        *n = r.get(12 + i)?;
                    }
                    let outputs: Option<String> = r.get(11)?;
                    Ok(BuildRow {
                        local_id: r.get(0)?,
                        rev: r.get(1)?,
                        drv_path: r.get(2)?,
                        name: r.get(3)?,
                        system: r.get(4)?,
                        session_local_id: numbers[10],
                        source: r.get(5)?,
                        status: r.get(6)?,
                        finished_ms: r.get(7)?,
                        timing_source: r.get(8)?,
                        builder: r.get(9)?,
                        log_tail: r.get(10)?,
                        numbers,
                        outputs: outputs
                            .and_then(|o| serde_json::from_str(&o).ok())
                            .unwrap_or_else(|| Value::Object(Default::default())),
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Records that the hub has revision `rev` of each `(id, rev)` of `sessions` or
    /// builds (a row changed since keeps a higher rev, so it is pushed again).
    pub fn mark_pushed(&mut self, sessions: bool, rows: &[(i64, i64)]) -> Result<()> {
        let path = self.path.clone();
        let err = |e| Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        {
            let sql = match sessions {
                true => "UPDATE sessions SET pushed_rev = ?2 WHERE id = ?1",
                false => "UPDATE builds SET pushed_rev = ?2 WHERE id = ?1",
            };
            let mut stmt = tx.prepare_cached(sql).map_err(err)?;
            for (id, rev) in rows {
                stmt.execute(params![id, rev]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Stores sessions pulled from `hub` and the watermark `seq` they reach, together.
    pub fn store_pulled_sessions(
        &mut self,
        hub: &str,
        rows: &[Pulled<SessionRow>],
        seq: i64,
    ) -> Result<()> {
        self.in_pull(hub, Stream::Sessions, seq, |tx| {
            let sql = format!(
                "INSERT INTO sessions (origin, origin_id, origin_machine, kind, command, cwd,
                     started_ms, finished_ms, status, nix_version, hostname, {})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, {})
                 ON CONFLICT (origin, origin_id) WHERE origin IS NOT NULL DO UPDATE SET
                     origin_machine = excluded.origin_machine, kind = excluded.kind,
                     command = excluded.command, cwd = excluded.cwd,
                     started_ms = excluded.started_ms, finished_ms = excluded.finished_ms,
                     status = excluded.status, nix_version = excluded.nix_version,
                     hostname = excluded.hostname, {}",
                SESSION_NUMBERS.join(", "),
                (12..21)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                SESSION_NUMBERS
                    .map(|c| format!("{c} = excluded.{c}"))
                    .join(", ")
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            for p in rows {
                let s = &p.row;
                let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                    &p.ledger_id,
                    &s.local_id,
                    &p.machine,
                    &s.kind,
                    &s.command,
                    &s.cwd,
                    &s.started_ms,
                    &s.finished_ms,
                    &s.status,
                    &s.nix_version,
                    &s.hostname,
                ];
                values.extend(s.numbers.iter().map(|n| n as &dyn rusqlite::ToSql));
                stmt.execute(values.as_slice())?;
            }
            Ok(())
        })
    }

    /// Stores builds pulled from `hub` (their derivations and outputs too) and the
    /// watermark `seq` they reach, together. Pulled builds count as enriched: their .drv
    /// and outputs are the recording machine's.
    pub fn store_pulled_builds(
        &mut self,
        hub: &str,
        rows: &[Pulled<BuildRow>],
        seq: i64,
    ) -> Result<()> {
        let now = now_ms();
        self.in_pull(hub, Stream::Builds, seq, |tx| {
            let mut derivation = tx.prepare_cached(
                "INSERT INTO derivations (drv_path, name, system, first_seen_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (drv_path) DO UPDATE SET system = COALESCE(derivations.system, excluded.system)",
            )?;
            let numbers = &BUILD_NUMBERS[..10];
            let sql = format!(
                "INSERT INTO builds (origin, origin_id, origin_machine, drv_path, session_id, source,
                     status, finished_ms, timing_source, machine, log_tail, enriched_ms, {})
                 VALUES (?1, ?2, ?3, ?4,
                     (SELECT id FROM sessions WHERE origin = ?1 AND origin_id = ?5),
                     ?6, ?7, ?8, ?9, ?10, ?11, ?12, {})
                 ON CONFLICT (origin, origin_id) WHERE origin IS NOT NULL DO UPDATE SET
                     origin_machine = excluded.origin_machine, drv_path = excluded.drv_path,
                     session_id = excluded.session_id, source = excluded.source,
                     status = excluded.status, finished_ms = excluded.finished_ms,
                     timing_source = excluded.timing_source, machine = excluded.machine,
                     log_tail = excluded.log_tail, {}
                 RETURNING id",
                numbers.join(", "),
                (13..23).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", "),
                numbers.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ")
            );
            let mut build = tx.prepare_cached(&sql)?;
            let mut series =
                tx.prepare_cached("UPDATE builds SET series_id = ?2, version = ?3 WHERE id = ?1")?;
            let mut clear = tx.prepare_cached("DELETE FROM build_outputs WHERE build_id = ?1")?;
            let mut output = tx.prepare_cached(
                "INSERT INTO build_outputs (build_id, output_name, path) VALUES (?1, ?2, ?3)",
            )?;
            for p in rows {
                let b = &p.row;
                derivation.execute(params![b.drv_path, b.name, b.system, b.finished_ms])?;
                let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                    &p.ledger_id,
                    &b.local_id,
                    &p.machine,
                    &b.drv_path,
                    &b.session_local_id,
                    &b.source,
                    &b.status,
                    &b.finished_ms,
                    &b.timing_source,
                    &b.builder,
                    &b.log_tail,
                    &now,
                ];
                values.extend(b.numbers[..10].iter().map(|n| n as &dyn rusqlite::ToSql));
                let id: i64 = build.query_row(values.as_slice(), |r| r.get(0))?;
                // Its series, as for a build recorded here (trends reads this ledger's
                // own builds; the series keeps a pulled one comparable when asked for).
                let (series_id, version) = super::record::series_for(tx, &b.name)?;
                series.execute(params![id, series_id, version])?;
                clear.execute([id])?;
                if let Value::Object(outputs) = &b.outputs {
                    for (name, path) in outputs {
                        if let Some(path) = path.as_str() {
                            output.execute(params![id, name, path])?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Runs `write` and moves `stream`'s watermark for `hub` to `seq`, in one transaction.
    fn in_pull(
        &mut self,
        hub: &str,
        stream: Stream,
        seq: i64,
        write: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        write(&tx).map_err(err)?;
        tx.execute(
            &format!(
                "UPDATE sync_state SET {c} = max({c}, ?2), last_sync_ms = ?3 WHERE hub = ?1",
                c = stream.column()
            ),
            params![hub, seq, now_ms()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }
}

pub mod why;
pub use why::{WhyRow, MANIFEST_NUMBERS};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{record_build, BuildRecord, BuildStatus, Recorded, Source};

    const DRV: &str = "/nix/store/jzlslynp667iba7mzkwkligqhmi9xdmh-t-a.drv";

    fn pulled(local_id: i64, rev: i64) -> Pulled<BuildRow> {
        let mut numbers = [None; 11];
        numbers[0] = Some(1_000); // started_ms
        numbers[1] = Some(9_000); // duration_ms
        Pulled {
            ledger_id: "other".into(),
            machine: "beta".into(),
            row: BuildRow {
                local_id,
                rev,
                drv_path: DRV.into(),
                name: "t-a".into(),
                system: Some("x86_64-linux".into()),
                session_local_id: None,
                source: "wrapper".into(),
                status: "built".into(),
                finished_ms: 10_000,
                timing_source: None,
                builder: None,
                log_tail: None,
                numbers,
                outputs: serde_json::json!({"out": "/nix/store/c35c2y611x7n8b6fk71av6j614nzch6c-t-a"}),
            },
        }
    }

    #[test]
    fn a_pulled_build_is_stored_once_and_never_merged_with_this_machines() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        ledger.begin_sync("hub").unwrap();
        ledger
            .store_pulled_builds("hub", &[pulled(7, 1)], 5)
            .unwrap();
        // Pulled again (a newer revision, or a sync cut off and rerun): still one row.
        ledger
            .store_pulled_builds("hub", &[pulled(7, 2)], 9)
            .unwrap();
        assert_eq!(
            ledger.begin_sync("hub").unwrap()[1],
            9,
            "the watermark moved with the rows"
        );
        // This machine's hook record of the same .drv at the same time is its own row.
        let tx = ledger.conn_mut().transaction().unwrap();
        let mut hook = BuildRecord::new(DRV, Source::Hook, BuildStatus::Built, 10_000);
        hook.hook_recorded_ms = Some(10_000);
        assert!(matches!(
            record_build(&tx, &hook).unwrap(),
            Recorded::Inserted(_)
        ));
        tx.commit().unwrap();
        let rows: Vec<(Option<String>, i64)> = ledger
            .conn()
            .prepare("SELECT origin_machine, (SELECT count(*) FROM build_outputs o WHERE o.build_id = b.id) FROM builds b ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, vec![(Some("beta".to_string()), 1), (None, 0)]);
        // Only this machine's row is to push.
        let to_push = ledger.builds_to_push(0, 10).unwrap();
        assert_eq!(to_push.len(), 1);
        assert_eq!(to_push[0].source, "hook");
    }

    #[test]
    fn a_row_changed_after_its_push_is_pushed_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        ledger.begin_sync("hub").unwrap();
        let tx = ledger.conn_mut().transaction().unwrap();
        let mut wrapper = BuildRecord::new(DRV, Source::Wrapper, BuildStatus::Built, 10_000);
        wrapper.started_ms = Some(9_000);
        record_build(&tx, &wrapper).unwrap();
        tx.commit().unwrap();
        let rows = ledger.builds_to_push(0, 10).unwrap();
        ledger
            .mark_pushed(false, &[(rows[0].local_id, rows[0].rev)])
            .unwrap();
        assert!(ledger.builds_to_push(0, 10).unwrap().is_empty());
        // The hook's record merges in later: the hub's copy is out of date.
        let tx = ledger.conn_mut().transaction().unwrap();
        let mut hook = BuildRecord::new(DRV, Source::Hook, BuildStatus::Built, 10_100);
        hook.hook_recorded_ms = Some(10_100);
        hook.outputs = vec![(
            "out".into(),
            "/nix/store/c35c2y611x7n8b6fk71av6j614nzch6c-t-a".into(),
        )];
        assert!(matches!(
            record_build(&tx, &hook).unwrap(),
            Recorded::Merged(_)
        ));
        tx.commit().unwrap();
        let again = ledger.builds_to_push(0, 10).unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].rev > rows[0].rev);
        assert_eq!(
            again[0].outputs["out"],
            "/nix/store/c35c2y611x7n8b6fk71av6j614nzch6c-t-a"
        );
        // Another hub has none of it.
        ledger
            .mark_pushed(false, &[(again[0].local_id, again[0].rev)])
            .unwrap();
        ledger.begin_sync("another hub").unwrap();
        assert_eq!(ledger.builds_to_push(0, 10).unwrap().len(), 1);
    }
}
