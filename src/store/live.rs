//! Which store paths are live and which dead, exactly as Nix 2.8's garbage collector
//! decides (`LocalStore::collectGarbage`, checked against `--print-live`/`--print-dead`):
//!
//! - live: the closure of the roots (valid root paths, runtime roots, temporary roots)
//!   over references, plus with `keep-outputs` a .drv's valid outputs and with
//!   `keep-derivations` a path's valid deriver; and every entry of the store directory
//!   whose hash part is a temporary root's (`<hash>-x.lock`, a build's partial output);
//! - dead: every other entry of the store directory: valid paths, invalid leftovers, and
//!   names that are no store path at all (Nix deletes those on every GC, even when only
//!   asked to print). A valid path without a directory is never dead.
//!
//! Nix walks the store directory and each entry's referrers; for a database in which
//! every valid deriver lists its outputs (any store Nix wrote), that is the same as the
//! closure from the roots, which is what this computes, on indices.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use super::graph::{StoreGraph, NONE};
use crate::nix::store_path::{StorePath, HASH_PART_LEN};
use crate::{Error, Result};

/// The `keep-outputs` and `keep-derivations` settings: the GC's extra edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepEdges {
    pub outputs: bool,
    pub derivations: bool,
}

impl StoreGraph {
    /// Calls `f` on every path `i` keeps alive directly: its references, with
    /// keep-outputs a .drv's valid outputs, with keep-derivations its valid deriver.
    #[inline]
    pub fn for_each_successor(&self, i: u32, keep: KeepEdges, mut f: impl FnMut(u32)) {
        for &r in self.refs.of(i) {
            f(r);
        }
        if keep.outputs {
            for &o in self.outputs.of(i) {
                f(o);
            }
        }
        if keep.derivations {
            let d = self.deriver[i as usize];
            if d != NONE {
                f(d);
            }
        }
    }
}

/// Reusable marks for repeated walks: a node is marked when its stamp is the walk's.
pub struct Walker {
    stamp: Vec<u32>,
    epoch: u32,
    stack: Vec<u32>,
}

impl Walker {
    pub fn new(nodes: usize) -> Walker {
        Walker {
            stamp: vec![0; nodes],
            epoch: 0,
            stack: Vec::new(),
        }
    }

    /// Walks the closure of `starts` over `edges`, calling `visit` once per path
    /// (starts included). `skip` paths are neither visited nor walked through.
    pub fn walk(
        &mut self,
        starts: impl IntoIterator<Item = u32>,
        mut edges: impl FnMut(u32, &mut dyn FnMut(u32)),
        mut skip: impl FnMut(u32) -> bool,
        mut visit: impl FnMut(u32),
    ) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.fill(0);
            self.epoch = 1;
        }
        let epoch = self.epoch;
        let (stamp, stack) = (&mut self.stamp, &mut self.stack);
        stack.clear();
        for s in starts {
            if let Some(m) = stamp.get_mut(s as usize) {
                if *m != epoch && !skip(s) {
                    *m = epoch;
                    stack.push(s);
                }
            }
        }
        while let Some(i) = stack.pop() {
            visit(i);
            edges(i, &mut |n| {
                if let Some(m) = stamp.get_mut(n as usize) {
                    if *m != epoch && !skip(n) {
                        *m = epoch;
                        stack.push(n);
                    }
                }
            });
        }
    }
}

/// The store directory's entries, sorted out against the database.
#[derive(Debug, Default)]
pub struct StoreDir {
    /// Per valid path: whether its directory entry exists.
    pub present: Vec<bool>,
    /// Entries named like store paths that are not valid (leftovers, `.lock` files…).
    pub invalid: Vec<String>,
    /// Entries that are no store path name at all.
    pub junk: Vec<String>,
}

/// The names in the real store directory `dir` (where the files are). Separate from
/// [`StoreDir::classify`] so that listing can run while the database is read.
pub fn list_store_dir(dir: &Path) -> Result<Vec<OsString>> {
    let err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        names.push(entry.map_err(err)?.file_name());
    }
    Ok(names)
}

impl StoreDir {
    /// Sorts the store directory's `names` out against `graph`.
    pub fn classify(names: Vec<OsString>, graph: &StoreGraph) -> StoreDir {
        let mut found = StoreDir {
            present: vec![false; graph.len()],
            ..StoreDir::default()
        };
        for name in names {
            let Some(name) = name.to_str() else {
                found.junk.push(name.to_string_lossy().into_owned());
                continue;
            };
            // Nix's hard-link pool, never a store path.
            if name == ".links" {
                continue;
            }
            if StorePath::from_base_name(graph.store_dir(), name).is_none() {
                found.junk.push(name.to_string());
                continue;
            }
            match graph.index_of_base(name) {
                Some(i) => found.present[i as usize] = true,
                None => found.invalid.push(name.to_string()),
            }
        }
        found
    }
}

