//! Storing manifests (see [`crate::store::manifest`]) in the ledger, once per store path
//! (store paths are immutable), and loading them back.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::store::manifest::{Entry, EntryType, Manifest, ManifestKind};
use crate::time::now_ms;

/// Whether the ledger has a manifest of `path`.
pub fn is_known(conn: &Connection, path: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM manifests WHERE store_path = ?1")?
        .exists([path])
}

/// The stored digest of `path`'s manifest; `None` also when the manifest is incomplete
/// (its digest then says nothing of equality).
pub fn stored_digest(conn: &Connection, path: &str) -> rusqlite::Result<Option<[u8; 32]>> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT digest FROM manifests WHERE store_path = ?1 AND incomplete IS NULL",
        )?
        .query_row([path], |row| row.get(0))
        .optional()?;
    Ok(blob.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
}

/// Stores a manifest; a manifest already there is left as it is (store paths are
/// immutable). Returns whether it was stored now.
pub fn store(tx: &Transaction<'_>, m: &Manifest) -> rusqlite::Result<bool> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO manifests (store_path, kind, normalised, entries, total_bytes,
             digest, hash_ms, stored_ms, incomplete) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            m.store_path,
            m.kind.as_str(),
            (!m.normalised.is_empty()).then(|| m.normalised.join(" ")),
            m.entries.len() as i64,
            m.total_bytes() as i64,
            m.digest.as_slice(),
            m.hash_ms,
            now_ms(),
            m.incomplete,
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO manifest_entries (store_path, rel_path, type, size, executable, blake3, target)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in &m.entries {
        let is_file = e.kind == EntryType::File;
        stmt.execute(params![
            m.store_path,
            e.rel_path,
            e.kind.as_str(),
            is_file.then_some(e.size as i64),
            is_file.then_some(e.executable),
            e.blake3.as_ref().map(|h| h.as_slice()),
            e.target,
        ])?;
    }
    Ok(true)
}

/// Loads the stored manifest of `path`, if any.
pub fn load(conn: &Connection, path: &str) -> rusqlite::Result<Option<Manifest>> {
    type Head = (String, Option<String>, Vec<u8>, i64, Option<String>);
    let head: Option<Head> = conn
        .prepare_cached(
            "SELECT kind, normalised, digest, hash_ms, incomplete FROM manifests WHERE store_path = ?1",
        )?
        .query_row([path], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((kind, normalised, digest_blob, hash_ms, incomplete)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT rel_path, type, size, executable, blake3, target FROM manifest_entries
         WHERE store_path = ?1 ORDER BY rel_path",
    )?;
    let rows = stmt.query_map([path], |r| {
        let kind: String = r.get(1)?;
        let hash: Option<Vec<u8>> = r.get(4)?;
        Ok(Entry {
            rel_path: r.get(0)?,
            kind: EntryType::parse(&kind).unwrap_or(EntryType::Other),
            size: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
            executable: r.get::<_, Option<bool>>(3)?.unwrap_or(false),
            blake3: hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()),
            target: r.get(5)?,
        })
    })?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // SQLite's ORDER BY is bytewise like Rust's, but do not depend on it for the diff.
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(Some(Manifest {
        store_path: path.to_string(),
        kind: if kind == "output" {
            ManifestKind::Output
        } else {
            ManifestKind::Source
        },
        normalised: normalised
            .map(|n| n.split(' ').map(str::to_string).collect())
            .unwrap_or_default(),
        entries,
        digest: <[u8; 32]>::try_from(digest_blob.as_slice()).unwrap_or([0; 32]),
        hash_ms,
        incomplete,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::tests::write;
    use crate::store::manifest::{compute, digest};
    use std::os::unix::fs::symlink;

    #[test]
    fn a_stored_manifest_loads_back_equal_and_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "src/main.rs", b"fn main() {}");
        symlink("main.rs", dir.path().join("src/link")).unwrap();
        let path = dir.path().to_str().unwrap();
        let m = compute(path, ManifestKind::Source, Vec::new()).unwrap();
        let mut ledger = crate::ledger::Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let tx = ledger.conn_mut().transaction().unwrap();
        store(&tx, &m).unwrap();
        store(&tx, &m).unwrap();
        tx.commit().unwrap();
        let back = load(ledger.conn(), path).unwrap().unwrap();
        assert_eq!(back.entries, m.entries);
        assert_eq!(back.digest, m.digest);
        assert_eq!(digest(&back.entries), m.digest);
        assert!(is_known(ledger.conn(), path).unwrap());
        assert_eq!(stored_digest(ledger.conn(), path).unwrap(), Some(m.digest));
        assert!(load(ledger.conn(), "/nix/store/none").unwrap().is_none());
    }
}
