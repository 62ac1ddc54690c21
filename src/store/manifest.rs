//! Manifests of store paths: for every file, directory and symlink under a path, its
//! relative path, blake3, size, executable bit and symlink target. This module hashes a
//! tree (walkdir, files hashed in parallel); the ledger stores manifests
//! (`ledger::manifests`) and `why` diffs them (`why::files`).
//!
//! A store path is not always what it seems: an output may be a symlink out of the store
//! (to `/dev`, to a directory holding a FIFO), and any user's build can make one. So a
//! manifest never follows a symlink, the root included; hashes regular files only
//! (opened with `O_NOFOLLOW | O_NONBLOCK` and checked again once open, so that a file
//! swapped for a FIFO cannot block); lists anything else as `other`; and gives up, saying
//! so, past [`Limits`] of entries, bytes or time rather than keep a command waiting.
//!
//! Output manifests are *normalised*: the derivation's own output hash parts are replaced
//! by a placeholder in file contents and symlink targets before hashing, because an output
//! almost always embeds its own store path and two derivations' outputs could otherwise
//! never compare equal. That is what makes a no-op rebuild detectable.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

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
    /// A FIFO, socket or device: listed, never opened.
    Other,
}

impl EntryType {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Directory => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Other => "other",
        }
    }

    /// The type a stored name stands for.
    pub fn parse(s: &str) -> Option<EntryType> {
        match s {
            "file" => Some(EntryType::File),
            "directory" => Some(EntryType::Directory),
            "symlink" => Some(EntryType::Symlink),
            "other" => Some(EntryType::Other),
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
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestKind::Source => "source",
            ManifestKind::Output => "output",
        }
    }
}

/// How far one manifest may go before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: u64,
    pub max_duration: Duration,
}

impl Limits {
    /// Enough for any source or output worth diffing (a compiler's output is ~10,000
    /// files and ~1.5 GiB, hashed in ~2 s here), small enough that no command waits long.
    pub const DEFAULT: Limits = Limits {
        max_entries: 100_000,
        max_bytes: 2 << 30,
        max_duration: Duration::from_secs(10),
    };
}

/// Why a manifest is incomplete: it gave up rather than wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    #[error("more than {0} bytes of files")]
    TooManyBytes(u64),
    #[error("gave up after {0} ms")]
    TimedOut(u128),
}

/// A hashed tree: its entries, sorted, and whether it is all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub entries: Vec<Entry>,
    /// `Some` when hashing gave up: the entries are then partial, unhashed past the
    /// point where it stopped, and say nothing of equality.
    pub incomplete: Option<Incomplete>,
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
    /// Why the manifest is not whole, if it is not ([`Tree::incomplete`]).
    pub incomplete: Option<String>,
}

impl Manifest {
    /// Total bytes of the files.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Hashes the tree at `root`, within `limits`. `normalise` lists hash parts (32
/// characters each) to replace in contents and symlink targets; empty for sources.
pub fn hash_tree(root: &Path, normalise: &[String], limits: &Limits) -> Result<Tree> {
    let started = Instant::now();
    let read_err = |path: &Path, source: std::io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let mut file_bytes = 0u64;
    let mut incomplete = None;
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .follow_root_links(false);
    for item in walk {
        if entries.len() >= limits.max_entries {
            incomplete = Some(Incomplete::TooManyEntries(limits.max_entries));
            break;
        }
        if started.elapsed() > limits.max_duration {
            incomplete = Some(Incomplete::TimedOut(started.elapsed().as_millis()));
            break;
        }
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
        let mut entry = Entry {
            rel_path,
            kind: EntryType::Other,
            size: 0,
            executable: false,
            blake3: None,
            target: None,
        };
        if file_type.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(|e| read_err(item.path(), e))?;
            entry.kind = EntryType::Symlink;
            entry.target = Some(normalise_str(&target.to_string_lossy(), normalise));
        } else if file_type.is_dir() {
            entry.kind = EntryType::Directory;
        } else if file_type.is_file() {
            let meta = item.metadata().map_err(|e| {
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata"));
                read_err(item.path(), source)
            })?;
            file_bytes += meta.len();
            entry.kind = EntryType::File;
            entry.size = meta.len();
            entry.executable = meta.permissions().mode() & 0o111 != 0;
            files.push((entries.len(), item.path().to_path_buf()));
        }
        entries.push(entry);
    }
    if incomplete.is_none() && file_bytes > limits.max_bytes {
        incomplete = Some(Incomplete::TooManyBytes(limits.max_bytes));
    }
    if incomplete.is_none() {
        let deadline = started + limits.max_duration;
        let hashes: Vec<(usize, Result<Option<[u8; 32]>>)> = files
            .par_iter()
            .map(|(index, path)| {
                // Past the deadline, the rest is not hashed (and the tree is incomplete).
                let hash = if Instant::now() > deadline {
                    Ok(None)
                } else {
                    hash_file(path, normalise)
                };
                (*index, hash)
            })
            .collect();
        for (index, hash) in hashes {
            let hash = hash?;
            if hash.is_none() && incomplete.is_none() {
                incomplete = Some(Incomplete::TimedOut(started.elapsed().as_millis()));
            }
            if let Some(entry) = entries.get_mut(index) {
                match hash {
                    Some(h) => entry.blake3 = Some(h),
                    // Swapped for something that is not a regular file since the walk.
                    None if incomplete.is_none() => entry.kind = EntryType::Other,
                    None => {}
                }
            }
        }
    }
    entries.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(Tree {
        entries,
        incomplete,
    })
}

