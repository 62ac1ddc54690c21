//! The sweep: simulate every candidate `(max-jobs, cores)` on every workload, flag the
//! ones with an OOM risk, rank the rest by predicted makespan, and compare the pick with
//! the usual settings.
//!
//! Several workloads (the last sessions) are ranked together: a candidate's makespan is
//! the sum of its makespans on each, so that long builds weigh as much as they cost, and
//! it is risky if it is risky on any. The pick is the fastest safe candidate, where
//! makespans within `tie_tolerance` of it count as equal and the tie goes to fewer jobs,
//! then fewer workers (an explicit core count before 0): fewer builds at once use less
//! memory and disturb the desktop less, for no predicted loss.

use serde::{Deserialize, Serialize};

use super::critical::{whole, CriticalPath};
use super::error::TuneError;
use super::grid::{Candidate, Grid, Outcome, SweepConfig};
use super::model::workers;
use super::oom::{OomChecker, OomVerdict};
use super::workload::Workload;

/// One workload to rank on, and which of its jobs' profiles are estimates.
pub struct Input<'a> {
    pub workload: &'a Workload,
    pub estimated: &'a [bool],
}

/// One candidate's predicted outcome over all workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub candidate: Candidate,
    /// Sum over the workloads.
    pub makespan_ms: f64,
    /// Peak memory of the simulated order (not the worst case: see `oom`).
    pub peak_rss_bytes: u64,
    pub cpu_utilisation: f64,
    /// `None` when no memory budget was given; else the worst verdict over workloads.
    pub oom: Option<OomVerdict>,
    /// The workload `oom` is about (index into the inputs).
    pub oom_workload: usize,
}

impl Evaluated {
    /// Safe when no budget was given or the OOM check proved it fits.
    pub fn is_safe(&self) -> bool {
        self.oom.as_ref().is_none_or(OomVerdict::is_safe)
    }
}

/// A setting to compare the pick with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub label: String,
    pub evaluated: Evaluated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    High,
    Medium,
    Low,
}

/// How much of the prediction rests on estimates rather than on measurements of the
/// same derivation names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    pub estimated_jobs: usize,
    pub total_jobs: usize,
    /// Share of the workloads' build time (alone, at the pick's cores) in estimated jobs.
    pub estimated_share: f64,
    /// High: ≤ 10% estimated; medium: ≤ 30%; low: more.
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The pick; `None` when no candidate is safe (a single build exceeds the budget).
    pub best: Option<Evaluated>,
    /// Every candidate, fastest first (risky ones included, flagged by `oom`).
    pub ranked: Vec<Evaluated>,
    /// The settings asked to compare with, in the order asked.
    pub baselines: Vec<Baseline>,
    /// The longest of the workloads' critical paths at the pick's cores (or cores 0):
    /// which workload, and the path.
    pub critical_path: (usize, CriticalPath),
    pub confidence: Confidence,
}

