//! What `nix-ledger tune` answers, as data (`--json` prints it as it is; [`super::render`]
//! makes the text): the workloads, the machine, the recommendation against the settings
//! in effect and the usual defaults, every candidate, the OOM risks avoided, the critical
//! path, the confidence, and the lines to put in nix.conf or a NixOS configuration.

use serde::Serialize;

use super::builders::{BuilderAdvice, WithBuilders};
use super::grid::Candidate;
use super::host::Host;
use super::inputs::{Origin, Prepared};
use super::oom::OomVerdict;
use super::sweep::{Confidence, Evaluated, Recommendation};

/// One setting's prediction over the workloads.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Setting {
    pub max_jobs: u32,
    /// 0 = all cores.
    pub cores: u32,
    /// Predicted build time: from the first build's start to the last one's end, summed
    /// over the workloads.
    pub makespan_ms: u64,
    /// Peak memory of the builds running at once in the simulated order.
    pub peak_memory_bytes: u64,
    /// The most memory any order of ready builds could need at once under this setting
    /// (exactly, or a bound).
    pub worst_case_memory_bytes: u64,
    /// Some order of ready builds could exceed the memory budget.
    pub oom_risk: bool,
    /// CPU time used ÷ (makespan × host cores).
    pub cpu_utilisation: f64,
}

impl Setting {
    fn of(e: &Evaluated) -> Setting {
        Setting {
            max_jobs: e.candidate.max_jobs,
            cores: e.candidate.cores,
            makespan_ms: e.makespan_ms.round() as u64,
            peak_memory_bytes: e.peak_rss_bytes,
            worst_case_memory_bytes: e.oom.as_ref().map_or(0, OomVerdict::worst_bytes),
            oom_risk: !e.is_safe(),
            cpu_utilisation: (e.cpu_utilisation * 1000.0).round() / 1000.0,
        }
    }
}

/// A setting from the command line or Nix's configuration, and its prediction.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Labelled {
    pub label: String,
    #[serde(flatten)]
    pub setting: Setting,
}

/// One workload: what it is and how much of it was measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkloadSummary {
    #[serde(flatten)]
    pub origin: Origin,
    pub derivations: usize,
    /// Derivations whose profile was measured on builds of the same name.
    pub measured: usize,
    /// Derivations whose profile is an estimate (a same-named package, durations only,
    /// or the conservative default).
    pub estimated: usize,
    /// Dependency edges between its derivations.
    pub dependencies: usize,
    /// Derivations whose .drv neither the store nor the ledger has: their dependencies
    /// are unknown.
    pub unknown_graph: usize,
}

/// An OOM risk the recommendation avoids: from `max_jobs` on, these builds can run at
/// once and together need more than the budget.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Risk {
    pub max_jobs: u32,
    pub bytes: u64,
    pub derivations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Path {
    pub length_ms: u64,
    pub derivations: Vec<String>,
}

/// Everything `tune` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workloads: Vec<WorkloadSummary>,
    pub host: Host,
    /// `None` when no setting is free of OOM risk (one build alone exceeds the budget).
    pub recommended: Option<Setting>,
    /// The settings in effect (`nix show-config`), when known.
    pub current: Option<Setting>,
    pub nix_default: Setting,
    pub nixos_default: Setting,
    /// Settings asked for with `--compare`.
    pub compared: Vec<Labelled>,
    /// Every candidate, fastest first.
    pub candidates: Vec<Setting>,
    pub oom_risks_avoided: Vec<Risk>,
    /// The longest workload's critical path at the recommended cores: no setting builds
    /// it faster.
    pub critical_path: Path,
    pub confidence: Confidence,
    /// Nix's serial work per build and the post-build hook's, as simulated.
    pub loop_ms_per_build: f64,
    pub hook_ms: f64,
    /// The lines to use, when there is a recommendation.
    pub nix_conf: Option<String>,
    pub nix_settings: Option<String>,
    /// How long the sweep took.
    pub sweep_ms: f64,
    /// The fleet machine tuned for (`--machine`), from its pulled sessions; `None`: this
    /// machine.
    pub machine: Option<String>,
    /// The remote builders tuned for (the `builders` setting or `--builders`), each with
    /// what was measured and the max-jobs and speed factor to give it; empty without.
    pub builders: Vec<BuilderAdvice>,
    /// The setting with the builders: this machine's max-jobs and cores, the predicted
    /// time against the current configuration's, and the lines to use. `None` without a
    /// builder that takes this machine's builds.
    pub with_builders: Option<WithBuilders>,
}

/// The labels of the baselines the sweep is given, in order after the `--compare` ones.
pub const CURRENT: &str = "current";
pub const NIX_DEFAULT: &str = "nix-default";
pub const NIXOS_DEFAULT: &str = "nixos-default";

