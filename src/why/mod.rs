//! Why did this rebuild? This feature owns `nix-ledger why` and `nix-ledger rebuilds`:
//! resolving what to compare (a target and, by default, the latest recorded build of a
//! different derivation of the same name), walking both graphs, and judging each root
//! cause. The ledger's snapshots of .drv files and manifests of sources let it answer
//! after Nix has garbage-collected the old build.
//!
//! - [`resolve`]: what the user named, as one .drv.
//! - [`compare`]: one pair of derivations: what changed in it itself.
//! - [`walk`]: the two graphs together, and the root causes.
//! - [`files`]: what changed in a source, file by file.
//! - [`verdict`]: avoidable and no-op rebuilds, with advice and cost.
//! - [`summary`]: the summary after a build.
//! - [`render`]: the text people read (`--json` prints the report itself).
//! - [`rebuilds`]: the list of avoidable and no-op rebuilds over a period.

pub mod compare;
pub mod files;
pub mod rebuilds;
pub mod render;
pub mod resolve;
pub mod summary;
pub mod verdict;
pub mod walk;

use std::collections::HashSet;

use serde::Serialize;

use crate::ledger::snapshots::Snapshots;
use crate::ledger::Ledger;
use crate::nix::graph::{DrvSource, Layered, Loader, StoreFiles};
use crate::nix::store_path::path_name;
use crate::store::manifest::{self, Manifest, ManifestKind};
use crate::{Error, Result};
use compare::{ManifestSource, OwnChanges};
use verdict::Verdict;
use walk::GraphDiff;

pub use resolve::resolve_target;
pub use summary::{summary_after_build, summary_after_session};

/// One root cause of a rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct RootCause {
    pub name: String,
    pub new_drv: String,
    pub old_drv: String,
    pub changes: OwnChanges,
    /// Derivations that rebuild only because of this one.
    pub downstream: usize,
    /// Derivations that rebuild because of this one and of other root causes.
    pub downstream_shared: usize,
    pub verdict: Verdict,
    /// This derivation and those rebuilt only because of it: whose build time it cost.
    #[serde(skip)]
    cost_drvs: Vec<String>,
}

/// The answer to `nix-ledger why`.
#[derive(Debug, Clone, Serialize)]
pub struct WhyReport {
    pub target: String,
    pub against: String,
    pub name: String,
    /// When the ledger last recorded a build of `against`, RFC 3339.
    pub against_built_at: Option<String>,
    /// Derivations of the target's graph that differ from the old graph.
    pub changed_derivations: usize,
    pub root_causes: Vec<RootCause>,
}

/// Manifests from the ledger, else hashed from the store while the path still exists.
pub struct LedgerManifests<'c> {
    pub ledger: &'c Ledger,
}

impl ManifestSource for LedgerManifests<'_> {
    fn manifest(&self, store_path: &str) -> Result<Option<Manifest>> {
        if let Some(m) = self.ledger.manifest(store_path)? {
            return Ok(Some(m));
        }
        if std::fs::symlink_metadata(store_path).is_err() {
            return Ok(None);
        }
        manifest::compute(store_path, ManifestKind::Source, Vec::new()).map(Some)
    }
}

/// The name `why` matches earlier builds by: the ledger's, else the .drv's `name`.
fn derivation_name(ledger: &Ledger, loader: &mut Loader<'_>, drv: &str) -> Result<String> {
    if let Some(name) = ledger.derivation_name(drv)? {
        return Ok(name);
    }
    Ok(loader
        .get(drv)?
        .and_then(|d| d.env.get("name").cloned())
        .unwrap_or_else(|| path_name(drv).to_string()))
}

/// How many earlier derivations of a name are weighed for the baseline of a rebuild.
const BASELINE_CANDIDATES: usize = 16;

/// The earlier build a rebuild of `new` is compared with: of the builds of other
/// derivations named `name` recorded before `before_ms`, the one closest to `new` (the
/// most input derivations and sources in common), the latest among equals. The latest
/// build of a name is not enough: after building with settings A, then B, then A with one
/// change, the A build is what the last one differs from by that change alone.
pub fn baseline(
    ledger: &Ledger,
    loader: &mut Loader<'_>,
    name: &str,
    new: &str,
    before_ms: Option<i64>,
) -> Result<Option<(String, i64)>> {
    let candidates = ledger.earlier_builds(name, new, before_ms, BASELINE_CANDIDATES)?;
    let Some(new_drv) = loader.get(new)? else {
        return Ok(candidates.into_iter().next());
    };
    let mut best: Option<(usize, (String, i64))> = None;
    for candidate in candidates {
        let in_common = match loader.get(&candidate.0)? {
            Some(old) => {
                old.input_drvs
                    .keys()
                    .filter(|k| new_drv.input_drvs.contains_key(*k))
                    .count()
                    + old.input_srcs.intersection(&new_drv.input_srcs).count()
            }
            None => 0,
        };
        // Newest first: a later candidate replaces the best only when strictly closer.
        if best.as_ref().is_none_or(|(most, _)| in_common > *most) {
            best = Some((in_common, candidate));
        }
    }
    Ok(best.map(|(_, candidate)| candidate))
}

