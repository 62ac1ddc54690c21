//! The ledger's copies of what `why` needs after Nix garbage-collected it: the .drv
//! files of every recorded build's closure (`drv_snapshots`) and the manifests of their
//! sources and of outputs built here (through [`super::manifests`]).
//!
//! Remembering is in two steps, so that no write lock is held while files are read and
//! hashed (that can take seconds, and every other `nix-ledger` would wait): a
//! [`Gatherer`] reads and hashes what the ledger does not have yet, then
//! [`Gathered::store`] writes it in the caller's write transaction. A known .drv stops
//! the descent: its closure was stored with it, so an already-known closure costs one
//! lookup. Rows are inserted if absent, so two processes gathering the same paths at
//! once store them once.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{manifests, Ledger};
use crate::nix::drv;
use crate::nix::graph::{self, DrvSource};
use crate::nix::store_path::StorePath;
use crate::store::manifest::{self, Manifest, ManifestKind};
use crate::time::now_ms;
use crate::Result;

/// The ledger's snapshots.
pub struct Snapshots<'c> {
    pub(super) conn: &'c Connection,
    pub(super) ledger_path: &'c Path,
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
    /// Remembers what `why` will need of the build of `drv_path` with these outputs
    /// (see [`Gatherer::remember`]), and stores it in a transaction of its own.
    pub fn remember(&mut self, drv_path: &str, outputs: &[(String, String)]) -> Result<Remembered> {
        let mut gatherer = Gatherer::default();
        gatherer
            .remember(&self.conn, drv_path, outputs)
            .map_err(|e| self.err(e))?;
        let gathered = gatherer.finish();
        let path = self.path.clone();
        let err = |e| crate::Error::ledger(&path, e);
        let tx = self.write_transaction().map_err(err)?;
        let done = gathered.store(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(done)
    }
}

/// What one store wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub derivations: usize,
    pub source_manifests: usize,
    pub output_manifests: usize,
}

/// Reads and hashes, without writing, what the ledger lacks; shared by every build of a
/// batch so that a closure or a source they share is read once.
#[derive(Default)]
pub struct Gatherer {
    seen_drvs: HashSet<String>,
    seen_paths: HashSet<String>,
    gathered: Gathered,
}

/// What a [`Gatherer`] read and hashed, to be stored.
#[derive(Default)]
pub struct Gathered {
    snapshots: Vec<(String, Vec<u8>)>,
    manifests: Vec<Manifest>,
}

impl Gatherer {
    /// Gathers what `why` will need of the build of `drv_path` with these outputs: its
    /// closure's .drv files, their input sources' manifests, and the outputs' manifests.
    /// Paths no longer in the store are skipped (nothing to read); only database errors
    /// fail. `conn` is only read.
    pub fn remember(
        &mut self,
        conn: &Connection,
        drv_path: &str,
        outputs: &[(String, String)],
    ) -> rusqlite::Result<()> {
        let mut sources: Vec<String> = Vec::new();
        let seen_drvs = &mut self.seen_drvs;
        let snapshots = &mut self.gathered.snapshots;
        graph::walk(&[drv_path], |path| -> rusqlite::Result<Vec<String>> {
            if !seen_drvs.insert(path.to_string()) || is_snapshotted(conn, path)? {
                return Ok(Vec::new());
            }
            // Gone from the store, or damaged: nothing to keep, nothing to descend into.
            let Some((bytes, parsed)) = std::fs::read(path)
                .ok()
                .and_then(|bytes| drv::parse(&bytes).ok().map(|parsed| (bytes, parsed)))
            else {
                return Ok(Vec::new());
            };
            snapshots.push((path.to_string(), bytes));
            sources.extend(parsed.input_srcs);
            Ok(parsed.input_drvs.into_keys().collect())
        })?;
        sources.sort();
        sources.dedup();
        for src in sources {
            if !self.wants(conn, &src)? || !Path::new(&src).exists() {
                continue;
            }
            if let Ok(m) = manifest::compute(&src, ManifestKind::Source, Vec::new()) {
                self.gathered.manifests.push(m);
            }
        }
        self.remember_outputs(conn, outputs)
    }

    /// Gathers the manifests of one build's outputs that are in the store and not known
    /// yet (what "no-op" is judged on).
    pub fn remember_outputs(
        &mut self,
        conn: &Connection,
        outputs: &[(String, String)],
    ) -> rusqlite::Result<()> {
        // Every output's hash part: an output may embed its siblings' paths too (`out`
        // in `dev`).
        let own: Vec<String> = outputs
            .iter()
            .filter_map(|(_, p)| StorePath::parse(p).ok().map(|s| s.hash_part().to_string()))
            .collect();
        for (_, out) in outputs {
            if !self.wants(conn, out)? || std::fs::symlink_metadata(out).is_err() {
                continue;
            }
            if let Ok(m) = manifest::compute(out, ManifestKind::Output, own.clone()) {
                self.gathered.manifests.push(m);
            }
        }
        Ok(())
    }

    /// Whether `path`'s manifest is neither stored nor gathered already.
    fn wants(&mut self, conn: &Connection, path: &str) -> rusqlite::Result<bool> {
        Ok(self.seen_paths.insert(path.to_string()) && !manifests::is_known(conn, path)?)
    }

    /// What was gathered, to be stored.
    pub fn finish(self) -> Gathered {
        self.gathered
    }
}

impl Gathered {
    /// Writes what was gathered (rows already there are left as they are).
    pub fn store(&self, tx: &Transaction<'_>) -> rusqlite::Result<Remembered> {
        let mut done = Remembered::default();
        for (path, bytes) in &self.snapshots {
            done.derivations += tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO drv_snapshots (drv_path, aterm, stored_ms) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![path, bytes, now_ms()])?;
        }
        for m in &self.manifests {
            if manifests::store(tx, m)? {
                match m.kind {
                    ManifestKind::Source => done.source_manifests += 1,
                    ManifestKind::Output => done.output_manifests += 1,
                }
            }
        }
        Ok(done)
    }
}

fn is_snapshotted(conn: &Connection, drv_path: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM drv_snapshots WHERE drv_path = ?1")?
        .exists([drv_path])
}
