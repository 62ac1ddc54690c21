//! The ledger's copies of what `why` needs after Nix garbage-collected it: the .drv
//! files of every recorded build's closure (`drv_snapshots`) and the manifests of their
//! sources and of outputs built here (through [`super::manifests`]).
//!
//! At enrichment, [`remember`] stores every .drv of a build's closure that the ledger does
//! not have yet (raw ATerm, once per path: store paths are immutable), a manifest of every
//! input source of those .drv files, and manifests of the build's outputs. A known .drv
//! stops the descent: its closure was stored with it, so an already-known closure costs
//! one lookup.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{manifests, Ledger};
use crate::nix::drv;
use crate::nix::graph::{self, DrvSource};
use crate::nix::store_path::StorePath;
use crate::store::manifest::{self, ManifestKind};
use crate::time::now_ms;
use crate::Result;

/// The ledger's snapshots.
pub struct Snapshots<'c> {
    pub conn: &'c Connection,
    pub ledger_path: &'c Path,
}

impl DrvSource for Snapshots<'_> {
    fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>> {
        self.conn
            .prepare_cached("SELECT aterm FROM drv_snapshots WHERE drv_path = ?1")
            .and_then(|mut stmt| stmt.query_row([drv_path], |r| r.get(0)).optional())
            .map_err(|e| crate::Error::ledger(self.ledger_path, e))
    }
}

impl Ledger {
    /// [`remember`] in a transaction of its own.
    pub fn remember(&mut self, drv_path: &str, outputs: &[(String, String)]) -> Result<Remembered> {
        let path = self.path.clone();
        let err = |e| crate::Error::ledger(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let done = remember(&tx, drv_path, outputs).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(done)
    }
}

/// What one [`remember`] stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub derivations: usize,
    pub source_manifests: usize,
    pub output_manifests: usize,
}

/// Stores what `why` will need of the build of `drv_path` with these outputs: its
/// closure's .drv files, their input sources' manifests, and the outputs' manifests.
/// Paths no longer in the store are skipped (nothing to read); only database errors fail.
pub fn remember(
    tx: &Transaction<'_>,
    drv_path: &str,
    outputs: &[(String, String)],
) -> rusqlite::Result<Remembered> {
    let mut done = Remembered::default();
    let mut sources: Vec<String> = Vec::new();
    graph::walk(&[drv_path], |path| -> rusqlite::Result<Vec<String>> {
        if is_snapshotted(tx, path)? {
            return Ok(Vec::new());
        }
        // Gone from the store, or damaged: nothing to keep, nothing to descend into.
        let Some((bytes, parsed)) = std::fs::read(path)
            .ok()
            .and_then(|bytes| drv::parse(&bytes).ok().map(|parsed| (bytes, parsed)))
        else {
            return Ok(Vec::new());
        };
        tx.prepare_cached(
            "INSERT OR IGNORE INTO drv_snapshots (drv_path, aterm, stored_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![path, bytes, now_ms()])?;
        done.derivations += 1;
        sources.extend(parsed.input_srcs);
        Ok(parsed.input_drvs.into_keys().collect())
    })?;
    sources.sort();
    sources.dedup();
    for src in sources {
        if manifests::is_known(tx, &src)? || !Path::new(&src).exists() {
            continue;
        }
        if let Ok(m) = manifest::compute(&src, ManifestKind::Source, Vec::new()) {
            manifests::store(tx, &m)?;
            done.source_manifests += 1;
        }
    }
    done.output_manifests = remember_outputs(tx, outputs)?;
    Ok(done)
}

/// Stores the manifests of one build's outputs that are in the store and not known yet
/// (what "no-op" is judged on); returns how many were stored.
pub fn remember_outputs(
    tx: &Transaction<'_>,
    outputs: &[(String, String)],
) -> rusqlite::Result<usize> {
    // Every output's hash part: an output may embed its siblings' paths too (`out` in `dev`).
    let own: Vec<String> = outputs
        .iter()
        .filter_map(|(_, p)| StorePath::parse(p).ok().map(|s| s.hash_part().to_string()))
        .collect();
    let mut stored = 0;
    for (_, out) in outputs {
        if manifests::is_known(tx, out)? || std::fs::symlink_metadata(out).is_err() {
            continue;
        }
        if let Ok(m) = manifest::compute(out, ManifestKind::Output, own.clone()) {
            manifests::store(tx, &m)?;
            stored += 1;
        }
    }
    Ok(stored)
}

fn is_snapshotted(conn: &Connection, drv_path: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM drv_snapshots WHERE drv_path = ?1")?
        .exists([drv_path])
}
