//! Garbage collection in the report: the period's GC runs by nix-ledger, and the
//! retention policy's advice when what is in effect would delete costly builds.
//!
//! Both come from the ledger alone: the report never reads the store or asks Nix for
//! its roots (that is `nb store`'s job, and it takes seconds on a large store), nor asks
//! a binary cache anything. What a cache has is what it answered when `nb gc` last asked.

use serde::Serialize;

use super::advice::Advice;
use crate::gc::policy::Policy;
use crate::ledger::rebuild_costs::{CostlyBuilds, RebuildsDeleted};
use crate::ledger::retention::GcRunSummary;
use crate::ledger::Ledger;
use crate::time::human_duration_ms;
use crate::Result;

/// Runs listed one by one (the newest); the totals count every run read.
pub const LISTED: usize = 10;
/// At most this many runs of a period are read (a daily job makes 30 a month).
const READ: usize = 1_000;
/// The threshold the advice proposes: the one `nb store` prices and the module's
/// documentation shows. A build that took longer is what a blind collection should not
/// throw away when no cache has it.
pub const KEEP_COSTLIER_THAN_MS: i64 = 600_000;

/// The period's GC runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcRuns {
    pub count: usize,
    pub deleted_builds: i64,
    pub deleted_paths: i64,
    pub freed_bytes: i64,
    pub cost_to_restore_ms: i64,
    pub unknown_cost_builds: i64,
    pub refused_paths: i64,
    /// The newest [`LISTED`], newest first.
    pub runs: Vec<GcRun>,
}

/// One run, with its policy as the command that would repeat it.
#[derive(Debug, Clone, Serialize)]
pub struct GcRun {
    #[serde(flatten)]
    pub run: GcRunSummary,
    /// `nb gc …`; `None` when the recorded policy cannot be read.
    pub command: Option<String>,
}

/// The policy a run applied, as a command.
fn command(run: &GcRunSummary) -> Option<String> {
    let policy: Policy = serde_json::from_value(run.policy.clone()).ok()?;
    Some(format!("nb {}", policy.describe()))
}

/// The GC runs started since `since_ms`.
pub fn gc_runs(ledger: &Ledger, since_ms: i64) -> Result<GcRuns> {
    let all = ledger.gc_runs_since(since_ms, READ)?;
    let mut out = GcRuns {
        count: all.len(),
        ..GcRuns::default()
    };
    for r in &all {
        out.deleted_builds += r.deleted_builds;
        out.deleted_paths += r.deleted_paths;
        out.freed_bytes += r.freed_bytes;
        out.cost_to_restore_ms += r.cost_to_restore_ms;
        out.unknown_cost_builds += r.unknown_cost_builds;
        out.refused_paths += r.refused_paths;
    }
    out.runs = all
        .into_iter()
        .take(LISTED)
        .map(|run| GcRun {
            command: command(&run),
            run,
        })
        .collect();
    Ok(out)
}

/// The retention policy in effect, as the ledger last saw it applied.
#[derive(Debug, Clone, Serialize)]
pub struct InEffect {
    pub run_id: i64,
    /// `maintenance` (the module's retention) or `command` (`nb gc` by hand).
    pub trigger: String,
    pub started_at: String,
    pub command: String,
}

/// The retention policy's numbers behind its advice.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionAdvice {
    pub keep_costlier_than_ms: i64,
    /// `None`: nix-ledger recorded no collection.
    pub in_effect: Option<InEffect>,
    /// The period's builds made here that took at least `keep_costlier_than_ms` and that
    /// no cache is known to have.
    pub costly_builds: CostlyBuilds,
    /// What the run in effect deleted that took that long to build.
    pub deleted_by_last_run: Option<RebuildsDeleted>,
}

