//! What the tuner simulates, from the ledger and the store: the model's history (every
//! measured build), and workloads: a recorded session's builds with their dependencies,
//! or what building a target would build. The graph goes through [`crate::nix::graph`]:
//! the store's .drv files, else the ledger's snapshots of them (after GC).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::model::{pname, Basis, CpuWindow, DefaultPolicy, History, Observation};
use super::workload::{JobSpec, Workload};
use crate::ledger::model::Scope;
use crate::ledger::tune::Measurement;
use crate::ledger::Ledger;
use crate::nix::graph::Loader;
use crate::nix::store_path::{path_name, StorePath};
use crate::store::db::StoreDb;
use crate::{Error, Result};

/// How much of the ledger a model is fitted from: the builds of the newest `per_name`
/// derivations of each name (and four times as many of the same package's, for a name
/// never built), and for the defaults of derivations nothing is known of, the newest
/// `recent` measured builds.
#[derive(Debug, Clone, Copy)]
pub struct Reach {
    pub per_name: usize,
    pub recent: usize,
}

/// For `tune`: enough builds per name to span several settings, few enough to read for
/// thousands of names in tens of milliseconds.
pub const TUNE: Reach = Reach {
    per_name: 24,
    recent: 2_000,
};
/// For the wrapper's ETA, made while Nix builds: the newest builds are what matter.
pub const ETA: Reach = Reach {
    per_name: 6,
    recent: 500,
};

/// What the ledger knows that a workload needs: the measured builds of its names (and
/// of the same packages at other versions, for names never built), and the defaults.
pub struct Knowledge {
    pub history: History,
    pub default: DefaultPolicy,
}

/// The ledger's knowledge of the derivations named `names`. Builds recorded outside a
/// session (the hook alone) are taken to have run on a host of `default_host_cores`.
/// A few indexed queries, not a scan of the ledger: the wrapper's ETA runs this while
/// Nix builds.
pub fn knowledge(
    ledger: &Ledger,
    scope: Scope<'_>,
    names: &[&str],
    reach: Reach,
    default_host_cores: u32,
) -> Result<Knowledge> {
    let mut history = History::new();
    let mut known = HashSet::new();
    let names: Vec<&str> = names
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for m in ledger.build_measurements_named(scope, &names, reach.per_name)? {
        known.insert(m.name.clone());
        add(&mut history, m, default_host_cores);
    }
    let packages: BTreeSet<&str> = names
        .iter()
        .filter(|n| !known.contains(**n))
        .map(|n| pname(n))
        .collect();
    for package in packages {
        for m in ledger.build_measurements_prefixed(scope, package, reach.per_name * 4)? {
            if pname(&m.name) == package {
                add(&mut history, m, default_host_cores);
            }
        }
    }
    let mut recent = History::new();
    for m in ledger.build_measurements(scope, reach.recent)? {
        add(&mut recent, m, default_host_cores);
    }
    Ok(Knowledge {
        history,
        default: DefaultPolicy::from_history(&recent),
    })
}

/// One measured build into `h`: an observation when its CPU time and memory are known,
/// else its duration alone.
fn add(h: &mut History, m: Measurement, default_host_cores: u32) {
    let duration = m.duration_ms.max(0) as u64;
    match (m.cpu_ms, m.peak_rss_bytes) {
        (Some(cpu), Some(rss)) => h.add(
            &m.name,
            Observation {
                duration_ms: duration,
                cpu_ms: cpu.max(0) as u64,
                peak_rss_bytes: rss.max(0) as u64,
                cores_given: m.cores.map_or(0, |c| c.clamp(0, u32::MAX as i64) as u32),
                host_cores: m
                    .host_cores
                    .map_or(default_host_cores, |c| c.clamp(1, u32::MAX as i64) as u32),
                cpu_window: m.contention.map(|c| CpuWindow {
                    window_ms: c.cpu_window_ms.max(0) as u64,
                    others_cpu_ms: c.others_cpu_ms.max(0) as u64,
                }),
            },
        ),
        _ => h.add_duration(&m.name, duration),
    }
}

/// A workload ready to simulate, with where each job's profile came from.
pub struct Prepared {
    pub workload: Workload,
    /// Per job: its .drv and the basis of its profile.
    pub drvs: Vec<String>,
    pub bases: Vec<Basis>,
    /// Jobs whose .drv neither the store nor the ledger has: their dependencies are
    /// unknown and taken to be none.
    pub unknown_graph: usize,
}

impl Prepared {
    /// Which jobs' profiles are estimates, for the sweep's confidence.
    pub fn estimated(&self) -> Vec<bool> {
        self.bases.iter().map(Basis::is_estimated).collect()
    }
}

/// What a workload is, as the report shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    Session { id: i64, started_ms: i64 },
    Target { drv: String },
}

