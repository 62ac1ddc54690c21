//! Why did this rebuild? This feature owns `nix-ledger why` and `nix-ledger rebuilds`:
//! resolving what to compare (a target and, by default, the latest recorded build of a
//! different derivation of the same name), walking both graphs, and judging each root
//! cause. The ledger's snapshots of .drv files and manifests of sources let it answer
//! after Nix has garbage-collected the old build.
//!
//! - [`manifest`]: blake3 manifests of store paths, stored once, and their diffs.
//! - [`snapshot`]: what ingest remembers ([`remember`]) and where .drv files are read from.
//! - [`diff`]: the graph walk and the root causes.
//! - [`verdict`]: avoidable and no-op rebuilds, with advice and cost.
//! - [`render`]: the text people read (`--json` prints the report itself).
//! - [`rebuilds`]: the list of avoidable and no-op rebuilds over a period.

pub mod diff;
pub mod manifest;
pub mod rebuilds;
pub mod render;
pub mod snapshot;
pub mod verdict;

use std::collections::HashSet;
use std::path::Path;

use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::ledger::Ledger;
use crate::nix::command::NixCommand;
use crate::nix::store_path::StorePath;
use crate::{Error, Result};
use diff::{GraphDiff, Loader, ManifestSource, OwnChanges};
use manifest::{Manifest, ManifestKind};
use snapshot::{DrvSource, Layered, Snapshots, StoreFiles};
use verdict::Verdict;

pub use snapshot::{remember, remember_outputs};

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
        if let Some(m) =
            manifest::load(self.ledger.conn(), store_path).map_err(|e| self.ledger.err(e))?
        {
            return Ok(Some(m));
        }
        if std::fs::symlink_metadata(store_path).is_err() {
            return Ok(None);
        }
        manifest::compute(store_path, ManifestKind::Source, Vec::new()).map(Some)
    }
}

/// Resolves what `why` was given to a .drv path. Accepted: a `.drv` store path; an output
/// store path (its deriver from the ledger, else `nix-store --query --deriver`); a `.nix`
/// file or a directory with a `default.nix`, instantiated with `nix-instantiate` (`attr`
/// is its `-A`); or a flake reference (`nix eval --raw REF.drvPath`). The result must be
/// exactly one derivation.
pub fn resolve_target(ledger: &Ledger, target: &str, attr: Option<&str>) -> Result<String> {
    let bad = |reason: &str| Error::BadTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    if let Ok(path) = StorePath::parse(target) {
        if path.is_drv() {
            return Ok(target.to_string());
        }
        if let Some(drv) = ledger.deriver_of(target)? {
            return Ok(drv);
        }
        let out = NixCommand::program("nix-store")
            .args(["--query", "--deriver", target])
            .output()?;
        let drv = out.trim();
        if StorePath::parse(drv).is_ok_and(|p| p.is_drv()) {
            return Ok(drv.to_string());
        }
        return Err(bad(
            "no known deriver (not recorded, and Nix does not know it)",
        ));
    }
    let as_path = Path::new(target);
    if as_path.is_file() || as_path.join("default.nix").is_file() {
        let mut command = NixCommand::program("nix-instantiate").arg(as_path);
        if let Some(attr) = attr {
            command = command.args(["-A", attr]);
        }
        return one_drv(target, &command.output()?);
    }
    if attr.is_some() {
        return Err(bad("-A needs a .nix file"));
    }
    if target.contains('#') || target.contains(':') {
        let out = NixCommand::program("nix")
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(["eval", "--raw"])
            .arg(format!("{target}.drvPath"))
            .output()?;
        return one_drv(target, &out);
    }
    Err(bad(
        "not a .drv, an output path, a .nix file or a flake reference",
    ))
}

fn one_drv(target: &str, output: &str) -> Result<String> {
    let drvs: Vec<&str> = output.split_whitespace().collect();
    match drvs.as_slice() {
        [one] if StorePath::parse(one).is_ok_and(|p| p.is_drv()) => Ok(one.to_string()),
        _ => Err(Error::BadTarget {
            target: target.to_string(),
            reason: format!(
                "evaluates to {} derivations, not one (choose one with -A)",
                drvs.len()
            ),
        }),
    }
}

/// The name `why` matches earlier builds by: the ledger's, else the .drv's `name`.
fn derivation_name(ledger: &Ledger, loader: &mut Loader<'_>, drv: &str) -> Result<String> {
    let recorded: Option<String> = ledger
        .conn()
        .prepare_cached("SELECT name FROM derivations WHERE drv_path = ?1")
        .and_then(|mut stmt| stmt.query_row([drv], |r| r.get(0)).optional())
        .map_err(|e| ledger.err(e))?;
    if let Some(name) = recorded {
        return Ok(name);
    }
    Ok(loader
        .get(drv)?
        .and_then(|d| d.env.get("name").cloned())
        .unwrap_or_else(|| diff::path_name(drv).to_string()))
}

