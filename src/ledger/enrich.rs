//! Enrichment: everything the ledger learns about a recorded build beyond what its
//! recorder saw: what its .drv says (name, system, outputs), what the Nix store says of
//! its outputs (size, origin), and, for a build made here, the .drv snapshots and
//! manifests that `why` needs once the store has forgotten them.
//!
//! Recording (the hook's spool lines at ingest, the wrapper's session) stays fast and
//! leaves builds marked not enriched (`builds.enriched_ms IS NULL`); every command then
//! enriches what is pending before it reads, except `nix-ledger build`, whose rebuild
//! summary enriches only the builds of the root causes it judges, so that the user's
//! build does not wait for the rest.
//!
//! Files are read and hashed with no lock held; only the writes that follow take the
//! ledger's write lock, briefly, so that concurrent commands wait their turn rather than
//! time out behind a long hash.

use std::path::Path;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::model::BuildStatus;
use super::record::series_for;
use super::snapshots::Gatherer;
use super::Ledger;
use crate::nix::drv::{self, Derivation};
use crate::store::db::{PathInfo, StoreDb};
use crate::time::now_ms;
use crate::{Error, Result};

/// Builds enriched per transaction: large enough to amortise commits, small enough that
/// an interrupted enrichment keeps most of its work.
const BATCH: usize = 500;

/// What one build's enrichment writes.
struct Enrichment {
    build_id: i64,
    drv_path: String,
    name: Option<String>,
    system: Option<String>,
    /// Outputs read from the .drv, for a build recorded without any.
    outputs_from_drv: Vec<(String, String)>,
    store_infos: Vec<PathInfo>,
}

/// Enriches every build not enriched yet; returns how many.
pub fn enrich_pending(ledger: &mut Ledger) -> Result<usize> {
    let path = ledger.path().to_path_buf();
    let err = |e| Error::ledger(&path, e);
    // Best effort: without the store database, builds are enriched from their .drv alone.
    let store = StoreDb::open_default().ok();
    let mut done = 0;
    let mut after = 0i64;
    loop {
        let pending: Vec<(i64, String, String)> = ledger
            .conn
            .prepare_cached(
                "SELECT id, drv_path, status FROM builds WHERE enriched_ms IS NULL AND id > ?2
                 ORDER BY id LIMIT ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![BATCH as i64, after], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect()
            })
            .map_err(err)?;
        let Some((last, _, _)) = pending.last() else {
            return Ok(done);
        };
        after = *last;
        let mut gatherer = Gatherer::default();
        let mut enrichments = Vec::with_capacity(pending.len());
        for (id, drv_path, status) in &pending {
            let built_here = BuildStatus::parse(status) == Some(BuildStatus::Built);
            enrichments.push(
                gather(
                    &ledger.conn,
                    &mut gatherer,
                    store.as_ref(),
                    *id,
                    drv_path,
                    built_here,
                )
                .map_err(err)?,
            );
        }
        let gathered = gatherer.finish();
        let tx = ledger.write_transaction().map_err(err)?;
        for e in &enrichments {
            done += usize::from(write(&tx, e).map_err(err)?);
        }
        gathered.store(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
    }
}

/// Reads (never writes) what the enrichment of one build needs.
fn gather(
    conn: &Connection,
    gatherer: &mut Gatherer,
    store: Option<&StoreDb>,
    build_id: i64,
    drv_path: &str,
    built_here: bool,
) -> rusqlite::Result<Enrichment> {
    let parsed = drv::read(Path::new(drv_path)).ok();
    let recorded = recorded_outputs(conn, build_id)?;
    let outputs_from_drv = if recorded.is_empty() {
        parsed.as_ref().map(drv_outputs).unwrap_or_default()
    } else {
        Vec::new()
    };
    let outputs = if recorded.is_empty() {
        &outputs_from_drv
    } else {
        &recorded
    };
    let paths: Vec<&str> = outputs.iter().map(|(_, p)| p.as_str()).collect();
    // Best effort: an unreadable store leaves the sizes unknown, not the build unrecorded.
    let store_infos = store
        .and_then(|s| s.path_infos(&paths).ok())
        .unwrap_or_default();
    if built_here {
        gatherer.remember(conn, drv_path, outputs)?;
    }
    Ok(Enrichment {
        build_id,
        drv_path: drv_path.to_string(),
        name: parsed.as_ref().and_then(|d| d.env.get("name").cloned()),
        system: parsed.map(|d| d.system),
        outputs_from_drv,
        store_infos,
    })
}