/// What the simulation settings were, for the report.
pub struct Context<'a> {
    pub prepared: &'a [Prepared],
    pub origins: Vec<Origin>,
    pub host: Host,
    pub loop_ms_per_build: f64,
    pub hook_ms: f64,
    pub sweep_ms: f64,
    pub builders: Vec<BuilderAdvice>,
    pub with_builders: Option<WithBuilders>,
}

/// The report of a sweep.
pub fn build(rec: &Recommendation, cx: Context<'_>) -> Report {
    let name = |w: usize, j: usize| -> String {
        cx.prepared
            .get(w)
            .filter(|p| j < p.workload.len())
            .map(|p| p.workload.job(j).name.clone())
            .unwrap_or_default()
    };
    let baseline = |label: &str| {
        rec.baselines
            .iter()
            .find(|b| b.label == label)
            .map(|b| Setting::of(&b.evaluated))
    };
    let fallback = |max_jobs| Setting {
        max_jobs,
        cores: 0,
        makespan_ms: 0,
        peak_memory_bytes: 0,
        worst_case_memory_bytes: 0,
        oom_risk: false,
        cpu_utilisation: 0.0,
    };
    let compared = rec
        .baselines
        .iter()
        .filter(|b| ![CURRENT, NIX_DEFAULT, NIXOS_DEFAULT].contains(&b.label.as_str()))
        .map(|b| Labelled {
            label: b.label.clone(),
            setting: Setting::of(&b.evaluated),
        })
        .collect();
    // The smallest risky max-jobs: every larger one is risky too.
    let oom_risks_avoided = rec
        .ranked
        .iter()
        .filter_map(|e| match &e.oom {
            Some(OomVerdict::Risky { witness, bytes }) => Some((e, witness.clone(), *bytes)),
            Some(OomVerdict::Unproven { upper_bound_bytes }) => {
                Some((e, Vec::new(), *upper_bound_bytes))
            }
            _ => None,
        })
        .min_by_key(|(e, _, _)| e.candidate.max_jobs)
        .map(|(e, witness, bytes)| Risk {
            max_jobs: e.candidate.max_jobs,
            bytes,
            derivations: witness.iter().map(|&j| name(e.oom_workload, j)).collect(),
        })
        .into_iter()
        .collect();
    let (cp_workload, cp) = &rec.critical_path;
    let recommended = rec.best.as_ref().map(Setting::of);
    let lines = rec.best.as_ref().map(|b| lines(b.candidate));
    Report {
        workloads: cx
            .prepared
            .iter()
            .zip(cx.origins)
            .map(|(p, origin)| {
                let estimated = p.bases.iter().filter(|b| b.is_estimated()).count();
                WorkloadSummary {
                    origin,
                    derivations: p.workload.len(),
                    measured: p.workload.len() - estimated,
                    estimated,
                    dependencies: p.workload.edges(),
                    unknown_graph: p.unknown_graph,
                }
            })
            .collect(),
        host: cx.host,
        recommended,
        current: baseline(CURRENT),
        nix_default: baseline(NIX_DEFAULT).unwrap_or_else(|| fallback(1)),
        nixos_default: baseline(NIXOS_DEFAULT).unwrap_or_else(|| fallback(cx.host.cores)),
        compared,
        candidates: rec.ranked.iter().map(Setting::of).collect(),
        oom_risks_avoided,
        critical_path: Path {
            length_ms: cp.length_ms.round() as u64,
            derivations: cp.jobs.iter().map(|&j| name(*cp_workload, j)).collect(),
        },
        confidence: rec.confidence.clone(),
        loop_ms_per_build: cx.loop_ms_per_build,
        hook_ms: cx.hook_ms,
        nix_conf: lines.as_ref().map(|l| l.0.clone()),
        nix_settings: lines.map(|l| l.1),
        sweep_ms: (cx.sweep_ms * 100.0).round() / 100.0,
        machine: None,
        builders: cx.builders,
        with_builders: cx.with_builders,
    }
}

/// The nix.conf lines and the NixOS / nix-darwin option for a setting.
fn lines(c: Candidate) -> (String, String) {
    (
        format!("max-jobs = {}\ncores = {}\n", c.max_jobs, c.cores),
        format!(
            "nix.settings = {{ max-jobs = {}; cores = {}; }};\n",
            c.max_jobs, c.cores
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_to_use_are_valid_nix_conf_and_nix() {
        let (conf, nix) = lines(Candidate {
            max_jobs: 7,
            cores: 1,
        });
        assert_eq!(conf, "max-jobs = 7\ncores = 1\n");
        assert_eq!(nix, "nix.settings = { max-jobs = 7; cores = 1; };\n");
    }
}