/// The latest recorded build of a derivation named `name` other than `drv`, finished
/// before `before_ms` when given: (its .drv, finished at).
pub fn previous_build(
    ledger: &Ledger,
    name: &str,
    drv: &str,
    before_ms: Option<i64>,
) -> Result<Option<(String, i64)>> {
    ledger
        .conn()
        .prepare_cached(
            "SELECT b.drv_path, b.finished_ms FROM builds b JOIN derivations d USING (drv_path)
             WHERE d.name = ?1 AND b.drv_path != ?2 AND b.status = 'built'
               AND b.finished_ms < ?3
             ORDER BY b.finished_ms DESC LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                rusqlite::params![name, drv, before_ms.unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .map_err(|e| ledger.err(e))
}

/// Whether a derivation named `name` other than `drv` was built before `before_ms`: what
/// [`previous_build`] answers, without finding the latest, so it stops at the first one
/// however often the name was built.
fn built_before(ledger: &Ledger, name: &str, drv: &str, before_ms: Option<i64>) -> Result<bool> {
    ledger
        .conn()
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM builds b JOIN derivations d USING (drv_path)
             WHERE d.name = ?1 AND b.drv_path != ?2 AND b.status = 'built'
               AND b.finished_ms < ?3)",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                rusqlite::params![name, drv, before_ms.unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
        })
        .map_err(|e| ledger.err(e))
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
            snapshots: Snapshots {
                conn: ledger.conn(),
                ledger_path: ledger.path(),
            },
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
    let (against, against_ms) = match against {
        Some(old) => (old.to_string(), last_built(ledger, old)?),
        None => match previous_build(ledger, &name, new, None)? {
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

fn last_built(ledger: &Ledger, drv: &str) -> Result<Option<i64>> {
    ledger
        .conn()
        .prepare_cached("SELECT max(finished_ms) FROM builds WHERE drv_path = ?1")
        .and_then(|mut stmt| stmt.query_row([drv], |r| r.get(0)))
        .map_err(|e| ledger.err(e))
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
    let graph = diff::diff_graphs(loader, &manifests, new, against)?;
    let root_causes = roots(&graph);
    Ok(WhyReport {
        target: new.to_string(),
        against: against.to_string(),
        name,
        against_built_at: against_ms.map(crate::timefmt::rfc3339_ms),
        changed_derivations: diff::changed_derivations(&graph),
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
        ledger.conn(),
        &cause.changes,
        &cause.new_drv,
        &cause.old_drv,
        &cost,
    )
    .map_err(|e| ledger.err(e))?;
    Ok(())
}

/// [`summary_after_build`] for the derivations one wrapper session built.
pub fn summary_after_session(ledger: &Ledger, session_id: i64) -> Result<Option<String>> {
    let built: Vec<String> = ledger
        .conn()
        .prepare("SELECT drv_path FROM builds WHERE session_id = ?1 AND status = 'built'")
        .and_then(|mut stmt| stmt.query_map([session_id], |row| row.get(0))?.collect())
        .map_err(|e| ledger.err(e))?;
    if built.is_empty() {
        return Ok(None);
    }
    summary_after_build(ledger, &built)
}

/// For the wrapper, after a build: a one-screen summary of why the derivations in
/// `built_drvs` that were built before (under another .drv) rebuilt. `None` when none was.
/// Only the topmost rebuilt derivations are walked: the others are inside their graphs.
pub fn summary_after_build(ledger: &Ledger, built_drvs: &[String]) -> Result<Option<String>> {
    let context = Context::new(ledger);
    let source = context.source();
    let mut loader = Loader::new(&source);
    // One read transaction for the walks: hundreds of lookups then share one snapshot
    // and one set of locks. Judging writes (enrichment, manifests), so it comes after.
    let reading = ledger
        .conn()
        .unchecked_transaction()
        .map_err(|e| ledger.err(e))?;
    let mut inputs_of_built: HashSet<String> = HashSet::new();
    for drv in built_drvs {
        if let Some(d) = loader.get(drv)? {
            inputs_of_built.extend(d.input_drvs.keys().cloned());
        }
    }
    let mut reports = Vec::new();
    let mut rebuilt = 0usize;
    let mut targets = 0usize;
    for drv in built_drvs {
        let name = derivation_name(ledger, &mut loader, drv)?;
        // Earlier than this build: a later build of the name is no reason for this one.
        let built_at = last_built(ledger, drv)?;
        if inputs_of_built.contains(drv.as_str()) || reports.len() == SUMMARY_MAX_TARGETS {
            // Inside another rebuilt graph (walked from there), or past what is shown:
            // only counted.
            if built_before(ledger, &name, drv, built_at)? {
                rebuilt += 1;
                targets += usize::from(!inputs_of_built.contains(drv.as_str()));
            }
            continue;
        }
        let Some((old, at)) = previous_build(ledger, &name, drv, built_at)? else {
            continue;
        };
        rebuilt += 1;
        // Counted like those past the shown ones, even if its old .drv is gone.
        targets += 1;
        if loader.get(&old)?.is_none() {
            continue;
        }
        reports.push(walk(ledger, &mut loader, drv, &old, name, Some(at))?);
    }
    drop(reading);
    if rebuilt == 0 {
        return Ok(None);
    }
    // Judge only what the summary shows: the causes of most rebuilds, each once.
    let mut shown: Vec<(usize, String)> = reports
        .iter()
        .flat_map(|r| &r.root_causes)
        .map(|c| (c.downstream, c.new_drv.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    shown.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    shown.truncate(render::SUMMARY_MAX_CAUSES);
    let mut judged: std::collections::HashMap<String, Verdict> = std::collections::HashMap::new();
    for report in &mut reports {
        for cause in &mut report.root_causes {
            if !shown.iter().any(|(_, drv)| *drv == cause.new_drv) {
                continue;
            }
            match judged.get(&cause.new_drv) {
                Some(verdict) => cause.verdict = verdict.clone(),
                None => {
                    judge(ledger, cause)?;
                    judged.insert(cause.new_drv.clone(), cause.verdict.clone());
                }
            }
        }
    }
    let mut text = render::summary(rebuilt, &reports);
    if targets > reports.len() {
        text.push_str(&format!(
            "  (causes of the first {} of {targets} rebuilt targets; `nix-ledger why` tells any other)\n",
            reports.len()
        ));
    }
    Ok(Some(text))
}

/// How many rebuilt targets (rebuilt derivations no other rebuilt one depends on) a
/// summary walks: one for a system or a package, many for a list of unrelated ones.
const SUMMARY_MAX_TARGETS: usize = 16;
