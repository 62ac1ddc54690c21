//! Carrying a plan out: remove the generations (nix-env), then delete the builds in
//! batches (nix-store --delete), each batch written to the ledger as `pending` before it
//! runs and settled after, so that a run killed at any moment leaves a ledger that says
//! which deletions happened ([`reconcile`] settles the rest against the store later).
//!
//! Nix decides liveness again under its GC lock: a planned path that became live since
//! (a new root, a running build) is refused, never deleted. When that happens the roots
//! are taken again, every planned path now live is dropped (`kept`), the refused one is
//! reported, and the rest goes on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::plan::{Plan, PlannedBuild};
use super::policy::GenerationRemoval;
use super::snapshot::Snapshot;
use crate::ledger::retention::{DeletionState, PlannedDeletion, RunStart, RunStatus};
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::nix::{delete, profiles};
use crate::store::db::StoreDb;
use crate::time::now_ms;
use crate::{Error, Result};

/// Paths per `nix-store --delete` unless asked otherwise: each command costs a root scan
/// (~0.1 s), and each batch is a point the ledger records.
pub const DEFAULT_BATCH_PATHS: usize = 500;
/// How often one batch is retried after Nix refused part of it.
const MAX_RETRIES: usize = 5;

/// How to carry a plan out.
#[derive(Debug, Clone)]
pub struct ExecOptions<'a> {
    pub batch_paths: usize,
    /// `command` or `maintenance`, as recorded.
    pub trigger: &'a str,
    /// Take the roots again before deleting (a plan read from a file is older).
    pub revalidate: bool,
}

/// A path Nix refused, and why nix-ledger thinks it did.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub path: String,
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub run_id: i64,
    pub status: String,
    pub deleted: Vec<String>,
    pub deleted_paths: i64,
    pub freed_bytes: i64,
    pub cost_to_restore_ms: i64,
    pub unknown_cost_builds: i64,
    pub refused: Vec<Refusal>,
    /// Planned paths that became live before their batch ran: kept.
    pub kept_alive: Vec<String>,
    pub generations_removed: Vec<GenerationRemoval>,
    pub errors: Vec<String>,
}