/// Lists and classifies the real store directory `dir`.
pub fn read_store_dir(dir: &Path, graph: &StoreGraph) -> Result<StoreDir> {
    Ok(StoreDir::classify(list_store_dir(dir)?, graph))
}

/// The live and dead paths.
#[derive(Debug)]
pub struct Liveness {
    /// Per valid path.
    pub live: Vec<bool>,
    /// Invalid entries a temporary root keeps (by hash part): live, not deletable.
    pub live_invalid: Vec<String>,
    /// Invalid entries nothing keeps: dead.
    pub dead_invalid: Vec<String>,
    /// Non-store-path names in the store directory: dead (Nix deletes them).
    pub junk: Vec<String>,
}

impl Liveness {
    /// Computes liveness from the valid `roots` (indices), the hash parts of the
    /// temporary roots (`temp_hashes`, valid or not), and the GC's `keep` edges.
    pub fn compute(
        graph: &StoreGraph,
        dir: &StoreDir,
        roots: &[u32],
        temp_hashes: &HashSet<String>,
        keep: KeepEdges,
        walker: &mut Walker,
    ) -> Liveness {
        let mut live = vec![false; graph.len()];
        walker.walk(
            roots.iter().copied(),
            |i, push| graph.for_each_successor(i, keep, push),
            |_| false,
            |i| live[i as usize] = true,
        );
        let (mut live_invalid, mut dead_invalid) = (Vec::new(), Vec::new());
        for name in &dir.invalid {
            let hash = name.get(..HASH_PART_LEN).unwrap_or("");
            if temp_hashes.contains(hash) {
                live_invalid.push(name.clone());
            } else {
                dead_invalid.push(name.clone());
            }
        }
        Liveness {
            live,
            live_invalid,
            dead_invalid,
            junk: dir.junk.clone(),
        }
    }

    /// Whether valid path `i` is dead: present in the store directory and not live.
    pub fn is_dead(&self, dir: &StoreDir, i: u32) -> bool {
        dir.present.get(i as usize).copied().unwrap_or(false) && !self.live[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::StoreDb;
    use crate::store::graph::tests::{fake_db, h};

    /// lib ← app (built by app.drv, which refers to lib.drv and src); a root on app.
    fn fixture(dir: &Path) -> (StoreGraph, Vec<String>) {
        let names: Vec<String> = vec![
            format!("{}-lib", h('a')),
            format!("{}-lib.drv", h('b')),
            format!("{}-app", h('c')),
            format!("{}-app.drv", h('d')),
            format!("{}-src", h('f')),
            format!("{}-other", h('g')),
        ];
        let db = fake_db(
            dir,
            &[
                (1, &names[0], &names[1], 10, true, false),
                (2, &names[1], "", 1, false, true),
                (3, &names[2], &names[3], 20, true, false),
                (4, &names[3], "", 1, false, true),
                (5, &names[4], "", 5, false, true),
                (6, &names[5], "", 7, false, false),
            ],
            &[(3, 1), (4, 2), (4, 5)],
            &[(2, &names[0]), (4, &names[2])],
        );
        (
            StoreGraph::load(&StoreDb::open(&db).unwrap(), "/s").unwrap(),
            names,
        )
    }

    #[test]
    fn keep_settings_add_their_edges_as_nix_does() {
        let dir = tempfile::tempdir().unwrap();
        let (g, names) = fixture(dir.path());
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        for n in &names {
            std::fs::create_dir(store.join(n)).unwrap();
        }
        std::fs::create_dir(store.join(format!("{}-partial", h('z')))).unwrap();
        std::fs::create_dir(store.join(format!("{}-building.lock", h('y')))).unwrap();
        std::fs::write(store.join("junk"), "").unwrap();
        std::fs::create_dir(store.join(".links")).unwrap();
        let sd = read_store_dir(&store, &g).unwrap();
        assert_eq!(sd.junk, ["junk"]);
        assert_eq!(sd.invalid.len(), 2);
        let app = g.index_of_base(&names[2]).unwrap();
        let temp: HashSet<String> = [h('y')].into_iter().collect();
        let mut walker = Walker::new(g.len());
        let mut live_names = |keep| {
            let l = Liveness::compute(&g, &sd, &[app], &temp, keep, &mut walker);
            assert_eq!(l.live_invalid, [format!("{}-building.lock", h('y'))]);
            assert_eq!(l.dead_invalid, [format!("{}-partial", h('z'))]);
            let mut live: Vec<&str> = (0..g.len() as u32)
                .filter(|&i| l.live[i as usize])
                .map(|i| g.base_name(i))
                .collect();
            live.sort();
            live.iter()
                .map(|n| n.split('-').nth(1).unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        let kd = KeepEdges {
            outputs: false,
            derivations: true,
        };
        assert_eq!(live_names(kd), ["lib", "lib.drv", "app", "app.drv", "src"]);
        let none = KeepEdges {
            outputs: false,
            derivations: false,
        };
        assert_eq!(live_names(none), ["lib", "app"]);
    }
}