/// Runs the sweep over `inputs` and evaluates `baselines` (label, setting) beside it.
pub fn sweep(
    inputs: &[Input<'_>],
    cfg: &SweepConfig,
    baselines: &[(String, Candidate)],
) -> Result<Recommendation, TuneError> {
    if cfg.host_cores == 0 {
        return Err(TuneError::InvalidSetting(
            "host cores must be at least 1".into(),
        ));
    }
    if !(cfg.tie_tolerance.is_finite() && cfg.tie_tolerance >= 0.0) {
        return Err(TuneError::InvalidSetting(
            "the tie tolerance must be finite and at least 0".into(),
        ));
    }
    let candidates = cfg.candidates();
    let kmax = baselines
        .iter()
        .map(|(_, c)| c.max_jobs)
        .chain(candidates.iter().map(|c| c.max_jobs))
        .max()
        .unwrap_or(1) as usize;
    let mut per_workload = Vec::with_capacity(inputs.len());
    for input in inputs {
        let grid = Grid::simulate(input.workload, cfg, &candidates)?;
        let checker = cfg.memory_budget_bytes.map(|budget| {
            let rss = input
                .workload
                .jobs()
                .iter()
                .map(|j| j.profile.peak_rss_bytes)
                .collect();
            (OomChecker::new(input.workload, rss, kmax), budget)
        });
        per_workload.push(Scored {
            grid,
            checker,
            verdicts: Default::default(),
        });
    }
    let mut evaluate = |c: Candidate| -> Result<Evaluated, TuneError> {
        combine(c, cfg.host_cores, &mut per_workload)
    };
    let mut ranked = Vec::with_capacity(candidates.len());
    for c in candidates {
        ranked.push(evaluate(c)?);
    }
    let tie_key = |e: &Evaluated| {
        let c = e.candidate;
        (c.max_jobs, workers(c.cores, cfg.host_cores), c.cores == 0)
    };
    ranked.sort_by(|a, b| {
        a.makespan_ms
            .total_cmp(&b.makespan_ms)
            .then(tie_key(a).cmp(&tie_key(b)))
    });
    let fastest_safe = ranked.iter().find(|e| e.is_safe()).map(|e| e.makespan_ms);
    let best = fastest_safe.and_then(|f| {
        ranked
            .iter()
            .filter(|e| e.is_safe() && e.makespan_ms <= f * (1.0 + cfg.tie_tolerance))
            .min_by_key(|e| tie_key(e))
            .cloned()
    });
    let mut evaluated_baselines = Vec::with_capacity(baselines.len());
    for (label, c) in baselines {
        evaluated_baselines.push(Baseline {
            label: label.clone(),
            evaluated: evaluate(*c)?,
        });
    }
    let cp_cores = best.as_ref().map(|b| b.candidate.cores).unwrap_or(0);
    let critical_path = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let p = cfg.params(Candidate {
                max_jobs: 1,
                cores: cp_cores,
            });
            (i, whole(input.workload, &p))
        })
        .max_by(|a, b| a.1.length_ms.total_cmp(&b.1.length_ms))
        .unwrap_or((
            0,
            CriticalPath {
                jobs: Vec::new(),
                length_ms: 0.0,
            },
        ));
    Ok(Recommendation {
        best,
        ranked,
        baselines: evaluated_baselines,
        critical_path,
        confidence: confidence(inputs, cp_cores, cfg.host_cores),
    })
}

/// One workload's simulations and OOM verdicts (cached per `max_jobs`).
struct Scored<'w> {
    grid: Grid<'w>,
    checker: Option<(OomChecker, u64)>,
    verdicts: std::collections::HashMap<u32, OomVerdict>,
}