/// Everything one `why` (or a series of them) reads .drv files through.
pub struct Context<'l> {
    pub ledger: &'l Ledger,
    snapshots: Snapshots<'l>,
}

impl<'l> Context<'l> {
    pub fn new(ledger: &'l Ledger) -> Context<'l> {
        Context {
            ledger,
            snapshots: ledger.snapshots(),
        }
    }

    /// The store first (fresh), then the ledger's snapshots (after GC).
    pub fn source(&self) -> Layered<'_> {
        Layered(vec![&StoreFiles as &dyn DrvSource, &self.snapshots])
    }
}

/// Explains why `new` differs from `against` (default: the previous build of its name).
pub fn why(ledger: &Ledger, new: &str, against: Option<&str>) -> Result<WhyReport> {
    let context = Context::new(ledger);
    let source = context.source();
    let mut loader = Loader::new(&source);
    if loader.get(new)?.is_none() {
        return Err(Error::NotFound(format!(
            "{new}: neither in the store nor in the ledger"
        )));
    }
    let name = derivation_name(ledger, &mut loader, new)?;
    // Before the target's own build: a later build of the name explains nothing of it.
    let before = ledger.last_built_ms(new)?;
    let (against, against_ms) = match against {
        Some(old) => (old.to_string(), ledger.last_built_ms(old)?),
        None => match baseline(ledger, &mut loader, &name, new, before)? {
            Some((old, at)) => (old, Some(at)),
            None => {
                return Err(Error::NotFound(format!(
                    "an earlier build of a different {name} (give one with --against)"
                )))
            }
        },
    };
    if loader.get(&against)?.is_none() {
        return Err(Error::NotFound(format!(
            "{against}: neither in the store nor in the ledger"
        )));
    }
    report(ledger, &mut loader, new, &against, name, against_ms)
}

/// Walks the pair and judges each root cause.
pub fn report(
    ledger: &Ledger,
    loader: &mut Loader<'_>,
    new: &str,
    against: &str,
    name: String,
    against_ms: Option<i64>,
) -> Result<WhyReport> {
    let mut why = walk(ledger, loader, new, against, name, against_ms)?;
    for cause in &mut why.root_causes {
        judge(ledger, cause)?;
    }
    Ok(why)
}

/// Walks the pair and finds the root causes, without judging them (see [`judge`]).
fn walk(
    ledger: &Ledger,
    loader: &mut Loader<'_>,
    new: &str,
    against: &str,
    name: String,
    against_ms: Option<i64>,
) -> Result<WhyReport> {
    let manifests = LedgerManifests { ledger };
    let graph = walk::diff_graphs(loader, &manifests, new, against)?;
    let root_causes = roots(&graph);
    Ok(WhyReport {
        target: new.to_string(),
        against: against.to_string(),
        name,
        against_built_at: against_ms.map(crate::time::rfc3339_ms),
        changed_derivations: walk::changed_derivations(&graph),
        root_causes,
    })
}

fn roots(graph: &GraphDiff) -> Vec<RootCause> {
    let mut causes = Vec::with_capacity(graph.roots.len());
    for root in &graph.roots {
        let Some(node) = graph.nodes.get(root.node) else {
            continue;
        };
        let cost_drvs: Vec<String> = std::iter::once(node.new.as_str())
            .chain(
                root.downstream_only
                    .iter()
                    .filter_map(|&n| graph.nodes.get(n).map(|x| x.new.as_str())),
            )
            .collect::<HashSet<_>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        causes.push(RootCause {
            name: node.name.clone(),
            new_drv: node.new.clone(),
            old_drv: node.old.clone(),
            changes: node.own.clone(),
            downstream: root.downstream_only.len(),
            downstream_shared: root.downstream_any - root.downstream_only.len(),
            verdict: Verdict::unjudged(),
            cost_drvs,
        });
    }
    // The cause of most rebuilds first.
    causes.sort_by(|a, b| b.downstream.cmp(&a.downstream).then(a.name.cmp(&b.name)));
    causes
}

/// Judges one root cause. Its two builds' outputs and output manifests (what decides
/// "no-op") are taken first if the ledger lacks them, and only theirs: a summary right
/// after a build judges only the causes it shows.
fn judge(ledger: &Ledger, cause: &mut RootCause) -> Result<()> {
    for drv in [&cause.new_drv, &cause.old_drv] {
        crate::ledger::enrich::outputs_for_verdict(ledger, drv)?;
    }
    let cost: Vec<&str> = cause.cost_drvs.iter().map(String::as_str).collect();
    cause.verdict = verdict::judge(
        ledger,
        &cause.changes,
        &cause.new_drv,
        &cause.old_drv,
        &cost,
    )?;
    Ok(())
}
