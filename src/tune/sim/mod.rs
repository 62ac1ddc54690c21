//! An event-driven simulation of Nix's build loop (`Worker::run`, Nix 2.8) running a
//! workload under one setting.
//!
//! What is modelled, and where it comes from in Nix 2.8's source:
//!
//! * **Slots.** At most `max_jobs` builds hold a slot (`Worker::nrLocalBuilds`). A slot
//!   is held from `startBuilder` until the loop handles the build's end (`buildDone` →
//!   `childTerminated`), not merely until the builder exits: a build that ends while the
//!   loop is busy (running a hook) keeps its slot until the loop gets to it.
//! * **Order of ready builds.** The loop works every awake goal in the order of
//!   `Goal::key()`: `"b$" + <drv name> + "$" + <drv path>` for derivations, i.e.
//!   alphabetically by name. When a slot frees, every goal in `wantingToBuild` is woken
//!   and retries (two passes), while a goal whose last input just finished needs three;
//!   so free slots go first to the goals already waiting, by name, then to the newly
//!   ready ones, by name. At startup goals are created breadth-first from the targets:
//!   the initial order is (depth below the targets, name).
//! * **The loop's serial work.** `buildDone` runs the post-build hook synchronously (up
//!   to Nix 2.34) and registers outputs; meanwhile no build starts and no other end is
//!   handled. Ends that arrive together are handled in one pass; the goals they wake
//!   start after it. Modelled as `hook_ms + loop_ms_per_build` of loop time per build.
//! * **CPU.** A running build is in one of its phases (serial CPU: 1 thread; parallel
//!   CPU: `workers(cores)` threads; idle: none); when they want more than the host has,
//!   cores are shared by [`super::share::allocate`]. Idle time is not slowed by load.
//!   Outside load: `background_reserved` takes cores off the top,
//!   `background_demand` adds one more competing group.
//! * **Memory.** The sum of the peak RSS of the builds running at once (peaks taken to
//!   coincide, which over-estimates).
//!
//! * **Remote builders** ([`simulate_on`] with a [`Fleet`]): each ready build is offered
//!   to build-remote first and goes to the machine it would choose; the loop waits while
//!   it connects; a build neither a machine nor a local slot takes waits for
//!   `build-poll-interval` (see [`super::fleet`]). Remote builds use no CPU or memory
//!   here.
//!
//! Not modelled: substitutions (in 2.8–2.15 they take build slots too),
//! `build-poll-interval` waits when build users run out, failures.

mod engine;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use super::error::TuneError;
use super::fleet::Fleet;
use super::share::CpuShare;
use super::workload::Workload;

/// The setting and machine to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimParams {
    /// Nix's `max-jobs` (≥ 1).
    pub max_jobs: u32,
    /// Nix's `cores`; 0 = all cores of the host.
    pub cores: u32,
    /// Cores of the host (≥ 1).
    pub host_cores: u32,
    /// Duration of the post-build hook, run serially on Nix's loop (up to Nix 2.34).
    pub hook_ms: f64,
    /// Nix's own serial work per build on its loop (output registration, starting the
    /// builder): a few ms.
    pub loop_ms_per_build: f64,
    /// From the start of the build to the first builder (0: time counts from there).
    pub startup_ms: f64,
    pub cpu_share: CpuShare,
    /// Cores' worth of outside demand competing for the CPU as one more group.
    pub background_demand: f64,
    /// Cores' worth of CPU taken by outside work whatever the builds want: the builds
    /// share `host_cores − reserved`.
    pub background_reserved: f64,
}

impl SimParams {
    /// A setting with no hook, no loop cost, no outside load.
    pub fn new(max_jobs: u32, cores: u32, host_cores: u32) -> Self {
        SimParams {
            max_jobs,
            cores,
            host_cores,
            hook_ms: 0.0,
            loop_ms_per_build: 0.0,
            startup_ms: 0.0,
            cpu_share: CpuShare::PerBuild,
            background_demand: 0.0,
            background_reserved: 0.0,
        }
    }

    /// Rejects a setting that cannot be simulated; `max-jobs` 0 only with `remote_slots`.
    fn check(&self, remote_slots: u32) -> Result<(), TuneError> {
        if self.max_jobs == 0 && remote_slots == 0 {
            return Err(TuneError::InvalidSetting(
                "max-jobs 0 with no remote builder slots builds nothing".into(),
            ));
        }
        if self.host_cores == 0 {
            return Err(TuneError::InvalidSetting(
                "host cores must be at least 1".into(),
            ));
        }
        for (what, v) in [
            ("hook_ms", self.hook_ms),
            ("loop_ms_per_build", self.loop_ms_per_build),
            ("startup_ms", self.startup_ms),
            ("background_demand", self.background_demand),
            ("background_reserved", self.background_reserved),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TuneError::InvalidSetting(format!(
                    "{what} must be finite and at least 0, not {v}"
                )));
            }
        }
        Ok(())
    }
}

