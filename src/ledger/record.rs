//! Writing build records, shared by ingest (the hook's lines) and the wrapper.
//!
//! One build of one derivation is one row of `builds`, whichever of the hook and the
//! wrapper saw it first: a record that matches an existing row from the other source
//! (same .drv, close in time) is merged into that row instead of being inserted.

use rusqlite::{params, OptionalExtension, Transaction};

pub use super::model::{BuildStatus, Source, TimingSource};
use crate::nix::name::series_of;
use crate::nix::store_path::path_name;

/// A hook record and a wrapper record of the same .drv are the same build when the hook
/// ran within this long after the wrapper saw the build stop (hooks queue behind each
/// other up to Nix 2.34, so the wait can be long on a busy build).
pub const MERGE_WINDOW_MS: i64 = 10 * 60 * 1000;
/// ...or this long before it (the stop event and the hook race on a loaded machine).
const MERGE_EARLY_MS: i64 = 5_000;

/// Everything known of one build, from either source.
#[derive(Debug, Clone)]
pub struct BuildRecord {
    pub drv_path: String,
    /// The derivation's name (env `name`); derived from the path when `None`.
    pub name: Option<String>,
    pub system: Option<String>,
    pub source: Source,
    pub status: BuildStatus,
    pub session_id: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: i64,
    /// Where the start/finish times came from; `None` when unknown.
    pub timing_source: Option<TimingSource>,
    /// The remote builder (its store URI, as Nix names it); `None` for this machine.
    pub machine: Option<String>,
    /// Remote builds: time copying inputs to the builder, outputs back, and connecting.
    pub upload_ms: Option<i64>,
    pub download_ms: Option<i64>,
    pub connect_ms: Option<i64>,
    pub peak_rss_bytes: Option<i64>,
    pub cpu_user_ms: Option<i64>,
    pub cpu_system_ms: Option<i64>,
    pub log_lines: Option<i64>,
    pub log_tail: Option<String>,
    /// When the post-build-hook ran (hook records only).
    pub hook_recorded_ms: Option<i64>,
    /// The spool line this came from, as (spool key, byte offset).
    pub spool: Option<(String, i64)>,
    /// (output name, store path).
    pub outputs: Vec<(String, String)>,
    /// What the sampler saw of the CPU the rest of the host used (wrapper records only).
    pub contention: Option<super::tune::Contention>,
}

impl BuildRecord {
    /// A record with only the essentials set.
    pub fn new(
        drv_path: &str,
        source: Source,
        status: BuildStatus,
        finished_ms: i64,
    ) -> BuildRecord {
        BuildRecord {
            drv_path: drv_path.to_string(),
            name: None,
            system: None,
            source,
            status,
            session_id: None,
            started_ms: None,
            finished_ms,
            timing_source: None,
            machine: None,
            upload_ms: None,
            download_ms: None,
            connect_ms: None,
            peak_rss_bytes: None,
            cpu_user_ms: None,
            cpu_system_ms: None,
            log_lines: None,
            log_tail: None,
            hook_recorded_ms: None,
            spool: None,
            outputs: Vec::new(),
            contention: None,
        }
    }

    fn duration_ms(&self) -> Option<i64> {
        self.started_ms
            .map(|start| (self.finished_ms - start).max(0))
    }
}

/// What [`record_build`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Inserted(i64),
    Merged(i64),
    /// The same record was already there (a spool line ingested twice).
    AlreadyPresent(i64),
}

impl Recorded {
    pub fn build_id(self) -> i64 {
        match self {
            Recorded::Inserted(id) | Recorded::Merged(id) | Recorded::AlreadyPresent(id) => id,
        }
    }
}

