//! The whole build's ETA while it runs: from the first second, the simulated remaining
//! time under the settings in effect, simulated again from the current state each time
//! builds finish.
//!
//! At the start the ETA is the simulated makespan. Later, the builds that finished tell
//! how far reality runs from the model on this machine today (outside load, a slower
//! CPU): the ratio of the CPU-bound part of their real durations to that of their
//! *simulated* durations (simulated under the same setting, so the contention between
//! builds is already in the denominator; the CPU-bound part is the duration less the
//! profile's idle time, which load does not stretch) scales the CPU work of every build
//! still to run. The ratio starts at 1 with the weight of `prior_jobs` average builds,
//! so that one odd build does not swing the estimate, and is clamped to [0.25, 4].
//!
//! Derivations nothing is known of (the ledger's conservative default: a minute each)
//! would swamp that ratio, and no clamp lets it learn that they take 10 ms: they are left
//! out of it, and once some of them finished, the others are taken to take what those
//! took (their median).
//!
//! Load from outside the build (another compile, a browser) is not left for the ratio
//! to learn slowly: the wrapper measures it, and [`EtaTracker::set_outside_load`]
//! simulates the whole build again with those cores taken, so that the ratio compares
//! like with like and the rest of the build is simulated under the same load.

use serde::{Deserialize, Serialize};

use super::critical::critical_path;
use super::error::TuneError;
use super::model::Profile;
use super::sim::{simulate, simulate_from, JobState, SimParams, SimResult};
use super::workload::Workload;

/// One ETA reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtaEstimate {
    /// Simulated time from now to the end of the whole build.
    pub remaining_ms: f64,
    /// The remaining critical path (a lower bound of `remaining_ms`).
    pub critical_path_ms: f64,
    /// The jobs on it, dependencies first.
    pub critical_jobs: Vec<usize>,
    /// Factor applied to the CPU work of the builds still to run.
    pub correction: f64,
}

/// Keeps the start-of-build simulation to compare finished builds with.
#[derive(Debug, Clone)]
pub struct EtaTracker {
    w: Workload,
    params: SimParams,
    baseline: SimResult,
    /// Jobs whose profile is the default for derivations nothing is known of.
    unknown: Vec<bool>,
    /// Weight of the prior ratio 1, in average builds.
    pub prior_jobs: f64,
}

impl EtaTracker {
    pub fn new(w: Workload, params: SimParams) -> Result<Self, TuneError> {
        let baseline = simulate(&w, &params)?;
        let unknown = vec![false; w.len()];
        Ok(EtaTracker {
            w,
            params,
            baseline,
            unknown,
            prior_jobs: 2.0,
        })
    }

    /// Marks the jobs whose profile is the default for derivations nothing is known of.
    pub fn with_unknown(mut self, unknown: Vec<bool>) -> Self {
        if unknown.len() == self.w.len() {
            self.unknown = unknown;
        }
        self
    }

    fn is_unknown(&self, i: usize) -> bool {
        self.unknown.get(i).copied().unwrap_or(false)
    }

    pub fn workload(&self) -> &Workload {
        &self.w
    }

    /// The outside load, in cores, to simulate with from now on. Moves of less than a
    /// quarter of a core are ignored, so that the start-of-build simulation the finished
    /// builds are compared with is not redone for noise.
    pub fn set_outside_load(&mut self, cores: f64) -> Result<(), TuneError> {
        let host = f64::from(self.params.host_cores);
        // Never all of it: the builds run, however slowly.
        let cores = if cores.is_finite() {
            cores.clamp(0.0, (host - 0.25).max(0.0))
        } else {
            0.0
        };
        if (cores - self.params.background_reserved).abs() < 0.25 {
            return Ok(());
        }
        self.params.background_reserved = cores;
        self.baseline = simulate(&self.w, &self.params)?;
        Ok(())
    }

    /// The ETA before anything ran: the simulated makespan.
    pub fn initial(&self) -> EtaEstimate {
        let p = &self.params;
        let cp = critical_path(&self.w, p, |i| {
            Some(self.w.job(i).profile.duration_ms(p.cores, p.host_cores))
        });
        EtaEstimate {
            remaining_ms: self.baseline.makespan_ms,
            critical_path_ms: cp.length_ms,
            critical_jobs: cp.jobs,
            correction: 1.0,
        }
    }