/// Where a job stands when a simulation starts (all `Pending` for a whole build; the ETA
/// resumes from the middle of one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    /// Started `elapsed_ms` ago.
    Running {
        elapsed_ms: f64,
    },
    Done,
}

/// When a job became ready, started, ended and was handled by the loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JobTiming {
    pub ready_ms: f64,
    pub start_ms: f64,
    /// The builder exited.
    pub end_ms: f64,
    /// The loop handled the end (hook run); dependents are ready from here.
    pub done_ms: f64,
}

/// The outcome of one simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimResult {
    /// When the last job was done (the whole build's wall time).
    pub makespan_ms: f64,
    /// Largest sum of the peak RSS of builds running at once.
    pub peak_rss_bytes: u64,
    /// Most builds holding a slot at once.
    pub peak_running: u32,
    /// CPU time the workload used.
    pub cpu_ms: f64,
    /// `cpu_ms / (makespan × host cores)`.
    pub cpu_utilisation: f64,
    /// Total time ready builds waited for a slot (or for the loop).
    pub slot_wait_ms: f64,
    /// Per job; `None` for jobs already done when the simulation started.
    pub timings: Vec<Option<JobTiming>>,
    /// The chain that ends last: from the last job done, back through the dependency
    /// that was done last, to a job with none; dependencies first.
    pub critical_chain: Vec<usize>,
    /// Per remote machine of the fleet: the builds it ran.
    #[serde(default)]
    pub remote_builds: Vec<u32>,
}

/// Simulates the whole workload from scratch.
pub fn simulate(w: &Workload, p: &SimParams) -> Result<SimResult, TuneError> {
    simulate_from(w, p, &vec![JobState::Pending; w.len()])
}

/// Simulates from a given state: `Done` jobs are finished, `Running` ones have been
/// going for `elapsed_ms` (their progress taken as if they had run alone; one past its
/// prediction is given 10% of its elapsed time more), `Pending` ones wait for their
/// dependencies. Time 0 is now; `startup_ms` counts only when nothing has started.
pub fn simulate_from(
    w: &Workload,
    p: &SimParams,
    state: &[JobState],
) -> Result<SimResult, TuneError> {
    run(w, p, &Fleet::none(), state)
}

/// Simulates the whole workload from scratch with remote machines beside this one.
pub fn simulate_on(w: &Workload, p: &SimParams, fleet: &Fleet) -> Result<SimResult, TuneError> {
    run(w, p, fleet, &vec![JobState::Pending; w.len()])
}

fn run(
    w: &Workload,
    p: &SimParams,
    fleet: &Fleet,
    state: &[JobState],
) -> Result<SimResult, TuneError> {
    fleet.check()?;
    p.check(fleet.remote_slots())?;
    if state.len() != w.len() {
        return Err(TuneError::InvalidSetting(format!(
            "{} job states for {} jobs",
            state.len(),
            w.len()
        )));
    }
    let mut sim = engine::Sim::new(w, p, fleet, state);
    let t0 = sim.t;
    if !sim.run() {
        return Err(TuneError::InvalidSetting(format!(
            "the simulation stopped advancing at {:.0} ms (a fault of the model)",
            sim.t
        )));
    }
    let to_build = state
        .iter()
        .filter(|s| !matches!(s, JobState::Done))
        .count();
    if sim.released != to_build {
        // Cannot happen for a checked DAG and max_jobs ≥ 1; reported, not looped on.
        return Err(TuneError::InvalidSetting(format!(
            "the simulation built {} of {to_build} jobs",
            sim.released
        )));
    }
    let timings = std::mem::take(&mut sim.timings);
    let makespan = timings
        .iter()
        .flatten()
        .map(|t| t.done_ms)
        .fold(t0, f64::max);
    let slot_wait = timings
        .iter()
        .flatten()
        .map(|t| (t.start_ms - t.ready_ms).max(0.0))
        .sum();
    let critical_chain = critical_chain(w, &timings);
    let span = makespan.max(engine::EPS);
    Ok(SimResult {
        makespan_ms: makespan,
        peak_rss_bytes: sim.peak_rss,
        peak_running: sim.peak_running,
        cpu_ms: sim.cpu_ms,
        cpu_utilisation: sim.cpu_ms / (span * f64::from(p.host_cores)),
        slot_wait_ms: slot_wait,
        timings,
        critical_chain,
        remote_builds: std::mem::take(&mut sim.remote_builds),
    })
}

fn critical_chain(w: &Workload, timings: &[Option<JobTiming>]) -> Vec<usize> {
    let done = |i: usize| timings.get(i).copied().flatten().map(|t| t.done_ms);
    let latest = |candidates: &mut dyn Iterator<Item = usize>| {
        candidates
            .filter_map(|i| done(i).map(|d| (d, i)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|x| x.1)
    };
    let mut cur = latest(&mut (0..w.len()));
    let mut chain = Vec::new();
    while let Some(i) = cur {
        chain.push(i);
        cur = latest(&mut w.job(i).deps.iter().copied());
    }
    chain.reverse();
    chain
}
