//! What changed between two manifests of a source, file by file: the part of a root
//! cause that names the files.

use serde::Serialize;

use crate::store::manifest::{Entry, EntryType};

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
    use crate::store::manifest::tests::write;
    use crate::store::manifest::{digest, hash_tree, Limits};

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
        let old = hash_tree(old_dir.path(), &[], &Limits::DEFAULT)
            .unwrap()
            .entries;
        let new = hash_tree(new_dir.path(), &[], &Limits::DEFAULT)
            .unwrap()
            .entries;
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
        let new = hash_tree(new_dir.path(), &[], &Limits::DEFAULT)
            .unwrap()
            .entries;
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
}
