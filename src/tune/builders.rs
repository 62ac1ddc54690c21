//! `tune` with remote builders: the machines of the `builders` setting (or
//! `--builders`), what the ledger measured of each (speed against this machine, copies
//! and connections per build, how many builds it ran at once), and the settings to use:
//! per machine its max-jobs and speed factor, and this machine's max-jobs and cores,
//! from simulations of Nix 2.8's dispatch ([`super::fleet`]).
//!
//! The search: with every machine at the most slots it is known to take, the best
//! local setting; then per machine the fewest slots (0 included: a builder that gains
//! nothing is better left out) that keep the predicted time within the tie tolerance;
//! then the best local setting again.

use std::collections::HashMap;

use serde::Serialize;

use super::fleet::{Fleet, RemoteMachine, DEFAULT_POLL_INTERVAL_MS};
use super::grid::{Candidate, SweepConfig};
use super::inputs::Knowledge;
use super::model::workers;
use super::oom::{OomChecker, OomVerdict};
use super::sim::simulate_on;
use super::sweep::Input;
use crate::ledger::builders::BuilderStats;
use crate::ledger::Ledger;
use crate::nix::config::NixSettings;
use crate::nix::machines::{host_of, label, parse_builders, MachineSpec};
use crate::{Error, Result};

/// Builds of a name read from the ledger's remote builds, as for local ones.
const REMOTE_PER_NAME: usize = 24;

/// The machines to tune for: `--builders` when given (empty: none), else Nix's
/// `builders` setting.
pub fn configured(settings: &NixSettings, flag: Option<&str>) -> Result<Vec<MachineSpec>> {
    let value = flag.or(settings.builders.as_deref()).unwrap_or("");
    parse_builders(value).map_err(|e| Error::Usage(e.to_string()))
}

/// The ledger's statistics of the builder `spec` names: its exact URI, else the same
/// host with another query string (the one with the most builds).
fn stats_of<'a>(spec: &MachineSpec, stats: &'a [BuilderStats]) -> Option<&'a BuilderStats> {
    let remote = || {
        stats
            .iter()
            .filter_map(|s| s.machine.as_deref().map(|m| (m, s)))
    };
    remote()
        .find(|(m, _)| *m == spec.uri)
        .or_else(|| {
            remote()
                .filter(|(m, _)| host_of(m) == host_of(&spec.uri))
                .max_by_key(|(_, s)| s.builds)
        })
        .map(|(_, s)| s)
}

/// Adds what remote builds tell of `names` never measured here: their durations on the
/// builder times its speed against this machine (1 when unknown), as durations only.
pub fn add_remote_knowledge(
    ledger: &Ledger,
    knowledge: &mut Knowledge,
    names: &[&str],
    stats: &[BuilderStats],
) -> Result<()> {
    let unmeasured: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| knowledge.history.observations(n).is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let speed: HashMap<&str, f64> = stats
        .iter()
        .filter_map(|s| Some((s.machine.as_deref()?, s.speed_vs_local?)))
        // A speed of 0 (rounded from a local median of 0 ms) would make builds free.
        .filter(|(_, speed)| *speed > 0.0)
        .collect();
    for d in ledger.remote_durations_named(&unmeasured, REMOTE_PER_NAME)? {
        let s = speed.get(d.machine.as_str()).copied().unwrap_or(1.0);
        let here = (d.duration_ms.max(0) as f64 * s).round() as u64;
        knowledge.history.add_duration(&d.name, here);
    }
    Ok(())
}

/// One machine of the builders line: what was measured and what to write.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BuilderAdvice {
    pub uri: String,
    /// Recommended slots (the builders line's max-jobs); 0: it gains nothing on these
    /// workloads.
    pub max_jobs: u32,
    /// Recommended speed factor: the measured speed as a whole number (NixOS's option
    /// and Nix before 2.20 take nothing else), scaled so that the slowest builder is 1
    /// when one is slower than this machine.
    pub speed_factor: u32,
    /// How much faster than this machine it built the same derivation names (the median
    /// ratio); `None`: no name was built in both places.
    pub measured_speed: Option<f64>,
    /// The speed simulated: the measured one, or 1 (as fast as this machine).
    pub assumed_speed: f64,
    /// Names the measured speed rests on.
    pub compared_names: u64,
    /// Successful builds the ledger has of it.
    pub builds: u64,
    /// Copies both ways and the connection, per build (mean); `None`: never used.
    pub transfer_ms_per_build: Option<u64>,
    pub current_max_jobs: u32,
    pub current_speed_factor: f64,
    /// The most slots the search tried: its max-jobs now, or the most builds it was
    /// seen running at once, whichever is more.
    pub slots_considered: u32,
    /// Most of its builds the ledger saw at once.
    pub peak_concurrent_builds: u32,
    /// Builds of the workloads it takes in the recommended setting's simulation.
    pub predicted_builds: u32,
    /// False when it cannot take this machine's builds (another system, mandatory
    /// features): kept in the line as it is, not simulated.
    pub takes_builds: bool,
}