/// The retention policy's advice on the period, when what is in effect (nothing recorded,
/// or a recorded policy without `--keep-costlier-than`) would let costly builds go.
pub fn advice(ledger: &Ledger, since_ms: i64) -> Result<Option<Advice>> {
    // The module's job is what stays in effect; a `nb gc` by hand was one collection.
    let last = match ledger.latest_gc_run("maintenance")? {
        Some(run) => Some(run),
        None => ledger.latest_gc_run("command")?,
    };
    let last = last.as_ref();
    let (in_effect, policy) = match last {
        None => (None, Policy::default()),
        Some(run) => {
            // A policy this nix-ledger cannot read is not one to advise against.
            let Ok(policy) = serde_json::from_value::<Policy>(run.policy.clone()) else {
                return Ok(None);
            };
            let effect = InEffect {
                run_id: run.id,
                trigger: run.trigger.clone(),
                started_at: run.started_at.clone(),
                command: format!("nb {}", policy.describe()),
            };
            (Some(effect), policy)
        }
    };
    if policy.keep_costlier_than_ms.is_some() {
        return Ok(None);
    }
    let costly_builds = ledger.costly_local_builds(since_ms, KEEP_COSTLIER_THAN_MS)?;
    let deleted_by_last_run = last
        .map(|r| ledger.rebuilds_deleted(r.id, KEEP_COSTLIER_THAN_MS))
        .transpose()?;
    Ok(retention_advice(RetentionAdvice {
        keep_costlier_than_ms: KEEP_COSTLIER_THAN_MS,
        in_effect,
        costly_builds,
        deleted_by_last_run,
    }))
}