/// A candidate over all workloads: makespans and CPU summed, peaks maximal, the worst
/// OOM verdict.
fn combine(
    c: Candidate,
    host_cores: u32,
    scored: &mut [Scored<'_>],
) -> Result<Evaluated, TuneError> {
    let mut total = Outcome {
        makespan_ms: 0.0,
        peak_rss_bytes: 0,
        cpu_ms: 0.0,
        peak_running: 0,
    };
    let mut oom: Option<OomVerdict> = None;
    let mut oom_workload = 0;
    for (i, s) in scored.iter_mut().enumerate() {
        let o = s.grid.outcome(c)?;
        total.makespan_ms += o.makespan_ms;
        total.cpu_ms += o.cpu_ms;
        total.peak_rss_bytes = total.peak_rss_bytes.max(o.peak_rss_bytes);
        if let Some((checker, budget)) = &s.checker {
            let v = s
                .verdicts
                .entry(c.max_jobs)
                .or_insert_with(|| checker.verdict(c.max_jobs as usize, *budget))
                .clone();
            if worse(&v, oom.as_ref()) {
                oom = Some(v);
                oom_workload = i;
            }
        }
    }
    let span = total.makespan_ms.max(1e-9) * f64::from(host_cores.max(1));
    Ok(Evaluated {
        candidate: c,
        makespan_ms: total.makespan_ms,
        peak_rss_bytes: total.peak_rss_bytes,
        cpu_utilisation: total.cpu_ms / span,
        oom,
        oom_workload,
    })
}

/// Whether verdict `v` should replace `than` as a candidate's verdict: unsafe beats
/// safe, and between equals the larger memory.
fn worse(v: &OomVerdict, than: Option<&OomVerdict>) -> bool {
    match than {
        None => true,
        Some(t) => match (v.is_safe(), t.is_safe()) {
            (false, true) => true,
            (true, false) => false,
            _ => v.worst_bytes() > t.worst_bytes(),
        },
    }
}

fn confidence(inputs: &[Input<'_>], cores: u32, host: u32) -> Confidence {
    let (mut total, mut est) = (0.0, 0.0);
    let (mut estimated_jobs, mut total_jobs) = (0, 0);
    for input in inputs {
        for (i, j) in input.workload.jobs().iter().enumerate() {
            let d = j.profile.duration_ms(cores, host);
            total += d;
            total_jobs += 1;
            if input.estimated.get(i).copied().unwrap_or(true) {
                est += d;
                estimated_jobs += 1;
            }
        }
    }
    let share = if total > 0.0 {
        est / total
    } else if estimated_jobs > 0 {
        1.0
    } else {
        0.0
    };
    let level = if share <= 0.1 {
        Level::High
    } else if share <= 0.3 {
        Level::Medium
    } else {
        Level::Low
    };
    Confidence {
        estimated_jobs,
        total_jobs,
        estimated_share: share,
        level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::model::Profile;
    use crate::tune::workload::JobSpec;

    fn independent(n: usize, p: Profile) -> Workload {
        Workload::new(
            (0..n)
                .map(|i| JobSpec::new(format!("j{i}"), vec![], p))
                .collect(),
        )
        .unwrap()
    }

    fn run(w: &Workload, cfg: &SweepConfig, estimated: &[bool]) -> Recommendation {
        let nix = vec![
            (
                "nix-default".into(),
                Candidate {
                    max_jobs: 1,
                    cores: 0,
                },
            ),
            (
                "nixos-default".into(),
                Candidate {
                    max_jobs: cfg.host_cores,
                    cores: 0,
                },
            ),
        ];
        sweep(
            &[Input {
                workload: w,
                estimated,
            }],
            cfg,
            &nix,
        )
        .unwrap()
    }

    #[test]
    fn sleep_bound_work_wants_many_jobs() {
        let w = independent(8, Profile::new(1000.0, 0.0, 0.0, 0));
        let b = run(&w, &SweepConfig::new(2), &[false; 8]).best.unwrap();
        assert_eq!(b.candidate.max_jobs, 8);
        assert_eq!(b.candidate.cores, 1, "a tie on cores goes to fewer");
        assert!((b.makespan_ms - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn cpu_bound_serial_work_ties_go_to_fewer_jobs() {
        let w = independent(4, Profile::new(0.0, 1000.0, 0.0, 0));
        let b = run(&w, &SweepConfig::new(2), &[false; 4]).best.unwrap();
        assert_eq!(
            b.candidate,
            Candidate {
                max_jobs: 2,
                cores: 1
            }
        );
    }

    #[test]
    fn a_memory_budget_excludes_risky_settings() {
        let w = independent(4, Profile::new(1000.0, 0.0, 0.0, 600));
        let mut cfg = SweepConfig::new(2);
        cfg.memory_budget_bytes = Some(1300);
        let r = run(&w, &cfg, &[false; 4]);
        assert_eq!(r.best.unwrap().candidate.max_jobs, 2);
        let risky = |e: &Evaluated| !e.is_safe();
        assert!(r
            .ranked
            .iter()
            .filter(|e| e.candidate.max_jobs >= 3)
            .all(risky));
        let nixos = r
            .baselines
            .iter()
            .find(|b| b.label == "nixos-default")
            .unwrap();
        assert!(nixos.evaluated.is_safe());
    }

    #[test]
    fn no_safe_setting_means_no_pick() {
        let w = independent(1, Profile::new(1000.0, 0.0, 0.0, 5000));
        let mut cfg = SweepConfig::new(2);
        cfg.memory_budget_bytes = Some(1000);
        assert!(run(&w, &cfg, &[false]).best.is_none());
    }

    #[test]
    fn confidence_counts_estimates() {
        let w = independent(4, Profile::new(1000.0, 0.0, 0.0, 0));
        let r = run(&w, &SweepConfig::new(2), &[true, false, false, false]);
        assert_eq!(r.confidence.estimated_jobs, 1);
        assert!((r.confidence.estimated_share - 0.25).abs() < 1e-9);
        assert_eq!(r.confidence.level, Level::Medium);
    }

    #[test]
    fn workloads_are_summed_and_the_riskiest_verdict_wins() {
        let light = independent(4, Profile::new(1000.0, 0.0, 0.0, 100));
        let heavy = independent(2, Profile::new(500.0, 0.0, 0.0, 900));
        let mut cfg = SweepConfig::new(2);
        cfg.memory_budget_bytes = Some(1000);
        let both = [
            Input {
                workload: &light,
                estimated: &[false; 4],
            },
            Input {
                workload: &heavy,
                estimated: &[false; 2],
            },
        ];
        let r = sweep(&both, &cfg, &[]).unwrap();
        let best = r.best.unwrap();
        // Two heavy builds at once do not fit: one job at a time, 4 s + 1 s.
        assert_eq!(best.candidate.max_jobs, 1);
        assert!((best.makespan_ms - 5000.0).abs() < 1e-6);
        let two = r.ranked.iter().find(|e| e.candidate.max_jobs == 2).unwrap();
        assert!(!two.is_safe() && two.oom_workload == 1);
        assert_eq!(r.confidence.total_jobs, 6);
    }
}