/// Opens a regular file for reading without following a symlink and without blocking
/// (a FIFO would block on open); `None` when what is there now is not a regular file.
fn open_regular(path: &Path) -> std::io::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        // ELOOP: a symlink now stands there.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(file.metadata()?.is_file().then_some(file))
}

/// The blake3 of a regular file's (normalised) contents; `None` when what is at `path`
/// is no longer a regular file.
fn hash_file(path: &Path, normalise: &[String]) -> Result<Option<[u8; 32]>> {
    let err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let Some(mut file) = open_regular(path).map_err(err)? else {
        return Ok(None);
    };
    let mut hasher = blake3::Hasher::new();
    if normalise.is_empty() {
        let len = file.metadata().map_err(err)?.len();
        if len >= MMAP_RAYON_MIN {
            // Maps the file already open: the checked regular file, not a new lookup.
            let map = crate::sys::map_read_only(&file).map_err(err)?;
            hasher.update_rayon(&map);
        } else {
            hasher.update_reader(&mut file).map_err(err)?;
        }
        return Ok(Some(*hasher.finalize().as_bytes()));
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
    Ok(Some(*hasher.finalize().as_bytes()))
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

/// Hashes the store path `path` into a manifest (not stored), within [`Limits::DEFAULT`].
pub fn compute(path: &str, kind: ManifestKind, normalise: Vec<String>) -> Result<Manifest> {
    let started = Instant::now();
    let tree = hash_tree(Path::new(path), &normalise, &Limits::DEFAULT)?;
    Ok(Manifest {
        store_path: path.to_string(),
        kind,
        normalised: normalise,
        digest: digest(&tree.entries),
        entries: tree.entries,
        hash_ms: started.elapsed().as_millis() as i64,
        incomplete: tree.incomplete.map(|why| why.to_string()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Writes `body` to `dir/rel`, making the directories on the way: a tree to hash.
    pub fn write(dir: &Path, rel: &str, body: &[u8]) {
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
        let entries = hash_tree(dir.path(), &[], &Limits::DEFAULT)
            .unwrap()
            .entries;
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
        let entries = hash_tree(&dir.path().join("f"), &[], &Limits::DEFAULT)
            .unwrap()
            .entries;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].rel_path, "");
        assert_eq!(entries[0].kind, EntryType::File);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = hash_tree(
            Path::new("/nonexistent/nix-ledger-x"),
            &[],
            &Limits::DEFAULT,
        )
        .unwrap_err();
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
        let a = hash_file(&dir.path().join("one"), std::slice::from_ref(&h1))
            .unwrap()
            .unwrap();
        let b = hash_file(&dir.path().join("two"), std::slice::from_ref(&h2))
            .unwrap()
            .unwrap();
        assert_eq!(a, b);
        let raw = hash_file(&dir.path().join("one"), &[]).unwrap().unwrap();
        assert_ne!(a, raw);
        // Normalising with a hash that does not occur changes nothing.
        let other = hash_file(&dir.path().join("one"), std::slice::from_ref(&h2))
            .unwrap()
            .unwrap();
        assert_eq!(other, raw);
    }

    #[test]
    fn a_root_symlink_is_listed_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("out");
        symlink("/dev", &link).unwrap();
        let tree = hash_tree(&link, &[], &Limits::DEFAULT).unwrap();
        assert_eq!(tree.incomplete, None);
        assert_eq!(tree.entries.len(), 1);
        assert_eq!(tree.entries[0].kind, EntryType::Symlink);
        assert_eq!(tree.entries[0].target.as_deref(), Some("/dev"));
    }

    #[test]
    fn fifos_are_listed_as_other_and_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "plain", b"x");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // Opening a FIFO with no writer for reading would block this test forever.
        let tree = hash_tree(dir.path(), &[], &Limits::DEFAULT).unwrap();
        let kinds: Vec<(&str, EntryType)> = tree
            .entries
            .iter()
            .map(|e| (e.rel_path.as_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("", EntryType::Directory),
                ("fifo", EntryType::Other),
                ("plain", EntryType::File)
            ]
        );
        assert_eq!(hash_file(&fifo, &[]).unwrap(), None);
    }

    #[test]
    fn past_its_limits_a_manifest_gives_up_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            write(dir.path(), &format!("f{i}"), b"0123456789");
        }
        let few = Limits {
            max_entries: 5,
            ..Limits::DEFAULT
        };
        let tree = hash_tree(dir.path(), &[], &few).unwrap();
        assert_eq!(tree.incomplete, Some(Incomplete::TooManyEntries(5)));
        assert_eq!(tree.entries.len(), 5);
        let small = Limits {
            max_bytes: 50,
            ..Limits::DEFAULT
        };
        let tree = hash_tree(dir.path(), &[], &small).unwrap();
        assert_eq!(tree.incomplete, Some(Incomplete::TooManyBytes(50)));
        assert!(tree.entries.iter().all(|e| e.blake3.is_none()));
        let no_time = Limits {
            max_duration: Duration::ZERO,
            ..Limits::DEFAULT
        };
        let tree = hash_tree(dir.path(), &[], &no_time).unwrap();
        assert!(matches!(tree.incomplete, Some(Incomplete::TimedOut(_))));
        let whole = hash_tree(dir.path(), &[], &Limits::DEFAULT).unwrap();
        assert_eq!(whole.incomplete, None);
        assert_eq!(whole.entries.len(), 11);
    }
}
