//! `nix-ledger rebuilds [--since DURATION]`: the wasted rebuilds of a period. A recorded
//! build is a rebuild when the ledger has an earlier build of a different .drv of the same
//! name; it is listed when it was a no-op (its outputs equal the earlier build's) or
//! avoidable (every root cause between the two .drv files is an avoidable source change),
//! with the time it took.

use serde::Serialize;

use super::verdict::{self, VerdictKind};
use super::{baseline, report, Context};
use crate::ledger::queries::BuiltRow;
use crate::ledger::trends::RememberedVerdict;
use crate::ledger::Ledger;
use crate::nix::graph::Loader;
use crate::time::rfc3339_ms;
use crate::Result;

/// One wasted rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildEntry {
    pub build_id: i64,
    pub drv_path: String,
    pub name: String,
    pub previous_drv: String,
    pub finished_at: String,
    pub duration_ms: Option<i64>,
    pub kind: VerdictKind,
    /// Avoidable: the files that caused it; no-op: what changed in vain.
    pub detail: String,
}

/// The answer of `rebuilds`.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildsReport {
    pub since: String,
    pub entries: Vec<RebuildEntry>,
    pub avoidable: usize,
    pub no_op: usize,
    /// The summed recorded durations of the listed rebuilds.
    pub wasted_ms: i64,
    /// Listed rebuilds without a recorded duration (not in `wasted_ms`).
    pub unknown_durations: usize,
}

/// The avoidable and no-op rebuilds recorded since `since_ms`, oldest first.
pub fn rebuilds(ledger: &Ledger, since_ms: i64) -> Result<RebuildsReport> {
    let candidates = ledger.builds_since(since_ms)?;
    let context = Context::new(ledger);
    let source = context.source();
    let mut loader = Loader::new(&source);
    let mut entries = Vec::new();
    for candidate in candidates {
        if let Some(entry) = judge(ledger, &mut loader, candidate)? {
            entries.push(entry);
        }
    }
    Ok(summed(since_ms, entries))
}

/// [`rebuilds`], judging each build once: verdicts are kept in the ledger, so that a
/// report over a busy period judges only what was built since the last one (judging
/// every build of a month of a million-build ledger takes tens of seconds). A build
/// is judged against the builds recorded before it, which later ones do not change.
/// A ledger that cannot be written is judged afresh.
pub fn remembered(ledger: &mut Ledger, since_ms: i64) -> Result<RebuildsReport> {
    let pending = ledger.unjudged_builds_since(since_ms)?;
    let mut fresh = Vec::new();
    let mut verdicts = Vec::new();
    {
        let context = Context::new(ledger);
        let source = context.source();
        let mut loader = Loader::new(&source);
        for (candidate, enriched) in pending {
            let id = candidate.id;
            let entry = judge(ledger, &mut loader, candidate)?;
            // What enrichment has not seen yet (its outputs' manifests) may still
            // change the verdict: judged again next time.
            if enriched {
                verdicts.push(RememberedVerdict {
                    build_id: id,
                    wasted: entry.as_ref().map(|e| {
                        (
                            e.kind.as_str().to_string(),
                            e.previous_drv.clone(),
                            e.detail.clone(),
                        )
                    }),
                });
            }
            fresh.extend(entry.map(|e| (id, e)));
        }
    }
    let stored = ledger.remember_rebuild_verdicts(&verdicts).is_ok();
    let mut entries: Vec<RebuildEntry> = if stored {
        ledger
            .remembered_rebuilds_since(since_ms)?
            .into_iter()
            .filter_map(|r| {
                let kind = match r.kind.as_str() {
                    "avoidable" => VerdictKind::Avoidable,
                    "no-op" => VerdictKind::NoOp,
                    _ => return None,
                };
                Some(RebuildEntry {
                    build_id: r.build_id,
                    drv_path: r.drv_path,
                    name: r.name,
                    previous_drv: r.previous_drv,
                    finished_at: rfc3339_ms(r.finished_ms),
                    duration_ms: r.duration_ms,
                    kind,
                    detail: r.detail,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    // Those not stored (not enriched yet, or a ledger that cannot be written).
    entries.extend(
        fresh
            .into_iter()
            .filter(|(id, _)| !stored || !verdicts.iter().any(|v| v.build_id == *id))
            .map(|(_, e)| e),
    );
    entries.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then(a.build_id.cmp(&b.build_id))
    });
    Ok(summed(since_ms, entries))
}

/// Whether one build was an avoidable or a no-op rebuild, and how.
fn judge(
    ledger: &Ledger,
    loader: &mut Loader<'_>,
    candidate: BuiltRow,
) -> Result<Option<RebuildEntry>> {
    let (id, drv, name) = (candidate.id, candidate.drv_path, candidate.name);
    let (finished, duration) = (candidate.finished_ms, candidate.duration_ms);
    let Some((old, at)) = baseline(ledger, loader, &name, &drv, Some(finished))? else {
        return Ok(None);
    };
    let new_outputs = ledger.outputs_of_build(id)?;
    let old_outputs = ledger.latest_outputs(&old)?;
    let identical = verdict::outputs_identical(ledger, &new_outputs, &old_outputs)?;
    // Avoidable first, as `why` judges: it comes with advice on what to filter.
    let mut avoidable_files: Option<Vec<String>> = None;
    if loader.get(&drv)?.is_some() && loader.get(&old)?.is_some() {
        let why = report(ledger, loader, &drv, &old, name.clone(), Some(at))?;
        let all_avoidable = !why.root_causes.is_empty()
            && why
                .root_causes
                .iter()
                .all(|c| c.verdict.kind == VerdictKind::Avoidable);
        if all_avoidable {
            avoidable_files = Some(
                why.root_causes
                    .iter()
                    .map(|c| format!("{}: {}", c.name, c.verdict.files.join(", ")))
                    .collect(),
            );
        }
    }
    let (kind, detail) = match avoidable_files {
        Some(files) => (VerdictKind::Avoidable, files.join("; ")),
        None if identical == Some(true) => (
            VerdictKind::NoOp,
            String::from("outputs identical to the previous build's"),
        ),
        None => return Ok(None),
    };
    Ok(Some(RebuildEntry {
        build_id: id,
        drv_path: drv,
        name,
        previous_drv: old,
        finished_at: rfc3339_ms(finished),
        duration_ms: duration,
        kind,
        detail,
    }))
}

/// The report of `entries`, with their counts and summed time.
fn summed(since_ms: i64, entries: Vec<RebuildEntry>) -> RebuildsReport {
    RebuildsReport {
        since: rfc3339_ms(since_ms),
        avoidable: entries
            .iter()
            .filter(|e| e.kind == VerdictKind::Avoidable)
            .count(),
        no_op: entries
            .iter()
            .filter(|e| e.kind == VerdictKind::NoOp)
            .count(),
        wasted_ms: entries.iter().filter_map(|e| e.duration_ms).sum(),
        unknown_durations: entries.iter().filter(|e| e.duration_ms.is_none()).count(),
        entries,
    }
}