/// The workload of `drvs` (.drv path, name), with dependencies between them from their
/// .drv files and profiles from what the ledger knows.
pub fn prepare(
    loader: &mut Loader<'_>,
    drvs: &[(String, String)],
    knowledge: &Knowledge,
) -> Result<Prepared> {
    let index: HashMap<&str, usize> = drvs
        .iter()
        .enumerate()
        .map(|(i, (d, _))| (d.as_str(), i))
        .collect();
    let mut jobs = Vec::with_capacity(drvs.len());
    let mut bases = Vec::with_capacity(drvs.len());
    let mut unknown_graph = 0;
    for (drv, name) in drvs {
        let deps = match loader.get(drv)? {
            Some(d) => d
                .input_drvs
                .keys()
                .filter_map(|input| index.get(input.as_str()).copied())
                .collect(),
            None => {
                unknown_graph += 1;
                Vec::new()
            }
        };
        let estimate = knowledge.history.estimate(name, &knowledge.default);
        let mut job = JobSpec::new(name.clone(), deps, estimate.profile);
        // Nix 2.8 orders ready goals by "<name>.drv$<path>" (DerivationGoal::key).
        job.order_key = StorePath::parse(drv)
            .ok()
            .map(|p| format!("{}${drv}", p.name()));
        jobs.push(job);
        bases.push(estimate.basis);
    }
    let workload = Workload::new(jobs).map_err(|e| e.into_error())?;
    Ok(Prepared {
        workload,
        drvs: drvs.iter().map(|(d, _)| d.clone()).collect(),
        bases,
        unknown_graph,
    })
}

/// What building `targets` (.drv files) would build: the derivations of their closure
/// with an output that is not valid in the store, or (with `since_ms`, for a build
/// already under way) that became valid since then, dependencies first. Fails rather
/// than guess when the store's database cannot be read.
pub fn to_build(
    loader: &mut Loader<'_>,
    store: &StoreDb,
    targets: &[&str],
    since_ms: Option<i64>,
) -> Result<Vec<String>> {
    let closure = loader.closure(targets)?;
    if !closure.missing.is_empty() && closure.derivations.is_empty() {
        return Err(Error::NotFound(format!(
            "{}: neither in the store nor in the ledger",
            targets.join(" ")
        )));
    }
    let outputs: Vec<&str> = closure
        .derivations
        .values()
        .flat_map(|d| d.outputs.values().map(|o| o.path.as_str()))
        .filter(|p| !p.is_empty())
        .collect();
    // The store registers paths to the second.
    let before = since_ms.map_or(i64::MAX, |ms| ms.div_euclid(1000) * 1000);
    let valid: HashSet<String> = store
        .path_infos(&outputs)?
        .into_iter()
        .filter(|info| info.registered_ms.is_none_or(|at| at < before))
        .map(|info| info.path)
        .collect();
    Ok(closure
        .topological_order()
        .into_iter()
        .filter(|drv| {
            closure.derivations.get(*drv).is_some_and(|d| {
                d.outputs
                    .values()
                    .any(|o| o.path.is_empty() || !valid.contains(&o.path))
            })
        })
        .map(str::to_string)
        .collect())
}

/// `drvs` with their names, from the .drv files.
pub fn named(loader: &mut Loader<'_>, drvs: Vec<String>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(drvs.len());
    for drv in drvs {
        let name = loader
            .get(&drv)?
            .and_then(|d| d.env.get("name").cloned())
            .unwrap_or_else(|| path_name(&drv).to_string());
        out.push((drv, name));
    }
    Ok(out)
}

/// The names of `drvs`, for [`knowledge`].
pub fn names(drvs: &[(String, String)]) -> Vec<&str> {
    drvs.iter().map(|(_, n)| n.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::graph::tests::{add, MemStore};

    #[test]
    fn a_workload_keeps_only_dependencies_inside_it() {
        let mut store = MemStore::default();
        let lib = add(&mut store, "lib-1.0", &[], &[]);
        let app = add(&mut store, "app-2.0", &[], &[&lib]);
        let tool = add(&mut store, "tool-1.0", &[], &[&lib, &app]);
        let gone = format!("/nix/store/{}-gone.drv", "z".repeat(32));
        let mut loader = Loader::new(&store);
        let mut history = History::new();
        history.add(
            "app-1.9",
            Observation {
                duration_ms: 1000,
                cpu_ms: 1000,
                peak_rss_bytes: 1,
                cores_given: 1,
                host_cores: 2,
                cpu_window: None,
            },
        );
        let knowledge = Knowledge {
            default: DefaultPolicy::from_history(&history),
            history,
        };
        // lib was already valid: not in the workload, so no edge to it.
        let drvs = vec![
            (app.clone(), "app-2.0".to_string()),
            (tool.clone(), "tool-1.0".to_string()),
            (gone, "gone".to_string()),
        ];
        let p = prepare(&mut loader, &drvs, &knowledge).unwrap();
        assert_eq!(p.workload.job(0).deps, Vec::<usize>::new());
        assert_eq!(p.workload.job(1).deps, vec![0]);
        assert_eq!(p.unknown_graph, 1);
        assert!(matches!(p.bases[0], Basis::SameName { .. }));
        assert_eq!(p.bases[1], Basis::Default);
        assert_eq!(p.estimated(), vec![true, true, true]);
        let key = p.workload.job(1).order_key.clone().unwrap();
        assert!(key.starts_with("tool-1.0.drv$/nix/store/"), "{key}");
    }
}
