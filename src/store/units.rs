//! Dead paths grouped into what can be deleted together: a *unit* is a dead .drv with its
//! dead outputs (a whole build; two .drvs sharing a fixed output join one unit), or any
//! other dead path alone (a source, an output whose .drv is gone, an invalid leftover).
//!
//! Nix 2.8 refuses to delete a path while anything that keeps it alive backwards stays:
//! its referrers, and with keep-derivations/keep-outputs a .drv and its outputs (which is
//! why a unit holds both). So units have edges too: [`Units::referrers`] are the dead units
//! that must go with (or before) a unit, [`Units::references`] those a unit keeps when it
//! stays. A set of units closed under `referrers` can be deleted in one command.

use super::graph::{Csr, StoreGraph, NONE};
use super::live::{KeepEdges, Liveness, StoreDir};

/// One unit.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// Valid paths (indices into the graph).
    pub paths: Vec<u32>,
    /// An invalid leftover's base name (such a unit has no valid paths).
    pub invalid: Option<String>,
    /// Summed narSize of the valid paths.
    pub bytes: u64,
}

/// The dead paths as units, and the edges between units.
#[derive(Debug, Default)]
pub struct Units {
    pub units: Vec<Unit>,
    /// Per valid path: its unit, or [`NONE`] when it is not dead.
    pub unit_of: Vec<u32>,
    /// Dead units that refer to (or otherwise keep backwards) each unit.
    pub referrers: Csr,
    /// Dead units each unit keeps alive while it stays (with the keep settings' edges).
    pub references: Csr,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let up = parent[parent[x as usize] as usize];
        parent[x as usize] = up;
        x = up;
    }
    x
}

impl Units {
    /// Groups the dead paths of `live` (and its dead invalid leftovers).
    pub fn group(graph: &StoreGraph, dir: &StoreDir, live: &Liveness, keep: KeepEdges) -> Units {
        let n = graph.len();
        let dead: Vec<bool> = (0..n as u32).map(|i| live.is_dead(dir, i)).collect();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        for i in 0..n as u32 {
            if !dead[i as usize] {
                continue;
            }
            // A .drv with its outputs, and an output with its deriver.
            for &o in graph.outputs.of(i) {
                if dead[o as usize] {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, o));
                    parent[a as usize] = b;
                }
            }
            let d = graph.deriver[i as usize];
            if d != NONE && dead[d as usize] {
                let (a, b) = (find(&mut parent, i), find(&mut parent, d));
                parent[a as usize] = b;
            }
        }
        let mut units: Vec<Unit> = Vec::new();
        let mut unit_of = vec![NONE; n];
        let mut root_unit = vec![NONE; n];
        for i in 0..n as u32 {
            if !dead[i as usize] {
                continue;
            }
            let r = find(&mut parent, i) as usize;
            if root_unit[r] == NONE {
                root_unit[r] = units.len() as u32;
                units.push(Unit::default());
            }
            let u = root_unit[r];
            unit_of[i as usize] = u;
            let unit = &mut units[u as usize];
            unit.paths.push(i);
            unit.bytes += graph.nar_size[i as usize];
        }
        for name in &live.dead_invalid {
            units.push(Unit {
                invalid: Some(name.clone()),
                ..Unit::default()
            });
        }
        let mut back = Vec::new();
        let mut forward = Vec::new();
        for i in 0..n as u32 {
            let u = unit_of[i as usize];
            if u == NONE {
                continue;
            }
            graph.for_each_successor(i, keep, |s| {
                let v = unit_of[s as usize];
                if v != NONE && v != u {
                    forward.push((u, v));
                    back.push((v, u));
                }
            });
        }
        for list in [&mut back, &mut forward] {
            list.sort_unstable();
            list.dedup();
        }
        Units {
            referrers: Csr::from_pairs(units.len(), &back),
            references: Csr::from_pairs(units.len(), &forward),
            units,
            unit_of,
        }
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The full paths of unit `u` (valid paths first, sorted).
    pub fn paths(&self, graph: &StoreGraph, u: u32) -> Vec<String> {
        let unit = &self.units[u as usize];
        let mut paths: Vec<String> = unit.paths.iter().map(|&i| graph.path(i)).collect();
        paths.sort();
        if let Some(name) = &unit.invalid {
            paths.push(format!("{}/{name}", graph.store_dir()));
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::StoreDb;
    use crate::store::graph::tests::{fake_db, h};
    use crate::store::live::{read_store_dir, Walker};
    use std::collections::HashSet;

    #[test]
    fn a_build_is_one_unit_and_referrers_link_units() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            format!("{}-lib", h('a')),
            format!("{}-lib-dev", h('b')),
            format!("{}-lib.drv", h('c')),
            format!("{}-app", h('d')),
            format!("{}-src", h('f')),
        ];
        let db = fake_db(
            dir.path(),
            &[
                (1, &names[0], &names[2], 10, true, false),
                (2, &names[1], &names[2], 5, true, false),
                (3, &names[2], "", 1, false, true),
                (4, &names[3], "", 20, false, false),
                (5, &names[4], "", 2, false, true),
            ],
            &[(4, 1), (3, 5)],
            &[(3, &names[0]), (3, &names[1])],
        );
        let g = StoreGraph::load(&StoreDb::open(&db).unwrap(), "/s").unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        for n in &names {
            std::fs::create_dir(store.join(n)).unwrap();
        }
        let sd = read_store_dir(&store, &g).unwrap();
        let keep = KeepEdges {
            outputs: false,
            derivations: true,
        };
        let live = Liveness::compute(
            &g,
            &sd,
            &[],
            &HashSet::new(),
            keep,
            &mut Walker::new(g.len()),
        );
        let units = Units::group(&g, &sd, &live, keep);
        assert_eq!(units.len(), 3);
        let lib = units.unit_of[g.index_of_base(&names[0]).unwrap() as usize];
        let app = units.unit_of[g.index_of_base(&names[3]).unwrap() as usize];
        let src = units.unit_of[g.index_of_base(&names[4]).unwrap() as usize];
        assert_eq!(units.units[lib as usize].paths.len(), 3);
        assert_eq!(units.units[lib as usize].bytes, 16);
        assert_eq!(units.referrers.of(lib), [app]);
        assert_eq!(units.referrers.of(src), [lib]);
        assert_eq!(units.references.of(app), [lib]);
        assert_eq!(units.paths(&g, app), [format!("/s/{}", names[3])]);
    }
}