    /// Job `i`'s duration in the start-of-build simulation less its idle time.
    fn simulated_busy_ms(&self, i: usize) -> Option<f64> {
        let idle = self.w.job(i).profile.idle_ms;
        let t = self.baseline.timings.get(i).copied().flatten()?;
        Some((t.end_ms - t.start_ms - idle).max(0.0))
    }

    /// The ratio of real to simulated durations of the finished builds, shrunk toward 1.
    pub fn correction(&self, finished: &[(usize, f64)]) -> f64 {
        let busy: Vec<f64> = (0..self.w.len())
            .filter(|&i| !self.is_unknown(i))
            .filter_map(|i| self.simulated_busy_ms(i))
            .collect();
        let mean = if busy.is_empty() {
            0.0
        } else {
            busy.iter().sum::<f64>() / busy.len() as f64
        };
        let prior = self.prior_jobs.max(0.0) * mean;
        let (mut real, mut simulated) = (prior, prior);
        for &(i, actual) in finished.iter().filter(|(i, _)| !self.is_unknown(*i)) {
            if let (Some(s), true) = (self.simulated_busy_ms(i), actual.is_finite()) {
                real += (actual.max(0.0) - self.w.job(i).profile.idle_ms).max(0.0);
                simulated += s;
            }
        }
        if simulated <= 0.0 {
            return 1.0;
        }
        (real / simulated).clamp(0.25, 4.0)
    }

    /// Job `i`'s duration in the start-of-build simulation, its CPU-bound part scaled by
    /// the correction `f`.
    fn expected_duration_ms(&self, i: usize, f: f64) -> f64 {
        let idle = self.w.job(i).profile.idle_ms;
        match self.baseline.timings.get(i).copied().flatten() {
            Some(t) => {
                let d = t.end_ms - t.start_ms;
                idle.min(d) + f * (d - idle).max(0.0)
            }
            None => 0.0,
        }
    }

