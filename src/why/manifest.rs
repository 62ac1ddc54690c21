//! Manifests of store paths: for every file, directory and symlink under a path, its
//! relative path, blake3, size, executable bit and symlink target. This module owns
//! hashing a tree (walkdir, never following symlinks, files hashed in parallel), storing a
//! manifest in the ledger once per store path, loading it back, and diffing two of them.
//!
//! Output manifests are *normalised*: the derivation's own output hash parts are replaced
//! by a placeholder in file contents and symlink targets before hashing, because an output
//! almost always embeds its own store path and two derivations' outputs could otherwise
//! never compare equal. That is what makes a no-op rebuild detectable.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use crate::ledger::now_ms;
use crate::{Error, Result};

/// What replaces a normalised hash part: same length, so sizes stay comparable.
const PLACEHOLDER: &[u8; 32] = b"00000000000000000000000000000000";

/// Files at least this big are hashed with blake3's own multi-threading: one huge file
/// would otherwise keep a single core busy while the others sit idle.
const MMAP_RAYON_MIN: u64 = 16 << 20;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
}

impl EntryType {
    fn as_str(self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Directory => "directory",
            EntryType::Symlink => "symlink",
        }
    }

    fn parse(s: &str) -> Option<EntryType> {
        match s {
            "file" => Some(EntryType::File),
            "directory" => Some(EntryType::Directory),
            "symlink" => Some(EntryType::Symlink),
            _ => None,
        }
    }
}

/// One file, directory or symlink of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the manifest's root, `/`-separated; empty for the root itself.
    pub rel_path: String,
    pub kind: EntryType,
    pub size: u64,
    pub executable: bool,
    pub blake3: Option<[u8; 32]>,
    pub target: Option<String>,
}

/// Whether a manifest describes a source or a built output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Source,
    Output,
}

impl ManifestKind {
    fn as_str(self) -> &'static str {
        match self {
            ManifestKind::Source => "source",
            ManifestKind::Output => "output",
        }
    }
}

/// The manifest of one store path.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub store_path: String,
    pub kind: ManifestKind,
    /// The hash parts replaced before hashing (outputs only).
    pub normalised: Vec<String>,
    /// Sorted by `rel_path`.
    pub entries: Vec<Entry>,
    pub digest: [u8; 32],
    pub hash_ms: i64,
}

impl Manifest {
    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Hashes the tree at `root`. `normalise` lists hash parts (32 characters each) to
/// replace in contents and symlink targets; empty for sources.
pub fn hash_tree(root: &Path, normalise: &[String]) -> Result<Vec<Entry>> {
    let read_err = |path: &Path, source: std::io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    let mut files = Vec::new();
    for item in walkdir::WalkDir::new(root).follow_links(false) {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            let source = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("file system loop"));
            Error::Read { path, source }
        })?;
        let rel_path = item
            .path()
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file_type = item.file_type();
        let entry = if file_type.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(|e| read_err(item.path(), e))?;
            let target = target.to_string_lossy().into_owned();
            Entry {
                rel_path,
                kind: EntryType::Symlink,
                size: 0,
                executable: false,
                blake3: None,
                target: Some(normalise_str(&target, normalise)),
            }
        } else if file_type.is_dir() {
            Entry {
                rel_path,
                kind: EntryType::Directory,
                size: 0,
                executable: false,
                blake3: None,
                target: None,
            }
        } else {
            let meta = item.metadata().map_err(|e| {
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata"));
                read_err(item.path(), source)
            })?;
            files.push((entries.len(), item.path().to_path_buf()));
            Entry {
                rel_path,
                kind: EntryType::File,
                size: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
                blake3: None,
                target: None,
            }
        };
        entries.push(entry);
    }
    let hashes: Vec<(usize, Result<[u8; 32]>)> = files
        .par_iter()
        .map(|(index, path)| (*index, hash_file(path, normalise)))
        .collect();
    for (index, hash) in hashes {
        if let Some(entry) = entries.get_mut(index) {
            entry.blake3 = Some(hash?);
        }
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(entries)
}

