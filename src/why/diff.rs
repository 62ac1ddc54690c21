//! Walking two derivation graphs together and finding the root causes of a rebuild.
//!
//! Starting from the new and the old top derivation, inputs are paired by name (then by
//! the outputs used, then by order) and every pair whose paths differ is compared. A
//! derivation whose *own* attributes changed (environment, builder, arguments, system,
//! outputs, input sources, added or removed inputs) is a root cause; one whose only
//! changes are inputs that changed rebuilds only because of them. Strings are compared
//! with every store path's hash part blanked, because those change whenever any input
//! changes and say nothing of their own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use serde::Serialize;

use super::manifest::{self, FileChange, Manifest};
use super::snapshot::DrvSource;
use crate::nix::drv::{self, Derivation};
use crate::nix::nixbase32;
use crate::nix::store_path::{StorePath, DEFAULT_STORE_DIR, HASH_PART_LEN};
use crate::{Error, Result};

/// Where manifests of sources come from: the ledger, or the store while the path exists.
pub trait ManifestSource {
    fn manifest(&self, store_path: &str) -> Result<Option<Manifest>>;
}

/// One environment variable that changed (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change<T> {
    pub old: T,
    pub new: T,
}

/// An input source that changed, file by file when both manifests are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceChange {
    pub name: String,
    pub old_path: String,
    pub new_path: String,
    /// `None` when a side's manifest is known neither to the ledger nor to the store.
    pub files: Option<Vec<FileChange>>,
    /// Why `files` is missing.
    pub note: Option<String>,
}

/// What changed in a derivation itself, not through its inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OwnChanges {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<Change<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Change<Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Change<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Change<Vec<String>>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added_sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added_inputs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_inputs: Vec<String>,
    /// Paired inputs whose used outputs changed: `name: old → new`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_outputs: Vec<String>,
    /// A side's .drv could be read from neither the store nor the ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl OwnChanges {
    pub fn is_empty(&self) -> bool {
        *self == OwnChanges::default()
    }
}

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

/// Parses and caches derivations from a source; shared by every diff of one command so
/// that a .drv is read once however many rebuilds mention it.
pub struct Loader<'s> {
    source: &'s dyn DrvSource,
    cache: HashMap<String, Option<Rc<Derivation>>>,
}

impl<'s> Loader<'s> {
    pub fn new(source: &'s dyn DrvSource) -> Loader<'s> {
        Loader {
            source,
            cache: HashMap::new(),
        }
    }

    /// The derivation at `path`, `None` if no source has it. A damaged .drv is an error
    /// naming it.
    pub fn get(&mut self, path: &str) -> Result<Option<Rc<Derivation>>> {
        if let Some(hit) = self.cache.get(path) {
            return Ok(hit.clone());
        }
        let parsed = match self.source.read(path)? {
            Some(bytes) => Some(Rc::new(drv::parse(&bytes).map_err(|reason| {
                Error::Drv {
                    path: path.into(),
                    reason,
                }
            })?)),
            None => None,
        };
        self.cache.insert(path.to_string(), parsed.clone());
        Ok(parsed)
    }
}

/// The name of a store path without its hash (and without `.drv`).
pub fn path_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = match base.get(HASH_PART_LEN..).and_then(|r| r.strip_prefix('-')) {
        Some(name) if base.len() > HASH_PART_LEN => name,
        _ => base,
    };
    name.strip_suffix(".drv").unwrap_or(name)
}