    /// The ETA now. `state[i]` is where job `i` stands; `finished` lists the real
    /// durations of finished builds (job index, ms).
    pub fn update(
        &self,
        state: &[JobState],
        finished: &[(usize, f64)],
    ) -> Result<EtaEstimate, TuneError> {
        if state.len() != self.w.len() {
            return Err(TuneError::InvalidSetting(format!(
                "{} job states for {} jobs",
                state.len(),
                self.w.len()
            )));
        }
        if state.iter().all(|s| matches!(s, JobState::Pending)) {
            return Ok(self.initial());
        }
        let f = self.correction(finished);
        let mut learned: Vec<f64> = finished
            .iter()
            .filter(|(i, d)| self.is_unknown(*i) && d.is_finite())
            .map(|(_, d)| d.max(0.0))
            .collect();
        learned.sort_by(f64::total_cmp);
        let learned = learned.get(learned.len() / 2).copied();
        let w = self.w.with_profiles(|i, p| match learned {
            Some(d) if self.is_unknown(i) => Profile::new(0.0, d, 0.0, p.peak_rss_bytes),
            _ => p.scaled_cpu(f),
        });
        let mut params = self.params;
        params.startup_ms = 0.0;
        let (cores, host) = (params.cores, params.host_cores);
        // A running build's elapsed time is not its progress when builds share the CPU:
        // judge its progress by its expected *simulated* duration (contention included,
        // corrected), and hand the simulator the same fraction of its time alone.
        let state: Vec<JobState> = state
            .iter()
            .enumerate()
            .map(|(i, s)| match *s {
                JobState::Running { elapsed_ms } => {
                    let alone = w.job(i).profile.duration_ms(cores, host);
                    let expected = if self.is_unknown(i) {
                        alone
                    } else {
                        self.expected_duration_ms(i, f).max(alone)
                    };
                    let done = if expected > 0.0 {
                        (elapsed_ms / expected).clamp(0.0, 0.95)
                    } else {
                        0.95
                    };
                    JobState::Running {
                        elapsed_ms: done * alone,
                    }
                }
                other => other,
            })
            .collect();
        let r = simulate_from(&w, &params, &state)?;
        let cp = critical_path(&w, &params, |i| {
            let d = w.job(i).profile.duration_ms(cores, host);
            match state[i] {
                JobState::Done => None,
                JobState::Pending => Some(d),
                JobState::Running { elapsed_ms } => Some((d - elapsed_ms).max(0.1 * elapsed_ms)),
            }
        });
        Ok(EtaEstimate {
            remaining_ms: r.makespan_ms,
            critical_path_ms: cp.length_ms,
            critical_jobs: cp.jobs,
            correction: f,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::model::Profile;
    use crate::tune::workload::JobSpec;

    fn chain(n: usize, ms: f64) -> Workload {
        let jobs = (0..n)
            .map(|i| {
                let deps = if i == 0 { vec![] } else { vec![i - 1] };
                JobSpec::new(format!("c{i}"), deps, Profile::new(0.0, ms, 0.0, 0))
            })
            .collect();
        Workload::new(jobs).unwrap()
    }

    #[test]
    fn at_first_it_is_the_makespan() {
        let t = EtaTracker::new(chain(4, 1000.0), SimParams::new(1, 1, 1)).unwrap();
        let e = t.update(&[JobState::Pending; 4], &[]).unwrap();
        assert!((e.remaining_ms - 4000.0).abs() < 1e-6);
        assert!((e.critical_path_ms - 4000.0).abs() < 1e-6);
    }

    #[test]
    fn halfway_on_the_model() {
        let t = EtaTracker::new(chain(4, 1000.0), SimParams::new(1, 1, 1)).unwrap();
        let st = [
            JobState::Done,
            JobState::Done,
            JobState::Running { elapsed_ms: 500.0 },
            JobState::Pending,
        ];
        let e = t.update(&st, &[(0, 1000.0), (1, 1000.0)]).unwrap();
        assert!((e.correction - 1.0).abs() < 1e-9);
        assert!((e.remaining_ms - 1500.0).abs() < 1e-6, "{}", e.remaining_ms);
        assert_eq!(e.critical_jobs, vec![2, 3]);
    }

    #[test]
    fn a_slow_machine_is_learned() {
        let t = EtaTracker::new(chain(10, 1000.0), SimParams::new(1, 1, 1)).unwrap();
        let mut st = vec![JobState::Done; 6];
        st.extend(vec![JobState::Pending; 4]);
        let fin: Vec<(usize, f64)> = (0..6).map(|i| (i, 2000.0)).collect();
        let e = t.update(&st, &fin).unwrap();
        // (12000 + 2000) / (6000 + 2000) = 1.75
        assert!((e.correction - 1.75).abs() < 1e-9);
        assert!((e.remaining_ms - 7000.0).abs() < 1e-6);
        assert!(t.update(&st[..3], &fin).is_err());
    }

    #[test]
    fn unknown_derivations_take_what_the_finished_unknown_ones_took() {
        // Ten derivations guessed at a minute each; the first two took 10 ms.
        let t = EtaTracker::new(chain(10, 60_000.0), SimParams::new(1, 1, 1))
            .unwrap()
            .with_unknown(vec![true; 10]);
        assert!((t.initial().remaining_ms - 600_000.0).abs() < 1e-6);
        let mut st = vec![JobState::Done; 2];
        st.extend(vec![JobState::Pending; 8]);
        let e = t.update(&st, &[(0, 10.0), (1, 10.0)]).unwrap();
        assert!((e.remaining_ms - 80.0).abs() < 1e-6, "{}", e.remaining_ms);
        assert!(
            (e.correction - 1.0).abs() < 1e-9,
            "not a reason to correct the rest"
        );
    }

    #[test]
    fn outside_load_is_simulated_not_learned() {
        // Two serial builds on 2 cores while another compile takes one: they share the
        // other core, and finishing at that pace is on the model.
        let w = Workload::new(
            (0..2)
                .map(|i| JobSpec::new(format!("s{i}"), vec![], Profile::new(0.0, 1000.0, 0.0, 0)))
                .collect(),
        )
        .unwrap();
        let mut t = EtaTracker::new(w, SimParams::new(2, 1, 2)).unwrap();
        assert!((t.initial().remaining_ms - 1000.0).abs() < 1e-6);
        t.set_outside_load(1.0).unwrap();
        assert!((t.initial().remaining_ms - 2000.0).abs() < 1e-6);
        let st = [JobState::Running { elapsed_ms: 1000.0 }; 2];
        let e = t.update(&st, &[]).unwrap();
        assert!((e.correction - 1.0).abs() < 1e-9);
        assert!((e.remaining_ms - 1000.0).abs() < 1e-6, "{}", e.remaining_ms);
        // Noise does not redo the simulation; the load is capped below the host.
        t.set_outside_load(1.1).unwrap();
        assert!((t.initial().remaining_ms - 2000.0).abs() < 1e-6);
        t.set_outside_load(f64::INFINITY).unwrap();
        assert!((t.initial().remaining_ms - 1000.0).abs() < 1e-6);
    }
}
