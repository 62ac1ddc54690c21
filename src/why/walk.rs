//! Walking two derivation graphs together and finding the root causes of a rebuild.
//!
//! Starting from the new and the old top derivation, inputs are paired by name (then by
//! the outputs used, then by order) and every pair whose paths differ is compared
//! ([`super::compare`]). A derivation whose *own* attributes changed is a root cause; one
//! whose only changes are inputs that changed rebuilds only because of them.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::compare::{compare, ManifestSource, OwnChanges};
use crate::nix::graph::Loader;
use crate::nix::store_path::path_name;
use crate::Result;

/// One compared pair of derivations.
#[derive(Debug, Clone)]
pub struct Node {
    pub new: String,
    pub old: String,
    pub name: String,
    pub own: OwnChanges,
    /// Pairs of inputs whose paths differ.
    pub children: Vec<usize>,
}

/// A root cause and how many derivations rebuild because of it.
#[derive(Debug, Clone)]
pub struct Root {
    pub node: usize,
    /// Derivations whose only changes are inputs depending on this root cause alone.
    pub downstream_only: Vec<usize>,
    /// Derivations with changed inputs depending on this root cause, possibly among others.
    pub downstream_any: usize,
}

/// The result of walking two graphs.
#[derive(Debug, Clone)]
pub struct GraphDiff {
    pub nodes: Vec<Node>,
    pub roots: Vec<Root>,
}

/// Walks the graphs under `new` and `old` together.
pub fn diff_graphs(
    loader: &mut Loader<'_>,
    manifests: &dyn ManifestSource,
    new: &str,
    old: &str,
) -> Result<GraphDiff> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut ids: HashMap<(String, String), usize> = HashMap::new();
    let mut queue: Vec<usize> = Vec::new();
    if new != old {
        ids.insert((new.to_string(), old.to_string()), 0);
        nodes.push(Node {
            new: new.to_string(),
            old: old.to_string(),
            name: path_name(new).to_string(),
            own: OwnChanges::default(),
            children: Vec::new(),
        });
        queue.push(0);
    }
    while let Some(id) = queue.pop() {
        let (new_path, old_path) = match nodes.get(id) {
            Some(n) => (n.new.clone(), n.old.clone()),
            None => continue,
        };
        let new_drv = loader.get(&new_path)?;
        let old_drv = loader.get(&old_path)?;
        let (own, pairs) = match (new_drv, old_drv) {
            (Some(n), Some(o)) => compare(manifests, &n, &o)?,
            (n, _) => {
                let missing = if n.is_none() { &new_path } else { &old_path };
                let own = OwnChanges {
                    unavailable: Some(format!("{missing} is in neither the store nor the ledger")),
                    ..OwnChanges::default()
                };
                (own, Vec::new())
            }
        };
        let mut children = Vec::with_capacity(pairs.len());
        for key in pairs {
            let child = match ids.get(&key) {
                Some(&child) => child,
                None => {
                    let child = nodes.len();
                    nodes.push(Node {
                        name: path_name(&key.0).to_string(),
                        new: key.0.clone(),
                        old: key.1.clone(),
                        own: OwnChanges::default(),
                        children: Vec::new(),
                    });
                    ids.insert(key, child);
                    queue.push(child);
                    child
                }
            };
            children.push(child);
        }
        if let Some(node) = nodes.get_mut(id) {
            node.own = own;
            node.children = children;
        }
    }
    let roots = attribute(&nodes);
    Ok(GraphDiff { nodes, roots })
}

/// Which root causes each changed derivation rebuilds because of, counted per root.
fn attribute(nodes: &[Node]) -> Vec<Root> {
    let is_root: Vec<bool> = nodes.iter().map(|n| !n.own.is_empty()).collect();
    // causes[n]: the root causes among n's changed inputs, transitively (sorted ids).
    let mut causes: Vec<Option<Vec<usize>>> = vec![None; nodes.len()];
    // Iterative post-order: graphs can be deep (bootstrap chains), recursion could overflow.
    for start in 0..nodes.len() {
        let mut stack = vec![(start, false)];
        while let Some((n, expanded)) = stack.pop() {
            if causes.get(n).is_some_and(Option::is_some) {
                continue;
            }
            let children = nodes
                .get(n)
                .map(|x| x.children.as_slice())
                .unwrap_or_default();
            if !expanded {
                stack.push((n, true));
                stack.extend(
                    children
                        .iter()
                        .filter(|&&c| causes.get(c).is_some_and(Option::is_none))
                        .map(|&c| (c, false)),
                );
                continue;
            }
            let mut set: Vec<usize> = Vec::new();
            for &c in children {
                if is_root.get(c).copied().unwrap_or(false) {
                    set.push(c);
                }
                if let Some(Some(child_causes)) = causes.get(c) {
                    set.extend(child_causes);
                }
            }
            set.sort_unstable();
            set.dedup();
            if let Some(slot) = causes.get_mut(n) {
                *slot = Some(set);
            }
        }
    }
    let mut roots: BTreeMap<usize, Root> = is_root
        .iter()
        .enumerate()
        .filter(|(_, &r)| r)
        .map(|(n, _)| {
            (
                n,
                Root {
                    node: n,
                    downstream_only: Vec::new(),
                    downstream_any: 0,
                },
            )
        })
        .collect();
    for (n, set) in causes.iter().enumerate() {
        if is_root.get(n).copied().unwrap_or(false) {
            continue;
        }
        let set = set.as_deref().unwrap_or_default();
        for r in set {
            if let Some(root) = roots.get_mut(r) {
                root.downstream_any += 1;
                if set.len() == 1 {
                    root.downstream_only.push(n);
                }
            }
        }
    }
    roots.into_values().collect()
}