/// Writes one build's enrichment and marks it enriched; `false` when another
/// `nix-ledger` enriched it meanwhile (then nothing is written again).
fn write(tx: &Transaction<'_>, e: &Enrichment) -> rusqlite::Result<bool> {
    let marked = tx
        .prepare_cached("UPDATE builds SET enriched_ms = ?2 WHERE id = ?1 AND enriched_ms IS NULL")?
        .execute(params![e.build_id, now_ms()])?;
    if marked == 0 {
        return Ok(false);
    }
    if e.system.is_some() {
        tx.prepare_cached(
            "UPDATE derivations SET name = COALESCE(?2, name), system = COALESCE(system, ?3)
             WHERE drv_path = ?1",
        )?
        .execute(params![e.drv_path, e.name, e.system])?;
    }
    if let Some(name) = &e.name {
        // The .drv's own name wins over the one taken from the path: its builds follow
        // it into its series (a no-op unless the two differ).
        let (series_id, version) = series_for(tx, name)?;
        tx.prepare_cached(
            "UPDATE builds SET series_id = ?2, version = ?3
             WHERE drv_path = ?1 AND (series_id IS NOT ?2 OR version IS NOT ?3)",
        )?
        .execute(params![e.drv_path, series_id, version])?;
    }
    insert_outputs(tx, e.build_id, &e.outputs_from_drv)?;
    for info in &e.store_infos {
        tx.prepare_cached(
            "INSERT INTO store_paths (path, drv_path, nar_size, registered_ms, locally_built, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (path) DO UPDATE SET drv_path = excluded.drv_path,
                 nar_size = excluded.nar_size, registered_ms = excluded.registered_ms,
                 locally_built = excluded.locally_built, updated_ms = excluded.updated_ms",
        )?
        .execute(params![
            info.path,
            info.deriver.as_deref().unwrap_or(&e.drv_path),
            info.nar_size,
            info.registered_ms,
            info.locally_built,
            now_ms()
        ])?;
    }
    // The size `trends` follows: all outputs together, once each one's size is known.
    tx.prepare_cached(
        "UPDATE builds SET output_nar_bytes = (
             SELECT CASE WHEN count(*) > 0 AND count(p.nar_size) = count(*)
                         THEN sum(p.nar_size) END
             FROM build_outputs o LEFT JOIN store_paths p ON p.path = o.path
             WHERE o.build_id = ?1)
         WHERE id = ?1 AND status = ?2",
    )?
    .execute(params![e.build_id, BuildStatus::Built.as_str()])?;
    Ok(true)
}

/// Just what a verdict on `drv_path` reads, for builds not enriched yet: their outputs
/// (from the .drv when the recorder did not know them) and those outputs' manifests. The
/// rest of their enrichment waits for [`enrich_pending`].
pub fn outputs_for_verdict(ledger: &Ledger, drv_path: &str) -> Result<()> {
    let err = |e| ledger.err(e);
    let conn = &ledger.conn;
    let pending: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM builds WHERE drv_path = ?1 AND status = ?2 AND enriched_ms IS NULL",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![drv_path, BuildStatus::Built.as_str()], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(err)?;
    if pending.is_empty() {
        return Ok(());
    }
    let from_drv = drv::read(Path::new(drv_path))
        .ok()
        .as_ref()
        .map(drv_outputs)
        .unwrap_or_default();
    let mut gatherer = Gatherer::default();
    let mut missing_outputs = Vec::new();
    for &id in &pending {
        let recorded = recorded_outputs(conn, id).map_err(err)?;
        let outputs = if recorded.is_empty() {
            missing_outputs.push(id);
            &from_drv
        } else {
            &recorded
        };
        gatherer.remember_outputs(conn, outputs).map_err(err)?;
    }
    let gathered = gatherer.finish();
    // The caller holds a shared connection with no statement running, so one write
    // transaction on it is safe.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(err)?;
    for id in missing_outputs {
        insert_outputs(&tx, id, &from_drv).map_err(err)?;
    }
    gathered.store(&tx).map_err(err)?;
    tx.commit().map_err(err)
}

/// A build's recorded outputs.
fn recorded_outputs(conn: &Connection, build_id: i64) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare_cached(
        "SELECT output_name, path FROM build_outputs WHERE build_id = ?1 ORDER BY output_name",
    )?
    .query_map([build_id], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The outputs a .drv names. Floating content-addressed outputs have no path there and
/// are left out.
fn drv_outputs(parsed: &Derivation) -> Vec<(String, String)> {
    parsed
        .outputs
        .iter()
        .filter(|(_, o)| !o.path.is_empty())
        .map(|(name, o)| (name.clone(), o.path.clone()))
        .collect()
}

fn insert_outputs(
    tx: &Transaction<'_>,
    build_id: i64,
    outputs: &[(String, String)],
) -> rusqlite::Result<()> {
    for (name, path) in outputs {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO build_outputs (build_id, output_name, path) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![build_id, name, path])?;
    }
    Ok(())
}