/// `s` with the hash part of every store path blanked.
pub fn normalise(s: &str) -> std::borrow::Cow<'_, str> {
    let prefix = "/nix/store/";
    debug_assert!(prefix.starts_with(DEFAULT_STORE_DIR));
    if !s.contains(prefix) {
        return std::borrow::Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    for at in memchr::memmem::find_iter(bytes, prefix.as_bytes()) {
        if at < from {
            continue;
        }
        let hash_start = at + prefix.len();
        let hash = bytes.get(hash_start..hash_start + HASH_PART_LEN);
        if hash.is_some_and(|h| h.iter().all(|&c| nixbase32::is_digit(c))) {
            out.push_str(s.get(from..hash_start).unwrap_or_default());
            out.push_str("<hash>");
            from = hash_start + HASH_PART_LEN;
        }
    }
    out.push_str(s.get(from..).unwrap_or_default());
    std::borrow::Cow::Owned(out)
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

type Pair = (String, String);
/// The inputs of one name: (old side, new side), each (path, tag).
type OldAndNew<T> = (Vec<(String, T)>, Vec<(String, T)>);

/// Compares one pair; returns its own changes and the pairs of inputs that differ.
fn compare(
    manifests: &dyn ManifestSource,
    new: &Derivation,
    old: &Derivation,
) -> Result<(OwnChanges, Vec<Pair>)> {
    let mut own = OwnChanges {
        env: env_changes(&old.env, &new.env),
        ..OwnChanges::default()
    };
    if normalise(&old.builder) != normalise(&new.builder) {
        own.builder = Some(Change {
            old: old.builder.clone(),
            new: new.builder.clone(),
        });
    }
    let args_equal = old.args.len() == new.args.len()
        && old
            .args
            .iter()
            .zip(&new.args)
            .all(|(a, b)| normalise(a) == normalise(b));
    if !args_equal {
        own.args = Some(Change {
            old: old.args.clone(),
            new: new.args.clone(),
        });
    }
    if old.system != new.system {
        own.system = Some(Change {
            old: old.system.clone(),
            new: new.system.clone(),
        });
    }
    let describe = |d: &Derivation| -> Vec<String> {
        d.outputs
            .iter()
            .map(|(name, o)| {
                if o.is_fixed_output() {
                    format!("{name} ({}:{})", o.hash_algo, o.hash)
                } else {
                    name.clone()
                }
            })
            .collect()
    };
    let (old_outputs, new_outputs) = (describe(old), describe(new));
    if old_outputs != new_outputs {
        own.outputs = Some(Change {
            old: old_outputs,
            new: new_outputs,
        });
    }

    // Input sources, paired by name.
    let (paired, removed, added) = pair_by_name(
        old.input_srcs.iter().map(|p| (p.clone(), ())).collect(),
        new.input_srcs.iter().map(|p| (p.clone(), ())).collect(),
    );
    own.removed_sources = removed;
    own.added_sources = added;
    for (old_path, new_path) in paired {
        if old_path != new_path {
            own.sources
                .push(source_change(manifests, &old_path, &new_path)?);
        }
    }

    // Input derivations, paired by name then by the outputs used.
    let (paired, removed, added) = pair_by_name(
        old.input_drvs
            .iter()
            .map(|(p, o)| (p.clone(), o.iter().cloned().collect::<Vec<_>>()))
            .collect(),
        new.input_drvs
            .iter()
            .map(|(p, o)| (p.clone(), o.iter().cloned().collect::<Vec<_>>()))
            .collect(),
    );
    own.removed_inputs = removed;
    own.added_inputs = added;
    let mut pairs = Vec::new();
    for (old_path, new_path) in paired {
        let (old_used, new_used) = (old.input_drvs.get(&old_path), new.input_drvs.get(&new_path));
        if old_used != new_used {
            let show = |s: Option<&std::collections::BTreeSet<String>>| {
                s.map(|s| s.iter().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            };
            own.input_outputs.push(format!(
                "{}: {} → {}",
                path_name(&new_path),
                show(old_used),
                show(new_used)
            ));
        }
        if old_path != new_path {
            pairs.push((new_path, old_path));
        }
    }
    Ok((own, pairs))
}

/// Pairs paths by name; for several of one name, first those with equal tags (the
/// outputs used), then by order. Returns (old, new) pairs, removed (old only), added.
fn pair_by_name<T: PartialEq>(
    old: Vec<(String, T)>,
    new: Vec<(String, T)>,
) -> (Vec<(String, String)>, Vec<String>, Vec<String>) {
    let mut by_name: BTreeMap<String, OldAndNew<T>> = BTreeMap::new();
    for item in old {
        by_name
            .entry(path_name(&item.0).to_string())
            .or_default()
            .0
            .push(item);
    }
    for item in new {
        by_name
            .entry(path_name(&item.0).to_string())
            .or_default()
            .1
            .push(item);
    }
    let (mut paired, mut removed, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for (_, (mut olds, mut news)) in by_name {
        // Identical paths pair with themselves first: they are the same input.
        let mut i = 0;
        while i < olds.len() {
            if let Some(j) = news.iter().position(|n| n.0 == olds[i].0) {
                let o = olds.remove(i);
                news.remove(j);
                paired.push((o.0.clone(), o.0));
            } else {
                i += 1;
            }
        }
        if olds.len() > 1 || news.len() > 1 {
            let mut i = 0;
            while i < olds.len() {
                if let Some(j) = news.iter().position(|n| n.1 == olds[i].1) {
                    let o = olds.remove(i);
                    let n = news.remove(j);
                    paired.push((o.0, n.0));
                } else {
                    i += 1;
                }
            }
        }
        let mut olds = olds.into_iter();
        let mut news = news.into_iter();
        loop {
            match (olds.next(), news.next()) {
                (Some(o), Some(n)) => paired.push((o.0, n.0)),
                (Some(o), None) => removed.push(o.0),
                (None, Some(n)) => added.push(n.0),
                (None, None) => break,
            }
        }
    }
    (paired, removed, added)
}

fn source_change(
    manifests: &dyn ManifestSource,
    old_path: &str,
    new_path: &str,
) -> Result<SourceChange> {
    let old = manifests.manifest(old_path)?;
    let new = manifests.manifest(new_path)?;
    let (files, note) = match (old, new) {
        (Some(o), Some(n)) => (Some(manifest::diff(&o.entries, &n.entries)), None),
        (o, _) => {
            let missing = if o.is_none() { old_path } else { new_path };
            (
                None,
                Some(format!(
                    "no manifest of {missing}: gone from the store before the ledger saw it"
                )),
            )
        }
    };
    Ok(SourceChange {
        name: path_name(new_path).to_string(),
        old_path: old_path.to_string(),
        new_path: new_path.to_string(),
        files,
        note,
    })
}

fn env_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<EnvChange> {
    let mut changes = Vec::new();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (o, n) = (old.get(name), new.get(name));
        let same = match (o, n) {
            (Some(o), Some(n)) => normalise(o) == normalise(n),
            _ => false,
        };
        if same {
            continue;
        }
        if name == "__json" {
            if let (Some(o), Some(n)) = (o, n) {
                if let Some(expanded) = json_changes(o, n) {
                    changes.extend(expanded);
                    continue;
                }
            }
        }
        changes.push(EnvChange {
            name: name.clone(),
            old: o.cloned(),
            new: n.cloned(),
        });
    }
    changes
}

/// Structured attributes, compared attribute by attribute (`__json.NAME`).
fn json_changes(old: &str, new: &str) -> Option<Vec<EnvChange>> {
    let old: serde_json::Map<String, serde_json::Value> = serde_json::from_str(old).ok()?;
    let new: serde_json::Map<String, serde_json::Value> = serde_json::from_str(new).ok()?;
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let text = |v: Option<&serde_json::Value>| {
        v.map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    Some(
        names
            .into_iter()
            .filter_map(|name| {
                let (o, n) = (text(old.get(name)), text(new.get(name)));
                let same = match (&o, &n) {
                    (Some(o), Some(n)) => normalise(o) == normalise(n),
                    _ => false,
                };
                (!same).then(|| EnvChange {
                    name: format!("__json.{name}"),
                    old: o,
                    new: n,
                })
            })
            .collect(),
    )
}

/// The new-graph derivations that differ from the old graph (every node's new path).
pub fn changed_derivations(diff: &GraphDiff) -> usize {
    diff.nodes
        .iter()
        .map(|n| n.new.as_str())
        .collect::<HashSet<_>>()
        .len()
}

/// Whether `path` is a derivation path in the default store.
pub fn is_drv_path(path: &str) -> bool {
    StorePath::parse(path).is_ok_and(|p| p.is_drv())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nix::drv::DerivationOutput;
    use std::collections::BTreeSet;

    /// An in-memory store of .drv files for graph tests.
    #[derive(Default)]
    pub struct MemStore(pub HashMap<String, Vec<u8>>);

    impl DrvSource for MemStore {
        fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.0.get(drv_path).cloned())
        }
    }

    pub struct NoManifests;

    impl ManifestSource for NoManifests {
        fn manifest(&self, _: &str) -> Result<Option<Manifest>> {
            Ok(None)
        }
    }

    /// A fake hash part from a seed, valid nixbase32.
    pub fn hash_of(seed: &str) -> String {
        let digest = blake3::hash(seed.as_bytes());
        nixbase32::encode(&digest.as_bytes()[..20])
    }

    /// Adds a derivation named `name` with `env` and `inputs`; its path depends on all of
    /// them, as a real .drv's does. Returns its path.
    pub fn add(store: &mut MemStore, name: &str, env: &[(&str, &str)], inputs: &[&str]) -> String {
        let mut d = Derivation {
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            ..Derivation::default()
        };
        for (k, v) in env {
            d.env.insert(k.to_string(), v.to_string());
        }
        d.env.insert("name".into(), name.into());
        for i in inputs {
            d.input_drvs
                .insert(i.to_string(), BTreeSet::from(["out".to_string()]));
            d.env
                .insert(format!("dep_{}", path_name(i)), format!("{i}-out"));
        }
        let seed = d.to_aterm();
        let out = format!("/nix/store/{}-{name}", hash_of(&format!("out{seed}")));
        d.env.insert("out".into(), out.clone());
        d.outputs.insert(
            "out".into(),
            DerivationOutput {
                path: out,
                ..Default::default()
            },
        );
        let path = format!("/nix/store/{}-{name}.drv", hash_of(&seed));
        store.0.insert(path.clone(), d.to_aterm().into_bytes());
        path
    }

    #[test]
    fn names_and_normalisation() {
        assert_eq!(
            path_name("/nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-hello-2.1.drv"),
            "hello-2.1"
        );
        assert_eq!(
            normalise("a /nix/store/3i27k1r82vx3adixspdm2b1a754fy9fq-x/bin b"),
            "a /nix/store/<hash>-x/bin b"
        );
        assert_eq!(normalise("/nix/store/short"), "/nix/store/short");
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

    #[test]
    fn same_named_inputs_pair_by_outputs_then_order() {
        let p = |seed: &str, name: &str| format!("/nix/store/{}-{name}", hash_of(seed));
        let (a, b, c) = (p("a", "x"), p("b", "x"), p("c", "y"));
        let (d, e, f) = (p("d", "x"), p("e", "x"), p("f", "z"));
        let pairs = pair_by_name(
            vec![
                (a.clone(), vec!["dev"]),
                (b.clone(), vec!["out"]),
                (c.clone(), vec!["out"]),
            ],
            vec![
                (d.clone(), vec!["out"]),
                (e.clone(), vec!["dev"]),
                (f.clone(), vec!["out"]),
            ],
        );
        assert_eq!(pairs.0, [(a, e), (b, d)]);
        assert_eq!(pairs.1, [c]);
        assert_eq!(pairs.2, [f]);
    }

    #[test]
    fn structured_attrs_are_compared_per_attribute() {
        let changes = json_changes(r#"{"a":1,"b":"x","c":[1]}"#, r#"{"a":1,"b":"y"}"#).unwrap();
        assert_eq!(
            changes,
            [
                EnvChange {
                    name: "__json.b".into(),
                    old: Some("x".into()),
                    new: Some("y".into())
                },
                EnvChange {
                    name: "__json.c".into(),
                    old: Some("[1]".into()),
                    new: None
                },
            ]
        );
    }
}