/// Records one build, merging it with the other source's record of the same build.
pub fn record_build(tx: &Transaction<'_>, rec: &BuildRecord) -> rusqlite::Result<Recorded> {
    let name = upsert_derivation(tx, rec)?;

    if let Some(hook_ms) = rec.hook_recorded_ms {
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM builds WHERE drv_path = ?1 AND hook_recorded_ms = ?2
                   AND origin IS NULL",
                params![rec.drv_path, hook_ms],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(Recorded::AlreadyPresent(id));
        }
    }

    let partner = match rec.source {
        Source::Hook => find_wrapper_partner(tx, rec)?,
        Source::Wrapper => find_hook_partner(tx, rec)?,
    };
    let id = match partner {
        Some(id) => {
            merge_into(tx, id, rec)?;
            Recorded::Merged(id)
        }
        None => Recorded::Inserted(insert(tx, rec, &name)?),
    };
    for (name, path) in &rec.outputs {
        tx.prepare_cached(
            "INSERT INTO build_outputs (build_id, output_name, path) VALUES (?1, ?2, ?3)
             ON CONFLICT (build_id, output_name) DO UPDATE SET path = excluded.path",
        )?
        .execute(params![id.build_id(), name, path])?;
    }
    if let Some(c) = &rec.contention {
        super::tune::record_contention(tx, id.build_id(), c)?;
    }
    Ok(id)
}

/// Inserts or updates the build's derivation; returns the name it has in the ledger now.
fn upsert_derivation(tx: &Transaction<'_>, rec: &BuildRecord) -> rusqlite::Result<String> {
    let name = rec
        .name
        .clone()
        .unwrap_or_else(|| path_name(&rec.drv_path).to_string());
    tx.prepare_cached(
        "INSERT INTO derivations (drv_path, name, system, first_seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (drv_path) DO UPDATE SET
             system = COALESCE(derivations.system, excluded.system),
             name = CASE WHEN ?5 THEN excluded.name ELSE derivations.name END
         RETURNING name",
    )?
    .query_row(
        params![
            rec.drv_path,
            name,
            rec.system,
            rec.finished_ms,
            rec.name.is_some()
        ],
        |r| r.get(0),
    )
}

