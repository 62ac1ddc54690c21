//! The summary after a build: why the derivations a session built, that were built
//! before under another .drv, rebuilt, on one screen.

use std::collections::{HashMap, HashSet};

use super::verdict::Verdict;
use super::{baseline, derivation_name, judge, render, walk, Context};
use crate::ledger::Ledger;
use crate::nix::graph::Loader;
use crate::Result;

/// [`summary_after_build`] for the derivations one wrapper session built.
pub fn summary_after_session(ledger: &Ledger, session_id: i64) -> Result<Option<String>> {
    let built = ledger.built_in_session(session_id)?;
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
    let reading = ledger.read_scope()?;
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
        let built_at = ledger.last_built_ms(drv)?;
        if inputs_of_built.contains(drv.as_str()) || reports.len() == SUMMARY_MAX_TARGETS {
            // Inside another rebuilt graph (walked from there), or past what is shown:
            // only counted.
            if ledger.built_before(&name, drv, built_at)? {
                rebuilt += 1;
                targets += usize::from(!inputs_of_built.contains(drv.as_str()));
            }
            continue;
        }
        let Some((old, at)) = baseline(ledger, &mut loader, &name, drv, built_at)? else {
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
    let mut judged: HashMap<String, Verdict> = HashMap::new();
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
