//! Comparing one pair of derivations: what changed in a derivation itself (environment,
//! builder, arguments, system, outputs, input sources, added or removed inputs), and
//! which pairs of its inputs differ. Strings are compared with every store path's hash
//! part blanked, because those change whenever any input changes and say nothing of
//! their own.

use std::collections::BTreeMap;

use serde::Serialize;

use super::files::{self, FileChange};
use crate::nix::drv::Derivation;
use crate::nix::graph::pair_by_name;
use crate::nix::store_path::{normalise, path_name};
use crate::store::manifest::Manifest;
use crate::Result;

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

/// A pair of derivations to compare: (new, old).
pub type Pair = (String, String);

/// Compares one pair; returns its own changes and the pairs of inputs that differ.
pub fn compare(
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

fn source_change(
    manifests: &dyn ManifestSource,
    old_path: &str,
    new_path: &str,
) -> Result<SourceChange> {
    let old = manifests.manifest(old_path)?;
    let new = manifests.manifest(new_path)?;
    let (files, note) = match (old, new) {
        (Some(o), Some(n)) => match o.incomplete.as_ref().or(n.incomplete.as_ref()) {
            Some(why) => (
                None,
                Some(format!(
                    "a manifest is incomplete ({why}): files not compared"
                )),
            ),
            None => (Some(files::diff(&o.entries, &n.entries)), None),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

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