/// The recommendation with the builders.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WithBuilders {
    /// This machine's `max-jobs` (0: every build remote) and `cores`.
    pub max_jobs: u32,
    pub cores: u32,
    /// Predicted build time, summed over the workloads.
    pub makespan_ms: u64,
    /// This machine's settings in effect, when known.
    pub current_max_jobs: Option<u32>,
    pub current_cores: Option<u32>,
    /// As configured now (local settings and the builders as given), when known.
    pub current_makespan_ms: Option<u64>,
    /// The local-only recommendation's (`recommended`): what the builders are up against.
    pub local_only_makespan_ms: Option<u64>,
    /// Builds of the workloads it predicts here.
    pub local_builds: u32,
    /// Some order of ready builds could exceed the memory here.
    pub oom_risk: bool,
    /// The `builders` value, the lines for nix.conf and the NixOS / nix-darwin options.
    pub builders_line: String,
    pub nix_conf: String,
    pub nix_build_machines: String,
    /// What the prediction takes for granted.
    pub assumptions: Vec<String>,
}

/// What `tune` needs of the configuration beside the machines.
pub struct Context<'a> {
    pub settings: &'a NixSettings,
    pub cfg: &'a SweepConfig,
    pub inputs: &'a [Input<'a>],
}

/// Per machine and for this one, the settings to use with `specs`.
pub fn recommend(
    ledger: &Ledger,
    specs: &[MachineSpec],
    stats: &[BuilderStats],
    cx: &Context<'_>,
) -> Result<(Vec<BuilderAdvice>, Option<WithBuilders>)> {
    let peaks = ledger.builder_peak_concurrency()?;
    let this_system = cx.settings.system.as_deref().unwrap_or("");
    // This machine's system unknown (`nix show-config` failed): every builder is taken
    // to build for it, and said so.
    let takes = |s: &MachineSpec| {
        s.max_jobs > 0
            && s.mandatory_features.is_empty()
            && (s.systems.is_empty()
                || this_system.is_empty()
                || s.systems.iter().any(|x| x == this_system))
    };
    // Copies per build of the machines never used: the others' mean, else nothing.
    let per_build = |s: &BuilderStats| {
        (s.builds > 0).then(|| (s.upload_ms + s.download_ms, s.connect_ms, s.builds as f64))
    };
    let measured: Vec<(i64, i64, f64)> = stats
        .iter()
        .filter(|s| s.machine.is_some())
        .filter_map(per_build)
        .collect();
    let fallback = {
        let n: f64 = measured.iter().map(|m| m.2).sum();
        let copy: i64 = measured.iter().map(|m| m.0).sum();
        let connect: i64 = measured.iter().map(|m| m.1).sum();
        if n > 0.0 {
            (copy as f64 / n, connect as f64 / n)
        } else {
            (0.0, 0.0)
        }
    };
    let mut advice = Vec::with_capacity(specs.len());
    let mut machines = Vec::new();
    let mut assumptions = vec![
        "a remote build takes what it would take here alone with every core, divided by its builder's speed, plus its copies and connection".to_string(),
        "a builder's cores and memory are unknown: builds on it are taken not to slow each other up to the slots considered (its max-jobs now, or the most it ran at once)".to_string(),
        "derivations' requiredSystemFeatures and preferLocalBuild are not read: every build goes to any machine listing this system".to_string(),
    ];
    if this_system.is_empty() {
        assumptions.push(
            "this machine's system is unknown (nix show-config failed): every builder is taken to build for it".to_string(),
        );
    }
    for spec in specs {
        let st = stats_of(spec, stats);
        let measured_speed = st.and_then(|s| s.speed_vs_local);
        let (copy, connect) = st
            .and_then(per_build)
            .map(|(c, k, n)| (c as f64 / n, k as f64 / n))
            .unwrap_or(fallback);
        let peak = st
            .and_then(|s| s.machine.as_deref())
            .and_then(|m| peaks.get(m).copied())
            .unwrap_or(0);
        let ok = takes(spec);
        let name = label(&spec.uri);
        if ok && measured_speed.is_none() {
            assumptions.push(format!(
                "{name}: speed unknown (no derivation name built both here and there): taken as fast as this machine"
            ));
        }
        if ok && st.and_then(per_build).is_none() {
            assumptions.push(format!(
                "{name}: never used: its copies and connection taken as {:.0} ms per build (the other builders' mean)",
                copy + connect
            ));
        }
        let assumed_speed = measured_speed.filter(|s| *s > 0.0).unwrap_or(1.0);
        advice.push(BuilderAdvice {
            uri: spec.uri.clone(),
            max_jobs: spec.max_jobs,
            // Replaced by the recommended one for machines that take builds; the others'
            // lines keep the user's.
            speed_factor: spec.speed_factor.round().clamp(1.0, f64::from(u32::MAX)) as u32,
            measured_speed,
            assumed_speed,
            compared_names: st.map_or(0, |s| s.compared_names),
            builds: st.map_or(0, |s| s.builds),
            transfer_ms_per_build: st
                .and_then(|s| s.overhead_per_build_ms)
                .map(|v| v.max(0) as u64),
            current_max_jobs: spec.max_jobs,
            current_speed_factor: spec.speed_factor,
            slots_considered: spec.max_jobs.max(peak),
            peak_concurrent_builds: peak,
            predicted_builds: 0,
            takes_builds: ok,
        });
        if ok {
            machines.push((
                advice.len() - 1,
                RemoteMachine {
                    slots: spec.max_jobs.max(peak),
                    speed: assumed_speed,
                    speed_factor: spec.speed_factor,
                    transfer_ms: copy,
                    connect_ms: connect,
                },
            ));
        }
    }
    let factors = whole_speed_factors(&machines.iter().map(|(_, m)| m.speed).collect::<Vec<_>>());
    for ((i, _), f) in machines.iter().zip(&factors) {
        advice[*i].speed_factor = *f;
    }
    if machines.is_empty() {
        return Ok((advice, None));
    }
    let fleet = Fleet {
        machines: machines.iter().map(|(_, m)| *m).collect(),
        poll_interval_ms: cx
            .settings
            .build_poll_interval
            .map_or(DEFAULT_POLL_INTERVAL_MS, |s| s.max(0) as f64 * 1000.0),
        whole_speed_factors: whole_numbers_only(cx.settings.nix_version.as_deref()),
    };
    let mut search = Search::new(cx, fleet);
    // As configured now: the local setting in effect, each machine as given.
    let mut now = search.fleet.clone();
    for ((i, _), m) in machines.iter().zip(now.machines.iter_mut()) {
        m.slots = specs[*i].max_jobs;
        m.speed_factor = specs[*i].speed_factor;
    }
    let current = current_setting(cx.settings);
    let current_makespan = match current {
        // Nix itself refuses `max-jobs = 0` with nowhere else to build.
        Some(c) if c.max_jobs > 0 || now.remote_slots() > 0 => {
            Some(search.evaluate_with(c, &now)?.makespan_ms.round() as u64)
        }
        _ => None,
    };
    // The recommended speed factors from here on.
    for (m, f) in search.fleet.machines.iter_mut().zip(&factors) {
        m.speed_factor = f64::from(*f);
    }
    let caps: Vec<u32> = search.fleet.machines.iter().map(|m| m.slots).collect();
    let first = search.best_local()?;
    // Per machine, the fewest slots within the tolerance of the best: a builder is often
    // shared, and one that gains nothing (0 slots) costs every build sent to it its
    // copies, as Nix sends builds to it before using a free slot here.
    let limit = first.makespan_ms * (1.0 + cx.cfg.tie_tolerance);
    for (k, cap) in caps.iter().enumerate() {
        // Without it, this machine's setting may change: the best local one again.
        // A machine without which no setting is safe here is needed, whatever the time.
        search.fleet.machines[k].slots = 0;
        let without = search.best_local()?;
        if (without.safe || !first.safe) && without.makespan_ms <= limit {
            continue;
        }
        search.fleet.machines[k].slots = *cap;
        for s in 1..*cap {
            search.fleet.machines[k].slots = s;
            if search.evaluate(first.candidate)?.makespan_ms <= limit {
                break;
            }
            search.fleet.machines[k].slots = *cap;
        }
    }
    let best = search.best_local()?;
    for ((i, _), m) in machines.iter().zip(&search.fleet.machines) {
        advice[*i].max_jobs = m.slots;
    }
    for ((i, _), n) in machines.iter().zip(&best.remote_builds) {
        advice[*i].predicted_builds = *n;
    }
    let recommended: Vec<MachineSpec> = specs
        .iter()
        .zip(&advice)
        .map(|(s, a)| {
            let mut s = s.clone();
            if a.takes_builds {
                s.max_jobs = a.max_jobs;
                s.speed_factor = f64::from(a.speed_factor);
            }
            s
        })
        .collect();
    let c = best.candidate;
    let builders_line = recommended
        .iter()
        .map(MachineSpec::builders_line)
        .collect::<Vec<_>>()
        .join(" ; ");
    let nix_build_machines = format!(
        "nix.distributedBuilds = true;\nnix.buildMachines = [\n{}];\nnix.settings = {{ max-jobs = {}; cores = {}; }};\n",
        recommended
            .iter()
            .map(|s| format!("  {}\n", s.nixos_build_machine(this_system)))
            .collect::<String>(),
        c.max_jobs,
        c.cores
    );
    Ok((
        advice,
        Some(WithBuilders {
            max_jobs: c.max_jobs,
            cores: c.cores,
            makespan_ms: best.makespan_ms.round() as u64,
            current_max_jobs: current.map(|c| c.max_jobs),
            current_cores: current.map(|c| c.cores),
            current_makespan_ms: current_makespan,
            local_only_makespan_ms: None,
            local_builds: best.local_builds,
            oom_risk: !best.safe,
            nix_conf: format!(
                "max-jobs = {}\ncores = {}\nbuilders = {builders_line}\n",
                c.max_jobs, c.cores
            ),
            builders_line,
            nix_build_machines,
            assumptions,
        }),
    ))
}

