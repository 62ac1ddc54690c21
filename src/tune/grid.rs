//! The sweep's candidates and their simulations, fast. Two shortcuts keep it quick
//! without changing any answer: `cores = 0` and `cores = host` start the same number of
//! workers, so they are simulated once; and once a simulation never had `max-jobs`
//! builds holding a slot at once, a larger `max-jobs` cannot change the schedule, so its
//! result is reused. Distinct workers values run on threads of their own.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::TuneError;
use super::model::workers;
use super::share::CpuShare;
use super::sim::{simulate, SimParams, SimResult};
use super::workload::Workload;

/// A `(max-jobs, cores)` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    pub max_jobs: u32,
    /// 0 = all cores.
    pub cores: u32,
}

/// The machine and what to take into account.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepConfig {
    pub host_cores: u32,
    /// Memory the builds may use together (RAM less what Nix and the rest of the system
    /// need). `None`: no memory check.
    pub memory_budget_bytes: Option<u64>,
    pub hook_ms: f64,
    pub loop_ms_per_build: f64,
    pub startup_ms: f64,
    pub cpu_share: CpuShare,
    pub background_demand: f64,
    pub background_reserved: f64,
    /// Largest `max-jobs` to try; default 4 × host cores. The number of build users is a
    /// limit: beyond it Nix waits `build-poll-interval` for one.
    pub max_jobs_limit: Option<u32>,
    /// Makespans within this fraction of the fastest count as ties.
    pub tie_tolerance: f64,
}

/// Above this many host cores the candidates' `cores` are coarsened to 1, 2, 4, … and
/// the host's: the grid grows as 4·H·(H+1), and a 2,000-derivation sweep on 16 cores
/// took 7.5 s with every value.
pub const FULL_GRID_UP_TO: u32 = 8;

impl SweepConfig {
    pub fn new(host_cores: u32) -> Self {
        SweepConfig {
            host_cores,
            memory_budget_bytes: None,
            hook_ms: 0.0,
            loop_ms_per_build: 0.0,
            startup_ms: 0.0,
            cpu_share: CpuShare::PerBuild,
            background_demand: 0.0,
            background_reserved: 0.0,
            max_jobs_limit: None,
            tie_tolerance: 0.02,
        }
    }

    /// The simulator's parameters for one candidate.
    pub fn params(&self, c: Candidate) -> SimParams {
        SimParams {
            max_jobs: c.max_jobs,
            cores: c.cores,
            host_cores: self.host_cores,
            hook_ms: self.hook_ms,
            loop_ms_per_build: self.loop_ms_per_build,
            startup_ms: self.startup_ms,
            cpu_share: self.cpu_share,
            background_demand: self.background_demand,
            background_reserved: self.background_reserved,
        }
    }

    /// Every candidate: `max-jobs` 1 … 4 × host cores (or the limit), `cores` 0 and
    /// 1 … host cores (coarsened above [`FULL_GRID_UP_TO`]).
    pub fn candidates(&self) -> Vec<Candidate> {
        let h = self.host_cores.max(1);
        let top = self.max_jobs_limit.unwrap_or(4 * h).clamp(1, 4 * h);
        let cores: Vec<u32> = if h <= FULL_GRID_UP_TO {
            (1..=h).collect()
        } else {
            let mut v: Vec<u32> = std::iter::successors(Some(1u32), |c| c.checked_mul(2))
                .take_while(|&c| c < h)
                .collect();
            v.push(h);
            v
        };
        let mut out = Vec::with_capacity((cores.len() + 1) * top as usize);
        for c in std::iter::once(0).chain(cores) {
            for max_jobs in 1..=top {
                out.push(Candidate { max_jobs, cores: c });
            }
        }
        out
    }
}

/// What the ranking needs of one simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub makespan_ms: f64,
    pub peak_rss_bytes: u64,
    pub cpu_ms: f64,
    pub peak_running: u32,
}

impl Outcome {
    fn of(s: &SimResult) -> Self {
        Outcome {
            makespan_ms: s.makespan_ms,
            peak_rss_bytes: s.peak_rss_bytes,
            cpu_ms: s.cpu_ms,
            peak_running: s.peak_running,
        }
    }
}

/// Simulations of one workload, keyed by `(max_jobs, workers)`.
pub struct Grid<'w> {
    w: &'w Workload,
    cfg: SweepConfig,
    results: HashMap<(u32, u32), Outcome>,
}

