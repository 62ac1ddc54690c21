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

use std::path::Path;

use rusqlite::{params, Transaction};

use super::model::BuildStatus;
use super::{snapshots, Ledger};
use crate::nix::drv;
use crate::store::db::StoreDb;
use crate::time::now_ms;
use crate::{Error, Result};

/// Builds enriched per transaction: large enough to amortise commits, small enough that
/// an interrupted enrichment keeps most of its work.
const BATCH: usize = 500;

/// Enriches every build not enriched yet; returns how many.
pub fn enrich_pending(ledger: &mut Ledger) -> Result<usize> {
    let path = ledger.path().to_path_buf();
    let err = |e| Error::ledger(&path, e);
    // Best effort: without the store database, builds are enriched from their .drv alone.
    let store = StoreDb::open_default().ok();
    let mut done = 0;
    loop {
        let tx = ledger.conn.transaction().map_err(err)?;
        let pending: Vec<(i64, String, String)> = tx
            .prepare_cached(
                "SELECT id, drv_path, status FROM builds WHERE enriched_ms IS NULL
                 ORDER BY id LIMIT ?1",
            )
            .and_then(|mut stmt| {
                stmt.query_map([BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(err)?;
        if pending.is_empty() {
            return Ok(done);
        }
        for (id, drv_path, status) in &pending {
            let built_here = BuildStatus::parse(status) == Some(BuildStatus::Built);
            enrich_build(&tx, store.as_ref(), *id, drv_path, built_here).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        done += pending.len();
    }
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
    let parsed = drv::read(Path::new(drv_path)).ok();
    // The caller holds a shared connection with no statement running, so one write
    // transaction on it is safe.
    let tx = conn.unchecked_transaction().map_err(err)?;
    for id in pending {
        let outputs = build_outputs(&tx, id, parsed.as_ref()).map_err(err)?;
        snapshots::remember_outputs(&tx, &outputs).map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// A build's outputs as recorded, or, when none were, from its .drv (and then recorded).
fn build_outputs(
    tx: &Transaction<'_>,
    build_id: i64,
    parsed: Option<&drv::Derivation>,
) -> rusqlite::Result<Vec<(String, String)>> {
    let recorded: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT output_name, path FROM build_outputs WHERE build_id = ?1 ORDER BY output_name",
        )?
        .query_map([build_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let Some(parsed) = parsed.filter(|_| recorded.is_empty()) else {
        return Ok(recorded);
    };
    // Floating content-addressed outputs have no path in the .drv: left out.
    let from_drv: Vec<(String, String)> = parsed
        .outputs
        .iter()
        .filter(|(_, o)| !o.path.is_empty())
        .map(|(name, o)| (name.clone(), o.path.clone()))
        .collect();
    for (name, path) in &from_drv {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO build_outputs (build_id, output_name, path) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![build_id, name, path])?;
    }
    Ok(from_drv)
}

fn enrich_build(
    tx: &Transaction<'_>,
    store: Option<&StoreDb>,
    build_id: i64,
    drv_path: &str,
    built_here: bool,
) -> rusqlite::Result<()> {
    let parsed = drv::read(Path::new(drv_path)).ok();
    if let Some(parsed) = &parsed {
        tx.prepare_cached(
            "UPDATE derivations SET name = COALESCE(?2, name), system = COALESCE(system, ?3)
             WHERE drv_path = ?1",
        )?
        .execute(params![drv_path, parsed.env.get("name"), parsed.system])?;
    }
    let outputs = build_outputs(tx, build_id, parsed.as_ref())?;
    if let Some(store) = store {
        store_paths(tx, store, drv_path, &outputs)?;
    }
    if built_here {
        snapshots::remember(tx, drv_path, &outputs)?;
    }
    tx.execute(
        "UPDATE builds SET enriched_ms = ?2 WHERE id = ?1",
        params![build_id, now_ms()],
    )?;
    Ok(())
}

/// Size, registration time and origin of each output that is in the store.
fn store_paths(
    tx: &Transaction<'_>,
    store: &StoreDb,
    drv_path: &str,
    outputs: &[(String, String)],
) -> rusqlite::Result<()> {
    let paths: Vec<&str> = outputs.iter().map(|(_, p)| p.as_str()).collect();
    // Best effort: an unreadable store leaves the sizes unknown, not the build unrecorded.
    for info in store.path_infos(&paths).unwrap_or_default() {
        tx.execute(
            "INSERT INTO store_paths (path, drv_path, nar_size, registered_ms, locally_built, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (path) DO UPDATE SET drv_path = excluded.drv_path,
                 nar_size = excluded.nar_size, registered_ms = excluded.registered_ms,
                 locally_built = excluded.locally_built, updated_ms = excluded.updated_ms",
            params![
                info.path,
                info.deriver.as_deref().unwrap_or(drv_path),
                info.nar_size,
                info.registered_ms,
                info.locally_built,
                now_ms()
            ],
        )?;
    }
    Ok(())
}
