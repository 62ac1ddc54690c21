//! Remembering derivation graphs and sources so that `why` works after garbage
//! collection, and reading .drv files back from wherever they still are.
//!
//! At ingest, [`remember`] stores every .drv of a recorded build's closure that the ledger
//! does not have yet (raw ATerm, once per path: store paths are immutable), a manifest of
//! every input source of those .drv files, and manifests of the build's outputs. A known
//! .drv stops the descent: its closure was stored with it, so an already-known closure
//! costs one lookup.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::manifest::{self, ManifestKind};
use crate::ledger::now_ms;
use crate::nix::drv;
use crate::nix::store_path::StorePath;
use crate::Result;

/// Somewhere .drv files can be read from.
pub trait DrvSource {
    /// The bytes of the .drv at `drv_path`; `None` when this source does not have it.
    fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>>;
}

/// The store on this machine: .drv files at their own paths.
pub struct StoreFiles;

impl DrvSource for StoreFiles {
    fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>> {
        read_if_present(Path::new(drv_path))
    }
}

/// A directory holding .drv files by base name (another machine's store, or a corpus).
pub struct DirFiles(pub PathBuf);

impl DrvSource for DirFiles {
    fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>> {
        let base = drv_path.rsplit('/').next().unwrap_or(drv_path);
        read_if_present(&self.0.join(base))
    }
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(crate::Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

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

/// The first source that has a .drv wins: the store (fresh), then the ledger (after GC).
pub struct Layered<'a>(pub Vec<&'a dyn DrvSource>);

impl DrvSource for Layered<'_> {
    fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>> {
        for source in &self.0 {
            if let Some(bytes) = source.read(drv_path)? {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
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
    let mut seen: HashSet<String> = HashSet::new();
    let mut stack = vec![drv_path.to_string()];
    let mut sources: Vec<String> = Vec::new();
    while let Some(path) = stack.pop() {
        if !seen.insert(path.clone()) || is_snapshotted(tx, &path)? {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(parsed) = drv::parse(&bytes) else {
            continue;
        };
        tx.prepare_cached(
            "INSERT OR IGNORE INTO drv_snapshots (drv_path, aterm, stored_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![path, bytes, now_ms()])?;
        done.derivations += 1;
        stack.extend(parsed.input_drvs.into_keys());
        sources.extend(parsed.input_srcs);
    }
    sources.sort();
    sources.dedup();
    for src in sources {
        if manifest::is_known(tx, &src)? || !Path::new(&src).exists() {
            continue;
        }
        if let Ok(m) = manifest::compute(&src, ManifestKind::Source, Vec::new()) {
            manifest::store(tx, &m)?;
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
        if manifest::is_known(tx, out)? || std::fs::symlink_metadata(out).is_err() {
            continue;
        }
        if let Ok(m) = manifest::compute(out, ManifestKind::Output, own.clone()) {
            manifest::store(tx, &m)?;
            stored += 1;
        }
    }
    Ok(stored)
}

fn is_snapshotted(conn: &Connection, drv_path: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM drv_snapshots WHERE drv_path = ?1")?
        .exists([drv_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layered_sources_fall_through_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aaa-x.drv"), b"from dir").unwrap();
        let dirs = DirFiles(dir.path().to_path_buf());
        let layered = Layered(vec![&StoreFiles, &dirs]);
        assert_eq!(
            layered.read("/nix/store/aaa-x.drv").unwrap().as_deref(),
            Some(&b"from dir"[..])
        );
        assert_eq!(layered.read("/nix/store/bbb-y.drv").unwrap(), None);
    }
}