/// The advice the numbers make, if any: nothing when no costly build is at stake.
pub fn retention_advice(numbers: RetentionAdvice) -> Option<Advice> {
    let deleted = numbers.deleted_by_last_run.unwrap_or_default();
    let costly = &numbers.costly_builds;
    if costly.longest.is_none() && deleted.builds == 0 {
        return None;
    }
    let flag = short_duration(numbers.keep_costlier_than_ms);
    let mut reasons = Vec::new();
    match (costly.builds, &costly.longest) {
        (0, _) | (_, None) => {}
        (1, Some((name, ms))) => {
            let mut text = format!(
                "{name} took {} to build here in the period, and no cache is known to have it",
                human_duration_ms(*ms)
            );
            if costly.known_uncached > 0 {
                text.push_str(" (the caches asked said they lack it)");
            }
            reasons.push(text);
        }
        (n, Some((name, ms))) => {
            let mut text = format!(
                "{n} derivations built here in the period took {flag} or more ({} in all; the longest, {name}, {}), and no cache is known to have them",
                human_duration_ms(costly.total_ms),
                human_duration_ms(*ms)
            );
            if costly.known_uncached > 0 {
                text.push_str(&format!(
                    " ({} confirmed missing from the caches asked)",
                    costly.known_uncached
                ));
            }
            reasons.push(text);
        }
    }
    if let (Some(effect), true) = (&numbers.in_effect, deleted.builds > 0) {
        reasons.push(format!(
            "run #{} deleted {} that took {flag} or more to build ({} to rebuild)",
            effect.run_id,
            plural(deleted.builds, "build"),
            human_duration_ms(deleted.cost_ms)
        ));
    }
    let why = format!(
        "{}: a collection blind to cost deletes such builds once nothing refers to them, and only a rebuild gets them back",
        reasons.join("; ")
    );
    let (in_effect, lines) = match &numbers.in_effect {
        None => (
            "none recorded by nix-ledger (nix-collect-garbage and nix.gc.automatic delete regardless of cost)".to_string(),
            vec![
                "# by hand".to_string(),
                format!("nb gc --keep-costlier-than {flag}"),
                "# NixOS / nix-darwin: the maintenance job".to_string(),
                format!(
                    "services.nix-ledger.retention = {{ enable = true; keepCostlierThan = \"{flag}\"; }};"
                ),
            ],
        ),
        Some(effect) => {
            let by_hand = format!("{} --keep-costlier-than {flag}", effect.command);
            let lines = if effect.trigger == "maintenance" {
                vec![
                    "# NixOS / nix-darwin: the maintenance job".to_string(),
                    format!("services.nix-ledger.retention.keepCostlierThan = \"{flag}\";"),
                    "# by hand".to_string(),
                    by_hand,
                ]
            } else {
                vec!["# by hand".to_string(), by_hand]
            };
            (
                format!(
                    "{} ({} run #{}, {})",
                    effect.command,
                    effect.trigger,
                    effect.run_id,
                    effect.started_at.get(..10).unwrap_or(&effect.started_at)
                ),
                lines,
            )
        }
    };
    Some(Advice {
        source: "retention".into(),
        setting: "garbage collection".into(),
        in_effect,
        advised: format!(
            "keep what no cache has and took over {flag} to build (--keep-costlier-than {flag})"
        ),
        why,
        lines,
        tune: None,
        retention: Some(numbers),
    })
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// A duration as `--keep-costlier-than` takes it (`10m`, `1h`, `90s`).
fn short_duration(ms: i64) -> String {
    for (unit, len) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= len && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(in_effect: Option<InEffect>, builds: u64, deleted: u64) -> RetentionAdvice {
        RetentionAdvice {
            keep_costlier_than_ms: KEEP_COSTLIER_THAN_MS,
            in_effect,
            costly_builds: CostlyBuilds {
                builds,
                total_ms: builds as i64 * 1_500_000,
                longest: (builds > 0).then(|| ("chromium-120".to_string(), 2_400_000)),
                known_uncached: 0,
                cached: 0,
            },
            deleted_by_last_run: Some(RebuildsDeleted {
                builds: deleted,
                cost_ms: deleted as i64 * 700_000,
            }),
        }
    }

    #[test]
    fn without_a_recorded_policy_the_advice_cites_the_costly_builds_and_gives_both_ways() {
        let a = retention_advice(numbers(None, 3, 0)).unwrap();
        assert!(
            a.in_effect.starts_with("none recorded by nix-ledger"),
            "{}",
            a.in_effect
        );
        assert_eq!(
            a.why,
            "3 derivations built here in the period took 10m or more (1h15m in all; the longest, chromium-120, 40m00s), and no cache is known to have them: a collection blind to cost deletes such builds once nothing refers to them, and only a rebuild gets them back"
        );
        assert_eq!(
            a.advised,
            "keep what no cache has and took over 10m to build (--keep-costlier-than 10m)"
        );
        assert_eq!(
            a.lines,
            [
                "# by hand",
                "nb gc --keep-costlier-than 10m",
                "# NixOS / nix-darwin: the maintenance job",
                "services.nix-ledger.retention = { enable = true; keepCostlierThan = \"10m\"; };"
            ]
        );
    }

    #[test]
    fn a_recorded_policy_is_extended_and_its_deletions_cited() {
        let effect = InEffect {
            run_id: 7,
            trigger: "maintenance".into(),
            started_at: "2026-11-28T03:00:00.000Z".into(),
            command: "nb gc --keep-generations 3".into(),
        };
        let a = retention_advice(numbers(Some(effect), 0, 2)).unwrap();
        assert_eq!(
            a.in_effect,
            "nb gc --keep-generations 3 (maintenance run #7, 2026-11-28)"
        );
        assert!(
            a.why.starts_with(
                "run #7 deleted 2 builds that took 10m or more to build (23m20s to rebuild)"
            ),
            "{}",
            a.why
        );
        assert_eq!(
            a.lines[1],
            "services.nix-ledger.retention.keepCostlierThan = \"10m\";"
        );
        assert_eq!(
            a.lines[3],
            "nb gc --keep-generations 3 --keep-costlier-than 10m"
        );
        assert!(retention_advice(numbers(None, 0, 0)).is_none());
    }

    #[test]
    fn one_costly_build_is_named() {
        let mut n = numbers(None, 1, 0);
        n.costly_builds.known_uncached = 1;
        let a = retention_advice(n).unwrap();
        assert!(
            a.why.starts_with("chromium-120 took 40m00s to build here in the period, and no cache is known to have it (the caches asked said they lack it): "),
            "{}",
            a.why
        );
    }
}