/// The new-graph derivations that differ from the old graph (every node's new path).
pub fn changed_derivations(diff: &GraphDiff) -> usize {
    diff.nodes
        .iter()
        .map(|n| n.new.as_str())
        .collect::<HashSet<_>>()
        .len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nix::graph::tests::{add, hash_of, MemStore};
    use crate::store::manifest::Manifest;
    use crate::why::compare::EnvChange;

    /// Sources whose manifests are never known.
    pub struct NoManifests;

    impl ManifestSource for NoManifests {
        fn manifest(&self, _: &str) -> Result<Option<Manifest>> {
            Ok(None)
        }
    }

    /// A chain a ← b ← c ← d ← top (top depends on d ...), plus side branches.
    fn chain(store: &mut MemStore, leaf_value: &str) -> Vec<String> {
        let a = add(store, "a", &[("v", leaf_value)], &[]);
        let side = add(store, "side", &[], &[]);
        let b = add(store, "b", &[], &[&a]);
        let c = add(store, "c", &[], &[&b, &side]);
        let d = add(store, "d", &[], &[&c]);
        let other = add(store, "other", &[], &[&side]);
        let top = add(store, "top", &[], &[&d, &other]);
        vec![a, b, c, d, top]
    }

    #[test]
    fn a_leaf_env_change_is_the_one_root_cause_and_its_dependents_are_counted() {
        let mut store = MemStore::default();
        let old = chain(&mut store, "1");
        let new = chain(&mut store, "2");
        let mut loader = Loader::new(&store);
        let diff = diff_graphs(&mut loader, &NoManifests, &new[4], &old[4]).unwrap();
        assert_eq!(diff.roots.len(), 1);
        let root = &diff.roots[0];
        let node = &diff.nodes[root.node];
        assert_eq!(node.name, "a");
        assert_eq!(
            node.own.env,
            [EnvChange {
                name: "v".into(),
                old: Some("1".into()),
                new: Some("2".into())
            }]
        );
        // b, c, d, top: side and other are unchanged.
        assert_eq!(root.downstream_only.len(), 4);
        assert_eq!(changed_derivations(&diff), 5);
    }

    #[test]
    fn two_independent_roots_share_their_common_dependents() {
        let mut store = MemStore::default();
        let mk = |store: &mut MemStore, x: &str, y: &str| {
            let a = add(store, "a", &[("v", x)], &[]);
            let b = add(store, "b", &[("v", y)], &[]);
            let only_a = add(store, "only-a", &[], &[&a]);
            add(store, "top", &[], &[&only_a, &b])
        };
        let old = mk(&mut store, "1", "1");
        let new = mk(&mut store, "2", "2");
        let mut loader = Loader::new(&store);
        let diff = diff_graphs(&mut loader, &NoManifests, &new, &old).unwrap();
        let by_name: HashMap<&str, &Root> = diff
            .roots
            .iter()
            .map(|r| (diff.nodes[r.node].name.as_str(), r))
            .collect();
        assert_eq!(by_name.len(), 2);
        assert_eq!(by_name["a"].downstream_only.len(), 1, "only-a");
        assert_eq!(by_name["a"].downstream_any, 2, "only-a and top");
        assert_eq!(by_name["b"].downstream_only.len(), 0);
        assert_eq!(by_name["b"].downstream_any, 1);
    }

    #[test]
    fn added_inputs_and_missing_derivations_are_own_changes() {
        let mut store = MemStore::default();
        let x = add(&mut store, "x", &[], &[]);
        let old = add(&mut store, "top", &[], &[]);
        let new = add(&mut store, "top", &[], &[&x]);
        let mut loader = Loader::new(&store);
        let diff = diff_graphs(&mut loader, &NoManifests, &new, &old).unwrap();
        assert_eq!(diff.roots.len(), 1);
        assert_eq!(diff.nodes[0].own.added_inputs, std::slice::from_ref(&x));
        // The env var pointing at x is new too.
        assert!(diff.nodes[0].own.env.iter().any(|e| e.name == "dep_x"));

        let gone = format!("/nix/store/{}-top.drv", hash_of("gone"));
        let diff = diff_graphs(&mut loader, &NoManifests, &new, &gone).unwrap();
        assert!(diff.nodes[0]
            .own
            .unavailable
            .as_deref()
            .unwrap()
            .contains(&gone));
    }
}