/// One setting's simulation over every workload.
#[derive(Debug, Clone)]
struct Evaluation {
    candidate: Candidate,
    makespan_ms: f64,
    safe: bool,
    local_builds: u32,
    remote_builds: Vec<u32>,
}

/// The simulations of the search, with the OOM check of each local max-jobs (remote
/// builds use no memory here, so any set of at most max-jobs builds that can run at once
/// here is still what must fit).
struct Search<'a> {
    cx: &'a Context<'a>,
    fleet: Fleet,
    checkers: Vec<OomChecker>,
    safe: HashMap<u32, bool>,
}

impl<'a> Search<'a> {
    fn new(cx: &'a Context<'a>, fleet: Fleet) -> Search<'a> {
        let kmax = cx
            .cfg
            .candidates()
            .iter()
            .map(|c| c.max_jobs)
            .chain(current_setting(cx.settings).map(|c| c.max_jobs))
            .max()
            .unwrap_or(1) as usize;
        let checkers = match cx.cfg.memory_budget_bytes {
            Some(_) => cx
                .inputs
                .iter()
                .map(|i| {
                    let rss = i
                        .workload
                        .jobs()
                        .iter()
                        .map(|j| j.profile.peak_rss_bytes)
                        .collect();
                    OomChecker::new(i.workload, rss, kmax)
                })
                .collect(),
            None => Vec::new(),
        };
        Search {
            cx,
            fleet,
            checkers,
            safe: HashMap::new(),
        }
    }

    fn is_safe(&mut self, k: u32) -> bool {
        let Some(budget) = self.cx.cfg.memory_budget_bytes else {
            return true;
        };
        let checkers = &self.checkers;
        *self.safe.entry(k).or_insert_with(|| {
            checkers
                .iter()
                .all(|c| matches!(c.verdict(k as usize, budget), OomVerdict::Safe { .. }))
        })
    }

    fn evaluate(&mut self, c: Candidate) -> Result<Evaluation> {
        let fleet = self.fleet.clone();
        self.evaluate_with(c, &fleet)
    }

    fn evaluate_with(&mut self, c: Candidate, fleet: &Fleet) -> Result<Evaluation> {
        let p = self.cx.cfg.params(c);
        let mut e = Evaluation {
            candidate: c,
            makespan_ms: 0.0,
            safe: self.is_safe(c.max_jobs),
            local_builds: 0,
            remote_builds: vec![0; fleet.machines.len()],
        };
        for input in self.cx.inputs {
            let r = simulate_on(input.workload, &p, fleet).map_err(|e| e.into_error())?;
            e.makespan_ms += r.makespan_ms;
            let remote: u32 = r.remote_builds.iter().sum();
            e.local_builds += (input.workload.len() as u32).saturating_sub(remote);
            for (sum, n) in e.remote_builds.iter_mut().zip(&r.remote_builds) {
                *sum += n;
            }
        }
        Ok(e)
    }

    /// The best local setting with the fleet as it stands: the fastest safe one, ties
    /// (within the tolerance) to fewer jobs and workers as in the local sweep, and to
    /// `max-jobs = 0` last: with it a build fails when no builder can be reached. When no
    /// setting is safe (not even one build fits here, and no builder takes them), the
    /// fastest of all, its risk reported.
    fn best_local(&mut self) -> Result<Evaluation> {
        let mut all = Vec::new();
        // `max-jobs = 0` only with somewhere else to build.
        let all_remote = (self.fleet.remote_slots() > 0).then_some(Candidate {
            max_jobs: 0,
            cores: 0,
        });
        for c in all_remote.into_iter().chain(self.cx.cfg.candidates()) {
            all.push(self.evaluate(c)?);
        }
        let host = self.cx.cfg.host_cores;
        let any_safe = all.iter().any(|e| e.safe);
        let fastest = all
            .iter()
            .filter(|e| e.safe || !any_safe)
            .map(|e| e.makespan_ms)
            .fold(f64::INFINITY, f64::min);
        let tie_key = |e: &Evaluation| {
            let c = e.candidate;
            (
                c.max_jobs == 0,
                c.max_jobs,
                workers(c.cores, host),
                c.cores == 0,
            )
        };
        all.into_iter()
            .filter(|e| {
                (e.safe || !any_safe)
                    && e.makespan_ms <= fastest * (1.0 + self.cx.cfg.tie_tolerance)
            })
            .min_by_key(tie_key)
            .ok_or_else(|| Error::Usage("no setting of max-jobs and cores to simulate".into()))
    }
}