fn hash_file(path: &Path, normalise: &[String]) -> Result<[u8; 32]> {
    let err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = blake3::Hasher::new();
    if normalise.is_empty() {
        let len = std::fs::symlink_metadata(path).map_err(err)?.len();
        if len >= MMAP_RAYON_MIN {
            hasher.update_mmap_rayon(path).map_err(err)?;
        } else {
            hasher
                .update_reader(File::open(path).map_err(err)?)
                .map_err(err)?;
        }
        return Ok(*hasher.finalize().as_bytes());
    }
    let finders: Vec<memchr::memmem::Finder<'_>> = normalise
        .iter()
        .map(|h| memchr::memmem::Finder::new(h.as_bytes()))
        .collect();
    let keep = normalise
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let mut file = File::open(path).map_err(err)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(err)?;
        let eof = n == 0;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        for (finder, pattern) in finders.iter().zip(normalise) {
            let mut from = 0;
            while let Some(i) = finder.find(buf.get(from..).unwrap_or_default()) {
                let at = from + i;
                if let Some(slot) = buf.get_mut(at..at + pattern.len()) {
                    slot.copy_from_slice(PLACEHOLDER.get(..pattern.len()).unwrap_or_default());
                }
                from = at + pattern.len();
            }
        }
        if eof {
            hasher.update(&buf);
            break;
        }
        // A pattern cut by the chunk boundary is completed by the next chunk; whatever
        // starts earlier than the last `keep` bytes was matched whole already.
        let done = buf.len().saturating_sub(keep);
        hasher.update(buf.get(..done).unwrap_or_default());
        buf.drain(..done);
    }
    Ok(*hasher.finalize().as_bytes())
}

fn normalise_str(s: &str, normalise: &[String]) -> String {
    let mut out = s.to_string();
    for h in normalise {
        if !h.is_empty() {
            out = out.replace(
                h.as_str(),
                &String::from_utf8_lossy(PLACEHOLDER)[..h.len().min(32)],
            );
        }
    }
    out
}

/// blake3 over the sorted entries: equal digests mean equal manifests.
pub fn digest(entries: &[Entry]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for e in entries {
        hasher.update(e.rel_path.as_bytes());
        hasher.update(&[0, e.kind as u8, u8::from(e.executable)]);
        hasher.update(&e.size.to_le_bytes());
        hasher.update(
            e.blake3
                .as_ref()
                .map(|h| h.as_slice())
                .unwrap_or(&[0u8; 32]),
        );
        if let Some(t) = &e.target {
            hasher.update(t.as_bytes());
        }
        hasher.update(&[0]);
    }
    *hasher.finalize().as_bytes()
}

/// Hashes the store path `path` into a manifest (not stored).
pub fn compute(path: &str, kind: ManifestKind, normalise: Vec<String>) -> Result<Manifest> {
    let started = Instant::now();
    let entries = hash_tree(Path::new(path), &normalise)?;
    Ok(Manifest {
        store_path: path.to_string(),
        kind,
        normalised: normalise,
        digest: digest(&entries),
        entries,
        hash_ms: started.elapsed().as_millis() as i64,
    })
}

/// Whether the ledger has a manifest of `path`.
pub fn is_known(conn: &Connection, path: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM manifests WHERE store_path = ?1")?
        .exists([path])
}

/// The stored digest of `path`'s manifest.
pub fn stored_digest(conn: &Connection, path: &str) -> rusqlite::Result<Option<[u8; 32]>> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT digest FROM manifests WHERE store_path = ?1")?
        .query_row([path], |row| row.get(0))
        .optional()?;
    Ok(blob.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
}

/// Stores a manifest; a manifest already there is left as it is (store paths are immutable).
pub fn store(tx: &Transaction<'_>, m: &Manifest) -> rusqlite::Result<()> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO manifests (store_path, kind, normalised, entries, total_bytes,
             digest, hash_ms, stored_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            m.store_path,
            m.kind.as_str(),
            (!m.normalised.is_empty()).then(|| m.normalised.join(" ")),
            m.entries.len() as i64,
            m.total_bytes() as i64,
            m.digest.as_slice(),
            m.hash_ms,
            now_ms()
        ],
    )?;
    if inserted == 0 {
        return Ok(());
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
    Ok(())
}

/// Loads the stored manifest of `path`, if any.
pub fn load(conn: &Connection, path: &str) -> rusqlite::Result<Option<Manifest>> {
    let head: Option<(String, Option<String>, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT kind, normalised, digest, hash_ms FROM manifests WHERE store_path = ?1",
        )?
        .query_row([path], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((kind, normalised, digest_blob, hash_ms)) = head else {
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
            kind: EntryType::parse(&kind).unwrap_or(EntryType::File),
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
    }))
}