impl<'w> Grid<'w> {
    /// Simulates every distinct `(max_jobs, workers)` of `candidates`.
    pub fn simulate(
        w: &'w Workload,
        cfg: &SweepConfig,
        candidates: &[Candidate],
    ) -> Result<Grid<'w>, TuneError> {
        let mut groups: Vec<(u32, u32, Vec<u32>)> = Vec::new();
        for c in candidates {
            let wk = workers(c.cores, cfg.host_cores);
            match groups.iter_mut().find(|(k, _, _)| *k == wk) {
                Some((_, _, mjs)) => mjs.push(c.max_jobs),
                None => groups.push((wk, c.cores, vec![c.max_jobs])),
            }
        }
        for (_, _, mjs) in groups.iter_mut() {
            mjs.sort_unstable();
            mjs.dedup();
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, groups.len().max(1));
        let run_group = |(wk, cores, mjs): &(u32, u32, Vec<u32>)| {
            let mut out = Vec::with_capacity(mjs.len());
            let mut saturated: Option<Outcome> = None;
            for &mj in mjs {
                let o = match saturated {
                    Some(o) => o,
                    None => {
                        let p = cfg.params(Candidate {
                            max_jobs: mj,
                            cores: *cores,
                        });
                        let o = Outcome::of(&simulate(w, &p)?);
                        if o.peak_running < mj {
                            saturated = Some(o);
                        }
                        o
                    }
                };
                out.push(((mj, *wk), o));
            }
            Ok::<_, TuneError>(out)
        };
        let mut results = HashMap::new();
        if threads <= 1 {
            for g in &groups {
                results.extend(run_group(g)?);
            }
        } else {
            let chunk = groups.len().div_ceil(threads);
            let parts: Vec<Result<Vec<_>, TuneError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = groups
                    .chunks(chunk)
                    .map(|part| {
                        scope.spawn(move || {
                            let mut v = Vec::new();
                            for g in part {
                                v.extend(run_group(g)?);
                            }
                            Ok(v)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(TuneError::InvalidSetting(
                                "a simulation thread panicked".into(),
                            ))
                        })
                    })
                    .collect()
            });
            for part in parts {
                results.extend(part?);
            }
        }
        Ok(Grid {
            w,
            cfg: *cfg,
            results,
        })
    }

    /// The outcome of `c`, simulated now if the grid does not have it.
    pub fn outcome(&mut self, c: Candidate) -> Result<Outcome, TuneError> {
        let key = (c.max_jobs, workers(c.cores, self.cfg.host_cores));
        if let Some(o) = self.results.get(&key) {
            return Ok(*o);
        }
        let o = Outcome::of(&simulate(self.w, &self.cfg.params(c))?);
        self.results.insert(key, o);
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::model::Profile;
    use crate::tune::workload::JobSpec;

    #[test]
    fn the_candidates_cover_the_grid() {
        let c = SweepConfig::new(2).candidates();
        assert_eq!(c.len(), 8 * 3);
        assert!(c.contains(&Candidate {
            max_jobs: 8,
            cores: 0
        }));
        let mut cfg = SweepConfig::new(2);
        cfg.max_jobs_limit = Some(3);
        assert_eq!(cfg.candidates().len(), 3 * 3);
        // Big hosts: cores 0, 1, 2, 4, 8, 16 and 24.
        let big = SweepConfig::new(24).candidates();
        assert_eq!(big.len(), 96 * 7);
        assert!(big.iter().any(|c| c.cores == 24) && !big.iter().any(|c| c.cores == 3));
    }

    #[test]
    fn reusing_a_run_that_never_filled_its_slots_is_exact() {
        // A chain never runs two builds at once: every max-jobs gives the same result.
        let p = Profile::new(100.0, 100.0, 0.0, 0);
        let jobs = (0..5)
            .map(|i| JobSpec::new(format!("c{i}"), (0..i).rev().take(1).collect(), p))
            .collect();
        let w = Workload::new(jobs).unwrap();
        let cfg = SweepConfig::new(2);
        let candidates = cfg.candidates();
        let mut grid = Grid::simulate(&w, &cfg, &candidates).unwrap();
        for c in candidates {
            let direct = simulate(&w, &cfg.params(c)).unwrap();
            let reused = grid.outcome(c).unwrap();
            assert!((direct.makespan_ms - reused.makespan_ms).abs() < 1e-9);
        }
    }
}
