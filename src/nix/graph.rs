//! The derivation graph: .drv files read from wherever they still are (the store, a
//! directory, the ledger's snapshots after GC), parsed once and shared, with the walks
//! every feature needs: a closure, a topological order, and the pairing of two graphs'
//! inputs by name that `why` compares and the tuner will schedule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::drv::{self, Derivation};
use super::store_path::path_name;
use crate::{Error, Result};

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
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The first source that has a .drv wins: e.g. the store (fresh), then the ledger (after
/// GC).
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

/// Parses and caches derivations from a source; shared by every walk of one command so
/// that a .drv is read once however many graphs mention it.
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
            Some(bytes) => Some(Rc::new(drv::parse(&bytes).map_err(|source| {
                Error::Drv {
                    path: path.into(),
                    source,
                }
            })?)),
            None => None,
        };
        self.cache.insert(path.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Every .drv reachable from `roots` through input derivations, roots included, that
    /// some source has; those no source has are listed apart.
    pub fn closure(&mut self, roots: &[&str]) -> Result<Closure> {
        let mut closure = Closure::default();
        walk(roots, |path| match self.get(path)? {
            Some(d) => {
                let inputs = d.input_drvs.keys().cloned().collect();
                closure.derivations.insert(path.to_string(), d);
                Ok(inputs)
            }
            None => {
                closure.missing.push(path.to_string());
                Ok(Vec::new())
            }
        })?;
        closure.missing.sort();
        Ok(closure)
    }
}

/// Visits every .drv reachable from `roots` once: `visit` is given a path and returns
/// the inputs to descend into (none to stop there). The one walk of derivation graphs;
/// iterative, because bootstrap chains are deep.
pub fn walk<E>(
    roots: &[&str],
    mut visit: impl FnMut(&str) -> std::result::Result<Vec<String>, E>,
) -> std::result::Result<(), E> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    while let Some(path) = stack.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        stack.extend(
            visit(&path)?
                .into_iter()
                .filter(|input| !seen.contains(input)),
        );
    }
    Ok(())
}

/// A set of derivations closed under their inputs (as far as they could be read).
#[derive(Debug, Default, Clone)]
pub struct Closure {
    pub derivations: BTreeMap<String, Rc<Derivation>>,
    /// Inputs that no source had, sorted.
    pub missing: Vec<String>,
}

impl Closure {
    /// The derivations with every input before the inputs' dependents (Kahn's algorithm;
    /// ties by path, so the order is the same on every run). Inputs outside the closure
    /// are ignored.
    pub fn topological_order(&self) -> Vec<&str> {
        let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dependents: HashMap<&str, Vec<&str>> = HashMap::new();
        for (path, d) in &self.derivations {
            let inputs = d
                .input_drvs
                .keys()
                .filter(|i| self.derivations.contains_key(*i))
                .count();
            pending.insert(path, inputs);
            for input in d.input_drvs.keys() {
                if let Some((key, _)) = self.derivations.get_key_value(input) {
                    dependents.entry(key.as_str()).or_default().push(path);
                }
            }
        }
        let mut ready: std::collections::BTreeSet<&str> = pending
            .iter()
            .filter(|(_, &n)| n == 0)
            .map(|(&p, _)| p)
            .collect();
        let mut order = Vec::with_capacity(self.derivations.len());
        while let Some(next) = ready.pop_first() {
            order.push(next);
            for &dependent in dependents.get(next).map(Vec::as_slice).unwrap_or_default() {
                if let Some(n) = pending.get_mut(dependent) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        ready.insert(dependent);
                    }
                }
            }
        }
        order
    }
}

/// The inputs of one name: (old side, new side), each (path, tag).
type OldAndNew<T> = (Vec<(String, T)>, Vec<(String, T)>);

/// Pairs two lists of store paths by name; for several of one name, first those with
/// equal tags (e.g. the outputs used), then by order. Returns (old, new) pairs, the
/// removed (old only) and the added (new only).
pub fn pair_by_name<T: PartialEq>(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nix::drv::DerivationOutput;
    use crate::nix::nixbase32;
    use std::collections::BTreeSet;

    /// An in-memory store of .drv files for graph tests.
    #[derive(Default)]
    pub struct MemStore(pub HashMap<String, Vec<u8>>);

    impl DrvSource for MemStore {
        fn read(&self, drv_path: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.0.get(drv_path).cloned())
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

    #[test]
    fn a_closure_lists_every_input_once_in_dependency_order() {
        let mut store = MemStore::default();
        let a = add(&mut store, "a", &[], &[]);
        let b = add(&mut store, "b", &[], &[&a]);
        let c = add(&mut store, "c", &[], &[&a]);
        let top = add(&mut store, "top", &[], &[&b, &c]);
        let gone = format!("/nix/store/{}-gone.drv", hash_of("gone"));
        let mut loader = Loader::new(&store);
        let closure = loader.closure(&[&top, &gone]).unwrap();
        assert_eq!(closure.derivations.len(), 4);
        assert_eq!(closure.missing, [gone]);
        let order = closure.topological_order();
        let at = |p: &str| order.iter().position(|o| *o == p).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at(&a) < at(&b) && at(&a) < at(&c));
        assert!(at(&b) < at(&top) && at(&c) < at(&top));
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
}