/// Whether the process `pid` is a nix-ledger still running (a run of a dead one is
/// interrupted). Without /proc, any live process with that id counts.
fn run_is_alive(pid: i64) -> bool {
    if !crate::sys::process_exists(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.windows(10).any(|w| w == b"nix-ledger"),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Whether `path` is gone: not valid in the store database and nothing on disk.
fn gone(db: &StoreDb, paths: &[&str]) -> Result<HashSet<String>> {
    let valid: HashSet<String> = db.path_infos(paths)?.into_iter().map(|i| i.path).collect();
    Ok(paths
        .iter()
        .filter(|p| !valid.contains(**p) && std::fs::symlink_metadata(p).is_err())
        .map(|p| p.to_string())
        .collect())
}

/// Settles the runs a killed nix-ledger left `running`: each pending path is `deleted`
/// when the store no longer has it, else `skipped`. Returns the runs settled.
pub fn reconcile(ledger: &mut Ledger) -> Result<Vec<i64>> {
    let unfinished = ledger.unfinished_gc_runs()?;
    let mut settled = Vec::new();
    for (run, pid) in unfinished {
        if pid.is_some_and(|p| p != i64::from(std::process::id()) && run_is_alive(p)) {
            continue;
        }
        let pending = ledger.pending_deletions(run)?;
        if !pending.is_empty() {
            let db = StoreDb::open_default()?;
            let refs: Vec<&str> = pending.iter().map(String::as_str).collect();
            let gone = gone(&db, &refs)?;
            let updates: Vec<(&str, DeletionState)> = refs
                .iter()
                .map(|p| {
                    let state = if gone.contains(*p) {
                        DeletionState::Deleted
                    } else {
                        DeletionState::Skipped
                    };
                    (*p, state)
                })
                .collect();
            ledger.settle_deletions(run, &updates)?;
        }
        ledger.finish_gc_run(
            run,
            RunStatus::Interrupted,
            Some("nix-ledger stopped during the run"),
        )?;
        settled.push(run);
    }
    Ok(settled)
}

/// Splits the plan's builds into batches of at most `max` paths, never splitting a step.
fn batches(builds: &[PlannedBuild], max: usize) -> Vec<Vec<(usize, &PlannedBuild)>> {
    let mut by_step: BTreeMap<usize, Vec<(usize, &PlannedBuild)>> = BTreeMap::new();
    for (i, b) in builds.iter().enumerate() {
        by_step.entry(b.step).or_default().push((i, b));
    }
    let mut out: Vec<Vec<(usize, &PlannedBuild)>> = Vec::new();
    let mut size = 0;
    for (_, step) in by_step {
        let n: usize = step.iter().map(|(_, b)| b.paths.len()).sum();
        if out.is_empty() || size + n > max.max(1) {
            out.push(Vec::new());
            size = 0;
        }
        size += n;
        if let Some(last) = out.last_mut() {
            last.extend(step);
        }
    }
    out
}

/// The planned paths (of `remaining`) that are live in a fresh snapshot.
fn now_live(settings: &NixSettings, remaining: &[String]) -> Result<HashSet<String>> {
    let snap = Snapshot::take(settings)?;
    Ok(remaining
        .iter()
        .filter(|p| {
            snap.graph
                .index_of(p)
                .is_some_and(|i| snap.live.live[i as usize])
                || p.rsplit('/')
                    .next()
                    .and_then(|b| b.get(..32))
                    .is_some_and(|h| snap.temp_hashes.contains(h))
        })
        .cloned()
        .collect())
}

/// Carries `plan` out, recording it in `ledger`.
pub fn execute(
    ledger: &mut Ledger,
    plan: &Plan,
    settings: &NixSettings,
    opts: &ExecOptions<'_>,
) -> Result<Outcome> {
    let policy = serde_json::to_string(&plan.policy).unwrap_or_else(|_| "{}".into());
    let run = ledger.begin_gc_run(&RunStart {
        trigger: opts.trigger,
        policy: &policy,
        store_dir: &plan.store_dir,
        planned_paths: plan.planned_paths as i64,
        planned_bytes: plan.planned_bytes as i64,
    })?;
    let mut outcome = Outcome {
        run_id: run,
        status: String::new(),
        deleted: Vec::new(),
        deleted_paths: 0,
        freed_bytes: 0,
        cost_to_restore_ms: 0,
        unknown_cost_builds: 0,
        refused: Vec::new(),
        kept_alive: Vec::new(),
        generations_removed: Vec::new(),
        errors: Vec::new(),
    };
    let result = run_plan(ledger, plan, settings, opts, run, &mut outcome);
    let (status, error) = match &result {
        Ok(()) => (RunStatus::Finished, None),
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    if let Some(e) = &error {
        outcome.errors.push(e.clone());
        let pending = ledger.pending_deletions(run)?;
        let skipped: Vec<(&str, DeletionState)> = pending
            .iter()
            .map(|p| (p.as_str(), DeletionState::Skipped))
            .collect();
        ledger.settle_deletions(run, &skipped)?;
    }
    ledger.finish_gc_run(run, status, error.as_deref())?;
    let summary = ledger
        .gc_run(run)?
        .ok_or_else(|| Error::NotFound(format!("gc run {run}")))?;
    outcome.status = summary.status;
    outcome.deleted_paths = summary.deleted_paths;
    outcome.freed_bytes = summary.freed_bytes;
    outcome.cost_to_restore_ms = summary.cost_to_restore_ms;
    outcome.unknown_cost_builds = summary.unknown_cost_builds;
    Ok(outcome)
}

fn run_plan(
    ledger: &mut Ledger,
    plan: &Plan,
    settings: &NixSettings,
    opts: &ExecOptions<'_>,
    run: i64,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut by_profile: BTreeMap<&str, Vec<&GenerationRemoval>> = BTreeMap::new();
    for g in &plan.generations {
        by_profile.entry(&g.profile).or_default().push(g);
    }
    let mut revalidate = opts.revalidate;
    for (profile, gens) in by_profile {
        let numbers: Vec<u64> = gens.iter().map(|g| g.generation).collect();
        let removed = match profiles::delete(Path::new(profile), &numbers) {
            Ok(()) => Some(now_ms()),
            Err(e) => {
                outcome
                    .errors
                    .push(format!("{profile}: generations not removed: {e}"));
                revalidate = true;
                None
            }
        };
        for g in gens {
            ledger.record_generation(run, profile, g.generation, &g.path, g.made_ms, removed)?;
            if removed.is_some() {
                outcome.generations_removed.push(g.clone());
            }
        }
    }

    let all_paths: Vec<String> = plan
        .builds
        .iter()
        .flat_map(|b| b.paths.iter().map(|p| p.path.clone()))
        .collect();
    let mut dropped: HashSet<String> = if revalidate && !all_paths.is_empty() {
        now_live(settings, &all_paths)?
    } else {
        HashSet::new()
    };
    let db = StoreDb::open_default()?;
    for (batch_no, batch) in batches(&plan.builds, opts.batch_paths)
        .into_iter()
        .enumerate()
    {
        let mut rows = Vec::new();
        for (unit, build) in &batch {
            for p in &build.paths {
                rows.push(PlannedDeletion {
                    path: &p.path,
                    unit: *unit as i64,
                    nar_size: p.bytes as i64,
                    unit_cost_ms: build.cost_to_restore_ms,
                    cost_basis: build.cost_basis.as_str(),
                    reason: &build.why,
                });
            }
        }
        ledger.queue_batch(run, batch_no as i64 + 1, &rows)?;
        let mut todo: Vec<&str> = rows.iter().map(|r| r.path).collect();
        for attempt in 0..=MAX_RETRIES {
            let (kept, rest): (Vec<&str>, Vec<&str>) =
                todo.iter().partition(|p| dropped.contains(**p));
            if !kept.is_empty() {
                let updates: Vec<(&str, DeletionState)> =
                    kept.iter().map(|p| (*p, DeletionState::Kept)).collect();
                ledger.settle_deletions(run, &updates)?;
                outcome
                    .kept_alive
                    .extend(kept.iter().map(|p| p.to_string()));
            }
            todo = rest;
            if todo.is_empty() {
                break;
            }
            let said = delete::delete(&todo)?;
            let gone = gone(&db, &todo)?;
            let updates: Vec<(&str, DeletionState)> = todo
                .iter()
                .filter(|p| gone.contains(**p))
                .map(|p| (*p, DeletionState::Deleted))
                .collect();
            ledger.settle_deletions(run, &updates)?;
            outcome
                .deleted
                .extend(updates.iter().map(|(p, _)| p.to_string()));
            todo.retain(|p| !gone.contains(*p));
            if todo.is_empty() {
                break;
            }
            if let Some(error) = said.error {
                return Err(Error::Command {
                    program: "nix-store --delete".into(),
                    message: error,
                });
            }
            // What is still planned: neither deleted (in any batch) nor dropped.
            let deleted: HashSet<&str> = outcome.deleted.iter().map(String::as_str).collect();
            let remaining: Vec<String> = all_paths
                .iter()
                .filter(|p| !deleted.contains(p.as_str()) && !dropped.contains(*p))
                .cloned()
                .collect();
            let live = now_live(settings, &remaining)?;
            if let Some(refused) = said
                .refused
                .as_deref()
                .and_then(|r| todo.iter().find(|p| **p == r))
            {
                let reason = if live.contains(*refused) {
                    "became live after the plan was made (a new root or a running build)"
                } else {
                    "still kept by a path outside the plan"
                };
                ledger.settle_deletions(run, &[(refused, DeletionState::Refused)])?;
                outcome.refused.push(Refusal {
                    path: refused.to_string(),
                    reason: reason.into(),
                });
                dropped.insert(refused.to_string());
            }
            dropped.extend(live);
            if attempt == MAX_RETRIES {
                let updates: Vec<(&str, DeletionState)> =
                    todo.iter().map(|p| (*p, DeletionState::Skipped)).collect();
                ledger.settle_deletions(run, &updates)?;
                outcome
                    .errors
                    .push(format!("gave up on {} paths Nix kept refusing", todo.len()));
            }
        }
    }
    Ok(())
}