/// How one path differs between two manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileChangeKind {
    Added,
    Removed,
    Modified,
}

/// One path that differs between two manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Relative path; empty when the source is a single file.
    pub path: String,
    pub change: FileChangeKind,
    /// For modified entries: what differs (`contents`, `mode`, `type`, `target`), and sizes.
    pub detail: Option<String>,
}

/// The differences from `old` to `new`, in path order.
pub fn diff(old: &[Entry], new: &[Entry]) -> Vec<FileChange> {
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(o), n) if n.is_none_or(|n| o.rel_path < n.rel_path) => {
                changes.push(FileChange {
                    path: o.rel_path.clone(),
                    change: FileChangeKind::Removed,
                    detail: None,
                });
                i += 1;
            }
            (o, Some(n)) if o.is_none_or(|o| n.rel_path < o.rel_path) => {
                changes.push(FileChange {
                    path: n.rel_path.clone(),
                    change: FileChangeKind::Added,
                    detail: None,
                });
                j += 1;
            }
            (Some(o), Some(n)) => {
                if let Some(detail) = entry_difference(o, n) {
                    changes.push(FileChange {
                        path: n.rel_path.clone(),
                        change: FileChangeKind::Modified,
                        detail: Some(detail),
                    });
                }
                i += 1;
                j += 1;
            }
            // Unreachable: the guards above cover every case with at least one side.
            _ => break,
        }
    }
    // An added or removed directory with files in it says nothing its files do not.
    let is_dir = |path: &str, side: &[Entry]| {
        side.binary_search_by(|e| e.rel_path.as_str().cmp(path))
            .ok()
            .and_then(|i| side.get(i))
            .is_some_and(|e| e.kind == EntryType::Directory)
    };
    let listed: Vec<String> = changes.iter().map(|c| c.path.clone()).collect();
    changes.retain(|c| {
        let side = match c.change {
            FileChangeKind::Added => new,
            FileChangeKind::Removed => old,
            FileChangeKind::Modified => return true,
        };
        let prefix = format!("{}/", c.path);
        !(is_dir(&c.path, side) && listed.iter().any(|p| p.starts_with(&prefix)))
    });
    changes
}

