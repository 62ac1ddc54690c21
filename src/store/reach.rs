//! What roots keep: each root's closure size (what `nix path-info -S` calls closureSize:
//! references only), and what each root *alone* keeps alive, which is what removing just
//! that root would free.
//!
//! "Alone" is dominance: a path is kept by root `r` alone when every way from any root
//! to it passes through `r`. One dominator tree over a virtual super-root (whose children
//! are the roots) answers it for every root at once; it is computed with the iterative
//! algorithm of Cooper, Harvey and Kennedy ("A Simple, Fast Dominance Algorithm", 2001),
//! a few passes over the live paths.

use super::graph::{StoreGraph, NONE};
use super::live::{KeepEdges, Walker};

/// What removing one root path would free: paths and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alone {
    pub paths: u64,
    pub bytes: u64,
}

/// For each of `roots` (valid indices; repeats allowed), what it alone keeps alive over
/// the GC's edges (`keep`). A root reachable from another root keeps nothing alone.
pub fn alone(graph: &StoreGraph, roots: &[u32], keep: KeepEdges) -> Vec<Alone> {
    let n = graph.len();
    let sup = n as u32;
    let mut distinct: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|&r| (r as usize) < n)
        .collect();
    distinct.sort_unstable();
    distinct.dedup();

    // Depth-first from the super-root: postorder numbers, and the nodes in postorder.
    let mut post = vec![NONE; n + 1];
    let mut order: Vec<u32> = Vec::with_capacity(n + 1);
    let mut visited = vec![false; n + 1];
    let mut preds: Vec<(u32, u32)> = Vec::new();
    // (node, its successors, next successor to look at)
    let mut stack: Vec<(u32, Vec<u32>, usize)> = Vec::new();
    visited[n] = true;
    stack.push((sup, distinct.clone(), 0));
    while let Some(top) = stack.last_mut() {
        let node = top.0;
        if top.2 < top.1.len() {
            let next = top.1[top.2];
            top.2 += 1;
            preds.push((next, node));
            if !visited[next as usize] {
                visited[next as usize] = true;
                let mut succ = Vec::new();
                graph.for_each_successor(next, keep, |s| succ.push(s));
                stack.push((next, succ, 0));
            }
        } else {
            post[node as usize] = order.len() as u32;
            order.push(node);
            stack.pop();
        }
    }
    let preds = super::graph::Csr::from_pairs(n + 1, &preds);

    let mut idom = vec![NONE; n + 1];
    idom[n] = sup;
    let intersect = |idom: &[u32], mut a: u32, mut b: u32| {
        while a != b {
            while post[a as usize] < post[b as usize] {
                a = idom[a as usize];
            }
            while post[b as usize] < post[a as usize] {
                b = idom[b as usize];
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        // Reverse postorder, the super-root (last in postorder) excluded.
        for &node in order.iter().rev().skip(1) {
            let mut new = NONE;
            for &p in preds.of(node) {
                if idom[p as usize] == NONE {
                    continue;
                }
                new = if new == NONE {
                    p
                } else {
                    intersect(&idom, p, new)
                };
            }
            if new != NONE && idom[node as usize] != new {
                idom[node as usize] = new;
                changed = true;
            }
        }
    }

    // Subtree sums, children before parents (postorder).
    let mut sums = vec![Alone::default(); n + 1];
    for &node in &order {
        if node == sup {
            continue;
        }
        let own = &mut sums[node as usize];
        own.paths += 1;
        own.bytes += graph.nar_size[node as usize];
        let own = *own;
        let parent = idom[node as usize];
        if parent != NONE && parent != node {
            let up = &mut sums[parent as usize];
            up.paths += own.paths;
            up.bytes += own.bytes;
        }
    }
    roots
        .iter()
        .map(|&r| {
            // Kept through anything but its own link (another root's closure), a root
            // frees nothing when that link goes.
            if (r as usize) < n && preds.of(r).iter().all(|&p| p == sup) {
                sums[r as usize]
            } else {
                Alone::default()
            }
        })
        .collect()
}

/// The closure of `start` over references only (no keep edges): its path count and
/// summed narSize, as `nix path-info -S` reports closureSize.
pub fn closure_size(graph: &StoreGraph, start: u32, walker: &mut Walker) -> Alone {
    let mut size = Alone::default();
    walker.walk(
        [start],
        |i, push| {
            for &r in graph.refs.of(i) {
                push(r)
            }
        },
        |_| false,
        |i| {
            size.paths += 1;
            size.bytes += graph.nar_size[i as usize];
        },
    );
    size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::StoreDb;
    use crate::store::graph::tests::{fake_db, h};

    #[test]
    fn a_shared_dependency_belongs_to_no_root_alone() {
        // r1 → a → c, r2 → b → c, r2 → d; r3 → r1 (so r1 is not kept by r1 alone).
        let dir = tempfile::tempdir().unwrap();
        let name = |c: char, n: &str| format!("{}-{n}", h(c));
        let names = [
            name('a', "r1"),
            name('b', "r2"),
            name('c', "a"),
            name('d', "b"),
            name('f', "c"),
            name('g', "d"),
            name('i', "r3"),
        ];
        let db = fake_db(
            dir.path(),
            &[
                (1, &names[0], "", 1, false, false),
                (2, &names[1], "", 2, false, false),
                (3, &names[2], "", 4, false, false),
                (4, &names[3], "", 8, false, false),
                (5, &names[4], "", 16, false, false),
                (6, &names[5], "", 32, false, false),
                (7, &names[6], "", 64, false, false),
            ],
            &[(1, 3), (3, 5), (2, 4), (4, 5), (2, 6), (7, 1)],
            &[],
        );
        let g = StoreGraph::load(&StoreDb::open(&db).unwrap(), "/s").unwrap();
        let idx = |i: usize| g.index_of_base(&names[i]).unwrap();
        let keep = KeepEdges {
            outputs: false,
            derivations: false,
        };
        let got = alone(&g, &[idx(0), idx(1), idx(6), idx(1)], keep);
        assert_eq!(got[0], Alone::default(), "r1 is also kept through r3");
        assert_eq!(
            got[1],
            Alone {
                paths: 3,
                bytes: 2 + 8 + 32
            }
        );
        // r1 and what it keeps stay: r1 is a root of its own.
        assert_eq!(
            got[2],
            Alone {
                paths: 1,
                bytes: 64
            }
        );
        assert_eq!(got[3], got[1]);
        let mut walker = Walker::new(g.len());
        assert_eq!(
            closure_size(&g, idx(1), &mut walker),
            Alone {
                paths: 4,
                bytes: 2 + 8 + 16 + 32
            }
        );
    }
}