/// The row of the series a derivation name belongs to (created if new), and the version
/// in the name: what `trends` groups and marks builds by.
pub(crate) fn series_for(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<(i64, String)> {
    let series = series_of(name);
    tx.prepare_cached("INSERT OR IGNORE INTO series (key) VALUES (?1)")?
        .execute([&series.key])?;
    let id = tx
        .prepare_cached("SELECT id FROM series WHERE key = ?1")?
        .query_row([&series.key], |r| r.get(0))?;
    Ok((id, series.version))
}

/// A wrapper row of the same .drv that the hook has not been matched to yet, whose build
/// stopped shortly before this hook ran.
fn find_wrapper_partner(tx: &Transaction<'_>, rec: &BuildRecord) -> rusqlite::Result<Option<i64>> {
    let hook_ms = rec.hook_recorded_ms.unwrap_or(rec.finished_ms);
    tx.prepare_cached(
        "SELECT id FROM builds
         WHERE drv_path = ?1 AND source = ?5 AND status = ?6
           AND hook_recorded_ms IS NULL AND origin IS NULL
           AND finished_ms BETWEEN ?2 - ?3 AND ?2 + ?4
         ORDER BY abs(finished_ms - ?2) LIMIT 1",
    )?
    .query_row(
        params![
            rec.drv_path,
            hook_ms,
            MERGE_WINDOW_MS,
            MERGE_EARLY_MS,
            Source::Wrapper.as_str(),
            BuildStatus::Built.as_str()
        ],
        |row| row.get(0),
    )
    .optional()
}

/// A hook row of the same .drv, not yet matched to a wrapper session, whose hook ran
/// shortly after this build stopped.
fn find_hook_partner(tx: &Transaction<'_>, rec: &BuildRecord) -> rusqlite::Result<Option<i64>> {
    if rec.status != BuildStatus::Built {
        return Ok(None);
    }
    tx.prepare_cached(
        "SELECT id FROM builds
         WHERE drv_path = ?1 AND source = ?5 AND session_id IS NULL AND origin IS NULL
           AND hook_recorded_ms BETWEEN ?2 - ?4 AND ?2 + ?3
         ORDER BY abs(hook_recorded_ms - ?2) LIMIT 1",
    )?
    .query_row(
        params![
            rec.drv_path,
            rec.finished_ms,
            MERGE_WINDOW_MS,
            MERGE_EARLY_MS,
            Source::Hook.as_str()
        ],
        |row| row.get(0),
    )
    .optional()
}

fn insert(tx: &Transaction<'_>, rec: &BuildRecord, name: &str) -> rusqlite::Result<i64> {
    let (spool_key, spool_offset) = match &rec.spool {
        Some((key, offset)) => (Some(key.as_str()), Some(*offset)),
        None => (None, None),
    };
    let (series_id, version) = series_for(tx, name)?;
    tx.prepare_cached(
        "INSERT INTO builds (drv_path, session_id, source, status, started_ms, finished_ms,
             duration_ms, timing_source, machine, peak_rss_bytes, cpu_user_ms, cpu_system_ms,
             log_lines, log_tail, hook_recorded_ms, spool_key, spool_offset, upload_ms,
             download_ms, connect_ms, series_id, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19, ?20, ?21, ?22)",
    )?
    .execute(params![
        rec.drv_path,
        rec.session_id,
        rec.source.as_str(),
        rec.status.as_str(),
        rec.started_ms,
        rec.finished_ms,
        rec.duration_ms(),
        rec.timing_source.map(TimingSource::as_str),
        rec.machine,
        rec.peak_rss_bytes,
        rec.cpu_user_ms,
        rec.cpu_system_ms,
        rec.log_lines,
        rec.log_tail,
        rec.hook_recorded_ms,
        spool_key,
        spool_offset,
        rec.upload_ms,
        rec.download_ms,
        rec.connect_ms,
        series_id,
        version,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Merges `rec` into row `id`. The wrapper's observations win for timing and resources
/// (it saw the build start and stop); the hook contributes its time and spool position.
fn merge_into(tx: &Transaction<'_>, id: i64, rec: &BuildRecord) -> rusqlite::Result<()> {
    match rec.source {
        Source::Hook => {
            let (spool_key, spool_offset) = match &rec.spool {
                Some((key, offset)) => (Some(key.as_str()), Some(*offset)),
                None => (None, None),
            };
            tx.prepare_cached(
                "UPDATE builds SET hook_recorded_ms = ?2,
                     spool_key = COALESCE(spool_key, ?3),
                     spool_offset = COALESCE(spool_offset, ?4)
                 WHERE id = ?1",
            )?
            .execute(params![id, rec.hook_recorded_ms, spool_key, spool_offset])?;
        }
        Source::Wrapper => {
            tx.prepare_cached(
                "UPDATE builds SET source = ?14, session_id = ?2, status = ?3,
                     started_ms = COALESCE(?4, started_ms), finished_ms = ?5,
                     duration_ms = COALESCE(?6, duration_ms),
                     timing_source = COALESCE(?7, timing_source),
                     machine = COALESCE(?8, machine),
                     peak_rss_bytes = COALESCE(?9, peak_rss_bytes),
                     cpu_user_ms = COALESCE(?10, cpu_user_ms),
                     cpu_system_ms = COALESCE(?11, cpu_system_ms),
                     log_lines = COALESCE(?12, log_lines),
                     log_tail = COALESCE(?13, log_tail),
                     upload_ms = COALESCE(?15, upload_ms),
                     download_ms = COALESCE(?16, download_ms),
                     connect_ms = COALESCE(?17, connect_ms)
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                rec.session_id,
                rec.status.as_str(),
                rec.started_ms,
                rec.finished_ms,
                rec.duration_ms(),
                rec.timing_source.map(TimingSource::as_str),
                rec.machine,
                rec.peak_rss_bytes,
                rec.cpu_user_ms,
                rec.cpu_system_ms,
                rec.log_lines,
                rec.log_tail,
                Source::Wrapper.as_str(),
                rec.upload_ms,
                rec.download_ms,
                rec.connect_ms,
            ])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    const DRV: &str = "/nix/store/jzlslynp667iba7mzkwkligqhmi9xdmh-t-a.drv";
    const OUT: &str = "/nix/store/c35c2y611x7n8b6fk71av6j614nzch6c-t-a";

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        (dir, ledger)
    }

    fn hook_record(t: i64) -> BuildRecord {
        let mut rec = BuildRecord::new(DRV, Source::Hook, BuildStatus::Built, t);
        rec.hook_recorded_ms = Some(t);
        rec.outputs = vec![("out".into(), OUT.into())];
        rec
    }

    fn wrapper_record(start: i64, stop: i64) -> BuildRecord {
        let mut rec = BuildRecord::new(DRV, Source::Wrapper, BuildStatus::Built, stop);
        rec.started_ms = Some(start);
        rec.timing_source = Some(TimingSource::Wrapper);
        rec.peak_rss_bytes = Some(300 << 20);
        rec
    }

    fn count(ledger: &Ledger) -> i64 {
        ledger
            .conn()
            .query_row("SELECT count(*) FROM builds", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn hook_then_wrapper_is_one_build_with_the_wrappers_timing() {
        let (_dir, mut ledger) = ledger();
        let tx = ledger.conn_mut().transaction().unwrap();
        assert!(matches!(
            record_build(&tx, &hook_record(10_050)).unwrap(),
            Recorded::Inserted(_)
        ));
        let merged = record_build(&tx, &wrapper_record(8_000, 10_000)).unwrap();
        assert!(matches!(merged, Recorded::Merged(_)));
        tx.commit().unwrap();
        assert_eq!(count(&ledger), 1);
        let (source, duration, rss, hook): (String, i64, i64, i64) = ledger
            .conn()
            .query_row(
                "SELECT source, duration_ms, peak_rss_bytes, hook_recorded_ms FROM builds",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            (source.as_str(), duration, rss, hook),
            ("wrapper", 2_000, 300 << 20, 10_050)
        );
    }

    #[test]
    fn wrapper_then_hook_is_one_build_and_keeps_the_outputs() {
        let (_dir, mut ledger) = ledger();
        let tx = ledger.conn_mut().transaction().unwrap();
        record_build(&tx, &wrapper_record(8_000, 10_000)).unwrap();
        assert!(matches!(
            record_build(&tx, &hook_record(10_400)).unwrap(),
            Recorded::Merged(_)
        ));
        tx.commit().unwrap();
        assert_eq!(count(&ledger), 1);
        let path: String = ledger
            .conn()
            .query_row("SELECT path FROM build_outputs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(path, OUT);
    }

    #[test]
    fn the_same_hook_line_twice_is_recorded_once_and_a_later_rebuild_is_a_new_build() {
        let (_dir, mut ledger) = ledger();
        let tx = ledger.conn_mut().transaction().unwrap();
        record_build(&tx, &hook_record(10_000)).unwrap();
        assert!(matches!(
            record_build(&tx, &hook_record(10_000)).unwrap(),
            Recorded::AlreadyPresent(_)
        ));
        assert!(matches!(
            record_build(&tx, &hook_record(99_000)).unwrap(),
            Recorded::Inserted(_)
        ));
        tx.commit().unwrap();
        assert_eq!(count(&ledger), 2);
    }

    #[test]
    fn a_failed_wrapper_build_never_absorbs_a_hook_record() {
        let (_dir, mut ledger) = ledger();
        let tx = ledger.conn_mut().transaction().unwrap();
        record_build(&tx, &hook_record(10_000)).unwrap();
        let mut failed = wrapper_record(9_000, 10_000);
        failed.status = BuildStatus::Failed;
        assert!(matches!(
            record_build(&tx, &failed).unwrap(),
            Recorded::Inserted(_)
        ));
        tx.commit().unwrap();
        assert_eq!(count(&ledger), 2);
    }
}