/// This machine's `max-jobs` and `cores` in effect, when known (`max-jobs` 0 included).
fn current_setting(settings: &NixSettings) -> Option<Candidate> {
    match (settings.max_jobs, settings.cores) {
        (Some(j), Some(c)) if j >= 0 && c >= 0 => Some(Candidate {
            max_jobs: j.min(i64::from(u32::MAX)) as u32,
            cores: c.min(i64::from(u32::MAX)) as u32,
        }),
        _ => None,
    }
}

/// Speeds against this machine as whole speed factors: rounded, at least 1, scaled up
/// first when a machine is slower than this one so that the slowest is 1 (their ratios
/// are what build-remote uses).
fn whole_speed_factors(speeds: &[f64]) -> Vec<u32> {
    let slowest = speeds.iter().copied().fold(1.0_f64, f64::min).max(1e-3);
    speeds
        .iter()
        .map(|s| (s / slowest).round().clamp(1.0, 1e6) as u32)
        .collect()
}

/// Whether this Nix keeps speed factors as whole numbers (before 2.20); unknown: yes.
fn whole_numbers_only(version: Option<&str>) -> bool {
    let parsed = version.and_then(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    });
    parsed.is_none_or(|v| v < (2, 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_factors_are_whole_numbers_keeping_the_ratios() {
        assert_eq!(whole_speed_factors(&[1.0]), [1]);
        assert_eq!(whole_speed_factors(&[2.4]), [2]);
        assert_eq!(whole_speed_factors(&[0.5]), [1]);
        assert_eq!(whole_speed_factors(&[0.4, 0.9]), [1, 2]);
        assert_eq!(whole_speed_factors(&[1.0, 2.6]), [1, 3]);
        assert_eq!(whole_speed_factors(&[]), Vec::<u32>::new());
    }

    #[test]
    fn nix_reads_fractional_speed_factors_from_2_20() {
        assert!(whole_numbers_only(Some("2.8.0")));
        assert!(whole_numbers_only(Some("2.19.3")));
        assert!(!whole_numbers_only(Some("2.20.0")));
        assert!(!whole_numbers_only(Some("2.24.10")));
        assert!(whole_numbers_only(None));
        assert!(whole_numbers_only(Some("unknown")));
    }
}
