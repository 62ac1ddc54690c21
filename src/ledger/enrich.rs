//! Recording a build with everything the ledger can learn about it, whichever way it was
//! seen (the hook's spool line at ingest, or the wrapper's session): what its .drv says
//! (name, system, outputs), what the Nix store says of its outputs (size, origin), and,
//! for a build made here, the snapshots and manifests that `why` needs later. All of it
//! reads files, which is why none of it happens on the hook's path.

use std::path::Path;

use rusqlite::{params, Transaction};

use super::now_ms;
use super::record::{record_build, BuildRecord, Recorded, Status};
use crate::nix::drv;
use crate::nix::store_db::StoreDb;

/// Fills what `rec` lacks from its .drv, records it, and remembers what `why` needs.
pub fn record_enriched(
    tx: &Transaction<'_>,
    store: Option<&StoreDb>,
    rec: &mut BuildRecord,
) -> rusqlite::Result<Recorded> {
    from_drv(rec);
    let recorded = record_build(tx, rec)?;
    if rec.status == Status::Built {
        crate::why::remember(tx, &rec.drv_path, &rec.outputs)?;
    }
    if let Some(store) = store {
        store_paths(tx, store, &rec.drv_path, &rec.outputs)?;
    }
    Ok(recorded)
}

/// Name, system and (when none are known) output paths from the .drv, if it can be read.
fn from_drv(rec: &mut BuildRecord) {
    if rec.name.is_some() && rec.system.is_some() && !rec.outputs.is_empty() {
        return;
    }
    let Ok(parsed) = drv::read(Path::new(&rec.drv_path)) else {
        return;
    };
    if rec.name.is_none() {
        rec.name = parsed.env.get("name").cloned();
    }
    if rec.system.is_none() {
        rec.system = Some(parsed.system.clone());
    }
    if rec.outputs.is_empty() {
        // Floating content-addressed outputs have no path in the .drv: left out.
        rec.outputs = parsed
            .outputs
            .iter()
            .filter(|(_, o)| !o.path.is_empty())
            .map(|(name, o)| (name.clone(), o.path.clone()))
            .collect();
    }
}

/// Size, registration time and origin of each output that is in the store.
fn store_paths(
    tx: &Transaction<'_>,
    store: &StoreDb,
    drv_path: &str,
    outputs: &[(String, String)],
) -> rusqlite::Result<()> {
    let paths: Vec<&str> = outputs.iter().map(|(_, p)| p.as_str()).collect();
    for info in store.path_infos(&paths) {
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