fn entry_difference(o: &Entry, n: &Entry) -> Option<String> {
    if o.kind != n.kind {
        return Some(format!("{} → {}", o.kind.as_str(), n.kind.as_str()));
    }
    let mut what = Vec::new();
    if o.blake3 != n.blake3 || o.size != n.size {
        what.push(format!("contents, {} → {} bytes", o.size, n.size));
    }
    if o.executable != n.executable {
        what.push(if n.executable {
            "now executable".to_string()
        } else {
            "no longer executable".to_string()
        });
    }
    if o.target != n.target {
        what.push(format!(
            "target {} → {}",
            o.target.as_deref().unwrap_or(""),
            n.target.as_deref().unwrap_or("")
        ));
    }
    (!what.is_empty()).then(|| what.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(dir: &Path, rel: &str, body: &[u8]) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    #[test]
    fn a_tree_is_listed_with_hashes_modes_and_unfollowed_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", b"hello");
        write(dir.path(), "sub/run.sh", b"#!/bin/sh\n");
        std::fs::set_permissions(
            dir.path().join("sub/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // A symlink to a directory outside must not be followed.
        symlink("/usr", dir.path().join("link")).unwrap();
        let entries = hash_tree(dir.path(), &[]).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.rel_path.as_str()).collect();
        assert_eq!(names, ["", "a.txt", "link", "sub", "sub/run.sh"]);
        assert_eq!(entries[1].blake3, Some(*blake3::hash(b"hello").as_bytes()));
        assert_eq!(entries[1].size, 5);
        assert!(!entries[1].executable);
        assert_eq!(entries[2].kind, EntryType::Symlink);
        assert_eq!(entries[2].target.as_deref(), Some("/usr"));
        assert!(entries[4].executable);
    }

    #[test]
    fn a_single_file_root_has_an_empty_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "f", b"x");
        let entries = hash_tree(&dir.path().join("f"), &[]).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].rel_path, "");
        assert_eq!(entries[0].kind, EntryType::File);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = hash_tree(Path::new("/nonexistent/nix-ledger-x"), &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/nix-ledger-x"),
            "{err}"
        );
    }

    #[test]
    fn self_references_are_normalised_also_across_read_chunks() {
        let h1 = "a".repeat(32);
        let h2 = "b".repeat(32);
        let dir = tempfile::tempdir().unwrap();
        // Put one reference right across the 1 MiB read boundary.
        let mut one = vec![b'.'; (1 << 20) - 10];
        one.extend_from_slice(format!("/nix/store/{h1}-x").as_bytes());
        let two = String::from_utf8(one.clone()).unwrap().replace(&h1, &h2);
        write(dir.path(), "one", &one);
        write(dir.path(), "two", two.as_bytes());
        let a = hash_file(&dir.path().join("one"), std::slice::from_ref(&h1)).unwrap();
        let b = hash_file(&dir.path().join("two"), std::slice::from_ref(&h2)).unwrap();
        assert_eq!(a, b);
        let raw = hash_file(&dir.path().join("one"), &[]).unwrap();
        assert_ne!(a, raw);
        // Normalising with a hash that does not occur changes nothing.
        let other = hash_file(&dir.path().join("one"), std::slice::from_ref(&h2)).unwrap();
        assert_eq!(other, raw);
    }

    #[test]
    fn diffs_name_added_removed_and_modified_paths() {
        let old_dir = tempfile::tempdir().unwrap();
        let new_dir = tempfile::tempdir().unwrap();
        write(old_dir.path(), "README.md", b"v1");
        write(old_dir.path(), "gone.txt", b"x");
        write(old_dir.path(), "same.c", b"int x;");
        write(new_dir.path(), "README.md", b"v2!");
        write(new_dir.path(), "new.txt", b"y");
        write(new_dir.path(), "same.c", b"int x;");
        let old = hash_tree(old_dir.path(), &[]).unwrap();
        let new = hash_tree(new_dir.path(), &[]).unwrap();
        let changes = diff(&old, &new);
        let summary: Vec<(&str, FileChangeKind)> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.change))
            .collect();
        assert_eq!(
            summary,
            [
                ("README.md", FileChangeKind::Modified),
                ("gone.txt", FileChangeKind::Removed),
                ("new.txt", FileChangeKind::Added),
            ]
        );
        assert_eq!(changes[0].detail.as_deref(), Some("contents, 2 → 3 bytes"));
        assert_ne!(digest(&old), digest(&new));
        // A new directory is named by its files; an empty one by itself.
        write(new_dir.path(), ".github/ci.yml", b"on: push");
        std::fs::create_dir(new_dir.path().join("empty")).unwrap();
        let new = hash_tree(new_dir.path(), &[]).unwrap();
        let paths: Vec<String> = diff(&old, &new).into_iter().map(|c| c.path).collect();
        assert_eq!(
            paths,
            [
                ".github/ci.yml",
                "README.md",
                "empty",
                "gone.txt",
                "new.txt"
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    fn files(map: &std::collections::BTreeMap<String, u8>) -> Vec<Entry> {
        map.iter()
            .map(|(path, content)| Entry {
                rel_path: path.clone(),
                kind: EntryType::File,
                size: 1,
                executable: false,
                blake3: Some(*blake3::hash(&[*content]).as_bytes()),
                target: None,
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn diff_reports_exactly_the_added_removed_and_modified_files(
            old in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2})?", 0u8..3, 0..12),
            new in proptest::collection::btree_map("[a-c]{1,2}(/[a-c]{1,2})?", 0u8..3, 0..12),
        ) {
            let mut expected = Vec::new();
            for (path, content) in &old {
                match new.get(path) {
                    None => expected.push((path.clone(), FileChangeKind::Removed)),
                    Some(c) if c != content => expected.push((path.clone(), FileChangeKind::Modified)),
                    Some(_) => {}
                }
            }
            for path in new.keys().filter(|p| !old.contains_key(*p)) {
                expected.push((path.clone(), FileChangeKind::Added));
            }
            expected.sort();
            let mut got: Vec<(String, FileChangeKind)> = diff(&files(&old), &files(&new))
                .into_iter()
                .map(|c| (c.path, c.change))
                .collect();
            got.sort();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(digest(&files(&old)) == digest(&files(&new)), old == new);
        }
    }

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
